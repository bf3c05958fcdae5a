"""Base vs tuned on the held-out test split, in the RAFT paper's three test settings.

- golden_only:        the question with its golden document alone
- golden_distractors: golden + k distractors, shuffled (the training format)
- rag_topk:           BM25 retrieves k passages from the whole corpus (documents split into
                      passages of at most max_context_len characters, as a RAG system chunks them)

Both models run through the same `generate` on ONE loaded base: the adapter is switched off for the
base model (no second copy in memory).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import WorkshopConfig
from .data.raft import evidence_sentences, final_answer, truncate_document
from .generation import answer_examples
from .metrics import compute_metrics, headline
from .retrieval import BM25Index, recall_at_k
from .text import sentences

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


@dataclass
class EvalResult:
    metrics: dict = field(default_factory=dict)  # setting -> model -> metrics (headline + details)
    predictions: list[dict] = field(default_factory=list)
    retrieval: dict = field(default_factory=dict)
    stop_rate: dict = field(default_factory=dict)
    seconds: float = 0.0
    embedding_model: str | None = None

    def table(self, setting: str = "golden_distractors"):
        """The seed's before/after table: 평가 지표 | 원본 모델 | 파인튜닝 후 | 개선율."""
        import pandas as pd

        m = self.metrics[setting]
        rows = []
        for k, label in (("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"), ("bleu", "BLEU"),
                         ("cosine", "Cosine Similarity"), ("exact_match", "Exact Match"), ("f1", "F1 (문자)")):
            b, t = m["base"].get(k), m["tuned"].get(k)
            if b is None or t is None:
                continue
            rows.append({"평가 지표": label, "원본 모델": round(b, 3), "파인튜닝 후": round(t, 3),
                         "개선율": improvement(b, t)})
        return pd.DataFrame(rows)

    def settings_table(self):
        import pandas as pd

        rows = []
        for s, by_model in self.metrics.items():
            for model, m in by_model.items():
                rows.append({"설정": SETTING_NAMES.get(s, s), "모델": model, "ROUGE-1": m["rouge1"],
                             "ROUGE-L": m["rougeL"], "BLEU": m["bleu"], "Cosine": m.get("cosine"),
                             "EM": m["exact_match"], "F1": m["f1"],
                             "recall@k": self.retrieval.get(s)})
        return pd.DataFrame(rows)

    def samples(self, setting: str = "golden_distractors", n: int = 5):
        import pandas as pd

        rows = [p for p in self.predictions if p["setting"] == setting][:n]
        return pd.DataFrame([{"질문": p["question"], "참조 답변": p["reference"], "원본 모델 답변": p["base"],
                              "파인튜닝 후 답변": p["tuned"], "ROUGE-L (원본→튜닝)":
                              f"{p['scores']['base']['rougeL']:.2f} → {p['scores']['tuned']['rougeL']:.2f}"}
                             for p in rows])


def improvement(base: float, tuned: float) -> str:
    if base == 0:
        return "n/a (원본 0)" if tuned else "0%"
    return f"{(tuned - base) / abs(base) * 100:+.1f}%"


def evaluate_models(model, tokenizer, eval_sets: dict[str, EvalSet], cfg: WorkshopConfig,
                    models: tuple[str, ...] = ("base", "tuned"), progress: bool = True,
                    embedding_model: str | None = None) -> EvalResult:
    """Generate with the adapter off (base) and on (tuned) for every setting; compute metrics."""
    t0 = time.perf_counter()
    res = EvalResult()
    emb = embedding_model if embedding_model is not None else cfg.eval.embedding_model
    for setting, es in eval_sets.items():
        refs = [ex["reference_answer"] for ex in es.examples]
        outputs = {}
        res.metrics[setting] = {}
        for name in models:
            if progress:
                print(f"[eval] {SETTING_NAMES.get(setting, setting)} / {name}: {len(es.examples)}개 생성")
            gen = answer_examples(model, tokenizer, es.examples, cfg.eval.max_new_tokens, cfg.eval.batch_size,
                                  base=(name == "base"), progress=progress)
            preds = [final_answer(t) for t in gen.texts]
            m = compute_metrics(preds, refs, embedding_model=emb, verbose=progress and not res.embedding_model)
            res.embedding_model = m.get("embedding_model")
            outputs[name] = (preds, m)
            res.metrics[setting][name] = {k: v for k, v in m.items() if k != "per_example"}
            res.stop_rate[f"{setting}/{name}"] = sum(gen.stopped) / len(gen.stopped)
        if es.retrieval_recall is not None:
            res.retrieval[setting] = es.retrieval_recall
        for i, ex in enumerate(es.examples):
            res.predictions.append({
                "id": ex["id"], "setting": setting, "question": ex["question"], "reference": refs[i],
                "golden_in_context": ex.get("golden_index") is not None,
                **{name: outputs[name][0][i] for name in outputs},
                "scores": {name: outputs[name][1]["per_example"][i] for name in outputs}})
    res.seconds = round(time.perf_counter() - t0, 1)
    return res


def save_eval(res: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """metrics.json (per setting and model), predictions.jsonl and the plots."""
    from . import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"metrics": res.metrics, "retrieval_recall_at_k": res.retrieval,
                                                  "stop_rate": res.stop_rate, "seconds": res.seconds,
                                                  "embedding_model": res.embedding_model},
                                                 ensure_ascii=False, indent=1), encoding="utf-8")
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as f:
        for p in res.predictions:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    files = {"metrics": out / "metrics.json", "predictions": out / "predictions.jsonl"}
    if res.metrics:
        files["comparison_plot"] = plots.save(plots.metric_bars(res.metrics), out / "comparison.png")
        files["settings_plot"] = plots.save(plots.settings_bars(res.metrics), out / "settings.png")
    return files


def headline_metrics(res: EvalResult, setting: str = "golden_distractors") -> dict:
    return {name: headline(m) for name, m in res.metrics[setting].items()}
