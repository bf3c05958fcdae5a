"""03 fine-tuning: the slide's TrainingArguments next to transformers 5's, our labels next to the LM
collator's, the fast-path planner on typical GPUs, and the H200 measurements next to the estimates."""
from __future__ import annotations

import torch

from ..bench import BASELINE, describe_recipe, split_recipe, unsloth_counterpart
from ..config import load_config
from ..data.prompts import tokenize_example
from ..model.shape import EXAONE_7_8B, Shape
from ..runtime.device import DeviceChoice
from ..train.collators import CompletionCollator
from ..train.fastpath.fp8 import fp8_input_grad, fp8_weight
from ..train.fastpath.plan import micro_batch_tokens, plan_fast_path
from ..train.memory import estimate


def label_comparison(tokenizer, example: dict, max_length: int, edge: int = 3) -> "list[dict]":
    """Labels around the prompt/answer boundary and at the answer's end: ours vs
    DataCollatorForLanguageModeling's (`edge` positions on each side of the boundary, `edge` at the end).

    The LM collator copies input_ids into labels (the prompt is trained too) and masks every position
    whose id is the pad id; with pad_token == eos_token that includes the answer's final EOS, so the
    model never learns to stop. Ours masks the prompt and keeps the end-of-turn/EOS label.
    """
    from transformers import DataCollatorForLanguageModeling

    ex = tokenize_example(tokenizer, example, max_length)
    ours = CompletionCollator(tokenizer.pad_token_id)([ex.__dict__])["labels"][0].tolist()
    lm = DataCollatorForLanguageModeling(tokenizer, mlm=False)([{"input_ids": ex.input_ids}])["labels"][0].tolist()
    n, p = len(ex.input_ids), ex.prompt_tokens
    positions = sorted(set(range(max(0, p - edge), min(n, p + edge))) | set(range(max(0, n - edge), n)))
    return [{"위치": i, "구간": "프롬프트" if i < p else ("답변 끝" if i == n - 1 else "답변"),
             "토큰": _show_token(tokenizer, ex.input_ids[i]), "input_id": ex.input_ids[i],
             "우리 labels": ours[i], "DataCollatorForLanguageModeling labels": lm[i]} for i in positions]


def _show_token(tokenizer, token_id: int) -> str:
    """A token as text; a byte-level piece of a Hangul character (decodes to U+FFFD) is named as such."""
    text = tokenizer.decode([token_id])
    return "(한글 바이트 조각)" if "\ufffd" in text else repr(text)


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


# GPUs a participant may have: (name, GiB, bf16 support)
# (name, GiB, bf16, FP8 tensor cores: compute capability >= 8.9)
TYPICAL_GPUS = [("H200", 139.8, True, True), ("H100 80GB", 79.6, True, True), ("A100 40GB", 39.4, True, False),
                ("RTX 4090 / L4 (24GB)", 23.6, True, True), ("T4 (16GB, Colab)", 14.7, False, False)]


def plan_table(cfg, shape: Shape | None = None, mean_tokens: int = 1062, p90_tokens: int = 1420,
               completion_tokens: int = 120) -> list[dict]:
    """What the fast path would choose on typical GPUs for EXAONE-7.8B and RAFT-length sequences
    (with the GPU install: Liger kernels, Triton, the varlen flash kernel on compute capability >= 8.0
    cards and the memory-efficient varlen kernel on all)."""
    import copy

    shape = shape or EXAONE_7_8B
    full = load_config("full").train
    rows = []
    for name, vram, bf16, fp8 in TYPICAL_GPUS:
        c = copy.deepcopy(cfg)
        c.train.fast_path = "on"
        # the seed's batch (size full), whatever size this session runs
        c.train.per_device_train_batch_size = full.per_device_train_batch_size
        c.train.gradient_accumulation_steps = full.gradient_accumulation_steps
        dev = DeviceChoice("cuda", torch.bfloat16 if bf16 else torch.float16, "", name, vram)
        # as installed on a GPU machine (`make` adds liger-kernel there); flash kernels need bf16-class cards
        p = plan_fast_path(c, dev, shape, mean_tokens, p90_tokens, completion_tokens, kernels=(True, bf16, True, fp8))
        rows.append({"GPU": name, "메모리 GiB": vram, "모드": p.mode, "dtype": "bf16" if bf16 else "fp16",
                     "micro-batch x 누적": f"{p.micro_batch} x {p.grad_accum}", "체크포인팅": p.checkpointing,
                     "어텐션": p.attention, "임베딩·lm_head": "CPU" if p.offload_vocab else "GPU",
                     "층 입력(체크포인트)": "CPU" if p.offload_activations else "GPU",
                     "층 컴파일": "예" if p.compile_layers else "아니오",
                     "예산 GiB": round(p.budget_gib, 1), "예상 최대 GiB": p.estimate_gib})
    return rows


