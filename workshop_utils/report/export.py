"""Take the model home: merge a LoRA adapter into its 16-bit base and write one GGUF file that
llama.cpp and Ollama run, with the tokenizer and the chat template inside, plus an Ollama Modelfile.

Written with the `gguf` package alone: no llama.cpp build, nothing downloaded. What llama.cpp's own
converter (convert_hf_to_gguf.py) does that matters here, and this module does the same:
- The architecture name is llama.cpp's: "llama" for Llama-family models (SmolLM2, the offline model)
  and "exaone" for EXAONE-3.x. transformers 5 builds EXAONE with the Llama classes, but llama.cpp
  keeps EXAONE as its own architecture.
- RoPE layout. transformers rotates the two halves of each attention head together (NeoX style).
  llama.cpp's "llama" rotates adjacent pairs, so the converter reorders the rows of q_proj/k_proj
  for it (`permute_qk`); transformers' GGUF loader undoes exactly that when it reads the file back.
  llama.cpp's "exaone" already uses the NeoX style, so EXAONE's weights are written as they are.
- Tied embeddings (SmolLM2) write no `output.weight`: llama.cpp then reuses `token_embd` for the
  output layer. Untied models (EXAONE) write both.
- 1-D tensors (norms, biases) stay F32. 2-D weights become F16, or Q8_0 (blocks of 32 weights
  that share one fp16 scale: 34 bytes per 32 weights, about 8.5 bits per weight).
Tensors are converted and written one at a time, so the only memory on top of the merged model is
one tensor's converted copy.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch

from ..config import OFFLINE_MODEL_ID
from ..model.sources import offline_model_dir
from ..runtime.device import system_ram_gib
from ..runtime.errors import WorkshopError
from .publish import merge_memory_gib, merged_model

GIB = 1024 ** 3
MIB = 1024 ** 2
T = gguf.MODEL_TENSOR
Q = gguf.GGMLQuantizationType


class ExportError(WorkshopError):
    """An export that cannot go ahead; the message says what and where, in Korean."""


class AdapterError(ExportError):
    """The adapter folder is missing or is not a LoRA adapter."""


@dataclass(frozen=True)
class GgufArch:
    """How one transformers model type is written for llama.cpp."""
    name: str             # llama.cpp's architecture name (general.architecture)
    arch: gguf.MODEL_ARCH
    permute_qk: bool      # reorder q/k rows for llama.cpp's interleaved (GPT-J style) RoPE
    default_pre: str      # pre-tokenizer name when the tokenizer's hash is not in the table below


ARCHS = {
    "llama": GgufArch("llama", gguf.MODEL_ARCH.LLAMA, permute_qk=True, default_pre="default"),
    "exaone": GgufArch("exaone", gguf.MODEL_ARCH.EXAONE, permute_qk=False, default_pre="exaone"),
}

# quant name -> (tensor type of the 2-D weights, llama.cpp's file type, bytes per weight)
QUANTS = {
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16, 2.0),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0, 34 / 32),
}

_TOP_LEVEL = {"model.embed_tokens": T.TOKEN_EMBD, "model.norm": T.OUTPUT_NORM, "lm_head": T.OUTPUT}
_IN_LAYER = {
    "input_layernorm": T.ATTN_NORM,
    "self_attn.q_proj": T.ATTN_Q,
    "self_attn.k_proj": T.ATTN_K,
    "self_attn.v_proj": T.ATTN_V,
    "self_attn.o_proj": T.ATTN_OUT,
    "post_attention_layernorm": T.FFN_NORM,
    "mlp.gate_proj": T.FFN_GATE,
    "mlp.up_proj": T.FFN_UP,
    "mlp.down_proj": T.FFN_DOWN,
}
_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_TOP_RE = re.compile(r"(.+)\.(weight|bias)$")

# llama.cpp names a byte-level BPE tokenizer's pre-tokenizer ("tokenizer.ggml.pre") by hashing how
# the tokenizer splits this probe text (convert_hf_to_gguf.py, get_vocab_base_pre). The probe text
# and the hashes of the tokenizers this workshop uses must match llama.cpp's exactly.
PRE_TOKENIZER_PROBE = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) "
    "✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 "
    "?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? "
    "I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"
)
KNOWN_PRE_TOKENIZERS = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM/SmolLM2
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",  # EXAONE-3.0-7.8B
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Llama 3
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
}


# --- tensors ---------------------------------------------------------------------------------------
def permute_qk(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Reorder the rows of each head from transformers' RoPE layout (first half, second half) to
    llama.cpp's "llama" layout (pairs): row i of the first half goes to 2i, of the second to 2i+1."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


@dataclass
class TensorPlan:
    hf_name: str
    name: str                  # GGUF tensor name
    shape: tuple[int, ...]     # transformers' (row-major) shape
    qtype: gguf.GGMLQuantizationType
    permute_heads: int | None  # heads to permute by (q: attention heads, k: key/value heads)

    @property
    def nbytes(self) -> int:
        block, size = gguf.GGML_QUANT_SIZES[self.qtype]
        return math.prod(self.shape) // block * size


def gguf_tensor_name(hf_name: str) -> tuple[str, gguf.MODEL_TENSOR] | None:
    """'model.layers.3.self_attn.q_proj.weight' -> ('blk.3.attn_q.weight', ATTN_Q); None if unknown."""
    m = _LAYER_RE.match(hf_name)
    if m and m.group(2) in _IN_LAYER:
        kind = _IN_LAYER[m.group(2)]
        return f"{gguf.TENSOR_NAMES[kind].format(bid=int(m.group(1)))}.{m.group(3)}", kind
    m = _TOP_RE.match(hf_name)
    if m and m.group(1) in _TOP_LEVEL:
        kind = _TOP_LEVEL[m.group(1)]
        return f"{gguf.TENSOR_NAMES[kind]}.{m.group(2)}", kind
    return None


def is_tied(model) -> bool:
    """True when the output layer reuses the input embeddings (SmolLM2), False when it has its own (EXAONE)."""
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    same = out is not None and out.weight.data_ptr() == emb.weight.data_ptr()
    return same or bool(getattr(model.config, "tie_word_embeddings", False))


def plan_tensors(model, spec: GgufArch, quant: str) -> list[TensorPlan]:
    """Every tensor of the merged model with its GGUF name, type and permutation; refuses any
    tensor it cannot name (a silently dropped tensor would make a broken file)."""
    cfg = model.config
    wanted = QUANTS[quant][0]
    allowed = set(gguf.MODEL_TENSORS[spec.arch])
    tied = is_tied(model)
    plans = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name.startswith("lm_head."):
            continue
        named = gguf_tensor_name(hf_name)
        if named is None or named[1] not in allowed:
            raise ExportError(f"GGUF({spec.name})로 옮길 수 없는 텐서입니다: {hf_name} {tuple(tensor.shape)} "
                              "(지원: llama, exaone 구조의 표준 층)")
        name, kind = named
        shape = tuple(tensor.shape)
        if len(shape) == 1:
            qtype = Q.F32
        elif wanted == Q.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] != 0:
            qtype = Q.F16  # a row that does not split into blocks of 32 stays F16 (as llama.cpp does)
        else:
            qtype = wanted
        heads = None
        if spec.permute_qk and kind == T.ATTN_Q:
            heads = cfg.num_attention_heads
        elif spec.permute_qk and kind == T.ATTN_K:
            heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        plans.append(TensorPlan(hf_name, name, shape, qtype, heads))
    return plans


def tensor_data(tensor: torch.Tensor, plan: TensorPlan) -> np.ndarray:
    """One tensor as the bytes GGUF stores: permuted if needed, then F32, F16 or Q8_0 blocks."""
    t = tensor.detach()
    if plan.permute_heads:
        t = permute_qk(t, plan.permute_heads)
    if plan.qtype == Q.F32:
        return t.to(torch.float32).contiguous().numpy()
    if plan.qtype == Q.F16:
        return t.to(torch.float16).contiguous().numpy()
    return gguf.quants.quantize(t.to(torch.float32).contiguous().numpy(), plan.qtype)


# --- rope ------------------------------------------------------------------------------------------
def rope_settings(config) -> tuple[float, dict]:
    """(rope theta, the rope parameters) from a transformers 5 config (older configs: rope_theta/rope_scaling)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if "full_attention" in params and isinstance(params["full_attention"], dict):
        params = dict(params["full_attention"])
    theta = params.get("rope_theta", getattr(config, "rope_theta", None)) or 10000.0
    return float(theta), params


