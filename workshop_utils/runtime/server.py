"""One GPU server for a class (docs/server.md): models downloaded once into a shared cache, and which GPU
each person uses. Will move to runtime/ with the package layout.
"""
from __future__ import annotations

import math
from pathlib import Path

from .cachelock import cache_lock
from .hub import is_offline

# Files a model repository may carry in formats the workshop never loads (it loads safetensors).
SKIP_FILES = ["*.bin", "*.pt", "*.pth", "*.gguf", "*.h5", "*.msgpack", "*.onnx", "*.ot", "onnx/*", "openvino/*",
              "original/*"]
# One person on a shared card: the fast path's 8 GiB training budget (WORKSHOP_MEMORY_BUDGET_GIB=8), plus
# evaluation (EXAONE-7.8B in 4 bits ~5.5 GiB and a KV cache for 16 prompts of ~2,300 tokens ~4.5 GiB, not at
# the same time as training in one notebook) and the CUDA context: an estimate, not a measurement.
PER_PERSON_GIB = 12.0


def hub_cache() -> Path:
    """The Hugging Face hub cache this process uses (HF_HOME/hub unless HF_HUB_CACHE says otherwise)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def prefetch_models(repo_ids: list[str], token: str | None = None, verbose: bool = True,
                    download=None) -> dict[str, Path]:
    """Download each model into the Hub cache once (`snapshot_download` skips what is already there), under
    a cache lock so two instructors (or a re-run) never download the same model at the same time."""
    if is_offline():
        raise RuntimeError("HF_HUB_OFFLINE=1 상태에서는 모델을 받을 수 없습니다: 이 명령은 HF_HUB_OFFLINE 없이 실행하세요")
    if download is None:
        from huggingface_hub import snapshot_download as download
    out = {}
    for repo_id in repo_ids:
        entry = hub_cache() / ("models--" + repo_id.replace("/", "--"))
        if verbose:
            print(f"[prefetch] {repo_id} → {hub_cache()}")
        with cache_lock(entry, f"{repo_id} 다운로드", verbose=verbose):
            out[repo_id] = Path(download(repo_id, token=token, ignore_patterns=SKIP_FILES))
        if verbose:
            size = sum(f.stat().st_size for f in out[repo_id].rglob("*") if f.is_file()) / 1024**3
            print(f"[prefetch] {repo_id}: {size:.1f} GiB ({out[repo_id]})")
    return out


def people_per_gpu(total_gib: float, per_person_gib: float = PER_PERSON_GIB) -> int:
    """How many people one card holds at the 8 GiB training budget (an H200's 141 GiB: 11; 80 GiB: 6)."""
    return max(1, math.floor(total_gib * 0.95 / per_person_gib))


def assign_gpus(users: list[str], gpus: int, per_gpu: int) -> dict[str, int]:
    """Spread people evenly over the cards (user i -> GPU i mod gpus), at most `per_gpu` on one card."""
    users = list(dict.fromkeys(u.strip() for u in users if u.strip()))
    if gpus < 1:
        raise ValueError("GPU가 없습니다: --gpus 로 GPU 수를 지정하세요")
    if len(users) > gpus * per_gpu:
        need = math.ceil(len(users) / per_gpu)
        raise ValueError(f"{len(users)}명은 GPU {gpus}장 × {per_gpu}명에 들어가지 않습니다: GPU {need}장이 필요하거나, "
                         f"--per-gpu를 늘리고 WORKSHOP_MEMORY_BUDGET_GIB를 줄이세요")
    return {u: i % gpus for i, u in enumerate(users)}


def read_users(path: Path) -> list[str]:
    """One user name a line; blank lines and # comments ignored."""
    if not Path(path).exists():
        raise FileNotFoundError(f"사용자 목록 파일이 없습니다: {path}")
    return [line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.split("#", 1)[0].strip()]


def assignment_table(assignment: dict[str, int]) -> str:
    """user<TAB>gpu lines, read by the login profile in docs/server.md."""
    return "".join(f"{u}\t{g}\n" for u, g in assignment.items())

