"""LoRA adapters: peft's LoraConfig from the settings, k-bit preparation, parameter counts."""
from __future__ import annotations

from ..config import LoraSettings


def base_model(model):
    """The causal LM itself: under a PeftModel its base model, else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model) -> list:
    """The decoder layers (modules with self-attention that transformers can checkpoint)."""
    return [m for m in base_model(model).modules() if hasattr(m, "gradient_checkpointing") and hasattr(m, "self_attn")]


def model_name(model) -> str:
    """The checkpoint a (peft-wrapped) model was loaded from (its config's name_or_path)."""
    base = base_model(model)
    return str(getattr(base.config, "_name_or_path", "") or type(base).__name__)


# --- LoRA ------------------------------------------------------------------------------------------------
def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.lora_alpha, target_modules=list(settings.target_modules),
                      lora_dropout=settings.lora_dropout, bias=settings.bias, task_type=settings.task_type)


def apply_lora(model, settings: LoraSettings, gradient_checkpointing: bool = False, upcast_non_4bit: bool = True,
               seed: int | None = 0):
    """prepare_model_for_kbit_training (+ checkpointing when asked), then get_peft_model.

    `upcast_non_4bit=False` keeps the 16-bit embeddings/lm_head as they are instead of peft's fp32
    upcast: with EXAONE's 102,400-token vocabulary that upcast costs ~1.7 GB (the fast path skips it).

    `seed`: LoRA's A matrices start random (B at zero, so the first loss does not show it; the first gradients
    do). They are drawn with torch's generators seeded with `seed` (the training seed, `train.seed`, where a
    Trainer follows) and the generators' state is restored afterwards: one seed gives one starting adapter,
    whatever the process drew before. The Trainer seeds itself only after LoRA is in place, so without this two
    runs of the same config started from different adapters. None: draw from the generators' current state.
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        if upcast_non_4bit:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            if gradient_checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if seed is None:
        return get_peft_model(model, lora_config(settings))
    import torch

    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_available() else []):
        torch.manual_seed(seed)
        return get_peft_model(model, lora_config(settings))


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, counting 4-bit weights by their real element count."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
