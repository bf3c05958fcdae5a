"""Padding-free attention kernels beside torch's flash varlen kernel (fastpath's `workshop_varlen`).

- `workshop_varlen_efficient`: torch's memory-efficient attention kernel (the CUTLASS kernel behind
  sdpa's EFFICIENT_ATTENTION backend) over the packed row with its sequence boundaries (cu_seqlens),
  causal inside each sequence. Unlike the flash kernels (compute capability >= 8.0) it runs from
  compute capability 5.0 on -- the T4 (7.5) included, in fp16 there; bf16 needs 8.0. It is called
  the way torch's own nested-tensor sdpa calls it, `aten._efficient_attention_forward` with
  `cu_seqlens` and `custom_mask_type=1` (causal from the top left of each sequence), and
  `aten._efficient_attention_backward` for the gradients, both inside custom ops so that the call
  traces into a compiled decoder layer as one opaque node. The kernel has no grouped-query mode:
  key/value heads are repeated (their gradients summed back by autograd). The 16 GB (T4) mode used sdpa over the whole
  packed row before: a score matrix of (row tokens)^2 with most of it masked away.
- `reference_varlen`: causal attention of each packed sequence with itself, one sdpa call per
  sequence -- the CPU path and the reference the GPU probes compare against -- and
  `reference_varlen_op`, the same math as a torch custom op, so that a compiled decoder layer keeps
  one graph on CPU (a Python loop over the boundaries would break the graph and recompile for every
  new number of sequences).
"""
from __future__ import annotations

import functools

import torch

EFFICIENT_VARLEN_ATTENTION = "workshop_varlen_efficient"
CAUSAL_FROM_TOP_LEFT = 1  # aten's custom_mask_type: causal inside each sequence of the packed row


# --- the reference ---------------------------------------------------------------------------------------
def reference_varlen(q, k, v, cu: list[int], scale: float | None) -> torch.Tensor:
    """Causal attention of each packed sequence with itself, one sdpa call per sequence (q: T x H x D).
    The same math as the varlen kernels; used on CPU and where a kernel is missing."""
    rep = q.shape[1] // k.shape[1]
    outs = []
    for a, b in zip(cu[:-1], cu[1:]):
        qs, ks, vs = (x[a:b].transpose(0, 1) for x in (q, k, v))
        if rep > 1:
            ks, vs = ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0)
        outs.append(torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale)
                    .transpose(0, 1))
    return torch.cat(outs)


@torch.library.custom_op("workshop::varlen_reference", mutates_args=())
def _reference_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
                  scale: float | None) -> torch.Tensor:
    return reference_varlen(q, k, v, cu.tolist(), scale)


@_reference_op.register_fake
def _(q, k, v, cu, max_len, scale):
    return torch.empty_like(q)


