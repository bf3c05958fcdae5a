"""scripts/notebook_times.py: per-notebook totals from the JUnit XML that `make test-gpu` writes."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "scripts" / "notebook_times.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


XML = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="5">
<testcase classname="prerequisites.00.01-prerequisites.ipynb" name="Cell 0" time="1.5" />
<testcase classname="prerequisites.00.01-prerequisites.ipynb" name="Cell 1" time="2.5" />
<testcase classname="main-practice.03_fine_tuning_with_lora.ipynb" name="Cell 4" time="40.0">
<failure message="boom" /></testcase>
<testcase classname="main-practice.03_fine_tuning_with_lora.ipynb" name="Cell 5" time="10.0" />
<testcase classname="tests.test_config" name="test_x" time="9.0" />
</testsuite></testsuites>"""


def test_notebook_times_groups_cells_by_notebook_and_skips_unit_tests(tmp_path, capsys):
    mod = load()
    xml = tmp_path / "notebooks.xml"
    xml.write_text(XML)
    rows = {r["notebook"]: r for r in mod.notebook_times([str(xml)])}
    assert set(rows) == {"00.01-prerequisites.ipynb", "03_fine_tuning_with_lora.ipynb"}
    nb03 = rows["03_fine_tuning_with_lora.ipynb"]
    assert (nb03["cells"], nb03["seconds"], nb03["failures"], nb03["slowest"]) == (2, 50.0, 1, (40.0, "Cell 4"))
    assert mod.main([str(xml)]) == 0
    out = capsys.readouterr().out
    assert "| 합계 | 4 | 54 | 1 | |" in out


def test_notebook_times_keeps_passes_apart(tmp_path):
    mod = load()
    (tmp_path / "notebooks.xml").write_text(XML)
    (tmp_path / "exaone-shape.xml").write_text(XML)
    rows = mod.notebook_times([str(tmp_path / "notebooks.xml"), str(tmp_path / "exaone-shape.xml")])
    assert [r["notebook"] for r in rows] == [
        "00.01-prerequisites.ipynb (notebooks)", "03_fine_tuning_with_lora.ipynb (notebooks)",
        "00.01-prerequisites.ipynb (exaone-shape)", "03_fine_tuning_with_lora.ipynb (exaone-shape)"]
