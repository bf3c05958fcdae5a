"""Check and measure the compiled decoder layers and the varlen attention kernels in one GPU call.

Run through scripts/gpu_perf.sh on the GPU machine (it sets up the packages). In order, within --budget
seconds:
1. kernels against the fp32 per-sequence reference on CUDA, bf16 and fp16, random inputs (EXAONE's
   32/8 heads of 128, packed rows of 2 and 4 sequences): torch's flash varlen kernel (workshop_varlen)
   and the memory-efficient varlen kernel (workshop_varlen_efficient, the one that runs on a T4); the
   planner's probes; forward + backward milliseconds next to sdpa over the whole packed row (what the
   T4 mode did before).
2. compiled vs eager fast path on a small random EXAONE on CUDA (LoRA dropout 0): loss and LoRA
   gradients over three packed lengths, graphs compiled, recompiles, graph breaks -- bf16 + flash varlen
   + Liger's fused loss through inductor; fp16 + the efficient kernel; Liger's rope/RMSNorm/SwiGLU
   inside the compiled layer (do its Triton kernels break the graph?); FP8 input gradients (fp8_checks): the
   kernel against its reference, the fast path's loss (unchanged) and LoRA gradients (close) with and without.
3. `workshop bench` (EXAONE-7.8B shape, 16 sequences of ~1,050 tokens per step, one process per recipe,
   1 warm-up + 3 timed steps): each fast-path recipe with and without each lever, and hf_lean.
4. one table: tokens/s, the ratio to the same recipe without the lever and to hf_lean, peak GiB, the
   losses of steps 1 and 2 (recipes computing the same training agree on both), compile statistics;
   with peer rows the issue's targets.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch

from workshop_utils.bench import unsloth_counterpart
from workshop_utils.model.attention import _cuda_varlen, _varlen_kernel, varlen_attention_works

# priority order: what the time budget cuts comes last
RECIPES = ["budget8", "budget8+nocompile", "t4", "t4@sdpa+nocompile", "hf_lean", "default", "default+fp8",
           "default+nocompile", "t4+nocompile", "budget8+compile_liger"]
# recipe -> the same recipe without the lever it shows
PARTNER = {"budget8": "budget8+nocompile", "default": "default+nocompile", "default+fp8": "default",
           "t4": "t4+nocompile", "t4+nocompile": "t4@sdpa+nocompile", "budget8+compile_liger": "budget8",
           "default+nodrop": "default", "default+fp8+nodrop": "default+fp8"}
SMALL = "random:exaone:layers=2,hidden=512,intermediate=1024,heads=8,kv_heads=2"
# (dtype, attention, compiler, Liger's layer kernels inside the compiled layer); the last one patches
# transformers' rope function for the whole process (Liger's rope is module-level), so it runs last
CASES = [("bfloat16", "workshop_varlen", "inductor", False),
         ("float16", "workshop_varlen_efficient", "aot_eager", False),
         ("bfloat16", "workshop_varlen", "aot_eager", True)]


def _time_ms(fn, reps: int = 10) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def kernel_checks() -> dict:
    from workshop_utils.model.attention_kernels import compare_with_reference, efficient_varlen, efficient_varlen_works

    kernels = {"workshop_varlen_efficient": efficient_varlen}
    if _varlen_kernel()[0] is not None:
        kernels["workshop_varlen"] = _cuda_varlen
    out = {"errors": [], "probes": {}, "timing_ms": []}
    for dtype in (torch.bfloat16, torch.float16):
        d = str(dtype).replace("torch.", "")
        out["probes"][d] = {"workshop_varlen": varlen_attention_works(dtype),
                            "workshop_varlen_efficient": efficient_varlen_works(dtype)}
        for name, fn in kernels.items():
            for lens in ((40, 56), (1100, 900, 1300, 700)):
                try:
                    errs = compare_with_reference(fn, dtype, lens=lens, heads=(32, 8), head_dim=128)
                except Exception as err:  # noqa: BLE001 - report and go on
                    errs = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                out["errors"].append({"kernel": name, "dtype": d, "lens": list(lens), **errs})
        # forward + backward of one layer's attention over a packed row of 4 sequences
        lens = (1100, 900, 1300, 700)
        t = sum(lens)
        cu_list = [0]
        for n in lens:
            cu_list.append(cu_list[-1] + n)
        cu = torch.tensor(cu_list, dtype=torch.int32, device="cuda")
        q = torch.randn(t, 32, 128, device="cuda", dtype=dtype, requires_grad=True)
        k, v = (torch.randn(t, 8, 128, device="cuda", dtype=dtype, requires_grad=True) for _ in range(2))
        seq = torch.repeat_interleave(torch.arange(len(lens), device="cuda"), torch.tensor(lens, device="cuda"))
        pos = torch.arange(t, device="cuda")
        mask = ((seq[:, None] == seq[None, :]) & (pos[:, None] >= pos[None, :]))[None, None]

        def packed_sdpa():
            o = torch.nn.functional.scaled_dot_product_attention(
                q.transpose(0, 1)[None], k.transpose(0, 1)[None].repeat_interleave(4, 1),
                v.transpose(0, 1)[None].repeat_interleave(4, 1), attn_mask=mask)
            o.sum().backward()

        row = {"dtype": d, "tokens": t, "sdpa over the packed row (mask)": round(_time_ms(packed_sdpa), 2)}
        for name, fn in kernels.items():
            try:
                row[name] = round(_time_ms(lambda: fn(q, k, v, cu, max(lens), 128 ** -0.5).sum().backward()), 2)
            except Exception as err:  # noqa: BLE001
                row[name] = f"{type(err).__name__}: {str(err)[:80]}"
        out["timing_ms"].append(row)
        q.grad = k.grad = v.grad = None
    return out


def _fast_model(dtype: str, attention: str, compile_layers: bool, keep_liger: bool, liger: bool,
                checkpoint_layers: int = 1, offload_activations: bool = False, dropout: float = 0.0,
                fp8_backward: bool = False):
    import dataclasses

    from workshop_utils.config import LoraSettings, load_config
    from workshop_utils.model.load import load_model
    from workshop_utils.train.fastpath.apply import prepare_fast_model
    from workshop_utils.train.fastpath.kernels import apply_liger
    from workshop_utils.train.fastpath.plan import FastPlan

    settings = dataclasses.replace(load_config("full").model, model_id=SMALL, compute_dtype=dtype)  # + WORKSHOP_TOKENIZER
    loaded = load_model(settings, verbose=False)
    torch.manual_seed(0)
    plan = FastPlan(True, mode="budget", padding_free=True, attention=attention, num_layers=2,
                    checkpoint_layers=checkpoint_layers, upcast_non_4bit=False, liger=liger and compile_layers,
                    compile_layers=compile_layers, compile_keep_liger=keep_liger,
                    offload_activations=offload_activations, fp8_backward=fp8_backward)
    model, kernels = prepare_fast_model(loaded.model, plan, LoraSettings(lora_dropout=dropout))
    if liger and not compile_layers:  # the eager twin: the same Liger kernels as its compiled twin
        kernels = apply_liger(model, layer_kernels=keep_liger)
    g = torch.Generator().manual_seed(2)
    for n, p in sorted(model.named_parameters()):
        if "lora_B" in n:
            p.data = (torch.randn(p.shape, generator=g) * 0.05).to(p.device, p.dtype)
    model.train()
    return model, plan, kernels


def _packed_batches(device: str):
    """Three packed batches of random sequences (other lengths and counts), the last quarter labelled."""
    from workshop_utils.data.prompts import IGNORE_INDEX
    from workshop_utils.train.collators import FlatteningCollator

    g = torch.Generator().manual_seed(1)
    for lens in ((300, 500, 200), (700, 150), (90, 410, 260, 333)):
        feats = []
        for n in lens:
            ids = torch.randint(10, 40000, (n,), generator=g).tolist()
            feats.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - n // 4) + ids[n - n // 4:]})
        yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in FlatteningCollator(0, seq_lens=True)(feats).items()}


def _loss_and_grads(model, batch, amp, seed: int | None = None) -> tuple[float, dict]:
    """One forward + backward of the fast path's loss: (loss, LoRA gradients in fp32)."""
    from workshop_utils.train.loss import fast_completion_loss

    model.zero_grad(set_to_none=True)
    if seed is not None:
        torch.manual_seed(seed)
    with amp:
        loss, _ = fast_completion_loss(model, batch)
    loss.backward()
    return loss.item(), {n: p.grad.float() for n, p in model.named_parameters() if p.requires_grad}


