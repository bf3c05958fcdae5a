"""Regional compilation of the decoder layers (`train.compile_layers`): one compiled code for all layers.

Why: small micro-batches are bound by the CPU, not the GPU. A memory-bounded step at micro-batch 2 had
4.6 s of CPU work for 1.5 s of GPU work (docs/benchmarks.md): Python and kernel launches for 32 layers
x (4-bit matmuls, LoRA, dropout, norms, rope, SwiGLU, residual adds). `torch.compile` of the decoder
layer replaces the Python of transformers/peft/bitsandbytes with one compiled call per layer and fuses
the element-wise work into a few generated kernels.

How it fits the fast path:
- one compiled function: the layer class's own forward (unwrapped from transformers' checkpointing
  wrapper), compiled once with dynamic shapes. Every layer calls it -- parameters are graph inputs, not
  constants -- and a packed row of another length runs the same code (no recompilation per length).
  The first layer's input needs no gradient without checkpointing, so it gets a second graph.
- gradient checkpointing stays outside the compiled code, per layer and non-reentrant, as
  fastpath/apply.set_checkpointing sets it: recomputation calls the compiled forward again, and LoRA dropout
  draws the same mask there because checkpointing restores the RNG state.
- bitsandbytes' 4-bit matmul and dequantization are torch custom ops with fake kernels (bnb >= 0.45),
  peft's LoRA traces as plain torch, the attention functions are ops with meta kernels (torch's varlen
  flash op, the memory-efficient kernel; on CPU the reference as a custom op).
- Liger: the fused linear cross-entropy stays (it runs after the layers). Liger's rope/RMSNorm/SwiGLU are
  Triton kernels that the compiler cannot fuse with their neighbours, and inductor generates the same
  fusions itself, so a compiled layer runs without them by default; `liger` keeps them inside the
  compiled layer (to measure which is faster).
- evaluation and generation (eval mode or no gradients) run the eager forward: the compiled code is for
  training only (no KV cache, no recompiles for decoding shapes).
A check at set-up (`compile_checked`) runs one tiny packed batch through the compiled model (this also
compiles the graphs the training will reuse) and compares its loss with the eager loss; on any failure
the layers go back to eager.
"""
from __future__ import annotations

import functools
import importlib.util
import time
import types

import torch

from ...data.prompts import IGNORE_INDEX
from ...model.lora import base_model, decoder_layers

COMPILE_SETTINGS = ("auto", "on", "off", "liger")
BACKEND = "inductor"  # tests on CPU use "aot_eager": the same capture without C++ code generation


def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def compile_choice(setting, on_cuda: bool, processes: int = 1,
                   has_triton: bool | None = None) -> tuple[bool, bool, str]:
    """(compile the layers, keep Liger's layer kernels inside, why) for `train.compile_layers`
    (auto | on | off | liger): auto compiles on a single CUDA process where Triton is installed."""
    s = str(setting).lower()
    if s not in COMPILE_SETTINGS:
        raise ValueError(f"train.compile_layers={setting!r}: auto | on | off | liger")
    if s == "off":
        return False, False, "설정에서 끔"
    if s == "auto" and not on_cuda:
        return False, False, "CPU: 작은 모델이라 컴파일 시간이 이득보다 큼 (on으로 켤 수 있음)"
    if s == "auto" and processes > 1:
        return False, False, "여러 프로세스(DDP/FSDP)에서는 측정하지 않아 끔 (on으로 켤 수 있음)"
    if on_cuda and not (triton_available() if has_triton is None else has_triton):
        return False, False, "Triton 미설치: torch.compile(inductor)이 GPU 커널을 만들 수 없음"
    keep = s == "liger"
    return True, keep, ("디코더 층을 torch.compile로 컴파일 (모든 층이 같은 코드, 길이가 달라도 재컴파일 없음): "
                        "작은 micro-batch의 CPU(파이썬·커널 호출) 병목을 줄임"
                        + ("; Liger 층 커널을 컴파일 안에 둠" if keep else "; rope·RMSNorm·SwiGLU는 컴파일러가 융합"))


def _own_forward(cls):
    """The layer class's forward without transformers' checkpointing wrapper(s) around it."""
    fwd = cls.forward
    while getattr(getattr(fwd, "__code__", None), "co_name", "") == "forward_with_checkpointing":
        fwd = fwd.__wrapped__
    return fwd


def _training_forward(eager, compiled):
    """A layer's forward: the compiled code while training (checkpointed around it, per layer, as
    transformers does), the eager code otherwise (evaluation, generation)."""

    def forward(self, *args, **kwargs):
        training = self.training and torch.is_grad_enabled()
        fn = compiled if training else eager
        if training and self.gradient_checkpointing:
            if kwargs.get("use_cache"):
                kwargs["use_cache"] = False
            return self._gradient_checkpointing_func(functools.partial(fn, self, **kwargs), *args)
        return fn(self, *args, **kwargs)

    return forward


