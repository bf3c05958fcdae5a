"""Loading, validation, normalization, splitting and RAFT conversion (notebook 01's library)."""
from __future__ import annotations

import json
import unicodedata

import pytest

from workshop_utils.config import NO_ANSWER_TEXT, DataSettings
from workshop_utils.data import load_raw, normalize_text, prepare, to_raft, truncate_document, validate
from workshop_utils.data.io import detect_encoding
from workshop_utils.data.raft import Corpus, evidence_sentences, final_answer
from workshop_utils.data.split import assign_splits, doc_key, hash_split

REC = {"q": "연차휴가는 며칠인가요?", "doc": "누리온테크의 연차휴가는 1년에 15일이다. 2년마다 1일씩 늘어난다.",
       "a": "문맥에 따르면 연차휴가는 15일입니다."}


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_cp949_csv_is_detected_and_read_with_line_numbers(tmp_path):
    csv_text = "q,doc,a\r\n" + f"{REC['q']},\"{REC['doc']}\",{REC['a']}\r\n" * 2
    p = write(tmp_path / "export.csv", csv_text, "cp949")
    assert detect_encoding(p.read_bytes()) == "cp949"
    raw, files = load_raw([p])
    assert files[0].encoding == "cp949"
    assert [r.locator for r in raw] == ["line 2 (row 1)", "line 3 (row 2)"]
    assert raw[0].data["q"] == REC["q"]


def test_utf8_bom_jsonl_and_a_malformed_line_become_a_reject_not_an_exception(tmp_path):
    lines = [json.dumps(REC, ensure_ascii=False), '{"q": "끊긴 줄", "doc": ', json.dumps(REC, ensure_ascii=False)]
    p = tmp_path / "x.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8"))
    raw, files = load_raw([p])
    assert files[0].encoding == "utf-8-sig"
    report = validate(raw, drop_exact_duplicates=False)
    assert report.read == 3 and len(report.kept) == 2
    (rej,) = report.rejected
    assert (rej.reason, rej.locator, rej.source.endswith("x.jsonl")) == ("malformed_json", "line 2", True)


def test_undecodable_byte_in_one_line_is_rejected_with_its_line(tmp_path):
    good = json.dumps(REC, ensure_ascii=False).encode("utf-8")
    p = tmp_path / "mixed.jsonl"
    p.write_bytes(good + b"\n" + b'{"q": "\xff\xfe bad"}' + b"\n" + good + b"\n")
    raw, _ = load_raw([p])
    report = validate(raw, drop_exact_duplicates=False)
    assert [(r.reason, r.locator) for r in report.rejected] == [("undecodable_bytes", "line 2")]
    assert len(report.kept) == 2


def test_json_array_keeps_line_numbers_and_wrapped_records(tmp_path):
    p = write(tmp_path / "a.json", json.dumps({"export": {"n": 2}, "records": [REC, {"q": 1}]}, ensure_ascii=False, indent=1))
    raw, _ = load_raw([p])
    assert raw[0].locator == "line 6 (item 1)" and raw[1].locator.endswith("(item 2)")
    report = validate(raw)
    assert report.rejected[0].reason == "wrong_type" and report.rejected[0].field == "question"
    assert "a.json line" in report.rejected[0].message


@pytest.mark.parametrize("mutate,reason,field", [
    (lambda r: r.pop("a"), "missing_field", "answer"),
    (lambda r: r.update(q=None), "empty", "question"),
    (lambda r: r.update(doc="   \u200b "), "empty", "context"),
    (lambda r: r.update(a="네."), "too_short", "answer"),
    (lambda r: r.update(doc="가" * 3000), "too_long", "context"),
    (lambda r: r.update(doc={"text": "x"}), "wrong_type", "context"),
    (lambda r: r.update(doc=["문서 하나입니다", 7]), "wrong_type", "context"),
])
def test_validation_reasons_name_the_record_and_field(mutate, reason, field):
    from workshop_utils.data.io import RawRecord

    rec = dict(REC, id="hr-9")
    mutate(rec)
    report = validate([RawRecord(rec, "data/raw/x.jsonl", "line 7")])
    (rej,) = report.rejected
    assert (rej.reason, rej.field) == (reason, field)
    assert "hr-9" in rej.message and "data/raw/x.jsonl line 7" in rej.message