# The final run of docs/benchmarks.md (one NVIDIA H200, 2026-11-28, one process per recipe, --steps 3
# --warmup 2): shown in notebook 03 next to the estimates. (recipe, tokens/s, peak allocated GiB,
# micro-batch, accumulation, checkpointed layers of 32, dtype, vocabulary offload, attention)
MEASURED_H200 = [("hf_gc", 3347, 18.48, 4, 4, 32, "bf16", False, "sdpa"),
                 ("default", 16545, 90.47, 16, 1, 0, "bf16", False, "workshop_varlen"),
                 ("default@sdpa", 5220, 110.16, 16, 1, 0, "bf16", False, "sdpa"),
                 ("budget8", 6728, 6.64, 4, 4, 31, "bf16", True, "workshop_varlen"),
                 ("t4", 4394, 6.10, 4, 4, 32, "fp16", True, "sdpa")]


def measured_vs_estimate(mean_tokens: int = 1062, p90_tokens: int = 1420) -> list[dict]:
    """The H200 measurements next to the memory estimate of the same configuration (train.memory.estimate;
    fast-path rows only: the seed/HF recipes keep fp32 embeddings and full logits)."""

    base = next(r[1] for r in MEASURED_H200 if r[0] == BASELINE)
    rows = []
    for name, tps, peak, mb, acc, ck, dtype, offload, attention in MEASURED_H200:
        est = None
        if split_recipe(name)[0] not in ("seed", BASELINE):
            est = round(estimate(EXAONE_7_8B, micro_batch_tokens(mb, mean_tokens, p90_tokens), checkpoint_layers=ck,
                                 fused_loss=True, upcast_embeddings=False, offload_vocab=offload)["total"], 2)
        rows.append({"레시피": name, "설명": describe_recipe(name), "tokens/s": tps,
                     "HF+GC 대비": round(tps / base, 2), "측정 최대 GiB": peak, "추정 GiB": est,
                     "micro-batch x 누적": f"{mb} x {acc}", "체크포인팅 층": f"{ck}/32",
                     "임베딩·lm_head CPU": "예" if offload else "아니오", "attention": attention, "dtype": dtype})
    return rows


# The Unsloth comparison of issue 17, every row in ONE device call on a 2 x H200 machine (2026-11-30, call 15;
# docs/benchmarks.md "LoRA dropout 마스크를 해시로 — 최종 표", record docs/results/bench-unsloth-h200x2-one-call-2026-11-30.json,
# which tests/test_bench_record.py checks these numbers against): the project's recipes on GPU 0, the peer kit's Unsloth
# 2026.10.9 variants and the plain-HF baselines on GPU 1. EXAONE-7.8B shape, 16 RAFT-length sequences per optimizer
# step. (row, tokens/s, peak allocated GiB, dtype, LoRA dropout)
MEASURED_VS_UNSLOTH = [
    ("default+fp8+nodrop", 21435, 73.79, "bf16", 0.0), ("default+fp8", 20467, 93.09, "bf16", 0.05),
    ("budget8", 11876, 6.41, "bf16", 0.05), ("t4", 10741, 6.42, "fp16", 0.05),
    ("hf_lean", 5238, 14.35, "bf16", 0.05), ("hf_gc", 3080, 18.30, "bf16", 0.05),
    ("peer:uns+flat+nogc+bs16", 12538, 91.45, "bf16", 0.0), ("peer:uns+flat", 7072, 6.69, "bf16", 0.0),
    ("peer:uns+flat+fp16", 7584, 6.69, "fp16", 0.0),
]
# (mode, our recipe, which Unsloth row it is compared with: in words and as bench.unsloth_counterpart's pick, target
# ratio): issue 17's three targets, and the big card once more at the workshop's own LoRA dropout (Unsloth's fast LoRA
# path trains with dropout 0)
UNSLOTH_TARGETS = [
    ("8 GiB 모드 (16~24 GB 카드)", "budget8", "8 GiB 안에 드는 Unsloth 중 최고", "8gib", 1.3),
    ("T4 모드 (fp16)", "t4", "Unsloth fp16", "fp16", 1.2),
    ("카드 여유, LoRA 설정 같음 (dropout 0)", "default+fp8+nodrop", "Unsloth 최고 (메모리 무관)", "any", 1.5),
    ("카드 여유, 워크숍 설정 (dropout 0.05)", "default+fp8", "Unsloth 최고 (메모리 무관)", "any", 1.5),
]


