"""Applying a FastPlan to a model: LoRA without the fp32 upcast, attention, Liger, partial checkpointing."""
from __future__ import annotations

from ...model.attention import VARLEN_ATTENTION, register_varlen_attention
from ...model.lora import apply_lora, base_model
from ..loss import uses_liger_loss
from .kernels import LIGER_KERNELS, apply_liger
from .plan import FastPlan


# --- applying the plan ---------------------------------------------------------------------------------
def set_checkpointing(model, layers: int) -> int:
    """Gradient checkpointing for the first `layers` decoder layers only (0 = off). Returns the count."""
    base = base_model(model)
    blocks = [m for m in base.modules() if hasattr(m, "gradient_checkpointing") and hasattr(m, "self_attn")]
    if layers <= 0:
        if getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()
        return 0
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for i, block in enumerate(blocks):
        block.gradient_checkpointing = i < layers
    return min(layers, len(blocks))


def prepare_fast_model(model, plan: FastPlan, lora_settings) -> tuple[object, list[str]]:
    """LoRA without the fp32 upcast, attention backend, Liger kernels and (partial) checkpointing."""

    if not hasattr(model, "peft_config"):
        model = apply_lora(model, lora_settings, gradient_checkpointing=False,
                           upcast_non_4bit=plan.upcast_non_4bit)
    base = model.get_base_model()
    if plan.attention == VARLEN_ATTENTION:
        register_varlen_attention()
    if base.config._attn_implementation != plan.attention:
        base.set_attn_implementation(plan.attention)
    kernels = []
    if plan.liger:
        kernels = list(LIGER_KERNELS) if uses_liger_loss(model) else apply_liger(model)
    set_checkpointing(model, plan.checkpoint_layers)
    if plan.checkpoint_layers:
        base.enable_input_require_grads()
    return model, kernels
