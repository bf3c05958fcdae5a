"""The Colab parts of every notebook and of README, from one setting: pyproject.toml [tool.workshop]
repository (and branch).

  python scripts/colab_cells.py --write    (make badges) write them
  python scripts/colab_cells.py --check    exit 1 and name what is out of step (tests/test_colab.py)

Each notebook (every *.ipynb under prerequisites/ and main-practice/: a new notebook joins by existing)
gets, first, a markdown cell tagged `colab-badge` (the "Open in Colab" badge, or -- while no repository is
set -- a note saying how to open it in Colab), then the bootstrap code cell (the same in every notebook):
it mounts Drive, finds the bundle or clones REPO_URL, and calls workshop_bootstrap.setup(). README gets
the badge table between the `colab-badges` markers. Standard library only.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIRS = ("prerequisites", "main-practice")
BADGE_TAG = "colab-badge"
BADGE_IMG = "https://colab.research.google.com/assets/colab-badge.svg"
README_START, README_END = "<!-- colab-badges:start -->", "<!-- colab-badges:end -->"
GITHUB = re.compile(r"https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?")

BOOTSTRAP = '''# 실습 환경 준비: Colab에서만 설치합니다 (로컬·CI에서는 아무 일도 하지 않음). 설명: README의 「Colab에서」
USE_DRIVE = True  # Google Drive에 결과(build/)와 모델 캐시를 두어 다음 노트북이 다시 씀 (연결을 묻는 창에서 허용)
import os, subprocess, sys
if "google.colab" in sys.modules:
    import glob
    REPO_URL = {repo}  # pyproject.toml [tool.workshop] repository (make badges가 여기에 씀)
    if USE_DRIVE:
        from google.colab import drive
        drive.mount("/content/drive")
    zips = "{pattern}"  # make bundle이 만든 zip: 내 드라이브나 그 아래 폴더 하나에 올린 것
    found = glob.glob("/content/drive/MyDrive/" + zips) + glob.glob("/content/drive/MyDrive/*/" + zips)
    BUNDLE = max(found, key=os.path.getmtime, default=None)
    if not BUNDLE and REPO_URL and not os.path.isdir("/content/{name}"):
        subprocess.run(["git", "clone", "-q", "-b", {branch}, REPO_URL, "/content/{name}"], check=True)
    if not BUNDLE and not os.path.isdir("/content/{name}"):
        raise SystemExit("설치할 워크숍이 없습니다: make bundle로 만든 {bundle}을 Google Drive(내 드라이브)에 올리고 "
                         "USE_DRIVE = True로 다시 실행하세요 (저장소에서 받으려면 관리자가 pyproject.toml의 "
                         "[tool.workshop] repository를 채우고 make badges)")
    sys.path.insert(0, BUNDLE or "/content/{name}")  # zip 안의 workshop_bootstrap.py도 바로 import됨
    import workshop_bootstrap
    workshop_bootstrap.setup(BUNDLE, USE_DRIVE)'''


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            from pip._vendor import tomli as tomllib
    return tomllib.loads(path.read_text(encoding="utf-8"))


def settings(root: Path = ROOT) -> tuple[str, str]:
    """(repository URL, branch) from pyproject.toml [tool.workshop]; the URL may be empty (not published)."""
    tool = _toml(root / "pyproject.toml").get("tool", {}).get("workshop", {})
    return tool.get("repository", "").strip(), tool.get("branch", "main").strip() or "main"


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted(p for d in NOTEBOOK_DIRS for p in (root / d).glob("*.ipynb"))


def bootstrap_source(repo: str, branch: str = "main") -> str:
    return BOOTSTRAP.format(repo=json.dumps(repo), branch=json.dumps(branch), name="qlora-raft-workshop",
                            pattern="qlora-raft-workshop-bundle*.zip", bundle="qlora-raft-workshop-bundle.zip")


def colab_url(repo: str, branch: str, notebook: str) -> str | None:
    """https://colab.research.google.com/github/OWNER/NAME/blob/BRANCH/<notebook>, None unless GitHub."""
    m = GITHUB.fullmatch(repo)
    return f"https://colab.research.google.com/github/{m[1]}/{m[2]}/blob/{branch}/{notebook}" if m else None


def badge_markdown(repo: str, branch: str, notebook: str) -> str:
    url = colab_url(repo, branch, notebook)
    if url:
        return f"[![Open In Colab]({BADGE_IMG})]({url})"
    why = ("저장소 주소가 아직 정해지지 않았습니다" if not repo else
           f"Colab 배지는 GitHub 저장소만 가리킬 수 있습니다 ({repo})")
    return (f"> **Colab에서 열기**: {why}. `make bundle`로 만든 zip을 Google Drive에 올리고 이 노트북을 Colab에 올리면 "
            f"첫 셀이 번들에서 설치합니다 (README의 「Colab에서」).")


def readme_block(repo: str, branch: str, nbs: list[str]) -> str:
    if not colab_url(repo, branch, "x"):
        return badge_markdown(repo, branch, "")
    rows = ["| 노트북 | Colab |", "|---|---|"]
    rows += [f"| `{nb}` | {badge_markdown(repo, branch, nb)} |" for nb in nbs]
    return "\n".join(rows)


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def update_notebook(nb: dict, rel: str, repo: str, branch: str) -> dict:
    """The notebook with its badge cell (first) and bootstrap cell (first code cell) in step."""
    cells = nb["cells"]
    badge = {"cell_type": "markdown", "metadata": {"tags": [BADGE_TAG]},
             "source": _lines(badge_markdown(repo, branch, rel))}
    tagged = [i for i, c in enumerate(cells) if BADGE_TAG in c.get("metadata", {}).get("tags", [])]
    for i in reversed(tagged):
        del cells[i]
    cells.insert(0, badge)
    code = next((c for c in cells if c["cell_type"] == "code"), None)
    if code is None or "google.colab" not in "".join(code["source"]):
        code = {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": []}
        cells.insert(1, code)
    code["source"] = _lines(bootstrap_source(repo, branch))
    return nb


def dump(nb: dict) -> str:
    return json.dumps(nb, ensure_ascii=False, indent=1) + "\n"


def sync(root: Path = ROOT, write: bool = False) -> list[str]:
    """Bring every notebook and README in step; the names of what was (or, without `write`, would be) changed."""
    repo, branch = settings(root)
    changed = []
    nbs = notebooks(root)
    for path in nbs:
        rel = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        new = dump(update_notebook(json.loads(text), rel, repo, branch))
        if new != text:
            changed.append(rel)
            if write:
                path.write_text(new, encoding="utf-8")
    readme = root / "README.md"
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        changed.append(f"README.md ({README_START} ... {README_END} 표시가 없음)")
    else:
        head, rest = text.split(README_START, 1)
        tail = rest.split(README_END, 1)[1]
        block = readme_block(repo, branch, [p.relative_to(root).as_posix() for p in nbs])
        new = f"{head}{README_START}\n{block}\n{README_END}{tail}"
        if new != text:
            changed.append("README.md")
            if write:
                readme.write_text(new, encoding="utf-8")
    return changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    changed = sync(ROOT, write=args.write)
    repo, _ = settings(ROOT)
    if args.write:
        print(f"[badges] 저장소 {repo or '(미설정: 번들 경로만)'}; 바뀐 파일: {', '.join(changed) or '없음'}")
        return 0
    if changed:
        print(f"Colab 셀/배지가 pyproject.toml [tool.workshop]과 다릅니다: {', '.join(changed)} → make badges",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
