"""Learning-rate schedules and step counts, and fitting a large data set's schedule to a small one."""
from __future__ import annotations

import copy
import math

import torch

from ..config import WorkshopConfig


def lr_schedule(learning_rate: float, warmup_steps: float, total_steps: int, scheduler: str = "cosine") -> list[float]:
    """The learning rate at each optimizer step as the Trainer schedules it (warmup_steps < 1 = ratio)."""
    from transformers import get_scheduler

    warmup = math.ceil(warmup_steps * total_steps) if 0 < warmup_steps < 1 else int(warmup_steps)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=learning_rate)
    sched = get_scheduler(scheduler, opt, num_warmup_steps=warmup, num_training_steps=total_steps)
    lrs = []
    for _ in range(total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def total_steps(cfg: WorkshopConfig, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps of one run: max_steps, else epochs x ceil(batches / grad_accum) (as the Trainer counts)."""
    t = cfg.train
    if t.max_steps > 0:
        return t.max_steps
    batches = math.ceil(n_train / (t.per_device_train_batch_size * world_size))
    return max(1, math.ceil(t.num_train_epochs * max(1, math.ceil(batches / t.gradient_accumulation_steps))))


def fit_schedule(cfg: WorkshopConfig, n_train: int, evals: int = 4, world_size: int = 1) -> tuple[WorkshopConfig, list[dict]]:
    """Scale the step-based settings of a large data set (warmup 100 steps, evaluate/save every 500) to a
    small one: a warmup of half the run or more becomes a 10% ratio, a run with fewer than two evaluations
    gets about `evals` of them (checkpoints on the same steps, as early stopping needs), and the loss is
    logged about 10 times. Returns a copy of cfg and the rows of what changed (none when it already fits)."""
    c = copy.deepcopy(cfg)
    t = c.train
    total = total_steps(c, n_train, world_size)
    rows: list[dict] = []

    def change(name: str, value, why: str) -> None:
        rows.append({"설정": f"train.{name}", "전": getattr(t, name), "후": value, "이유": why})
        setattr(t, name, value)

    if t.warmup_steps >= 1 and t.warmup_steps >= total / 2:
        change("warmup_steps", 0.1, f"전체 {total} 스텝 중 {t.warmup_steps:g} 스텝이 웜업: 비율 0.1 (10%)로")
    if t.eval_steps > 0 and t.eval_steps > total / 2:
        every = max(1, total // evals)
        change("eval_steps", every, f"{t.eval_steps} 스텝마다 평가하면 {total} 스텝 동안 검증 loss가 거의 없음")
        change("save_steps", every, "체크포인트를 평가와 같은 스텝에 (early stopping의 best model 복원에 필요)")
    if t.logging_steps > max(1, total // 10):
        change("logging_steps", max(1, total // 10), "학습 곡선에 점이 10개쯤 찍히도록")
    return c, rows