def llama3_rope_factors(theta: float, head_dim: int, params: dict) -> np.ndarray:
    """Per-frequency divisors for Llama-3-style RoPE scaling, stored as the `rope_freqs` tensor."""
    factor = params.get("factor", 8.0)
    low, high = params.get("low_freq_factor", 1.0), params.get("high_freq_factor", 4.0)
    old_ctx = params.get("original_max_position_embeddings", 8192)
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for freq in 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim):
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


# --- tokenizer -------------------------------------------------------------------------------------
def pre_tokenizer_name(tokenizer) -> str | None:
    """llama.cpp's name for how this tokenizer splits text before BPE, or None if llama.cpp's table
    (as far as this module copies it) does not know it."""
    digest = hashlib.sha256(str(tokenizer.encode(PRE_TOKENIZER_PROBE)).encode()).hexdigest()
    return KNOWN_PRE_TOKENIZERS.get(digest)


def _looks_special(token: str) -> bool:
    return (token.startswith("<|") and token.endswith("|>")) or (token.startswith("[|") and token.endswith("|]"))


@dataclass
class GgufVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    bos: int | None
    eos: int | None
    unk: int | None
    pad: int | None
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool


def gguf_vocab(tokenizer, vocab_size: int, default_pre: str = "default", verbose: bool = True) -> GgufVocab:
    """The tokenizer as llama.cpp's "gpt2" (byte-level BPE) vocabulary: tokens in id order with their
    types, the merges, the special ids and whether BOS/EOS are added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ExportError(f"빠른 토크나이저(tokenizers 기반)가 아닙니다: {type(tokenizer).__name__}")
    spec = json.loads(backend.to_str())
    pre = json.dumps(spec.get("pre_tokenizer"))
    if spec.get("model", {}).get("type") != "BPE" or "ByteLevel" not in pre:
        raise ExportError("바이트 수준 BPE(GPT-2 방식, byte-level BPE) 토크나이저만 GGUF로 옮길 수 있습니다 "
                          f"(이 토크나이저: {spec.get('model', {}).get('type')})")
    merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]
    vocab = tokenizer.get_vocab()
    if max(vocab.values()) >= vocab_size:
        raise ExportError(f"토크나이저의 토큰 수({max(vocab.values()) + 1})가 모델의 어휘 크기({vocab_size})보다 큽니다")
    by_id = {i: tok for tok, i in vocab.items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            if added[i].special or _looks_special(by_id[i]):
                tokens.append(by_id[i])
                types.append(gguf.TokenType.CONTROL)
            else:
                tokens.append(by_id[i].replace("\u2581", " "))
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
    pre_name = pre_tokenizer_name(tokenizer)
    if pre_name is None:
        pre_name = default_pre
        if verbose:
            print(f"[export] 경고: llama.cpp 표에 없는 토크나이저 사전 분할(pre-tokenizer)이라 '{pre_name}'로 적습니다. "
                  "llama.cpp의 토큰화가 transformers와 조금 다를 수 있습니다")
    probe = tokenizer("가나다")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return GgufVocab(tokens=tokens, types=[int(t) for t in types], merges=merges, pre=pre_name, bos=bos, eos=eos,
                     unk=tokenizer.unk_token_id, pad=tokenizer.pad_token_id,
                     add_bos=bos is not None and probe[:1] == [bos],
                     add_eos=eos is not None and len(probe) > 1 and probe[-1:] == [eos],
                     add_space_prefix='"add_prefix_space": true' in pre)


# --- chat template -> Ollama -----------------------------------------------------------------------
_SYS, _U1, _A1, _U2 = "QQSYSTEMQQ", "QQUSERONEQQ", "QQANSWERONEQQ", "QQUSERTWOQQ"


@dataclass
class ChatFormat:
    """The pieces of a chat template around the messages, cut out of its own renderings, so the
    same prompt can be written as an Ollama (Go) template. Exact for any conversation of user and
    assistant turns, with or without a system message."""
    no_system: str                # what starts a conversation without a system message
    system_prefix: str | None     # None: the template takes no system message
    system_suffix: str | None
    user_prefix: str
    user_suffix: str              # ends the user turn and opens the assistant's
    assistant_suffix: str         # ends the assistant turn

    def render(self, messages: list[dict], system: str | None = None) -> str:
        """The prompt the Ollama template below produces (ending with the assistant header after a user turn)."""
        out = [self.system_prefix + system + self.system_suffix if system and self.system_prefix is not None
               else self.no_system]
        for m in messages:
            if m["role"] == "user":
                out += [self.user_prefix, m["content"], self.user_suffix]
            elif m["role"] == "assistant":
                out += [m["content"], self.assistant_suffix]
        return "".join(out)

    def ollama_template(self) -> str:
        start = self.no_system
        if self.system_prefix is not None:
            start = (f"{{{{ if .System }}}}{self.system_prefix}{{{{ .System }}}}{self.system_suffix}"
                     f"{{{{ else }}}}{self.no_system}{{{{ end }}}}")
        return (f'{start}{{{{ range .Messages }}}}{{{{ if eq .Role "user" }}}}{self.user_prefix}{{{{ .Content }}}}'
                f'{self.user_suffix}{{{{ else if eq .Role "assistant" }}}}{{{{ .Content }}}}{self.assistant_suffix}'
                "{{ end }}{{ end }}")

    def end_of_turn(self, tokenizer) -> str | None:
        """The special token that ends an assistant turn (<|im_end|>, [|endofturn|])."""
        tail = self.assistant_suffix.lstrip()
        for tok in sorted(tokenizer.all_special_tokens, key=len, reverse=True):
            if tok and tail.startswith(tok):
                return tok
        return None


def chat_format(tokenizer) -> ChatFormat | None:
    """Cut the chat template into its pieces; None when it cannot be written as an Ollama template
    (then Ollama reads the Jinja template stored in the GGUF itself)."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(msgs, gen):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)

    u1, a1, u2 = ({"role": "user", "content": _U1}, {"role": "assistant", "content": _A1},
                  {"role": "user", "content": _U2})
    try:
        g1, c1, m = render([u1], True), render([u1, a1], False), render([u1, a1, u2], True)
    except Exception:  # a template may raise on purpose for shapes it does not accept
        return None
    if g1.count(_U1) != 1 or not c1.startswith(g1) or not c1[len(g1):].startswith(_A1) or not m.startswith(c1):
        return None
    head, user_suffix = g1.split(_U1)
    assistant_suffix = c1[len(g1) + len(_A1):]
    if not m.endswith(_U2 + user_suffix):
        return None
    user_prefix = m[len(c1):len(m) - len(_U2) - len(user_suffix)]
    if not head.endswith(user_prefix):
        return None
    fmt = ChatFormat(head[:len(head) - len(user_prefix)], None, None, user_prefix, user_suffix, assistant_suffix)
    try:
        s1 = render([{"role": "system", "content": _SYS}, u1], True)
        before_user = s1[:s1.index(_U1)]
        if s1.count(_SYS) == 1 and s1.endswith(_U1 + user_suffix) and before_user.endswith(user_prefix):
            fmt.system_prefix, rest = before_user.split(_SYS)
            fmt.system_suffix = rest[:len(rest) - len(user_prefix)]
    except Exception:
        pass
    checks = [([u1], None), ([u1, a1, u2], None)]
    if fmt.system_prefix is not None:
        checks += [([u1], _SYS), ([u1, a1, u2], _SYS)]
    for msgs, system in checks:
        full = ([{"role": "system", "content": system}] if system else []) + msgs
        if fmt.render(msgs, system) != render(full, True):
            return None
    pieces = [fmt.no_system, fmt.system_prefix or "", fmt.system_suffix or "", user_prefix, user_suffix,
              assistant_suffix]
    if any("{{" in p or '"""' in p for p in pieces):
        return None
    return fmt


