"""Exact duplicates (hashing), near duplicates (MinHash LSH over character 3-grams: Korean has no
reliable whitespace words, "인구는" vs "인구가"), and embedding near-duplicates on a sample."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from ..embeddings import _embedder, resolve_embedding_model
from ..text import char_ngrams


def _text(rec: dict, fields: tuple[str, ...]) -> str:
    parts = []
    for f in fields:
        v = rec.get(f, "")
        parts.append("\n".join(v) if isinstance(v, list) else str(v))
    return "\n".join(parts)


def exact_duplicates(records: list[dict], fields: tuple[str, ...] = ("question", "answer")) -> list[list[int]]:
    """Groups of record indices with identical text in `fields` (after normalization upstream)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        groups[hashlib.sha1(_text(r, fields).encode("utf-8")).hexdigest()].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _shingle_hashes(text: str, n: int) -> np.ndarray:
    grams = char_ngrams(text, n)
    if not grams:
        return np.zeros(1, dtype=np.uint64)
    return np.fromiter((int.from_bytes(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest(), "little")
                        for g in grams), dtype=np.uint64, count=len(grams))


class _MinHasher:
    """Vectorized MinHash signatures (the same universal hashing datasketch uses), for speed."""

    _PRIME = np.uint64((1 << 61) - 1)

    def __init__(self, num_perm: int, seed: int = 1):
        rng = np.random.RandomState(seed)
        self.a = rng.randint(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
        self.b = rng.randint(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)
        self.num_perm = num_perm

    def signature(self, hashes: np.ndarray) -> np.ndarray:
        h = (hashes[:, None] & np.uint64(0xFFFFFFFF)) * self.a[None, :] + self.b[None, :]
        h = (h % self._PRIME) & np.uint64(0xFFFFFFFF)
        return h.min(axis=0)


@dataclass
class NearDuplicate:
    i: int
    j: int
    jaccard: float


def near_duplicates(records: list[dict], fields: tuple[str, ...] = ("question",), threshold: float = 0.7,
                    num_perm: int = 64, shingle: int = 3, seed: int = 1) -> list[NearDuplicate]:
    """Candidate pairs from MinHash LSH, confirmed by the exact shingle Jaccard (>= threshold)."""
    from datasketch import LeanMinHash, MinHashLSH

    hasher = _MinHasher(num_perm, seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    shingles = [char_ngrams(_text(r, fields), shingle) for r in records]
    pairs: dict[tuple[int, int], float] = {}
    for i, (r, sh) in enumerate(zip(records, shingles)):
        sig = hasher.signature(_shingle_hashes(_text(r, fields), shingle))
        mh = LeanMinHash(seed=seed, hashvalues=sig, scheme="legacy")
        for j in lsh.query(mh):
            inter = len(sh & shingles[j])
            jac = inter / max(1, len(sh | shingles[j]))
            if jac >= threshold:
                pairs[(j, i)] = jac
        lsh.insert(i, mh)
    return [NearDuplicate(i, j, round(jac, 3)) for (i, j), jac in sorted(pairs.items())]


def embedding_near_duplicates(records: list[dict], sample: int = 300, threshold: float = 0.95,
                              fields: tuple[str, ...] = ("question",), model: str = "auto",
                              seed: int = 0) -> tuple[list[NearDuplicate], str]:
    """Pairs with cosine >= threshold among a random sample (the seed's 코사인 유사도 기반 근사 중복)."""

    rng = np.random.RandomState(seed)
    idx = np.arange(len(records)) if len(records) <= sample else np.sort(rng.choice(len(records), sample, replace=False))
    name, path, _ = resolve_embedding_model(model)
    emb = _embedder(path).encode([_text(records[i], fields) for i in idx], normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
    sims = emb @ emb.T
    out = []
    a, b = np.where(np.triu(sims, k=1) >= threshold)
    for x, y in zip(a, b):
        out.append(NearDuplicate(int(idx[x]), int(idx[y]), round(float(sims[x, y]), 3)))
    return out, name
