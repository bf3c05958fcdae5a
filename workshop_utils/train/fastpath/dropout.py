"""LoRA dropout with hashed masks instead of Philox draws (compiled decoder layers only, `train.lora_dropout_masks`).

Why: peft applies `nn.Dropout` to the input of every LoRA-adapted projection, each with its own mask (the workshop's
q, k, v, o: 16,384 values per token and layer for EXAONE-7.8B; more with all-linear targets). Compiled, each value
costs a Philox draw (`tl.rand`: ten rounds of 32-bit multiplies for one number). On a card with room dropout 0.05
was +8.5% step time and +21 GiB (16 x 1,050 tokens; docs/benchmarks.md) against LoRA dropout 0.

What replaces it: a counter-based mask. Each value's keep/drop decision is a hash of its position in the input, the
module's key (drawn once from torch's generator, so a seed still fixes the run) and a counter that advances once per
model forward. The hash (two rounds of a 32-bit integer mixer, "lowbias32") costs a few integer operations where
Philox costs ten rounds of multiplies, and the mask is a pure function of (position, key, counter), so gradient
checkpointing's recomputation (same forward, same counter) draws the same mask without an RNG state to restore.
Measured on an H200 (call 14, docs/benchmarks.md): +2.7% tokens/s on the big card, 2.1 GiB less. Inductor's
partitioner still keeps what the LoRA A products need for their weight gradients (93.1 GiB vs 73.8 without dropout):
the hash chain is longer than it recomputes by default.

What stays the same: the distribution (each value kept independently with probability 1 - p, scaled by 1/(1 - p),
independent masks per module and per step), where it applies (LoRA inputs, training mode only), and peft's module
layout (the `lora_dropout` ModuleDict entry is swapped, `restore()` puts `nn.Dropout` back). What changes: the random
stream (the masks are not torch's Philox numbers), so a run is reproducible with its seed but not bit-identical to the
eager path's dropout; the counter is not in checkpoints, so a resumed run counts from 0 again (masks the first steps
already had; same distribution). Used only with compiled layers: eagerly the position index would be a materialized int32
tensor the size of the input.
"""
from __future__ import annotations

import torch
from torch import nn

DROPOUT_MASK_SETTINGS = ("hash", "peft")
MIX_1, MIX_2 = 0x7FEB352D, -0x7B935975  # lowbias32's multipliers (0x846CA68B as a signed int32)
GOLDEN = 0x61C88647  # 2^32 / golden ratio, odd: spreads consecutive counters over the key space
MAX_VALUES = 2**31 - 1  # the position index is int32


def mix32(v: torch.Tensor) -> torch.Tensor:
    """lowbias32 (Chris Wellons' integer hash) on int32 with wrap-around multiplies; `>>` on int32 is
    arithmetic, so the masks make the shifts logical. A bijection of the 32-bit values."""
    v = v ^ ((v >> 16) & 0xFFFF)
    v = v * MIX_1
    v = v ^ ((v >> 15) & 0x1FFFF)
    v = v * MIX_2
    return v ^ ((v >> 16) & 0xFFFF)


def keep_mask(shape, key: torch.Tensor, counter: torch.Tensor, p: float, device=None) -> torch.Tensor:
    """The keep mask (True = kept) for an input of `shape`: a function of each value's flat position, the module's
    `key` and the `counter` (int32 0-dim tensors), True with probability 1 - p (to 2^-31)."""
    n = 1
    for s in shape:
        n = n * s
    if n > MAX_VALUES:
        raise ValueError(f"LoRA dropout mask: {n} values > int32 positions")
    idx = torch.arange(n, dtype=torch.int32, device=device if device is not None else key.device).view(shape)
    seed = mix32(key + counter * GOLDEN)
    h = mix32(mix32(idx ^ seed) + key)
    return (h & 0x7FFFFFFF) >= int(round(p * 2**31))


class CounterDropout(nn.Module):
    """Drop-in for peft's `nn.Dropout(p)` on a LoRA input: keep_mask(x.shape, key, counter, p) * x / (1 - p) while
    training, identity otherwise. `counter` is shared by the model's modules (CounterDropouts.step advances it)."""

    def __init__(self, p: float, key: int, counter: torch.Tensor):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"lora_dropout={p}: 0 <= p < 1")
        self.p = p
        self.register_buffer("key", torch.tensor(key, dtype=torch.int32, device=counter.device), persistent=False)
        self.counter = counter  # not a buffer: one tensor for all modules, advanced in place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = keep_mask(x.shape, self.key, self.counter, self.p, x.device)
        return torch.where(keep, x * (1.0 / (1.0 - self.p)), torch.zeros((), dtype=x.dtype, device=x.device))

    def extra_repr(self) -> str:
        return f"p={self.p}, counter-based"


class CounterDropouts:
    """Every `nn.Dropout(p > 0)` in the model's LoRA layers (peft's `lora_dropout` ModuleDicts) swapped for a
    CounterDropout with a key drawn from torch's generator, and a model forward pre-hook that advances the shared
    counter once per forward of `hook_on` (a checkpointed layer's recomputation runs inside the same forward, so it sees
    the same counter). `restore()` puts the original modules back."""

    def __init__(self, model, device: torch.device | str, hook_on=None):
        self.counter = torch.zeros((), dtype=torch.int32, device=device)
        self.swapped: list[tuple[nn.ModuleDict, str, nn.Module]] = []
        for module in model.modules():
            drops = getattr(module, "lora_dropout", None)
            if not isinstance(drops, nn.ModuleDict):
                continue
            for name, drop in list(drops.items()):
                if isinstance(drop, nn.Dropout) and drop.p > 0:
                    key = int(torch.randint(-2**31, 2**31 - 1, (), dtype=torch.int64))
                    new = CounterDropout(drop.p, key, self.counter)
                    new.train(drop.training)
                    drops[name] = new
                    self.swapped.append((drops, name, drop))
        # on the causal LM (`hook_on`, default the model itself): every training forward passes through it once
        self.hook = (hook_on or model).register_forward_pre_hook(self.step) if self.swapped else None

    def __len__(self) -> int:
        return len(self.swapped)

    def step(self, *_args) -> None:
        """Advance the counter (on its device, without waiting for it)."""
        self.counter.add_(1)

    def restore(self) -> None:
        for drops, name, drop in self.swapped:
            drop.train(drops[name].training)
            drops[name] = drop
        self.swapped = []
        if self.hook is not None:
            self.hook.remove()
            self.hook = None
