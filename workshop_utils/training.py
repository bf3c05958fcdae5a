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

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .config import WorkshopConfig
from .distributed import dist_info, fsdp_uniform_dtype
from .env import DeviceChoice, choose_device
from .fastpath import base_model, fast_completion_loss, fixed_checkpoint_layers
from .models import apply_lora, assert_trainable_4bit, trainable_parameters
from .prompts import IGNORE_INDEX, CompletionCollator, tokenize_dataset
from .troubleshoot import (DiagnosisLog, FlatLossCallback, NaNLossCallback, OverfitCallback, oom_message)


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
    from .memory import fits_without_checkpointing

    fits, detail = fits_without_checkpointing(cfg, device.vram_gib or 0)
    return (not fits), detail


def precision_flags(device: DeviceChoice) -> dict:
    """bf16 where the device computes it, fp16 (with loss scaling) on GPUs without bf16 such as the T4;
    the seed hard-codes bf16=True, which fails on a T4."""
    return {"bf16": device.dtype == torch.bfloat16, "fp16": device.dtype == torch.float16}


def training_arguments(cfg: WorkshopConfig, device: DeviceChoice | None = None, gradient_checkpointing: bool = False,
                       output_dir: str | Path | None = None, **overrides):
    """TrainingArguments from the config (the seed's values for size 'full')."""
    from transformers import TrainingArguments

    device = device or choose_device(cfg.model.compute_dtype)
    t = cfg.train
    on_gpu = device.device == "cuda"
    eval_on = t.eval_steps > 0
    report = [r for r in t.report_to if (r != "wandb" or _wandb_ready()) and (r != "trackio" or _trackio_ready())]
    kwargs = dict(
        output_dir=str(output_dir or cfg.run_dir),
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
    )
    if "trackio" in report:
        kwargs.update(trackio_arguments(t.tracking_project, Path(kwargs["output_dir"]).name))
    if dist_info().distributed:
        # every LoRA parameter is used in each forward: no search for unused ones (DDP)
        kwargs["ddp_find_unused_parameters"] = False
    if t.early_stopping_patience and eval_on:
        kwargs.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _wandb_ready() -> bool:
    from .tracking import wandb_mode

    return wandb_mode() != "disabled"


def _trackio_ready() -> bool:
    from .tracking import trackio_available

    return trackio_available()


def trackio_arguments(project: str, run_name: str) -> dict:
    """TrainingArguments for trackio: the project and run name, logged locally only -- no Space on
    the Hub now or after training (older transformers 5 releases lack some of these fields)."""
    from dataclasses import fields

    from transformers import TrainingArguments

    wanted = {"project": project, "run_name": run_name, "trackio_space_id": None, "trackio_static_space_id": False}
    known = {f.name for f in fields(TrainingArguments)}
    return {k: v for k, v in wanted.items() if k in known}


