"""CPU speed-up without changing numbers: 4-bit weights dequantized once give bit-identical logits, LoRA gradients
and greedy generations to bitsandbytes' own path, and the original forwards come back afterwards."""
from __future__ import annotations

import pytest
import torch

from workshop_utils.config import load_config
from workshop_utils.model.cpu4bit import _linear4bit_modules, dequantized_4bit_weights


@pytest.fixture(scope="module")
def lora_model():
    from workshop_utils.model.load import load_model
    from workshop_utils.model.lora import apply_lora

    cfg = load_config(size="tiny")
    loaded = load_model(cfg.model, verbose=False)
    model = apply_lora(loaded.model, cfg.lora)
    return model, loaded.tokenizer


def _logits_and_grads(model, ids):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), grads


def test_training_step_is_bit_identical(lora_model):
    model, tok = lora_model
    model.train()
    ids = tok(["누리온테크의 연차휴가는 입사 1년 후 15일입니다."] * 2, return_tensors="pt")["input_ids"]
    torch.manual_seed(0)
    ref_logits, ref_grads = _logits_and_grads(model, ids)
    with dequantized_4bit_weights(model) as n:
        assert n == len(_linear4bit_modules(model)) > 0
        torch.manual_seed(0)
        logits, grads = _logits_and_grads(model, ids)
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[k], ref_grads[k]) for k in grads)
    assert all("forward" not in m.__dict__ for m in _linear4bit_modules(model))  # bitsandbytes' forward is back


def test_generation_is_identical(lora_model):
    from workshop_utils.evaluate.generation import generate

    model, tok = lora_model
    prompts = ["서울의 인구는?", "연차휴가는 며칠인가요? 문서를 보고 답하세요."]
    fast = generate(model, tok, prompts, max_new_tokens=6, progress=False)
    slow = generate(model, tok, prompts, max_new_tokens=6, progress=False, dequantize_once=False)
    assert fast.texts == slow.texts and fast.new_tokens == slow.new_tokens


def test_too_large_or_disabled_leaves_the_model_alone(lora_model):
    model, _ = lora_model
    with dequantized_4bit_weights(model, max_gib=1e-6) as n:
        assert n == 0 and all("forward" not in m.__dict__ for m in _linear4bit_modules(model))
    with dequantized_4bit_weights(model, enabled=False) as n:
        assert n == 0


def test_a_second_load_is_a_copy_of_the_first_and_the_same_model(tiny_model, monkeypatch, tmp_path):
    """load_model on the CPU copies the model it loaded before (model/load.py, LOAD_MEMO): every tensor and
    the training step are bit-identical to a fresh load, and the copy shares nothing with the memo."""
    from workshop_utils.config import ModelSettings
    from workshop_utils.model import load
    from workshop_utils.model.lora import apply_lora

    monkeypatch.setattr(load, "_LOAD_MEMO", type(load._LOAD_MEMO)())
    settings = ModelSettings(model_id=tiny_model)
    fresh = load.load_model(settings, verbose=False).model
    assert len(load._LOAD_MEMO) == 1
    (memo,) = load._LOAD_MEMO.values()
    copied = load.load_model(settings, verbose=False).model
    sd_fresh, sd_copied = fresh.state_dict(), copied.state_dict()
    assert sd_fresh.keys() == sd_copied.keys() and all(torch.equal(sd_fresh[k], sd_copied[k]) for k in sd_fresh)
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in memo.named_parameters()}
    assert not {ptr for ptr, _ in before.values()} & {p.data_ptr() for p in copied.parameters()}
    def tied(m):
        return m.lm_head.weight is m.get_input_embeddings().weight

    assert tied(copied) == tied(fresh)  # deepcopy keeps shared tensors shared (the offline model ties them)
    assert _linear4bit_modules(copied) and all(not m.support_avx512bf16_for_cpu for m in _linear4bit_modules(copied))

    ids = torch.tensor([[5, 17, 42, 7, 99, 3]])
    steps = []
    for model in (fresh, copied):
        model = apply_lora(model, load_config(size="tiny").lora, seed=0)
        model.train()
        torch.manual_seed(0)
        steps.append(_logits_and_grads(model, ids))
    assert torch.equal(steps[0][0], steps[1][0])
    assert all(torch.equal(steps[0][1][k], steps[1][1][k]) for k in steps[0][1])
    after = dict(memo.named_parameters())  # the memo itself was never touched by the trainings
    assert after.keys() == before.keys()
    assert all(after[n].data_ptr() == ptr and torch.equal(after[n], value) for n, (ptr, value) in before.items())

    # a rewritten checkpoint is loaded again, not copied
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"1")
    four_bit = {"dtype": torch.float32, "quantization_config": load.bnb_config(settings, torch.float32)}
    key = load._memo_key(str(folder), four_bit)
    (folder / "model.safetensors").write_bytes(b"22")
    assert load._memo_key(str(folder), four_bit) not in (key, None)
    assert load._memo_key("org/hub-model", four_bit) is None
    assert load._memo_key(str(folder), {"dtype": torch.float32}) is None  # unquantized: nothing to save


def test_a_model_over_the_memo_size_is_not_kept(tiny_model, monkeypatch):
    """A model bigger than LOAD_MEMO_MAX_BYTES (EXAONE-7.8B on a CPU) is loaded without a second copy in memory."""
    from workshop_utils.config import ModelSettings
    from workshop_utils.model import load

    monkeypatch.setattr(load, "_LOAD_MEMO", type(load._LOAD_MEMO)())
    monkeypatch.setattr(load, "LOAD_MEMO_MAX_BYTES", 1000)  # the tiny model: megabytes (its vocabulary)
    load.load_model(ModelSettings(model_id=tiny_model), verbose=False)
    assert len(load._LOAD_MEMO) == 0
