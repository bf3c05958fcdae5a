"""Run by tests/test_distributed.py under `accelerate launch --cpu --num_processes 2` (gloo).

Usage: dist_check.py OUT MODEL [resume CHECKPOINT]. Trains MODEL (the test passes the tiny random model: this
checks the processes' plumbing, not learning) in tiny size with the workshop's own `train` for a 3-step run that
stops after step 2 (or, with "resume <checkpoint>", continues from that checkpoint in a new run folder, since
the first run is finished), records each rank's LoRA weights, and lets rank 0 write the adapter.
"""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

from workshop_utils.config import load_config
from workshop_utils.data.prepare import load_splits
from workshop_utils.model.load import load_model
from workshop_utils.runtime.distributed import dist_info, main_process_first
from workshop_utils.train.trainer import train

out, model_id = Path(sys.argv[1]), sys.argv[2]
resume = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "resume" else False
info = dist_info()
cfg = load_config("tiny", **{"train.max_steps": 3, "train.eval_steps": 0, "train.save_steps": 1,
                             "train.output_dir": str(out / "run"), "build_dir": str(out / "build"),
                             "model.model_id": model_id})
with main_process_first():
    splits = load_splits(cfg)
loaded = load_model(cfg.model, verbose=info.is_main)


class Interrupt(TrainerCallback):
    """Stop after step 2, as if the job had been killed there (its checkpoint is written first)."""

    def on_step_end(self, args, state, control, **kw):
        if state.global_step == 2:
            control.should_training_stop = True


model, res = train(loaded.model, loaded.tokenizer, splits, cfg, resume=resume,
                   callbacks=None if resume else [Interrupt()])
lora = {n: p.detach().float().cpu() for n, p in model.named_parameters() if "lora_" in n}
digest = hashlib.sha256(b"".join(lora[n].numpy().tobytes() for n in sorted(lora))).hexdigest()
(out / f"{'resume-' if resume else ''}rank{info.rank}.json").write_text(json.dumps({
    "rank": info.rank, "world_size": info.world_size,
    "backend": str(dist.get_backend_config()) if dist.is_initialized() else None, "resumed_from": res.resumed_from,
    "digest": digest, "lora_b_abs_sum": float(sum(v.abs().sum() for n, v in lora.items() if "lora_B" in n)),
    "steps": res.steps, "pid": os.getpid()}))
