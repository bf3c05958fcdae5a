"""Applying a FastPlan to a model: LoRA without the fp32 upcast, attention, Liger, partial checkpointing."""
from __future__ import annotations

import torch

from ...model.attention import SEQUENCE_BOUNDARY_ATTENTIONS, VARLEN_ATTENTION, register_varlen_attention
from ...model.attention_kernels import EFFICIENT_VARLEN_ATTENTION, register_efficient_varlen_attention
from ...model.lora import apply_lora, base_model, decoder_layers
from ..collators import FlatteningCollator
from ..loss import fast_completion_loss, uses_liger_loss
from .compile import compile_checked, probe_features
from .dropout import CounterDropouts
from .fp8 import FP8Backward
from .kernels import apply_liger
from .offload import set_activation_offload
from .plan import FastPlan


# --- applying the plan ---------------------------------------------------------------------------------
def set_checkpointing(model, layers: int) -> int:
    """Gradient checkpointing for the first `layers` decoder layers only (0 = off). Returns the count."""
    base = base_model(model)
    blocks = decoder_layers(model)
    if layers <= 0:
        if getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()
        return 0
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for i, block in enumerate(blocks):
        block.gradient_checkpointing = i < layers
    return min(layers, len(blocks))


def undo_fp32_upcast(model, dtype: torch.dtype) -> float:
    """Cast the frozen 16-bit weights that peft's prepare_model_for_kbit_training upcast to fp32 (embeddings,
    lm_head, norms) back to `dtype`; LoRA weights stay fp32. Returns the GiB freed (EXAONE-7.8B: ~1.6)."""
    freed = 0
    for p in model.parameters():
        if not p.requires_grad and p.dtype == torch.float32 and p.__class__.__name__ != "Params4bit":
            p.data = p.data.to(dtype)
            freed += p.numel() * (4 - torch.finfo(dtype).bits // 8)
    return freed / 1024**3


def prepare_fast_model(model, plan: FastPlan, lora_settings, dtype: torch.dtype | None = None,
                       seed: int | None = 0) -> tuple[object, list[str]]:
    """LoRA without the fp32 upcast, attention backend, Liger kernels, (partial) checkpointing, FP8 input
    gradients (opt-in) and the compiled decoder layers (checked once; eager again, with Liger's layer kernels,
    if the check fails).

    A model that already has LoRA (a notebook applied it with peft's fp32 upcast) gets its frozen weights
    back in the compute `dtype`, so the run uses the memory the plan counted. `seed`: LoRA's initialization
    (apply_lora)."""
    if not hasattr(model, "peft_config"):
        model = apply_lora(model, lora_settings, gradient_checkpointing=False,
                           upcast_non_4bit=plan.upcast_non_4bit, seed=seed)
    elif not plan.upcast_non_4bit and dtype is not None and dtype != torch.float32:
        freed = undo_fp32_upcast(model, dtype)
        if freed:
            plan.reasons["upcast"] = (f"이미 붙은 LoRA의 fp32 업캐스트(임베딩·lm_head·norm)를 {str(dtype)[6:]}로 되돌림 "
                                      f"({freed:.2f} GiB 절약)")
    base = model.get_base_model()
    if plan.attention == VARLEN_ATTENTION:
        register_varlen_attention()
    elif plan.attention == EFFICIENT_VARLEN_ATTENTION:
        register_efficient_varlen_attention()
    if base.config._attn_implementation != plan.attention:
        base.set_attn_implementation(plan.attention)
    kernels = []
    layer_kernels = not plan.compile_layers or plan.compile_keep_liger
    if plan.liger:
        kernels = list(base._workshop_liger) if uses_liger_loss(model) else apply_liger(model, layer_kernels)
    set_checkpointing(model, plan.checkpoint_layers)
    if plan.checkpoint_layers:
        base.enable_input_require_grads()
    base._workshop_activation_offload = (
        set_activation_offload(model, plan.checkpoint_layers) if plan.offload_activations else None)
    fp8 = base._workshop_fp8 = FP8Backward().attach(model) if plan.fp8_backward else None
    if fp8 is not None:
        plan.reasons["fp8_backward"] = (f"{plan.reasons.get('fp8_backward', '켬')}: 4비트 선형층 {len(fp8.layers)}개, "
                                        f"FP8 사본 {fp8.gib:.2f} GiB")
    base._workshop_dropout = None
    if plan.compile_layers and plan.hash_dropout:
        device = next(p.device for p in model.parameters() if p.requires_grad)
        base._workshop_dropout = CounterDropouts(model, device, hook_on=base)
        plan.reasons["lora_dropout"] = (f"{plan.reasons.get('lora_dropout', '')}: "
                                        f"LoRA 입력 {len(base._workshop_dropout)}개").lstrip(": ")
    if plan.compile_layers:
        batch = FlatteningCollator(0, seq_lens=plan.attention in SEQUENCE_BOUNDARY_ATTENTIONS)(
            probe_features(base.config.vocab_size))
        base._workshop_compiled, why = compile_checked(model, fast_completion_loss, batch)
        plan.reasons["compile"] = f"{plan.reasons.get('compile', '')}: {why}".lstrip(": ")
        if base._workshop_compiled is None:
            plan.compile_layers = False
            if base._workshop_dropout is not None:  # eager layers: peft's nn.Dropout again
                base._workshop_dropout.restore()
                base._workshop_dropout, plan.hash_dropout = None, False
                plan.reasons["lora_dropout"] = "층 컴파일 점검 실패 → peft의 nn.Dropout"
            if plan.liger and not layer_kernels:
                kernels = apply_liger(model, layer_kernels=True)
    return model, kernels
