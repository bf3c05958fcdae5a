"""Step 5 (save/merge/card/push) and `workshop run` in tiny size (summary.json contract)."""
from __future__ import annotations

import json

import pytest

from workshop_utils.report.publish import merge_memory_gib, model_card, push_adapter


def test_push_without_token_writes_the_card_locally(tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no cached login either
    card = model_card("base/model", "누리온테크 RAFT", {"r": 16}, {"steps": 4}, {"rougeL": 0.3})
    res = push_adapter(tmp_path, "me/adapter", card)
    assert res["pushed"] is False and "토큰" in res["reason"]
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "base_model: base/model" in text and "| rougeL | 0.300 |" in text


def test_merge_memory_for_exaone_is_stated():
    assert merge_memory_gib(7.8e9) == pytest.approx(14.5, abs=0.1)


@pytest.mark.slow
def test_workshop_run_tiny_writes_summary_and_report(tmp_path, monkeypatch, capsys, tiny_model):
    from workshop_utils.config import load_config
    from workshop_utils.pipeline import run

    monkeypatch.chdir(__import__("pathlib").Path(__file__).resolve().parents[1])
    # the tiny random model: this checks the pipeline's files and keys (notebooks 03 and 04 train and evaluate
    # the offline model through the same functions)
    cfg = load_config(size="tiny", build_dir=str(tmp_path / "build"), **{"model.model_id": tiny_model})
    cfg.eval.settings = ["golden_distractors", "rag_topk"]
    summary = run(cfg, progress=False)
    out = capsys.readouterr().out
    assert "ROUGE-L" in out and "report" in out
    saved = json.loads((tmp_path / "build" / "summary.json").read_text(encoding="utf-8"))
    for key in ("model", "base", "tuned", "train"):
        assert key in saved
    for key in ("rouge1", "rouge2", "rougeL", "bleu", "cosine"):
        assert key in saved["base"] and key in saved["tuned"]
    assert set(saved["train"]) >= {"steps", "seconds", "final_loss"} and saved["train"]["steps"] == 4
    report = __import__("pathlib").Path(saved["report"])
    assert report.parent == tmp_path / "build" / "runs" / "tiny-qlora" / saved["run"] / "report"
    assert (report.parent / "report.html").exists() and saved["run"] in report.read_text(encoding="utf-8")
    assert summary["retrieval_recall_at_k"]["rag_topk"] > 0


@pytest.mark.slow
def test_ensure_adapter_trains_when_there_is_none_and_reuses_that_run_after(tmp_path, capsys, tiny_model):
    """Notebooks 00, 03 and 04 get their tuned model from ensure_adapter: with no completed run of this
    configuration it trains one (notebook 00 run first, or any of them alone), and the next call loads that
    run's adapter instead of training again. The tiny random model: which branch runs and what it returns,
    not what the model learns (notebook 03 trains the offline model through the same `train`)."""
    import torch

    from workshop_utils.config import load_config
    from workshop_utils.pipeline import ensure_adapter

    cfg = load_config(size="tiny", build_dir=str(tmp_path / "build"), **{"model.model_id": tiny_model})
    model, loaded = ensure_adapter(cfg)
    out = capsys.readouterr().out
    assert "어댑터가 없어 지금 학습합니다" in out and "사용합니다" not in out
    adapters = sorted(cfg.runs_dir.glob("*/adapter"))
    assert len(adapters) == 1 and (adapters[0] / "adapter_config.json").exists()
    trained = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
    assert trained and any(v.abs().sum() > 0 for k, v in trained.items() if "lora_B" in k)  # trained, not B = 0

    again, loaded_again = ensure_adapter(cfg)
    out = capsys.readouterr().out
    assert f"같은 설정으로 학습한 어댑터를 사용합니다 (03 노트북 또는 workshop train): {adapters[0]}" in out
    assert "지금 학습합니다" not in out and sorted(cfg.runs_dir.glob("*/adapter")) == adapters  # no second run
    reloaded = {k: v for k, v in again.state_dict().items() if "lora_" in k}
    assert reloaded.keys() == trained.keys() and all(torch.equal(reloaded[k], trained[k]) for k in trained)
    assert again.base_model.model is loaded_again.model  # base = adapter off, tuned = adapter on, ONE model
