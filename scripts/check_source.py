"""Check an authoring source file of the Korean RAFT data set (data/source/<topic>.json).

Usage: python scripts/check_source.py data/source/hr.json [more.json ...]
Prints every problem and exits 1 if there is any.
"""
from __future__ import annotations

import json
import re
import sys
import unicodedata

QUOTE_RE = re.compile(r"##begin_quote##(.*?)##end_quote##", re.S)
SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in SENT_SPLIT_RE.split(text.strip()) if s.strip()]


def check(path: str) -> list[str]:
    problems: list[str] = []
    src = json.load(open(path, encoding="utf-8"))
    docs = {d["doc_id"]: d for d in src["documents"]}
    if len(docs) != len(src["documents"]):
        problems.append("duplicate doc_id")
    for d in src["documents"]:
        where = f"{path} doc {d['doc_id']}"
        n = len(sentences(d["text"]))
        if not 3 <= n <= 10:
            problems.append(f"{where}: {n} sentences (need 3-10)")
        if unicodedata.normalize("NFC", d["text"]) != d["text"]:
            problems.append(f"{where}: text not NFC")
        if d.get("near_miss_of") and d["near_miss_of"] not in docs:
            problems.append(f"{where}: near_miss_of {d['near_miss_of']} unknown")
        for key in ("doc_id", "title", "text"):
            if not isinstance(d.get(key), str) or not d[key].strip():
                problems.append(f"{where}: field {key} missing/empty")
    ids = set()
    per_doc: dict[str, int] = {}
    for q in src["qa"]:
        where = f"{path} qa {q.get('id')}"
        if q["id"] in ids:
            problems.append(f"{where}: duplicate id")
        ids.add(q["id"])
        doc = docs.get(q["doc_id"])
        if doc is None:
            problems.append(f"{where}: unknown doc_id {q['doc_id']}")
            continue
        per_doc[q["doc_id"]] = per_doc.get(q["doc_id"], 0) + 1
        for key in ("q", "a", "cot"):
            if not isinstance(q.get(key), str) or not q[key].strip():
                problems.append(f"{where}: field {key} missing/empty")
        if not q["a"].startswith("문맥에 따르면"):
            problems.append(f"{where}: answer must start with '문맥에 따르면'")
        if len(q["a"]) > 160:
            problems.append(f"{where}: answer {len(q['a'])} chars (max 160)")
        quotes = QUOTE_RE.findall(q["cot"])
        if not quotes:
            problems.append(f"{where}: cot has no ##begin_quote##...##end_quote##")
        for quote in quotes:
            if quote.strip() not in doc["text"]:
                problems.append(f"{where}: quote not verbatim in {q['doc_id']}: {quote.strip()[:40]!r}")
        if q.get("type") == "multi_sentence" and len(quotes) < 2:
            problems.append(f"{where}: multi_sentence needs >= 2 quotes")
        if q.get("type") not in ("single", "multi_sentence"):
            problems.append(f"{where}: type must be single or multi_sentence")
        if not q["cot"].rstrip().endswith("<ANSWER>: " + q["a"]):
            problems.append(f"{where}: cot must end with '<ANSWER>: ' + a")
    for doc_id in docs:
        if per_doc.get(doc_id, 0) < 3:
            problems.append(f"{path} doc {doc_id}: {per_doc.get(doc_id, 0)} questions (need >= 3)")
    print(f"{path}: {len(docs)} documents, {len(src['qa'])} QA, "
          f"{sum(q.get('type') == 'multi_sentence' for q in src['qa'])} multi_sentence, "
          f"{sum(1 for d in src['documents'] if d.get('near_miss_of'))} near-miss docs, "
          f"{len(problems)} problems")
    return problems


if __name__ == "__main__":
    all_problems = [p for path in sys.argv[1:] for p in check(path)]
    for p in all_problems:
        print("  -", p)
    sys.exit(1 if all_problems else 0)
