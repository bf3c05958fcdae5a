"""Where things are: the project root (data/, build/) and the model cache."""
from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("pyproject.toml", "data")


def project_root() -> Path:
    """The workshop checkout: WORKSHOP_ROOT, else the first parent of the cwd holding pyproject.toml
    and data/, else the parent of this package (editable install)."""
    if os.environ.get("WORKSHOP_ROOT"):
        return Path(os.environ["WORKSHOP_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if all((p / m).exists() for m in _MARKERS) and (p / "workshop_utils").is_dir():
            return p
    return Path(__file__).resolve().parents[1]


def resolve(path: str | os.PathLike) -> Path:
    """A path relative to the project root (absolute paths are returned unchanged)."""
    p = Path(path)
    return p if p.is_absolute() else project_root() / p


def cache_dir() -> Path:
    """Model cache (converted offline model): WORKSHOP_CACHE or ~/.cache/qlora-raft-workshop."""
    base = os.environ.get("WORKSHOP_CACHE") or Path.home() / ".cache" / "qlora-raft-workshop"
    p = Path(base)
    p.mkdir(parents=True, exist_ok=True)
    return p
