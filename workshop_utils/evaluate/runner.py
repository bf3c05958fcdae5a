"""Generate with the adapter off (base) and on (tuned) for every setting, and score the answers."""
from __future__ import annotations

import time
from pathlib import Path

from ..config import WorkshopConfig
from ..data.prepare import load_corpus, load_splits
from ..data.raft import final_answer
from .generation import answer_examples
from .metrics import compute_metrics
from .results import EvalResult, save_eval
from .sets import SETTING_NAMES, EvalSet, build_eval_sets, select_test


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


def evaluate_adapter(model, tokenizer, cfg: WorkshopConfig, out_dir: Path, progress: bool = True):
    """Evaluate base (adapter off) vs tuned (adapter on) on the test subset; save metrics & plots."""

    splits = load_splits(cfg)
    test = select_test(splits["test"], cfg.eval.num_examples)
    sets = build_eval_sets(test, load_corpus(cfg), cfg)
    res = evaluate_models(model, tokenizer, sets, cfg, progress=progress)
    files = save_eval(res, out_dir)
    return res, files
