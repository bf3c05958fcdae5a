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
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    fsdp: bool
    launched: bool = False  # started by a launcher (accelerate/torchrun set LOCAL_RANK), even with one process

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
    """Rank, local rank, world size and FSDP, from the variables accelerate/torchrun set."""
    env = os.environ
    return DistInfo(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)),
                    env.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"), "LOCAL_RANK" in env)


def is_main_process() -> bool:
    return dist_info().is_main


@contextlib.contextmanager
def main_process_first():
    """Run the block on rank 0 first, then on the others (e.g. data preparation that writes files).

    Uses torch.distributed directly (and starts its process group when the launcher set the variables but
    nothing started it yet): accelerate's PartialState does not synchronize a CPU launch without an
    accelerate config (it reports one process), so rank 1 read files rank 0 had not written yet."""
    info = dist_info()
    if not info.distributed:
        yield
        return
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if not info.is_main:
        dist.barrier()
    try:
        yield
    finally:
        if info.is_main:
            dist.barrier()


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


def effective_batch(per_device: int, accumulation: int, gpus: int) -> tuple[int, str]:
    """The seed's formula: sequences per optimizer step."""
    n = per_device * accumulation * gpus
    return n, f"유효 배치 = {per_device} (GPU당 배치) x {accumulation} (누적) x {gpus} (GPU) = {n}"
