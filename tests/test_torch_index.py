"""CPU torch without the CUDA download: `make` prefers the PyTorch CPU index when it answers and falls back
to pip's default index (saying so in one line) when it does not; TORCH_INDEX_URL overrides either way."""
from __future__ import annotations

import functools
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pick_torch_index
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pick_torch_index.py"


def closed_port_url() -> str:
    """An index URL nobody answers (a port that was just free on the loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/whl/cpu"


@pytest.fixture
def cpu_index(tmp_path):
    """A local stand-in for download.pytorch.org/whl/cpu: serves /whl/cpu/torch/."""
    (tmp_path / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "whl" / "cpu" / "torch" / "index.html").write_text("<a>torch-2.13.0+cpu</a>")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    server.shutdown()


def run_script(**env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_")}
    full.update(env)
    return subprocess.run([sys.executable, str(SCRIPT)], env=full, capture_output=True, text=True, timeout=60)


def test_unreachable_cpu_index_falls_back_to_the_default_index_in_one_line():
    out = run_script(TORCH_CPU_INDEX=closed_port_url(), TORCH_INDEX_TIMEOUT="3")
    assert out.returncode == 0
    assert out.stdout.strip() == ""  # no --index-url: pip's configured index
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "접속할 수 없어 pip 기본 인덱스" in lines[0] and "TORCH_INDEX_URL" in lines[0]


def test_reachable_cpu_index_is_used(cpu_index):
    out = run_script(TORCH_CPU_INDEX=cpu_index)
    assert out.stdout.split() == ["--index-url", cpu_index]
    assert "CPU 인덱스" in out.stderr and "접속됨" in out.stderr


def test_an_explicit_index_wins_without_a_probe():
    # .invalid never resolves: chosen anyway, so it was not probed
    out = run_script(TORCH_INDEX_URL="https://mirror.invalid/whl/cpu", TORCH_CPU_INDEX=closed_port_url())
    assert out.stdout.split() == ["--index-url", "https://mirror.invalid/whl/cpu"]
    out = run_script(TORCH_INDEX_URL="default")
    assert out.stdout.strip() == "" and "TORCH_INDEX_URL=default" in out.stderr


def test_bad_timeout_is_one_korean_line():
    out = run_script(TORCH_INDEX_TIMEOUT="five")
    assert out.returncode == 2 and "초 단위 숫자" in out.stderr and "Traceback" not in out.stderr


def test_choose_reports_reachability_without_a_network(cpu_index):
    assert pick_torch_index.reachable(cpu_index, timeout=5)
    assert not pick_torch_index.reachable(closed_port_url(), timeout=2)


def test_makefile_asks_the_script_and_uses_this_pythons_constraints(tmp_path):
    """`make -n install` on a machine without CUDA: the torch step goes through the script, with the
    TORCH_INDEX_URL given on the command line, and the install uses constraints/py<this Python>.txt."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    out = subprocess.run(["make", "-n", "install", f"VENV={venv}", "HAS_CUDA=", "TORCH_INDEX_URL=default"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert 'TORCH_INDEX_URL="default"' in out.stdout and "scripts/pick_torch_index.py" in out.stdout
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"-c constraints/py{here}.txt" in out.stdout
