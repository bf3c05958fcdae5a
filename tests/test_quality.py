"""Quality checks (notebook 02): duplicates, groundedness, lengths, balance, PII."""
from __future__ import annotations

import numpy as np

from workshop_utils.data import load_raw, validate
from workshop_utils.data.quality.balance import balance
from workshop_utils.data.quality.checks import check_quality
from workshop_utils.data.quality.duplicates import exact_duplicates, near_duplicates
from workshop_utils.data.quality.grounding import groundedness
from workshop_utils.data.quality.lengths import recommend_max_seq_length, truncation_table
from workshop_utils.data.quality.pii import find_pii, mask_pii
from workshop_utils.report.quality_report import write_quality_report


def test_near_duplicates_found_with_minhash_on_the_dirty_file(root):
    raw, _ = load_raw([root / "data" / "raw", root / "data" / "dirty" / "dirty_export.jsonl"])
    recs = [r.data for r in validate(raw, drop_exact_duplicates=False).kept]
    near = near_duplicates(recs, ("question",), threshold=0.7)
    ids = {(recs[p.i]["id"], recs[p.j]["id"]) for p in near}
    dirty_near = {r["id"] for r in recs if r["id"].startswith("dirty-")}
    assert sum(b in dirty_near or a in dirty_near for a, b in ids) >= 6
    exact = exact_duplicates(recs)
    assert len(exact) >= 30  # exact copies + copies that only differed before normalization


def test_near_duplicates_scale_linearly_not_pairwise():
    recs = [{"question": f"질문 {i}번: 연차휴가 신청 기한은 언제인가요 {i * 7919 % 1000}"} for i in range(3000)]
    import time

    t = time.perf_counter()
    near_duplicates(recs, threshold=0.9)
    assert time.perf_counter() - t < 30


def test_groundedness_and_quote_check():
    doc = "연차휴가는 입사 첫해 1개월 개근 시 1일 발생한다. 2년차부터는 15일이다."
    good = groundedness("문맥에 따르면 입사 첫해에는 1개월 개근 시 1일이 발생합니다.", doc,
                        "##begin_quote##입사 첫해 1개월 개근 시 1일 발생한다.##end_quote##")
    bad = groundedness("문맥에 따르면 연차는 30일이며 회사 휴양소를 이용할 수 있습니다.", doc,
                       "##begin_quote##휴양소 이용 가능##end_quote##")
    assert good["quote_ok"] is True and bad["quote_ok"] is False
    assert good["overlap"] > bad["overlap"]


def test_pii_detection_and_masking():
    text = "연락처 010-2345-6789, 메일 kim@example.com, 주민번호 900101-1234567, 카드 1234-5678-9012-3456."
    kinds = {k for k, _ in find_pii(text)}
    assert kinds == {"휴대전화", "이메일", "주민등록번호", "카드번호"}
    masked = mask_pii(text)
    assert "010-2345-6789" not in masked and "[휴대전화]" in masked and "[카드번호]" in masked
    assert find_pii("고객센터 1670-2580, 내선 2580, 2025-02-23 시행") == []


def test_lengths_balance_and_report(tmp_path, prepared, tokenizer):
    recs = prepared.splits["train"][:60]
    rep = check_quality(recs, tokenizer)
    assert rep.lengths["p95"] <= rep.lengths["max"] and rep.lengths["recommended_max_seq_length"] % 64 == 0
    assert recommend_max_seq_length(np.array([100, 200, 300])) == 320
    t = truncation_table(np.array([100, 600, 900]), (512, 1024))
    assert t[0]["잘리는 예제 수"] == 2 and t[1]["잘리는 예제 수"] == 0
    b = balance([{"topic": "a"}] * 9 + [{"topic": "b"}] * 3)
    assert b["ratio"] == 3.0 and "오버샘플링" in b["advice"]
    files = write_quality_report(rep, recs, tmp_path)
    assert files["html"].read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (tmp_path / "filtered.jsonl").exists()
