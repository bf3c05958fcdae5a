"""The live troubleshooting table: each detector fires on its symptom, stays quiet otherwise, and names
the remedy with the run's own numbers."""
from __future__ import annotations

import math

import pytest
from transformers import TrainerControl, TrainerState, TrainingArguments

from workshop_utils.model import load as load_mod
from workshop_utils.model.load import hub_failure_hint
from workshop_utils.train.callbacks import (
    TABLE,
    Diagnosis,
    DiagnosisLog,
    FlatLossCallback,
    NaNLossCallback,
    OverfitCallback,
    check_metrics_plausible,
    detect_flat,
    detect_overfit,
    oom_message,
)


@pytest.fixture()
def args(tmp_path):
    return TrainingArguments(output_dir=str(tmp_path), learning_rate=2e-4, max_grad_norm=0.3, use_cpu=True,
                             report_to="none")


def state(step: int) -> TrainerState:
    s = TrainerState()
    s.global_step = step
    return s


def test_table_has_the_seeds_six_rows():
    assert [r[0] for r in TABLE] == ["CUDA out of memory", "Loss가 NaN으로 발산", "학습이 멈춤 (loss 변화 없음)",
                                     "Validation loss만 증가", "모델 로드 실패", "평가 지표가 너무 낮음"]
    assert all(len(r) == 3 and all(r) for r in TABLE)


def test_detect_flat_fires_on_a_flat_curve_only():
    flat = [2.0, 2.01, 1.99, 2.0, 2.005, 1.995]
    assert detect_flat(flat) is not None and "2.0000" in detect_flat(flat)
    assert detect_flat([2.0, 1.8, 1.5, 1.2, 1.0, 0.8]) is None
    assert detect_flat(flat[:5]) is None  # too few points to tell
    assert detect_flat([2.0, 2.0, 2.0, 1.9, 1.9, 1.9], rel_tol=0.02) is None  # 5% drop is learning


def test_flat_loss_callback_suggests_a_higher_learning_rate(args):
    log = DiagnosisLog()
    cb = FlatLossCallback(log)
    for step, loss in enumerate([1.5, 1.5, 1.501, 1.499, 1.5, 1.5], start=1):
        cb.on_log(args, state(step), TrainerControl(), logs={"loss": loss})
    assert [d.symptom for d in log.items] == [TABLE[2][0]]
    assert "0.0006" in log.items[0].remedy  # 3 x 2e-4


def test_detect_overfit_needs_rising_validation_and_falling_training_loss():
    assert detect_overfit([0.9, 0.8, 0.85, 0.9], [1.2, 1.0, 0.7]) is not None
    assert detect_overfit([0.9, 0.8, 0.85, 0.9], [0.7, 0.9, 1.2]) is None  # both rise: not overfitting
    assert detect_overfit([0.9, 0.95, 0.93, 0.97], [1.2, 0.7]) is None  # not rising twice in a row
    assert detect_overfit([0.8, 0.9], [1.2, 0.7]) is None  # too few evaluations for patience=2
    assert detect_overfit([0.8, 0.9], [1.2, 0.7], patience=1) is not None


def test_overfit_callback_reads_train_logs_and_evaluations(args):
    log = DiagnosisLog()
    cb = OverfitCallback(log)
    for step, (tr, ev) in enumerate([(1.2, 0.9), (0.9, 0.8), (0.6, 0.85), (0.4, 0.95)], start=1):
        cb.on_log(args, state(step), TrainerControl(), logs={"loss": tr})
        cb.on_evaluate(args, state(step), TrainerControl(), metrics={"eval_loss": ev})
    assert [d.symptom for d in log.items] == [TABLE[3][0]]
    assert "0.8000 → 0.9500" in log.items[0].detail


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_callback_stops_training_and_says_lr_over_ten(args, bad):
    log = DiagnosisLog()
    control = TrainerControl()
    NaNLossCallback(log).on_log(args, state(37), control, logs={"loss": bad})
    assert control.should_training_stop
    d = log.items[0]
    assert d.symptom == TABLE[1][0] and "step 37" in d.detail and "2e-05" in d.remedy and "0.3" in d.remedy


def test_nan_callback_ignores_finite_losses_and_reports_once(args):
    log = DiagnosisLog()
    control = TrainerControl()
    cb = NaNLossCallback(log)
    cb.on_log(args, state(1), control, logs={"loss": 1.23})
    cb.on_log(args, state(2), control, logs={"eval_loss": float("nan")})  # only the training loss counts
    assert not control.should_training_stop and log.items == []
    cb.on_log(args, state(3), control, logs={"loss": math.nan})
    cb.on_log(args, state(4), control, logs={"loss": math.nan})
    assert len(log.items) == 1


def test_oom_message_halves_the_batch_and_keeps_the_effective_batch():
    err = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore details")
    msg = oom_message(err, per_device_batch=4, grad_accum=4, checkpointing=False)
    assert msg.startswith(f"[진단] {TABLE[0][0]}: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    assert "more details" not in msg
    assert "4 → 2" in msg and "4 → 8" in msg and "gradient checkpointing" in msg
    on = oom_message(err, per_device_batch=1, grad_accum=16, checkpointing=True)
    assert "1 → 1" in on and "16 → 32" in on and "gradient checkpointing 켜기" not in on


def test_hub_failure_hint_names_the_cause(monkeypatch):
    err = OSError("401 Client Error: Unauthorized for url")
    monkeypatch.setattr(load_mod, "is_offline", lambda: True)
    offline = hub_failure_hint("LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct", err)
    assert "OSError: 401" in offline and "WORKSHOP_MODEL=offline" in offline
    monkeypatch.setattr(load_mod, "is_offline", lambda: False)
    monkeypatch.setattr(load_mod, "hub_reachable", lambda: True)
    monkeypatch.setattr("workshop_utils.model.load.hf_token", lambda: None)
    assert "토큰이 없습니다" in hub_failure_hint("x/y", err)
    monkeypatch.setattr("workshop_utils.model.load.hf_token", lambda: "hf_dummy")
    with_token = hub_failure_hint("x/y", err)
    assert "라이선스" in with_token and "hf_dummy" not in with_token


def test_check_metrics_plausible_flags_only_implausibly_low_scores():
    d = check_metrics_plausible({"rougeL": 0.01})
    assert d is not None and d.symptom == TABLE[5][0] and "0.010" in d.detail
    assert check_metrics_plausible({"rougeL": 0.30}) is None
    assert check_metrics_plausible({"bleu": 0.0}) is None  # no ROUGE-L: nothing to judge
    assert check_metrics_plausible({"rougeL": 0.10}, floor_rouge_l=0.2) is not None


def test_diagnosis_message_has_symptom_and_remedy():
    d = Diagnosis("X", "detail", "do this")
    assert d.message() == "[진단] X: detail\n       해결: do this"
