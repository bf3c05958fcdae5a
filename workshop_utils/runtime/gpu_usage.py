"""Who else is using this GPU: memory held by other processes, for `workshop check` on a shared server.

NVML (the `nvidia-ml-py` package, module `pynvml`) names the processes and their memory; without it,
torch.cuda.mem_get_info still gives the card's free memory (everything not free and not held by this
process's caching allocator is counted as "others"). Will move to runtime/ with the package layout.
"""
from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path

GIB = 1024**3


@dataclass
class GpuProcess:
    pid: int
    used_gib: float | None  # None: the driver does not say (some containers, MIG)
    name: str = "?"
    user: str = "?"


@dataclass
class GpuMemory:
    device: int  # the index as this process sees it (after CUDA_VISIBLE_DEVICES)
    name: str
    total_gib: float
    free_gib: float
    mine_gib: float  # held by this process
    others_gib: float  # held by other processes
    source: str  # "nvml" | "torch"
    others: list[GpuProcess] = field(default_factory=list)

    def line(self) -> str:
        who = ", ".join(f"pid {p.pid} {p.user} {p.name} {p.used_gib:.1f} GiB" if p.used_gib is not None
                        else f"pid {p.pid} {p.user} {p.name}" for p in self.others[:4])
        more = f" 외 {len(self.others) - 4}개" if len(self.others) > 4 else ""
        return (f"GPU {self.device} ({self.name}) 전체 {self.total_gib:.1f} GiB, 여유 {self.free_gib:.1f} GiB, "
                f"다른 프로세스 {self.others_gib:.1f} GiB" + (f" ({who}{more})" if who else ""))


def _proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() or "?"
    except OSError:
        return "?"  # another PID namespace (a container) or gone


def _proc_user(pid: int) -> str:
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
    except (OSError, KeyError):
        return "?"


def _physical(device: int) -> str:
    """The CUDA_VISIBLE_DEVICES entry behind a visible index ('2', 'GPU-<uuid>', or str(device))."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[device] if device < len(visible) else str(device)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def query_nvml(device: int = 0, nvml=None) -> GpuMemory | None:
    """Memory and compute processes of one GPU through NVML; None when NVML is missing or fails."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no NVML: the caller falls back to torch
        return None
    try:
        which = _physical(device)
        handle = (nvml.nvmlDeviceGetHandleByUUID(which) if which.startswith(("GPU-", "MIG-"))
                  else nvml.nvmlDeviceGetHandleByIndex(int(which)))
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
        name = _text(nvml.nvmlDeviceGetName(handle))
    except Exception:  # noqa: BLE001 - MIG handles, old drivers: fall back to torch
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass
    me = os.getpid()

    def used(p) -> float | None:
        return None if getattr(p, "usedGpuMemory", None) is None else p.usedGpuMemory / GIB

    mine = sum(used(p) or 0.0 for p in procs if p.pid == me)
    others = [GpuProcess(p.pid, used(p), _proc_name(p.pid), _proc_user(p.pid)) for p in procs if p.pid != me]
    # The driver's "used" also counts what NVML cannot list (processes in other containers): never report less.
    others_gib = max(sum(p.used_gib or 0.0 for p in others), mem.used / GIB - mine)
    return GpuMemory(device, name, mem.total / GIB, mem.free / GIB, mine, others_gib, "nvml", others)


def query_torch(device: int = 0, cuda=None) -> GpuMemory | None:
    """Free/total from the driver via torch; others = total - free - this process's reserved memory."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return None
    free, total = cuda.mem_get_info(device)
    mine = cuda.memory_reserved(device)
    return GpuMemory(device, cuda.get_device_name(device), total / GIB, free / GIB, mine / GIB,
                     max(0.0, (total - free - mine) / GIB), "torch")


def gpu_memory(device: int = 0, nvml=None, cuda=None) -> GpuMemory | None:
    """NVML when available (names the processes), else torch; None without a CUDA GPU."""
    return query_nvml(device, nvml) or query_torch(device, cuda)


@dataclass
class ProcessMemory:
    """This process's GPU memory: what NVML says it holds next to what PyTorch's allocator holds. The rest
    ("outside") is the CUDA context, library workspaces and the driver's local-memory reservation for kernels
    with large stack frames; a large outside share means the plan (which counts PyTorch tensors) cannot see it."""

    torch_allocated_gib: float
    torch_reserved_gib: float
    process_gib: float | None  # None: NVML missing or it does not list this process (containers, MIG)
    free_gib: float
    total_gib: float

    @property
    def outside_gib(self) -> float | None:
        return None if self.process_gib is None else max(0.0, self.process_gib - self.torch_reserved_gib)

    def line(self) -> str:
        head = (f"GPU 메모리: PyTorch 할당 {self.torch_allocated_gib:.1f} GiB, 예약 {self.torch_reserved_gib:.1f} GiB, "
                f"카드 여유 {self.free_gib:.1f} / {self.total_gib:.1f} GiB")
        if self.process_gib is None:
            return head + " (NVML이 이 프로세스를 보여 주지 않아 PyTorch 밖 메모리는 알 수 없음)"
        return head + (f", 이 프로세스 전체(NVML) {self.process_gib:.1f} GiB = PyTorch 밖 "
                       f"{self.outside_gib:.1f} GiB (CUDA 컨텍스트, 라이브러리 작업 공간, 커널 로컬 메모리)")


def process_memory(device: int = 0, nvml=None, cuda=None) -> ProcessMemory | None:
    """This process's GPU memory on `device` (None without CUDA). For OOM messages and the memory check."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return None
    free, total = cuda.mem_get_info(device)
    via_nvml = query_nvml(device, nvml)
    mine = via_nvml.mine_gib if via_nvml is not None and via_nvml.mine_gib > 0 else None
    return ProcessMemory(cuda.memory_allocated(device) / GIB, cuda.memory_reserved(device) / GIB, mine,
                         free / GIB, total / GIB)


def fits(memory: GpuMemory, planned_gib: float, headroom_gib: float = 0.5) -> tuple[bool, str]:
    """Does a training plan of `planned_gib` fit what is free now? (ok, Korean remedy when not)."""
    ok = planned_gib + headroom_gib <= memory.free_gib
    if ok:
        return True, ""
    return False, (f"학습 계획 {planned_gib:.1f} GiB가 지금 여유 {memory.free_gib:.1f} GiB보다 큽니다 (다른 프로세스가 "
                   f"{memory.others_gib:.1f} GiB 사용 중). WORKSHOP_MEMORY_BUDGET_GIB=8 처럼 예산을 줄이거나 "
                   f"CUDA_VISIBLE_DEVICES로 덜 붐비는 GPU를 고르세요 (docs/server.md)")
