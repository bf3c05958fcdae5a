"""The RAFT paper's three test settings built from the test split (golden only, golden + distractors,
BM25 top-k over passages of the whole corpus)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import WorkshopConfig
from ..data.raft import evidence_sentences, truncate_document
from ..data.retrieval import BM25Index, recall_at_k
from ..data.text import sentences

SETTINGS = ("golden_only", "golden_distractors", "rag_topk")


SETTING_NAMES = {"golden_only": "골든 문서만", "golden_distractors": "골든 + 방해 문서 (학습 형식)",
                 "rag_topk": "RAG top-k (BM25 검색)"}


def passages(corpus: list[dict], max_chars: int) -> tuple[list[str], list[str]]:
    """Split each document into consecutive sentence windows of at most `max_chars` characters."""
    ids, texts = [], []
    for d in corpus:
        cur: list[str] = []
        for s in sentences(d["text"]) or [d["text"]]:
            if cur and len(" ".join(cur + [s])) > max_chars:
                ids.append(d["doc_id"])
                texts.append(" ".join(cur))
                cur = []
            cur.append(s)
        if cur:
            ids.append(d["doc_id"])
            texts.append(" ".join(cur))
    return ids, texts


@dataclass
class EvalSet:
    setting: str
    examples: list[dict]
    retrieval_recall: float | None = None


def build_eval_sets(test: list[dict], corpus: list[dict], cfg: WorkshopConfig,
                    settings: list[str] | None = None) -> dict[str, EvalSet]:
    """The test examples rewritten for each setting (references stay the original answers)."""
    settings = list(settings or cfg.eval.settings)
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        raise ValueError(f"알 수 없는 평가 설정 {sorted(unknown)}; 가능: {SETTINGS}")
    texts = {d["doc_id"]: d["text"] for d in corpus}
    out: dict[str, EvalSet] = {}
    if "golden_only" in settings:
        rows = []
        for ex in test:
            gold = texts[ex["golden_doc_id"]]
            keep = evidence_sentences(gold, ex["reference_answer"], ex.get("cot"))
            rows.append({**ex, "context": [truncate_document(gold, cfg.data.max_context_len, keep)],
                         "doc_ids": [ex["golden_doc_id"]], "golden_index": 0})
        out["golden_only"] = EvalSet("golden_only", rows)
    if "golden_distractors" in settings:
        out["golden_distractors"] = EvalSet("golden_distractors", [dict(ex) for ex in test])
    if "rag_topk" in settings:
        pids, ptexts = passages(corpus, cfg.data.max_context_len)
        index = BM25Index.build([f"{d}#{i}" for i, d in enumerate(pids)], ptexts)
        hits, _ = index.search([ex["question"] for ex in test], cfg.eval.rag_k)
        rows = []
        for ex, row in zip(test, hits):
            idx = [int(h.rsplit("#", 1)[1]) for h in row]
            doc_ids = [pids[i] for i in idx]
            rows.append({**ex, "context": [ptexts[i] for i in idx], "doc_ids": doc_ids,
                         "golden_index": doc_ids.index(ex["golden_doc_id"]) if ex["golden_doc_id"] in doc_ids else None})
        recall = recall_at_k([r["doc_ids"] for r in rows], [ex["golden_doc_id"] for ex in test])
        out["rag_topk"] = EvalSet("rag_topk", rows, recall)
    return out


def select_test(test: list[dict], n: int, seed: int = 0) -> list[dict]:
    """A fixed, topic-balanced subset of the test split (n=0: all of it)."""
    if not n or n >= len(test):
        return list(test)
    by_topic: dict[str, list[dict]] = {}
    for ex in sorted(test, key=lambda e: e["id"]):
        by_topic.setdefault(ex.get("topic", ""), []).append(ex)
    out: list[dict] = []
    while len(out) < n:
        for topic in sorted(by_topic):
            if by_topic[topic] and len(out) < n:
                out.append(by_topic[topic].pop(0))
    return out