# The seed slide's TrainingArguments/Trainer call, row by row: (slide name, slide value, name in
# transformers 5, note). Rows whose note is not empty are corrections or device-dependent choices.
SEED_TRAINING_ARGS = [
    ("output_dir", "../exaone-qlora-finetuned", "output_dir", "build/runs/... (체크포인트·TensorBoard 로그·어댑터)"),
    ("num_train_epochs", 3, "num_train_epochs", ""),
    ("per_device_train_batch_size", 4, "per_device_train_batch_size", ""),
    ("per_device_eval_batch_size", 4, "per_device_eval_batch_size", ""),
    ("gradient_accumulation_steps", 4, "gradient_accumulation_steps", ""),
    ("learning_rate", 2e-4, "learning_rate", ""),
    ("lr_scheduler_type", "cosine", "lr_scheduler_type", ""),
    ("warmup_steps", 100, "warmup_steps", "정수=스텝 수, 0~1 실수=전체 스텝 대비 비율 (warmup_ratio는 삭제됨)"),
    ("logging_steps", 10, "logging_steps", ""),
    ("save_steps", 500, "save_steps", ""),
    ("eval_steps", 500, "eval_steps", ""),
    ("evaluation_strategy", "steps", "eval_strategy", "transformers 5에서 evaluation_strategy 삭제 → eval_strategy"),
    ("save_total_limit", 2, "save_total_limit", ""),
    ("fp16", False, "fp16", "장치에 맞게 자동: bf16 미지원 GPU(T4, Colab 무료)는 fp16 + loss scaling"),
    ("bf16", True, "bf16", "장치에 맞게 자동: bf16=True 고정은 T4에서 실패, CPU는 fp32"),
    ("optim", "paged_adamw_8bit", "optim",
     "옵티마이저 상태(Adam m·v)를 8비트로 저장 + 메모리 부족 시 CPU로 페이징. '8비트 모델용'이 아님"),
    ("report_to", "tensorboard", "report_to", "tensorboard (wandb·trackio는 설치하고 요청했을 때만 추가)"),
    ("Trainer(tokenizer=...)", "tokenizer", "Trainer(processing_class=...)",
     "transformers 5에서 Trainer의 tokenizer= 삭제 → processing_class="),
    ("(없음)", None, "max_grad_norm", "QLoRA 논문 값 0.3 (그래디언트 클리핑)"),
    ("(없음)", None, "max_steps", "-1이면 epochs로 결정; smoke/tiny 크기는 스텝 수로 제한"),
    ("(없음)", None, "gradient_checkpointing", "메모리 예산으로 자동 결정 (use_gradient_checkpointing)"),
]


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


def compare_with_seed(args, size: str = "") -> "list[dict]":
    """Rows comparing the slide's TrainingArguments with `args` (what this run really uses)."""

    def value(name: str):
        if name.startswith("Trainer("):
            return "tokenizer"
        v = getattr(args, name)
        v = getattr(v, "value", v)  # enums (eval_strategy, optim, lr_scheduler_type)
        if isinstance(v, list) and len(v) == 1:
            v = v[0]
        return v

    col = f"이 실습 ({size})" if size else "이 실습"
    return [{"슬라이드": seed, "슬라이드 값": "" if sv is None else str(sv), "transformers 5": ours,
             col: str(value(ours)), "비고": note} for seed, sv, ours, note in SEED_TRAINING_ARGS]


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

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("log_history")
        return d


def last_checkpoint(run_dir: str | Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(run_dir)) if Path(run_dir).is_dir() else None


def completion_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose logits predict a labelled token (t-1 for every t with label != -100), as the
    union over the batch: passing them as `logits_to_keep` skips the lm_head on prompt positions."""
    keep = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    return keep


def completion_loss(model, inputs: dict, num_items_in_batch=None) -> tuple[torch.Tensor, object]:
    """The same loss as HF's causal-LM loss, computing logits only where a label follows.

    Goes through the top-level forward (so DDP hooks and PEFT wrappers still run) with
    `logits_to_keep` = the completion positions; identical in value to the full computation.
    """
    labels = inputs["labels"]
    keep = completion_positions(labels)
    fwd = {k: v for k, v in inputs.items() if k != "labels"}
    out = model(**fwd, logits_to_keep=keep, use_cache=False)
    logits = out.logits.float()
    targets = labels[:, keep + 1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
    n = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(n):
        n = n.to(loss.device)
    return loss / n, out


def _make_completion_trainer():
    from transformers import Trainer

    class CompletionOnlyTrainer(Trainer):
        """Trainer whose loss computes logits only at answer positions (see completion_loss).

        Normalization mirrors Trainer.compute_loss: divide by the token count of the whole
        accumulation group (num_items_in_batch) and rescale for averaging across processes.
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
        """The fast path's trainer: padding-free batches, Liger's fused loss when applied, and the
        vocabulary weights in CPU memory while training when the plan says so (fastpath.py)."""

        loss_fn = staticmethod(fast_completion_loss)
        fast_plan = None

        def train(self, *args, **kwargs):
            from .fastpath import VocabOffload

            if self.fast_plan is not None and self.fast_plan.offload_vocab:
                with VocabOffload(self.model):
                    return super().train(*args, **kwargs)
            return super().train(*args, **kwargs)

    return CompletionOnlyTrainer, FastPathTrainer


CompletionOnlyTrainer, FastPathTrainer = _make_completion_trainer()


