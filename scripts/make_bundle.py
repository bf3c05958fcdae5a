"""`make bundle`: one archive that installs the workshop on Colab without any repository URL.

    python scripts/make_bundle.py [--out dist/qlora-raft-workshop-bundle.zip]

The zip holds, at its top level: workshop_bootstrap.py (so Python imports it straight from the zip),
BUNDLE.json (what and when), wheels/workshop_utils-*.whl, constraints/, data/, the notebooks, configs/,
docs/, README.md and pyproject.toml. A participant puts it in Google Drive (My Drive); every notebook's
first cell finds it there and calls workshop_bootstrap.setup() (README "Colab에서").
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "dist" / "qlora-raft-workshop-bundle.zip"
# What a participant's Colab needs besides the wheel (paths relative to the project root).
INCLUDE = ("workshop_bootstrap.py", "pyproject.toml", "README.md", "constraints", "data", "prerequisites",
           "main-practice", "configs", "docs", "experiments/README.md")
SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints"}


def bundle_files(root: Path = ROOT) -> list[str]:
    """The files to ship: what git tracks (or would, untracked but not ignored) under INCLUDE."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *INCLUDE],
                         cwd=root, capture_output=True, text=True)
    if out.returncode == 0 and out.stdout.strip():
        names = out.stdout.split("\n")
    else:  # not a git checkout (an extracted bundle, an export): walk the same paths
        names = []
        for inc in INCLUDE:
            p = root / inc
            names += [str(f.relative_to(root)) for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return sorted({n for n in names if n and (root / n).is_file() and not SKIP_PARTS & set(Path(n).parts)})


def build_wheel(root: Path, dest: Path) -> Path:
    """The workshop_utils wheel, built from a copy of the sources (an in-tree build would write into build/,
    the participants' output folder)."""
    with tempfile.TemporaryDirectory(prefix="bundle-src-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, src / name)
        shutil.copytree(root / "workshop_utils", src / "workshop_utils",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
                               "-w", str(dest), str(src)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"wheel을 만들지 못했습니다:\n{done.stderr[-2000:]}")
    return next(dest.glob("workshop_utils-*.whl"))


def _commit(root: Path) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + ("-dirty" if dirty else "")


def make_bundle(out: Path = DEFAULT_OUT, root: Path = ROOT) -> Path:
    """Write the archive (replacing an older bundle at `out`, which this command made) and return its path."""
    sys.path.insert(0, str(root / "scripts"))
    from colab_cells import settings
    from lock_constraints import supported_pythons

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    files = bundle_files(root)
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        digest = hashlib.sha256(wheel.read_bytes())
        for name in files:
            digest.update(name.encode() + b"\0" + (root / name).read_bytes())
        repo, branch = settings(root)
        manifest = {"id": digest.hexdigest()[:16], "commit": _commit(root),
                    "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    "wheel": f"wheels/{wheel.name}", "pythons": list(supported_pythons(root / "pyproject.toml")),
                    "repository": repo, "branch": branch, "files": len(files)}
        part = out.with_suffix(".zip.part")
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(root / "workshop_bootstrap.py", "workshop_bootstrap.py")  # importable from the zip
            z.writestr("BUNDLE.json", json.dumps(manifest, ensure_ascii=False, indent=1))
            z.write(wheel, manifest["wheel"])
            for name in files:
                if name != "workshop_bootstrap.py":
                    z.write(root / name, name)
        part.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    path = make_bundle(Path(args.out))
    with zipfile.ZipFile(path) as z:
        info = json.loads(z.read("BUNDLE.json"))
    print(f"[bundle] {path} ({path.stat().st_size / 1024**2:.1f} MB, 파일 {info['files'] + 2}개, id {info['id']}, "
          f"commit {info['commit']})")
    print("[bundle] 이 zip을 Google Drive의 내 드라이브에 올리고 노트북 첫 셀을 실행하세요 (README의 「Colab에서」)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
