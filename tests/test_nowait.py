"""The fast path's Trainer does not wait for the GPU between steps (train/nowait.py): each step's log is taken
without `.item()` and written one step later, the token count comes from the collator. On the CPU (tiny 4-bit
EXAONE-shaped model, fast path forced on) its log history must be the plain Trainer behaviour's, entry by entry."""
import pytest
import torch

from tests.helpers.fastpath_batches import features
from workshop_utils.config import ModelSettings, load_config
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.train.collators import TOKEN_COUNT, FlatteningCollator
from workshop_utils.train.nowait import DeferredLog
from workshop_utils.train.trainer import CompletionOnlyTrainer, FastPathTrainer, assemble_trainer

TINY = "random:exaone:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2"
KEYS = ("loss", "grad_norm", "learning_rate", "epoch", "step", "num_input_tokens_seen", "eval_loss")


def _features(n: int, seed: int = 0) -> list[dict]:
    return features([20 + 7 * (i % 5) for i in range(n)], seed=seed)


def _train(tmp_path, name: str, device: str, steps: int = 4, eval_steps: int = 2):
    from datasets import Dataset

    from workshop_utils.model.load import load_model

    cfg = load_config("tiny")
    # model.tokenizer from the environment (WORKSHOP_TOKENIZER) carries over: a GPU machine without the offline package
    cfg.model = ModelSettings(model_id=TINY, compute_dtype="float32", tokenizer=cfg.model.tokenizer)
    t = cfg.train
    t.fast_path, t.max_steps, t.logging_steps, t.eval_steps, t.save_steps = "on", steps, 1, eval_steps, 1000
    t.per_device_train_batch_size, t.gradient_accumulation_steps, t.warmup_steps = 2, 2, 0  # 2 micro-batches a step
    t.compile_layers, cfg.lora.lora_dropout = "off", 0.0
    loaded = load_model(cfg.model, verbose=False)
    torch.manual_seed(0)
    device = DeviceChoice(device, torch.float32, "test")
    trainer, _, info = assemble_trainer(loaded.model, loaded.tokenizer, Dataset.from_list(_features(16)),
                                        Dataset.from_list(_features(4, seed=1)), cfg, device,
                                        output_dir=str(tmp_path / name), save_strategy="no", seed=0, data_seed=0,
                                        disable_tqdm=True)
    assert isinstance(trainer, FastPathTrainer) and info.fast_plan.padding_free
    trainer.train()
    return trainer


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (pinned copies, events)")


@pytest.mark.slow
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_deferred_logs_are_the_trainers_own_entry_by_entry(tmp_path, monkeypatch, device):
    deferred = _train(tmp_path, "deferred", device)
    # 4 steps logged; the evaluation's step (2) and the last step log at once, steps 1 and 3 one step later
    assert deferred.deferred_log.deferred == 2 and deferred.deferred_log.pending is None

    # the Trainer's own behaviour: every log at its step, the token count summed from the batch on the device
    monkeypatch.setattr(DeferredLog, "can_defer", staticmethod(lambda trainer: False))
    monkeypatch.setattr(FastPathTrainer, "_track_num_input_tokens", CompletionOnlyTrainer._track_num_input_tokens)
    plain = _train(tmp_path, "plain", device)
    assert plain.deferred_log.deferred == 0

    def entries(trainer):
        return [{k: h[k] for k in KEYS if k in h} for h in trainer.state.log_history]

    got, ref = entries(deferred), entries(plain)
    assert [e["step"] for e in got] == [e["step"] for e in ref] == [1, 2, 2, 3, 4, 4, 4]  # the last: the summary
    for a, b in zip(got, ref):
        assert a.keys() == b.keys(), (a, b)
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6 if device == "cpu" else 1e-3), (k, a, b)
    assert sum("loss" in e for e in got) == 4 and any("eval_loss" in e for e in got)
    assert got[-1]["num_input_tokens_seen"] > 0
    assert deferred.state.log_history[-1]["train_loss"] == pytest.approx(plain.state.log_history[-1]["train_loss"])


def test_flattening_collator_counts_the_non_padding_tokens_on_the_cpu():
    batch = FlatteningCollator(pad_token_id=0, pad_to_multiple_of=64)(_features(3))
    n = sum(len(f["input_ids"]) for f in _features(3))
    assert batch[TOKEN_COUNT] == n == int((batch["input_ids"] != 0).sum()) and batch["input_ids"].shape[1] == 128
    assert isinstance(batch[TOKEN_COUNT], int)  # not a tensor: accelerate leaves it on the CPU
