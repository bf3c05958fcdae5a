"""A memory estimator for QLoRA training of a decoder (Llama/EXAONE family), in GiB.

Components: base weights (16-bit vs NF4 with/without double quantization), LoRA parameters with their
gradients and optimizer state, activations (with and without gradient checkpointing), and the logits
of the loss (the 102,400-token vocabulary of EXAONE makes these large unless the loss is fused).
`estimate` is the one estimator: 00-concepts' tables, the fast path's planner (calibrated on the GPU) and the
per-GPU figures of DDP/FSDP. Measured numbers come from `workshop bench` (docs/benchmarks.md)."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import EXAONE_MODEL_ID
from ..model.choice import ModelChoice, resolve_model
from ..model.load import model_path
from ..model.shape import EXAONE_7_8B, Shape
from ..runtime.device import GIB
from ..runtime.distributed import effective_batch


def nf4_bytes_per_param(double_quant: bool = True, blocksize: int = 64) -> float:
    """4 bits per weight + the absmax constants: fp32 per 64 weights (0.5 bit/param), or with
    double quantization 8-bit absmax + one fp32 per 256 absmax (≈0.127 bit/param) -- QLoRA §3."""
    absmax_bits = (8 / blocksize + 32 / (blocksize * 256)) if double_quant else 32 / blocksize
    return (4 + absmax_bits) / 8


def layer_activation_bytes_per_token(s: Shape, bytes_per_value: int = 2) -> float:
    """What one decoder layer keeps for backward per token without checkpointing: ~12·hidden +
    4·intermediate values (norm in/out, q/k/v, rotary outputs, attention output, MLP
    gate/up/act/product, LoRA dropout inputs)."""
    return (12 * s.hidden + 4 * s.intermediate) * bytes_per_value


# Calibration against `workshop bench` on an H200 (EXAONE-7.8B shape, docs/benchmarks.md): a layer
# without checkpointing kept 0.84x the textbook count below (Liger's SwiGLU/RMSNorm recompute cheap
# intermediates); ~0.3 GiB on top of the parts for allocator blocks, the optimizer's paged buffers and
# attention workspaces, bf16 and fp16 alike. With one process per recipe the estimates stay 0.5-1 GiB
# above the measured peaks on small budgets.
ACTIVATION_CALIBRATION = 0.84
# Decoder layers compiled by torch.compile (the fast path's compile_layers, Liger's layer kernels replaced by
# the compiler's fusions), measured on an H200 with one visible GPU and JAX's preallocation off (2026-11-30,
# docs/benchmarks.md): the EXAONE-shaped default recipe (micro-batch 16, 26 of 32 layers kept) peaked at 74.6 GiB,
# 0.67x the textbook count; the offline model (SmolLM2-135M, micro-batch 16) at 30-31.5 GiB for a plan of 41 GiB
# made with 1.1 (about 0.8x). Planned at 0.85. (The 1.1 before was fitted to runs that two bugs had inflated:
# micro-batch 8 instead of 4 with two GPUs visible, and JAX's 105 GiB.)
ACTIVATION_CALIBRATION_COMPILED = 0.85
FIXED_OVERHEAD_GIB = 0.3
# During the backward of a checkpointed layer the GPU holds its recomputed activations and the gradients being
# formed from them: 2x one layer's activations. (The 8 GiB recipe, compiled, every layer recomputed, inputs
# offloaded, micro-batch 8: 6.38 GiB measured, 7.38 planned.)
RECOMPUTE_WORKING = 2.0
# ActivationOffload (fastpath/offload.py): a checkpointed layer's input is in CPU memory except while it is being
# copied out (forward) or back (backward, one layer ahead): at most two inputs on the GPU at a time.
OFFLOAD_IN_FLIGHT = 2
FUSED_LOSS_BUFFER = 256 * 1024**2  # Liger's fused linear cross-entropy works in chunks of logits


def optimizer_state_bytes(optimizer: str) -> int:
    """Bytes per trained parameter of Adam's two moments: 8-bit optimizers 2, the others (fp32) 8."""
    return 2 if "8bit" in optimizer else 8


def checkpoint_input_bytes(s: Shape, tokens: int, bytes_per_value: int = 2) -> int:
    """What a checkpointed layer keeps for its backward: only its input (on the GPU, or in CPU memory when
    ActivationOffload moves it there)."""
    return s.hidden * bytes_per_value * tokens


