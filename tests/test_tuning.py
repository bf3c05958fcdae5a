"""The one-at-a-time sweep: what it trains, what it keeps fixed, and reusing the baseline run."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from workshop_utils.config import load_config
from workshop_utils.sweep import sweep
from workshop_utils.train.trainer import TrainResult

SPLITS = {"train": [{"id": "t"}], "validation": [{"id": "v"}], "test": []}


def result(evals: list[float], trainable: int, run_dir: str = "runs/x") -> TrainResult:
    history = [{"loss": 0.9, "step": 1}] + [{"eval_loss": e, "step": 2 * (i + 1)} for i, e in enumerate(evals)]
    return TrainResult(steps=2 * len(evals), seconds=1.5, final_loss=0.4, train_loss=0.6, eval_loss=evals[-1],
                       run_dir=run_dir, adapter_dir=run_dir + "/adapter", log_history=history,
                       trainable_params=trainable)


@pytest.fixture()
def fake_training(monkeypatch):
    """Replace model loading and training; record the config each run was trained with."""
    calls = []

    def load_model(settings, verbose=True):
        return SimpleNamespace(model=object(), tokenizer=object())

    def train(model, tokenizer, splits, cfg, resume=False, verbose=True):
        calls.append(cfg)
        return object(), result([0.5, 0.3 + cfg.lora.r / 100], trainable=1000 * cfg.lora.r, run_dir=cfg.train.output_dir)

    monkeypatch.setattr("workshop_utils.sweep.load_model", load_model)
    monkeypatch.setattr("workshop_utils.sweep.train", train)
    return calls


def test_sweep_changes_only_the_swept_parameter(tmp_path, fake_training):
    cfg = load_config(size="tiny", build_dir=str(tmp_path))
    res = sweep("lora.r", [4, 8], cfg, SPLITS, evaluate=False, log_experiments=False, verbose=False)
    assert [(c.lora.r, c.lora.lora_alpha) for c in fake_training] == [(4, 8), (8, 16)]  # alpha = 2r kept
    assert all(c.train.learning_rate == cfg.train.learning_rate for c in fake_training)
    assert [Path(c.train.output_dir).name for c in fake_training] == ["sweep-lora-r-4", "sweep-lora-r-8"]
    assert list(res.table()["lora.r"]) == [4, 8] and res.best()["lora.r"] == 4
    assert res.rows[1]["best_eval_loss"] == 0.38 and res.rows[1]["eval_loss"] == 0.38
    assert cfg.lora.r == 16  # the caller's config is untouched


def test_sweep_reuses_the_baseline_run_without_training_it_again(tmp_path, fake_training):
    cfg = load_config(size="tiny", build_dir=str(tmp_path))
    baseline = result([0.7, 0.2, 0.25], trainable=16000, run_dir="runs/custom")
    res = sweep("lora.r", [8, 16], cfg, SPLITS, evaluate=False, log_experiments=False, verbose=False,
                reuse={16: baseline})
    assert [c.lora.r for c in fake_training] == [8]
    row = res.rows[1]
    assert (row["lora.r"], row["eval_loss"], row["best_eval_loss"], row["trainable_params"]) == (16, 0.25, 0.2, 16000)
    assert res.histories[16] == [(2, 0.7), (4, 0.2), (6, 0.25)]


def test_sweep_refuses_a_reused_run_it_cannot_vouch_for(tmp_path, fake_training):
    cfg = load_config(size="tiny", build_dir=str(tmp_path))
    with pytest.raises(ValueError, match="lora.r=16"):  # a run with another r is not the baseline of this cfg
        sweep("lora.r", [8], cfg, SPLITS, evaluate=False, reuse={8: result([0.5], 8000)})
    with pytest.raises(ValueError, match="evaluate=False"):
        sweep("lora.r", [16], cfg, SPLITS, evaluate=True, reuse={16: result([0.5], 16000)})
    assert fake_training == []
