"""VocabOffload: the embedding and lm_head in pinned CPU memory while not in use; ActivationOffload: checkpointed
layers' inputs there, and a recomputation without the one product backward does not read."""
from __future__ import annotations

import contextlib
import functools
import weakref

import torch
from torch.utils.checkpoint import checkpoint as torch_checkpoint

from ...model.lora import base_model, decoder_layers


# --- vocabulary weights off the GPU between uses ---------------------------------------------------------
class VocabOffload:
    """Keep the frozen input embedding and lm_head in pinned CPU memory while training.

    The embedding rows of a micro-batch are gathered on the CPU (the table never goes to the GPU); the
    lm_head weight is copied to the GPU when the decoder starts its forward (the copy runs while the
    layers compute) and dropped when the model's forward returns, after Liger's fused loss -- which
    keeps no reference to it for backward. During backward, where a checkpointed step peaks, neither
    is on the GPU: for EXAONE's 102,400 x 4,096 vocabulary that is 2 x 0.78 GiB, room for a bigger
    micro-batch on a small card. Single process only (DDP/FSDP broadcast and shard GPU parameters).
    Used as a context manager around `trainer.train()`; `restore()` puts both back.
    """

    def __init__(self, model):
        self.base = base_model(model)
        self.emb = self.base.get_input_embeddings()
        self.head = self.base.get_output_embeddings()
        if self.head is None or self.head.weight is self.emb.weight:
            raise ValueError("VocabOffload: 임베딩과 lm_head를 공유하는(tied) 모델에는 쓰지 않습니다")
        self.device = self.emb.weight.device
        self.handles: list = []
        self.cpu_emb = self.cpu_head = None

    def __enter__(self):
        return self.offload()

    def __exit__(self, *exc):
        self.restore()

    def offload(self) -> "VocabOffload":
        if self.handles:
            return self
        pin = self.device.type == "cuda"
        self.cpu_emb, self.cpu_head = ((w.pin_memory() if pin else w) for w in
                                       (m.weight.data.to("cpu") for m in (self.emb, self.head)))
        # the parameters keep an empty GPU placeholder: whatever moves the model between devices
        # (accelerate's preparation does) cannot bring the tables back
        for m in (self.emb, self.head):
            m.weight.data = torch.empty(0, dtype=m.weight.dtype, device=self.device)
        table = self.cpu_emb

        def embed(input_ids):
            # the rows are gathered into pinned memory and sent without waiting for the copy (frozen table:
            # padding_idx only matters for gradients, so this is the embedding's forward)
            ids = input_ids.to("cpu").reshape(-1)
            rows = torch.empty((ids.numel(), table.shape[1]), dtype=table.dtype, pin_memory=pin)
            torch.index_select(table, 0, ids, out=rows)
            return rows.view(*input_ids.shape, -1).to(input_ids.device, non_blocking=pin)

        self.emb.forward = embed
        self.handles = [self.base.model.register_forward_pre_hook(self._head_in),
                        self.base.register_forward_hook(self._head_out)]
        if pin:
            torch.cuda.empty_cache()
        return self

    def _head_in(self, module, args):
        self.head.weight.data = self.cpu_head.to(self.device, non_blocking=True)

    def _head_out(self, module, args, output):
        self.head.weight.data = torch.empty(0, dtype=self.cpu_head.dtype, device=self.device)

    def restore(self) -> None:
        if not self.handles:
            return
        for h in self.handles:
            h.remove()
        self.handles = []
        del self.emb.forward
        self.emb.weight.data = self.cpu_emb.to(self.device)
        self.head.weight.data = self.cpu_head.to(self.device)
        self.cpu_emb = self.cpu_head = None


# --- checkpointed layers' inputs off the GPU ------------------------------------------------------------
class _Saved:
    """One checkpointed layer's input, waiting in (pinned) CPU memory until its backward."""

    __slots__ = ("cpu", "gpu", "ready", "prev", "__weakref__")

    def __init__(self, cpu, prev):
        self.cpu, self.gpu, self.ready, self.prev = cpu, None, None, prev


# --- the recomputation skips the one product whose value backward never reads --------------------------------
# Decoder layers of the Llama form end with `hidden = residual + mlp.down_proj(act(gate) * up)`: backward needs
# the gradient of down_proj's input (grad_out @ W, W frozen) but never the value of its output, which only feeds
# the residual sum. The recomputation of a checkpointed layer therefore runs down_proj's 4-bit linear without
# its product (EXAONE-7.8B: 27% of a layer's matmul work; a third of a fully checkpointed step's matmuls is
# recomputation). Layers of another form (a norm after the MLP, Gemma's) keep the full recomputation.
OUTPUT_UNUSED_LAYERS = ("LlamaDecoderLayer", "ExaoneDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer",
                        "Qwen3DecoderLayer")


