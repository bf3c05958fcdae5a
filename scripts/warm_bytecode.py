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
import pkgutil
import subprocess
import sys
import time

# torch alone (installed first): `--group torch` compiles it while pip installs the rest, on the core pip leaves idle.
TORCH_ONLY = ("torch", "torch._dynamo", "torch._inductor.compile_fx", "torch.distributed.run")
# Then two processes at once (about 30 s instead of 42 s on 2 cores): here the torch stack and every workshop_utils
# module; in `--group other` the libraries that do not need torch (workshop_utils imports them too, so they are
# usually compiled by the time this process reaches them).
TORCH_STACK = TORCH_ONLY + ("transformers", "transformers.trainer", "transformers.models.llama.modeling_llama",
                            "transformers.generation.utils", "peft", "peft.tuners.lora", "bitsandbytes.nn",
                            "accelerate", "sentence_transformers")
OTHER = ("pandas", "matplotlib.pyplot", "scipy.stats", "sklearn", "nltk", "sacrebleu", "rouge_score.rouge_scorer",
         "datasets", "ipykernel.kernelapp", "jupyter_client", "nbformat", "nbval.plugin", "pytest", "xdist",
         "importlinter")
GROUPS = {"torch": TORCH_ONLY, "other": OTHER}


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
    other = subprocess.Popen([sys.executable, __file__, "--group", "other"])
    skipped = import_all(TORCH_STACK)
    import workshop_utils

    names = [m.name for m in pkgutil.walk_packages(workshop_utils.__path__, "workshop_utils.")]
    skipped += import_all(names)
    other.wait()
    print(f"[install] bytecode: {len(TORCH_STACK) + len(names) + len(OTHER)} modules imported and compiled "
          f"in {time.perf_counter() - start:.0f}s" + (f"; skipped {', '.join(skipped)}" if skipped else ""))
    return 0


if __name__ == "__main__":
    sys.dont_write_bytecode = False  # whatever PYTHONDONTWRITEBYTECODE says: writing the .pyc is the point
    if sys.argv[1:2] == ["--group"]:
        group = sys.argv[2]
        skipped = import_all(GROUPS[group])
        if skipped and group != "torch":  # torch's warm-up runs beside pip's install: a miss is compiled later
            print(f"[install] bytecode: skipped {', '.join(skipped)}")
        sys.exit(0)
    sys.exit(main())
