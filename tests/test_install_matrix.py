"""Install matrix: the project installs on Python 3.10, 3.11 and 3.12 (Colab's), checked without those
interpreters by pip's own resolver against the live package index:

    pip install --dry-run --ignore-installed --only-binary=:all: --python-version 3.X.0
        -c constraints/py3.X.txt <pyproject's dependencies, every extra> torch==<TORCH_CPU> <every pin>

What that proves and what it does not (scripts/lock_constraints.py says how): for Linux x86_64 and the
oldest patch release of each Python, every pinned version has a wheel on the index and they satisfy each
other's declared requirements; torch resolves as the CPU build `make` installs (its dependency list; PyPI's
listing of a torch==<pin> wheel for that Python is checked separately); environment markers are evaluated
for the interpreter running the test. It does not run the code on that Python (the syntax test below does a
part of that), nor check macOS/Windows wheels. Skipped -- not passed -- when the index cannot be reached.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess

import lock_constraints as lc
import pytest

NETWORK_ERRORS = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                  "Max retries exceeded", "Could not fetch URL", "ConnectTimeout", "502")


@pytest.fixture(scope="module")
def dry_runs():
    """The check's report: the one `make test` started in the background once the venv was installed (it runs
    beside the bytecode warm-up and the tests' start instead of holding a test worker), else resolved here."""
    report = lc.read_report(os.environ.get("INSTALL_MATRIX_RESULT")) or lc.check_report(lc.PYTHONS)
    if not report["reachable"]:
        pytest.skip(f"패키지 인덱스({lc.index_url()})에 접속할 수 없어 설치 매트릭스를 확인하지 못했습니다 (skipped, not passed)")
    err = report.get("build_error")
    if err is not None:  # building the sdist-only wheels needs the index too
        if any(e in err for e in NETWORK_ERRORS):
            pytest.skip(f"인덱스 접속 실패: {err.strip().splitlines()[-1]}")
        raise AssertionError(f"building the sdist-only wheels failed:\n{err[-3000:]}")
    return {py: tuple(r) for py, r in report["results"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("python", lc.PYTHONS)
def test_constraints_resolve_for_python(dry_runs, python):
    rc, err = dry_runs[python]
    if rc != 0 and any(e in err for e in NETWORK_ERRORS) and "ResolutionImpossible" not in err:
        pytest.skip(f"Python {python}: 인덱스 접속 실패 (skipped, not passed)")
    assert rc == 0, f"Python {python}: constraints/py{python}.txt does not resolve\n{err[-3000:]}"


@pytest.mark.slow
def test_torch_pin_has_wheels_for_every_python():
    if not lc.registry_reachable():
        pytest.skip("패키지 인덱스에 접속할 수 없음 (skipped, not passed)")
    found = lc.torch_wheels_on_registry(lc.torch_pin(), lc.PYTHONS)
    assert all(found.values()), f"{lc.torch_pin()} has no Linux x86_64 wheel for: {[p for p, ok in found.items() if not ok]}"


def test_background_report_is_read_for_this_index_while_its_check_runs(tmp_path, monkeypatch):
    """make test's background check: its report is waited for while the check runs, and never taken from a
    check that died, failed or asked another index (the test then resolves by itself)."""
    import json
    import sys
    import threading
    import time

    monkeypatch.setenv("PIP_INDEX_URL", "https://index.example/simple")
    path = tmp_path / "install-matrix-1.json"
    assert lc.read_report(None) is None and lc.read_report(path) is None  # never started
    mine = {"index_url": lc.index_url(), "reachable": False}
    monkeypatch.setattr(lc, "check_report", lambda pythons: dict(mine))
    lc.write_report(path)
    assert json.loads(path.read_text()) == mine and not path.with_suffix(".pid").exists()

    path.unlink()
    check = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path.with_suffix(".pid").write_text(json.dumps({"pid": check.pid, "index_url": lc.index_url()}))
        threading.Timer(1.5, lambda: path.write_text(json.dumps(mine))).start()
        start = time.monotonic()
        assert lc.read_report(path, timeout=30) == mine and time.monotonic() - start >= 1  # waited for it
        path.unlink()
        path.with_suffix(".pid").write_text(json.dumps({"pid": check.pid, "index_url": "https://other/simple"}))
        assert lc.read_report(path, timeout=30) is None  # running, but for another index: not waited for
    finally:
        check.kill()
        check.wait()
    path.with_suffix(".pid").write_text(json.dumps({"pid": check.pid, "index_url": lc.index_url()}))
    start = time.monotonic()
    assert lc.read_report(path, timeout=30) is None and time.monotonic() - start < 5  # died without a report
    path.write_text(json.dumps({"index_url": "https://other/simple", "reachable": True, "results": {}}))
    assert lc.read_report(path) is None
    path.write_text(json.dumps({"index_url": lc.index_url(), "failed": "RuntimeError: boom"}))
    assert lc.read_report(path) is None


def test_supported_pythons_agree_everywhere(root):
    """requires-python, the classifiers, the constraints files, README, environment.yml and `workshop check`
    all name the tested versions."""
    project = lc._toml(root / "pyproject.toml")["project"]
    assert project["requires-python"] == f">={lc.PYTHONS[0]}"
    classifiers = {c.rsplit(":: ", 1)[1] for c in project["classifiers"]
                   if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert classifiers == set(lc.PYTHONS)
    assert {p.stem[2:] for p in (root / "constraints").glob("py*.txt")} == set(lc.PYTHONS)
    readme = (root / "README.md").read_text(encoding="utf-8")
    line = next(l for l in readme.splitlines() if l.startswith("Python ") and "make" in l)
    assert re.findall(r"3\.\d+", line) == list(lc.PYTHONS), line
    env_yml = (root / "environment.yml").read_text()
    assert re.search(r"python=(3\.\d+)", env_yml).group(1) in lc.PYTHONS
    assert re.search(r"constraints/py(3\.\d+)\.txt", env_yml).group(1) == re.search(r"python=(3\.\d+)", env_yml).group(1)
    from workshop_utils.runtime.packages import TESTED_PYTHONS

    assert TESTED_PYTHONS == tuple(lc.PYTHONS)


def test_project_requirements_come_from_pyproject(root):
    reqs = lc.project_requirements(root / "pyproject.toml")
    assert "transformers>=5.0,<6" in reqs and "liger-kernel>=0.6" in reqs and "pytest>=8" in reqs
    assert not any(r.startswith("workshop-utils") for r in reqs)  # the dev extra's self-reference
    assert lc.torch_pin(root / "Makefile") == "torch==2.13.0"


# Standard-library names that appeared after 3.10 (a parse with feature_version=(3, 10) catches syntax only).
AFTER_3_10 = re.compile(r"\bimport tomllib\b|\bdatetime\.UTC\b|from datetime import [^\n]*\bUTC\b|\bStrEnum\b|"
                        r"from typing import [^\n]*\b(Self|Never|LiteralString|NotRequired|Required|override|"
                        r"assert_never)\b|\bTaskGroup\b|\bExceptionGroup\b|\bitertools\.batched\b")


def test_code_is_python_3_10(root):
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=root, capture_output=True, text=True).stdout.split()
    files = [root / f for f in tracked] or sorted(root.glob("**/*.py"))
    assert files
    bad = []
    for f in files:
        if not f.exists() or ".venv" in f.parts or f.name == "test_install_matrix.py":  # its regex names them
            continue
        text = f.read_text(encoding="utf-8")
        try:
            ast.parse(text, feature_version=(3, 10))
        except SyntaxError as err:
            bad.append(f"{f.relative_to(root)}:{err.lineno}: {err.msg}")
        for m in AFTER_3_10.finditer(text):
            line = text[: m.start()].count("\n") + 1
            if text.splitlines()[line - 2].strip() != "try:":  # a guarded import with a fallback is fine
                bad.append(f"{f.relative_to(root)}:{line}: {m.group(0)} (Python 3.11+)")
    assert not bad, bad


def test_unreachable_index_is_skipped_not_passed(root, tmp_path):
    """With no index to ask, the matrix reports 'skipped' -- never a pass it did not earn."""
    import os
    import socket
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PIP_INDEX_URL=f"http://127.0.0.1:{port}/simple")
    out = subprocess.run([sys.executable, "-m", "pytest", str(root / "tests" / "test_install_matrix.py"), "-q",
                          "-k", "resolve_for_python or torch_pin", "-p", "no:cacheprovider", "-rs"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:]
    assert f"{len(lc.PYTHONS) + 1} skipped" in out.stdout and "passed" not in out.stdout.splitlines()[-1], out.stdout
    assert "접속할 수 없" in out.stdout
