"""nbval compares a cell's output only with the outputs stored in the notebook, and this repository commits its
notebooks without outputs, so a cell tagged `nbval-check-output` would be compared with nothing (nbval skips
cells whose stored copy never ran). Here, while pytest collects a notebook, every such cell gets its expected
outputs from tests/notebook_outputs.json (by notebook and cell id): the comparison really happens and the
notebooks stay clean. `python scripts/notebook_outputs.py NOTEBOOK...` records them again after a deliberate change.

With pytest-xdist (`make test` runs `-n 2`), `pytest_xdist_make_scheduler` below hands out whole units: a test
module (its module fixtures are built once) or a notebook (nbval runs its cells in order in one kernel). The
notebooks that share build/ (the prepared data, runs/<size>-qlora: 04 evaluates the adapter 03 trained) are one
unit, in the order given on the command line (but for RUNS_AFTER); only those with folders of their own
(OWN_BUILD_FOLDERS) run beside them. The longest units go first, and each worker gets its share of the CPU cores
(OMP_NUM_THREADS).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent
EXPECTED = ROOT / "tests" / "notebook_outputs.json"
TAG = "nbval-check-output"
# Notebooks that write only under folders of their own: build/custom + runs/custom-clinic (05), build/ablation (06).
# Every other notebook reads or writes build/data and build/runs/<size>-qlora, so they run one after another.
OWN_BUILD_FOLDERS = ("main-practice/05_custom_qlora.ipynb", "main-practice/06_raft_ablation.ipynb")
SHARED_BUILD = "notebooks sharing build/"
# make test runs the notebooks sharing build/ in the command line's order except that 00-concepts runs right after 03:
# its opening demo then takes the adapter 03 trained with the same settings (pipeline.ensure_adapter) instead of
# first training that same adapter itself. ensure_adapter's training branch is tested in
# tests/test_publish_pipeline.py; run alone, with TEST_WORKERS=0 or in make test-gpu, 00 trains it as before.
RUNS_AFTER = {"main-practice/00-concepts.ipynb": "main-practice/03_fine_tuning_with_lora.ipynb"}


def pytest_configure(config):
    workers = getattr(config, "workerinput", {}).get("workercount")  # set in an xdist worker only
    if workers:  # before any test module imports torch, whose thread pool reads these once
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(max(1, cores // workers)))  # notebook kernels and subprocesses inherit them


def work_unit(nodeid: str) -> str:
    """The xdist work unit of a test: its notebook (or the shared-build group of notebooks), else its module."""
    path = nodeid.split("::", 1)[0]
    if path.endswith(".ipynb") and path not in OWN_BUILD_FOLDERS:
        return SHARED_BUILD
    return path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class WorkUnitScheduling(LoadScopeScheduling):
        """xdist's loadscope with `work_unit` as the scope, in collection order (longest units first)."""

        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    config.option.loadscopereorder = False  # keep the order of pytest_collection_modifyitems below
    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(session, config, items):
    _expected_outputs(items)
    if hasattr(config, "workerinput"):  # an xdist worker: its order is the order the work is handed out
        _longest_first(items)


def _longest_first(items) -> None:
    """Order the work units for xdist, longest first, each unit's items in their own order (the shared-build
    notebooks as RUNS_AFTER says): the shared-build notebooks, the other notebooks, then test modules by their
    number of slow tests (they load or train a model, start processes or resolve against the package index)."""
    slow: dict[str, int] = {}
    for item in items:
        unit = work_unit(item.nodeid)
        slow[unit] = slow.get(unit, 0) + (item.get_closest_marker("slow") is not None)

    def rank(unit: str) -> tuple:
        return (unit != SHARED_BUILD, not unit.endswith(".ipynb"), -slow[unit])

    first, notebook = {}, {}
    for i, item in enumerate(items):
        first.setdefault(work_unit(item.nodeid), i)
        notebook.setdefault(item.nodeid.split("::", 1)[0], i)

    def place(item) -> float:
        """Within the shared-build unit: the notebook's place on the command line, or just after RUNS_AFTER's."""
        path = item.nodeid.split("::", 1)[0]
        after = RUNS_AFTER.get(path)
        return notebook[after] + 0.5 if after in notebook and work_unit(item.nodeid) == SHARED_BUILD else notebook[path]

    items.sort(key=lambda item: (rank(work_unit(item.nodeid)), first[work_unit(item.nodeid)], place(item)))


def _expected_outputs(items) -> None:
    expected = None
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        if expected is None:
            expected = json.loads(EXPECTED.read_text(encoding="utf-8")) if EXPECTED.exists() else {}
        notebook = Path(item.parent.path).resolve().relative_to(ROOT).as_posix()
        outputs = expected.get(notebook, {}).get(cell.get("id"))
        if outputs is None:
            raise pytest.UsageError(f"{notebook}: cell {cell.get('id')} is tagged {TAG} but tests/notebook_outputs.json "
                                    f"has no expected output for it (run: python scripts/notebook_outputs.py {notebook})")
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        cell.execution_count = 1
