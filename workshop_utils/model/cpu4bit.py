"""The CPU 4-bit hazard: bitsandbytes repacks 4-bit weights for CPU inference, after which LoRA
gradients are wrong. Models loaded here have repacking switched off; training refuses a repacked model."""
from __future__ import annotations

import contextlib


# --- the CPU 4-bit hazard --------------------------------------------------------------------------------
def _linear4bit_modules(model):
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def disable_cpu_4bit_repacking(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference on this model.

    On CPUs with AVX512-BF16, an eval-mode forward of a Linear4bit repacks its weight into a layout
    that only the inference kernel understands; training the same object afterwards computes LoRA
    gradients through a kernel with no autograd support (~90% wrong, with only a warning). Each
    Linear4bit decides this from its `support_avx512bf16_for_cpu` flag, so we switch it off on
    models we load: inference takes the ordinary dequantize path and training stays correct.
    """
    mods = _linear4bit_modules(model)
    for m in mods:
        m.support_avx512bf16_for_cpu = False
    return len(mods)


def repacked_4bit_modules(model) -> list[str]:
    """Names of Linear4bit modules whose weights were repacked for CPU inference."""
    import bitsandbytes as bnb

    return [name for name, m in model.named_modules()
            if isinstance(m, bnb.nn.Linear4bit)
            and getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False)]


class RepackedModelError(RuntimeError):
    pass


def assert_trainable_4bit(model) -> None:
    """Refuse to train a 4-bit model whose weights were repacked for CPU inference."""
    bad = repacked_4bit_modules(model)
    if bad:
        raise RepackedModelError(
            f"이 4비트 모델은 CPU 추론용으로 가중치가 재배치되었습니다 ({len(bad)}개 모듈, 예: {bad[0]}). "
            "이대로 학습하면 LoRA 그래디언트가 틀립니다 (bitsandbytes CPU repacking after an eval-mode "
            "forward). workshop_utils.models.load_model()로 다시 로드하세요: 이 함수로 로드한 모델은 "
            "재배치가 꺼져 있어 추론 후에도 안전하게 학습할 수 있습니다.")


# --- CPU speed: dequantize each frozen 4-bit weight once ----------------------------------------------------
CACHE_MAX_GIB = 2.0  # the offline model's dequantized Linear weights: ~0.4 GiB in float32


@contextlib.contextmanager
def dequantized_4bit_weights(model, max_gib: float = CACHE_MAX_GIB, enabled: bool = True):
    """On CPU, each Linear4bit computes with its weight dequantized once instead of at every call.

    bitsandbytes' CPU path (the "default" backend) dequantizes the whole NF4 weight on every forward and again in
    every backward, then calls an ordinary linear: in generation that is once per new token per layer, most of
    the time. The base weights are frozen, so the dequantized matrix never changes; this computes the same
    `linear(x, dequantize_4bit(W))` (the same NF4 values, bit-identical outputs and gradients, tested) with the
    matrix computed once. GPU modules, and models whose dequantized weights would exceed `max_gib`, are left as
    they are (as is everything with `enabled=False`). The original forwards come back on exit.
    """
    import torch
    import torch.nn.functional as F

    mods = [m for m in (_linear4bit_modules(model) if enabled else [])
            if m.weight.device.type == "cpu" and getattr(m.weight, "quant_state", None) is not None
            and not getattr(m.weight.quant_state, "packing_format_for_cpu", False)]
    size = sum(m.weight.quant_state.shape.numel() * torch.finfo(_compute_dtype(m)).bits // 8 for m in mods) / 1024**3
    if not mods or size > max_gib:
        yield 0
        return
    import bitsandbytes.functional as bnbf

    for m in mods:
        w = bnbf.dequantize_4bit(m.weight.data, m.weight.quant_state).to(_compute_dtype(m))

        def forward(x, _m=m, _w=w):
            inp_dtype = x.dtype
            if _m.compute_dtype is not None:
                x = x.to(_m.compute_dtype)
            bias = None if _m.bias is None else _m.bias.to(x.dtype)
            return F.linear(x, _w if _w.dtype == x.dtype else _w.to(x.dtype), bias).to(inp_dtype)

        m.forward = forward
    try:
        yield len(mods)
    finally:
        for m in mods:
            m.__dict__.pop("forward", None)


def _compute_dtype(m):
    import torch

    return m.compute_dtype or m.weight.quant_state.dtype or torch.float32
