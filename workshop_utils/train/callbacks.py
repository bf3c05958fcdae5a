"""The seed's troubleshooting table, live: detectors that notice the symptom and say the remedy.

| 문제 | 원인 | 해결 방법 |   -- each row is a detector here, used as a Trainer callback or a check.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

TABLE = [
    ("CUDA out of memory", "GPU 메모리 부족",
     "batch_size 줄이기, gradient_accumulation_steps 늘리기, gradient checkpointing 켜기, 16GB 모드"),
    ("Loss가 NaN으로 발산", "learning_rate가 너무 높음", "learning_rate를 1/10로 줄이기, gradient clipping 적용"),
    ("학습이 멈춤 (loss 변화 없음)", "learning_rate가 너무 낮음", "learning_rate 2~5배 증가, warmup_steps 추가"),
    ("Validation loss만 증가", "과적합 발생", "epochs 줄이기, lora_dropout 증가, 데이터 증강, early stopping"),
    ("모델 로드 실패", "Hugging Face 토큰 문제", "hf auth login 재실행, 토큰 권한 확인"),
    ("평가 지표가 너무 낮음", "데이터 품질 문제", "데이터 전처리 재확인, 샘플 수동 검토"),
]


@dataclass
class Diagnosis:
    symptom: str
    detail: str
    remedy: str

    def message(self) -> str:
        return f"[진단] {self.symptom}: {self.detail}\n       해결: {self.remedy}"


@dataclass
class DiagnosisLog:
    items: list[Diagnosis] = field(default_factory=list)

    def add(self, d: Diagnosis, verbose: bool = True) -> None:
        if any(x.symptom == d.symptom for x in self.items):
            return
        self.items.append(d)
        if verbose:
            print(d.message())


class NaNLossCallback(TrainerCallback):
    """Stops training when the loss becomes NaN/inf and says to lower the learning rate."""

    def __init__(self, log: DiagnosisLog):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is not None and (math.isnan(loss) or math.isinf(loss)):
            self.log.add(Diagnosis(TABLE[1][0], f"step {state.global_step}에서 loss={loss} (learning_rate={args.learning_rate})",
                                   f"learning_rate를 {args.learning_rate / 10:g}로 (1/10) 낮추고 max_grad_norm(클리핑)을 "
                                   f"{args.max_grad_norm or 1.0:g} 이하로 두세요"))
            control.should_training_stop = True


def detect_flat(losses: list[float], min_points: int = 6, rel_tol: float = 0.02) -> str | None:
    """Flat loss: the mean of the last third differs from the first third by < rel_tol."""
    if len(losses) < min_points:
        return None
    k = len(losses) // 3
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if first > 0 and abs(first - last) / first < rel_tol:
        return f"loss {first:.4f} → {last:.4f} ({len(losses)}회 기록, 변화 {abs(first - last) / first:.1%})"
    return None


class FlatLossCallback(TrainerCallback):
    def __init__(self, log: DiagnosisLog, min_points: int = 6):
        self.log = log
        self.losses: list[float] = []
        self.min_points = min_points

    def on_log(self, args, state, control, logs=None, **kw):
        loss = (logs or {}).get("loss")
        if loss is None or math.isnan(loss):
            return
        self.losses.append(loss)
        detail = detect_flat(self.losses, self.min_points)
        if detail:
            self.log.add(Diagnosis(TABLE[2][0], detail,
                                   f"learning_rate를 {args.learning_rate * 3:g} 정도로 (2~5배) 올리고 warmup_steps를 추가하세요"))


def detect_overfit(eval_losses: list[float], train_losses: list[float], patience: int = 2) -> str | None:
    """Validation loss rose `patience` times in a row while the training loss kept falling."""
    if len(eval_losses) < patience + 1:
        return None
    tail = eval_losses[-(patience + 1):]
    rising = all(b > a for a, b in zip(tail, tail[1:]))
    falling = len(train_losses) >= 2 and train_losses[-1] < train_losses[0]
    if rising and falling:
        return f"검증 loss {tail[0]:.4f} → {tail[-1]:.4f} (연속 {patience}회 증가), 학습 loss는 감소 중"
    return None


class OverfitCallback(TrainerCallback):
    def __init__(self, log: DiagnosisLog, patience: int = 2):
        self.log = log
        self.patience = patience
        self.eval_losses: list[float] = []
        self.train_losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.train_losses.append(logs["loss"])

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if metrics and "eval_loss" in metrics:
            self.eval_losses.append(metrics["eval_loss"])
            detail = detect_overfit(self.eval_losses, self.train_losses, self.patience)
            if detail:
                self.log.add(Diagnosis(TABLE[3][0], detail,
                                       "epochs를 줄이거나 lora_dropout을 0.1로 올리고, early_stopping_patience를 켜세요"))


def oom_message(err: BaseException, per_device_batch: int, grad_accum: int, checkpointing: bool,
                memory_line: str = "") -> str:
    tips = [f"per_device_train_batch_size {per_device_batch} → {max(1, per_device_batch // 2)}",
            f"gradient_accumulation_steps {grad_accum} → {grad_accum * 2} (실제 배치 크기 유지)"]
    if not checkpointing:
        tips.append("gradient checkpointing 켜기 (train.gradient_checkpointing='on')")
    tips.append("16GB 모드: WORKSHOP_GPU_MODE=16gb (fp16, 체크포인팅, fused loss)")
    tips.append("max_seq_length 줄이기 (02 노트북의 p95 길이 참고)")
    # torch's first line names the card, what is free, this process's total and PyTorch's share: keep it whole
    first = str(err).splitlines()[0].split(" See documentation")[0].split(" If reserved but unallocated")[0]
    where = f"\n       {memory_line}" if memory_line else ""
    return f"[진단] {TABLE[0][0]}: {first}{where}\n       해결: " + "; ".join(tips)


def check_metrics_plausible(metrics: dict, floor_rouge_l: float = 0.05) -> Diagnosis | None:
    """Implausibly low scores usually mean a data problem (wrong references, empty answers)."""
    rl = metrics.get("rougeL")
    if rl is not None and rl < floor_rouge_l:
        return Diagnosis(TABLE[5][0], f"ROUGE-L {rl:.3f} < {floor_rouge_l}",
                         "참조 답변과 예측 샘플을 직접 확인하세요 (빈 답변, 잘린 답변, 다른 언어, 잘못된 정렬)")
    return None


class RunIdentityCallback(TrainerCallback):
    """Writes the run's identity (model, data, settings) into every checkpoint (`workshop_run.json`), so a
    checkpoint resumed later is checked against what it was trained on."""

    def __init__(self, identity):
        self.identity = identity

    def on_save(self, args, state, control, **kw):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / "workshop_run.json").write_text(
                    json.dumps({"identity": self.identity.to_dict()}, ensure_ascii=False, indent=1, default=str),
                    encoding="utf-8")


class GracefulInterrupt(TrainerCallback):
    """Ctrl-C (SIGINT, also a notebook's interrupt button) stops training after the current step with a
    checkpoint, so nothing since the last save is lost; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.requested:
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            self.requested = True
            print("\n[train] 중단 요청 (Ctrl-C): 이번 스텝을 마치고 체크포인트를 저장한 뒤 멈춥니다 "
                  "(한 번 더 누르면 바로 멈춤)", flush=True)

        signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def on_step_end(self, args, state, control, **kw):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True

    @staticmethod
    def message(run_dir, step: int) -> str:
        ckpts = sorted(Path(run_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        last = f"{ckpts[-1].name}" if ckpts else "없음 (처음부터 다시 학습)"
        return (f"[train] 학습을 멈췄습니다 (step {step}, interrupted). 마지막 체크포인트: {last} ({run_dir}). "
                "같은 설정으로 이어서 학습: workshop train --resume auto (노트북: train(..., resume=\"auto\"))")
