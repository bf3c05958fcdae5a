"""QLoRA training with the HF Trainer: the seed's TrainingArguments, corrected for transformers 5.

Corrections to the seed's code (transformers 5):
- `eval_strategy` (the old `evaluation_strategy` is gone), `processing_class=` instead of `tokenizer=`.
- bf16/fp16 chosen from the device instead of hard-coded `bf16=True` (a T4 cannot run bf16).
- `paged_adamw_8bit` keeps the optimizer state in 8 bits and pages it to CPU memory under pressure;
  it is about the optimizer's memory, not "for 8-bit models".
- `warmup_steps` takes a float < 1 as a ratio (warmup_ratio was removed).
- labels are built explicitly (prompt masked, EOS kept): see prompts.py.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

from ..config import WorkshopConfig
from ..data.prompts import tokenize_dataset
from ..model.attention import SEQUENCE_BOUNDARY_ATTENTIONS
from ..model.cpu4bit import assert_trainable_4bit, dequantized_4bit_weights
from ..model.lora import apply_lora, base_model, model_name, trainable_parameters
from ..model.shape import Shape
from ..runtime.device import GIB, DeviceChoice, choose_device
from ..runtime.distributed import dist_info, is_main_process, main_process_first
from ..runtime.errors import WorkshopError
from ..runtime.gpu_usage import process_memory
from .callbacks import (
    DiagnosisLog,
    FlatLossCallback,
    GracefulInterrupt,
    NaNLossCallback,
    OverfitCallback,
    RunIdentityCallback,
    oom_message,
)
from .collators import TOKEN_COUNT, CompletionCollator, FlatteningCollator
from .fastpath.apply import prepare_fast_model
from .fastpath.offload import VocabOffload
from .fastpath.plan import FastPlan, fast_path_off_reason, fixed_checkpoint_layers, plan_fast_path, sequence_token_stats
from .loss import completion_loss, fast_completion_loss
from .memory import fits_without_checkpointing
from .nowait import DeferredLog
from .runs import (RunIdentity, checkpoint_identity, mark_latest, new_run, resumable_run, run_identity, run_label,
                   runs_root)
from .tracking import TRACKIO_INSTALL, trackio_available, trackio_dashboard_command, trackio_dir, wandb_mode


def use_gradient_checkpointing(cfg: WorkshopConfig, device: DeviceChoice) -> tuple[bool, str]:
    """'auto': off on CPU (small model, recomputation only costs time); on GPU from the memory
    budget -- on when the estimated peak without it does not fit the card."""
    setting = cfg.train.gradient_checkpointing
    fixed = fixed_checkpoint_layers(setting, 1)
    if fixed is not None:
        if str(setting).isdigit():
            return fixed > 0, "설정에서 층 수 지정 (기본 경로는 전체 층에 적용)"
        return bool(fixed), "설정에서 켬" if fixed else "설정에서 끔"
    if device.device != "cuda":
        return False, "CPU: 메모리가 충분하고 재계산은 시간만 늘리므로 끔"

    fits, detail = fits_without_checkpointing(cfg, device.vram_gib or 0)
    return (not fits), detail


def precision_flags(device: DeviceChoice) -> dict:
    """bf16 where the device computes it, fp16 (with loss scaling) on GPUs without bf16 such as the T4;
    the seed hard-codes bf16=True, which fails on a T4."""
    return {"bf16": device.dtype == torch.bfloat16, "fp16": device.dtype == torch.float16}


def training_arguments(cfg: WorkshopConfig, device: DeviceChoice | None = None, gradient_checkpointing: bool = False,
                       output_dir: str | Path | None = None, **overrides):
    """TrainingArguments from the config (the seed's values for size 'full')."""
    device = device or choose_device(cfg.model.compute_dtype)
    t = cfg.train
    on_gpu = device.device == "cuda"
    eval_on = t.eval_steps > 0
    report = [r for r in t.report_to if (r != "wandb" or _wandb_ready()) and (r != "trackio" or trackio_available())]
    kwargs = dict(
        output_dir=str(output_dir or cfg.runs_dir),
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if eval_on else "no",
        eval_steps=t.eval_steps if eval_on else None,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        **precision_flags(device),
        optim=t.optim,
        max_grad_norm=t.max_grad_norm,
        report_to=report or "none",
        gradient_checkpointing=gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        seed=t.seed,
        remove_unused_columns=False,
        label_names=["labels"],
        use_cpu=not on_gpu,
        dataloader_pin_memory=on_gpu,
        save_only_model=False,
        disable_tqdm=False,
        include_num_input_tokens_seen="non_padding",  # tokens/s of a run (summed over processes under DDP)
    )
    if "trackio" in report:
        kwargs.update(trackio_arguments(t.tracking_project, run_label(kwargs["output_dir"])))
    if dist_info().distributed:
        # every LoRA parameter is used in each forward: no search for unused ones (DDP)
        kwargs["ddp_find_unused_parameters"] = False
    if t.early_stopping_patience and eval_on:
        kwargs.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _wandb_ready() -> bool:
    return wandb_mode() != "disabled"


def trackio_arguments(project: str, run_name: str) -> dict:
    """TrainingArguments for trackio: the project and run name, logged locally only -- no Space on
    the Hub now or after training (older transformers 5 releases lack some of these fields)."""
    wanted = {"project": project, "run_name": run_name, "trackio_space_id": None, "trackio_static_space_id": False}
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    return {k: v for k, v in wanted.items() if k in known}


@dataclass
class TrainResult:
    steps: int
    seconds: float
    final_loss: float | None
    train_loss: float | None
    eval_loss: float | None
    run_dir: str
    adapter_dir: str
    log_history: list = field(default_factory=list)
    diagnoses: list = field(default_factory=list)
    truncated: int = 0
    trainable_params: int = 0
    total_params: int = 0
    gradient_checkpointing: bool = False
    resumed_from: str | None = None
    peak_gib: float | None = None  # CUDA: peak allocated GPU memory during training
    plan_gib: float | None = None  # the fast path's estimate for the same run (None off the fast path)
    tokens_seen: int = 0  # training tokens (no padding) this session, all processes together
    tokens_per_s: float | None = None  # tokens_seen over the training time without the evaluations
    outside_torch_gib: float | None = None  # CUDA: this process's GPU memory (NVML) beyond PyTorch's, after training

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("log_history")
        return d


def last_checkpoint(run_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(run_dir)) if Path(run_dir).is_dir() else None


class CompletionOnlyTrainer(Trainer):
    """Trainer whose loss computes logits only at answer positions (see loss.completion_loss).

    Normalization mirrors Trainer.compute_loss: divide by the token count of the whole accumulation
    group (num_items_in_batch) and rescale for averaging across processes.
    """

    loss_fn = staticmethod(completion_loss)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, out = self.loss_fn(model, inputs, num_items_in_batch)
        if (self.args.average_tokens_across_devices and self.model_accepts_loss_kwargs
                and num_items_in_batch is not None):
            loss = loss * (self.accelerator.num_processes // self.get_tp_size()
                           if self.args.n_gpu <= 1 else self.args.n_gpu)
        return (loss, out) if return_outputs else loss


class FastPathTrainer(CompletionOnlyTrainer):
    """The fast path's trainer: padding-free batches, Liger's fused loss when applied, the vocabulary
    weights in CPU memory while training when the plan says so (fastpath/), and no waiting for the GPU
    between steps (nowait.py: the token count from the collator, each step's log written one step later)."""

    loss_fn = staticmethod(fast_completion_loss)
    fast_plan = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.deferred_log = DeferredLog()

    def _track_num_input_tokens(self, inputs):
        n = inputs.get(TOKEN_COUNT)
        if n is None or self.args.include_num_input_tokens_seen != "non_padding" or self.args.world_size > 1:
            return super()._track_num_input_tokens(inputs)
        self.state.num_input_tokens_seen += n  # counted by the collator on the CPU: no wait for the GPU

    def _maybe_log_save_evaluate(self, tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval, start_time,
                                 learning_rate=None):
        should_log = self.control.should_log
        self.deferred_log.flush(self, start_time)  # the step before: the GPU finished it while this one was queued
        self.control.should_log = should_log  # (the flushed log's on_log resets it)
        if DeferredLog.can_defer(self):
            self.deferred_log.take(self, tr_loss, grad_norm, learning_rate)
        return super()._maybe_log_save_evaluate(tr_loss, grad_norm, model, trial, epoch, ignore_keys_for_eval,
                                                start_time, learning_rate=learning_rate)

    def log(self, logs, start_time=None):
        self.deferred_log.flush(self, start_time)  # whatever is logged next comes after the step taken before it
        return super().log(logs, start_time)

    def train(self, *args, **kwargs):
        if self.fast_plan is not None and self.fast_plan.offload_vocab:
            with VocabOffload(self.model):
                return super().train(*args, **kwargs)
        return super().train(*args, **kwargs)


@dataclass
class TrainerSetup:
    """What `assemble_trainer` decided, for the printout and the result."""

    gradient_checkpointing: bool
    gradient_checkpointing_reason: str
    trainable_params: int
    total_params: int
    diagnoses: DiagnosisLog
    fast_plan: FastPlan
    liger_kernels: list
    truncated: int = 0


def fast_plan_for(model, train_ds, cfg: WorkshopConfig, device: DeviceChoice, budget_gib: float | None = None):
    """The fast path's plan (fastpath.plan_fast_path) for this model and tokenized training set
    (the token statistics are only computed when the fast path is on)."""

    off = fast_path_off_reason(cfg, device)
    if off:
        return FastPlan(False, reasons={"fast_path": off})
    mean, p90, comp = sequence_token_stats(train_ds)
    return plan_fast_path(cfg, device, Shape.from_config(base_model(model).config), mean, p90, comp, budget_gib)


def build_trainer(model, tokenizer, splits: dict[str, list[dict]], cfg: WorkshopConfig,
                  device: DeviceChoice | None = None, callbacks: list | None = None,
                  diagnoses: DiagnosisLog | None = None, **arg_overrides):
    """LoRA (if not applied yet), tokenized datasets and a Trainer with the troubleshooting callbacks.

    Returns (trainer, peft_model, TrainerSetup).
    """
    train_ds, n_trunc = tokenize_dataset(tokenizer, splits["train"], cfg.model.max_seq_length)
    eval_ds = None
    if splits.get("validation") and cfg.train.eval_steps > 0:
        val = splits["validation"][:cfg.train.eval_max_examples or None]
        eval_ds, m = tokenize_dataset(tokenizer, val, cfg.model.max_seq_length)
        n_trunc += m
    trainer, model, setup = assemble_trainer(model, tokenizer, train_ds, eval_ds, cfg, device, callbacks,
                                             diagnoses, **arg_overrides)
    setup.truncated = n_trunc
    return trainer, model, setup


def assemble_trainer(model, tokenizer, train_ds, eval_ds, cfg: WorkshopConfig, device: DeviceChoice | None = None,
                     callbacks: list | None = None, diagnoses: DiagnosisLog | None = None, plan=None,
                     **arg_overrides):
    """The Trainer for already tokenized datasets: the fast path on CUDA (see fastpath/), the plain
    path otherwise. `plan` forces a fastpath.FastPlan (benchmarks); by default it is planned here."""

    assert_trainable_4bit(model)
    device = device or choose_device(cfg.model.compute_dtype)
    plan = plan or fast_plan_for(model, train_ds, cfg, device)
    kernels: list[str] = []
    if plan.enabled:
        model, kernels = prepare_fast_model(model, plan, cfg.lora, device.dtype, seed=cfg.train.seed)
        gc, gc_reason = plan.checkpoint_layers > 0, plan.reasons.get("checkpointing", "")
        collator = (FlatteningCollator(tokenizer.pad_token_id, plan.pad_to_multiple_of,
                                       seq_lens=plan.attention in SEQUENCE_BOUNDARY_ATTENTIONS) if plan.padding_free
                    else CompletionCollator(tokenizer.pad_token_id))
        # checkpointing is already set per layer; the Trainer would switch it on for all layers
        arg_overrides = {"per_device_train_batch_size": plan.micro_batch,
                         "gradient_accumulation_steps": plan.grad_accum,
                         **({"optim": plan.optim} if plan.optim else {}),
                         # the filter checks every micro-batch's loss for NaN on the CPU (a wait for the GPU each
                         # time); unfiltered, a NaN reaches the log, where NaNLossCallback reports it
                         "logging_nan_inf_filter": False,
                         # the batch's copy to the GPU from pinned memory without waiting (nowait.py)
                         **({"accelerator_config": {"non_blocking": True}} if device.device == "cuda" else {}),
                         **arg_overrides,
                         "gradient_checkpointing": False}
        trainer_cls = FastPathTrainer
    else:
        gc, gc_reason = use_gradient_checkpointing(cfg, device)
        if not hasattr(model, "peft_config"):
            model = apply_lora(model, cfg.lora, gradient_checkpointing=gc, seed=cfg.train.seed)
        elif gc:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        collator = CompletionCollator(tokenizer.pad_token_id)
        arg_overrides = {"gradient_checkpointing": gc, **arg_overrides}
        trainer_cls = CompletionOnlyTrainer if cfg.train.completion_only_logits else Trainer
    if dist_info().fsdp:
        fsdp_uniform_dtype(model, device.dtype)
    diagnoses = diagnoses if diagnoses is not None else DiagnosisLog()
    cbs = [NaNLossCallback(diagnoses), FlatLossCallback(diagnoses), OverfitCallback(diagnoses)]
    if cfg.train.early_stopping_patience and eval_ds is not None:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience,
                                         early_stopping_threshold=cfg.train.early_stopping_threshold))
    cbs += callbacks or []
    args = training_arguments(cfg, device, **arg_overrides)
    one_gpu_per_process(args)  # before the Trainer: it sizes its batches from n_gpu when it is built
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=collator, processing_class=tokenizer, callbacks=cbs)
    if plan.enabled:
        trainer.fast_plan = plan
    trainable, total = trainable_parameters(model)
    return trainer, model, TrainerSetup(gc, gc_reason, trainable, total, diagnoses, plan, kernels)


