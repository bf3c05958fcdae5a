"""FP8 input gradients through the frozen 4-bit weights (train/fastpath/fp8.py, `train.fp8_backward`).

On CPU (torch's row-wise `_scaled_mm` runs there too): the FP8 product is the product of the scaled E4M3 values
and close to the exact one; on a small EXAONE-shaped 4-bit LoRA model the forward (the loss) is the bf16 path's
bit for bit while the LoRA gradients differ by FP8's rounding only (close, not equal), eager and compiled; restore()
gives the plain layers back. The planner turns it on only where asked and where FP8 tensor cores exist, and counts
the FP8 copies in its memory estimate. The CUDA kernel is checked against this reference by scripts/gpu_perf.py."""
import dataclasses

import pytest
import torch

from tests.helpers.fastpath_batches import cpu_layer_compiler, features, lora_model, loss_and_grads
from workshop_utils import bench
from workshop_utils.config import load_config
from workshop_utils.model.attention import VARLEN_ATTENTION
from workshop_utils.model.shape import EXAONE_7_8B
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.train import runs
from workshop_utils.train.collators import FlatteningCollator
from workshop_utils.train.fastpath import fp8 as fp8_mod
from workshop_utils.train.fastpath import plan as plan_mod
from workshop_utils.train.fastpath.fp8 import (
    E4M3_MAX,
    fp8_input_grad,
    fp8_weight,
    gradient_agreement,
    quantize_rows,
)
from workshop_utils.train.memory import estimate, fp8_copy_bytes


def test_rows_are_scaled_into_e4m3_and_come_back_within_its_rounding():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 96, generator=g) * torch.logspace(-6, 3, 50).view(-1, 1)  # rows of very different size
    x[7] = 0  # a row without gradient (a position nothing depends on)
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (50, 1)
    back = q.float() * scale
    assert torch.isfinite(back).all() and back[7].abs().sum() == 0
    assert torch.allclose(q.float().abs().amax(dim=1)[torch.arange(50) != 7], torch.tensor(E4M3_MAX))
    # E4M3 keeps 3 mantissa bits: each element within 1/16 of itself, or of the row's smallest normal step
    err = (back - x).abs()
    assert (err <= x.abs() / 16 + scale * 2.0**-6).all()


def test_fp8_input_grad_is_the_scaled_product_and_close_to_the_exact_one():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(48, 80, generator=g) * 0.05  # (out, in)
    dy = torch.randn(3, 20, 48, generator=g)  # (..., out)
    wt8, ws = fp8_weight(w)
    assert wt8.shape == (80, 48) and ws.shape == (1, 80)
    dx = fp8_input_grad(dy, wt8, ws)
    assert dx.shape == (3, 20, 80) and dx.dtype == dy.dtype
    d8, ds = quantize_rows(dy.reshape(-1, 48))
    emulated = ((d8.float() * ds) @ (wt8.float() * ws.view(-1, 1)).t()).reshape(3, 20, 80)
    exact = dy @ w
    assert torch.allclose(dx, emulated, rtol=1e-2, atol=1e-3)  # only the bf16 output's rounding
    rel = ((dx - exact).norm() / exact.norm()).item()
    assert 1e-3 < rel < 0.06  # really FP8 (not the exact product), and within its rounding


def _batch(tok):
    return FlatteningCollator(tok.pad_token_id, seq_lens=True)(features((23, 41, 17)))


@pytest.fixture
def cpu_compiler(monkeypatch):
    with cpu_layer_compiler(monkeypatch):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("compile_layers", [False, True], ids=["eager", "compiled"])
def test_fp8_backward_keeps_the_loss_and_stays_close_to_the_exact_gradients(cpu_compiler, compile_layers):
    ref_model, _, tok = lora_model(False, 0, VARLEN_ATTENTION)  # the exact gradients (eager: one compile less)
    batch = _batch(tok)
    loss_ref, ref = loss_and_grads(ref_model, batch)
    model, plan, _ = lora_model(compile_layers, 0, VARLEN_ATTENTION, fp8_backward=True)
    fp8 = model.get_base_model()._workshop_fp8
    assert plan.compile_layers == compile_layers and plan.fp8_backward
    # every frozen 4-bit linear of the 3 layers (q, k, v, o under LoRA, gate, up, down), each with its copy
    assert len(fp8.layers) == 3 * 7 and all(type(m).__name__ == "FP8GradLinear4bit" for m in fp8.layers)
    assert fp8.gib == pytest.approx(fp8_copy_bytes(dataclasses.replace(EXAONE_7_8B, hidden=64, intermediate=128,
                                                                       layers=3, heads=4, kv_heads=2)) / 1024**3)
    loss, got = loss_and_grads(model, batch)
    # the forward is bitsandbytes' product: the same loss, bit for bit (compiled: the compiled forward's)
    assert loss == loss_ref if not compile_layers else loss == pytest.approx(loss_ref, rel=1e-6)
    agree = gradient_agreement(ref, got)
    assert agree["tensors"] == 3 * 4 * 2 and agree["cosine"] > 0.995 and agree["max_rel_error"] < 0.1, agree
    assert agree["max_rel_error"] > 1e-4, agree  # the backward did run in FP8
    if compile_layers:
        stats = model.get_base_model()._workshop_compiled.stats()
        assert stats["graph_breaks"] == 0 and stats["graphs_after_check"] == 0, stats
    fp8.restore()
    assert not any(type(m).__name__ == "FP8GradLinear4bit" for m in model.modules())
    if not compile_layers:  # the plain layers again: the exact gradients
        loss, plain = loss_and_grads(model, batch)
        assert loss == loss_ref and all(torch.equal(plain[n], ref[n]) for n in ref)


