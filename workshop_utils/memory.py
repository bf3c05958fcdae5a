"""A memory estimator for QLoRA training of a decoder (Llama/EXAONE family), in GiB.

Components: base weights (16-bit vs NF4 with/without double quantization), LoRA parameters with their
gradients and optimizer state, activations (with and without gradient checkpointing), and the logits
of the loss (the 102,400-token vocabulary of EXAONE makes these large unless the loss is fused).
These are estimates for teaching and for deciding gradient checkpointing; measured numbers come from
`workshop bench` (docs/benchmarks.md).
"""
from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass
class Shape:
    name: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_params(self) -> int:
        """Parameters in the quantized Linear layers (attention + MLP of every layer)."""
        attn = self.hidden * self.hidden * 2 + self.hidden * self.kv_dim * 2
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def total_params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_params() + self.embedding_params() + norms

    def module_dims(self) -> dict[str, tuple[int, int]]:
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    def lora_params(self, r: int, targets: list[str]) -> int:
        dims = self.module_dims()
        return self.layers * sum(r * (dims[t][0] + dims[t][1]) for t in targets if t in dims)

    @classmethod
    def from_config(cls, config, name: str = "") -> "Shape":
        return cls(name or getattr(config, "name_or_path", "model"), config.vocab_size, config.hidden_size,
                   config.intermediate_size, config.num_hidden_layers, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   bool(getattr(config, "tie_word_embeddings", False)))


EXAONE_7_8B = Shape("EXAONE-3.0-7.8B", 102400, 4096, 14336, 32, 32, 8, False)
SMOLLM2_135M = Shape("SmolLM2-135M", 49152, 576, 1536, 30, 9, 3, True)


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


def activation_bytes_per_token(s: Shape, checkpointing: bool, bytes_per_value: int = 2) -> float:
    """Saved activations per token for backward (flash/sdpa attention: no seq² term).

    Without checkpointing every layer keeps `layer_activation_bytes_per_token`. With it, only each
    layer's input is kept, plus one layer's activations while it is recomputed.
    """
    per_layer = layer_activation_bytes_per_token(s, bytes_per_value)
    if checkpointing:
        return s.layers * s.hidden * bytes_per_value + per_layer
    return s.layers * per_layer


def estimate(s: Shape, tokens_per_micro_batch: int, r: int = 16,
             targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"), quant: str = "nf4",
             double_quant: bool = True, checkpointing: bool = True, fused_loss: bool = False,
             optimizer: str = "paged_adamw_8bit", upcast_embeddings: bool = True) -> dict[str, float]:
    """GiB per component for one training step."""
    lin, emb = s.linear_params(), s.embedding_params()
    if quant == "nf4":
        weights = lin * nf4_bytes_per_param(double_quant) + emb * (4 if upcast_embeddings else 2)
    else:
        weights = (lin + emb) * 2
    lora = s.lora_params(r, list(targets))
    opt_bytes = 2 if "8bit" in optimizer else 8  # two Adam moments: 8-bit vs fp32
    lora_total = lora * (4 + 4 + opt_bytes)  # fp32 weights + grads + optimizer state
    acts = activation_bytes_per_token(s, checkpointing) * tokens_per_micro_batch
    logits = 0.0 if fused_loss else tokens_per_micro_batch * s.vocab * (2 + 4 + 4)  # bf16 + fp32 + grad
    parts = {"weights": weights, "lora+grad+optim": lora_total, "activations": acts, "logits": logits}
    out = {k: v / GIB for k, v in parts.items()}
    out["total"] = sum(out.values())
    return out


ESTIMATE_SCENARIOS = {
    "16비트 가중치 + LoRA": {"quant": "fp16", "checkpointing": False},
    "NF4 (QLoRA)": {"checkpointing": False},
    "NF4 + 체크포인팅": {"checkpointing": True},
    "NF4 + 체크포인팅 + fused loss": {"checkpointing": True, "fused_loss": True},
}
COMPONENT_NAMES = {"weights": "가중치", "lora+grad+optim": "LoRA+grad+옵티마이저", "activations": "활성화",
                   "logits": "logits", "total": "합계"}


def estimate_table(s: Shape, tokens_per_micro_batch: int, r: int = 16,
                   targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> list[dict]:
    """`estimate` for the standard scenarios (16-bit vs NF4, checkpointing, fused loss), in GiB."""
    rows = []
    for label, kw in ESTIMATE_SCENARIOS.items():
        est = estimate(s, tokens_per_micro_batch, r, tuple(targets), **kw)
        rows.append({"모델": s.name, "구성": label, "토큰/마이크로배치": tokens_per_micro_batch,
                     **{f"{COMPONENT_NAMES[k]} (GiB)": round(v, 2) for k, v in est.items()}})
    return rows


def weights_table(shapes: list[Shape]) -> list[dict]:
    """Weights in fp16 vs NF4 (with and without double quantization) and LoRA parameter counts."""
    rows = []
    for s in shapes:
        total = s.total_params()
        lin, emb = s.linear_params(), s.embedding_params()
        rows.append({
            "모델": s.name, "파라미터": f"{total / 1e9:.2f}B" if total > 1e9 else f"{total / 1e6:.0f}M",
            "fp16 가중치 (GiB)": round(total * 2 / GIB, 2),
            "NF4 (GiB)": round((lin * nf4_bytes_per_param(False) + emb * 2) / GIB, 2),
            "NF4 + double quant (GiB)": round((lin * nf4_bytes_per_param(True) + emb * 2) / GIB, 2),
            "LoRA r=16 q/k/v/o 파라미터": s.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
        })
    return rows


def fits_without_checkpointing(cfg, vram_gib: float, headroom: float = 0.85) -> tuple[bool, str]:
    """Does the estimated peak without checkpointing fit the card (with headroom)?"""
    from .config import EXAONE_MODEL_ID

    s = EXAONE_7_8B if cfg.model.model_id in ("auto", EXAONE_MODEL_ID) else None
    if s is None:
        try:
            from transformers import AutoConfig

            from .models import ModelChoice, model_path, resolve_model

            choice: ModelChoice = resolve_model(cfg.model)
            s = Shape.from_config(AutoConfig.from_pretrained(model_path(choice, verbose=False)))
        except Exception:  # noqa: BLE001 - unknown shape: be safe
            return False, "모델 크기를 알 수 없어 체크포인팅을 켬"
    tokens = cfg.train.per_device_train_batch_size * cfg.model.max_seq_length
    est = estimate(s, tokens, cfg.lora.r, tuple(cfg.lora.target_modules), checkpointing=False)
    ok = est["total"] <= vram_gib * headroom
    verdict = "들어가므로 끔 (더 빠름)" if ok else "넘치므로 켬"
    return ok, (f"체크포인팅 없이 예상 {est['total']:.1f} GiB vs GPU {vram_gib:.0f} GiB × {headroom:.0%}: {verdict}")
