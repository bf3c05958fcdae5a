"""Several processes through torch.distributed (gloo on CPU): the workshop's training runs unchanged.

The slow test launches 2 processes with torch's launcher (the one `accelerate launch` uses for GPUs;
accelerate's own CPU multi-process mode needs MPI) over tests/helpers/dist_check.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workshop_utils.model.shape import EXAONE_7_8B
from workshop_utils.runtime.distributed import dist_info, effective_batch
from workshop_utils.train.memory import estimate, scaling_table

ROOT = Path(__file__).resolve().parents[1]


def test_dist_info_reads_launcher_env(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    info = dist_info()
    assert (info.rank, info.world_size, info.fsdp, info.is_main, info.distributed) == (1, 2, True, False, True)
    assert "FSDP" in info.line()
    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_FSDP"):
        monkeypatch.delenv(k)
    assert dist_info().is_main and not dist_info().distributed


def test_effective_batch_is_the_seeds_formula():
    assert effective_batch(4, 4, 2)[0] == 32
    assert "4 (GPU당 배치) x 4 (누적) x 2 (GPU)" in effective_batch(4, 4, 2)[1]


def test_fsdp_shards_weights_ddp_does_not():
    ddp = estimate(EXAONE_7_8B, 4096, checkpoint_layers=32, gpus=4, strategy="ddp")
    fsdp = estimate(EXAONE_7_8B, 4096, checkpoint_layers=32, gpus=4, strategy="fsdp")
    assert fsdp["weights"] < ddp["weights"] / 2 and fsdp["total"] < ddp["total"]
    assert estimate(EXAONE_7_8B, 4096, checkpoint_layers=32, gpus=1, strategy="fsdp")["total"] == pytest.approx(
        ddp["total"])
    rows = scaling_table(EXAONE_7_8B, [1, 2, 4])
    assert [r["유효 배치"] for r in rows] == [16, 32, 64]
    assert rows[2]["FSDP-QLoRA GiB/GPU (추정)"] < rows[2]["DDP GiB/GPU (추정)"]


def test_accelerate_configs_parse():
    import yaml

    ddp = yaml.safe_load((ROOT / "configs/accelerate/ddp.yaml").read_text())
    fsdp = yaml.safe_load((ROOT / "configs/accelerate/fsdp_qlora.yaml").read_text())
    assert ddp["distributed_type"] == "MULTI_GPU"
    assert fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_use_orig_params"] is False
    assert fsdp["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] is False  # 4-bit load per GPU, then shard


def _launch(out: Path, model_id: str, *extra: str) -> None:
    # loopback only: gloo otherwise picks the interface the host name resolves to, which sandboxes may lack
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", WORKSHOP_KO_TOKENIZER="whitespace",
               GLOO_SOCKET_IFNAME="lo", MASTER_ADDR="127.0.0.1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", "29561",
           str(ROOT / "tests/helpers/dist_check.py"), str(out), model_id, *extra]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_two_process_training_same_lora_weights_adapter_loads_and_resumes(tmp_path, tiny_model):
    _launch(tmp_path, tiny_model)  # the tiny random model: the same 4-bit + LoRA + Trainer path, in seconds
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 and "gloo" in r["backend"] for r in ranks)
    assert ranks[0]["digest"] == ranks[1]["digest"]  # DDP averaged the LoRA gradients
    assert ranks[0]["lora_b_abs_sum"] > 0  # and the adapter moved away from its zero init
    (run,) = [p for p in (tmp_path / "run").iterdir() if p.is_dir()]  # one run folder, written by rank 0
    assert sorted(p.name for p in run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in (run / "checkpoint-2").glob("rng_state_*.pth")) == ["rng_state_0.pth",
                                                                                     "rng_state_1.pth"]
    # resume: both ranks continue from the same checkpoint, into one new run folder (the first run stays)
    _launch(tmp_path, tiny_model, "resume", str(run / "checkpoint-2"))
    resumed = [json.loads((tmp_path / f"resume-rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["steps"] == 3 and r["resumed_from"].endswith("checkpoint-2") for r in resumed)
    assert resumed[0]["digest"] == resumed[1]["digest"] != ranks[0]["digest"]
    # the adapter rank 0 wrote loads onto the base model
    from peft import PeftModel

    from workshop_utils.config import ModelSettings
    from workshop_utils.model.load import load_model

    loaded = load_model(ModelSettings(model_id=tiny_model), verbose=False)
    (resumed_run,) = [p for p in (tmp_path / "run").iterdir() if p.is_dir() and p != run]
    assert (run / "adapter" / "adapter_config.json").is_file()
    model = PeftModel.from_pretrained(loaded.model, str(resumed_run / "adapter"))
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_fsdp_launch_stores_4bit_weights_in_the_compute_dtype(monkeypatch):
    import torch

    from workshop_utils.config import ModelSettings
    from workshop_utils.model.load import bnb_config
    from workshop_utils.runtime.distributed import single_process_env

    assert bnb_config(ModelSettings(), torch.bfloat16, fsdp=True).bnb_4bit_quant_storage == torch.bfloat16
    assert bnb_config(ModelSettings(), torch.bfloat16).bnb_4bit_quant_storage == torch.uint8
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with single_process_env():  # rank 0's evaluation after an FSDP run loads an ordinary model
        assert not dist_info().fsdp
    assert dist_info().fsdp


def test_fsdp_gets_one_dtype_per_unit():
    """FSDP flattens a unit's parameters into one tensor: the fp32 LoRA weights join the bf16 storage."""
    import torch

    from workshop_utils.train.trainer import fsdp_uniform_dtype

    model = torch.nn.Sequential(torch.nn.Linear(4, 4).to(torch.bfloat16), torch.nn.Linear(4, 2),
                                torch.nn.LayerNorm(2))
    model[0].requires_grad_(False)
    model[2].requires_grad_(False)  # frozen but upcast to fp32 (peft's k-bit preparation does that)
    assert fsdp_uniform_dtype(model, torch.bfloat16) == 4
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert all(p.requires_grad for p in model[1].parameters())


def test_measured_scaling_rows_compare_with_one_gpu():
    from workshop_utils.teaching.fine_tuning import measured_scaling

    rows = {(r["방식"], r["GPU 수"]): r for r in measured_scaling()}
    assert rows[("DDP", 1)]["1 GPU 대비"] == 1.0 and rows[("DDP", 2)]["1 GPU 대비"] >= 1.8  # issue 9's target
    assert rows[("FSDP-QLoRA", 2)]["GPU당 최대 할당 GiB"] < rows[("FSDP-QLoRA", 1)]["GPU당 최대 할당 GiB"]