@functools.cache
def _recomputed_linear4bit():
    """The Linear4bit subclass a recomputation swaps in for down_proj: its output value is not read (made once, on
    first use: bitsandbytes is imported only where a layer is recomputed)."""
    import bitsandbytes as bnb
    from bitsandbytes.autograd._functions import MatMul4Bit

    class ProductUnused4Bit(MatMul4Bit):
        """bitsandbytes' 4-bit matmul with its backward (grad_A = grad @ dequantize(W)) and without the product in
        the forward: the output is zeros of the right shape."""

        @staticmethod
        def forward(ctx, A, B, out=None, bias=None, quant_state=None):
            ctx.is_empty = False
            ctx.state = quant_state
            ctx.dtype_A, ctx.dtype_B, ctx.dtype_bias = A.dtype, B.dtype, None
            ctx.tensors = (None, B.view(-1, 1))
            return A.new_zeros(*A.shape[:-1], quant_state.shape[0])

    class RecomputedLinear4bit(bnb.nn.Linear4bit):
        def forward(self, x):
            inp_dtype = x.dtype
            if self.compute_dtype is not None:
                x = x.to(self.compute_dtype)
            return ProductUnused4Bit.apply(x, self.weight, None, None, self.weight.quant_state).to(inp_dtype)

    return RecomputedLinear4bit


def output_linear(layer):
    """The frozen 4-bit linear whose output only feeds the layer's residual sum (down_proj of a Llama-form layer;
    under LoRA its base layer), or None where that does not hold."""
    if type(layer).__name__ not in OUTPUT_UNUSED_LAYERS:
        return None
    down = getattr(getattr(layer, "mlp", None), "down_proj", None)
    down = getattr(down, "base_layer", down)
    if type(down).__name__ != "Linear4bit" or down.bias is not None or getattr(down.weight, "quant_state", None) is None:
        return None
    return down


