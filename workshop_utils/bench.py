"""`workshop bench`: tokens/s and peak memory of QLoRA training recipes, in one run on one GPU.

The model is EXAONE-3.0-7.8B-shaped with random weights (no download; `--layers` or `--shape tiny` for
quick checks), loaded through the same 4-bit path as the real model; the data are synthetic RAFT-length
sequences (~1,050 tokens on average, answers of 48-192 tokens), the same for every recipe. Every
recipe trains through the workshop's own Trainer set-up (training.assemble_trainer); tokens/s counts
non-padding tokens (the Trainer's `num_input_tokens_seen`) over the timed steps, after warm-up steps
(with `--attention flex_attention`, it compiles during them).

Recipes (ratios are meaningful within one run only: the same recipe moves ~15% between machines):
  seed     the seed's recipe as written: padded batches 4 x 4, no checkpointing, full logits
  hf_gc    the usual recipe on <= 24 GB cards: the seed's + gradient checkpointing -- the baseline
  hf_lean  HF Trainer + gradient checkpointing, padded 4 x 4, embeddings/lm_head kept in bf16 (no fp32
           upcast): the peer kit's `gc` variant (../shared/tools/peer), the strongest plain-HF recipe
  default  the project's default on this card (fast path, memory budget = 85% of the card)
  budget8  the fast path under an 8 GiB budget (what it picks on a small card), forced here
  t4       16 GB mode: fp16, kernels of compute capability 7.5 only, every layer checkpointed, fused
           loss (T4 class), forced here
A fast-path recipe takes an attention override after '@', e.g. `default@sdpa` next to `default`
(workshop_varlen where the kernel runs) shows what the attention backend alone is worth, and options
after '+': `+compile` / `+nocompile` / `+compile_liger` set train.compile_layers to on / off / liger
(`budget8+nocompile` next to `budget8` shows what the compiled decoder layers are worth), `+fp8` sets
train.fp8_backward=on (the frozen weights' input gradients in FP8: `default+fp8`), `+nodrop` sets LoRA dropout 0 (as
the peer kit trains Unsloth), `+peftdrop` keeps peft's Philox dropout masks instead of the hashed ones.
`--peer-kit DIR --peer VARIANT...` runs the peer kit's variants (Unsloth, plain HF) in the same call
and adds their rows (`peer:VARIANT`; their own data and timing, see the kit's README).
"""
from __future__ import annotations

import gc
import json
import platform
import random
import time
from pathlib import Path

RECIPES = {
    "seed": "시드 레시피 그대로 (패딩 배치 4x4, 체크포인팅 없음, 전체 logits)",
    "hf_gc": "HF + gradient checkpointing (24GB 이하 카드의 통상 레시피) = 기준",
    "hf_lean": "HF + gradient checkpointing, 임베딩·lm_head bf16 (fp32 업캐스트 없음) = 피어 키트의 gc",
    "default": "이 프로젝트 기본 (고속 경로, 예산 = 카드의 85%)",
    "budget8": "고속 경로, 메모리 예산 8 GiB (작은 카드에서 고르는 구성)",
    "t4": "16GB 모드 (T4급: fp16, compute capability 7.5 커널만, 전체 체크포인팅, fused loss)",
}


BASELINE = "hf_gc"
LEAN_BASELINE = "hf_lean"
PLAIN_RECIPES = ("seed", "hf_gc", "hf_lean")  # the fast path off: no '@' or '+' options
ATTENTIONS = ("auto", "sdpa", "workshop_varlen", "workshop_varlen_efficient", "flex_attention")
# '+option' -> (setting, value): a TrainSettings field, or 'section.field' of another part of the config.
# nodrop: LoRA without dropout -- the peer kit's Unsloth variants train that way (Unsloth's fast LoRA path wants
# lora_dropout=0), the workshop's config and the HF baselines use 0.05; the first step's loss is the same (B = 0)
OPTIONS = {"compile": ("compile_layers", "on"), "nocompile": ("compile_layers", "off"),
           "compile_liger": ("compile_layers", "liger"), "noactoffload": ("offload_activations", "off"),
           "fp8": ("fp8_backward", "on"), "nodrop": ("lora.lora_dropout", 0.0),
           "peftdrop": ("lora_dropout_masks", "peft")}


def split_recipe(name: str) -> tuple[str, str | None]:
    """'default@sdpa+nocompile' -> ('default', 'sdpa'); 'hf_gc' -> ('hf_gc', None); the options are
    checked here too (recipe_options)."""
    head, *opts = name.split("+")
    base, _, attn = head.partition("@")
    if base not in RECIPES:
        raise ValueError(f"알 수 없는 레시피 {base!r}: {list(RECIPES)}")
    if attn and (base in PLAIN_RECIPES or attn not in ATTENTIONS):
        raise ValueError(f"{name!r}: '@어텐션'은 고속 경로 레시피에만, {ATTENTIONS} 중 하나")
    bad = [o for o in opts if o not in OPTIONS]
    if bad or (opts and base in PLAIN_RECIPES):
        raise ValueError(f"{name!r}: '+옵션'은 고속 경로 레시피에만, {list(OPTIONS)} 중 하나 (받은 값: {bad or opts})")
    return base, attn or None


