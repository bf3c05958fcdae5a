"""Groundedness (does the golden document support the answer; do the CoT's quotes occur in it) and
relevance (does the document talk about the question), from content morphemes."""
from __future__ import annotations

from ..raft import extract_quotes
from ..text import morphs

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