def one_gpu_per_process(args) -> None:
    """Train on the one GPU the model was loaded on. With several GPUs visible and no launcher, HF Trainer sets
    n_gpu to the device count, scales the loss by it, multiplies the micro-batch by it (and wraps models that are
    not 4-bit in DataParallel): on 2 x H200 every fast-path recipe logged twice the loss of the same step on one GPU
    (24.70 vs 12.36) and, while this ran after the Trainer was built, still trained micro-batches of 8 where the plan
    said 4 (8.62 GiB against a 7.41 GiB plan, twice the tokens per step). Call it on the arguments before building
    the Trainer. Several GPUs are for DDP/FSDP under `accelerate launch` (one process per GPU, appendix A1)."""
    _ = args.device  # TrainingArguments counts the GPUs on first use; set after that
    if not dist_info().launched and args._n_gpu > 1:
        args._n_gpu = 1


def choose_run(cfg: WorkshopConfig, identity: RunIdentity, resume: bool | str = "auto", name: str | None = None,
               overwrite: bool = False, verbose: bool = True) -> tuple[Path, str | None]:
    """The run folder to train into and the checkpoint to resume from (None = from the start).

    `resume`: "auto" continues the newest unfinished run of the same identity (same model, data and
    settings) when there is one, else starts a new run and says why older ones were not continued;
    True requires such a run; False always starts a new run; a checkpoint path continues exactly there,
    after checking that it was trained on the same data and settings (a completed run is not changed:
    the continuation goes into a new run folder).
    """
    if isinstance(resume, (str, os.PathLike)) and str(resume) not in ("auto", "true", "false"):
        ckpt = Path(resume)
        if not (ckpt / "trainer_state.json").is_file():
            raise WorkshopError(f"체크포인트가 아닙니다 (no trainer_state.json): {ckpt}")
        recorded = checkpoint_identity(ckpt)
        if recorded is None or recorded.get("fingerprint") != identity.fingerprint:
            diff = identity.differences(recorded or {}) if recorded else ["식별 정보 없음 (workshop_run.json)"]
            raise WorkshopError(f"체크포인트 {ckpt}는 다른 데이터/설정으로 학습한 것이라 이어서 학습할 수 없습니다: "
                                + ", ".join(diff[:4]))
        run_dir = ckpt.parent
        if (run_dir / "adapter" / "adapter_config.json").is_file():  # a finished run stays as it is
            run_dir = new_run(cfg, identity, name, overwrite)
            if verbose:
                print(f"[train] 끝난 실행 {ckpt.parent.name}은 그대로 두고 새 실행 폴더에서 이어 갑니다: {run_dir.name}")
        return run_dir, str(ckpt)
    if resume in ("auto", True, "true"):
        run, why = resumable_run(cfg, identity)
        if run is not None and (name is None or run.name == name):
            return run.path, str(run.checkpoints()[-1])
        if resume in (True, "true"):
            raise WorkshopError(f"이어서 학습할 실행이 없습니다 (no unfinished run with these settings in "
                                f"{runs_root(cfg)})" + (f": {'; '.join(why)}" if why else ""))
        if why and verbose:
            print("[train] 끝나지 않은 이전 실행이 있지만 데이터/설정이 달라 이어서 학습하지 않습니다 (resume skipped): "
                  + "; ".join(why))
    return new_run(cfg, identity, name, overwrite), None


