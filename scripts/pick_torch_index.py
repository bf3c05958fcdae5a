"""Where `make` installs torch from on a machine without a CUDA GPU (standard library only: runs before
the virtual environment has anything in it).

Prints the pip arguments on stdout (`--index-url URL`, or nothing for pip's configured index) and one
Korean line on stderr saying what it chose and why.

  TORCH_INDEX_URL=<url>        that index, not probed (an explicit choice always wins)
  TORCH_INDEX_URL=default      pip's configured index (PyPI unless pip.conf says otherwise), not probed
  unset                        the PyTorch CPU index (TORCH_CPU_INDEX, default https://download.pytorch.org/whl/cpu)
                               when it answers within TORCH_INDEX_TIMEOUT seconds (default 5), else pip's
                               configured index
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_WORDS = ("default", "pypi", "none")


def reachable(index_url: str, timeout: float = 5.0) -> bool:
    """Does the index answer for torch (its /torch/ page) within `timeout` seconds?"""
    url = index_url.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            resp.read(512)
            return 200 <= resp.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def choose(override: str | None, cpu_index: str = CPU_INDEX, timeout: float = 5.0) -> tuple[list[str], str]:
    """(pip arguments, the Korean line that says what was chosen)."""
    override = (override or "").strip()
    if override.lower() in DEFAULT_WORDS:
        return [], "[install] torch: TORCH_INDEX_URL=default → pip 기본 인덱스(보통 PyPI)에서 설치합니다"
    if override:
        return ["--index-url", override], f"[install] torch: TORCH_INDEX_URL로 지정한 인덱스 {override}에서 설치합니다"
    if reachable(cpu_index, timeout):
        return (["--index-url", cpu_index],
                f"[install] torch: PyTorch CPU 인덱스({cpu_index})에 접속됨 → CPU 빌드를 받습니다 (CUDA 빌드 수 GB 대신 약 200 MB)")
    return [], (f"[install] torch: PyTorch CPU 인덱스({cpu_index})에 {timeout:g}초 안에 접속할 수 없어 pip 기본 인덱스"
                f"(보통 PyPI)에서 설치합니다 (Linux의 PyPI torch는 CUDA 빌드, 수 GB; 바꾸려면 TORCH_INDEX_URL)")


def main() -> int:
    try:
        timeout = float(os.environ.get("TORCH_INDEX_TIMEOUT") or 5)
    except ValueError:
        print(f"TORCH_INDEX_TIMEOUT={os.environ['TORCH_INDEX_TIMEOUT']!r}: 초 단위 숫자여야 합니다", file=sys.stderr)
        return 2
    args, line = choose(os.environ.get("TORCH_INDEX_URL"), os.environ.get("TORCH_CPU_INDEX") or CPU_INDEX, timeout)
    print(line, file=sys.stderr)
    print(" ".join(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