def recipe_options(name: str) -> dict:
    """The settings a recipe's '+options' set: {'compile_layers': 'off'} for 'budget8+nocompile' (train settings;
    'section.field' for another part of the config: {'lora.lora_dropout': 0.0} for 'default+nodrop')."""
    split_recipe(name)
    return dict(OPTIONS[o] for o in name.split("+")[1:])


def describe_recipe(name: str) -> str:
    base, attn = split_recipe(name)
    opts = recipe_options(name)
    return (RECIPES[base] + (f" [attention={attn}]" if attn else "")
            + "".join(f" [{k}={v}]" for k, v in opts.items()))


SHAPES = {
    "exaone": "random:exaone",
    "tiny": "random:exaone:layers=2,hidden=64,intermediate=128,heads=4,kv_heads=2",
}


def synthetic_raft(n: int, vocab: int, avoid: set[int], mean: int = 1050, sd: int = 280, lo: int = 384,
                   hi: int = 2048, answer: tuple[int, int] = (48, 192), seed: int = 0) -> list[dict]:
    """Token sequences with RAFT-like lengths: prompt (instruction + 5 documents + question) masked,
    answer (+ end of turn) labelled. Token ids avoid the special/pad ids."""
    from .data.prompts import IGNORE_INDEX

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        total = int(min(hi, max(lo, rng.gauss(mean, sd))))
        a = min(rng.randint(*answer), total // 2)
        ids = []
        while len(ids) < total:
            t = rng.randrange(10, vocab)
            if t not in avoid:
                ids.append(t)
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (total - a) + ids[total - a:]})
    return out


def scaled_tiny_lengths() -> dict:
    """Short sequences for the CPU self-test of the tiny shape."""
    return {"mean": 96, "sd": 24, "lo": 48, "hi": 160, "answer": (8, 24)}


