"""Hyperparameter tuning the seed's way: change ONE parameter at a time, compare, keep a record."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field

from .config import WorkshopConfig, set_value
from .data.prepare import load_corpus
from .evaluate.runner import evaluate_models
from .evaluate.sets import build_eval_sets, select_test
from .model.load import load_model
from .report import plots
from .train.tracking import write_experiment_log
from .train.trainer import train


@dataclass
class SweepResult:
    param: str
    rows: list[dict] = field(default_factory=list)
    histories: dict = field(default_factory=dict)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self):

        xs = [str(r[self.param]) for r in self.rows]
        series = {"validation loss": [r["eval_loss"] for r in self.rows]}
        if all(r.get("rougeL") is not None for r in self.rows):
            series["ROUGE-L (tuned)"] = [r["rougeL"] for r in self.rows]
        ylabel = next(iter(series)) if len(series) == 1 else "값"
        return plots.line(xs, series, f"{self.param} 스윕 (나머지 설정은 고정)", self.param, ylabel)

    def best(self) -> dict:
        return min(self.rows, key=lambda r: r["eval_loss"] if r["eval_loss"] is not None else float("inf"))


def sweep(param: str, values: list, cfg: WorkshopConfig, splits: dict[str, list[dict]], evaluate: bool = True,
          early_stopping_patience: int = 0, log_experiments: bool = True, verbose: bool = True,
          reuse: dict | None = None, corpus: list[dict] | None = None) -> SweepResult:
    """Train once per value of `param` (dotted, e.g. "lora.r" or "train.num_train_epochs") from a fresh
    base model, everything else fixed; collect validation loss and (optionally) test metrics.

    `reuse` maps cfg's own value of `param` to the TrainResult of a run already trained with cfg (the
    baseline), which then is one point of the sweep without training it again (validation loss only).
    `corpus`: the documents of `splits` (`PrepareResult.corpus.records()`, e.g. custom data); by default
    the corpus of cfg's prepared data."""

    if cfg.train.eval_steps <= 0 or not splits.get("validation"):
        raise ValueError("스윕은 검증 loss로 비교합니다: train.eval_steps > 0 과 validation 분할이 필요합니다")
    reuse = reuse or {}
    current = functools.reduce(getattr, param.split("."), cfg)
    if any(v != current for v in reuse):
        raise ValueError(f"reuse는 cfg의 현재 값({param}={current})으로 학습한 실행만 쓸 수 있습니다: {list(reuse)}")
    if reuse and evaluate:
        raise ValueError("reuse한 실행은 모델이 없어 테스트 지표를 구할 수 없습니다: evaluate=False로 비교하세요")
    res = SweepResult(param)
    eval_sets = None
    if evaluate:
        test = select_test(splits["test"], cfg.eval.num_examples)
        eval_sets = {"golden_distractors": build_eval_sets(test, corpus if corpus is not None else load_corpus(cfg), cfg,
                                                             ["golden_distractors"])["golden_distractors"]}
    for value in values:
        if value in reuse:
            if verbose:
                print(f"[sweep] {param}={value}: 이미 학습한 실행을 사용 ({reuse[value].run_dir})")
            res.rows.append(_row(param, value, reuse[value]))
            res.histories[value] = _eval_history(reuse[value])
            continue
        c = copy.deepcopy(cfg)
        set_value(c, param, value, f"스윕 {param}")
        c.train.early_stopping_patience = early_stopping_patience
        c.train.output_dir = str(cfg.runs_dir.parent / f"sweep-{param.replace('.', '-')}-{value}")
        if param == "lora.r" and cfg.lora.lora_alpha == 2 * cfg.lora.r:
            c.lora.lora_alpha = 2 * value  # keep alpha = 2r, the seed's rule, so only the rank changes
        if verbose:
            print(f"[sweep] {param}={value}")
        loaded = load_model(c.model, verbose=False)
        model, tr = train(loaded.model, loaded.tokenizer, splits, c, resume=False, verbose=False)
        row = _row(param, value, tr)
        metrics = None
        if evaluate:
            ev = evaluate_models(model, loaded.tokenizer, eval_sets, c, models=("tuned",), progress=False,
                                 embedding_model=None)
            metrics = ev.metrics["golden_distractors"]["tuned"]
            row.update({"rougeL": metrics["rougeL"], "bleu": metrics["bleu"]})
        res.rows.append(row)
        res.histories[value] = _eval_history(tr)
        if log_experiments:
            write_experiment_log(c, tr.summary(), metrics, dataset="sweep", name=f"sweep-{param}-{value}",
                                 next_step=f"{param} 외의 설정은 고정; 가장 좋은 값으로 다음 파라미터를 스윕")
        del model, loaded
    return res


def _eval_history(tr) -> list[tuple[int, float]]:
    """(step, validation loss) of a run, from the Trainer's log history."""
    return [(h["step"], h["eval_loss"]) for h in tr.log_history if "eval_loss" in h]


def _row(param: str, value, tr) -> dict:
    evals = [loss for _, loss in _eval_history(tr)]
    return {param: value, "eval_loss": tr.eval_loss, "final_train_loss": tr.final_loss, "steps": tr.steps,
            "seconds": tr.seconds, "trainable_params": tr.trainable_params,
            "best_eval_loss": min(evals) if evals else None}
