"""Padding-free attention beside the flash varlen kernel (attention_varlen.py): the per-sequence
reference and its written-out backward, the memory-efficient varlen path (its CUDA kernels replaced
here by CPU stand-ins with aten's signatures: the GPU itself is checked by the planner's probe and
scripts/gpu_perf_check.py), and the planner choosing it for the T4 mode."""
from types import SimpleNamespace

import pytest
import torch

from workshop_utils.config import load_config
from workshop_utils.model import attention_kernels as av
from workshop_utils.model.shape import EXAONE_7_8B
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.train.fastpath import plan as plan_mod
from workshop_utils.train.fastpath.plan import plan_fast_path

CU = [0, 25, 60, 71]


def qkv(t=71, hq=8, hkv=2, d=16, dtype=torch.float64, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(t, h, d, generator=g, dtype=dtype, requires_grad=True) for h in (hq, hkv, hkv)]


def test_reference_backward_is_the_gradient_of_the_reference():
    q, k, v = qkv()
    grad = torch.randn_like(q)
    av.reference_varlen(q, k, v, CU, 0.3).backward(grad)
    got = av.reference_varlen_backward(grad, q.detach(), k.detach(), v.detach(), CU, 0.3)
    for mine, autograd in zip(got, (q.grad, k.grad, v.grad)):  # grouped-query heads summed back
        assert torch.allclose(mine, autograd, atol=1e-12)
    # a mistake in the causal mask or the softmax term shows: the unmasked backward differs
    assert not torch.allclose(av.reference_varlen_backward(grad, q.detach(), k.detach(), v.detach(),
                                                           [0, 71], 0.3)[0], q.grad, atol=1e-3)


def test_reference_op_matches_the_reference_and_compiles_once_for_any_packed_row():
    from torch._dynamo.utils import counters

    counters.clear()
    fn = torch.compile(av.reference_varlen_op, dynamic=True, fullgraph=True, backend="aot_eager")
    for cu in ([0, 25, 60, 71], [0, 10, 30, 50, 71], [0, 40, 71]):
        q, k, v = qkv()
        ref_in = [x.detach().clone().requires_grad_() for x in (q, k, v)]
        out = fn(q, k, v, torch.tensor(cu, dtype=torch.int32), max(b - a for a, b in zip(cu, cu[1:])), 0.25)
        ref = av.reference_varlen(*ref_in, cu, 0.25)
        out.sum().backward()
        ref.sum().backward()
        assert torch.allclose(out, ref, atol=1e-12)
        assert all(torch.allclose(a.grad, b.grad, atol=1e-10) for a, b in zip((q, k, v), ref_in))
    # another number of sequences and another longest sequence: the same graph (no recompilation)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]