def modelfile_text(gguf_file: str, chat: ChatFormat | None, stops: list[str], num_ctx: int) -> str:
    """An Ollama Modelfile next to the GGUF: the prompt format the model was trained with, its stop
    tokens, greedy decoding (as the workshop evaluates) and the context length."""
    lines = ["# Ollama Modelfile (workshop export): ollama create <이름> -f Modelfile",
             f"FROM ./{gguf_file}"]
    if chat is not None:
        lines.append(f'TEMPLATE """{chat.ollama_template()}"""')
    else:
        lines.append("# 채팅 템플릿을 Ollama 형식으로 옮기지 못해 GGUF 안의 tokenizer.chat_template을 씁니다")
    lines += [f'PARAMETER stop "{s}"' for s in stops if '"' not in s]
    lines += ["# 워크숍 평가와 같은 greedy 생성 (temperature 0)", "PARAMETER temperature 0",
              f"PARAMETER num_ctx {num_ctx}"]
    return "\n".join(lines) + "\n"


# --- writing ---------------------------------------------------------------------------------------
@dataclass
class GgufFile:
    path: Path
    arch: str
    quant: str
    tensors: int
    size_bytes: int
    tied: bool
    pre_tokenizer: str
    chat: ChatFormat | None
    stops: list[str]
    context_length: int


