"""Where a model comes from when it is not on the Hub: the offline SmolLM2 (a GGUF converted once into the
cache) and EXAONE-shaped checkpoints with random weights (for the GPU benchmarks, no download)."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
from pathlib import Path

import torch

from ..config import default_cache_dir
from ..runtime.cachelock import cache_lock, shared_tmpdir
from ..runtime.device import has_cuda
from ..runtime.packages import find_offline_gguf
from ..runtime.paths import cache_dir

# EXAONE 3.0/3.5 chat template (from the model's tokenizer_config.json). The real EXAONE tokenizer
# ships it; we keep a copy to render EXAONE-format prompts for config-built models and tests.
EXAONE_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '[|system|][|endofturn|]\n' }}{% endif %}{{ '[|' + message['role'] + '|]' + message['content'] }}"
    "{% if message['role'] == 'user' %}{{ '\n' }}{% else %}{{ '[|endofturn|]\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)


EXAONE_SPECIAL_TOKENS = ["[|system|]", "[|user|]", "[|assistant|]", "[|endofturn|]"]


# EXAONE-3.0-7.8B (transformers' ExaoneConfig defaults): 32 layers, hidden 4096, 32/8 heads,
# intermediate 14336, vocab 102400.
EXAONE_SHAPE = {"layers": 32, "hidden": 4096, "intermediate": 14336, "heads": 32, "kv_heads": 8,
                "vocab": 102400}


def _cache(cache: str | None) -> Path:
    """The model cache: the setting model.cache_dir when given, else WORKSHOP_CACHE, else the default."""
    return cache_dir(cache or default_cache_dir())


def offline_model_dir(verbose: bool = True, cache: str | None = None) -> Path:
    """The converted offline model (safetensors + tokenizer), converting the GGUF once if needed."""
    gguf = find_offline_gguf()
    out = _cache(cache) / f"smollm2-135m-instruct-{gguf.stat().st_size}"

    def converted() -> bool:
        return (out / "config.json").exists() and (out / "model.safetensors").exists()

    if converted():
        return out
    with cache_lock(out, "오프라인 모델 변환", verbose=verbose):
        if converted():  # another process converted it while this one waited
            return out
        return _convert_gguf(gguf, out, verbose)


def _convert_gguf(gguf: Path, out: Path, verbose: bool) -> Path:
    if verbose:
        print(f"[model] GGUF를 safetensors로 한 번 변환합니다 (약 30초): {gguf.name} -> {out}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    with gguf_parsed_once():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gm = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model keeps a GGUF quantization_config and cannot be saved as is: copy its
    # (dequantized) weights into a fresh model built from the same config.
    config = gm.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(gm.state_dict(), strict=True)
    fresh.generation_config.pad_token_id = tok.pad_token_id
    tmp = shared_tmpdir(out.parent, ".convert-")
    try:
        fresh.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        cfg = json.loads((tmp / "config.json").read_text())
        cfg.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"[model] 변환 완료 ({time.perf_counter() - t0:.0f}s)")
    return out


@contextlib.contextmanager
def gguf_parsed_once():
    """Within the block, each GGUF file is parsed once and gguf's tensor-name map built once per architecture.

    transformers builds a tokenizer, a config and the weights from a GGUF in separate calls, each of which parses
    the whole file with gguf's GGUFReader (the offline model's 49,152 tokens and merges: ~5 s on the 2-core CI
    machine), and while mapping the weights it rebuilds gguf's TensorNameMap for every one of the model's ~300
    submodules (~9 s). Both are read-only once built, so here the same reader (per file) and name map (per
    architecture and layer count) serve every call: the offline model's conversion 35 s -> 23 s, the same files.
    Without the gguf package nothing changes (transformers then says what is missing)."""
    try:
        import gguf
    except ImportError:
        yield
        return
    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict = {}

    def reader(path, mode="r"):
        st = os.stat(path)  # a file rewritten inside the block (same path) is parsed again
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, mode)
        if key not in readers:
            readers[key] = real_reader(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.lru_cache(maxsize=None)(real_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = real_reader, real_name_map


# --- config-built (random-weight) models -------------------------------------------------------------
def parse_random_spec(spec: str) -> dict:
    """'random:exaone:layers=2,hidden=1024' -> EXAONE shape with overrides."""
    parts = spec.split(":", 2)
    if len(parts) < 2 or parts[1] != "exaone":
        raise ValueError(f"알 수 없는 random 모델 '{spec}': 'random:exaone[:layers=N,...]' 형식")
    shape = dict(EXAONE_SHAPE)
    if len(parts) == 3 and parts[2]:
        for kv in parts[2].split(","):
            k, v = kv.split("=")
            if k not in shape:
                raise ValueError(f"'{spec}': 알 수 없는 항목 '{k}' (가능: {sorted(shape)})")
            shape[k] = int(v)
    return shape


def exaone_config(shape: dict | None = None, **kw):
    """An ExaoneConfig (transformers maps model_type 'exaone' to the Llama implementation)."""
    from transformers import ExaoneConfig

    s = dict(EXAONE_SHAPE, **(shape or {}))
    return ExaoneConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                        num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                        num_key_value_heads=s["kv_heads"], max_position_embeddings=4096, **kw)


def random_model_dir(spec: str, tokenizer_dir: str | Path | None = None, verbose: bool = True,
                     cache: str | None = None) -> Path:
    """Save a random-weight EXAONE-shaped checkpoint (bf16) once, so it loads like any checkpoint.

    The tokenizer comes from `tokenizer_dir` (model.tokenizer, WORKSHOP_TOKENIZER) or the offline model; EXAONE's
    special tokens and chat template are added so prompts look like EXAONE's.
    """
    shape = parse_random_spec(spec)
    tag = "-".join(f"{k}{v}" for k, v in sorted(shape.items()))
    out = _cache(cache) / f"random-exaone-{tag}"
    if (out / "config.json").exists():
        return out
    with cache_lock(out, "무작위 가중치 모델 생성", verbose=verbose):
        if (out / "config.json").exists():
            return out
        return _save_random_model(shape, out, tokenizer_dir, verbose, cache)


def _save_random_model(shape: dict, out: Path, tokenizer_dir, verbose: bool, cache: str | None) -> Path:
    from transformers import AutoModelForCausalLM

    tok = exaone_like_tokenizer(load_tokenizer_from(tokenizer_dir or offline_model_dir(verbose, cache)))
    if len(tok) > shape["vocab"]:
        raise ValueError(f"tokenizer has {len(tok)} tokens > vocab {shape['vocab']}")
    config = exaone_config(shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)
    if verbose:
        print(f"[model] 무작위 가중치 EXAONE 구조 모델 생성: {shape}")
    torch.manual_seed(0)
    with torch.device("cuda" if has_cuda() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = shared_tmpdir(out.parent, ".random-")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    del model
    tmp.rename(out)
    return out


def load_tokenizer_from(path: str | Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def exaone_like_tokenizer(tok):
    """Give a tokenizer EXAONE's chat format: its special tokens and template; EOS = [|endofturn|]."""
    tok.add_special_tokens({"additional_special_tokens": EXAONE_SPECIAL_TOKENS})
    tok.chat_template = EXAONE_CHAT_TEMPLATE
    tok.eos_token = "[|endofturn|]"
    return tok