def _fake_efficient_forward(q, k, v, bias, cu_q, cu_k, max_q, max_k, dropout, mask_type, lse, *, scale):
    """aten._efficient_attention_forward's signature, computed by the reference on CPU."""
    assert bias is None and cu_q is cu_k and max_q == max_k and dropout == 0.0 and lse is True
    assert mask_type == av.CAUSAL_FROM_TOP_LEFT and cu_q.dtype == torch.int32 and q.shape[0] == 1
    assert q.shape[2] == k.shape[2]  # the kernel gets the key/value heads repeated
    cu = cu_q.tolist()
    out = av.reference_varlen(q[0], k[0], v[0], cu, scale)
    lse_rows = torch.zeros(len(cu) - 1, q.shape[2], (max_q + 31) // 32 * 32, dtype=torch.float32)
    for i, (a, b) in enumerate(zip(cu, cu[1:])):
        s = scale * q[0, a:b].transpose(0, 1) @ k[0, a:b].permute(1, 2, 0)
        s = s.masked_fill(torch.ones(b - a, b - a, dtype=torch.bool).triu(1), float("-inf"))
        lse_rows[i, :, :b - a] = s.logsumexp(-1)
    return out.unsqueeze(0), lse_rows, torch.empty((), dtype=torch.long), torch.empty((), dtype=torch.long), max_q, max_k


def _fake_efficient_backward(grad, q, k, v, bias, out, cu_q, cu_k, max_q, max_k, lse, dropout, seed, offset,
                             mask_type, bias_grad, *, scale):
    assert out.shape == q.shape and lse.shape[0] == len(cu_q) - 1 and mask_type == av.CAUSAL_FROM_TOP_LEFT
    dq, dk, dv = av.reference_varlen_backward(grad[0], q[0], k[0], v[0], cu_q.tolist(), scale)
    return dq.unsqueeze(0), dk.unsqueeze(0), dv.unsqueeze(0), torch.empty(())


@pytest.fixture
def cpu_kernels(monkeypatch):
    monkeypatch.setattr(av, "_EFFICIENT_FORWARD", _fake_efficient_forward)
    monkeypatch.setattr(av, "_EFFICIENT_BACKWARD", _fake_efficient_backward)


@pytest.mark.parametrize("compiled", [False, True])
def test_efficient_varlen_passes_the_kernel_its_arguments_and_sums_grouped_query_gradients(cpu_kernels, compiled):
    fn = torch.compile(av.efficient_varlen, dynamic=True, fullgraph=True, backend="aot_eager") if compiled \
        else av.efficient_varlen
    q, k, v = qkv()
    ref_in = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    grad = torch.randn_like(q)
    out = fn(q, k, v, torch.tensor(CU, dtype=torch.int32), 35, 0.25)
    out.backward(grad)
    av.reference_varlen(*ref_in, CU, 0.25).backward(grad)
    assert out.shape == q.shape and torch.allclose(out, av.reference_varlen(*ref_in, CU, 0.25), atol=1e-12)
    for got, ref in zip((q, k, v), ref_in):
        assert torch.allclose(got.grad, ref.grad, atol=1e-10)


def test_fake_kernels_give_the_log_sum_exp_shape_of_aten():
    """The custom op's fake (used while compiling) has the shapes of aten's own meta kernel."""
    q, k, v = (torch.empty(71, 8, 16, device="meta") for _ in range(3))
    cu = torch.empty(4, dtype=torch.int32, device="meta")
    aten_out, aten_lse = torch.ops.aten._efficient_attention_forward(
        q[None], k[None], v[None], None, cu, cu, 35, 35, 0.0, 1, True, scale=0.25)[:2]
    out, lse = torch.ops.workshop.efficient_varlen_forward(q, k, v, cu, 35, 0.25)
    assert out.shape == aten_out[0].shape and lse.shape == aten_lse.shape == (3, 8, 64)


def test_attention_function_keeps_each_sequence_to_itself_and_falls_back_without_boundaries():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    q, k, v = (x.detach().float().transpose(0, 1).unsqueeze(0) for x in qkv())  # (1, heads, tokens, dim)
    attn = SimpleNamespace(num_key_value_groups=4)
    out, _ = av.efficient_varlen_attention_forward(attn, q, k, v, None, scaling=0.25,
                                                   cu_seq_lens_q=torch.tensor(CU), max_length_q=35)
    for a, b in zip(CU, CU[1:]):
        ref, _ = sdpa_attention_forward(attn, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], None, scaling=0.25,
                                        is_causal=True)
        assert torch.allclose(out[:, a:b], ref, atol=1e-5)
    plain, _ = av.efficient_varlen_attention_forward(attn, q, k, v, None, scaling=0.25, is_causal=True)
    ref, _ = sdpa_attention_forward(attn, q, k, v, None, scaling=0.25, is_causal=True)
    assert torch.equal(plain, ref)
    with pytest.raises(ValueError, match="batch size 1"):
        av.efficient_varlen_attention_forward(attn, q.expand(2, -1, -1, -1), k, v, None,
                                              cu_seq_lens_q=torch.tensor(CU), max_length_q=35)


def test_probe_says_why_not_without_cuda():
    ok, why = av.efficient_varlen_works(torch.float16)
    assert not ok and "CUDA" in why


def cuda_device(vram, dtype=torch.bfloat16):
    return DeviceChoice("cuda", dtype, "test", "GPU", vram)


def test_t4_mode_uses_the_efficient_kernel_where_the_probe_passes(monkeypatch):
    cfg = load_config("full")
    monkeypatch.setattr(plan_mod, "efficient_varlen_works", lambda dtype: (True, "runs here"))
    plan = plan_fast_path(cfg, cuda_device(15, torch.float16), EXAONE_7_8B, 1062, 1420, 120)
    assert plan.mode == "16gb" and plan.attention == av.EFFICIENT_VARLEN_ATTENTION
    assert plan.reasons["attention"] == "runs here" and plan.estimate_gib <= 8.0
    monkeypatch.setattr(plan_mod, "efficient_varlen_works", lambda dtype: (False, "no kernel → sdpa"))
    plan = plan_fast_path(cfg, cuda_device(15, torch.float16), EXAONE_7_8B, 1062, 1420, 120)
    assert plan.attention == "sdpa" and plan.reasons["attention"] == "no kernel → sdpa"
