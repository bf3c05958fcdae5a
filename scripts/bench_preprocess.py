"""Benchmark: validate + normalize + RAFT-convert + near-dup on N synthetic raw records (not a test).

Records are drawn from the shipped data with deterministic variations so that documents and
questions are distinct (N/5 documents), and 10% are broken the ways data/dirty is (missing fields,
wrong types, NFD, HTML entities, control characters, duplicates). Prints seconds per stage.

Usage: python scripts/bench_preprocess.py [N ...]    (default: 10000 100000)
"""
from __future__ import annotations

import json
import random
import sys
import time
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from workshop_utils.config import DataSettings
from workshop_utils.data.io import RawRecord
from workshop_utils.data.quality.duplicates import near_duplicates
from workshop_utils.data.raft import Corpus, to_raft
from workshop_utils.data.schema import validate
from workshop_utils.data.split import assign_splits


def synthetic(n: int, seed: int = 0) -> list[RawRecord]:
    srcs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((ROOT / "data" / "source").glob("*.json"))]
    base = []
    for s in srcs:
        docs = {d["doc_id"]: d for d in s["documents"]}
        base += [(s["topic"], docs[q["doc_id"]]["text"], q) for q in s["qa"]]
    rng = random.Random(seed)
    out = []
    n_docs = max(1, n // 5)
    for i in range(n):
        topic, doc, q = base[i % len(base)]
        d = i % n_docs
        rec = {"id": f"b{i}", "doc_id": f"{topic}-v{d}", "topic": topic, "q": f"{q['q']} (건 {i})",
               "doc": f"[버전 {d}] {doc}", "a": q["a"]}
        r = rng.random()
        if r < 0.02:
            rec.pop("a")
        elif r < 0.04:
            rec["q"] = 12345
        elif r < 0.06:
            rec["doc"] = unicodedata.normalize("NFD", rec["doc"])
        elif r < 0.08:
            rec["a"] = rec["a"].replace(" ", "&nbsp;") + "\u200b"
        elif r < 0.10 and out:
            rec = dict(out[-1].data) if out[-1].data else rec
        out.append(RawRecord(rec, "bench.jsonl", f"line {i + 1}"))
    return out


def run(n: int, hard_method: str = "topic") -> dict:
    raw = synthetic(n)
    times = {}
    t = time.perf_counter()
    report = validate(raw)
    times["validate+normalize"] = time.perf_counter() - t
    recs = [r.data for r in report.kept]
    t = time.perf_counter()
    split_of, _ = assign_splits(recs)
    corpus = Corpus.from_records(recs)
    splits = to_raft(recs, split_of, DataSettings(num_distractors=4, hard_method=hard_method), corpus)
    times["raft (k=4)"] = time.perf_counter() - t
    t = time.perf_counter()
    near = near_duplicates(recs, ("question",), threshold=0.8)
    times["near-dup (MinHash LSH)"] = time.perf_counter() - t
    times["total"] = sum(times.values())
    return {"records": n, "hard": hard_method, "kept": len(report.kept), "rejected": len(report.rejected),
            "raft": sum(len(v) for v in splits.values()), "near_dup_pairs": len(near),
            **{k: round(v, 1) for k, v in times.items()}}


if __name__ == "__main__":
    sizes = [int(x) for x in sys.argv[1:]] or [10_000, 100_000]
    # "topic" hard distractors are linear in the number of records; BM25 mining scores every
    # question against the corpus, so it is timed at the smallest size only.
    rows = [run(n) for n in sizes] + [run(sizes[0], "bm25")]
    keys = list(rows[0])
    print(" | ".join(keys))
    for r in rows:
        print(" | ".join(str(r[k]) for k in keys))
    if len(sizes) > 1:
        print(f"scaling (topic): {rows[len(sizes) - 1]['total'] / rows[0]['total']:.1f}x time for "
              f"{sizes[-1] / sizes[0]:.0f}x records")
