"""Notebooks are committed without outputs or execution counts, all of them exist, CI markers are cell tags (never
visible comments), and every cell tagged to have its output checked has an expected output to be checked against."""
from __future__ import annotations

import json

import pytest

NOTEBOOKS = ["prerequisites/00.01-prerequisites.ipynb", "main-practice/00-concepts.ipynb",
             "main-practice/01_data_preprocessing_and_validation.ipynb", "main-practice/02_data_quality_check.ipynb",
             "main-practice/03_fine_tuning_with_lora.ipynb", "main-practice/04_evaluation_and_comparison.ipynb",
             "main-practice/05_custom_qlora.ipynb", "main-practice/06_raft_ablation.ipynb",
             "main-practice/A1_gpu_fast_path_and_multi_gpu.ipynb"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_exists_and_is_clean(root, name):
    nb = json.loads((root / name).read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, name
    for i, c in enumerate(code):
        assert c.get("outputs") == [] and c.get("execution_count") is None, f"{name} code cell {i} has outputs"


def test_colab_bootstrap_cell_is_the_same_everywhere(root):
    firsts = set()
    for name in NOTEBOOKS:
        nb = json.loads((root / name).read_text(encoding="utf-8"))
        first = next(c for c in nb["cells"] if c["cell_type"] == "code")
        src = "".join(first["source"])
        assert "google.colab" in src, name
        firsts.add(src)
    assert len(firsts) == 1


def test_makefile_runs_notebooks_in_curriculum_order(root):
    make = (root / "Makefile").read_text()
    positions = [make.index(n) for n in NOTEBOOKS]
    assert positions == sorted(positions)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_no_visible_nbval_marker(root, name):
    nb = json.loads((root / name).read_text(encoding="utf-8"))
    for c in nb["cells"]:
        assert "NBVAL_" not in "".join(c["source"]), f"{name}: use the cell tag (metadata.tags), not a comment"


def test_checked_cells_have_expected_outputs(root):
    """conftest.py gives nbval these outputs to compare with (the committed notebooks carry none)."""
    expected = json.loads((root / "tests" / "notebook_outputs.json").read_text(encoding="utf-8"))
    tagged = 0
    for name in NOTEBOOKS:
        nb = json.loads((root / name).read_text(encoding="utf-8"))
        for c in nb["cells"]:
            if "nbval-check-output" in c.get("metadata", {}).get("tags", []):
                tagged += 1
                assert expected.get(name, {}).get(c["id"]), f"{name} cell {c['id']}: no expected output"
    assert tagged >= 9
