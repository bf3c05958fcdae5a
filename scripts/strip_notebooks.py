"""Remove outputs and execution counts from notebooks (commit them clean; a test checks it).

Usage: python scripts/strip_notebooks.py NOTEBOOK.ipynb [...]
"""
import json
import sys


def strip(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    changed = False
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            if cell.get("outputs") or cell.get("execution_count") is not None:
                changed = True
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in ("execution", "collapsed", "scrolled"):
            if cell.get("metadata", {}).pop(key, None) is not None:
                changed = True
    nb.get("metadata", {}).pop("widgets", None)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(nb, f, ensure_ascii=False, indent=1)
        f.write("\n")
    return changed


if __name__ == "__main__":
    for p in sys.argv[1:]:
        if strip(p):
            print(f"stripped {p}")