def compile_counters() -> dict:
    """torch.compile's process-wide counters: graphs compiled, graph breaks, seconds spent compiling."""
    from torch._dynamo.utils import calculate_time_spent, counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values())),
            "seconds": float(calculate_time_spent().get("total_wall_time", 0.0))}


class CompiledLayers:
    """The model's decoder layers running one compiled forward while training; `restore()` puts the
    eager forward back. `stats()` counts what was compiled since (graphs, graph breaks, seconds)."""

    def __init__(self, model, backend: str | None = None, dynamic: bool = True):
        self.layers = decoder_layers(model)
        if not self.layers:
            raise ValueError("컴파일할 디코더 층이 없습니다 (no decoder layers with self_attn)")
        self.backend = backend or BACKEND
        self.start = compile_counters()
        self.marks: dict[str, dict] = {}
        fns: dict[type, tuple] = {}
        for layer in self.layers:
            cls = type(layer)
            if cls not in fns:  # one compiled code per layer class, shared by its layers
                eager = _own_forward(cls)
                fns[cls] = (eager, torch.compile(eager, dynamic=dynamic, backend=self.backend))
            layer.forward = types.MethodType(_training_forward(*fns[cls]), layer)
        self.functions = fns

    def mark(self, name: str) -> None:
        """Remember the counters now (e.g. 'checked', 'trained') for stats()."""
        self.marks[name] = compile_counters()

    def stats(self) -> dict:
        now = compile_counters()
        out = {k: round(now[k] - self.start[k], 1) if k == "seconds" else now[k] - self.start[k] for k in now}
        if "checked" in self.marks:  # graphs compiled after the set-up check = recompiles in training
            out["graphs_after_check"] = now["graphs"] - self.marks["checked"]["graphs"]
        return out

    def restore(self) -> None:
        for layer in self.layers:
            vars(layer).pop("forward", None)


def probe_features(vocab: int, lens: tuple[int, ...] = (37, 61), answer: int = 9) -> list[dict]:
    """Two short random sequences (prompt masked, answer labelled) for the set-up check."""
    g = torch.Generator().manual_seed(0)
    out = []
    for n in lens:
        ids = torch.randint(10, vocab, (n,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * (n - answer) + ids[n - answer:]})
    return out


def compile_checked(model, loss_fn, batch: dict, backend: str | None = None,
                    tolerance: float | None = None) -> tuple[CompiledLayers | None, str]:
    """Compile the decoder layers and run `loss_fn(model, batch, n)` once compiled (forward +
    backward, which compiles both graphs) against the eager loss. Returns (the compiled layers, why)
    or (None, why not) with the eager layers back. The RNG state and the LoRA gradients are left as
    they were (the check draws dropout masks and accumulates gradients). On CUDA in 16 bits it runs
    under autocast as the Trainer's mixed precision does: the compiled code depends on that state,
    and a check without it would leave the training's first step to compile again."""
    emb = base_model(model).get_input_embeddings().weight
    device = emb.device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    n = (batch["labels"][:, 1:] != IGNORE_INDEX).sum()
    if tolerance is None:
        tolerance = 1e-4 if emb.dtype == torch.float32 else 2e-2
    trainable = [p for p in model.parameters() if p.requires_grad]
    amp = torch.autocast(device.type, dtype=emb.dtype,
                         enabled=device.type == "cuda" and emb.dtype in (torch.bfloat16, torch.float16))
    was_training = model.training
    model.train()  # the compiled code runs in training mode only
    t0 = time.perf_counter()
    compiled = None
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with amp, torch.no_grad():
                ref = loss_fn(model, batch, n)[0].item()  # eager: no gradients
            compiled = CompiledLayers(model, backend)
            with amp:
                loss = loss_fn(model, batch, n)[0]
            loss.backward()
        got = loss.item()
        bad = [p for p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
        rel = abs(got - ref) / max(abs(ref), 1e-6)
        if bad or rel > tolerance or got != got:
            compiled.restore()
            return None, (f"컴파일된 층의 결과가 eager와 다름 (loss {got:.5g} vs {ref:.5g}, 그래디언트 없음/NaN "
                          f"{len(bad)}개) → eager")
    except Exception as err:  # noqa: BLE001 - any failure means: eager layers
        if compiled is not None:
            compiled.restore()
        return None, f"torch.compile 실패 → eager ({type(err).__name__}: {str(err)[:160]})"
    finally:
        for p in trainable:
            p.grad = None
        model.train(was_training)
    compiled.mark("checked")
    # from here on a recompilation that fails (an input condition the check did not see) runs that
    # call eagerly instead of stopping the training; stats() shows such graphs and breaks
    from torch import _dynamo

    _dynamo.config.suppress_errors = True
    s = compiled.stats()
    return compiled, (f"점검 통과 (loss 상대 차이 {rel:.1e}, 그래프 {s['graphs']}개, 그래프 끊김 {s['graph_breaks']}, "
                      f"컴파일 {time.perf_counter() - t0:.0f}s)")
