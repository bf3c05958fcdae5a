"""pytest plugin: `--save-executed DIR` writes each notebook nbval ran, with the outputs of the cells that ran,
to DIR/<notebook name> -- rewritten after every cell, so a run stopped by a time limit still leaves what it
got. `make test-gpu` uses it: the instructor reads the GPU run's numbers (memory check, timings, plots) there.
The committed notebooks stay without outputs."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest


def pytest_addoption(parser):
    parser.addoption("--save-executed", default=None, metavar="DIR",
                     help="nbval로 실행한 노트북을 출력과 함께 DIR에 저장 (셀마다 갱신)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    yield
    folder = item.config.getoption("--save-executed")
    cell = getattr(item, "cell", None)
    if not folder or cell is None or call.when != "call":
        return
    path = Path(str(item.parent.path))
    store = item.config.stash.setdefault(_KEY, {})
    if path not in store:
        store[path] = nbformat.read(path, as_version=4)
    nb = store[path]
    outputs = [nbformat.from_dict(dict(o)) for o in (getattr(item, "test_outputs", None) or [])]
    for c in nb.cells:
        if c.get("id") == cell.get("id"):
            c.outputs, c.execution_count = outputs, getattr(item, "cell_num", 0) + 1
            c.metadata["execution"] = {"seconds": round(call.duration, 2)}
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / path.name)


_KEY = pytest.StashKey[dict]()