def write_gguf(model, tokenizer, path: str | Path, quant: str = "f16", name: str | None = None,
               verbose: bool = True) -> GgufFile:
    """Write a (merged, unquantized) transformers model and its tokenizer as one GGUF file.

    Written to a temporary name and renamed at the end, so a stopped export leaves no half file."""
    from tqdm.auto import tqdm

    if quant not in QUANTS:
        raise ExportError(f"알 수 없는 양자화 형식 '{quant}' (가능: {', '.join(QUANTS)})")
    cfg = model.config
    spec = ARCHS.get(cfg.model_type)
    if spec is None:
        raise ExportError(f"GGUF로 내보낼 수 없는 모델 구조입니다: {cfg.model_type} (지원: {', '.join(ARCHS)})")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ExportError(f"llama.cpp의 {spec.name} 구조는 SiLU 활성화만 씁니다 (이 모델: {cfg.hidden_act})")
    plans = plan_tensors(model, spec, quant)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    theta, rope = rope_settings(cfg)
    rope_type = rope.get("rope_type", rope.get("type", "default")) or "default"
    extra: dict[str, np.ndarray] = {}
    if rope_type == "llama3":
        extra[f"{gguf.TENSOR_NAMES[T.ROPE_FREQS]}.weight"] = llama3_rope_factors(theta, head_dim, rope)
    elif rope_type not in ("default", "linear"):
        raise ExportError(f"이 내보내기는 RoPE 스케일링 '{rope_type}'을 지원하지 않습니다 (default, linear, llama3만)")
    vocab = gguf_vocab(tokenizer, cfg.vocab_size, spec.default_pre, verbose)
    chat = chat_format(tokenizer)
    eot = chat.end_of_turn(tokenizer) if chat else None

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    w = gguf.GGUFWriter(tmp, spec.name)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name or path.stem)
    w.add_file_type(QUANTS[quant][1])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(cfg.vocab_size)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(theta)
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if rope_type == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rope["factor"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    w.add_token_merges(vocab.merges)
    for value, add in ((vocab.bos, w.add_bos_token_id), (vocab.eos, w.add_eos_token_id),
                       (vocab.unk, w.add_unk_token_id), (vocab.pad, w.add_pad_token_id)):
        if value is not None:
            add(value)
    if eot is not None and tokenizer.convert_tokens_to_ids(eot) != vocab.eos:
        w.add_eot_token_id(tokenizer.convert_tokens_to_ids(eot))
    w.add_add_bos_token(vocab.add_bos)
    w.add_add_eos_token(vocab.add_eos)
    w.add_add_space_prefix(vocab.add_space_prefix)
    if tokenizer.chat_template:
        w.add_chat_template(tokenizer.chat_template)

    for tname, arr in extra.items():
        w.add_tensor_info(tname, arr.shape, arr.dtype, arr.nbytes)
    for p in plans:
        w.add_tensor_info(p.name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype)
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for arr in extra.values():
            w.write_tensor_data(arr)
        state = model.state_dict()
        for p in tqdm(plans, desc=f"GGUF {quant}", disable=not verbose, mininterval=2):
            w.write_tensor_data(tensor_data(state[p.hf_name], p))
        w.close()
        os.replace(tmp, path)
    finally:
        w.close()
        if tmp.exists():
            tmp.unlink()
    stops = list(dict.fromkeys(s for s in (eot, tokenizer.eos_token) if s))
    return GgufFile(path, spec.name, quant, len(plans) + len(extra), path.stat().st_size, is_tied(model), vocab.pre,
                    chat, stops, cfg.max_position_embeddings)


# --- the whole export ------------------------------------------------------------------------------
def _size(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB" if n_bytes >= GIB else f"{n_bytes / MIB:.1f} MiB"


def ollama_name(adapter_dir: Path) -> str:
    """A model name Ollama accepts, from the run's configuration name
    (build/runs/<name>/<time>-<identity>/adapter -> <name>)."""
    stem = adapter_dir.parent.name if adapter_dir.name == "adapter" else adapter_dir.name
    if re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]+", stem) and adapter_dir.name == "adapter":
        stem = adapter_dir.parent.parent.name
    return re.sub(r"[^a-z0-9._-]+", "-", stem.lower()).strip("-._") or "workshop-model"


def read_adapter_config(adapter_dir: Path) -> dict:
    if not adapter_dir.is_dir():
        raise AdapterError(f"어댑터 폴더가 없습니다 (adapter dir not found): {adapter_dir}")
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.exists():
        raise AdapterError(f"어댑터가 아닙니다: {adapter_dir}에 adapter_config.json이 없습니다 (먼저 `workshop train`)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterError(f"{cfg_file}을 읽을 수 없습니다 (JSON 오류: {err})") from None
    if not any((adapter_dir / f).exists() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise AdapterError(f"어댑터 가중치가 없습니다: {adapter_dir}에 adapter_model.safetensors가 없습니다")
    if cfg.get("peft_type") != "LORA":
        raise AdapterError(f"LoRA 어댑터가 아닙니다: {cfg_file}의 peft_type={cfg.get('peft_type')}")
    return cfg


def resolve_base(name: str) -> str:
    """The path (or Hub id) to load the base from: the offline model's names map to its converted folder."""
    if name in ("offline", OFFLINE_MODEL_ID):
        return str(offline_model_dir(verbose=False))
    return name


@dataclass
class ExportPlan:
    """What an export will do and cost, known before anything large is loaded."""
    adapter_dir: Path
    base: str
    quant: str
    out_dir: Path
    gguf_path: Path
    modelfile: Path
    model_type: str
    num_params: int
    largest_tensor: int  # elements

    @property
    def merge_gib(self) -> float:
        return merge_memory_gib(self.num_params, torch.float16)

    @property
    def buffer_gib(self) -> float:
        """The largest tensor's fp32 working copy (for the q/k permutation and Q8_0 blocks)."""
        return self.largest_tensor * 4 / GIB

    @property
    def file_gib(self) -> float:
        return self.num_params * QUANTS[self.quant][2] / GIB

    def fits_in_ram(self, ram_gib: float | None = None, headroom: float = 0.8) -> bool:
        ram = system_ram_gib() if ram_gib is None else ram_gib
        return self.merge_gib + self.buffer_gib <= headroom * ram

    def command(self) -> str:
        return f"workshop export --adapter {self.adapter_dir} --format gguf --quant {self.quant}"

    def describe(self) -> str:
        scale = (f" (EXAONE-7.8B라면 RAM 약 {merge_memory_gib(7.8e9, torch.float16):.1f} GiB)"
                 if self.num_params < 1e9 else "")
        return (f"[export] 원본 {self.base} ({self.model_type}, 파라미터 {self.num_params / 1e6:,.0f}M)을 fp16으로 올려 "
                f"어댑터를 병합합니다: RAM 약 {self.merge_gib:.2f} GiB + 변환 버퍼 {self.buffer_gib:.2f} GiB, "
                f"GGUF({self.quant}) 파일 약 {_size(self.file_gib * GIB)}{scale}")


def plan_export(adapter_dir: str | Path, quant: str = "f16", out_dir: str | Path | None = None,
                base: str | None = None) -> ExportPlan:
    """Check the adapter and the base (config only, no weights) and say where the files go and
    how much memory the merge needs."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if quant not in QUANTS:
        raise ExportError(f"알 수 없는 양자화 형식 '{quant}' (가능: {', '.join(QUANTS)})")
    adapter_dir = Path(adapter_dir).expanduser()
    acfg = read_adapter_config(adapter_dir)
    base_name = base or acfg.get("base_model_name_or_path")
    if not base_name:
        raise AdapterError(f"{adapter_dir / 'adapter_config.json'}에 원본 모델(base_model_name_or_path)이 없습니다: "
                           "--base로 지정하세요")
    base_path = resolve_base(base_name)
    try:
        config = AutoConfig.from_pretrained(base_path)
    except (OSError, ValueError) as err:
        raise ExportError(f"원본 모델을 찾을 수 없습니다: {base_name} ({type(err).__name__}). "
                          "--base로 경로나 Hub ID를 지정하세요 (오프라인 모델은 --base offline)") from None
    if config.model_type not in ARCHS:
        raise ExportError(f"GGUF로 내보낼 수 없는 모델 구조입니다: {config.model_type} (지원: {', '.join(ARCHS)})")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    num_params = sum(p.numel() for p in skeleton.parameters())
    largest = max(p.numel() for p in skeleton.parameters())
    out = Path(out_dir) if out_dir else adapter_dir.parent / f"gguf-{quant}"
    name = ollama_name(adapter_dir)
    return ExportPlan(adapter_dir, base_path, quant, out, out / f"{name}-{quant}.gguf", out / "Modelfile",
                      config.model_type, num_params, largest)


@dataclass
class ExportResult:
    gguf_path: Path
    modelfile: Path
    quant: str
    arch: str
    tensors: int
    size_bytes: int
    ollama_name: str
    template_in_modelfile: bool

    @property
    def ollama_create(self) -> str:
        return f"ollama create {self.ollama_name} -f {self.modelfile}"

    def describe(self) -> str:
        return "\n".join([
            f"[export] GGUF: {self.gguf_path} ({_size(self.size_bytes)}, {self.quant}, llama.cpp 구조 "
            f"'{self.arch}', 텐서 {self.tensors}개)",
            f"[export] Ollama Modelfile: {self.modelfile}"
            + ("" if self.template_in_modelfile else " (채팅 템플릿은 GGUF 안의 것을 사용)"),
            f"[export] Ollama로 실행: {self.ollama_create} && ollama run {self.ollama_name}",
            f"[export] llama.cpp로 실행: llama-cli -m {self.gguf_path}",
        ])


def load_export_tokenizer(adapter_dir: Path, base_path: str):
    """The tokenizer saved with the adapter (training saves it there), else the base model's."""
    from transformers import AutoTokenizer

    has_own = any((adapter_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    return AutoTokenizer.from_pretrained(str(adapter_dir) if has_own else base_path)


def export_gguf(adapter_dir: str | Path, quant: str = "f16", out_dir: str | Path | None = None,
                base: str | None = None, overwrite: bool = False, verbose: bool = True) -> ExportResult:
    """Merge the adapter into its fp16 base and write <out>/<name>-<quant>.gguf plus an Ollama Modelfile.

    The merge happens in fp16: the merged weights are then exactly what an f16 file stores, at the
    RAM cost of the base in 16-bit (printed before loading). Existing files are kept unless
    `overwrite=True`."""
    plan = plan_export(adapter_dir, quant, out_dir, base)
    existing = [p for p in (plan.gguf_path, plan.modelfile) if p.exists()]
    if existing and not overwrite:
        raise ExportError(f"이미 있는 파일을 덮어쓰지 않습니다: {existing[0]} (다시 쓰려면 --overwrite)")
    if verbose:
        print(plan.describe())
    model = merged_model(plan.base, plan.adapter_dir, dtype=torch.float16, verbose=False)
    tokenizer = load_export_tokenizer(plan.adapter_dir, plan.base)
    name = ollama_name(plan.adapter_dir)
    written = write_gguf(model, tokenizer, plan.gguf_path, quant, name=name, verbose=verbose)
    del model
    num_ctx = min(written.context_length, 4096)  # room for a RAFT prompt (documents + question) and the answer
    plan.modelfile.write_text(modelfile_text(plan.gguf_path.name, written.chat, written.stops, num_ctx),
                              encoding="utf-8")
    return ExportResult(written.path, plan.modelfile, quant, written.arch, written.tensors, written.size_bytes, name,
                        written.chat is not None)
