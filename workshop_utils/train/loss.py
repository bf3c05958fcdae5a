"""Completion-only loss: logits only where an answer token follows (same value as HF's causal-LM loss),
and with Liger's fused linear cross-entropy the logits are never materialized."""
from __future__ import annotations

import torch

from ..data.prompts import IGNORE_INDEX
from ..model.lora import base_model
from .collators import COMPLETION_POSITIONS, TOKEN_COUNT, completion_positions


def _labels_and_positions(inputs: dict) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """(the model's inputs, labels, completion positions): the positions the collator found on the CPU
    (FlatteningCollator), else computed here."""
    fwd = {k: v for k, v in inputs.items() if k not in ("labels", COMPLETION_POSITIONS, TOKEN_COUNT)}
    labels = inputs["labels"]
    keep = inputs.get(COMPLETION_POSITIONS)
    return fwd, labels, completion_positions(labels) if keep is None else keep.to(labels.device)


def completion_loss(model, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, object]:
    """The same loss as HF's causal-LM loss, computing logits only where a label follows.

    Goes through the top-level forward (so DDP hooks and PEFT wrappers still run) with
    `logits_to_keep` = the completion positions; identical in value to the full computation.
    """
    fwd, labels, keep = _labels_and_positions(inputs)
    out = model(**fwd, logits_to_keep=keep, use_cache=False)
    logits = out.logits.float()
    targets = labels[:, keep + 1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    n = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(n):
        n = n.to(loss.device)
    return loss / n, out


def uses_liger_loss(model) -> bool:
    return bool(getattr(base_model(model), "_workshop_liger", False))


# --- the loss ------------------------------------------------------------------------------------------
def fast_completion_loss(model, inputs: dict, num_items_in_batch=None):
    """Completion-only loss of a (flattened or padded) batch; Liger's fused loss when it is applied.

    Same value as HF's causal-LM loss: sum of token losses at answer positions divided by the
    number of answer tokens in the whole accumulation group (`num_items_in_batch`).
    """

    if not uses_liger_loss(model):
        return completion_loss(model, inputs, num_items_in_batch)
    inputs, labels, keep = _labels_and_positions(inputs)
    targets = labels[:, keep + 1]
    n = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(n):
        n = n.to(labels.device)
    out = model(**inputs, logits_to_keep=keep, shift_labels=targets, num_items_in_batch=n, use_cache=False)
    return out.loss, out
