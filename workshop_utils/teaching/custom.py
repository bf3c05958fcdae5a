"""05 custom data: an early stopping that really stops, on a small run over the custom data."""
from __future__ import annotations

import copy

from ..config import WorkshopConfig, set_value
from ..report import plots
from ..train.trainer import TrainResult

EARLY_STOP_MAX_STEPS = 40
EARLY_STOP_SETTINGS = {  # setting -> (value, why)
    "train.max_steps": (EARLY_STOP_MAX_STEPS, "넉넉한 최대 스텝: early stopping이 그 전에 멈추는지 봅니다"),
    "train.eval_steps": (2, "2 스텝마다 검증 loss (판단할 평가가 여러 번 있어야 함)"),
    "train.save_steps": (2, "평가마다 체크포인트 (끝나면 best를 다시 불러옴)"),
    "train.early_stopping_patience": (2, "검증 loss가 2번 연속 나아지지 않으면 멈춤"),
    "train.early_stopping_threshold": (0.1, "0.1보다 적게 내려가면 '나아지지 않음'(제자리)으로 봄: 몇 스텝 안에 멈추도록 "
                                             "데모용으로 크게 잡은 값, 보통은 0 또는 아주 작게"),
    "train.eval_max_examples": (2, "검증 예제 2개로 빠르게 (CPU)"),
    "train.logging_steps": (2, "학습 loss도 2 스텝마다"),
    "train.output_dir": ("runs/early-stopping-demo", "다른 실행과 섞이지 않게"),
}
# Size tiny (CI, 2 CPU cores: a step ~7 s, an evaluation ~4 s per example) evaluates and saves at every step: the same
# patience and threshold then decide after fewer steps (measured: stopped at step 4 instead of 8, ~75 s instead of
# ~100 s), on one validation example (stops at step 5 instead of 4, and the run takes 47 s instead of 55 s).
EARLY_STOP_TINY = {
    "train.eval_steps": (1, "CI(tiny): 매 스텝 검증 (CPU에서는 스텝이 비싸서 더 일찍 판단)"),
    "train.save_steps": (1, "평가마다 체크포인트 (끝나면 best를 다시 불러옴)"),
    "train.eval_max_examples": (1, "CI(tiny): 검증 예제 1개 (매 스텝 평가하므로)"),
}


def early_stopping_config(cfg: WorkshopConfig) -> tuple[WorkshopConfig, "list[dict]"]:
    """The custom run's config with a generous step budget, frequent evaluation and early stopping on (every step
    at size tiny: EARLY_STOP_TINY)."""
    cfg_es = copy.deepcopy(cfg)
    rows = []
    for name, (value, why) in {**EARLY_STOP_SETTINGS, **(EARLY_STOP_TINY if cfg.size == "tiny" else {})}.items():
        section, field = name.split(".")
        rows.append({"설정": name, "이전": getattr(getattr(cfg_es, section), field), "early stopping 데모": value,
                     "이유": why})
        set_value(cfg_es, name, value, "early stopping 데모")
    return cfg_es, rows


def _evals(tr: TrainResult) -> list[tuple[int, float]]:
    return [(h["step"], h["eval_loss"]) for h in tr.log_history if "eval_loss" in h]


def stopped_early(tr: TrainResult, cfg: WorkshopConfig) -> bool:
    return tr.steps < cfg.train.max_steps


def early_stopping_summary(tr: TrainResult, cfg: WorkshopConfig) -> dict:
    evals = _evals(tr)
    best_step, best = min(evals, key=lambda e: e[1]) if evals else (None, None)
    return {"최대 스텝 (max_steps)": cfg.train.max_steps, "실제로 학습한 스텝": tr.steps,
            "early stopping으로 멈춤": stopped_early(tr, cfg), "평가 횟수": len(evals),
            "가장 낮은 검증 loss (스텝)": f"{best:.4f} (스텝 {best_step})" if evals else "-",
            "patience / threshold": f"{cfg.train.early_stopping_patience} / {cfg.train.early_stopping_threshold:g}",
            "남은 어댑터": "가장 낮은 검증 loss의 체크포인트"}


def early_stopping_curve(tr: TrainResult):
    """Training and validation loss of the run, with the best evaluation and the stop marked."""
    history = {"train": [(h["step"], h["loss"]) for h in tr.log_history if "loss" in h], "eval": _evals(tr)}
    fig = plots.loss_curve(history, title="early stopping: 검증 loss가 나아지지 않자 멈춤")
    ax = fig.axes[0]
    if history["eval"]:
        best_step, best = min(history["eval"], key=lambda e: e[1])
        ax.axvline(best_step, color="#2e8b57", linestyle="--", linewidth=1)
        ax.annotate(f"best (스텝 {best_step})", (best_step, best), textcoords="offset points", xytext=(5, 12),
                    color="#2e8b57", fontsize=9)
    ax.axvline(tr.steps, color="#d9534f", linestyle=":", linewidth=1.2)
    ax.annotate(f"멈춤 (스텝 {tr.steps})", (tr.steps, ax.get_ylim()[1]), textcoords="offset points", xytext=(-70, -14),
                color="#d9534f", fontsize=9)
    return fig
