"""A shared cache: two processes that need the offline model at once into one empty cache both succeed,
exactly one converts the GGUF, and what it wrote loads (runtime.cachelock around model/sources.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from workshop_utils.runtime.cachelock import cache_lock, lock_path, shared_tmpdir

ROOT = Path(__file__).resolve().parents[1]
CONVERTS = "GGUF를 safetensors로 한 번 변환합니다"

# Each process imports everything, says it is ready, waits for "go", then asks for the model: both reach
# offline_model_dir at the same moment. Then each loads the result and runs one forward pass on Korean text.
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from workshop_utils.model.sources import offline_model_dir
    flags = Path(sys.argv[1])
    (flags / f"ready-{sys.argv[2]}").touch()
    while not (flags / "go").exists():
        time.sleep(0.01)
    path = offline_model_dir()
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    with torch.no_grad():
        logits = model(**tok("연차 휴가는 며칠인가요?", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    print("LOADED", path, tuple(logits.shape), flush=True)
""")


@pytest.mark.slow
def test_two_processes_convert_into_one_empty_cache(tmp_path):
    cache = tmp_path / "cache"
    flags = tmp_path / "flags"
    flags.mkdir()
    env = dict(os.environ, WORKSHOP_CACHE=str(cache), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(flags), str(i)], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    deadline = time.time() + 300
    while not all((flags / f"ready-{i}").exists() for i in (0, 1)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
        time.sleep(0.05)
    (flags / "go").touch()
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sum(o.count(CONVERTS) for o in outs) == 1, outs
    loaded = [line.split()[1] for o in outs for line in o.splitlines() if line.startswith("LOADED")]
    assert len(loaded) == 2 and loaded[0] == loaded[1], outs
    assert sum("기다립니다" in o for o in outs) == 1, outs  # the other one waited, and said so
    converted = Path(loaded[0])
    assert (converted / "model.safetensors").exists() and converted.parent == cache
    assert not list(cache.glob(".convert-*")), "a temporary directory was left behind"


def test_cache_lock_makes_a_second_holder_wait_and_says_so(tmp_path, capsys):
    """The lock in one process blocks another (filelock is per process); the waiter reports it."""
    entry = tmp_path / "model"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from workshop_utils.runtime.cachelock import cache_lock
        with cache_lock(Path({str(entry)!r}), "test"):
            print("held", flush=True)
            time.sleep(1.5)
    """)], env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.perf_counter()
    with cache_lock(entry, "오프라인 모델 변환"):
        waited = time.perf_counter() - t0
    holder.wait(timeout=30)
    assert waited > 0.5
    assert "다른 프로세스가 오프라인 모델 변환 중입니다" in capsys.readouterr().out
    assert lock_path(entry) == tmp_path / ".model.lock"


def test_cache_lock_timeout_is_one_korean_error(tmp_path):
    entry = tmp_path / "model"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from workshop_utils.runtime.cachelock import cache_lock
        with cache_lock(Path({str(entry)!r}), "test"):
            print("held", flush=True)
            time.sleep(3)
    """)], env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(TimeoutError, match="잠금이 풀리지 않았습니다"):
        with cache_lock(entry, "test", timeout=0.2, verbose=False):
            pass
    holder.kill()
    holder.wait()


def test_shared_tmpdir_is_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        d = shared_tmpdir(tmp_path, ".convert-")
    finally:
        os.umask(old)
    assert d.parent == tmp_path and d.name.startswith(".convert-")
    assert d.stat().st_mode & 0o777 == 0o755  # mkdtemp alone would give 0o700


def test_gguf_parsed_once_shares_one_reader_per_file_and_restores_gguf(tmp_path):
    """The conversion's speed-up (model/sources.py): inside the block one reader per file and one tensor-name map
    per architecture serve every caller; afterwards gguf is as it was."""
    import gguf
    import numpy as np

    from workshop_utils.model.sources import gguf_parsed_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 2), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    real_reader, real_name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with gguf_parsed_once():
        first = gguf.GGUFReader(str(path))
        assert gguf.GGUFReader(tmp_path / "." / "tiny.gguf") is first
        assert first.fields["general.architecture"].contents() == "llama"
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 1) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 1)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (real_reader, real_name_map)
    assert gguf.GGUFReader(str(path)) is not first