def vocab_gib(shape: Shape, bytes_per_value: int = 2) -> float:
    """GiB of the input embedding and lm_head in 16 bits (one table if tied)."""
    return shape.vocab * shape.hidden * bytes_per_value * (1 if shape.tied_embeddings else 2) / GIB


def estimate(s: Shape, tokens: int, r: int = 16, targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
             quant: str = "nf4", double_quant: bool = True, checkpoint_layers: int = 0, fused_loss: bool = False,
             logit_tokens: int | None = None, upcast_embeddings: bool = True, offload_vocab: bool = False,
             optimizer: str = "paged_adamw_8bit", gpus: int = 1, strategy: str = "ddp",
             bytes_per_value: int = 2, compiled: bool = False, offload_activations: bool = False,
             fp8_backward: bool = False) -> dict[str, float]:
    """Estimated peak GiB of one training step, per component and "total" (the one estimator: the notebooks'
    tables, the fast path's planner and the per-GPU figures of DDP/FSDP all use it).

    `tokens`: tokens in one micro-batch; `checkpoint_layers`: how many layers recompute their activations
    (0 = none, s.layers = all); `logit_tokens`: positions whose logits are built when the loss is not fused
    (default all `tokens`; completion-only: the answer tokens); `upcast_embeddings`: peft's fp32 copy of the
    embedding and lm_head; `offload_vocab`: both tables in CPU memory (the lm_head visits the GPU at the end of
    each forward); `gpus`/`strategy`: per GPU under DDP (a full copy each) or FSDP (weights and LoRA state
    sharded, one layer gathered at a time); `compiled`: decoder layers through torch.compile (more activations
    kept than Liger's eager kernels, ACTIVATION_CALIBRATION_COMPILED); `offload_activations`: the checkpointed
    layers' inputs wait in CPU memory (ActivationOffload: two in flight on the GPU); `fp8_backward`: an FP8 copy
    of every quantized weight for the backward's input gradients (fastpath/fp8.py).
    """
    lin, emb = s.linear_params(), s.embedding_params()
    if quant == "nf4":
        weights = lin * nf4_bytes_per_param(double_quant) + emb * (4 if upcast_embeddings else bytes_per_value)
    else:
        weights = (lin + emb) * bytes_per_value
    lora = s.lora_params(r, list(targets)) * (4 + 4 + optimizer_state_bytes(optimizer))  # fp32 weights, grads, state
    full = (layer_activation_bytes_per_token(s, bytes_per_value) * tokens
            * (ACTIVATION_CALIBRATION_COMPILED if compiled else ACTIVATION_CALIBRATION))
    kept = checkpoint_input_bytes(s, tokens, bytes_per_value)
    ck = min(max(checkpoint_layers, 0), s.layers)
    kept_layers = min(ck, OFFLOAD_IN_FLIGHT) if offload_activations else ck
    parts = {"weights": weights, "lora+grad+optim": lora, "activations": (s.layers - ck) * full + kept_layers * kept,
             # backward holds one layer's activation gradients; a checkpointed layer also its recomputation
             "working": full * (RECOMPUTE_WORKING if ck else 1),
             "logits": FUSED_LOSS_BUFFER if fused_loss else
             (tokens if logit_tokens is None else logit_tokens) * s.vocab * (2 + 4 + 4)}  # bf16 + fp32 + grad
    if fp8_backward:
        parts["fp8 weights"] = fp8_copy_bytes(s)
    if offload_vocab:
        parts["weights"] -= vocab_gib(s, bytes_per_value) * GIB
        parts["lm_head (forward end)"] = max(0.0, s.vocab * s.hidden * bytes_per_value - parts["working"])
    if strategy not in ("ddp", "fsdp"):
        raise ValueError(f"strategy={strategy!r}: ddp | fsdp")
    if strategy == "fsdp" and gpus > 1:
        layer = lin / s.layers * nf4_bytes_per_param(double_quant)
        parts["weights"] = parts["weights"] / gpus + 2 * layer  # own shard + the gathered layer (and prefetch)
        parts["lora+grad+optim"] /= gpus
    out = {k: v / GIB for k, v in parts.items()}
    out["overhead"] = FIXED_OVERHEAD_GIB
    out["total"] = sum(out.values())
    return out


def fp8_copy_bytes(s: Shape) -> int:
    """The FP8 copies of the quantized weights (fastpath/fp8.py): one byte per weight, one fp32 scale per input
    feature (EXAONE-7.8B: 6.5 GiB)."""
    return s.linear_params() + 4 * s.layers * sum(k for k, _ in s.module_dims().values())


