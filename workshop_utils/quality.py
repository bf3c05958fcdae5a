"""Data quality checks (notebook 02): duplicates, groundedness/relevance, token lengths, balance, PII.

Everything is O(n) in the number of records except the embedding check, which runs on a sample:
- exact duplicates: hashing
- near duplicates: MinHash LSH (datasketch) over character 3-gram shingles -- Korean has no reliable
  whitespace words ("인구는" vs "인구가"), so words make poor shingles
- embedding near-duplicates: cosine of sentence embeddings for a sample (the seed's 코사인 유사도)
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.raft import extract_quotes
from .text import char_ngrams, morphs

# --- duplicates ---------------------------------------------------------------------------------------


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
    from .metrics import _embedder, resolve_embedding_model

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


# --- groundedness and relevance ----------------------------------------------------------------------
_PREFIX = "문맥에 따르면"


def _content(tokens) -> set[str]:
    """Morphemes that carry content (drop 1-character particles/endings like 는, 의, 다)."""
    return {t for t in tokens if len(t) > 1 or t.isdigit()}


def groundedness(answer: str, document: str, cot: str | None = None) -> dict:
    """How well the golden document supports the answer.

    `quote_ok`: every span the CoT quotes occurs in the document (None without a CoT);
    `overlap`: share of the answer's content morphemes that occur in the document.
    """
    quotes = extract_quotes(cot or "")
    ans = _content(morphs(answer.replace(_PREFIX, "")))
    doc = _content(morphs(document))
    overlap = len(ans & doc) / len(ans) if ans else 0.0
    return {"quote_ok": all(q in document for q in quotes) if quotes else None, "overlap": round(overlap, 3)}


def relevance(question: str, document: str) -> float:
    """Share of the question's content morphemes found in the document (0-1)."""
    q = _content(morphs(question))
    return round(len(q & _content(morphs(document))) / len(q), 3) if q else 0.0


def golden_document(rec: dict) -> str:
    ctx = rec["context"]
    if isinstance(ctx, str):
        return ctx
    gi = rec.get("golden_index")
    return ctx[gi] if gi is not None else ""


def answer_quality(records: list[dict]) -> list[dict]:
    """Per-record groundedness and relevance scores, weakest first."""
    rows = []
    for i, r in enumerate(records):
        doc = golden_document(r)
        if not doc:
            continue  # golden left out on purpose (RAFT 1-P): nothing to ground against
        g = groundedness(r.get("reference_answer", r["answer"]), doc, r.get("cot"))
        rows.append({"index": i, "id": r.get("id"), "question": r["question"], "answer": r.get("reference_answer", r["answer"]),
                     "groundedness": g["overlap"], "quote_ok": g["quote_ok"], "relevance": relevance(r["question"], doc)})
    rows.sort(key=lambda x: (x["quote_ok"] is not False, x["groundedness"] + x["relevance"]))
    return rows


# --- token lengths ---------------------------------------------------------------------------------------
CANDIDATE_LENGTHS = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)


def token_lengths(tokenizer, examples: list[dict]) -> np.ndarray:
    """Full training-sequence length (chat-formatted prompt + answer + end token) per example."""
    from .prompts import render_prompt
    from .data.raft import target_text

    prompts = [render_prompt(tokenizer, e) for e in examples]
    answers = [target_text(e) for e in examples]
    p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    a = tokenizer(answers, add_special_tokens=False)["input_ids"]
    return np.array([len(x) + len(y) + 1 for x, y in zip(p, a)])


def length_stats(lengths: np.ndarray) -> dict:
    return {"count": int(lengths.size), "mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()),
            "recommended_max_seq_length": recommend_max_seq_length(lengths)}


def recommend_max_seq_length(lengths: np.ndarray, multiple: int = 64) -> int:
    """The p95 length rounded up to a multiple of 64 (hardware-friendly); longer ones are truncated."""
    return int(math.ceil(np.percentile(lengths, 95) / multiple) * multiple)


def truncation_table(lengths: np.ndarray, candidates=CANDIDATE_LENGTHS) -> list[dict]:
    rows = []
    for L in candidates:
        over = lengths > L
        rows.append({"max_seq_length": L, "잘리는 예제 수": int(over.sum()), "잘리는 비율": round(float(over.mean()), 3),
                     "잘리는 토큰 비율": round(float(np.clip(lengths - L, 0, None).sum() / lengths.sum()), 3)})
    return rows


