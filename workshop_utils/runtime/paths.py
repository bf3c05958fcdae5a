"""Where things are: the project root (data/, build/) and the model cache."""
from __future__ import annotations

import os
from pathlib import Path


def _is_checkout(p: Path) -> bool:
    """A workshop checkout (or a Colab bundle's copy): data/ beside the pyproject.toml of workshop-utils."""
    try:
        return (p / "data").is_dir() and 'name = "workshop-utils"' in (p / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return False


def project_root() -> Path:
    """The workshop checkout: the first parent of the cwd that is one (notebooks run from main-practice/,
    the Colab set-up changes into the bundle's copy), else the parent of this package (an editable install)."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if _is_checkout(p):
            return p
    return Path(__file__).resolve().parents[2]


def resolve(path: str | os.PathLike) -> Path:
    """A path relative to the project root (absolute paths are returned unchanged)."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def cache_dir(base: str | os.PathLike | None = None) -> Path:
    """The model cache (converted offline model, random-weight checkpoints): `base` (the setting
    model.cache_dir, from WORKSHOP_CACHE) or ~/.cache/qlora-raft-workshop; created if missing."""
    p = Path(base).expanduser() if base else Path.home() / ".cache" / "qlora-raft-workshop"
    p.mkdir(parents=True, exist_ok=True)
    return p


def shared_checkout(root: Path | None = None) -> bool:
    """True when the project checkout belongs to someone else or is read-only (one checkout for a class on
    a GPU server): its build/ and experiments/ would be shared by everyone, so each person writes under
    their home instead."""
    root = root or project_root()
    try:
        return root.stat().st_uid != os.getuid() or not os.access(root, os.W_OK)
    except (OSError, AttributeError):  # AttributeError: no getuid (Windows)
        return False


def personal_dir() -> Path:
    """Per-person outputs when the checkout is shared: ~/qlora-raft-workshop (never collides: a home each)."""
    return Path.home() / "qlora-raft-workshop"


def experiments_dir() -> Path:
    """Where experiment logs go: <project>/experiments, or ~/qlora-raft-workshop/experiments in a shared checkout."""
    root = project_root()
    return personal_dir() / "experiments" if shared_checkout(root) else root / "experiments"
