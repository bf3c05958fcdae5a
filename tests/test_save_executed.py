"""The --save-executed plugin (make test-gpu): executed copies with each cell's outputs, failures included."""
from __future__ import annotations

import subprocess
import sys

import nbformat

from conftest import ROOT


def test_save_executed_writes_outputs_of_passing_and_failing_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 제목"), nbformat.v4.new_code_cell("print('안녕')"),
                nbformat.v4.new_code_cell("1/0")]
    path = tmp_path / "demo.ipynb"
    nbformat.write(nb, path)
    out = tmp_path / "executed"
    proc = subprocess.run([sys.executable, "-m", "pytest", str(path), "-p", "tests.helpers.save_executed",
                           "--save-executed", str(out), "--nbval-lax", "--current-env", "-q", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 1, proc.stdout[-2000:]  # the failing cell fails the run
    done = nbformat.read(out / "demo.ipynb", as_version=4)
    printed, failed = done.cells[1], done.cells[2]
    assert printed.outputs[0]["text"] == "안녕\n" and printed.metadata["execution"]["seconds"] >= 0
    assert failed.outputs[0]["ename"] == "ZeroDivisionError"
    assert nbformat.read(path, as_version=4).cells[1].outputs == []  # the original stays clean