# --- balance -----------------------------------------------------------------------------------------------
def balance(records: list[dict], key: str = "topic") -> dict:
    counts = Counter(r.get(key) or "(없음)" for r in records)
    most, least = max(counts.values()), min(counts.values())
    ratio = most / least if least else float("inf")
    if ratio <= 1.5:
        advice = "균형이 양호합니다 (최대/최소 비율 ≤ 1.5)."
    else:
        small = [k for k, v in counts.items() if v < most / 1.5]
        advice = (f"불균형 (최대/최소 {ratio:.1f}배): 적은 클래스 {small}를 오버샘플링하거나 많은 클래스를 "
                  "언더샘플링하고, 분류 작업이면 클래스별 지표도 따로 보세요.")
    return {"counts": dict(counts.most_common()), "ratio": round(ratio, 2), "advice": advice}


# --- PII --------------------------------------------------------------------------------------------------
PII_PATTERNS = {
    "주민등록번호": re.compile(r"(?<!\d)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])-?[1-8]\d{6}(?!\d)"),
    "휴대전화": re.compile(r"(?<!\d)01[016789]-?\d{3,4}-?\d{4}(?!\d)"),
    "유선전화": re.compile(r"(?<!\d)0(2|[3-6][1-5])-\d{3,4}-\d{4}(?!\d)"),
    "이메일": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "카드번호": re.compile(r"(?<!\d)\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{4}(?!\d)"),
    "계좌번호": re.compile(r"(?<![\d-])\d{2,6}-\d{2,6}-\d{2,6}(-\d{1,6})?(?![\d-])"),
}
MASKS = {k: f"[{k}]" for k in PII_PATTERNS}


