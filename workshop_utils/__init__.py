"""QLoRA/RAFT workshop library: the notebooks show, this package does."""
import os as _os

__version__ = "0.1.0"

# Colab's runtime (and many GPU images) ship JAX and TensorFlow beside PyTorch. When any library in the process
# starts JAX's GPU backend it takes 75% of the card for itself (TensorFlow: nearly all of it) before training begins.
# Measured on the H200 (2026-11-30): every `workshop train` process held 105.4 GiB of 139.8 outside PyTorch from its
# first seconds, so the memory plan saw 34 GiB free and two lanes on one card ran out of memory. Ask both to allocate
# on demand; a value the user set stays.
GPU_ALLOCATION_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "true"}
for _name, _value in GPU_ALLOCATION_ENV.items():
    _os.environ.setdefault(_name, _value)
