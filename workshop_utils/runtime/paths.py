"""Where things are: the project root (data/, build/) and the model cache."""
from __future__ import annotations

import os
from pathlib import Path

_MARKERS = ("pyproject.toml", "data")


def project_root() -> Path:
    """The workshop checkout: the first parent of the cwd holding pyproject.toml, data/ and workshop_utils/,
    else the parent of this package (an editable install)."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if all((p / m).exists() for m in _MARKERS) and (p / "workshop_utils").is_dir():
            return p
    return Path(__file__).resolve().parents[1]


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
