"""The `workshop` size: a live GPU session's schedule (chosen automatically on CUDA; `full` stays the seed's)."""
from __future__ import annotations

import math

from workshop_utils.config import load_config, size_changes
from workshop_utils.runtime import device as device_mod
from workshop_utils.train.schedule import lr_schedule, total_steps


def test_workshop_is_the_default_on_cuda_and_smoke_on_cpu(monkeypatch):
    monkeypatch.delenv("WORKSHOP_SIZE", raising=False)
    monkeypatch.setattr(device_mod, "has_cuda", lambda: True)
    assert load_config().size == "workshop"
    monkeypatch.setattr(device_mod, "has_cuda", lambda: False)
    assert load_config().size == "smoke"
    assert load_config("full").train.warmup_steps == 100  # full stays the seed's recipe


def test_workshop_schedule_is_coherent():
    cfg = load_config("workshop")
    t = cfg.train
    steps = total_steps(cfg, n_train=766)
    warmup = math.ceil(t.warmup_steps * steps) if t.warmup_steps < 1 else t.warmup_steps
    assert 0 < warmup <= 0.1 * steps  # warmup as a ratio <= 10% of the run
    lrs = lr_schedule(t.learning_rate, t.warmup_steps, steps)
    assert max(lrs) > 0.9 * t.learning_rate  # the run reaches its learning rate
    assert steps // t.eval_steps >= 2 and steps // t.save_steps >= 2  # validation curve + resume demo
    assert t.save_steps % t.eval_steps == 0  # early stopping restores the best checkpoint
    assert t.early_stopping_patience >= 1 and t.eval_max_examples > 0
    assert steps // t.logging_steps >= 10  # a training curve with points
    assert t.per_device_train_batch_size * t.gradient_accumulation_steps == 16  # the seed's effective batch


def test_workshop_generation_budget_is_bounded():
    cfg = load_config("workshop")
    e = cfg.eval
    generated = e.num_examples * len(e.settings) * 2 * e.max_new_tokens  # base + tuned
    assert 0 < e.num_examples <= 32 and generated <= 24 * 3 * 2 * 128
    rows = {r["설정"]: r for r in size_changes(cfg)}
    assert all(r["이유"] for r in rows.values())  # every change says why