class ActivationOffload:
    """Gradient checkpointing whose saved layer inputs wait in pinned CPU memory.

    A checkpointed decoder layer keeps only its input for the backward (hidden x 2 bytes per token); with
    every layer checkpointed that is one tensor per layer, 32 x 70 MB for EXAONE at 8 sequences of ~1,060
    tokens: 2.2 GiB of an 8 GiB budget. Here each input is copied to pinned CPU memory on a side stream while
    the layer computes (the GPU copy is then free), and during the backward the input of the layer before is
    copied back while this layer recomputes, so the copies hide behind the compute. What stays on the GPU: the
    one or two inputs in flight. The planner spends what this frees on a bigger micro-batch.

    `checkpoint(fn, hidden, *args)` has the signature of transformers' `_gradient_checkpointing_func`. The
    recomputation runs the same code as the forward (the compiled layer's training graph), under the forward's
    autocast state and with its RNG state restored, so LoRA dropout draws the same masks: loss and gradients
    are those of plain checkpointing (tests/test_activation_offload.py). Only down_proj's product, whose value
    backward never reads, is not recomputed (output_linear; `skip_unused_product`). Single process only (as
    VocabOffload): the recomputation happens inside autograd's backward of the layer (reentrant), which DDP's
    hooks do not expect. On the CPU the "offload" is a copy in CPU memory (the same code path, for the tests).
    """

    def __init__(self, skip_unused_product: bool = True):
        self.stream = None  # the side stream for the copies (CUDA)
        self.last = None  # weakref to the newest saved input: the backward prefetches along these links
        self.copies = 0  # inputs saved (counted for the printout and tests)
        self.skip_unused_product = skip_unused_product  # recomputation without down_proj's product (above)
        self.skipped = 0  # recomputations that skipped it

    def attach(self, model, layers: int) -> "ActivationOffload":
        """The first `layers` decoder layers (the checkpointed ones) checkpoint through this offload."""
        for block in decoder_layers(model)[:layers]:
            unused = output_linear(block) if self.skip_unused_product else None
            block._gradient_checkpointing_func = functools.partial(self.checkpoint, output_unused=unused)
        return self

    def checkpoint(self, fn, hidden, *args, output_unused=None):
        if any(torch.is_tensor(a) and a.requires_grad for a in args):  # only the hidden state is offloaded
            return torch_checkpoint(fn, hidden, *args, use_reentrant=False)
        return _OffloadedCheckpoint.apply(self, fn, output_unused, hidden, *args)

    @contextlib.contextmanager
    def recomputing(self, linear):
        """While a layer is recomputed: its output linear (output_linear) skips the product."""
        if linear is None:
            yield
            return
        cls = type(linear)
        linear.__class__ = _recomputed_linear4bit()
        try:
            yield
        finally:
            linear.__class__ = cls
        self.skipped += 1

    # copies: out in the forward, back in the backward (prefetching the layer before)
    def save(self, hidden) -> _Saved:
        prev = self.last() if self.last is not None else None
        if hidden.device.type == "cuda":
            if self.stream is None:
                self.stream = torch.cuda.Stream(hidden.device)
            self.stream.wait_stream(torch.cuda.current_stream(hidden.device))  # hidden is computed
            with torch.cuda.stream(self.stream):
                cpu = torch.empty(hidden.shape, dtype=hidden.dtype, pin_memory=True)
                cpu.copy_(hidden, non_blocking=True)
            hidden.record_stream(self.stream)  # its GPU memory is not reused before the copy is done
        else:
            cpu = hidden.detach().clone()
        entry = _Saved(cpu, weakref.ref(prev) if prev is not None else None)
        self.last = weakref.ref(entry)
        self.copies += 1
        return entry

    def _fetch(self, entry: _Saved, device) -> None:
        if device.type == "cuda":
            with torch.cuda.stream(self.stream):  # after the D2H copy: same stream
                entry.gpu = entry.cpu.to(device, non_blocking=True)
                entry.ready = torch.cuda.Event()
                entry.ready.record(self.stream)
        else:
            entry.gpu = entry.cpu.clone()

    def load(self, entry: _Saved, device):
        """The saved input back on `device`; the input of the layer before starts coming back too."""
        if entry.gpu is None:
            self._fetch(entry, device)
        hidden, entry.gpu = entry.gpu, None
        if device.type == "cuda":
            main = torch.cuda.current_stream(device)
            main.wait_event(entry.ready)
            hidden.record_stream(main)  # allocated on the side stream, used and freed on this one
        prev = entry.prev() if entry.prev is not None else None
        if prev is not None and prev.gpu is None:
            self._fetch(prev, device)
        return hidden


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype]:
    return torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type)


class _OffloadedCheckpoint(torch.autograd.Function):
    @staticmethod
    def forward(ctx, offload, fn, output_unused, hidden, *args):
        device = hidden.device
        ctx.offload, ctx.fn, ctx.args, ctx.device, ctx.output_unused = offload, fn, args, device, output_unused
        ctx.autocast = _autocast_state(device.type)
        ctx.cpu_rng = torch.get_rng_state()
        ctx.cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        ctx.entry = offload.save(hidden)
        # the forward builds the layer's graph as the recomputation will (same compiled code, same random
        # numbers) and drops it: only the output leaves
        with torch.enable_grad():
            out = fn(hidden.detach().requires_grad_(hidden.requires_grad), *args)
        return tuple(o.detach() if torch.is_tensor(o) else o for o in out) if isinstance(out, tuple) else out.detach()

    @staticmethod
    def backward(ctx, *grads):
        device = ctx.device
        x = ctx.offload.load(ctx.entry, device).detach().requires_grad_(True)
        ctx.entry = None
        enabled, dtype = ctx.autocast
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.set_rng_state(ctx.cpu_rng)
            if ctx.cuda_rng is not None:
                torch.cuda.set_rng_state(ctx.cuda_rng, device)
            with (torch.enable_grad(), torch.autocast(device.type, dtype=dtype, enabled=enabled),
                  ctx.offload.recomputing(ctx.output_unused)):
                out = ctx.fn(x, *ctx.args)
        outs = out if isinstance(out, tuple) else (out,)
        pairs = [(o, g) for o, g in zip(outs, grads) if torch.is_tensor(o) and o.requires_grad and g is not None]
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        return (None, None, None, x.grad) + (None,) * len(ctx.args)


def set_activation_offload(model, layers: int) -> ActivationOffload | None:
    """The first `layers` decoder layers (the checkpointed ones, fastpath/apply.set_checkpointing) keep their
    inputs in CPU memory (ActivationOffload); 0 = none. Returns the offload (its `copies` count)."""
    return ActivationOffload().attach(model, layers) if layers > 0 else None