def fast_plan_for(model, train_ds, cfg: WorkshopConfig, device: DeviceChoice, budget_gib: float | None = None):
    """The fast path's plan (fastpath.plan_fast_path) for this model and tokenized training set
    (the token statistics are only computed when the fast path is on)."""
    from .fastpath import FastPlan, fast_path_off_reason, plan_fast_path, sequence_token_stats
    from .memory import Shape

    off = fast_path_off_reason(cfg, device)
    if off:
        return FastPlan(False, reasons={"fast_path": off})
    mean, p90, comp = sequence_token_stats(train_ds)
    return plan_fast_path(cfg, device, Shape.from_config(base_model(model).config), mean, p90, comp, budget_gib)


def build_trainer(model, tokenizer, splits: dict[str, list[dict]], cfg: WorkshopConfig,
                  device: DeviceChoice | None = None, callbacks: list | None = None,
                  diagnoses: DiagnosisLog | None = None, **arg_overrides):
    """LoRA (if not applied yet), tokenized datasets and a Trainer with the troubleshooting callbacks.

    Returns (trainer, peft_model, info dict).
    """
    train_ds, n_trunc = tokenize_dataset(tokenizer, splits["train"], cfg.model.max_seq_length)
    eval_ds = None
    if splits.get("validation") and cfg.train.eval_steps > 0:
        val = splits["validation"][:cfg.train.eval_max_examples or None]
        eval_ds, m = tokenize_dataset(tokenizer, val, cfg.model.max_seq_length)
        n_trunc += m
    trainer, model, info = assemble_trainer(model, tokenizer, train_ds, eval_ds, cfg, device, callbacks,
                                            diagnoses, **arg_overrides)
    info["truncated"] = n_trunc
    return trainer, model, info


def assemble_trainer(model, tokenizer, train_ds, eval_ds, cfg: WorkshopConfig, device: DeviceChoice | None = None,
                     callbacks: list | None = None, diagnoses: DiagnosisLog | None = None, plan=None,
                     **arg_overrides):
    """The Trainer for already tokenized datasets: the fast path on CUDA (see fastpath.py), the plain
    path otherwise. `plan` forces a fastpath.FastPlan (benchmarks); by default it is planned here."""
    from transformers import EarlyStoppingCallback, Trainer

    from .fastpath import VARLEN_ATTENTION, FlatteningCollator, prepare_fast_model

    assert_trainable_4bit(model)
    device = device or choose_device(cfg.model.compute_dtype)
    plan = plan or fast_plan_for(model, train_ds, cfg, device)
    kernels: list[str] = []
    if plan.enabled:
        model, kernels = prepare_fast_model(model, plan, cfg.lora)
        gc, gc_reason = plan.checkpoint_layers > 0, plan.reasons.get("checkpointing", "")
        collator = (FlatteningCollator(tokenizer.pad_token_id, plan.pad_to_multiple_of,
                                       seq_lens=plan.attention == VARLEN_ATTENTION) if plan.padding_free
                    else CompletionCollator(tokenizer.pad_token_id))
        # checkpointing is already set per layer; the Trainer would switch it on for all layers
        arg_overrides = {"per_device_train_batch_size": plan.micro_batch,
                         "gradient_accumulation_steps": plan.grad_accum, **arg_overrides,
                         "gradient_checkpointing": False}
        trainer_cls = FastPathTrainer
    else:
        gc, gc_reason = use_gradient_checkpointing(cfg, device)
        if not hasattr(model, "peft_config"):
            model = apply_lora(model, cfg.lora, gradient_checkpointing=gc)
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
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    cbs += callbacks or []
    args = training_arguments(cfg, device, **arg_overrides)
    trainer = trainer_cls(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=collator, processing_class=tokenizer, callbacks=cbs)
    if plan.enabled:
        trainer.fast_plan = plan
    trainable, total = trainable_parameters(model)
    info = {"gradient_checkpointing": gc, "gradient_checkpointing_reason": gc_reason, "truncated": 0,
            "trainable_params": trainable, "total_params": total, "diagnoses": diagnoses,
            "fast_plan": plan, "liger_kernels": kernels}
    return trainer, model, info


