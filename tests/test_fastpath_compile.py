"""Compiled decoder layers (fastpath_compile.py), on CPU with a small EXAONE-shaped 4-bit model: the
compiled fast path gives the eager fast path's loss and LoRA gradients with and without
checkpointing, for packed rows of other lengths without recompiling; LoRA dropout draws the same masks
when a checkpointed layer is recomputed; a failing check falls back to eager; the planner's setting.

The compiler here is aot_eager: the same graph capture (dynamo) and autograd (AOTAutograd) as
inductor, without its code generation (inductor's first compile takes about a minute on 2 CPU cores).
Inductor itself is checked on CUDA by scripts/gpu_perf_check.py and by the set-up check of every
compiled `workshop bench` recipe."""
import pytest
import torch

from tests.helpers.fastpath_batches import cpu_layer_compiler, features, lora_model, loss_and_grads
from workshop_utils.config import load_config
from workshop_utils.model.attention import VARLEN_ATTENTION
from workshop_utils.model.lora import decoder_layers
from workshop_utils.model.shape import EXAONE_7_8B
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.train.collators import FlatteningCollator
from workshop_utils.train.fastpath import apply as apply_mod
from workshop_utils.train.fastpath import compile as fastpath_compile
from workshop_utils.train.fastpath import plan as plan_mod
from workshop_utils.train.fastpath.apply import set_checkpointing
from workshop_utils.train.fastpath.compile import compile_checked, compile_choice
from workshop_utils.train.fastpath.plan import plan_fast_path
from workshop_utils.train.loss import fast_completion_loss


@pytest.fixture(autouse=True)
def cpu_compiler(monkeypatch):
    with cpu_layer_compiler(monkeypatch):
        yield


@pytest.mark.slow
def test_compiled_layers_give_the_eager_loss_and_gradients_without_recompiling():
    """Two of the three layers checkpointed (recomputed through the compiled code), the third not;
    without any checkpointing (the first layer's input then needs no gradient: a second graph) see
    tests/test_bench_recipes.py, which trains through the Trainer."""
    checkpoint_layers, attention = 2, VARLEN_ATTENTION
    eager, _, tok = lora_model(False, checkpoint_layers, attention)
    model, plan, _ = lora_model(True, checkpoint_layers, attention)
    assert plan.compile_layers and "점검 통과" in plan.reasons["compile"], plan.reasons
    compiled = model.get_base_model()._workshop_compiled
    assert all("forward" in vars(layer) for layer in decoder_layers(model))
    collate = FlatteningCollator(tok.pad_token_id, seq_lens=attention == VARLEN_ATTENTION)
    for lens in ((23, 41, 17), (30, 12), (50, 9, 44, 5)):  # other row lengths, numbers and longest sequences
        batch = collate(features(lens))
        ref_loss, ref = loss_and_grads(eager, batch)
        loss, got = loss_and_grads(model, batch)
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert got.keys() == ref.keys() and len(ref) == 3 * 4 * 2
        for n in ref:
            assert torch.allclose(got[n], ref[n], rtol=1e-3, atol=1e-6), n
            assert ref[n].abs().sum() > 0, n
    stats = compiled.stats()
    assert stats["graphs_after_check"] == 0 and stats["graph_breaks"] == 0, stats
    assert stats["graphs"] == 1, stats  # one graph for all layers, checkpointed or not
    assert torch._dynamo.config.suppress_errors  # a failing recompilation later runs eagerly
    model.eval()  # evaluation and generation run the eager layers: nothing new is compiled
    with torch.no_grad():
        model(input_ids=batch["input_ids"][:, :20])
    assert compiled.stats()["graphs"] == stats["graphs"]
    compiled.restore()
    assert not any("forward" in vars(layer) for layer in decoder_layers(model))


