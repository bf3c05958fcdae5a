"""Bring-your-own-data helpers: the schedule of a large data set scaled to a small one."""
from __future__ import annotations

from workshop_utils.config import load_config
from workshop_utils.train.schedule import fit_schedule, total_steps


def test_total_steps_counts_like_the_trainer(tmp_path):
    cfg = load_config(size="full", build_dir=str(tmp_path))
    # 110 examples, batch 4 -> 28 batches; 4-step accumulation -> 7 updates per epoch; 3 epochs -> 21
    assert total_steps(cfg, 110) == 21
    assert total_steps(cfg, 128) == 24
    cfg.train.max_steps = 5
    assert total_steps(cfg, 110) == 5


def test_fit_schedule_scales_warmup_and_evaluation_for_a_small_data_set(tmp_path):
    cfg = load_config(size="full", build_dir=str(tmp_path))
    fitted, rows = fit_schedule(cfg, 110)
    t = fitted.train
    assert (t.warmup_steps, t.eval_steps, t.save_steps, t.logging_steps) == (0.1, 5, 5, 2)
    assert [r["설정"] for r in rows] == ["train.warmup_steps", "train.eval_steps", "train.save_steps",
                                        "train.logging_steps"]
    assert (cfg.train.warmup_steps, cfg.train.eval_steps) == (100, 500)  # the original is untouched


def test_fit_schedule_leaves_a_run_that_already_fits_alone(tmp_path):
    for size in ("tiny", "smoke"):
        cfg = load_config(size=size, build_dir=str(tmp_path))
        fitted, rows = fit_schedule(cfg, 110)
        assert rows == [] and fitted.train == cfg.train
    big = load_config(size="full", build_dir=str(tmp_path))
    assert fit_schedule(big, 100_000)[1] == []  # 18,750 steps: warmup 100 and eval every 500 are right


def test_fitted_schedule_is_valid_for_early_stopping(tmp_path):
    from workshop_utils.runtime.device import choose_device
    from workshop_utils.train.trainer import training_arguments

    cfg = load_config(size="full", build_dir=str(tmp_path))
    cfg.train.early_stopping_patience = 2
    fitted, _ = fit_schedule(cfg, 110)
    args = training_arguments(fitted, choose_device())  # raises if save_steps is not a multiple of eval_steps
    assert args.load_best_model_at_end and args.eval_steps == 5 and args.warmup_steps == 0.1


def test_split_leakage_finds_documents_shared_between_splits():
    from workshop_utils.data.quality.checks import split_leakage

    splits = {"train": [{"golden_doc_id": "a"}, {"golden_doc_id": "b"}], "validation": [{"golden_doc_id": "b"}],
              "test": [{"golden_doc_id": "c"}]}
    assert split_leakage(splits) == ["b"]
    assert split_leakage({"train": [{"golden_doc_id": "a"}], "test": [{"golden_doc_id": "c"}]}) == []


def test_experiment_log_names_the_model_even_without_extra(tmp_path, monkeypatch):
    from workshop_utils.config import OFFLINE_MODEL_ID, load_config
    from workshop_utils.train.tracking import write_experiment_log

    monkeypatch.delenv("WORKSHOP_MODEL", raising=False)
    cfg = load_config("tiny")
    text = write_experiment_log(cfg, {"steps": 1}, None, "d", directory=tmp_path, extra={"note": "x"}).read_text()
    assert "베이스 모델: None" not in text and "- 베이스 모델: " in text
    if not __import__("torch").cuda.is_available():
        assert f"- 베이스 모델: {OFFLINE_MODEL_ID}" in text
    assert "- note: x" in text
