"""A GPU server shared by a class: other processes' GPU memory in `workshop check` (NVML and torch queries
replaced by fakes: there is no GPU here), GPU assignment, per-person build directories, the prefetch command."""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from workshop_utils.config import load_config
from workshop_utils.runtime import checklist as checklist_mod
from workshop_utils.runtime import gpu_usage, server
from workshop_utils.runtime.device import DeviceChoice
from workshop_utils.runtime.paths import personal_dir, shared_checkout

GIB = 1024**3


def fake_nvml(total_gib=140.0, used_gib=70.0, processes=(), calls=None):
    """A stand-in for pynvml: one card with `processes` = [(pid, GiB or None)]."""
    calls = calls if calls is not None else []
    ns = types.SimpleNamespace
    return ns(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetHandleByIndex=lambda i: calls.append(("index", i)) or f"h{i}",
        nvmlDeviceGetHandleByUUID=lambda u: calls.append(("uuid", u)) or u,
        nvmlDeviceGetMemoryInfo=lambda h: ns(total=int(total_gib * GIB), used=int(used_gib * GIB),
                                             free=int((total_gib - used_gib) * GIB)),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            ns(pid=pid, usedGpuMemory=None if gib is None else int(gib * GIB)) for pid, gib in processes],
        nvmlDeviceGetName=lambda h: b"NVIDIA H200",
    )


@pytest.fixture
def other_process():
    """A real process (so /proc names it and its owner), standing in for another person's training."""
    p = subprocess.Popen(["sleep", "60"])
    for _ in range(200):  # until exec has replaced the forked Python
        if Path(f"/proc/{p.pid}/comm").read_text().strip() == "sleep":
            break
        time.sleep(0.01)
    yield p.pid
    p.kill()
    p.wait()


def test_nvml_names_other_processes_and_their_memory(other_process, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml = fake_nvml(140.0, 70.0, [(other_process, 40.0), (os.getpid(), 2.0)])
    mem = gpu_usage.query_nvml(0, nvml)
    assert mem.source == "nvml" and mem.name == "NVIDIA H200"
    assert [p.pid for p in mem.others] == [other_process]  # this process is not "others"
    assert mem.others[0].name == "sleep" and mem.others[0].user == pwd.getpwuid(os.getuid()).pw_name
    assert mem.mine_gib == pytest.approx(2.0)
    # 70 GiB used - 2 GiB mine: 68 GiB by others, though NVML lists only 40 (a process in another container)
    assert mem.others_gib == pytest.approx(68.0)
    assert mem.free_gib == pytest.approx(70.0)
    assert f"pid {other_process}" in mem.line() and "sleep 40.0 GiB" in mem.line()


def test_nvml_follows_cuda_visible_devices(monkeypatch):
    calls = []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    gpu_usage.query_nvml(1, fake_nvml(calls=calls))
    assert ("index", 1) in calls
    calls.clear()
    gpu_usage.query_nvml(0, fake_nvml(calls=calls))
    assert ("index", 3) in calls
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8f2c")
    calls.clear()
    gpu_usage.query_nvml(0, fake_nvml(calls=calls))
    assert ("uuid", "GPU-8f2c") in calls


def test_torch_fallback_counts_everything_not_free_and_not_mine():
    ns = types.SimpleNamespace
    cuda = ns(is_available=lambda: True, mem_get_info=lambda d: (50 * GIB, 80 * GIB),
              memory_reserved=lambda d: 4 * GIB, get_device_name=lambda d: "NVIDIA A100 80GB")
    mem = gpu_usage.gpu_memory(0, nvml=ns(nvmlInit=lambda: 1 / 0), cuda=cuda)  # NVML fails -> torch
    assert mem.source == "torch" and mem.others_gib == pytest.approx(26.0) and mem.free_gib == pytest.approx(50.0)


def test_fits_warns_when_the_plan_exceeds_what_is_free():
    mem = gpu_usage.GpuMemory(0, "H200", 140.0, 20.0, 0.0, 120.0, "nvml")
    ok, remedy = gpu_usage.fits(mem, 8.0)
    assert ok and not remedy
    ok, remedy = gpu_usage.fits(mem, 119.0)
    assert not ok and "WORKSHOP_MEMORY_BUDGET_GIB=8" in remedy and "120.0 GiB" in remedy


@pytest.fixture
def fake_gpu_machine(monkeypatch):
    """The checklist sees a CUDA H200 (choose_device, has_cuda) without one being there."""
    monkeypatch.setattr(checklist_mod, "has_cuda", lambda: True)
    monkeypatch.setattr(checklist_mod, "choose_device", lambda *a, **k: DeviceChoice(
        "cuda", torch.bfloat16, "fake", "NVIDIA H200", 140.0))


def test_workshop_check_shows_other_processes_gpu_memory(fake_gpu_machine, other_process, monkeypatch, capsys,
                                                         tmp_path):
    from workshop_utils import cli

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(140.0, 130.0, [(other_process, 125.0)]))
    monkeypatch.setenv("WORKSHOP_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.delenv("WORKSHOP_MEMORY_BUDGET_GIB", raising=False)
    cli.main(["check", "--no-model-access"])
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if "GPU 메모리 (다른 프로세스)" in l)
    assert line.startswith("△") and f"pid {other_process}" in line and "125.0 GiB" in line
    assert "학습 계획 119.0 GiB" in line and "WORKSHOP_MEMORY_BUDGET_GIB=8" in line  # 85% of 140 > 10 free
    assert f"산출물 폴더 (build_dir): {tmp_path / 'build'} (환경변수 WORKSHOP_BUILD_DIR)" in out

    monkeypatch.setenv("WORKSHOP_MEMORY_BUDGET_GIB", "8")
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(140.0, 60.0, [(other_process, 55.0)]))
    cli.main(["check", "--no-model-access"])
    line = next(l for l in capsys.readouterr().out.splitlines() if "GPU 메모리 (다른 프로세스)" in l)
    assert line.startswith("✓") and "학습 계획 8.0 GiB" in line and "여유 80.0 GiB" in line


