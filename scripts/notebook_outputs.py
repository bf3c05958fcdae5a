"""Record the expected outputs of the notebook cells tagged `nbval-check-output` in tests/notebook_outputs.json.

Usage (from the repository root):
    HF_HUB_OFFLINE=1 WORKSHOP_SIZE=tiny python scripts/notebook_outputs.py NOTEBOOK.ipynb [...]
    python scripts/notebook_outputs.py --executed build/reference NOTEBOOK.ipynb [...]   # from `make reference`

The notebooks are committed without outputs, so nbval has nothing to compare a tagged cell with; the root conftest.py
hands it these recorded outputs instead. This script runs a notebook the way nbval does (a kernel in the notebook's
folder), up to its last tagged cell, and stores those cells' outputs by cell id; with --executed it reads them from
executed copies instead (`make reference` writes them). Review the diff before committing: the file is what CI
compares with.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = ROOT / "tests" / "notebook_outputs.json"
TAG = "nbval-check-output"
COMPARED = ("output_type", "name", "text", "data")  # what nbval compares (metadata and counts are skipped)


def _compared(outputs) -> list[dict]:
    return [{k: v for k, v in o.items() if k in COMPARED} for o in outputs]


def record(path: Path, executed: Path | None = None) -> dict[str, list]:
    nb = nbformat.read(path, as_version=4)
    tagged = [i for i, c in enumerate(nb.cells) if TAG in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return {}
    if executed is not None:
        done = {c.id: c for c in nbformat.read(executed / path.name, as_version=4).cells}
        return {nb.cells[i].id: _compared(done[nb.cells[i].id].outputs) for i in tagged}
    client = NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    out = {}
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells[: tagged[-1] + 1]):
            if cell.cell_type != "code":
                continue
            client.execute_cell(cell, i)
            if i in tagged:
                out[cell.id] = _compared(cell.outputs)
    return out


def main(args: list[str]) -> int:
    executed = None
    if args[:1] == ["--executed"]:
        executed, args = (ROOT / args[1]).resolve(), args[2:]
    expected = json.loads(EXPECTED.read_text(encoding="utf-8")) if EXPECTED.exists() else {}
    for p in args:
        path = (ROOT / p).resolve()
        key = path.relative_to(ROOT).as_posix()
        expected[key] = record(path, executed)
        print(f"{key}: {len(expected[key])} tagged cells recorded")
        if not expected[key]:
            del expected[key]
    EXPECTED.write_text(json.dumps(dict(sorted(expected.items())), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
