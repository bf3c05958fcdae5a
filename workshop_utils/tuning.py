"""Hyperparameter tuning the seed's way: change ONE parameter at a time, compare, keep a record."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from .config import WorkshopConfig, _set


@dataclass
class SweepResult:
    param: str
    rows: list[dict] = field(default_factory=list)
    histories: dict = field(default_factory=dict)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self):
        from . import plots

        xs = [str(r[self.param]) for r in self.rows]
        series = {"validation loss": [r["eval_loss"] for r in self.rows]}
        if all(r.get("rougeL") is not None for r in self.rows):
            series["ROUGE-L (tuned)"] = [r["rougeL"] for r in self.rows]
        return plots.line(xs, series, f"{self.param} 스윕 (나머지 설정은 고정)", self.param, "값")

    def best(self) -> dict:
        return min(self.rows, key=lambda r: r["eval_loss"] if r["eval_loss"] is not None else float("inf"))


def sweep(param: str, values: list, cfg: WorkshopConfig, splits: dict[str, list[dict]], evaluate: bool = True,
          early_stopping_patience: int = 0, log_experiments: bool = True, verbose: bool = True) -> SweepResult:
    """Train once per value of `param` (dotted, e.g. "lora.r" or "train.num_train_epochs") from a fresh
    base model, everything else fixed; collect validation loss and (optionally) test metrics."""
    from .evaluation import build_eval_sets, evaluate_models, select_test
    from .models import load_model
    from .data.prepare import load_corpus
    from .tracking import write_experiment_log
    from .training import train

    if cfg.train.eval_steps <= 0 or not splits.get("validation"):
        raise ValueError("스윕은 검증 loss로 비교합니다: train.eval_steps > 0 과 validation 분할이 필요합니다")
    res = SweepResult(param)
    eval_sets = None
    if evaluate:
        test = select_test(splits["test"], cfg.eval.num_examples)
        eval_sets = {"golden_distractors": build_eval_sets(test, load_corpus(cfg), cfg, ["golden_distractors"])["golden_distractors"]}
    for value in values:
        c = copy.deepcopy(cfg)
        _set(c, param, value)
        c.train.early_stopping_patience = early_stopping_patience
        c.train.output_dir = str(cfg.run_dir.parent / f"sweep-{param.replace('.', '-')}-{value}")
        if param == "lora.r" and cfg.lora.lora_alpha == 2 * cfg.lora.r:
            c.lora.lora_alpha = 2 * value  # keep alpha = 2r, the seed's rule, so only the rank changes
        if verbose:
            print(f"[sweep] {param}={value}")
        loaded = load_model(c.model, verbose=False)
        model, tr = train(loaded.model, loaded.tokenizer, splits, c, resume=False, verbose=False)
        row = {param: value, "eval_loss": tr.eval_loss, "final_train_loss": tr.final_loss, "steps": tr.steps,
               "seconds": tr.seconds, "trainable_params": tr.trainable_params}
        evals = [h["eval_loss"] for h in tr.log_history if "eval_loss" in h]
        row["best_eval_loss"] = min(evals) if evals else None
        metrics = None
        if evaluate:
            ev = evaluate_models(model, loaded.tokenizer, eval_sets, c, models=("tuned",), progress=False,
                                 embedding_model=None)
            metrics = ev.metrics["golden_distractors"]["tuned"]
            row.update({"rougeL": metrics["rougeL"], "bleu": metrics["bleu"]})
        res.rows.append(row)
        res.histories[value] = [(h["step"], h["eval_loss"]) for h in tr.log_history if "eval_loss" in h]
        if log_experiments:
            write_experiment_log(c, tr.summary(), metrics, dataset="sweep", name=f"sweep-{param}-{value}",
                                 next_step=f"{param} 외의 설정은 고정; 가장 좋은 값으로 다음 파라미터를 스윕")
        del model, loaded
    return res