class StepTimer:
    """A TrainerCallback timing optimizer steps end to end (data, forward, backward, optimizer). The timed
    window runs from the end of step `warmup` to the end of the last step, each end CUDA-synchronized, and
    the Trainer's non-padding token count is read at the same two points (as the peer kit times its runs).
    Between them nothing waits for the GPU: each step's end is a CUDA event, read after the window, so a
    trainer that keeps the GPU fed across step boundaries (train/nowait.py) is measured as it runs."""

    def __init__(self, warmup: int, end: int):
        import torch
        from transformers import TrainerCallback

        self.warmup, self.end = warmup, end
        self.step_seconds: list[float] = []
        self.t0 = self.tok0 = self.t1 = self.tok1 = None
        self.first_step_peak = 0
        self._marks: list = []  # the start and each step's end: CUDA events, or perf_counter() off CUDA
        timer = self
        cuda = torch.cuda.is_available()

        def mark():
            if not cuda:
                return time.perf_counter()
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event

        class _CB(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                _sync()
                timer._marks = [mark()]

            def on_step_end(self, args, state, control, **kw):
                timer._marks.append(mark())
                if state.global_step == 1 and cuda:
                    # the first step also holds one-off allocations (FSDP's unsharded load, workspaces)
                    timer.first_step_peak = torch.cuda.max_memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                step = state.global_step
                last = step == timer.end or (timer.warmup < step < timer.end and control.should_training_stop)
                if step == timer.warmup or last:  # the window's two ends: wait for the GPU there only
                    _sync()
                    now = time.perf_counter()
                    if last:
                        timer.t1, timer.tok1 = now, state.num_input_tokens_seen
                    else:
                        timer.t0, timer.tok0 = now, state.num_input_tokens_seen
                    timer._read_marks()

        self.callback = _CB()

    def _read_marks(self) -> None:
        """Step durations from the marks (all finished: read after a synchronization)."""
        m = self._marks
        if m and not isinstance(m[0], float):
            self.step_seconds = [a.elapsed_time(b) / 1000 for a, b in zip(m, m[1:])]
        else:
            self.step_seconds = [b - a for a, b in zip(m, m[1:])]

    def tokens_per_second(self) -> float:
        if self.t0 is None or self.t1 is None or self.t1 <= self.t0:
            return float("nan")
        return (self.tok1 - self.tok0) / (self.t1 - self.t0)


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def recipe_config(name: str, model_id: str, steps: int, on_cuda: bool, attention: str = "auto",
                  options: dict | None = None):
    """The WorkshopConfig of one recipe (size full: the seed's 4 x 4 batches, LoRA r=16 q/k/v/o);
    `options`: train settings from the recipe's '+options' (recipe_options)."""
    from .config import load_config

    cfg = load_config("full")
    cfg.model.model_id = model_id
    cfg.model.max_seq_length = 4096
    t = cfg.train
    t.max_steps, t.eval_steps, t.logging_steps, t.warmup_steps = steps, 0, 1, 0
    t.report_to = []
    if name in PLAIN_RECIPES:
        t.fast_path = "off"
        t.completion_only_logits = False  # the seed's loss: logits over every position
        t.gradient_checkpointing = "off" if name == "seed" else "on"
    else:
        t.fast_path = "on"
        cfg.model.attn_implementation = attention
        if name == "budget8":
            t.memory_budget_gib = 8.0
        if name == "t4":
            t.memory_mode = "16gb"
            cfg.model.compute_dtype = "float16"
    for key, value in (options or {}).items():
        section, _, field = key.rpartition(".")
        setattr(getattr(cfg, section) if section else t, field, value)
    if not on_cuda:
        cfg.model.compute_dtype = "float32"
    return cfg


class StepProfiler:
    """A TrainerCallback that profiles one optimizer step (the one after `after`) with torch.profiler
    and writes the kernels that took the most GPU time."""

    def __init__(self, after: int, path: Path):
        import torch
        from transformers import TrainerCallback

        prof = self
        self.after, self.path, self.prof = after, path, None

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                from torch.profiler import ProfilerActivity, profile

                if state.global_step == prof.after:
                    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
                    prof.prof = profile(activities=acts)
                    prof.prof.__enter__()
                elif state.global_step == prof.after + 1 and prof.prof is not None:
                    _sync()
                    prof.prof.__exit__(None, None, None)
                    key = "self_device_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                    table = prof.prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70)
                    if torch.cuda.is_available():
                        table += "\n" + prof.idle_report()
                    prof.path.write_text(table)
                    print(table[:9000])

        self.callback = _CB()

    def idle_report(self) -> str:
        """GPU idle time in the profiled step (idle_gaps); the chrome trace is kept beside it, gzipped."""
        import gzip
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            self.prof.export_chrome_trace(str(trace))
            raw = trace.read_bytes()
        with gzip.open(self.path.with_suffix(".trace.json.gz"), "wb") as f:
            f.write(raw)
        return format_idle_gaps(idle_gaps(json.loads(raw)["traceEvents"]))


# --- where the GPU waits: idle gaps in a profiled step --------------------------------------------------
GPU_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
CPU_CATEGORIES = ("cpu_op", "user_annotation", "python_function")


def idle_gaps(events: list[dict], min_us: float = 50.0) -> dict:
    """The GPU's idle time within a profiled window (torch.profiler's chrome-trace events).

    Busy = the union of kernel/memcpy/memset intervals on all streams; the window runs from the first
    CPU event to the last CPU event's end. Each idle gap of at least `min_us` is charged to what the CPU
    was doing when it launched the work that ended the gap: the chain of CPU ops (outermost first)
    enclosing that launch on its thread. `waited_for_cpu`: the launch came after the gap began (the GPU
    waited for the host), else the work was queued but held back (a stream wait, a copy from pageable
    memory). Returns {window_us, busy_us, idle_us, gaps: [...], by_op: {outermost op: us}, syncs: {...}}.
    """
    import numpy as np

    gpu = sorted((e["ts"], e["ts"] + e.get("dur", 0), e) for e in events
                 if e.get("ph") == "X" and e.get("cat") in GPU_CATEGORIES)
    cpu = [e for e in events if e.get("ph") == "X" and e.get("cat") in CPU_CATEGORIES]
    if not gpu or not cpu:
        return {"window_us": 0.0, "busy_us": 0.0, "idle_us": 0.0, "gaps": [], "by_op": {}, "syncs": {}}
    start = min(e["ts"] for e in cpu)
    end = max(e["ts"] + e.get("dur", 0) for e in cpu)
    launches = {e["args"]["correlation"]: e for e in events
                if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    by_thread: dict = {}
    for e in cpu:
        by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    spans = {k: (np.array([e["ts"] for e in v], dtype=float), np.array([e["ts"] + e.get("dur", 0) for e in v], dtype=float))
             for k, v in by_thread.items()}

    def chain(at: float, thread) -> list[str]:
        if thread not in spans:
            return []
        ts, te = spans[thread]
        inside = [by_thread[thread][i] for i in np.flatnonzero((ts <= at) & (te >= at))]
        inside.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
        return [e["name"] for e in inside]

    gaps, busy, cursor = [], 0.0, start
    for s, t, e in gpu:
        s, t = max(s, start), min(t, end)
        if t <= cursor:
            continue
        if s > cursor:
            if s - cursor >= min_us:
                launch = launches.get(e.get("args", {}).get("correlation"))
                ops = chain(launch["ts"], (launch.get("pid"), launch.get("tid"))) if launch else []
                gaps.append({"at_us": round(cursor - start, 1), "us": round(s - cursor, 1),
                             "next": e.get("name", "")[:80], "ops": ops,
                             "waited_for_cpu": bool(launch) and launch["ts"] > cursor})
            busy += t - s
        else:
            busy += t - cursor
        cursor = max(cursor, t)
    if end - cursor >= min_us:
        gaps.append({"at_us": round(cursor - start, 1), "us": round(end - cursor, 1), "next": "(end of window)",
                     "ops": [], "waited_for_cpu": True})
    by_op: dict[str, float] = {}
    for g in gaps:
        ops = g["ops"]
        key = (ops[0] + (f" > {ops[-1]}" if len(ops) > 1 else "")) if ops else g["next"]
        by_op[key] = by_op.get(key, 0.0) + g["us"]
    syncs: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "cuda_runtime" and "Synchronize" in e.get("name", "") and start <= e["ts"] <= end:
            syncs[e["name"]] = syncs.get(e["name"], 0.0) + e.get("dur", 0)
    window = end - start
    return {"window_us": round(window, 1), "busy_us": round(busy, 1), "idle_us": round(window - busy, 1),
            "gaps": sorted(gaps, key=lambda g: -g["us"]),
            "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "syncs": syncs}


def format_idle_gaps(report: dict, top: int = 25) -> str:
    """A few lines: busy/idle totals, idle time by the outermost CPU op, the largest gaps with their ops."""
    w = report["window_us"] or 1.0
    lines = [f"window {w / 1e3:.1f} ms, GPU busy {report['busy_us'] / 1e3:.1f} ms, idle {report['idle_us'] / 1e3:.1f} ms"
             f" ({100 * report['idle_us'] / w:.1f}%); gaps >= threshold: {len(report['gaps'])}, "
             f"{sum(g['us'] for g in report['gaps']) / 1e3:.1f} ms"]
    lines += [f"  idle under {op[:90]}: {us / 1e3:.2f} ms" for op, us in list(report["by_op"].items())[:12]]
    lines += [f"  sync {name}: {us / 1e3:.2f} ms" for name, us in report["syncs"].items()]
    for g in report["gaps"][:top]:
        ops = g["ops"]
        where = " > ".join(ops[:3] + (["..."] if len(ops) > 5 else []) + ops[max(3, len(ops) - 2):])
        lines.append(f"  {g['us'] / 1e3:7.2f} ms at {g['at_us'] / 1e3:8.1f} ms {'cpu ' if g['waited_for_cpu'] else 'wait'}"
                     f" next={g['next'][:50]} | {where[:260]}")
    return "\n".join(lines)


def run_recipe(name: str, model_id: str, data: list[dict], steps: int, warmup: int, out_dir: Path,
               cache: dict, profile: bool = False, attention: str = "auto") -> dict:
    """Load (or reuse) the model, train `warmup + steps` optimizer steps, measure (+1 profiled step)."""
    import torch
    from datasets import Dataset

    from .model.load import load_model
    from .model.lora import apply_lora, base_model
    from .train.trainer import assemble_trainer

    on_cuda = torch.cuda.is_available()
    base, override = split_recipe(name)
    cfg = recipe_config(base, model_id, warmup + steps + int(profile), on_cuda, override or attention,
                        recipe_options(name))
    # recipes that upcast the embeddings to fp32 (peft's prepare_model_for_kbit_training) do not share
    # the loaded model with those that keep them in 16 bits
    key = (cfg.model.compute_dtype, cfg.train.fast_path, base in ("seed", BASELINE))
    if cache.get("key") != key:  # recipes with the same dtype and path reuse the loaded model
        cache.clear()
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        loaded = load_model(cfg.model, verbose=False)
        cache.update(key=key, model=loaded.model, tokenizer=loaded.tokenizer, load_s=time.perf_counter() - t0)
    model, tok = cache["model"], cache["tokenizer"]
    model_gib = None
    if on_cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model_gib = round(torch.cuda.memory_allocated() / 2**30, 2)  # the loaded model before training
    timer = StepTimer(warmup, warmup + steps)
    callbacks = [timer.callback]
    if profile:
        callbacks.append(StepProfiler(warmup + steps, out_dir / f"profile_{name}.txt").callback)
    ds = Dataset.from_list(data)
    row = {"recipe": name, "description": describe_recipe(name)}
    try:
        if base == LEAN_BASELINE:  # LoRA without peft's fp32 upcast, checkpointing on (the peer kit's gc)
            model = apply_lora(model, cfg.lora, gradient_checkpointing=True, upcast_non_4bit=False, seed=0)
        trainer, peft_model, info = assemble_trainer(
            model, tok, ds, None, cfg, callbacks=callbacks, output_dir=str(out_dir / name),
            save_strategy="no", include_num_input_tokens_seen="non_padding", disable_tqdm=True,
            data_seed=0, seed=0)
        plan = info.fast_plan
        t0 = time.perf_counter()
        trainer.train()
        row.update(
            tokens_per_s=round(timer.tokens_per_second(), 1),
            first_step_s=round(timer.step_seconds[0], 2) if timer.step_seconds else None,
            step_s=round(sum(timer.step_seconds[warmup:warmup + steps]) / max(steps, 1), 3),
            train_s=round(time.perf_counter() - t0, 1),
            loss_step1=next((h["loss"] for h in trainer.state.log_history if "loss" in h), None),
            # later steps' losses follow the gradients of the first: recipes that compute the same
            # training (other micro-batching, compiled or not) agree on them too
            losses=[h["loss"] for h in trainer.state.log_history if "loss" in h][:warmup + steps],
            micro_batch=plan.micro_batch if plan.enabled else cfg.train.per_device_train_batch_size,
            grad_accum=plan.grad_accum if plan.enabled else cfg.train.gradient_accumulation_steps,
            checkpointing=(plan.checkpointing if plan.enabled else
                           ("all" if info.gradient_checkpointing else "off")),
            attention=plan.attention if plan.enabled else model.config._attn_implementation,
            liger=info.liger_kernels, padding_free=plan.padding_free if plan.enabled else False,
            dtype=cfg.model.compute_dtype if cfg.model.compute_dtype != "auto" else "bfloat16",
            offload_vocab=plan.offload_vocab if plan.enabled else False,
            offload_activations=plan.offload_activations if plan.enabled else False,
            optim=(plan.optim if plan.enabled and plan.optim else cfg.train.optim),
            estimate_gib=plan.estimate_gib if plan.enabled else None, load_s=round(cache["load_s"], 1),
            model_gib=model_gib, compile_layers=plan.compile_layers if plan.enabled else False,
            compile_reason=plan.reasons.get("compile") if plan.enabled else None,
            fp8_backward=plan.fp8_backward if plan.enabled else False,
            hash_dropout=plan.hash_dropout if plan.enabled else False)
        compiled = getattr(base_model(peft_model), "_workshop_compiled", None)
        if compiled is not None:
            row["compile"] = compiled.stats()  # graphs, graph breaks, seconds; graphs_after_check = recompiles
            compiled.restore()
        drops = getattr(base_model(peft_model), "_workshop_dropout", None)
        if drops is not None:
            drops.restore()
        fp8 = getattr(base_model(peft_model), "_workshop_fp8", None)
        if fp8 is not None:  # the next recipe on this model gets the 4-bit layers back, without the FP8 copies
            fp8.restore()
        # the next recipe on this model starts without this one's adapter
        cache["model"] = peft_model.unload()
        del trainer, peft_model
    except Exception as err:  # noqa: BLE001 - one failing recipe must not lose the others' numbers
        kind = "OOM" if isinstance(err, torch.OutOfMemoryError) else type(err).__name__
        row.update(error=f"{kind}: {str(err)[:300]}")
        import traceback

        traceback.print_exc()
        cache.clear()
    if on_cuda:
        steady = torch.cuda.max_memory_allocated()
        row["peak_after_step1_gib"] = round(steady / 2**30, 2)
        row["peak_allocated_gib"] = round(max(steady, timer.first_step_peak) / 2**30, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return row


def environment() -> dict:
    import torch

    from .runtime.packages import package_version

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "peft", "bitsandbytes", "liger-kernel", "accelerate"):
        env[pkg] = package_version(pkg)
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        env["gpu"] = None
    return env


def run_bench(recipes: list[str] | None = None, shape: str = "exaone", layers: int | None = None,
              steps: int = 4, warmup: int = 2, seqs_per_step: int = 16, out: str | Path = "build/bench",
              seed: int = 0, profile: list[str] | None = None, attention: str = "auto",
              isolate: bool | None = None, peer: list[str] | None = None, peer_kit: str | Path = ".peer",
              time_budget_s: float | None = None, peer_gpu: int | None = None) -> dict:
    """Run the recipes (then the peer kit's `peer` variants), print the table, write `out/bench.json`
    after every recipe. With `time_budget_s` a recipe that would likely end past the budget (judged by
    the longest recipe so far) is skipped and marked so: for device calls with a time limit. With
    `peer_gpu` the peer kit runs at the same time on that GPU (a machine with two or more) instead of after."""
    import torch

    from .model.choice import resolve_model
    from .model.load import load_tokenizer, model_path
    from .model.sources import parse_random_spec
    from .runtime.distributed import dist_info, is_main_process

    on_cuda = torch.cuda.is_available()
    if not on_cuda and shape == "exaone":
        print("[bench] CUDA 없음: CPU에서는 작은 모양(--shape tiny)으로 벤치 자체만 점검합니다")
        shape = "tiny"
    model_id = SHAPES.get(shape, shape)
    if layers:
        model_id = (model_id + ("," if model_id.count(":") == 2 else ":") + f"layers={layers}")
    recipes = recipes or ([r for r in RECIPES] if on_cuda else ["seed", "hf_gc", "default"])
    for r in recipes:
        split_recipe(r)  # unknown names fail before anything loads
    if peer and not (Path(peer_kit) / "peer_bench.sh").exists():
        raise FileNotFoundError(f"피어 키트가 없습니다: {Path(peer_kit) / 'peer_bench.sh'} "
                                "(../shared/tools/peer/build.sh로 만들고 --peer-kit으로 지정하세요)")
    vocab = parse_random_spec(model_id)["vocab"]
    lengths = {} if shape != "tiny" else scaled_tiny_lengths()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = seqs_per_step * (warmup + steps)
    result = {"model": model_id, "env": environment(), "steps": steps, "warmup": warmup,
              "seqs_per_step": seqs_per_step, "processes": dist_info().world_size, "rows": []}
    # the checkpoint (random weights) is written once; token ids avoid its tokenizer's special ids
    t0 = time.perf_counter()
    tok = load_tokenizer(model_path(resolve_model(recipe_config(split_recipe(recipes[0])[0], model_id, 1,
                                                                on_cuda).model)))
    print(f"[bench] 체크포인트 준비 {time.perf_counter() - t0:.0f}s")
    avoid = set(tok.all_special_ids) | {tok.pad_token_id}
    data = synthetic_raft(n, min(vocab, len(tok)), avoid, seed=seed, **lengths)
    lens = [len(d["input_ids"]) for d in data]
    result["data"] = {"sequences": n, "mean_tokens": round(sum(lens) / n, 1), "max_tokens": max(lens)}
    print(f"[bench] 모델 {model_id}, 합성 RAFT 시퀀스 {n}개 (평균 {result['data']['mean_tokens']} 토큰), "
          f"스텝당 {seqs_per_step}개, 웜업 {warmup} + 측정 {steps} 스텝")
    cache: dict = {}
    start = time.perf_counter()
    side = PeerRun(Path(peer_kit), peer, steps + 1, gpu=peer_gpu) if peer and peer_gpu is not None else None
    if isolate is None:  # a fresh process per recipe: nothing one recipe leaves on the GPU counts for the next
        isolate = on_cuda and len(recipes) > 1 and dist_info().world_size == 1
    result["isolated"] = bool(isolate)
    longest = 0.0
    for name in recipes:
        t_recipe = time.perf_counter()
        if time_budget_s and t_recipe - start + longest > time_budget_s:
            print(f"[bench] {name}: 시간 예산 {time_budget_s:.0f}s 안에 끝나지 않을 것 같아 건너뜀", flush=True)
            result["rows"].append({"recipe": name, "description": describe_recipe(name),
                                   "error": f"skipped: time budget {time_budget_s:.0f} s"})
            continue
        print(f"[bench] t={time.perf_counter() - start:.0f}s {name}: {describe_recipe(name)} ...", flush=True)
        if isolate:
            row = run_isolated(name, shape, layers, steps, warmup, seqs_per_step, out_dir, seed,
                               name in (profile or []), attention)
        else:
            row = run_recipe(name, model_id, data, steps, warmup, out_dir, cache, name in (profile or []),
                             attention)
        row["wall_s"] = round(time.perf_counter() - t_recipe, 1)
        longest = max(longest, row["wall_s"])
        result["rows"].append(row)
        _speedups(result["rows"])
        if is_main_process():  # under accelerate launch every rank measures, rank 0 writes
            (out_dir / "bench.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
        print("[bench]   " + json.dumps({k: row.get(k) for k in ("tokens_per_s", "peak_allocated_gib",
                                                                  "checkpointing", "micro_batch", "error")},
                                       ensure_ascii=False), flush=True)
    if side:
        print(f"[bench] t={time.perf_counter() - start:.0f}s 피어 키트 (GPU {peer_gpu})를 기다립니다 ...", flush=True)
        result["rows"] += side.rows()
        _speedups(result["rows"])
        if is_main_process():
            (out_dir / "bench.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    elif peer and time_budget_s and time.perf_counter() - start + 60 * (1 + len(peer)) > time_budget_s:
        print(f"[bench] 피어 키트: 시간 예산 안에 끝나지 않을 것 같아 건너뜀 ({' '.join(peer)})", flush=True)
        result["rows"] += [{"recipe": f"peer:{v}", "error": f"skipped: time budget {time_budget_s:.0f} s"}
                           for v in peer]
    elif peer:
        print(f"[bench] t={time.perf_counter() - start:.0f}s 피어 키트 {peer_kit}: {' '.join(peer)} ...", flush=True)
        result["rows"] += run_peer(Path(peer_kit), peer, steps + 1)  # the kit times all steps after the first
        _speedups(result["rows"])
        if is_main_process():
            (out_dir / "bench.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"[bench] t={time.perf_counter() - start:.0f}s 끝")
    print(format_table(result))
    print(f"[bench] JSON: {out_dir / 'bench.json'}")
    return result


def run_isolated(name: str, shape: str, layers: int | None, steps: int, warmup: int, seqs_per_step: int,
                 out_dir: Path, seed: int, profile: bool, attention: str) -> dict:
    """One recipe in a fresh Python process (same synthetic data: same seed), its row read back."""
    import subprocess
    import sys

    sub = out_dir / "recipes" / name.replace("@", "_at_").replace("+", "_plus_")
    cmd = [sys.executable, "-m", "workshop_utils.bench", "--recipes", name, "--shape", shape, "--steps", str(steps),
           "--warmup", str(warmup), "--seqs-per-step", str(seqs_per_step), "--seed", str(seed),
           "--attention", attention, "--out", str(sub), "--no-isolate"]
    cmd += ["--layers", str(layers)] if layers else []
    cmd += ["--profile", name] if profile else []
    rc = subprocess.run(cmd, check=False).returncode
    try:
        return json.loads((sub / "bench.json").read_text())["rows"][0]
    except (OSError, KeyError, IndexError, ValueError):
        return {"recipe": name, "description": describe_recipe(name), "error": f"recipe process failed (rc={rc})"}


class PeerRun:
    """The peer kit's variants in one call of its script (each variant in its own process, its own
    packages on PYTHONPATH), started now; `rows()` waits and parses its `RESULT {...}` lines. With `gpu`
    the kit sees only that GPU, so it can run beside the project's recipes on another one."""

    def __init__(self, kit: Path, variants: list[str], steps: int, gpu: int | None = None):
        import os
        import subprocess
        import threading

        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the kit sets its own packages
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(gpu)
        self.variants, self.lines = variants, []
        self.proc = subprocess.Popen(["bash", str(kit / "peer_bench.sh"), str(steps), *variants], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            print("[peer] " + line, end="", flush=True)
            self.lines.append(line)

    def rows(self) -> list[dict]:
        self.proc.wait()
        self.reader.join()
        return peer_rows("".join(self.lines), self.variants)


def run_peer(kit: Path, variants: list[str], steps: int) -> list[dict]:
    """The peer kit's variants, after the project's recipes (one GPU)."""
    return PeerRun(kit, variants, steps).rows()


# Issue 17's targets compare a mode of ours with one of Unsloth's rows: the fastest within 8 GiB, in fp16, of any memory
UNSLOTH_PICKS = ("8gib", "fp16", "any")


def unsloth_counterpart(rows: list[dict], pick: str) -> dict | None:
    """The Unsloth row (the peer kit's 'peer:uns...') that target `pick` compares with, among bench rows: the fastest
    within 8 GiB peak ('8gib'), with the '+fp16' option ('fp16') or of any memory ('any'); None if there is none."""
    if pick not in UNSLOTH_PICKS:
        raise ValueError(f"pick={pick!r}: {' | '.join(UNSLOTH_PICKS)}")
    peers = [r for r in rows if r["recipe"].startswith("peer:uns") and r.get("tokens_per_s")]
    if pick == "8gib":
        peers = [r for r in peers if (r.get("peak_allocated_gib") or 99) <= 8]
    elif pick == "fp16":
        peers = [r for r in peers if "fp16" in r["recipe"].split("+")]
    return max(peers, key=lambda r: r["tokens_per_s"], default=None)


def peer_rows(text: str, variants: list[str]) -> list[dict]:
    """Rows for the bench table from the peer kit's output (a variant without a RESULT line failed)."""
    found = {}
    for line in text.splitlines():
        if line.startswith("RESULT "):
            d = json.loads(line[len("RESULT "):])
            found[d["variant"]] = d
    rows = []
    for v in variants:
        opts = set(v.split("+"))
        unsloth = v.startswith("uns")
        row = {"recipe": f"peer:{v}",
               "description": ("Unsloth (피어 키트)" if unsloth else "HF + peft (피어 키트)") + f" {v}"}
        d = found.get(v)
        if d is None:
            row["error"] = "peer variant failed (its log is above)"
            rows.append(row)
            continue
        mb, acc = d.get("micro_batch"), d.get("grad_accum")
        if mb is None:
            mb, acc = (8, 2) if "bs8" in opts else (4, 4)
        row.update(tokens_per_s=d["tokens_per_s"], peak_allocated_gib=d.get("peak_alloc_gib", d.get("peak_gib")),
                   peak_reserved_gib=d.get("peak_reserved_gib"), loss_step1=d.get("first_loss"),
                   micro_batch=mb, grad_accum=acc, padding_free="flat" in opts,
                   dtype="float16" if "fp16" in opts else "bfloat16",
                   checkpointing=("off" if "nogc" in opts else "unsloth") if unsloth else
                   ("all" if "gc" in opts else "off"),
                   attention="unsloth" if unsloth else "flex_attention" if "flex" in opts else "sdpa")
        rows.append(row)
    return rows


def _speedups(rows: list[dict]) -> None:
    for name in (BASELINE, LEAN_BASELINE):
        base = next((r.get("tokens_per_s") for r in rows if r["recipe"] == name), None)
        for r in rows:
            tps = r.get("tokens_per_s")
            r[f"speedup_vs_{name}"] = round(tps / base, 2) if base and tps and tps == tps else None


def _compile_cell(r: dict) -> str:
    c = r.get("compile")
    if not c:
        return "yes" if r.get("compile_layers") else "no"
    return (f"{c['graphs']} graphs, {c['graph_breaks']} breaks, {c.get('graphs_after_check', '-')} recompiles, "
            f"{c['seconds']:.0f} s")


def format_table(result: dict) -> str:
    head = ("| recipe | tokens/s | vs HF lean | vs HF+GC | peak alloc GiB | after step 1 GiB | peak reserved GiB | "
            "model GiB | micro-batch x accum | checkpointing | vocab offload | activation offload | attention | "
            "compiled layers | "
            "dtype | first step s | loss@1 |")
    lines = [f"model {result['model']} on {result['env'].get('gpu') or 'CPU'}", head,
             "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"| {r['recipe']} | {r['error']} |")
            continue
        mb = f"{r['micro_batch']} x {r['grad_accum']}" if r.get("micro_batch") else "-"
        loss = r.get("loss_step1")
        lines.append(
            f"| {r['recipe']} | {r['tokens_per_s']:,.0f} | {r.get('speedup_vs_hf_lean') or '-'} | "
            f"{r.get('speedup_vs_hf_gc') or '-'} | "
            f"{r.get('peak_allocated_gib', '-')} | {r.get('peak_after_step1_gib', '-')} | "
            f"{r.get('peak_reserved_gib', '-')} | {r.get('model_gib') or '-'} | "
            f"{mb} | {r.get('checkpointing', '-')} | "
            f"{'yes' if r.get('offload_vocab') else 'no'} | {'yes' if r.get('offload_activations') else 'no'} | "
            f"{r.get('attention', '-')} | {_compile_cell(r)} | "
            f"{r.get('dtype', '-')} | {r.get('first_step_s', '-')} | "
            f"{'-' if loss is None else f'{loss:.4f}'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="workshop bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    return run_from_args(ap.parse_args(argv))


def add_arguments(ap) -> None:
    ap.add_argument("--recipes", nargs="*", help=f"측정할 레시피 {list(RECIPES)} (기본: 전부, CPU는 3개); "
                    "고속 경로 레시피는 '@어텐션'으로 어텐션만 바꿔 비교 (예: default@sdpa)")
    ap.add_argument("--shape", default="exaone", help="exaone (기본, 7.8B 모양) | tiny | random:exaone:... 명세")
    ap.add_argument("--layers", type=int, default=None, help="층 수만 줄여 빠르게 점검 (예: 4)")
    ap.add_argument("--steps", type=int, default=4, help="측정 스텝 수")
    ap.add_argument("--warmup", type=int, default=2, help="웜업 스텝 수 (flex_attention 컴파일 포함)")
    ap.add_argument("--out", default="build/bench", help="bench.json을 쓸 폴더")
    ap.add_argument("--attention", default="auto", choices=list(ATTENTIONS),
                    help="고속 경로 레시피의 어텐션 (auto = 라이브러리 기본: 커널이 돌면 workshop_varlen, 아니면 sdpa; "
                         "flex_attention은 명시할 때만)")
    ap.add_argument("--profile", nargs="*", default=[], help="측정 뒤 한 스텝을 torch.profiler로 기록할 레시피")
    ap.add_argument("--seqs-per-step", type=int, default=16, help="옵티마이저 스텝당 시퀀스 수 (시드 4 x 4 = 16)")
    ap.add_argument("--seed", type=int, default=0, help="합성 데이터 시드")
    ap.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                    help="레시피마다 새 프로세스 (GPU 기본: 앞 레시피가 남긴 메모리가 다음 레시피의 최대 메모리에 섞이지 않게)")
    ap.add_argument("--no-isolate", dest="isolate", action="store_false", help="한 프로세스에서 모든 레시피")
    ap.add_argument("--peer", nargs="*", default=[],
                    help="같은 호출에서 잴 피어 키트 변형 (예: gc uns+flat uns+flat+fp16 uns+flat+nogc+bs16)")
    ap.add_argument("--peer-kit", default=".peer", help="피어 키트 폴더 (../shared/tools/peer/build.sh로 만든 .peer)")
    ap.add_argument("--peer-gpu", type=int, default=None,
                    help="피어 키트를 이 GPU에서 동시에 실행 (GPU 2장 이상; 기본: 우리 레시피 뒤에 같은 GPU에서)")
    ap.add_argument("--time-budget", type=float, default=None,
                    help="전체 시간 예산(초): 예산 안에 끝나지 않을 레시피는 건너뜀 (시간 제한이 있는 GPU 호출용)")


def run_from_args(args) -> int:
    res = run_bench(args.recipes, args.shape, args.layers, args.steps, args.warmup, args.seqs_per_step,
                    out=args.out, seed=args.seed, profile=args.profile, attention=args.attention,
                    isolate=args.isolate, peer=args.peer, peer_kit=args.peer_kit, time_budget_s=args.time_budget,
                    peer_gpu=args.peer_gpu)
    return 0 if all("error" not in r for r in res["rows"]) else 1


if __name__ == "__main__":
    import sys

    sys.exit(main())