def test_memory_budget_env_and_its_bad_value(monkeypatch):
    monkeypatch.setenv("WORKSHOP_MEMORY_BUDGET_GIB", "8")
    assert load_config("tiny").train.memory_budget_gib == 8.0
    monkeypatch.setenv("WORKSHOP_MEMORY_BUDGET_GIB", "8GB")
    with pytest.raises(ValueError, match=r"train.memory_budget_gib='8GB'.*환경변수 WORKSHOP_MEMORY_BUDGET_GIB"):
        load_config("tiny")


def test_shared_checkout_builds_under_the_home(monkeypatch, tmp_path):
    """A checkout someone else owns (one for the class): each person's build/ goes under their own home."""
    checkout = tmp_path / "srv" / "qlora-raft-workshop"
    (checkout / "data").mkdir(parents=True)
    (checkout / "workshop_utils").mkdir()
    (checkout / "pyproject.toml").write_text('[project]\nname = "workshop-utils"\n')
    home = tmp_path / "home" / "alice"
    monkeypatch.chdir(checkout)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("WORKSHOP_BUILD_DIR", raising=False)
    assert not shared_checkout(checkout)
    assert load_config("tiny").build_path == checkout / "build"
    checkout.chmod(0o555)
    try:
        if os.access(checkout, os.W_OK):  # root ignores permissions: pretend the owner is someone else
            monkeypatch.setattr(os, "getuid", lambda: checkout.stat().st_uid + 1)
        assert shared_checkout(checkout)
        assert load_config("tiny").build_path == home / "qlora-raft-workshop" / "build" == personal_dir() / "build"
        monkeypatch.setenv("WORKSHOP_BUILD_DIR", str(tmp_path / "mine"))  # an explicit choice still wins
        assert load_config("tiny").build_path == tmp_path / "mine"
    finally:
        checkout.chmod(0o755)


def test_assign_gpus_spreads_people_and_refuses_too_many():
    users = [f"user{i:02d}" for i in range(40)]
    a = server.assign_gpus(users, gpus=4, per_gpu=11)
    counts = [list(a.values()).count(g) for g in range(4)]
    assert counts == [10, 10, 10, 10] and a["user00"] == 0 and a["user05"] == 1
    assert server.assignment_table({"alice": 0, "bob": 1}) == "alice\t0\nbob\t1\n"
    with pytest.raises(ValueError, match="GPU 7장이 필요"):
        server.assign_gpus(users, gpus=4, per_gpu=6)
    assert server.people_per_gpu(141.0) == 11 and server.people_per_gpu(80.0) == 6


def test_assign_gpus_command_never_overwrites(tmp_path, capsys):
    from workshop_utils import cli

    users = tmp_path / "users.txt"
    users.write_text("alice\nbob  # 조교\n\ncarol\n")
    out = tmp_path / "gpus.tsv"
    assert cli.main(["assign-gpus", str(users), "--gpus", "2", "--per-gpu", "2", "--out", str(out)]) == 0
    assert out.read_text() == "alice\t0\nbob\t1\ncarol\t0\n"
    out.write_text("edited by hand\n")
    assert cli.main(["assign-gpus", str(users), "--gpus", "2", "--per-gpu", "2", "--out", str(out)]) == 2  # a mistake the instructor can fix: one line, exit 2
    assert out.read_text() == "edited by hand\n" and "--force" in capsys.readouterr().err
    assert cli.main(["assign-gpus", str(tmp_path / "none.txt"), "--gpus", "1", "--per-gpu", "1"]) == 2