def _worst_errors(device: str, pair) -> tuple[float, float]:
    """Worst relative loss and LoRA-gradient differences over _packed_batches; `pair(batch)` returns the reference's
    and the checked path's (loss, gradients)."""
    worst_loss = worst_grad = 0.0
    for batch in _packed_batches(device):
        (ref_loss, ref), (got_loss, got) = pair(batch)
        worst_loss = max(worst_loss, abs(got_loss - ref_loss) / abs(ref_loss))
        worst_grad = max(worst_grad, max(((got[n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-12)).item()
                                         for n in ref))
    return worst_loss, worst_grad


@contextlib.contextmanager
def _check_case(rows: list, row: dict, backend: str, device: str, label: str = ""):
    """One case of a CUDA check: before it, dynamo reset (a passed check sets suppress_errors: each case fails
    loudly) and the layers' compiler set to `backend`; after it, the error if it raised (one failing case must not
    lose the others' rows), its seconds, the row printed and kept, the GPU's cache emptied."""
    import torch._dynamo

    from workshop_utils.train.fastpath import compile as fastpath_compile

    torch._dynamo.reset()
    torch._dynamo.config.suppress_errors = False
    fastpath_compile.BACKEND = backend
    t0 = time.perf_counter()
    try:
        yield row
    except Exception as err:  # noqa: BLE001
        row["error"] = f"{type(err).__name__}: {str(err)[:300]}"
    row["seconds"] = round(time.perf_counter() - t0, 1)
    rows.append(row)
    print(f"[gpu_perf] {label}" + json.dumps(row, ensure_ascii=False, default=str), flush=True)
    if device == "cuda":
        torch.cuda.empty_cache()


def compiled_model_checks(cases=None, device: str = "cuda") -> list[dict]:
    """Compiled vs eager on a small random EXAONE on CUDA: loss and LoRA gradients, graphs, recompiles."""
    from workshop_utils.train.fastpath import compile as fastpath_compile
    from workshop_utils.train.fastpath.kernels import liger_available

    liger = liger_available()
    cases = [c for c in (cases or CASES) if liger or not c[3]]
    rows = []
    for dtype, attention, backend, keep in cases:
        row = {"dtype": dtype, "attention": attention, "compiler": backend, "liger_layer_kernels_inside": keep}
        with _check_case(rows, row, backend, device):
            eager, _, _ = _fast_model(dtype, attention, False, keep, liger)
            model, plan, kernels = _fast_model(dtype, attention, True, keep, liger)
            row.update(compiled=plan.compile_layers, check=plan.reasons.get("compile"), kernels=kernels)
            amp = torch.autocast(device, dtype=getattr(torch, dtype), enabled=dtype != "float32")
            worst_loss, worst_grad = _worst_errors(device, lambda b: [_loss_and_grads(m, b, amp) for m in (eager, model)])
            compiled = model.get_base_model()._workshop_compiled
            row.update(loss_rel_err=worst_loss, grad_rel_err=worst_grad,
                       **({"stats": compiled.stats()} if compiled is not None else {}))
            graphs = (row.get("stats") or {}).get("graphs", 0)
            row["ok"] = bool(plan.compile_layers and graphs >= 1 and worst_loss < 1e-2 and worst_grad < 5e-2)
            eager = model = None  # free the GPU memory before the next case
    fastpath_compile.BACKEND = "inductor"
    return rows


def offload_checks(device: str = "cuda", backend: str = "inductor") -> list[dict]:
    """ActivationOffload on CUDA (side stream, pinned copies, prefetch), inductor-compiled layers and eager, bf16
    and fp16, LoRA dropout 0.05: loss and LoRA gradients of offloaded checkpointing of both layers against the
    same model without checkpointing (same seed: the same dropout masks), three packed batches."""
    from workshop_utils.train.fastpath import compile as fastpath_compile
    from workshop_utils.train.fastpath.apply import set_checkpointing

    rows = []
    for dtype, attention, compile_layers in (("bfloat16", "workshop_varlen", True),
                                             ("float16", "workshop_varlen_efficient", True),
                                             ("bfloat16", "workshop_varlen", False)):
        row = {"dtype": dtype, "attention": attention, "compiled": compile_layers}
        with _check_case(rows, row, backend, device, "offload "):
            model, plan, _ = _fast_model(dtype, attention, compile_layers, False, False, checkpoint_layers=2,
                                         offload_activations=True, dropout=0.05)
            offload = model.get_base_model()._workshop_activation_offload
            copies = offload.copies  # the compiled layers' set-up check went through it too
            amp = torch.autocast(device, dtype=getattr(torch, dtype))

            def offloaded_then_kept(batch):  # the same seed: the same dropout masks
                set_checkpointing(model, 2)
                offload.attach(model, 2)
                got = _loss_and_grads(model, batch, amp, seed=7)
                set_checkpointing(model, 0)
                return _loss_and_grads(model, batch, amp, seed=7), got

            worst_loss, worst_grad = _worst_errors(device, offloaded_then_kept)
            row.update(copies=offload.copies - copies, loss_rel_err=worst_loss, grad_rel_err=worst_grad,
                       compile_check=plan.reasons.get("compile"))
            row["ok"] = bool(row["copies"] == 6 and worst_loss < 1e-2 and worst_grad < 5e-2)
            model = offload = None  # free the GPU memory before the next case
    fastpath_compile.BACKEND = "inductor"
    return rows


def fp8_checks(device: str = "cuda") -> list[dict]:
    """FP8 input gradients (train.fp8_backward) on CUDA: the kernel against the product of its own scaled E4M3
    operands in fp32 (EXAONE's gate_proj shape, 4,096 tokens); then the fast path with and without it, bf16,
    inductor-compiled and eager, three packed batches: the loss (the forward is unchanged) and how close the
    LoRA gradients stay (cosine, largest relative error of one tensor)."""
    from workshop_utils.train.fastpath.fp8 import (
        fp8_input_grad,
        fp8_supported,
        fp8_weight,
        gpu_quantizer,
        gradient_agreement,
        quantize_rows,
    )

    rows = []
    ok, why = fp8_supported(device, torch.bfloat16)
    if not ok:
        return [{"skipped": why}]
    row = {"case": "kernel", "shape": [14336, 4096], "tokens": 4096}
    with _check_case(rows, row, "inductor", device, "fp8 "):
        g = torch.Generator(device).manual_seed(0)
        w = torch.randn(14336, 4096, device=device, generator=g).to(torch.bfloat16) * 0.02
        dy = torch.randn(4096, 14336, device=device, generator=g).to(torch.bfloat16)
        wt8, ws = fp8_weight(w)
        dx = fp8_input_grad(dy, wt8, ws).float()
        d8, ds = quantize_rows(dy)
        emulated = (d8.float() * ds) @ (wt8.float() * ws.view(-1, 1)).t()
        exact = dy.float() @ w.float()
        quantizer, which = gpu_quantizer()
        q, s = quantizer(dy)
        row.update(vs_emulated=float((dx - emulated).norm() / emulated.norm()),
                   vs_exact=float((dx - exact).norm() / exact.norm()), quantizer=which,
                   quantizer_same_scales=bool(torch.equal(s, ds)),
                   quantizer_values_differing=float((q.view(torch.uint8) != d8.view(torch.uint8)).float().mean()))
        row["ok"] = (row["vs_emulated"] < 1e-2 and row["vs_exact"] < 0.06 and row["quantizer_same_scales"]
                     and row["quantizer_values_differing"] <= 1e-3)
    for compile_layers in (True, False):
        row = {"case": "fast path", "dtype": "bfloat16", "compiled": compile_layers}
        with _check_case(rows, row, "inductor", device, "fp8 "):
            ref, _, _ = _fast_model("bfloat16", "workshop_varlen", compile_layers, False, False, checkpoint_layers=0)
            model, plan, _ = _fast_model("bfloat16", "workshop_varlen", compile_layers, False, False,
                                         checkpoint_layers=0, fp8_backward=True)
            amp = torch.autocast(device, dtype=torch.bfloat16)
            agree, loss_err = [], 0.0
            for batch in _packed_batches(device):
                (l0, g0), (l1, g1) = (_loss_and_grads(m, batch, amp) for m in (ref, model))
                loss_err = max(loss_err, abs(l1 - l0) / abs(l0))
                agree.append(gradient_agreement(g0, g1))
            compiled = getattr(model.get_base_model(), "_workshop_compiled", None)
            row.update(layers=len(model.get_base_model()._workshop_fp8.layers), loss_rel_err=loss_err,
                       cosine=min(a["cosine"] for a in agree), max_rel_error=max(a["max_rel_error"] for a in agree),
                       compile_check=plan.reasons.get("compile"),
                       **({"stats": compiled.stats()} if compiled is not None else {}))
            row["ok"] = bool(loss_err == 0 and row["cosine"] > 0.99 and plan.compile_layers == compile_layers)
            ref = model = None
    return rows


def _fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def summary(result: dict, checks: dict) -> str:
    rows = {r["recipe"]: r for r in result["rows"]}
    lines = []
    if checks.get("kernels"):
        k = checks["kernels"]
        lines += ["", "kernels vs the fp32 per-sequence reference (max relative error: out, dq, dk, dv)"]
        for e in k["errors"]:
            errs = e.get("error") or " ".join(f"{n}={e[n]:.1e}" for n in ("out", "dq", "dk", "dv"))
            lines.append(f"  {e['kernel']:<26} {e['dtype']:<8} {str(e['lens']):<26} {errs}")
        lines.append("  probes: " + json.dumps(k["probes"], ensure_ascii=False))
        lines.append("attention forward+backward ms (4 sequences, 4,000 tokens, 32/8 heads of 128): "
                     + json.dumps(k["timing_ms"], ensure_ascii=False))
    for c in checks.get("offload", []):
        lines.append(f"activation offload vs no checkpointing (small model, {c['dtype']}, compiled={c['compiled']}, "
                     f"dropout 0.05): ok={c.get('ok')} loss err {c.get('loss_rel_err', float('nan')):.1e}, grad err "
                     f"{c.get('grad_rel_err', float('nan')):.1e}, copies {c.get('copies')}, {c.get('error') or ''}")
    for c in checks.get("fp8", []):
        lines.append("fp8 input gradients: " + json.dumps(c, ensure_ascii=False, default=str)[:400])
    for c in checks.get("compiled", []):
        lines.append(f"compiled vs eager (small model, {c['dtype']}, {c['attention']}, {c['compiler']}, Liger layer "
                     f"kernels inside={c['liger_layer_kernels_inside']}): ok={c.get('ok')} loss err "
                     f"{c.get('loss_rel_err', float('nan')):.1e}, grad err {c.get('grad_rel_err', float('nan')):.1e}, "
                     f"{c.get('stats')}, {c.get('error') or c.get('check')}, {c['seconds']} s")
    head = ("| recipe | tokens/s | vs without the lever | vs hf_lean | peak alloc GiB | loss@1 | loss@2 | "
            "micro-batch | checkpointing | attention | compiled layers (graphs, breaks, recompiles, s) |")
    lines += ["", f"model {result['model']} on {result['env'].get('gpu')}, torch {result['env'].get('torch')}", head,
              "|" + "---|" * (head.count("|") - 1)]
    lean = rows.get("hf_lean", {}).get("tokens_per_s")
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error'][:150]} |")
            continue
        tps = r.get("tokens_per_s")
        partner = rows.get(PARTNER.get(name, ""), {}).get("tokens_per_s")
        losses = r.get("losses") or [r.get("loss_step1")]
        c = r.get("compile")
        comp = (f"{c['graphs']}, {c['graph_breaks']}, {c.get('graphs_after_check', '-')}, {c['seconds']:.0f}"
                if c else ("yes" if r.get("compile_layers") else "no"))
        lines.append(f"| {name} | {_fmt(tps)} | {_fmt(tps / partner if partner and tps else None, '.2f')} | "
                     f"{_fmt(tps / lean if lean and tps else None, '.2f')} | {r.get('peak_allocated_gib', '-')} | "
                     f"{_fmt(losses[0], '.4f')} | {_fmt(losses[1] if len(losses) > 1 else None, '.4f')} | "
                     f"{r.get('micro_batch', '-')} x {r.get('grad_accum', '-')} | {r.get('checkpointing', '-')} | "
                     f"{r.get('attention', '-')} | {comp} |")
    ours = [r for n, r in rows.items() if not n.startswith("peer:") and r.get("loss_step1")]
    if ours:
        l1 = [r["loss_step1"] for r in ours]
        lines.append(f"first-step losses of the workshop recipes: spread {(max(l1) - min(l1)) / min(l1):.2%} (target < 0.1%)")
    if any(n.startswith("peer:") and r.get("tokens_per_s") for n, r in rows.items()):
        def ratio(ours_name, pick):
            r = rows.get(ours_name, {})
            best = unsloth_counterpart(list(rows.values()), pick)
            if not r.get("tokens_per_s") or best is None:
                return "-"
            return (f"{r['tokens_per_s'] / best['tokens_per_s']:.2f}x vs {best['recipe']} "
                    f"({best['tokens_per_s']:,.0f} tok/s, {best.get('peak_allocated_gib')} GiB); "
                    f"ours {r.get('peak_allocated_gib')} GiB")
        lines += ["targets (ratios inside this call):",
                  "  8 GiB mode (budget8) >= 1.3x Unsloth's best within 8 GiB: " + ratio("budget8", "8gib"),
                  "  T4 mode (t4) >= 1.2x Unsloth fp16: " + ratio("t4", "fp16"),
                  "  card with room (default) >= 1.5x Unsloth's best of any memory: " + ratio("default", "any")]
        for name, what in (("default+fp8", "FP8 input gradients"),
                           ("default+fp8+peftdrop", "FP8 input gradients, peft's Philox dropout masks"),
                           ("default+nodrop", "LoRA dropout 0 as Unsloth's"),
                           ("default+fp8+nodrop", "FP8 input gradients, LoRA dropout 0 as Unsloth's")):
            if name in rows:
                lines.append(f"  card with room, {what} ({name}) >= 1.5x Unsloth's best of any memory: "
                             + ratio(name, "any"))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/gpu_perf", help="where bench.json and checks.json go")
    ap.add_argument("--work", default="build/gpu_perf", help="the bench's own folder (one JSON per recipe)")
    ap.add_argument("--budget", type=float, default=470, help="seconds for everything")
    ap.add_argument("--recipes", nargs="*", default=RECIPES)
    ap.add_argument("--profile", nargs="*", default=[], help="recipes to profile one more step of (kernels, GPU idle)")
    ap.add_argument("--peer", nargs="*", default=[])
    ap.add_argument("--peer-kit", default=".peer")
    ap.add_argument("--peer-gpu", type=int, default=None, help="run the peer kit at the same time on this GPU")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--no-checks", action="store_true")
    ap.add_argument("--kernel-checks-only", action="store_true",
                    help="skip the compiled small-model checks (the recipes' step losses still compare the paths)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("[gpu_perf] CUDA 없음: 이 스크립트는 GPU 기계에서 실행합니다 (scripts/gpu_perf.sh)")
        return 1
    print(f"[gpu_perf] {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    from workshop_utils import bench

    side = None
    if args.peer and args.peer_gpu is not None:  # the kit on its own GPU from the start, beside everything below
        side = bench.PeerRun(Path(args.peer_kit), args.peer, args.steps + args.warmup, gpu=args.peer_gpu)
    checks: dict = {}
    if not args.no_checks:
        checks["kernels"] = kernel_checks()
        print(f"[gpu_perf] t={time.perf_counter() - t0:.0f}s kernels: "
              + json.dumps(checks["kernels"], ensure_ascii=False, default=str), flush=True)
        checks["offload"] = offload_checks()
        checks["fp8"] = fp8_checks()
        if not args.kernel_checks_only:
            checks["compiled"] = compiled_model_checks()
        (out / "checks.json").write_text(json.dumps(checks, ensure_ascii=False, indent=1, default=str))
        print(f"[gpu_perf] t={time.perf_counter() - t0:.0f}s checks done", flush=True)
    import gc

    from workshop_utils.bench import SHAPES, run_bench
    from workshop_utils.config import load_config
    from workshop_utils.model.sources import random_model_dir

    gc.collect()
    torch.cuda.empty_cache()
    # the random EXAONE-7.8B-shaped checkpoint (15.6 GB, built on the GPU), written before the recipes
    # start, and its GPU memory handed back: the recipes run in their own processes beside this one
    t1 = time.perf_counter()
    random_model_dir(SHAPES["exaone"], load_config("full").model.tokenizer or None)  # WORKSHOP_TOKENIZER
    gc.collect()
    torch.cuda.empty_cache()
    print(f"[gpu_perf] t={time.perf_counter() - t0:.0f}s checkpoint ready ({time.perf_counter() - t1:.0f}s)", flush=True)
    result = run_bench(args.recipes, steps=args.steps, warmup=args.warmup, out=Path(args.work) / "bench", isolate=True,
                       peer=[] if side else args.peer, peer_kit=args.peer_kit, profile=args.profile,
                       time_budget_s=max(60.0, args.budget - (time.perf_counter() - t0)))
    if side:
        print(f"[gpu_perf] t={time.perf_counter() - t0:.0f}s waiting for the peer kit (GPU {args.peer_gpu})", flush=True)
        result["rows"] += side.rows()
        result["peer_gpu"] = args.peer_gpu
        bench._speedups(result["rows"])
    (out / "bench.json").write_text(json.dumps(result, ensure_ascii=False, indent=1))
    print(f"[gpu_perf] t={time.perf_counter() - t0:.0f}s")
    print(summary(result, checks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
