"""Document-level train/validation/test splits.

The shipped data set declares its split per document (data/splits.csv), so the held-out test set is
the same for every participant. Custom data without a splits file is split deterministically by a
salted hash of the document, so no document's questions ever land in two splits.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

SPLITS = ("train", "validation", "test")


def doc_key(rec: dict) -> str:
    """doc_id when the record has one, else a hash of its (normalized) context."""
    if rec.get("doc_id"):
        return str(rec["doc_id"])
    ctx = rec["context"] if isinstance(rec["context"], str) else "\n".join(rec["context"])
    return "doc-" + hashlib.sha1(ctx.encode("utf-8")).hexdigest()[:12]


def read_splits(path: str | Path) -> dict[str, str]:
    """doc_id -> split from a CSV with columns doc_id, split."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for row_no, row in enumerate(csv.DictReader(f), start=2):
            split = row.get("split", "").strip()
            if split not in SPLITS:
                raise ValueError(f"{path} line {row_no}: field 'split' must be one of {SPLITS}, got {split!r}")
            out[row["doc_id"].strip()] = split
    return out


def hash_split(key: str, validation: float = 0.1, test: float = 0.1, seed: int = 42) -> str:
    """Deterministic split of one document key (uniform in [0,1) from a salted SHA-1)."""
    u = int(hashlib.sha1(f"{seed}:{key}".encode("utf-8")).hexdigest()[:12], 16) / 16**12
    return "test" if u < test else "validation" if u < test + validation else "train"


def assign_splits(records: list[dict], declared: dict[str, str] | None = None, validation: float = 0.1,
                  test: float = 0.1, seed: int = 42) -> tuple[dict[str, str], dict[str, int]]:
    """doc key -> split for every document in `records`; declared splits win, the rest are hashed.

    Returns the mapping and counts of how each document got its split ("declared"/"hashed").
    """
    declared = declared or {}
    out: dict[str, str] = {}
    how = {"declared": 0, "hashed": 0}
    for rec in records:
        key = doc_key(rec)
        if key in out:
            continue
        if key in declared:
            out[key] = declared[key]
            how["declared"] += 1
        else:
            out[key] = hash_split(key, validation, test, seed)
            how["hashed"] += 1
    return out, how