def tracking_lines(cfg: WorkshopConfig, args) -> list[str]:
    """trackio's local dashboard command when it logs this run, or why it was left out."""
    lines = []
    if "trackio" in args.report_to:
        project = getattr(args, "project", cfg.train.tracking_project)
        lines.append(f"[tracking] trackio 로컬 대시보드: {trackio_dashboard_command(project)} "
                     f"(기록 위치 {trackio_dir()}, Hub로 보내지 않음)")
    elif "trackio" in cfg.train.report_to:
        lines.append(f"[tracking] trackio가 설치되어 있지 않아 뺐습니다: {TRACKIO_INSTALL}")
    return lines


def train(model, tokenizer, splits: dict[str, list[dict]], cfg: WorkshopConfig, resume: bool | str = "auto",
          callbacks: list | None = None, verbose: bool = True, run_name: str | None = None,
          overwrite: bool = False, **arg_overrides) -> tuple[object, TrainResult]:
    """Train LoRA adapters on the RAFT train split into a run folder of its own; returns (peft_model, TrainResult).

    The run folder: see `choose_run` (`resume`) and train/runs.py. Ctrl-C (or a notebook's interrupt) stops
    after the current step with a checkpoint and says how to continue; a second Ctrl-C stops at once.
    """
    identity = run_identity(cfg, model_name(model), splits)
    root = runs_root(cfg)
    with main_process_first():  # rank 0 picks (and creates) the run folder, the other ranks follow it
        if is_main_process():
            run_dir, ckpt = choose_run(cfg, identity, resume, run_name, overwrite, verbose)
            if dist_info().distributed:
                (root / f".launch-{identity.fingerprint}").write_text(f"{run_dir.name}\n{ckpt or ''}\n")
        else:
            name, ckpt_text = (root / f".launch-{identity.fingerprint}").read_text().split("\n")[:2]
            run_dir, ckpt = root / name, ckpt_text or None
    interrupt = GracefulInterrupt()
    trainer, model, setup = build_trainer(model, tokenizer, splits, cfg, callbacks=[
        RunIdentityCallback(identity), interrupt, *(callbacks or [])], output_dir=str(run_dir), **arg_overrides)
    verbose = verbose and trainer.is_world_process_zero()
    if verbose:
        print(f"[train] 실행 폴더 (run): {run_dir}")
        print(f"[train] 학습 파라미터 {setup.trainable_params:,} / 전체 {setup.total_params:,} "
              f"({100 * setup.trainable_params / max(setup.total_params, 1):.3f}%)")
        for line in setup.fast_plan.lines():
            print(line)
        if not setup.fast_plan.enabled:
            print(f"[train] gradient checkpointing={setup.gradient_checkpointing}: "
                  f"{setup.gradient_checkpointing_reason}")
        if setup.truncated:
            print(f"[train] max_seq_length={cfg.model.max_seq_length}을 넘어 문맥 중간을 자른 예제: {setup.truncated}개")
        if ckpt:
            print(f"[train] 체크포인트에서 이어서 학습 (resume): {ckpt}")
        for line in tracking_lines(cfg, trainer.args):
            print(line)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        with interrupt.installed(), dequantized_4bit_weights(model):  # CPU: each 4-bit weight dequantized once
            out = trainer.train(resume_from_checkpoint=ckpt)
    except torch.OutOfMemoryError as err:
        mem = process_memory(torch.cuda.current_device())
        raise RuntimeError(oom_message(err, cfg.train.per_device_train_batch_size,
                                       cfg.train.gradient_accumulation_steps, setup.gradient_checkpointing,
                                       mem.line() if mem else "")) from err
    except KeyboardInterrupt:
        if verbose:
            print(interrupt.message(run_dir, trainer.state.global_step))
        raise
    seconds = time.perf_counter() - t0
    if interrupt.requested:
        if verbose:
            print(interrupt.message(run_dir, trainer.state.global_step))
        raise KeyboardInterrupt
    adapter_dir = run_dir / "adapter"
    if trainer.is_fsdp_enabled:  # gather the sharded adapter into one file (peft's FSDP recipe)
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(adapter_dir))  # every rank takes part (FSDP gathers); only rank 0 writes
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen - getattr(trainer, "_initial_num_input_tokens_seen", 0))
    first = int(Path(ckpt).name.rsplit("-", 1)[-1]) if ckpt and Path(ckpt).name[-1:].isdigit() else 0
    train_seconds = seconds - sum(h.get("eval_runtime", 0.0) for h in history if h.get("step", 0) > first)
    result = TrainResult(
        steps=trainer.state.global_step, seconds=round(seconds, 1),
        final_loss=losses[-1] if losses else None, train_loss=out.training_loss if out else None,
        eval_loss=evals[-1] if evals else None, run_dir=str(run_dir), adapter_dir=str(adapter_dir),
        log_history=history, diagnoses=[d.message() for d in setup.diagnoses.items],
        truncated=setup.truncated, trainable_params=setup.trainable_params, total_params=setup.total_params,
        gradient_checkpointing=setup.gradient_checkpointing, resumed_from=ckpt,
        peak_gib=round(torch.cuda.max_memory_allocated() / GIB, 2) if torch.cuda.is_available() else None,
        plan_gib=setup.fast_plan.estimate_gib, tokens_seen=tokens,
        tokens_per_s=round(tokens / train_seconds, 1) if tokens and train_seconds > 0 else None)
    mem = process_memory(torch.cuda.current_device()) if torch.cuda.is_available() else None
    if mem is not None and mem.outside_gib is not None:
        result.outside_torch_gib = round(mem.outside_gib, 2)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(adapter_dir))
        (run_dir / "train_summary.json").write_text(json.dumps(result.summary(), ensure_ascii=False, indent=1))
        mark_latest(run_dir)
    if result.final_loss is not None and not math.isfinite(result.final_loss) and verbose:
        print("[train] loss가 유한하지 않습니다: 위의 진단을 보세요")
    return model, result


