"""Benchmark QLoRA training recipes (tokens/s, peak memory): the same as `workshop bench`.

    python scripts/bench_train.py                       # all recipes, EXAONE-3.0-7.8B shape (GPU)
    python scripts/bench_train.py --layers 4 --steps 2  # a quick check
    python scripts/bench_train.py --shape tiny          # CPU self-test
"""
import sys

from workshop_utils.bench import main

if __name__ == "__main__":
    sys.exit(main())
