"""ActivationOffload (train/fastpath/offload.py): checkpointed layers keep their inputs in CPU memory.

On CPU, with a small EXAONE-shaped 4-bit model and LoRA dropout on: the offloaded checkpointing gives the loss
and LoRA gradients of no checkpointing (the recomputation draws the same dropout masks), eager and through the
compiled layers (aot_eager: the same capture and autograd as inductor); every checkpointed input is saved once
and each backward brings back the input of the layer before ahead of time; nothing stays referenced after the
backward. The planner: where it is offered, what it buys within 8 GiB, what the estimate counts. The CUDA side
stream is checked on the GPU by scripts/gpu_perf.py (the same loss and gradients on CUDA)."""
import gc

import pytest
import torch

from tests.helpers.fastpath_batches import cpu_layer_compiler, features, lora_model, loss_and_grads
from workshop_utils.config import load_config
from workshop_utils.model.attention import VARLEN_ATTENTION
from workshop_utils.model.lora import decoder_layers
from workshop_utils.model.shape import EXAONE_7_8B
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.train.collators import FlatteningCollator
from workshop_utils.train.fastpath import offload as offload_mod
from workshop_utils.train.fastpath import plan as plan_mod
from workshop_utils.train.fastpath.apply import set_checkpointing
from workshop_utils.train.fastpath.offload import (
    ActivationOffload,
    set_activation_offload,
)
from workshop_utils.train.fastpath.plan import plan_fast_path
from workshop_utils.train.memory import estimate


@pytest.fixture(autouse=True)
def cpu_compiler(monkeypatch):
    with cpu_layer_compiler(monkeypatch):
        yield


def assert_same(got, ref, rtol=1e-5, atol=1e-7):
    assert got.keys() == ref.keys() and len(ref) == 3 * 4 * 2
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=rtol, atol=atol), n
        assert ref[n].abs().sum() > 0, n


@pytest.mark.parametrize("compile_layers", [False, True], ids=["eager", "compiled"])
def test_offloaded_checkpointing_gives_the_gradients_of_no_checkpointing(monkeypatch, compile_layers):
    model, plan, tok = lora_model(compile_layers, 3, VARLEN_ATTENTION, dropout=0.05, offload_activations=True)
    assert plan.compile_layers == compile_layers
    offload = model.get_base_model()._workshop_activation_offload
    assert isinstance(offload, ActivationOffload)
    blocks = decoder_layers(model)
    assert all(b._gradient_checkpointing_func.func == offload.checkpoint for b in blocks)
    # each layer's recomputation skips its down_proj product (a 4-bit linear whose output only feeds the residual)
    assert [b._gradient_checkpointing_func.keywords["output_unused"] for b in blocks] == [
        b.mlp.down_proj for b in blocks] and type(blocks[0]).__name__ in offload_mod.OUTPUT_UNUSED_LAYERS
    fetched = []  # (entry id, its load had it prefetched?)
    fetch, load = ActivationOffload._fetch, ActivationOffload.load
    monkeypatch.setattr(ActivationOffload, "_fetch", lambda self, e, d: (fetched.append(("fetch", id(e))),
                                                                         fetch(self, e, d))[1])
    monkeypatch.setattr(ActivationOffload, "load", lambda self, e, d: (fetched.append(("load", id(e),
                                                                                      e.gpu is not None)),
                                                                       load(self, e, d))[1])
    batch = FlatteningCollator(tok.pad_token_id, seq_lens=True)(features((23, 41, 17)))
    copies, skipped = offload.copies, offload.skipped
    loss_off, got = loss_and_grads(model, batch, seed=5)
    assert offload.copies - copies == 3  # each checkpointed layer's input, once per forward
    assert offload.skipped - skipped == 3 and all(type(b.mlp.down_proj).__name__ == "Linear4bit" for b in blocks)
    # backward: layer 2 fetches its own input, then each load finds the input already back (prefetched
    # while the layer after it recomputed)
    loads = [f for f in fetched if f[0] == "load"]
    assert [f[2] for f in loads] == [False, True, True], fetched
    assert offload.last() is None  # the saved inputs went with the backward's graph
    set_checkpointing(model, 0)  # the same layers without checkpointing: the same masks and gradients
    loss, kept = loss_and_grads(model, batch, seed=5)
    assert loss == pytest.approx(loss_off, rel=1e-6)
    assert_same(got, kept)
    _, other = loss_and_grads(model, batch, seed=6)  # dropout is on: another seed, other gradients
    assert any(not torch.allclose(other[n], kept[n], rtol=1e-3, atol=1e-6) for n in kept)
    if compile_layers:
        stats = model.get_base_model()._workshop_compiled.stats()
        # +1 for the recomputation without down_proj's product, +1 without checkpointing: not one per layer
        assert stats["graph_breaks"] == 0 and stats["graphs_after_check"] <= 2, stats