def loss_history(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Training/validation loss per step, read from the TensorBoard event files of a run (falls back
    to trainer_state.json of the last checkpoint)."""
    run_dir = Path(run_dir)
    events = sorted(run_dir.glob("runs/**/events.out.tfevents.*"))
    out: dict[str, list[tuple[int, float]]] = {"train": [], "eval": []}
    if events:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for ev in events:
            acc = EventAccumulator(str(ev))
            acc.Reload()
            tags = acc.Tags().get("scalars", [])
            for tag, key in (("train/loss", "train"), ("eval/loss", "eval")):
                if tag in tags:
                    out[key] += [(s.step, s.value) for s in acc.Scalars(tag)]
        for k in out:
            out[k] = sorted(dict(out[k]).items())
        if out["train"]:
            return out
    state = run_dir / "train_summary.json"
    ckpt = last_checkpoint(run_dir)
    path = Path(ckpt) / "trainer_state.json" if ckpt else None
    if path and path.exists():
        hist = json.loads(path.read_text())["log_history"]
        out["train"] = [(h["step"], h["loss"]) for h in hist if "loss" in h]
        out["eval"] = [(h["step"], h["eval_loss"]) for h in hist if "eval_loss" in h]
    elif not state.exists():
        raise FileNotFoundError(f"{run_dir}에 학습 로그가 없습니다 (no TensorBoard events or checkpoints)")
    return out


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