def _is_account(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    if len(digits) < 10:
        return False
    if re.fullmatch(r"(19|20)\d{2}-\d{1,2}-\d{1,2}", s):  # a date
        return False
    return True


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for every PII-looking span; card numbers are not counted as accounts."""
    found: list[tuple[str, str]] = []
    taken: list[tuple[int, int]] = []
    for kind, pat in PII_PATTERNS.items():
        for m in pat.finditer(text):
            span = m.span()
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            if kind == "계좌번호" and not _is_account(m.group(0)):
                continue
            found.append((kind, m.group(0)))
            taken.append(span)
    return found


def mask_pii(text: str) -> str:
    for kind, value in find_pii(text):
        text = text.replace(value, MASKS[kind])
    return text


def scan_pii(records: list[dict], fields: tuple[str, ...] = ("question", "context", "answer")) -> list[dict]:
    hits = []
    for i, r in enumerate(records):
        for f in fields:
            v = r.get(f)
            for t in (v if isinstance(v, list) else [v]):
                if isinstance(t, str):
                    for kind, value in find_pii(t):
                        hits.append({"index": i, "id": r.get("id"), "field": f, "kind": kind, "text": value})
    return hits


def mask_records(records: list[dict], fields: tuple[str, ...] = ("question", "context", "answer", "cot")) -> list[dict]:
    out = []
    for r in records:
        r2 = dict(r)
        for f in fields:
            v = r2.get(f)
            if isinstance(v, str):
                r2[f] = mask_pii(v)
            elif isinstance(v, list):
                r2[f] = [mask_pii(x) for x in v]
        out.append(r2)
    return out


# --- the report ------------------------------------------------------------------------------------------
@dataclass
class QualityReport:
    n: int
    exact: list[list[int]]
    near: list[NearDuplicate]
    weakest: list[dict]
    lengths: dict
    truncation: list[dict]
    balance: dict
    pii: list[dict]
    embedding: list[NearDuplicate] = field(default_factory=list)
    embedding_model: str | None = None
    removed: list[int] = field(default_factory=list)
    token_counts: np.ndarray | None = None  # per-record sequence lengths behind `lengths`

    def summary(self) -> dict:
        return {"records": self.n, "exact_duplicate_groups": len(self.exact), "near_duplicate_pairs": len(self.near),
                "embedding_near_duplicate_pairs": len(self.embedding), "weak_grounding":
                sum(1 for w in self.weakest if w["groundedness"] < 0.5 or w["quote_ok"] is False),
                "pii_hits": len(self.pii), "token_length": self.lengths, "topic_balance": self.balance,
                "removed_by_filter": len(self.removed)}


def check_quality(records: list[dict], tokenizer=None, embedding_sample: int = 0, near_threshold: float = 0.7,
                  fields: tuple[str, ...] = ("question", "answer")) -> QualityReport:
    """Run every check on RAFT (or canonical) records. Near duplicates compare question + answer by
    default: two near-identical questions with different answers (e.g. the same question for two
    countries) are different facts, not duplicates to drop."""
    exact = exact_duplicates(records, tuple(dict.fromkeys(fields + ("answer",))))
    near = near_duplicates(records, fields, near_threshold)
    lengths = token_lengths(tokenizer, records) if tokenizer is not None and records and "instruction" in records[0] else None
    emb, emb_name = ([], None)
    if embedding_sample:
        emb, emb_name = embedding_near_duplicates(records, embedding_sample, fields=fields)
    dup_later = {j for g in exact for j in g[1:]} | {p.j for p in near}
    return QualityReport(
        n=len(records), exact=exact, near=near, weakest=answer_quality(records),
        lengths=length_stats(lengths) if lengths is not None else {},
        truncation=truncation_table(lengths) if lengths is not None else [],
        balance=balance(records), pii=scan_pii(records), embedding=emb, embedding_model=emb_name,
        removed=sorted(dup_later), token_counts=lengths)


def filter_records(records: list[dict], report: QualityReport, mask: bool = True) -> list[dict]:
    """Drop exact and near duplicates (keeping the first), mask PII."""
    drop = set(report.removed)
    kept = [r for i, r in enumerate(records) if i not in drop]
    return mask_records(kept) if mask else kept


def write_quality_report(report: QualityReport, records: list[dict], out_dir: str | Path,
                         lengths: np.ndarray | None = None) -> dict[str, Path]:
    """Markdown + HTML report with the plots, and the filtered data set (filtered.jsonl)."""
    import json

    from . import plots
    from .report import _md_table, _to_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = report.summary()
    images = {}
    bal = report.balance["counts"]
    images["balance"] = plots.save(plots.bar(list(bal), list(bal.values()), "주제별 샘플 수", "개수"), out / "balance.png")
    if lengths is not None and len(lengths):
        st = report.lengths
        images["lengths"] = plots.save(plots.histogram(list(lengths), "토큰 길이 분포", "tokens",
                                                       {"mean": st["mean"], "p95": st["p95"]}), out / "lengths.png")
    md = ["# 데이터 품질 보고서", "", _md_table([{"항목": k, "값": v} for k, v in s.items()
                                             if k not in ("token_length", "topic_balance")]), ""]
    if report.lengths:
        md += ["## 토큰 길이", _md_table([report.lengths]), ""]
        if "lengths" in images:
            md += ["![lengths](lengths.png)", ""]
        md += [_md_table(report.truncation), ""]
    md += ["## 주제 균형", report.balance["advice"], "", "![balance](balance.png)", ""]
    md += ["## 근거가 약한 샘플 (weakest grounding)",
           _md_table([{k: w[k] for k in ("id", "question", "answer", "groundedness", "relevance")}
                      for w in report.weakest[:10]]), ""]
    if report.near:
        md += ["## 근사 중복 (MinHash LSH)", _md_table([
            {"a": records[p.i].get("id"), "b": records[p.j].get("id"), "jaccard": p.jaccard,
             "질문 a": records[p.i]["question"], "질문 b": records[p.j]["question"]} for p in report.near[:10]]), ""]
    if report.pii:
        md += ["## 개인정보 의심 (PII)", _md_table(report.pii[:20]), ""]
    text = "\n".join(md) + "\n"
    (out / "quality_report.md").write_text(text, encoding="utf-8")
    (out / "quality_report.html").write_text(_to_html(text, out), encoding="utf-8")
    filtered = filter_records(records, report)
    with open(out / "filtered.jsonl", "w", encoding="utf-8") as f:
        for r in filtered:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    (out / "quality_summary.json").write_text(json.dumps(s, ensure_ascii=False, indent=1, default=str),
                                              encoding="utf-8")
    return {"markdown": out / "quality_report.md", "html": out / "quality_report.html",
            "filtered": out / "filtered.jsonl", **images}