def measured_vs_unsloth() -> list[dict]:
    """Each mode's recipe against the Unsloth variant its target names (picked as scripts/gpu_perf.py's summary
    picks it), from the same device call, with the plain-HF baseline (`hf_lean`: HF + checkpointing, bf16
    embeddings) beside it."""
    rows = {name: {"recipe": name, "tokens_per_s": tps, "peak_allocated_gib": peak}
            for name, tps, peak, _dtype, _dropout in MEASURED_VS_UNSLOTH}
    out = []
    for mode, ours, rule, pick, target in UNSLOTH_TARGETS:
        us, them = rows[ours], unsloth_counterpart(list(rows.values()), pick)
        ratio = us["tokens_per_s"] / them["tokens_per_s"]
        out.append({"모드": mode, "우리 레시피": ours, "tokens/s": us["tokens_per_s"], "최대 GiB": us["peak_allocated_gib"],
                    "비교 대상": f"{rule}: {them['recipe'].removeprefix('peer:')}",
                    "Unsloth tokens/s": them["tokens_per_s"], "Unsloth 최대 GiB": them["peak_allocated_gib"],
                    "Unsloth 대비": round(ratio, 2), "목표": f">= {target}", "만족": "예" if ratio >= target else "아니오",
                    "hf_lean 대비": round(us["tokens_per_s"] / rows["hf_lean"]["tokens_per_s"], 2)})
    return out


def plot_vs_unsloth():
    """tokens/s of each mode's recipe next to its Unsloth counterpart and the plain-HF baseline (same device call)."""
    import matplotlib.pyplot as plt

    from ..report import plots  # noqa: F401  (registers the Korean font)

    rows = measured_vs_unsloth()
    hf = next(r[1] for r in MEASURED_VS_UNSLOTH if r[0] == "hf_lean")
    fig, ax = plt.subplots(figsize=(10, 4.2))
    y = range(len(rows))
    ax.barh([i + 0.2 for i in y], [r["tokens/s"] for r in rows], height=0.4, color="#2b7bb9", label="이 워크숍")
    ax.barh([i - 0.2 for i in y], [r["Unsloth tokens/s"] for r in rows], height=0.4, color="#9aa5b1",
            label="Unsloth 2026.10.9")
    ax.axvline(hf, color="#d9534f", linestyle="--", label=f"HF + 체크포인팅 (hf_lean) {hf:,}")
    for i, r in enumerate(rows):
        ax.text(r["tokens/s"] + 200, i + 0.2, f"{r['tokens/s']:,}  ({r['Unsloth 대비']}x, 목표 {r['목표'][3:]}x)",
                va="center", fontsize=9)
        ax.text(r["Unsloth tokens/s"] + 200, i - 0.2, f"{r['Unsloth tokens/s']:,}", va="center", fontsize=9)
    ax.set_yticks(list(y), [f"{r['모드']}\n{r['우리 레시피']}, {r['최대 GiB']} GiB" for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["tokens/s"] for r in rows) * 1.45)
    ax.set_xlabel("tokens/s (H200, EXAONE-7.8B 모양, 한 장치 호출)")
    ax.legend(loc="upper right", fontsize=9)
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's value
    return fig


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


# FP8 input gradients (train.fp8_backward): SmolLM2-135M's layer shapes (out, in)
FP8_DEMO_SHAPES = (("q_proj", 576, 576), ("k_proj", 192, 576), ("up_proj", 1536, 576), ("down_proj", 576, 1536))


def fp8_backward_demo(tokens: int = 64, seed: int = 0) -> list[dict]:
    """What FP8 input gradients change, on the CPU in a second: for a random dy and a frozen weight W of each
    shape (out, in), the relative error of dx = dy W in bf16 and in FP8 (E4M3, row scales: fastpath/fp8.py)
    against the exact fp32 product. The forward (and so the loss) is not touched."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for name, n_out, k_in in FP8_DEMO_SHAPES:
        w = torch.randn(n_out, k_in, generator=g) * k_in ** -0.5
        dy = torch.randn(tokens, n_out, generator=g)
        exact = dy @ w
        bf16 = (dy.bfloat16() @ w.bfloat16()).float()
        fp8 = fp8_input_grad(dy.bfloat16(), *fp8_weight(w.bfloat16())).float()

        def rel(x):
            return round(float((x - exact).norm() / exact.norm()), 4)

        rows.append({"SmolLM2 층 (out x in)": f"{name} ({n_out} x {k_in})", "bf16 곱의 상대 오차": rel(bf16),
                     "FP8 곱의 상대 오차": rel(fp8), "FP8 가중치 사본 KiB": round(n_out * k_in / 2**10)})
    return rows
