"""The numbers that decide a decoder's memory: vocabulary, hidden size, layers, heads (EXAONE, SmolLM2)."""
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