def test_fp8_backward_leaves_evaluation_and_generation_to_the_4bit_forward():
    model, _, tok = lora_model(False, 0, VARLEN_ATTENTION, fp8_backward=True)
    batch = _batch(tok)
    model.eval()
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"][:, :20]).logits
    model.get_base_model()._workshop_fp8.restore()
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"][:, :20]).logits, out)


def cuda_device(capability, dtype=torch.bfloat16):
    return DeviceChoice("cuda", dtype, "", vram_gib=139.8), capability


@pytest.mark.parametrize("capability,dtype,on", [((9, 0), torch.bfloat16, True), ((8, 9), torch.bfloat16, True),
                                                 ((8, 0), torch.bfloat16, False), ((7, 5), torch.float16, False),
                                                 ((9, 0), torch.float16, False)])
def test_planner_turns_fp8_on_only_where_asked_and_fp8_tensor_cores_run(monkeypatch, capability, dtype, on):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(plan_mod.runtime_device, "cuda_available_gib", lambda: None)
    device = DeviceChoice("cuda", dtype, "", vram_gib=139.8)
    cfg = load_config()
    cfg.train.memory_mode = "budget"
    kernels = (True, True, True)
    off = plan_mod.plan_fast_path(cfg, device, EXAONE_7_8B, 1062, 1400, 120, kernels=kernels)
    assert not off.fp8_backward and "끔" in off.reasons["fp8_backward"]
    cfg.train.fp8_backward = "on"
    plan = plan_mod.plan_fast_path(cfg, device, EXAONE_7_8B, 1062, 1400, 120, kernels=kernels)
    assert plan.fp8_backward == on, plan.reasons["fp8_backward"]
    if on:
        assert plan.estimate_gib == pytest.approx(off.estimate_gib + fp8_copy_bytes(EXAONE_7_8B) / 1024**3, abs=0.02)
        assert any("fp8_backward=True" in line for line in plan.lines())
    else:
        assert plan.reasons["fp8_backward"].startswith("켤 수 없음")
    if on:  # several processes (DDP/FSDP, where FSDP shards the 4-bit weights): not measured there, so off
        monkeypatch.setattr(plan_mod, "dist_info", lambda: type("D", (), {"world_size": 2})())
        ddp = plan_mod.plan_fast_path(cfg, device, EXAONE_7_8B, 1062, 1400, 120, kernels=kernels)
        assert not ddp.fp8_backward and "여러 프로세스" in ddp.reasons["fp8_backward"]
    cfg.train.fp8_backward = "yes"
    with pytest.raises(ValueError, match="fp8_backward"):
        plan_mod.plan_fast_path(cfg, device, EXAONE_7_8B, 1062, 1400, 120, kernels=kernels)


def test_estimate_counts_the_fp8_copies():
    base = estimate(EXAONE_7_8B, 16000, fused_loss=True, upcast_embeddings=False)
    fp8 = estimate(EXAONE_7_8B, 16000, fused_loss=True, upcast_embeddings=False, fp8_backward=True)
    assert fp8["fp8 weights"] == pytest.approx(6.5, abs=0.01)
    assert fp8["total"] == pytest.approx(base["total"] + fp8["fp8 weights"])
    assert fp8_mod.fp8_supported("cpu", torch.float32)[0]


def test_bench_recipe_option_and_run_identity():
    assert bench.recipe_options("default+fp8") == {"fp8_backward": "on"}
    with pytest.raises(ValueError):
        bench.split_recipe("hf_gc+fp8")  # plain recipes take no options
    cfg = load_config()
    splits = {"train": [{"q": 1}], "validation": []}
    before = runs.run_identity(cfg, "m", splits)
    assert "train.fp8_backward" not in before.settings  # off: the identities of runs made before the setting
    cfg.train.fp8_backward = "on"
    after = runs.run_identity(cfg, "m", splits)
    assert after.settings["train.fp8_backward"] == "on" and after.fingerprint != before.fingerprint
    assert after.differences(before.to_dict()) == ["train.fp8_backward None → 'on'"]


def test_teaching_demo_shows_fp8_rounding_next_to_bf16s():
    from workshop_utils.teaching.fine_tuning import FP8_DEMO_SHAPES, fp8_backward_demo

    rows = fp8_backward_demo()
    assert len(rows) == len(FP8_DEMO_SHAPES)
    for r in rows:  # E4M3 keeps 3 mantissa bits to bf16's 7: about 16x the error, still a few percent
        assert 0 < r["bf16 곱의 상대 오차"] < 0.01 < r["FP8 곱의 상대 오차"] < 0.06, r


def test_planning_another_machines_gpu_takes_its_fp8_cores_instead_of_probing_this_one(monkeypatch):
    from workshop_utils.teaching.fine_tuning import TYPICAL_GPUS, plan_table

    def no_probe(*a):
        raise AssertionError("this machine's GPU was probed")

    monkeypatch.setattr(torch.cuda, "get_device_capability", no_probe)
    cfg = load_config()
    cfg.train.fp8_backward = "on"
    assert len(plan_table(cfg)) == len(TYPICAL_GPUS)  # on a machine without CUDA too
    device = DeviceChoice("cuda", torch.bfloat16, "", vram_gib=139.8)
    for fp8_cores in (True, False):
        plan = plan_mod.plan_fast_path(cfg, device, EXAONE_7_8B, 1062, 1400, 120,
                                       kernels=(True, True, True, fp8_cores))
        assert plan.fp8_backward == fp8_cores, plan.reasons["fp8_backward"]
