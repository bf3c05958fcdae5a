"""Compile, once, the bytecode of what the workshop imports (`make install`'s last step).

`make` installs with `pip install --no-compile`: pip would otherwise byte-compile all ~18,400 installed files one
after another (~80 s of set-up on the 2-core CI machine), most of which nothing imports. Python compiles a
module when it is first imported and keeps the .pyc, so this script imports every `workshop_utils` module and
what the notebooks, the kernel and the tests load, which writes their bytecode now (~25 s) instead of in every
process. The Makefile unexports PYTHONDONTWRITEBYTECODE (set in some sandboxes and CI images) so that the .pyc
files are written, here and by make's own processes; with it set, every process would compile every module it
imports again. A module that cannot be imported here (e.g. a GPU-only kernel on a CPU machine) is skipped: this
only warms a cache, it checks nothing.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import time

# Imported lazily by the library, the notebooks or the test suite, so not reached by importing workshop_utils.
EXTRA = ("transformers.trainer", "transformers.models.llama.modeling_llama", "transformers.generation.utils",
         "peft.tuners.lora", "bitsandbytes.nn", "accelerate", "datasets", "sentence_transformers",
         "torch._dynamo", "torch.distributed.run", "matplotlib.pyplot", "pandas", "sacrebleu", "rouge_score.rouge_scorer",
         "ipykernel.kernelapp", "jupyter_client", "nbformat", "nbval.plugin", "pytest", "xdist", "importlinter")


def main() -> int:
    start = time.perf_counter()
    sys.dont_write_bytecode = False
    import workshop_utils

    names = [m.name for m in pkgutil.walk_packages(workshop_utils.__path__, "workshop_utils.")]
    skipped = []
    for name in (*names, *EXTRA):
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 - a cache warm-up; the tests import these for real
            skipped.append(f"{name} ({type(err).__name__})")
    print(f"[install] bytecode: {len(names) + len(EXTRA) - len(skipped)} modules imported and compiled "
          f"in {time.perf_counter() - start:.0f}s" + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
