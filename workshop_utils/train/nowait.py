"""A training loop that does not wait for the GPU between steps (the fast path's Trainer, single process).

The HF Trainer stops the CPU three times per optimizer step until the GPU has caught up: the batch's copy to
the GPU (accelerate copies blocking), the token count (`include_num_input_tokens_seen` sums the batch on the GPU
and calls `.item()` for every micro-batch) and the log (`.item()` of the loss and the gradient norm at every
logging step; `logging_steps=1` is the usual setting in a workshop). After each such wait the GPU sits idle
while the CPU fetches and collates the next batch, copies it, logs, and launches the first kernels of the next
forward: 8-11% of a 0.9 s step on the H200 (docs/benchmarks.md, `workshop bench --profile`). Here:

- the copy is non-blocking from pinned memory (`accelerator_config.non_blocking`, set by the fast path);
- the token count comes from the collator, counted on the CPU (collators.TOKEN_COUNT);
- a step's log is taken without waiting (`DeferredLog.take`: the loss and gradient norm are copied to the CPU
  asynchronously, behind the step's own work) and written one step later (`flush`), when the GPU has long
  finished that step, with the step number, epoch and token count it had: `log_history`, callbacks and
  reports see the same entries as before. A step that evaluates, saves or ends the training logs at once.

So the CPU runs up to one step ahead and the step boundaries cost the GPU nothing. The values are the ones the
Trainer would log (tests/test_nowait.py compares log histories with the plain Trainer's).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class _Pending:
    values: torch.Tensor  # [summed loss, grad norm] on the CPU (pinned, filled asynchronously on CUDA)
    ready: object  # torch.cuda.Event recorded after the copy, or None on the CPU
    has_grad_norm: bool
    steps: int  # optimizer steps the summed loss covers
    learning_rate: float | None
    global_step: int
    epoch: float | None
    tokens: int


class DeferredLog:
    """The log of one optimizer step, taken now and written at the next (see the module docstring)."""

    def __init__(self):
        self.pending: _Pending | None = None
        self.deferred = 0  # logs written one step late (counted for tests and the printout)

    @staticmethod
    def can_defer(trainer) -> bool:
        """This step's log may wait: one process (a multi-process log gathers the loss across processes, a
        collective every process must join at the same step), and the step neither evaluates, saves nor ends
        the training (those log at once: their records must be complete when they happen)."""
        c, state = trainer.control, trainer.state
        return (trainer.args.world_size == 1 and c.should_log and state.global_step > trainer._globalstep_last_logged
                and not (c.should_evaluate or c.should_save or c.should_training_stop))

    def take(self, trainer, tr_loss: torch.Tensor, grad_norm, learning_rate) -> None:
        """Snapshot this step's loss sum and gradient norm (copies queued behind the step's work), reset the
        running loss as the Trainer does, and mark the step as logged."""
        parts = [tr_loss.detach().float().reshape(())]
        has_grad = grad_norm is not None
        if has_grad:
            parts.append(torch.as_tensor(grad_norm, dtype=torch.float32, device=tr_loss.device).detach().reshape(()))
        stacked = torch.stack(parts)
        ready = None
        if stacked.device.type == "cuda":
            values = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
            values.copy_(stacked, non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        else:
            values = stacked.clone()
        tr_loss -= tr_loss
        state = trainer.state
        self.pending = _Pending(values, ready, has_grad, state.global_step - trainer._globalstep_last_logged,
                                learning_rate if learning_rate is not None else trainer._get_learning_rate(),
                                state.global_step, state.epoch, state.num_input_tokens_seen)
        trainer._globalstep_last_logged = state.global_step
        trainer.store_flos()
        trainer.control.should_log = False  # taken: the Trainer's own branch must not log this step again

    def flush(self, trainer, start_time) -> None:
        """Write the pending log as the Trainer would have at its step (waits only for that step's copy)."""
        p, self.pending = self.pending, None
        if p is None:
            return
        if p.ready is not None:
            p.ready.synchronize()
        loss_sum = float(p.values[0])
        logs = {"loss": loss_sum / p.steps}
        if p.has_grad_norm:
            logs["grad_norm"] = float(p.values[1])
        logs["learning_rate"] = p.learning_rate
        trainer._total_loss_scalar += loss_sum
        state = trainer.state
        now = state.global_step, state.epoch, state.num_input_tokens_seen
        state.global_step, state.epoch, state.num_input_tokens_seen = p.global_step, p.epoch, p.tokens
        try:
            trainer.log(logs, start_time)
        finally:
            state.global_step, state.epoch, state.num_input_tokens_seen = now
        self.deferred += 1
