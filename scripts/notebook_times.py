"""Per-notebook wall time from a pytest JUnit XML file of an nbval run (`make test`/`make test-gpu` write one).

Usage: python scripts/notebook_times.py build/test-results.xml [more.xml ...]
Prints one Markdown table: notebook, cells, seconds, failures; the slowest cell of each notebook. With several
files (make test-gpu's passes) each row names its file: "03_fine_tuning_with_lora.ipynb (exaone-shape)".
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def notebook_times(paths: list[str]) -> list[dict]:
    rows: dict[str, dict] = defaultdict(lambda: {"cells": 0, "seconds": 0.0, "failures": 0, "slowest": (0.0, "")})
    for path in paths:
        label = f" ({Path(path).stem})" if len(paths) > 1 else ""  # one row per notebook and pass
        for case in ET.parse(path).getroot().iter("testcase"):
            file = case.get("classname", "") or case.get("file", "")
            name = case.get("name", "")
            if not file.endswith(".ipynb"):
                continue
            # nbval's classname is the path with dots for slashes; the folders (prerequisites, main-practice) have none
            nb = file.split(".", 1)[1] if file.count(".") > 1 and "/" not in file else file
            seconds = float(case.get("time", 0))
            r = rows[nb + label]
            r["cells"] += 1
            r["seconds"] += seconds
            r["failures"] += len(case.findall("failure")) + len(case.findall("error"))
            if seconds > r["slowest"][0]:
                r["slowest"] = (seconds, name)
    return [{"notebook": nb, **r} for nb, r in rows.items()]  # in the order they ran


def main(argv: list[str]) -> int:
    rows = notebook_times(argv)
    print("| 노트북 | 셀 | 시간 (s) | 실패 | 가장 느린 셀 |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['notebook']} | {r['cells']} | {r['seconds']:.0f} | {r['failures']} | "
              f"{r['slowest'][1]} ({r['slowest'][0]:.0f} s) |")
    print(f"| 합계 | {sum(r['cells'] for r in rows)} | {sum(r['seconds'] for r in rows):.0f} | "
          f"{sum(r['failures'] for r in rows)} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