def test_context_may_be_a_list_of_documents():
    from workshop_utils.data.io import RawRecord

    report = validate([RawRecord(dict(REC, doc=["첫 번째 문서입니다.", "두 번째 문서입니다."]), "f", "line 1")])
    assert report.kept and isinstance(report.kept[0].data["context"], list)


def test_length_bounds_are_configurable():
    from workshop_utils.data.io import RawRecord

    recs = [RawRecord(dict(REC), "f", "line 1")]
    assert validate(recs, min_length=30).rejected[0].reason == "too_short"
    assert validate(recs, max_length=20).rejected[0].reason == "too_long"


def test_normalization_fixes_and_reports_each_kind():
    nfd = unicodedata.normalize("NFD", "연차휴가")
    out, ch = normalize_text(f"\ufeff{nfd}&nbsp;１５일\u200b？ \x1b[0m  끝\x07")
    assert out == "연차휴가 15일? 끝"
    assert ch == {"bom", "unicode_nfc", "html_entities", "control_chars", "fullwidth", "whitespace"}
    assert normalize_text("①항 ㈜누리온")[0] == "①항 ㈜누리온"  # meaning-bearing compatibility chars stay


def test_mapping_with_arbitrary_column_names():
    from workshop_utils.data.io import RawRecord

    row = {"문의내용": REC["q"], "참고문서": REC["doc"], "답변": REC["a"], "문항번호": "c-1"}
    report = validate([RawRecord(row, "c.csv", "line 2")],
                      mapping={"question": "문의내용", "context": "참고문서", "answer": "답변", "id": "문항번호"})
    assert report.kept[0].data["id"] == "c-1"
    with pytest.raises(ValueError, match="unknown canonical"):
        validate([RawRecord(row, "c.csv", "line 2")], mapping={"questoin": "문의내용"})


def test_hash_split_is_deterministic_and_roughly_proportional():
    keys = [f"doc-{i}" for i in range(4000)]
    splits = [hash_split(k) for k in keys]
    assert splits == [hash_split(k) for k in keys]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "validation", "test")}
    assert 0.77 < frac["train"] < 0.83 and 0.08 < frac["test"] < 0.12
    recs = [{"question": "q", "context": f"문서 {i}", "answer": "a"} for i in range(50)]
    mapping, how = assign_splits(recs, {doc_key(recs[0]): "test"})
    assert mapping[doc_key(recs[0])] == "test" and how == {"declared": 1, "hashed": 49}


def test_truncation_keeps_the_evidence_sentence():
    doc = "첫 문장은 배경 설명이다. 두 번째 문장도 배경이다. 세 번째 문장에 정답 15일이 있다. 네 번째는 예외 규정이다. 다섯 번째는 담당 부서다."
    keep = evidence_sentences(doc, "문맥에 따르면 15일입니다.")
    short = truncate_document(doc, 40, keep)
    assert "15일" in short and len(short) <= 60
    assert doc[:40] != short  # the seed's doc[:max_context_len] would have cut the answer away
    assert "15일" not in doc[:40]


def test_raft_conversion_properties(tmp_path, root):
    splits = prepare([root / "data" / "raw"], tmp_path, DataSettings(num_distractors=1, max_context_len=100),
                     save_dataset=False).splits
    train, test = splits["train"], splits["test"]
    ex = train[0]
    assert set(ex) >= {"instruction", "context", "question", "answer", "golden_index", "doc_ids"}
    assert isinstance(ex["context"], list)
    train_docs = {e["golden_doc_id"] for e in train}
    for e in train:
        assert len(e["context"]) == len(e["doc_ids"])
        assert set(e["doc_ids"]) - {e["golden_doc_id"]} <= train_docs, "held-out documents leaked into training"
        if e["golden_index"] is None:
            assert e["answer"] == NO_ANSWER_TEXT and e["golden_doc_id"] not in e["doc_ids"]
        else:
            assert e["doc_ids"][e["golden_index"]] == e["golden_doc_id"]
    assert all(e["golden_index"] is not None for e in test), "held-out sets always keep the golden document"
    oracle = sum(e["golden_index"] is not None for e in train) / len(train)
    assert 0.74 < oracle < 0.86  # P = 0.8
    positions = {e["golden_index"] for e in train if e["golden_index"] is not None}
    assert positions == {0, 1}, "context order is shuffled"


