"""The shipped Korean RAFT data set (data/): counts, groundedness, splits, formats, sync with sources."""
from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict

import pytest

from workshop_utils.data import extract_quotes, load_raw, read_splits, validate
from workshop_utils.data.split import doc_key


@pytest.fixture(scope="module")
def clean(root):
    raw, files = load_raw([root / "data" / "raw"])
    report = validate(raw)
    return raw, files, report


def test_every_raw_file_loads_and_is_clean(clean):
    raw, files, report = clean
    assert {f.format for f in files} == {"json", "jsonl", "csv"}
    assert any(f.encoding == "cp949" for f in files), "one CSV must be CP949 (as Excel saves Korean)"
    assert report.rejected == [], [r.message for r in report.rejected[:3]]
    assert len(report.kept) == len(raw) >= 700


def test_counts_per_topic(clean):
    _, _, report = clean
    recs = [r.data for r in report.kept]
    docs = {doc_key(r) for r in recs}
    topics = Counter(r["topic"] for r in recs)
    assert len(docs) >= 150
    assert len(topics) >= 6
    per_doc = Counter(doc_key(r) for r in recs)
    assert min(per_doc.values()) >= 3


def test_every_answer_is_grounded_in_its_golden_document(clean):
    _, _, report = clean
    for r in (x.data for x in report.kept):
        quotes = extract_quotes(r["cot"])
        assert quotes, f"{r['id']}: CoT quotes nothing"
        for q in quotes:
            assert q in r["context"], f"{r['id']}: quote not in golden document: {q[:40]}"
        assert r["cot"].rstrip().endswith("<ANSWER>: " + r["answer"]), r["id"]
        assert r["answer"].startswith("문맥에 따르면"), r["id"]


def test_multi_sentence_questions_and_near_miss_documents_exist(root):
    srcs = [json.loads(p.read_text(encoding="utf-8")) for p in (root / "data" / "source").glob("*.json")]
    main = [s for s in srcs if s["topic"] != "clinic"]
    multi = sum(q["type"] == "multi_sentence" for s in main for q in s["qa"])
    near = sum(bool(d.get("near_miss_of")) for s in main for d in s["documents"])
    assert multi >= 50 and near >= 12
    for s in main:
        for q in s["qa"]:
            if q["type"] == "multi_sentence":
                assert len(extract_quotes(q["cot"])) >= 2, q["id"]


def test_no_document_is_referenced_from_two_splits(clean, root):
    _, _, report = clean
    splits = read_splits(root / "data" / "splits.csv")
    seen: dict[str, set] = defaultdict(set)
    for r in (x.data for x in report.kept):
        seen[doc_key(r)].add(splits[doc_key(r)])
    assert all(len(v) == 1 for v in seen.values())
    counts = Counter(splits.values())
    total = sum(counts.values())
    assert 0.75 <= counts["train"] / total <= 0.86
    assert counts["validation"] >= 7 and counts["test"] >= 7
    assert set(splits) == set(seen), "splits.csv must cover exactly the shipped documents"


def test_clean_data_has_no_pii(clean):
    from workshop_utils.data.quality.pii import scan_pii

    _, _, report = clean
    hits = scan_pii([x.data for x in report.kept])
    assert hits == [], hits[:3]


def test_raw_files_are_in_sync_with_sources(root, tmp_path):
    import build_data

    build_data.main(tmp_path)
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            shipped = root / path.relative_to(tmp_path)
            assert shipped.read_bytes() == path.read_bytes(), f"{shipped} differs: run `make data`"


def test_dirty_file_covers_every_defect_kind_at_least_five_times(root):
    with open(root / "data" / "dirty_manifest.csv", encoding="utf-8") as f:
        kinds = Counter(row["kind"] for row in csv.DictReader(f))
    expected = {"missing_field", "wrong_type", "empty", "too_short", "too_long", "exact_duplicate", "near_duplicate",
                "nfd_hangul", "control_chars", "html_entities", "bom_in_field", "malformed_json", "fullwidth", "pii"}
    assert expected <= set(kinds)
    assert min(kinds.values()) >= 5
    assert (root / "data" / "dirty" / "dirty_export.jsonl").read_bytes().startswith(b"\xef\xbb\xbf")


def test_validation_does_what_the_dirty_manifest_says(root):
    """Each broken line is rejected with the documented reason/field, or kept as documented."""
    raw, _ = load_raw([root / "data" / "raw", root / "data" / "dirty" / "dirty_export.jsonl"])
    report = validate(raw)
    assert report.read == len(raw)
    dirty = "data/dirty/dirty_export.jsonl"
    rejects = {r.locator: r for r in report.rejected if r.source == dirty}
    kept = {r.locator for r in report.kept if r.source == dirty}
    with open(root / "data" / "dirty_manifest.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            loc = f"line {row['line']}"
            outcome = row["expected"].split(":")
            if outcome[0] == "kept":
                assert loc in kept, (row, rejects.get(loc))
            else:
                assert loc in rejects, row
                assert rejects[loc].reason == outcome[1], (row, rejects[loc])
                if len(outcome) > 2 and not outcome[2].startswith("after"):
                    assert rejects[loc].field == outcome[2], (row, rejects[loc])


def test_clinic_set_has_its_own_columns_and_enough_qa(root):
    with open(root / "data" / "custom" / "clinic_faq.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) >= 150
    assert {"문의내용", "참고문서", "답변"} <= set(rows[0])
    assert len({r["분류"] for r in rows}) >= 6