@pytest.mark.slow
def test_lora_dropout_draws_the_same_masks_when_compiled_layers_are_recomputed():
    model, plan, tok = lora_model(True, 3, VARLEN_ATTENTION, dropout=0.05)
    assert plan.compile_layers
    batch = FlatteningCollator(tok.pad_token_id, seq_lens=True)(features((23, 41, 17)))
    loss_ck, recomputed = loss_and_grads(model, batch, seed=5)
    set_checkpointing(model, 0)
    loss, kept = loss_and_grads(model, batch, seed=5)
    assert loss == pytest.approx(loss_ck, rel=1e-6)
    for n in kept:
        assert torch.allclose(recomputed[n], kept[n], rtol=1e-5, atol=1e-7), n
    _, other = loss_and_grads(model, batch, seed=6)  # dropout is on: another seed, other gradients
    assert any(not torch.allclose(other[n], kept[n], rtol=1e-3, atol=1e-6) for n in kept)


def test_failed_check_puts_the_eager_layers_back():
    model, _, tok = lora_model(False, 0, "sdpa")
    batch = FlatteningCollator(tok.pad_token_id)(features((23, 41)))

    def broken(model, batch, n):
        if torch.is_grad_enabled():
            raise RuntimeError("no kernel for this op")
        return fast_completion_loss(model, batch, n)

    compiled, why = compile_checked(model, broken, batch)
    assert compiled is None and why.startswith("torch.compile 실패 → eager") and "no kernel" in why
    assert not any("forward" in vars(layer) for layer in decoder_layers(model))

    def no_gradients(model, batch, n):
        return fast_completion_loss(model, batch, n) if not torch.is_grad_enabled() else \
            (torch.tensor(1.0, requires_grad=True) * 2, None)

    compiled, why = compile_checked(model, no_gradients, batch)
    assert compiled is None and "eager와 다름" in why
    assert all(p.grad is None for p in model.parameters()) and model.training


def test_prepare_falls_back_to_eager_when_the_check_fails(monkeypatch):
    monkeypatch.setattr(apply_mod, "compile_checked", lambda *a, **k: (None, "torch.compile 실패 → eager (X)"))
    model, plan, _ = lora_model(True, 0, "sdpa")
    assert not plan.compile_layers and plan.reasons["compile"] == "torch.compile 실패 → eager (X)"
    assert not any("forward" in vars(layer) for layer in decoder_layers(model))


def test_compile_setting_is_validated_and_explained():
    assert compile_choice("auto", on_cuda=True, has_triton=True)[:2] == (True, False)
    assert compile_choice("liger", on_cuda=True, has_triton=True)[:2] == (True, True)
    assert compile_choice("on", on_cuda=False)[:2] == (True, False)  # CPU only when asked
    assert compile_choice("auto", on_cuda=False)[0] is False
    off = compile_choice("auto", on_cuda=True, processes=2, has_triton=True)
    assert off[0] is False and "DDP" in off[2]
    no_triton = compile_choice("on", on_cuda=True, has_triton=False)
    assert no_triton[0] is False and "Triton" in no_triton[2]
    with pytest.raises(ValueError, match="train.compile_layers='sometimes': auto | on | off | liger"):
        compile_choice("sometimes", on_cuda=True)


def test_planner_compiles_on_cuda_and_reads_the_setting(monkeypatch):
    monkeypatch.setattr(fastpath_compile, "triton_available", lambda: True)
    monkeypatch.setattr(plan_mod, "varlen_attention_works", lambda dtype: (True, "ok"))
    cfg = load_config("full")
    assert cfg.train.compile_layers == "auto"
    gpu = DeviceChoice("cuda", torch.bfloat16, "test", "GPU", 80)
    plan = plan_fast_path(cfg, gpu, EXAONE_7_8B, 1062, 1420, 120)
    assert plan.compile_layers and not plan.compile_keep_liger and "torch.compile" in plan.reasons["compile"]
    assert "compile_layers=True" in plan.lines()[0]
    cfg.train.compile_layers = "off"
    plan = plan_fast_path(cfg, gpu, EXAONE_7_8B, 1062, 1420, 120)
    assert not plan.compile_layers and plan.reasons["compile"] == "설정에서 끔"
    cfg.train.compile_layers = "yes"
    with pytest.raises(ValueError, match="compile_layers"):
        plan_fast_path(cfg, gpu, EXAONE_7_8B, 1062, 1420, 120)
