"""Liger's Triton kernels (rope, RMSNorm, SwiGLU, fused linear cross-entropy) on a Llama-family model."""
from __future__ import annotations

import importlib.util

from ...model.lora import base_model

# --- Liger kernels ---------------------------------------------------------------------------------------
LIGER_KERNELS = ["rope", "rms_norm", "swiglu", "fused_linear_cross_entropy"]


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def apply_liger(model, layer_kernels: bool = True) -> list[str]:
    """Liger's Llama kernels on this model instance (the base causal LM under a PeftModel); without
    `layer_kernels` only the fused linear cross-entropy (compiled layers fuse rope/RMSNorm/SwiGLU).

    EXAONE's model_type is 'exaone', which Liger's automatic dispatch does not know; transformers 5
    builds it from the Llama classes, so `apply_liger_kernel_to_llama(model=...)` fits. The fused
    linear cross-entropy replaces this instance's forward only; rope is a module-level function in
    transformers' Llama code, so it changes for every Llama-family model in this process (it is the
    same math).
    """
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    base = base_model(model)
    if base.config.model_type not in ("llama", "exaone"):
        raise ValueError(f"Liger Llama 커널은 Llama 계열 전용입니다 (model_type={base.config.model_type})")
    if not hasattr(base.config, "pretraining_tp"):  # a Llama-only field that Liger's forward reads
        base.config.pretraining_tp = 1
    apply_liger_kernel_to_llama(model=base, rope=layer_kernels, rms_norm=layer_kernels, swiglu=layer_kernels,
                                fused_linear_cross_entropy=True, cross_entropy=False)
    kernels = list(LIGER_KERNELS) if layer_kernels else LIGER_KERNELS[-1:]
    base._workshop_liger = tuple(kernels)
    return kernels