def tracking_lines(cfg: WorkshopConfig, args) -> list[str]:
    """trackio's local dashboard command when it logs this run, or why it was left out."""
    from .tracking import TRACKIO_INSTALL, trackio_dashboard_command, trackio_dir

    lines = []
    if "trackio" in args.report_to:
        project = getattr(args, "project", cfg.train.tracking_project)
        lines.append(f"[tracking] trackio 로컬 대시보드: {trackio_dashboard_command(project)} "
                     f"(기록 위치 {trackio_dir()}, Hub로 보내지 않음)")
    elif "trackio" in cfg.train.report_to:
        lines.append(f"[tracking] trackio가 설치되어 있지 않아 뺐습니다: {TRACKIO_INSTALL}")
    return lines


def train(model, tokenizer, splits: dict[str, list[dict]], cfg: WorkshopConfig, resume: bool | str = "auto",
          callbacks: list | None = None, verbose: bool = True, **arg_overrides) -> tuple[object, TrainResult]:
    """Train LoRA adapters on the RAFT train split; returns (peft_model, TrainResult).

    `resume`: "auto" resumes from the last checkpoint in the run directory when there is one,
    True requires one, False starts fresh, or a checkpoint path.
    """
    trainer, model, info = build_trainer(model, tokenizer, splits, cfg, callbacks=callbacks, **arg_overrides)
    verbose = verbose and trainer.is_world_process_zero()
    run_dir = Path(trainer.args.output_dir)
    ckpt = None
    if resume in ("auto", True):
        ckpt = last_checkpoint(run_dir)
        if resume is True and ckpt is None:
            raise FileNotFoundError(f"이어서 학습할 체크포인트가 없습니다 (no checkpoint in {run_dir})")
    elif isinstance(resume, (str, os.PathLike)):
        ckpt = str(resume)
    if verbose:
        print(f"[train] 학습 파라미터 {info['trainable_params']:,} / 전체 {info['total_params']:,} "
              f"({100 * info['trainable_params'] / max(info['total_params'], 1):.3f}%)")
        plan = info["fast_plan"]
        for line in plan.lines():
            print(line)
        if not plan.enabled:
            print(f"[train] gradient checkpointing={info['gradient_checkpointing']}: "
                  f"{info['gradient_checkpointing_reason']}")
        if info["truncated"]:
            print(f"[train] max_seq_length={cfg.model.max_seq_length}을 넘어 문맥 중간을 자른 예제: {info['truncated']}개")
        if ckpt:
            print(f"[train] 체크포인트에서 이어서 학습 (resume): {ckpt}")
        for line in tracking_lines(cfg, trainer.args):
            print(line)
    t0 = time.perf_counter()
    try:
        out = trainer.train(resume_from_checkpoint=ckpt)
    except torch.OutOfMemoryError as err:
        raise RuntimeError(oom_message(err, cfg.train.per_device_train_batch_size,
                                       cfg.train.gradient_accumulation_steps, info["gradient_checkpointing"])) from err
    seconds = time.perf_counter() - t0
    adapter_dir = run_dir / "adapter"
    if trainer.is_fsdp_enabled:  # gather the sharded adapter into one file (peft's FSDP recipe)
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(adapter_dir))  # every rank takes part (FSDP gathers); only rank 0 writes
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(adapter_dir))
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    result = TrainResult(
        steps=trainer.state.global_step, seconds=round(seconds, 1),
        final_loss=losses[-1] if losses else None, train_loss=out.training_loss if out else None,
        eval_loss=evals[-1] if evals else None, run_dir=str(run_dir), adapter_dir=str(adapter_dir),
        log_history=history, diagnoses=[d.message() for d in info["diagnoses"].items],
        truncated=info["truncated"], trainable_params=info["trainable_params"], total_params=info["total_params"],
        gradient_checkpointing=info["gradient_checkpointing"], resumed_from=ckpt)
    if trainer.is_world_process_zero():
        (run_dir / "train_summary.json").write_text(json.dumps(result.summary(), ensure_ascii=False, indent=1))
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
