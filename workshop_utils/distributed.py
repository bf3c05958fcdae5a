"""Several GPUs through accelerate (torch DDP or FSDP): who does what, and what it costs per GPU.

The training code is the same on one GPU and on N: `accelerate launch` starts N processes and sets
RANK / LOCAL_RANK / WORLD_SIZE (and ACCELERATE_USE_FSDP for an FSDP config); the HF Trainer then
wraps the model in DDP or FSDP. This module only answers the questions around it:

- DDP (configs/accelerate/ddp.yaml): the 4-bit model fits one GPU. Each process loads its own copy on
  its own GPU (`device_map={"": local_rank}`); only the LoRA parameters have gradients, so only they
  are averaged between GPUs after each backward (~54 MB for EXAONE-7.8B r=16 q/k/v/o in fp32).
- FSDP-QLoRA (configs/accelerate/fsdp_qlora.yaml): the model does not fit one GPU. The 4-bit weights
  are stored in the compute dtype (`bnb_4bit_quant_storage=bfloat16`) so FSDP can shard them like any
  float tensor: each GPU keeps 1/N of the weights and gathers one layer at a time.
- Only the main process (rank 0) writes checkpoints' model files, the adapter, logs, the report and the
  experiment entry, and evaluates once; the Trainer resumes every rank from the same checkpoint.
- Effective batch = per-device batch x gradient accumulation x number of GPUs (the seed's formula).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .memory import GIB, Shape, nf4_bytes_per_param


@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    fsdp: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def line(self) -> str:
        if not self.distributed:
            return "[dist] 단일 프로세스"
        kind = "FSDP-QLoRA (가중치 샤딩)" if self.fsdp else "DDP (프로세스(GPU)마다 모델 한 벌, LoRA 그래디언트만 동기화)"
        return f"[dist] {kind}: 프로세스 {self.rank}/{self.world_size} (local_rank {self.local_rank})"


def dist_info() -> DistInfo:
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    env.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"))


def is_main_process() -> bool:
    return dist_info().is_main


@contextlib.contextmanager
def main_process_first():
    """Run the block on rank 0 first, then on the others (e.g. data preparation that writes files)."""
    info = dist_info()
    if not info.distributed:
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


@contextlib.contextmanager
def single_process_env():
    """Load a model as one process would (no FSDP storage/placement), e.g. for rank 0's evaluation
    after an FSDP run: generation must not depend on the other ranks' shards."""
    saved = os.environ.pop("ACCELERATE_USE_FSDP", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["ACCELERATE_USE_FSDP"] = saved


def fsdp_uniform_dtype(model, dtype: torch.dtype) -> int:
    """FSDP flattens each wrapped unit's parameters into one tensor of one dtype: cast the LoRA
    parameters (peft keeps them in fp32) and anything peft upcast for k-bit training (embeddings,
    norms) to the compute dtype that the 4-bit weights are stored in (`bnb_4bit_quant_storage`), as
    the FSDP-QLoRA recipes of peft and TRL do. Returns how many parameters were cast."""
    n = 0
    for p in model.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
            n += 1
    return n


def effective_batch(per_device: int, accumulation: int, gpus: int) -> tuple[int, str]:
    """The seed's formula: sequences per optimizer step."""
    n = per_device * accumulation * gpus
    return n, f"유효 배치 = {per_device} (GPU당 배치) x {accumulation} (누적) x {gpus} (GPU) = {n}"


def memory_per_gpu(s: Shape, gpus: int, strategy: str, tokens_per_micro_batch: int = 4096,
                   r: int = 16, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                   checkpointing: bool = True) -> dict[str, float]:
    """Estimated GiB per GPU for DDP (a full 4-bit copy each) vs FSDP (weights and LoRA state sharded;
    one layer gathered at a time)."""
    from .fastpath import fast_path_memory

    est = fast_path_memory(s, tokens_per_micro_batch, s.layers if checkpointing else 0, r, targets)
    if strategy == "ddp" or gpus == 1:
        est["strategy"] = "ddp"
        return est
    if strategy != "fsdp":
        raise ValueError("strategy: ddp | fsdp")
    layer = (s.linear_params() / s.layers) * nf4_bytes_per_param(True) / GIB
    out = dict(est)
    out["weights"] = est["weights"] / gpus + 2 * layer  # own shard + the gathered layer (and prefetch)
    out["lora+grad+optim"] = est["lora+grad+optim"] / gpus
    out["total"] = sum(v for k, v in out.items() if k != "total")
    out["strategy"] = "fsdp"
    return out


def scaling_table(s: Shape, gpus: list[int], per_device: int = 4, accumulation: int = 4,
                  tokens_per_micro_batch: int = 4096) -> list[dict]:
    """Rows for the notebook/README: effective batch and estimated GiB per GPU for DDP and FSDP."""
    rows = []
    for n in gpus:
        eff, _ = effective_batch(per_device, accumulation, n)
        ddp = memory_per_gpu(s, n, "ddp", tokens_per_micro_batch)["total"]
        fsdp = memory_per_gpu(s, n, "fsdp", tokens_per_micro_batch)["total"]
        rows.append({"GPU 수": n, "유효 배치": eff, "DDP GiB/GPU (추정)": round(ddp, 1),
                     "FSDP-QLoRA GiB/GPU (추정)": round(fsdp, 1)})
    return rows


# Measured with `workshop bench` on one machine with 2 NVIDIA H200s (2026-11-28, docs/benchmarks.md),
# EXAONE-7.8B shape, 16 RAFT-length sequences per GPU and optimizer step. DDP: the default recipe
# (fast path, micro-batch 16, no checkpointing), 1 GPU and 2 GPUs in the same call. FSDP-QLoRA: the
# usual HF + checkpointing recipe (padded 4 x 4), 1 GPU without FSDP and 2 GPUs with
# configs/accelerate/fsdp_qlora.yaml in the same call. tokens/s is the total over the GPUs.
MEASURED_2X_H200 = [
    ("DDP", "default", 1, 16239, 92.03), ("DDP", "default", 2, 31890, 90.41),
    ("FSDP-QLoRA", "hf_gc", 1, 3347, 18.48), ("FSDP-QLoRA", "hf_gc", 2, 4310, 13.69),
]


def measured_scaling() -> list[dict]:
    """The 2 x H200 measurements: total tokens/s, speed-up over one GPU, peak allocated GiB per GPU."""
    one = {(s, r): t for s, r, g, t, _ in MEASURED_2X_H200 if g == 1}
    return [{"방식": s, "레시피": r, "GPU 수": g, "tokens/s (합계)": t, "1 GPU 대비": round(t / one[(s, r)], 2),
             "GPU당 최대 할당 GiB": peak} for s, r, g, t, peak in MEASURED_2X_H200]