def reference_varlen_backward(grad, q, k, v, cu: list[int], scale: float | None):
    """Gradients of `reference_varlen` written out (softmax attention's backward, per sequence and
    head; key/value gradients summed over the query heads that share them): a custom op's backward
    runs below autograd, so it cannot differentiate the forward again."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    rep = q.shape[1] // k.shape[1]
    wide = torch.promote_types(q.dtype, torch.float32)  # at least fp32 for the softmax
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for a, b in zip(cu[:-1], cu[1:]):
        qs, gs = (x[a:b].transpose(0, 1).to(wide) for x in (q, grad))  # heads x n x D
        ks, vs = (x[a:b].transpose(0, 1).to(wide).repeat_interleave(rep, 0) for x in (k, v))
        n = b - a
        s = scale * qs @ ks.transpose(1, 2)
        s = s.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
        p = s.softmax(-1)
        dp = gs @ vs.transpose(1, 2)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True))
        dq[a:b] = (scale * ds @ ks).transpose(0, 1).to(q.dtype)
        dk[a:b] = (scale * ds.transpose(1, 2) @ qs).unflatten(0, (-1, rep)).sum(1).transpose(0, 1).to(k.dtype)
        dv[a:b] = (p.transpose(1, 2) @ gs).unflatten(0, (-1, rep)).sum(1).transpose(0, 1).to(v.dtype)
    return dq, dk, dv


@torch.library.custom_op("workshop::varlen_reference_backward", mutates_args=())
def _reference_backward_op(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           cu: torch.Tensor, scale: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return reference_varlen_backward(grad, q, k, v, cu.tolist(), scale)


@_reference_backward_op.register_fake
def _(grad, q, k, v, cu, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _reference_setup(ctx, inputs, output):
    q, k, v, cu, _, scale = inputs
    ctx.save_for_backward(q, k, v, cu)
    ctx.scale = scale


def _reference_backward(ctx, grad):
    q, k, v, cu = ctx.saved_tensors
    dq, dk, dv = _reference_backward_op(grad.contiguous(), q, k, v, cu, ctx.scale)
    return dq, dk, dv, None, None, None


_reference_op.register_autograd(_reference_backward, setup_context=_reference_setup)


def reference_varlen_op(q, k, v, cu: torch.Tensor, max_len, scale: float | None) -> torch.Tensor:
    """`reference_varlen` as one opaque op (forward and backward), for compiled layers on CPU.
    `max_len` is unused by the math; it passes through like the GPU kernels' argument, so that a
    test on CPU sees whether a compiled layer specializes on it (one recompile per length)."""
    return _reference_op(q, k, v, cu, max_len, scale)


# --- the memory-efficient kernel with sequence boundaries ------------------------------------------------
# Two custom ops around aten's kernels instead of aten's own autograd formula: the meta kernel of
# `_efficient_attention_backward` (which fake tensors, and so torch.compile, use) does not match the
# op's schema in torch 2.11-2.13 (it lacks the `out` argument), so tracing the formula fails. As
# custom ops with their own fake kernels the calls stay opaque to the compiler.
def _lse_length(max_len):
    return (max_len + 31) // 32 * 32  # the kernel pads the log-sum-exp rows to multiples of 32


# aten's kernels (CUDA only), looked up when called (tests put CPU stand-ins here)
_EFFICIENT_FORWARD = torch.ops.aten._efficient_attention_forward
_EFFICIENT_BACKWARD = torch.ops.aten._efficient_attention_backward


@torch.library.custom_op("workshop::efficient_varlen_forward", mutates_args=())
def _efficient_forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
                          scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = _EFFICIENT_FORWARD(
        q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), None, cu, cu, max_len, max_len, 0.0,
        CAUSAL_FROM_TOP_LEFT, True, scale=scale)[:2]  # True: the log-sum-exp that the backward needs
    return out[0], lse


@_efficient_forward_op.register_fake
def _(q, k, v, cu, max_len, scale):
    lse = q.new_empty((cu.shape[0] - 1, q.shape[1], _lse_length(max_len)), dtype=torch.float32)
    return torch.empty_like(q), lse


@torch.library.custom_op("workshop::efficient_varlen_backward", mutates_args=())
def _efficient_backward_op(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           out: torch.Tensor, lse: torch.Tensor, cu: torch.Tensor, max_len: int,
                           scale: float | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # no dropout: the Philox seed and offset are not read (the forward returns empty ones as well)
    unused = torch.empty((), dtype=torch.long)
    dq, dk, dv = _EFFICIENT_BACKWARD(
        grad.unsqueeze(0), q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), None, out.unsqueeze(0), cu, cu,
        max_len, max_len, lse, 0.0, unused, unused, CAUSAL_FROM_TOP_LEFT, False, scale=scale)[:3]
    return dq[0], dk[0], dv[0]


@_efficient_backward_op.register_fake
def _(grad, q, k, v, out, lse, cu, max_len, scale):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _efficient_setup(ctx, inputs, output):
    q, k, v, cu, max_len, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, cu)
    ctx.max_len, ctx.scale = max_len, scale
    ctx.mark_non_differentiable(lse)


def _efficient_backward(ctx, grad, _grad_lse):
    q, k, v, out, lse, cu = ctx.saved_tensors
    dq, dk, dv = _efficient_backward_op(grad.contiguous(), q, k, v, out, lse, cu, ctx.max_len, ctx.scale)
    return dq, dk, dv, None, None, None


_efficient_forward_op.register_autograd(_efficient_backward, setup_context=_efficient_setup)


def efficient_varlen(q, k, v, cu: torch.Tensor, max_len, scale: float | None) -> torch.Tensor:
    """Causal attention inside each packed sequence (q: T x Hq x D, k/v: T x Hkv x D, cu: int32
    boundaries) through torch's memory-efficient CUDA kernel; differentiable."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:  # no grouped-query mode in this kernel: repeat the key/value heads (autograd sums back)
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return _efficient_forward_op(q.contiguous(), k.contiguous(), v.contiguous(), cu, max_len, scale)[0]


