"""The GPU fast path (fastpath.py): padding-free batches, the memory planner, partial checkpointing,
and -- on CPU, with a small EXAONE-shaped 4-bit model -- the same loss and LoRA gradients as the
plain path. Liger's Triton kernels and flex_attention need CUDA; `workshop bench` checks them on the
GPU (the first-step loss of every recipe is printed side by side, see docs/benchmarks.md)."""
import pytest
import torch

from workshop_utils.config import LoraSettings, ModelSettings, load_config
from workshop_utils.env import DeviceChoice
from workshop_utils.fastpath import (FastPlan, FlatteningCollator, fast_completion_loss, fast_path_memory,
                                     plan_fast_path, prepare_fast_model, set_checkpointing)
from workshop_utils.memory import EXAONE_7_8B
from workshop_utils.prompts import IGNORE_INDEX, CompletionCollator

TINY = "random:exaone:layers=3,hidden=64,intermediate=128,heads=4,kv_heads=2"


def features():
    g = torch.Generator().manual_seed(1)
    out = []
    for n, a in ((23, 5), (41, 9), (17, 4)):
        ids = torch.randint(10, 40000, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - a) + ids[n - a:]})
    return out


def test_flattening_collator_concatenates_and_restarts_positions():
    batch = FlatteningCollator(pad_token_id=0, pad_to_multiple_of=16)(features())
    assert batch["input_ids"].shape == (1, 96)  # 81 tokens + a 15-token filler sequence
    pos = batch["position_ids"][0].tolist()
    assert pos[:23] == list(range(23)) and pos[23:64] == list(range(41)) and pos[81:] == list(range(15))
    assert "attention_mask" not in batch  # packed format: transformers reads the boundaries from positions
    labels = batch["labels"][0]
    assert (labels != IGNORE_INDEX).sum() == 5 + 9 + 4 and (labels[81:] == IGNORE_INDEX).all()
    assert batch["input_ids"][0, 81:].eq(0).all()


def cuda_device(vram, dtype=torch.bfloat16):
    return DeviceChoice("cuda", dtype, "test", "GPU", vram)


def test_plan_off_on_cpu_and_switchable():
    cfg = load_config("full")
    assert not plan_fast_path(cfg, DeviceChoice("cpu", torch.float32, ""), EXAONE_7_8B, 1000).enabled
    cfg.train.fast_path = "off"
    assert not plan_fast_path(cfg, cuda_device(80), EXAONE_7_8B, 1000).enabled


def test_plan_uses_the_budget_no_checkpointing_with_room_partial_or_all_when_tight():
    cfg = load_config("full")
    room = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120)
    assert room.enabled and room.padding_free and room.checkpoint_layers == 0
    assert room.micro_batch * room.grad_accum == 16  # the seed's effective batch is kept
    assert "upcast" in room.reasons and not room.upcast_non_4bit
    cfg.train.memory_budget_gib = 8.0
    small = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120)
    assert small.estimate_gib <= 8.0 and small.checkpoint_layers > 0
    assert small.micro_batch * small.grad_accum == 16
    cfg.train.memory_budget_gib = 0
    cfg.train.gradient_checkpointing = "5"
    fixed = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1060, 1420, 120)
    assert fixed.checkpoint_layers == 5 and fixed.checkpointing == "5/32 layers"


def test_16gb_mode_on_fp16_gpus():
    cfg = load_config("full")
    t4 = plan_fast_path(cfg, cuda_device(15, torch.float16), EXAONE_7_8B, 1060, 1420, 120)
    assert t4.mode == "16gb" and t4.attention == "sdpa" and t4.checkpointing == "all"
    assert t4.estimate_gib <= 8.0


def test_memory_estimate_grows_with_uncheckpointed_layers():
    a = fast_path_memory(EXAONE_7_8B, 4096, 32)["total"]
    b = fast_path_memory(EXAONE_7_8B, 4096, 16)["total"]
    c = fast_path_memory(EXAONE_7_8B, 4096, 0)["total"]
    assert a < b < c


@pytest.fixture(scope="module")
def tiny_path():
    from workshop_utils.models import model_path, resolve_model

    return model_path(resolve_model(ModelSettings(model_id=TINY)), verbose=False)


def _lora_model(tiny_path, fast: bool, checkpoint_layers: int = 0):
    from workshop_utils.models import apply_lora, load_model

    loaded = load_model(ModelSettings(model_id=TINY, compute_dtype="float32"), verbose=False)
    lora = LoraSettings(lora_dropout=0.0)
    torch.manual_seed(0)
    if fast:
        plan = FastPlan(True, mode="budget", padding_free=True, attention="sdpa", num_layers=3,
                        checkpoint_layers=checkpoint_layers, upcast_non_4bit=False)
        model, _ = prepare_fast_model(loaded.model, plan, lora)
    else:
        model = apply_lora(loaded.model, lora)
    g = torch.Generator().manual_seed(2)
    for n, p in sorted(model.named_parameters()):  # non-zero B so that every LoRA matrix gets a gradient
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    model.train()
    return model, loaded.tokenizer


@pytest.mark.slow
def test_fast_path_gives_the_plain_paths_loss_and_lora_gradients(tiny_path):
    feats = features()
    plain, tok = _lora_model(tiny_path, fast=False)
    out = plain(**CompletionCollator(tok.pad_token_id)(feats))  # HF's own loss over all positions
    out.loss.backward()
    ref = {n: p.grad.clone() for n, p in plain.named_parameters() if p.requires_grad}
    fast, _ = _lora_model(tiny_path, fast=True, checkpoint_layers=2)
    assert sum(getattr(m, "gradient_checkpointing", False) for m in fast.modules() if hasattr(m, "self_attn")) == 2
    loss, _ = fast_completion_loss(fast, FlatteningCollator(tok.pad_token_id, 16)(feats))
    loss.backward()
    got = {n: p.grad for n, p in fast.named_parameters() if p.requires_grad}
    assert loss.item() == pytest.approx(out.loss.item(), rel=1e-5)
    assert got.keys() == ref.keys() and len(ref) == 3 * 4 * 2
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-3, atol=1e-6), n
        assert ref[n].abs().sum() > 0, n


def test_set_checkpointing_is_per_layer(tiny_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_path, dtype=torch.float32)
    layers = [m for m in model.modules() if hasattr(m, "self_attn")]
    assert set_checkpointing(model, 2) == 2
    assert [m.gradient_checkpointing for m in layers] == [True, True, False]
    assert set_checkpointing(model, 0) == 0
    assert not any(m.gradient_checkpointing for m in layers)


@pytest.mark.slow
def test_bench_runs_on_cpu_and_recipes_agree_on_the_first_loss(tmp_path):
    import json

    from workshop_utils.bench import run_bench

    res = run_bench(["seed", "hf_gc", "default"], shape="tiny", steps=1, warmup=1, out=tmp_path)
    rows = {r["recipe"]: r for r in res["rows"]}
    assert all("error" not in r and r["tokens_per_s"] > 0 for r in rows.values())
    assert rows["hf_gc"]["speedup_vs_hf_gc"] == 1.0 and rows["hf_gc"]["checkpointing"] == "all"
    assert rows["default"]["padding_free"] and rows["seed"]["checkpointing"] == "off"
    losses = [r["loss_step1"] for r in rows.values()]
    assert max(losses) - min(losses) < 1e-3 * abs(losses[0])
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][2]["recipe"] == "default"
