"""Batches for the Trainer: padded (CompletionCollator) or padding-free (FlatteningCollator, one row of
concatenated sequences with position ids restarting per sequence)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..data.prompts import IGNORE_INDEX

COMPLETION_POSITIONS = "completion_positions"
# the batch's non-padding tokens as a Python int, counted on the CPU: the Trainer's own count
# (include_num_input_tokens_seen="non_padding") sums them on the GPU and waits for it every micro-batch
TOKEN_COUNT = "num_tokens"


def completion_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose logits predict a labelled token (t-1 for every t with label != -100), as the
    union over the batch: passing them as `logits_to_keep` skips the lm_head on prompt positions."""
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    return keep


class CompletionCollator:
    """Right-pads input_ids/labels; padding is masked by attention_mask and label -100."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        n = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            n = (n + m - 1) // m * m
        ids = torch.full((len(features), n), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), n), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), n), dtype=torch.long)
        for i, f in enumerate(features):
            L = len(f["input_ids"])
            ids[i, :L] = torch.tensor(f["input_ids"])
            labels[i, :L] = torch.tensor(f["labels"])
            mask[i, :L] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


PAD_MULTIPLE = 128  # flex_attention's block size; also keeps the number of distinct shapes small


# --- padding-free batches --------------------------------------------------------------------------------
@dataclass
class FlatteningCollator:
    """Concatenate a micro-batch into one row (batch size 1) with position ids restarting per sequence.

    Labels are the examples' own (prompt -100, answer + end-of-turn kept); the first token of every
    sequence is a prompt token, so no label crosses a sequence boundary. `pad_to_multiple_of` appends
    one filler sequence (pad ids, labels -100, its own positions) so that the row length takes few
    distinct values (each new length is a new shape for the compiled flex_attention); the Trainer's
    `include_num_input_tokens_seen="non_padding"` does not count it.
    """

    pad_token_id: int
    pad_to_multiple_of: int = 1
    seq_lens: bool = False  # also the sequence boundaries for `workshop_varlen` attention

    def __call__(self, features: list[dict]) -> dict:
        ids, labels, pos, lens = [], [], [], []
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            if n == 0 or len(f["labels"]) != n:
                raise ValueError(f"micro-batch example {i}: input_ids has {n} tokens, labels "
                                 f"{len(f['labels'])} (they must be equal and non-empty)")
            ids += list(f["input_ids"])
            labels += list(f["labels"])
            pos += list(range(n))
            lens.append(n)
        m = self.pad_to_multiple_of
        filler = (-len(ids)) % m if m > 1 else 0
        if filler:
            ids += [self.pad_token_id] * filler
            labels += [IGNORE_INDEX] * filler
            pos += list(range(filler))
            lens.append(filler)
        out = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
               "position_ids": torch.tensor([pos])}
        # where the loss needs logits, found here on the CPU: on the GPU it would be a nonzero() that waits for
        # everything queued before it (train/loss.py reads this key instead)
        out[COMPLETION_POSITIONS] = completion_positions(out["labels"])
        out[TOKEN_COUNT] = int((out["input_ids"] != self.pad_token_id).sum())  # what the Trainer counts as non-padding
        if self.seq_lens:
            # transformers' names for varlen boundaries (forwarded to the attention function)
            out["cu_seq_lens_q"] = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
            out["max_length_q"] = max(lens)
        return out
