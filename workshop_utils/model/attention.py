"""Attention for padding-free batches: `workshop_varlen`, torch's variable-length flash attention
(`torch.nn.attention.varlen`, torch >= 2.10, compute capability >= 8.0) registered as a transformers
attention function, so each packed sequence attends only to itself; a per-sequence sdpa reference on CPU
and where the kernel is missing; and probes that check a kernel on this GPU before the planner picks it."""
from __future__ import annotations

import functools
import inspect

import torch

from .attention_kernels import EFFICIENT_VARLEN_ATTENTION, reference_varlen, reference_varlen_op

# --- attention -----------------------------------------------------------------------------------------
VARLEN_ATTENTION = "workshop_varlen"


_reference_varlen = reference_varlen  # per-sequence sdpa: the CPU path and the kernels' reference


@functools.lru_cache(maxsize=None)
def _varlen_kernel():
    """torch's varlen flash-attention function and its parameter names (None before torch 2.10)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, frozenset()
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _cuda_varlen(q, k, v, cu: torch.Tensor, max_len: int, scale: float | None) -> torch.Tensor:
    fn, params = _varlen_kernel()
    kw = {"scale": scale}
    if "window_size" in params:
        kw["window_size"] = (-1, 0)  # causal
    else:
        kw["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return fn(q, k, v, cu, cu, max_len, max_len, **kw)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """transformers attention function for padding-free rows: each packed sequence attends to itself.

    query/key/value: (1, heads, row tokens, head dim); the boundaries come from FlatteningCollator
    (`cu_seq_lens_q`, `max_length_q`). Without them (generation, padded batches) it is plain sdpa with
    the mask transformers built.
    """
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"{VARLEN_ATTENTION}: a packed row has batch size 1, got {query.shape[0]}")
    if dropout:
        raise ValueError(f"{VARLEN_ATTENTION}: attention dropout is not supported (got {dropout})")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # tokens x heads x head dim
    if q.is_cuda and _varlen_kernel()[0] is not None:
        out = _cuda_varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu_seq_lens_q.to(q.device),
                           int(max_length_q), scaling)
    elif torch.compiler.is_compiling():  # a compiled decoder layer (train/fastpath/compile.py): one opaque op
        out = reference_varlen_op(q, k, v, cu_seq_lens_q, max_length_q, scaling)
    else:
        out = _reference_varlen(q, k, v, cu_seq_lens_q.tolist(), scaling)
    return out.unsqueeze(0), None  # (1, tokens, heads, head dim), as transformers' attention functions


# attention functions that read the packed row's boundaries (FlatteningCollator(seq_lens=True))
SEQUENCE_BOUNDARY_ATTENTIONS = (VARLEN_ATTENTION, EFFICIENT_VARLEN_ATTENTION)


def register_varlen_attention() -> str:
    """Register `workshop_varlen` with transformers (attention + the sdpa mask for generation)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_ATTENTION, sdpa_mask)
    return VARLEN_ATTENTION


def _no_ampere_gpu(what: str) -> str | None:
    """Why this machine cannot run compute-capability-8.0 attention kernels (None if it can)."""
    if not torch.cuda.is_available():
        return "CUDA 없음"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"compute capability {major}.{minor} < 8.0 (T4/V100): {what} → sdpa"
    return None


@functools.lru_cache(maxsize=None)
def varlen_attention_works(dtype: torch.dtype = torch.bfloat16) -> tuple[bool, str]:
    """Does torch's varlen flash kernel run (forward + backward) on this GPU and match sdpa?"""
    missing = _no_ampere_gpu("flash 커널 없음")
    if missing:
        return False, missing
    if _varlen_kernel()[0] is None:
        return False, f"torch {torch.__version__}에 torch.nn.attention.varlen 없음 (2.10 이상 필요) → sdpa"
    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(96, 8, 64, device="cuda", dtype=dtype, generator=g, requires_grad=True)
        kv = torch.randn(2, 96, 2, 64, device="cuda", dtype=dtype, generator=g)
        cu = [0, 40, 96]
        got = _cuda_varlen(q, kv[0], kv[1], torch.tensor(cu, dtype=torch.int32, device="cuda"), 56, None)
        got.float().sum().backward()
        ref = _reference_varlen(q.detach(), kv[0], kv[1], cu, None)
        err = (got.detach().float() - ref.float()).abs().max().item()
        if err > 2e-2:
            return False, f"varlen 커널 결과가 sdpa와 다름 (최대 오차 {err:.3g}) → sdpa"
        return True, "varlen flash attention (시퀀스마다 따로: 패킹된 행 전체의 제곱 계산 없음)"
    except Exception as err:  # noqa: BLE001 - any failure means: use sdpa
        return False, f"varlen 커널 실행 실패 → sdpa ({type(err).__name__}: {str(err)[:120]})"


@functools.lru_cache(maxsize=None)
def flex_attention_compiles(dtype: torch.dtype = torch.bfloat16) -> tuple[bool, str]:
    """Try flex_attention (compiled, forward + backward) on a tiny packed input on this GPU."""
    missing = _no_ampere_gpu("flex_attention 커널 미지원")
    if missing:
        return False, missing
    import time

    t0 = time.perf_counter()
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        seq = torch.tensor([0] * 100 + [1] * 156, device="cuda")

        def mask(b, h, q, kv):
            return (seq[q] == seq[kv]) & (q >= kv)

        bm = create_block_mask(mask, None, None, 256, 256, device="cuda")
        q = torch.randn(1, 2, 256, 64, device="cuda", dtype=dtype, requires_grad=True)
        torch.compile(flex_attention)(q, q, q, block_mask=bm).sum().backward()
        torch.cuda.synchronize()
        return True, (f"flex_attention이 이 GPU에서 컴파일됨 (점검 {time.perf_counter() - t0:.0f}s; "
                      "첫 스텝에서 모델 크기로 한 번 더 컴파일, 1~2분)")
    except Exception as err:  # noqa: BLE001 - any failure means: use sdpa
        return False, f"flex_attention 컴파일 실패 → sdpa ({type(err).__name__}: {str(err)[:120]})"
