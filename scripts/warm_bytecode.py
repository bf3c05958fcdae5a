"""Compile, once, the bytecode of what the workshop imports (`make install`'s last step).

`make` installs with `pip install --no-compile`: pip would otherwise byte-compile all ~18,400 installed files one
after another (~80 s of set-up on the 2-core CI machine), most of which nothing imports. Python compiles a
module when it is first imported and keeps the .pyc, so this script imports every `workshop_utils` module and
what the notebooks, the kernel and the tests load, which writes their bytecode now instead of in every process:
torch's part (`--group torch`) while pip installs the rest, the others after (~30 s, in two processes). The
Makefile unexports PYTHONDONTWRITEBYTECODE (set in some sandboxes and CI images) so that the .pyc files are
written, here and by make's own processes; with it set, every process would compile every module it imports
again. A module that cannot be imported here (e.g. a GPU-only kernel on a CPU machine) is skipped: this only
warms a cache, it checks nothing.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import time

# Two groups, compiled at once by two processes (about 30 s instead of 42 s on 2 cores): the torch stack and every
# workshop_utils module here; in a second process the libraries that do not need torch (imported by workshop_utils
# too, so they are usually compiled by the time this process reaches them).
# Only torch (installed first): `--group torch` compiles it while pip installs the rest, on the core pip leaves idle.
TORCH_ONLY = ("torch", "torch._dynamo", "torch._inductor.compile_fx", "torch.distributed.run")
TORCH_GROUP = ("torch", "torch._dynamo", "torch.distributed.run", "transformers", "transformers.trainer",
               "transformers.models.llama.modeling_llama", "transformers.generation.utils", "peft", "peft.tuners.lora",
               "bitsandbytes.nn", "accelerate", "sentence_transformers")
OTHER_GROUP = ("pandas", "matplotlib.pyplot", "scipy.stats", "sklearn", "nltk", "sacrebleu", "rouge_score.rouge_scorer",
               "datasets", "ipykernel.kernelapp", "jupyter_client", "nbformat", "nbval.plugin", "pytest", "xdist",
               "importlinter")


def import_all(names) -> list[str]:
    """Import each module; the names of those that failed, with the error's type."""
    skipped = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a cache warm-up; the tests import these for real
            skipped.append(f"{name} ({type(err).__name__})")
    return skipped


def main() -> int:
    start = time.perf_counter()
    sys.dont_write_bytecode = False
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    other = subprocess.Popen([sys.executable, __file__, "--group", "other"], env=env)
    skipped = import_all(TORCH_GROUP)
    import workshop_utils

    names = [m.name for m in pkgutil.walk_packages(workshop_utils.__path__, "workshop_utils.")]
    skipped += import_all(names)
    other.wait()
    print(f"[install] bytecode: {len(TORCH_GROUP) + len(names) + len(OTHER_GROUP)} modules imported and compiled "
          f"in {time.perf_counter() - start:.0f}s" + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--group"]:
        sys.dont_write_bytecode = False
        torch_only = sys.argv[2:] == ["torch"]
        skipped = import_all(TORCH_ONLY if torch_only else OTHER_GROUP)
        if skipped and not torch_only:  # torch's warm-up runs beside pip's install: a miss is compiled later
            print(f"[install] bytecode: skipped {', '.join(skipped)}")
        sys.exit(0)
    sys.exit(main())