def scaling_table(s: Shape, gpus: list[int], per_device: int = 4, accumulation: int = 4,
                  tokens_per_micro_batch: int = 4096) -> list[dict]:
    """Rows for the notebook/README: effective batch and estimated GiB per GPU for DDP and FSDP."""
    rows = []
    for n in gpus:
        eff, _ = effective_batch(per_device, accumulation, n)
        ddp, fsdp = (estimate(s, tokens_per_micro_batch, checkpoint_layers=s.layers, fused_loss=True,
                              upcast_embeddings=False, gpus=n, strategy=k)["total"] for k in ("ddp", "fsdp"))
        rows.append({"GPU 수": n, "유효 배치": eff, "DDP GiB/GPU (추정)": round(ddp, 1),
                     "FSDP-QLoRA GiB/GPU (추정)": round(fsdp, 1)})
    return rows


def fits_without_checkpointing(cfg, vram_gib: float, headroom: float = 0.85) -> tuple[bool, str]:
    """Does the estimated peak without checkpointing fit the card (with headroom)?"""

    s = EXAONE_7_8B if cfg.model.model_id in ("auto", EXAONE_MODEL_ID) else None
    if s is None:
        try:
            from transformers import AutoConfig

            choice: ModelChoice = resolve_model(cfg.model)
            s = Shape.from_config(AutoConfig.from_pretrained(model_path(choice, verbose=False)))
        except Exception:  # noqa: BLE001 - unknown shape: be safe
            return False, "모델 크기를 알 수 없어 체크포인팅을 켬"
    tokens = cfg.train.per_device_train_batch_size * cfg.model.max_seq_length
    est = estimate(s, tokens, cfg.lora.r, tuple(cfg.lora.target_modules))
    ok = est["total"] <= vram_gib * headroom
    verdict = "들어가므로 끔 (더 빠름)" if ok else "넘치므로 켬"
    return ok, (f"체크포인팅 없이 예상 {est['total']:.1f} GiB vs GPU {vram_gib:.0f} GiB × {headroom:.0%}: {verdict}")


@dataclass
class MemoryCheck:
    """A run's measured peak GPU memory against its plan (the notebook's GPU check)."""

    peak_gib: float | None
    plan_gib: float | None
    tolerance: float = 0.10
    outside_gib: float | None = None  # the process's GPU memory beyond PyTorch's (NVML), not in the plan

    @property
    def ok(self) -> bool:
        """Within the plan + tolerance; nothing to compare (CPU, plain path) counts as ok."""
        return self.peak_gib is None or self.plan_gib is None or self.peak_gib <= self.plan_gib * (1 + self.tolerance)

    def line(self) -> str:
        if self.peak_gib is None:
            return "GPU 메모리 점검: CUDA가 아니라 해당 없음 (CPU 실행)"
        if self.plan_gib is None:
            return f"GPU 최대 메모리 {self.peak_gib:.2f} GiB (고속 경로가 꺼져 비교할 계획 없음)"
        verdict = "계획 안" if self.ok else f"계획 + {self.tolerance:.0%} 초과"
        outside = ("" if self.outside_gib is None else
                   f"; PyTorch 밖 메모리 {self.outside_gib:.2f} GiB (CUDA 컨텍스트·작업 공간, 계획에 없음)")
        return (f"GPU 최대 메모리 {self.peak_gib:.2f} GiB / 계획(추정) {self.plan_gib:.2f} GiB "
                f"({self.peak_gib / self.plan_gib:.0%}): {verdict}{outside}")


def frozen_weight_gib(model) -> dict[str, float]:
    """GiB of the frozen weights that are not 4-bit (embeddings, lm_head, norms), by dtype: peft's
    prepare_model_for_kbit_training upcasts them to float32 (EXAONE-7.8B: ~1.6 GiB more); the fast path casts
    them back to the compute dtype. Notebook 03 shows which one a run trained with."""
    sizes: dict[str, float] = {}
    for p in model.parameters():
        if not p.requires_grad and p.__class__.__name__ != "Params4bit":
            name = str(p.dtype).removeprefix("torch.")
            sizes[name] = sizes.get(name, 0.0) + p.numel() * p.element_size() / 1024**3
    return {k: round(v, 3) for k, v in sorted(sizes.items())}


def memory_check(result, tolerance: float = 0.10) -> MemoryCheck:
    """The check for a TrainResult (peak_gib, plan_gib, outside_torch_gib)."""
    return MemoryCheck(result.peak_gib, result.plan_gib, tolerance, result.outside_torch_gib)