def test_offload_of_some_layers_matches_plain_checkpointing_of_the_same_layers():
    model, _, tok = lora_model(False, 2, VARLEN_ATTENTION, dropout=0.05, offload_activations=True)
    batch = FlatteningCollator(tok.pad_token_id, seq_lens=True)(features((30, 12)))
    loss_off, got = loss_and_grads(model, batch, seed=3)
    set_checkpointing(model, 2)  # transformers' own (non-reentrant) checkpointing of the same two layers
    assert model.get_base_model()._workshop_activation_offload.checkpoint not in [
        getattr(b._gradient_checkpointing_func, "func", None) for b in decoder_layers(model)]
    loss, ref = loss_and_grads(model, batch, seed=3)
    assert loss == pytest.approx(loss_off, rel=1e-6)
    assert_same(got, ref)
    assert set_activation_offload(model, 0) is None


def test_abandoned_forward_keeps_nothing_alive():
    off = ActivationOffload()
    layer = torch.nn.Linear(8, 8)
    x = torch.randn(4, 8, requires_grad=True)
    h = x
    for _ in range(3):
        h = off.checkpoint(layer, h)
    assert off.copies == 3 and off.last() is not None
    del h
    gc.collect()
    assert off.last() is None  # no backward: the pinned copies are freed with the graph
    h = off.checkpoint(layer, x)  # the next forward starts a new chain
    h.sum().backward()
    assert x.grad is not None and layer.weight.grad is not None


def cuda_device(vram, dtype=torch.bfloat16):
    return DeviceChoice("cuda", dtype, "test", "GPU", vram)


@pytest.fixture
def gpu_kernels(monkeypatch):
    monkeypatch.setattr(plan_mod, "varlen_attention_works", lambda dtype: (True, "ok"))
    monkeypatch.setattr(plan_mod, "efficient_varlen_works", lambda dtype: (True, "ok"))
    monkeypatch.setattr(plan_mod, "liger_available", lambda: True)
    monkeypatch.setattr(plan_mod.runtime_device, "system_ram_gib", lambda: 64.0)


def test_planner_spends_the_offloaded_inputs_on_a_bigger_micro_batch(gpu_kernels, monkeypatch):
    cfg = load_config("full")
    cfg.train.memory_budget_gib = 8.0
    plans = {}
    for setting in ("auto", "off"):
        cfg.train.offload_activations = setting
        plans[setting] = plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120)
    on, off = plans["auto"], plans["off"]
    assert on.offload_activations and on.estimate_gib <= 8.0 and on.micro_batch > off.micro_batch
    assert on.micro_batch * on.grad_accum == 16 and on.checkpoint_layers == 32
    assert "고정 CPU 메모리" in on.reasons["offload_activations"]
    assert not off.offload_activations and off.reasons["offload_activations"] == "설정에서 끔"
    cfg.train.offload_activations = "auto"
    t4 = plan_fast_path(load_config("full"), cuda_device(15, torch.float16), EXAONE_7_8B, 1062, 1420, 120)
    assert t4.mode == "16gb" and t4.offload_activations and t4.micro_batch == on.micro_batch
    room = plan_fast_path(load_config("full"), cuda_device(140), EXAONE_7_8B, 1062, 1420, 120)
    assert not room.offload_activations and room.checkpoint_layers < 32  # nothing to gain with room
    monkeypatch.setattr(plan_mod.runtime_device, "system_ram_gib", lambda: 2.0)  # not enough CPU memory to pin
    assert not plan_fast_path(cfg, cuda_device(140), EXAONE_7_8B, 1062, 1420, 120).offload_activations


def test_activation_offload_is_offered_only_where_it_can_run(gpu_kernels, monkeypatch):
    cpu = plan_mod.activation_offload_options("auto", on_cuda=False)
    assert cpu == ([False], "CUDA에서만 (고정 메모리로 복사)")
    assert plan_mod.activation_offload_options("on", on_cuda=True) == ([True], "")
    monkeypatch.setattr(plan_mod, "dist_info", lambda: type("D", (), {"world_size": 2})())
    assert plan_mod.activation_offload_options("auto", on_cuda=True)[0] == [False]
    with pytest.raises(ValueError, match="offload_activations"):
        plan_mod.activation_offload_options("sometimes", on_cuda=True)


def test_estimate_counts_two_offloaded_inputs_in_flight():
    kw = dict(checkpoint_layers=32, fused_loss=True, upcast_embeddings=False, offload_vocab=True)
    kept, off = estimate(EXAONE_7_8B, 8000, **kw), estimate(EXAONE_7_8B, 8000, offload_activations=True, **kw)
    one_input = EXAONE_7_8B.hidden * 2 * 8000 / 1024**3
    assert kept["activations"] == pytest.approx(32 * one_input)
    assert off["activations"] == pytest.approx(2 * one_input)
    assert kept["total"] - off["total"] == pytest.approx(30 * one_input)
    assert offload_mod.ActivationOffload().copies == 0