def test_prefetch_downloads_each_model_once_under_a_lock(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(server, "hub_cache", lambda: tmp_path / "hub")
    seen = []

    def download(repo_id, token=None, ignore_patterns=None):
        lock = tmp_path / "hub" / f".models--{repo_id.replace('/', '--')}.lock"
        assert lock.exists(), "downloaded without the cache lock"
        assert "*.bin" in ignore_patterns
        seen.append(repo_id)
        d = tmp_path / "hub" / repo_id
        d.mkdir(parents=True)
        (d / "config.json").write_text("{}")
        return str(d)

    paths = server.prefetch_models(["LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct", "org/embed"], download=download,
                                   verbose=False)
    assert seen == ["LGAI-EXAONE/EXAONE-3.0-7.8B-Instruct", "org/embed"]
    assert paths["org/embed"] == tmp_path / "hub" / "org" / "embed"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        server.prefetch_models(["org/embed"], download=download)


def test_server_guide_is_linked_from_readme_and_the_instructor_guide(root):
    guide = (root / "docs" / "server.md").read_text(encoding="utf-8")
    assert "workshop prefetch" in guide and "assign-gpus" in guide and "CUDA_VISIBLE_DEVICES" in guide
    assert "HF_HOME" in guide and "WORKSHOP_MEMORY_BUDGET_GIB=8" in guide
    assert "docs/server.md" in (root / "README.md").read_text(encoding="utf-8")
    assert "(server.md)" in (root / "docs" / "instructor.md").read_text(encoding="utf-8")


def test_process_memory_splits_this_process_into_pytorch_and_the_rest():
    ns = types.SimpleNamespace
    """The EXAONE-shape OOM on the H200: NVML said this process held 139.7 GiB while PyTorch held 34.1 GiB."""
    cuda = ns(is_available=lambda: True, mem_get_info=lambda d: (int(0.06 * GIB), int(139.8 * GIB)),
              memory_allocated=lambda d: int(33.9 * GIB), memory_reserved=lambda d: int(34.1 * GIB))
    mem = gpu_usage.process_memory(0, nvml=fake_nvml(139.8, 139.74, [(os.getpid(), 139.74)]), cuda=cuda)
    assert round(mem.outside_gib, 2) == 105.64
    assert "PyTorch 밖 105.6 GiB" in mem.line() and "예약 34.1 GiB" in mem.line()
    # NVML missing (or not listing this process): the outside share is unknown, and the line says so
    blind = gpu_usage.process_memory(0, nvml=ns(nvmlInit=lambda: 1 / 0), cuda=cuda)
    assert blind.process_gib is None and blind.outside_gib is None and "알 수 없음" in blind.line()
    assert gpu_usage.process_memory(0, cuda=ns(is_available=lambda: False)) is None


def test_oom_message_keeps_torchs_whole_first_line_and_the_memory_breakdown():
    from workshop_utils.train.callbacks import oom_message

    err = RuntimeError("CUDA out of memory. Tried to allocate 192.00 MiB. GPU 0 has a total capacity of 139.80 GiB "
                       "of which 57.12 MiB is free. Including non-PyTorch memory, this process has 139.74 GiB memory "
                       "in use. Of the allocated memory 33.92 GiB is allocated by PyTorch, and 217.86 MiB is reserved "
                       "by PyTorch but unallocated. If reserved but unallocated memory is large try setting "
                       "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.")
    msg = oom_message(err, 16, 1, False, memory_line="GPU 메모리: ... PyTorch 밖 105.6 GiB")
    assert "this process has 139.74 GiB" in msg and "33.92 GiB is allocated by PyTorch" in msg
    assert "expandable_segments" not in msg and "PyTorch 밖 105.6 GiB" in msg


def test_importing_the_package_stops_jax_and_tensorflow_from_claiming_the_gpu():
    """JAX's GPU backend takes 75% of the card at start unless told otherwise (105.4 GiB of an H200, measured);
    importing workshop_utils asks for on-demand allocation and keeps a value the user set."""
    code = "import os, workshop_utils; print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'], os.environ['TF_FORCE_GPU_ALLOW_GROWTH'])"
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["false", "true"]
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "true"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["true", "true"]
