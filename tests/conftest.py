"""Shared fixtures. Tests never touch the Hugging Face Hub (HF_HUB_OFFLINE=1 is forced here too)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))  # workshop_bootstrap.py (Colab set-up) lives at the root, outside the package


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


# A 3-layer, 64-wide EXAONE-shaped model with random weights (model/sources.py; the offline model's tokenizer), saved
# once into the model cache: it goes through the same 4-bit + LoRA + Trainer code as the offline model, in seconds
# instead of minutes on 2 CPU cores. For tests of plumbing (checkpoints, resume, several processes, what is written
# where), never for tests of what a model learns; the notebooks run the same paths with the offline model.
TINY_RANDOM_MODEL = "random:exaone:layers=3,hidden=64,intermediate=128,heads=4,kv_heads=2"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    """The model id of the tiny random model (TINY_RANDOM_MODEL)."""
    return TINY_RANDOM_MODEL


@pytest.fixture(scope="session")
def tiny_cfg(tmp_path_factory):
    """A tiny config whose build directory is private to the test session."""
    from workshop_utils.config import load_config

    return load_config(size="tiny", build_dir=str(tmp_path_factory.mktemp("build")))


@pytest.fixture(scope="session")
def offline_dir():
    from workshop_utils.model.sources import offline_model_dir

    return offline_model_dir()


@pytest.fixture(scope="session")
def tokenizer(offline_dir):
    from workshop_utils.model.load import load_tokenizer

    return load_tokenizer(str(offline_dir))


@pytest.fixture(scope="session")
def prepared(tiny_cfg):
    """The shipped data prepared once with the tiny RAFT settings."""
    from workshop_utils.data.prepare import data_dir, prepare

    return prepare(tiny_cfg.data.raw_paths, data_dir(tiny_cfg), tiny_cfg.data)
