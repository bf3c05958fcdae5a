"""LoRA dropout with hashed masks (fastpath/dropout.py): the hash is lowbias32, the masks keep 1 - p of the values
independently of position, module and step, a layer gives the gradients of an explicit mask, and on the compiled fast
path (aot_eager on CPU) every LoRA input gets one, a checkpointed layer's recomputation draws the same masks, the
counter moves once per forward, and the eager layers get peft's nn.Dropout back."""
import pytest
import torch
from torch import nn

from tests.helpers.fastpath_batches import cpu_layer_compiler, features, lora_model, loss_and_grads
from workshop_utils.config import load_config
from workshop_utils.model.attention import VARLEN_ATTENTION
from workshop_utils.model.lora import base_model, decoder_layers
from workshop_utils.train.collators import FlatteningCollator
from workshop_utils.train.fastpath import apply as apply_mod
from workshop_utils.train.fastpath.apply import set_checkpointing
from workshop_utils.train.fastpath.dropout import CounterDropout, keep_mask, mix32
from workshop_utils.train.fastpath.plan import dropout_choice


def i32(v: int) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int32)


def lowbias32(x: int) -> int:  # the published uint32 reference
    x &= 0xFFFFFFFF
    x ^= x >> 16
    x = (x * 0x7FEB352D) & 0xFFFFFFFF
    x ^= x >> 15
    x = (x * 0x846CA68B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_mix32_is_lowbias32_on_int32():
    vals = [0, 1, 2, 12345, 2**31 - 1, -1, -5, -2**31, 0x1234567]
    got = mix32(torch.tensor(vals, dtype=torch.int32))
    assert [int(v) & 0xFFFFFFFF for v in got] == [lowbias32(v) for v in vals]
    assert mix32(torch.arange(2**18, dtype=torch.int32)).unique().numel() == 2**18  # a bijection


def test_masks_keep_one_minus_p_independently():
    shape, p = (512, 2048), 0.05
    m = keep_mask(shape, i32(7), i32(0), p)
    assert m.shape == shape and m.dtype == torch.bool
    assert m.float().mean().item() == pytest.approx(1 - p, abs=0.002)
    assert torch.equal(m, keep_mask(shape, i32(7), i32(0), p))  # a function of (position, key, counter)
    drop = (~m).float().flatten()
    for other in (keep_mask(shape, i32(7), i32(1), p), keep_mask(shape, i32(8), i32(0), p)):  # next step, next module
        assert not torch.equal(m, other)
        assert abs(torch.corrcoef(torch.stack([drop, (~other).float().flatten()]))[0, 1]) < 0.01
    for lag in (1, 2048):  # neighbours in a row and in a column
        assert abs(torch.corrcoef(torch.stack([drop[:-lag], drop[lag:]]))[0, 1]) < 0.01
    assert keep_mask(shape, i32(7), i32(0), 0.5).float().mean().item() == pytest.approx(0.5, abs=0.003)
    with pytest.raises(ValueError, match="int32 positions"):
        keep_mask((2**16, 2**15), i32(0), i32(0), p)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "aot_eager"])
def test_lora_branch_gets_the_gradients_of_an_explicit_mask(compiled):
    torch.manual_seed(0)
    counter = i32(3)
    drop = CounterDropout(0.1, key=-12345, counter=counter)
    a, b = nn.Linear(32, 4, bias=False), nn.Linear(4, 16, bias=False)

    def branch(x, dropout):
        return b(a(dropout(x)))

    x = torch.randn(2, 9, 32, requires_grad=True)
    fn = torch.compile(branch, backend="aot_eager", dynamic=True) if compiled else branch
    out = fn(x, drop)
    out.square().sum().backward()
    got = [x.grad.clone(), a.weight.grad.clone(), b.weight.grad.clone()]
    for t in (x, a.weight, b.weight):
        t.grad = None
    keep = keep_mask(x.shape, drop.key, counter, 0.1)
    assert 0 < (~keep).sum() < keep.numel()
    ref = branch(x, lambda v: v * keep / 0.9)
    ref.square().sum().backward()
    assert torch.allclose(out, ref, atol=1e-6)
    for g, r in zip(got, [x.grad, a.weight.grad, b.weight.grad]):
        assert torch.allclose(g, r, atol=1e-5)
    drop.eval()
    assert drop(x) is x


def test_choice():
    assert dropout_choice("hash", True, 0.05)[0]
    assert not dropout_choice("hash", False, 0.05)[0]  # eager layers keep peft's nn.Dropout
    assert not dropout_choice("peft", True, 0.05)[0]
    assert not dropout_choice("hash", True, 0.0)[0]
    with pytest.raises(ValueError, match="train.lora_dropout_masks='bits': hash | peft"):
        dropout_choice("bits", True, 0.05)
    assert load_config("tiny").train.lora_dropout_masks == "hash"


@pytest.fixture
def cpu_compiler(monkeypatch):
    with cpu_layer_compiler(monkeypatch):
        yield


@pytest.mark.slow
def test_compiled_fast_path_hashes_the_same_masks_when_layers_are_recomputed(cpu_compiler):
    model, plan, tok = lora_model(True, 3, VARLEN_ATTENTION, dropout=0.05, hash_dropout=True)
    base = base_model(model)
    drops = base._workshop_dropout
    assert plan.compile_layers and plan.hash_dropout and "LoRA 입력 12개" in plan.reasons["lora_dropout"]
    assert len(drops) == 3 * 4 and all(isinstance(m.lora_dropout["default"], CounterDropout)
                                       for m in model.modules() if hasattr(m, "lora_dropout"))
    assert len({int(m.key) for m in model.modules() if isinstance(m, CounterDropout)}) == 12  # a key per module
    batch = FlatteningCollator(tok.pad_token_id, seq_lens=True)(features((23, 41, 17)))
    drops.counter.fill_(100)
    loss_ck, recomputed = loss_and_grads(model, batch)
    assert int(drops.counter) == 101  # one step per forward, none for the recomputations
    set_checkpointing(model, 0)
    drops.counter.fill_(100)
    loss, kept = loss_and_grads(model, batch)
    assert loss == pytest.approx(loss_ck, rel=1e-6)
    for n in kept:
        assert torch.allclose(recomputed[n], kept[n], rtol=1e-5, atol=1e-7), n
    _, other = loss_and_grads(model, batch)  # the next step: other masks, other gradients
    assert any(not torch.allclose(other[n], kept[n], rtol=1e-3, atol=1e-6) for n in kept)
    stats = base._workshop_compiled.stats()
    assert stats["graph_breaks"] == 0 and stats["graphs_after_check"] <= 1, stats  # +1: no checkpointing
    drops.restore()
    assert all(type(m.lora_dropout["default"]) is nn.Dropout for m in model.modules() if hasattr(m, "lora_dropout"))
    assert not base._forward_pre_hooks


def test_eager_layers_keep_peft_dropout(cpu_compiler, monkeypatch):
    monkeypatch.setattr(apply_mod, "compile_checked", lambda *a, **k: (None, "torch.compile 실패 → eager (X)"))
    model, plan, _ = lora_model(True, 0, "sdpa", dropout=0.05, hash_dropout=True)
    assert not plan.compile_layers and not plan.hash_dropout and "nn.Dropout" in plan.reasons["lora_dropout"]
    assert all(type(m.lora_dropout["default"]) is nn.Dropout for m in model.modules() if hasattr(m, "lora_dropout"))
    assert base_model(model)._workshop_dropout is None and not decoder_layers(model)[0]._forward_pre_hooks
