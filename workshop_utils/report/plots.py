"""Matplotlib figures used by the notebooks and the report (Korean labels via NanumGothic)."""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from ..evaluate.metrics import METRIC_LABELS
from ..evaluate.sets import SETTING_NAMES

try:  # registers the bundled NanumGothic font so Hangul labels are not drawn as boxes
    import koreanize_matplotlib  # noqa: F401
except ImportError:  # pragma: no cover - optional
    pass


plt.rcParams["axes.unicode_minus"] = False


BASE_COLOR, TUNED_COLOR = "#9aa5b1", "#2b7bb9"


def _detached(fig):
    """Close the figure in pyplot's registry before returning it: a notebook then shows it once (as the
    cell's value) instead of twice (inline backend's auto-display + the returned value)."""
    plt.close(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def metric_bars(metrics: dict, setting: str = "golden_distractors"):
    """Base vs tuned for each metric (BLEU scaled to 0-1 to share the axis)."""
    m = metrics[setting]
    keys = [k for k in METRIC_LABELS if k != "exact_match" and m["base"].get(k) is not None]
    labels = {**METRIC_LABELS, "bleu": "BLEU/100", "cosine": "Cosine"}
    scale = {"bleu": 0.01}
    fig, ax = plt.subplots(figsize=(7, 3.4))
    xs = range(len(keys))
    for off, name, color, label in ((-0.2, "base", BASE_COLOR, "원본 모델"), (0.2, "tuned", TUNED_COLOR, "파인튜닝 후")):
        vals = [m[name][k] * scale.get(k, 1) for k in keys]
        bars = ax.bar([x + off for x in xs], vals, width=0.4, color=color, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(list(xs), [labels[k] for k in keys])
    ax.set_ylim(0, 1.05)
    ax.set_title("파인튜닝 전후 비교 (골든 + 방해 문서)")
    ax.legend(loc="upper left")
    return _detached(fig)


def settings_bars(metrics: dict, key: str = "rougeL"):
    """One metric per RAFT test setting and model."""

    settings = list(metrics)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    xs = range(len(settings))
    for off, name, color, label in ((-0.2, "base", BASE_COLOR, "원본 모델"), (0.2, "tuned", TUNED_COLOR, "파인튜닝 후")):
        vals = [metrics[s][name][key] if name in metrics[s] else 0 for s in settings]
        bars = ax.bar([x + off for x in xs], vals, width=0.4, color=color, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(list(xs), [SETTING_NAMES.get(s, s) for s in settings], fontsize=8)
    ax.set_ylabel(key)
    ax.set_title(f"RAFT 평가 설정별 {key}")
    ax.legend()
    return _detached(fig)


def save_eval_plots(metrics: dict, out_dir: str | Path) -> dict[str, Path]:
    """The evaluation's two charts as PNG files: base vs tuned per metric, and one metric per setting."""
    out = Path(out_dir)
    if not metrics:
        return {}
    return {"comparison_plot": save(metric_bars(metrics), out / "comparison.png"),
            "settings_plot": save(settings_bars(metrics), out / "settings.png")}


def loss_curve(history: dict[str, list[tuple[int, float]]], title: str = "학습 곡선"):
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    if history.get("train"):
        s, v = zip(*history["train"])
        ax.plot(s, v, marker=".", label="training loss")
    if history.get("eval"):
        s, v = zip(*history["eval"])
        ax.plot(s, v, marker="o", label="validation loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _detached(fig)


def histogram(values: list[int], title: str, xlabel: str, marks: dict[str, float] | None = None, bins: int = 40):
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    ax.hist(values, bins=bins, color="#5b8def", alpha=0.85)
    for name, x in (marks or {}).items():
        ax.axvline(x, color="#d9534f" if "p95" in name else "#333", linestyle="--", linewidth=1)
        ax.text(x, ax.get_ylim()[1] * 0.92, f" {name}={x:.3g}", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("개수")
    return _detached(fig)


def bar(labels: list[str], values: list[float], title: str, ylabel: str = "", horizontal: bool = False):
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    if horizontal:
        ax.barh(labels, values, color="#5b8def")
    else:
        b = ax.bar(labels, values, color="#5b8def")
        ax.bar_label(b, fontsize=8)
        ax.tick_params(axis="x", labelrotation=30)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    return _detached(fig)


def line(xs, series: dict[str, list[float]], title: str, xlabel: str, ylabel: str, logy: bool = False):
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for name, ys in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return _detached(fig)


def stacked_bars(rows: list[dict], label_key: str, keys: list[str], title: str, xlabel: str = ""):
    """Horizontal stacked bars: one bar per row, one segment per key, the total written at the end."""
    fig, ax = plt.subplots(figsize=(7, 0.55 * len(rows) + 1.4))
    labels = [str(r[label_key]) for r in rows]
    left = [0.0] * len(rows)
    for key in keys:
        vals = [float(r[key]) for r in rows]
        ax.barh(labels, vals, left=left, label=key)
        left = [a + b for a, b in zip(left, vals)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:.1f}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left) * 1.15 if left and max(left) > 0 else 1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend(fontsize=8, loc="lower right")
    return _detached(fig)
