"""Benchmark (not a test): batched vs one-by-one greedy generation with the library's `generate`.

Same prompts (RAFT test examples, golden + distractors, rendered with the chat template), same number
of new tokens (min_new_tokens = max_new_tokens, so a random-weight model cannot stop early), one
loaded 4-bit model. Prints tokens/s for batch 1 and batch B and the speed-up.

Usage: python scripts/bench_generation.py [--batch 16] [--new-tokens 64]
  (model from WORKSHOP_MODEL, e.g. random:exaone:layers=8 on the GPU machine)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch

    from workshop_utils.config import load_config
    from workshop_utils.data.prepare import load_splits
    from workshop_utils.data.prompts import render_prompt
    from workshop_utils.evaluate.generation import generate
    from workshop_utils.model.load import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    cfg = load_config()
    loaded = load_model(cfg.model)
    tok = loaded.tokenizer
    prompts = [render_prompt(tok, ex) for ex in load_splits(cfg)["test"][: a.batch]]
    kw = {"min_new_tokens": a.new_tokens}
    generate(loaded.model, tok, prompts[:2], a.new_tokens, 2, progress=False, **kw)  # warm-up
    rows = []
    for bs in (1, a.batch):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        r = generate(loaded.model, tok, prompts, a.new_tokens, bs, progress=False, **kw)
        rows.append({"batch_size": bs, "prompts": len(prompts), "new_tokens": sum(r.new_tokens),
                     "seconds": round(r.seconds, 2), "tokens_per_s": round(r.tokens_per_second, 1)})
    speedup = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    result = {"device": device, "model": loaded.choice.model_id, "rows": rows, "speedup": round(speedup, 2)}
    for r in rows:
        print(f"batch {r['batch_size']:>3}: {r['tokens_per_s']:>8.1f} new tokens/s ({r['seconds']} s for {r['prompts']} prompts)")
    print(f"speed-up batch {a.batch} vs 1: {speedup:.1f}x on {device}")
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
