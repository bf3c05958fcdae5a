"""4-bit loading through one code path (the seed's BitsAndBytesConfig, compute dtype from the device)."""
from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelSettings
from ..runtime.device import DeviceChoice, choose_device
from ..runtime.distributed import dist_info
from ..runtime.hub import hf_token, hub_reachable, is_offline
from .attention import VARLEN_ATTENTION, register_varlen_attention
from .attention_kernels import EFFICIENT_VARLEN_ATTENTION, register_efficient_varlen_attention
from .choice import ModelChoice, resolve_model
from .cpu4bit import _linear4bit_modules, disable_cpu_4bit_repacking
from .sources import offline_model_dir, random_model_dir


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


def model_path(choice: ModelChoice, verbose: bool = True, settings: ModelSettings | None = None) -> str:
    """Where the chosen model loads from: the converted offline model or random checkpoint in the cache
    (settings.cache_dir, settings.tokenizer when given), else the Hub id or local path."""
    cache = settings.cache_dir if settings else None
    if choice.source == "offline":
        return str(offline_model_dir(verbose, cache))
    if choice.source == "random":
        return str(random_model_dir(choice.model_id, (settings.tokenizer if settings else None) or None,
                                    verbose, cache))
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
    path = model_path(choice, verbose, settings)
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
        if device.device == "cpu":
            model = _from_pretrained_cpu(path, kwargs)
        else:
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


# --- CPU: a model that is loaded again is copied, not quantized again ------------------------------------------
# On the CPU most of a load is bitsandbytes quantizing every weight to NF4 (the offline model: ~4 s of a ~4.5 s load
# on the 2-core CI machine); a deep copy of the same freshly loaded model takes ~0.3 s and is the same model (every
# tensor bit-identical, tied weights still tied, nothing shared with the copy: tests/test_cpu4bit_cache.py). A
# notebook or test process that loads the same checkpoint several times (notebook 05: three trainings) keeps one
# untouched copy per checkpoint and settings (LOAD_MEMO_MAX, least recently used dropped; models over
# LOAD_MEMO_MAX_BYTES are not kept). Only 4-bit loads of local
# checkpoints (the offline model, random-weight models, a local folder), keyed by their weight files' sizes and
# times; an unquantized load (only a read) and a GPU load are never memoized.
LOAD_MEMO_MAX = 2
# a bigger model is not kept: the copy would double its memory (EXAONE-7.8B in 4 bits on a CPU: ~5 GiB more)
LOAD_MEMO_MAX_BYTES = 1 << 30
_LOAD_MEMO: "OrderedDict[tuple, object]" = OrderedDict()


def _model_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


def _memo_key(path: str, kwargs: dict) -> tuple | None:
    folder = Path(path)
    if not folder.is_dir() or "quantization_config" not in kwargs:  # an unquantized load is only a read
        return None
    files = tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in folder.iterdir()
                         if f.suffix in (".safetensors", ".bin", ".json")))
    settings = tuple(sorted((k, v.to_json_string() if hasattr(v, "to_json_string") else repr(v))
                            for k, v in kwargs.items()))
    return str(folder.resolve()), files, settings


def _from_pretrained_cpu(path: str, kwargs: dict):
    """AutoModelForCausalLM.from_pretrained(path, **kwargs), or a deep copy of the model that call gave before."""
    from transformers import AutoModelForCausalLM

    key = _memo_key(path, kwargs)
    if key is not None and key in _LOAD_MEMO:
        _LOAD_MEMO.move_to_end(key)
        return copy.deepcopy(_LOAD_MEMO[key])
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if key is not None and _model_bytes(model) <= LOAD_MEMO_MAX_BYTES:
        _LOAD_MEMO[key] = copy.deepcopy(model)
        while len(_LOAD_MEMO) > LOAD_MEMO_MAX:
            _LOAD_MEMO.popitem(last=False)
    return model


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
    """One whole model per process, on one GPU: `local_rank` under accelerate/torchrun, else the current CUDA
    device. ('auto' on a machine with several GPUs splits the layers across them: a slow pipeline whose last
    layers sit on another GPU than the loss's indices, which failed every fast-path recipe on 2 x H200; several
    GPUs are for DDP/FSDP, appendix A1.) Without CUDA: 'auto' (the CPU)."""
    import torch

    info = dist_info()
    if info.launched:
        return {"": info.local_rank}
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else "auto"


def pick_attention(setting: str, device: DeviceChoice) -> str | None:
    """The attention implementation to load with: sdpa unless set (the fast path switches to
    `workshop_varlen` after loading when its kernel runs)."""
    if setting == "auto":
        return "sdpa"
    if setting == VARLEN_ATTENTION:
        register_varlen_attention()
    elif setting == EFFICIENT_VARLEN_ATTENTION:
        register_efficient_varlen_attention()
    return setting


def hub_failure_hint(model_id: str, err: Exception) -> str:
    """The seed's troubleshooting row '모델 로드 실패 -> 토큰 문제' as a message."""
    lines = [f"모델 로드 실패 (model load failed): {model_id}: {type(err).__name__}: {str(err)[:200]}"]
    if is_offline() or not hub_reachable():
        lines.append("- Hub에 접속할 수 없습니다: 네트워크를 확인하거나 WORKSHOP_MODEL=offline 으로 오프라인 모델을 쓰세요.")
    elif hf_token() is None:
        lines.append("- 토큰이 없습니다: `hf auth login` 또는 HF_TOKEN 환경변수를 설정하세요.")
    else:
        lines.append("- 토큰 권한/모델 라이선스 동의를 확인하고 `hf auth login`을 다시 실행하세요.")
    return "\n".join(lines)