def efficient_varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                       scaling: float | None = None, cu_seq_lens_q=None, max_length_q=None,
                                       **kwargs):
    """transformers attention function for padding-free rows through the memory-efficient kernel.

    query/key/value: (1, heads, row tokens, head dim); boundaries from FlatteningCollator
    (`cu_seq_lens_q`, `max_length_q`). Without them (generation, padded batches) it is plain sdpa with
    the mask transformers built; on CPU the per-sequence reference.
    """
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"{EFFICIENT_VARLEN_ATTENTION}: a packed row has batch size 1, got {query.shape[0]}")
    if dropout:
        raise ValueError(f"{EFFICIENT_VARLEN_ATTENTION}: attention dropout is not supported (got {dropout})")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # tokens x heads x head dim
    cu = cu_seq_lens_q.to(device=q.device, dtype=torch.int32)
    if q.is_cuda:
        out = efficient_varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu, max_length_q, scaling)
    elif torch.compiler.is_compiling():
        out = reference_varlen_op(q, k, v, cu, max_length_q, scaling)
    else:
        out = reference_varlen(q, k, v, cu.tolist(), scaling)
    return out.unsqueeze(0), None  # (1, tokens, heads, head dim), as transformers' attention functions


def register_efficient_varlen_attention() -> str:
    """Register `workshop_varlen_efficient` with transformers (attention + the sdpa mask for generation)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(EFFICIENT_VARLEN_ATTENTION, efficient_varlen_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(EFFICIENT_VARLEN_ATTENTION, sdpa_mask)
    return EFFICIENT_VARLEN_ATTENTION


# --- the probe the planner uses -------------------------------------------------------------------------
def _relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-6)).item()


def compare_with_reference(fn, dtype: torch.dtype, device: str = "cuda", lens=(40, 56), heads=(8, 2),
                           head_dim: int = 128, seed: int = 0) -> dict:
    """Output and q/k/v gradients of `fn(q, k, v, cu, max_len, scale)` against the fp32 reference on
    random inputs (relative max errors); used by the probe and scripts/gpu_perf_check.py."""
    g = torch.Generator(device=device).manual_seed(seed)
    t = sum(lens)
    q = torch.randn(t, heads[0], head_dim, device=device, dtype=dtype, generator=g)
    k, v = (torch.randn(t, heads[1], head_dim, device=device, dtype=dtype, generator=g) for _ in range(2))
    grad = torch.randn(t, heads[0], head_dim, device=device, dtype=dtype, generator=g)
    cu_list = [0]
    for n in lens:
        cu_list.append(cu_list[-1] + n)
    cu = torch.tensor(cu_list, dtype=torch.int32, device=device)
    scale = head_dim ** -0.5
    got_in = [x.clone().requires_grad_() for x in (q, k, v)]
    got = fn(*got_in, cu, max(lens), scale)
    got.backward(grad)
    ref_in = [x.float().requires_grad_() for x in (q, k, v)]
    ref = reference_varlen(*ref_in, cu_list, scale)
    ref.backward(grad.float())
    errs = {"out": _relative_error(got.detach(), ref.detach())}
    for name, a, b in zip("qkv", got_in, ref_in):
        errs[f"d{name}"] = _relative_error(a.grad, b.grad)
    return errs


def _capability_problem(dtype: torch.dtype) -> str | None:
    if not torch.cuda.is_available():
        return "CUDA 없음"
    major, minor = torch.cuda.get_device_capability()
    if major < 5:
        return f"compute capability {major}.{minor} < 5.0: memory-efficient 커널 없음 → sdpa"
    if dtype == torch.bfloat16 and major < 8:
        return f"compute capability {major}.{minor}에는 bf16 커널 없음 → sdpa"
    return None


@functools.lru_cache(maxsize=None)
def efficient_varlen_works(dtype: torch.dtype = torch.float16) -> tuple[bool, str]:
    """Does the memory-efficient varlen kernel run (forward + backward) on this GPU and match the
    per-sequence reference? (EXAONE's head size 128, grouped-query heads, two packed sequences.)"""
    problem = _capability_problem(dtype)
    if problem:
        return False, problem
    try:
        errs = compare_with_reference(efficient_varlen, dtype)
    except Exception as err:  # noqa: BLE001 - any failure means: use sdpa
        return False, f"memory-efficient varlen 실행 실패 → sdpa ({type(err).__name__}: {str(err)[:120]})"
    worst = max(errs.values())
    if worst > 3e-2:
        return False, f"memory-efficient varlen 결과가 참조와 다름 (상대 오차 {worst:.3g}) → sdpa"
    return True, ("memory-efficient varlen attention (compute capability 5.0 이상, T4 포함: 시퀀스마다 따로, "
                  "패킹된 행 전체의 제곱 계산 없음)")