def test_raft_hard_distractors_and_cot_option():
    recs = []
    for t in ("hr", "it", "fin"):
        for i in range(12):
            doc = f"{t} 규정 {i}번: 신청은 누리웨이에서 하며 처리 기한은 {i + 2}일이다. 담당은 {t}팀이다."
            recs.append({"id": f"{t}-{i}", "doc_id": f"{t}-{i:03d}", "topic": t, "question": f"{t} 규정 {i}번의 처리 기한은?",
                         "context": doc, "answer": f"문맥에 따르면 {i + 2}일입니다."})
    split_of = {doc_key(r): "train" for r in recs}
    opts = DataSettings(num_distractors=4, hard_distractor_fraction=0.5, oracle_fraction=1.0, add_cot=True,
                       hard_method="topic", seed=1)
    out = to_raft(recs, split_of, opts)["train"]
    corpus = Corpus.from_records(recs)
    for e in out:
        same_topic = sum(corpus.topics[d] == e["topic"] for d in e["doc_ids"] if d != e["golden_doc_id"])
        assert len(e["doc_ids"]) == 5 and same_topic >= 2
        assert "##begin_quote##" in e["cot"] and final_answer(e["cot"]) == e["answer"]
    bm = to_raft(recs, split_of, DataSettings(num_distractors=2, hard_distractor_fraction=1.0, oracle_fraction=1.0,
                                              add_cot=False))["train"]
    assert all("cot" not in e for e in bm)


def test_prepare_writes_outputs_and_counts_add_up(tmp_path, root):
    res = prepare([root / "data" / "raw", root / "data" / "dirty"], tmp_path, DataSettings(num_distractors=1))
    s = json.loads((tmp_path / "manifest.json").read_text())
    assert s["read"] == s["kept"] + s["rejected"] and s["rejected"] > 0
    assert sum(s["by_reason"].values()) == s["rejected"]
    lines = (tmp_path / "rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == s["rejected"]
    assert set(json.loads(lines[0])) == {"source", "locator", "field", "reason", "message", "record_id"}
    for split in ("train", "validation", "test"):
        assert (tmp_path / f"{split}.jsonl").exists()
    from datasets import load_from_disk

    dd = load_from_disk(str(tmp_path / "dataset"))
    assert dd["train"].num_rows == s["splits"]["train"]
    assert res.summary["splits"]["test"] > 0


def test_cli_prepare_exit_codes(tmp_path, root, capsys):
    from workshop_utils.cli import main

    assert main(["prepare", "--raw", str(root / "data" / "dirty"), "--out", str(tmp_path / "o")]) == 0
    assert "rejected" in capsys.readouterr().out
    assert main(["prepare", "--raw", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["prepare", "--raw", str(empty), "--out", str(tmp_path / "o3")]) == 1


def test_cli_prepare_finds_project_relative_raw_paths_from_another_folder(tmp_path, root, monkeypatch, capsys):
    """Notebook 01 calls the CLI from main-practice/ with the config's data/raw (as the data loader resolves it)."""
    from workshop_utils.cli import main

    monkeypatch.chdir(root / "main-practice")
    assert main(["prepare", "--raw", "data/dirty/dirty_export.jsonl", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "rejects.jsonl").is_file()
    capsys.readouterr()
    assert main(["prepare", "--raw", "data/nowhere.jsonl", "--out", str(tmp_path / "o2")]) == 2
    assert "경로가 없습니다" in capsys.readouterr().err
