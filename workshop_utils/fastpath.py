"""The GPU fast path for QLoRA training: the same training, less memory, more tokens per second.

What the seed's recipe does on a GPU, and what the fast path changes (each part switchable in
`TrainSettings`; `workshop bench` measures each, see docs/benchmarks.md):

- padded batches (up to 25% of the tokens are padding with RAFT's uneven lengths)
  -> padding-free batches: the micro-batch's sequences concatenated into one row, `position_ids`
     restarting at 0 for each; attention stays inside each sequence (transformers detects the packed
     format from the position ids), the prompt is masked as before.
- logits and fp32 cross-entropy over all positions of a 102,400-token vocabulary (~1.7 GB per 4k tokens)
  -> completion-only: logits only where an answer token follows, and with Liger's fused linear
     cross-entropy the logits are never materialized at all.
- eager rope / RMSNorm / SwiGLU -> Liger's Triton kernels, applied to the model instance
  (`apply_liger_kernel_to_llama(model=...)`): Liger picks kernels by `model_type` and does not know
  'exaone', but transformers 5 runs EXAONE with the Llama classes, so the Llama kernels fit.
- attention over the packed row: `workshop_varlen`, torch's variable-length flash attention
  (`torch.nn.attention.varlen`, torch >= 2.10, compute capability >= 8.0) registered as a transformers
  attention function: each sequence attends only to itself, so the cost grows with the sum of the
  squared sequence lengths, not with the square of the row (sdpa over a packed row computes the whole
  row x row score matrix and masks most of it away: at 8 sequences of ~1,060 tokens that is 8x the
  attention work). Where the flash kernel is missing (T4, older torch) the memory-efficient varlen
  kernel (`workshop_varlen_efficient`, attention_varlen.py; compute capability >= 5.0), else sdpa with
  transformers' block-diagonal mask. flex_attention is opt-in via `model.attn_implementation`; each new packed
  length recompiles it, and on an H200 its warm-up did not finish in 10 minutes (docs/benchmarks.md).
- gradient checkpointing on or off -> decided from the memory budget: off when the card has room, on
  when it does not, and in between only the first N layers recompute their activations.
- peft's fp32 upcast of embeddings and lm_head (+1.7 GB for EXAONE) -> kept in the compute dtype,
  and on a tight budget kept in CPU memory while not in use (VocabOffload: 2 x 0.78 GiB for EXAONE),
  which lets the micro-batch grow.
- 16 GB mode (T4 class): fp16 with loss scaling, kernels of compute capability 7.5 only (the
  memory-efficient varlen attention), every layer checkpointed, fused loss.
- eager decoder layers -> one compiled forward shared by all layers (`train.compile_layers`,
  fastpath_compile.py): small micro-batches are bound by Python and kernel launches, not the GPU.

Numerically it is the same training: tests/test_fastpath.py compares loss and LoRA gradients of the
fast and the plain path on CPU.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import math
from dataclasses import dataclass, field

import torch

from .attention_varlen import (EFFICIENT_VARLEN_ATTENTION, efficient_varlen_works, reference_varlen,
                               reference_varlen_op, register_efficient_varlen_attention)
from .fastpath_compile import compile_checked, compile_choice, probe_features
from .memory import GIB, Shape, estimate, layer_activation_bytes_per_token
from .prompts import IGNORE_INDEX

PAD_MULTIPLE = 128  # flex_attention's block size; also keeps the number of distinct shapes small
SIXTEEN_GB_BUDGET_GIB = 8.0  # 16gb mode: planned peak allocated on a T4-class card


# --- padding-free batches --------------------------------------------------------------------------------
@dataclass
class FlatteningCollator:
    """Concatenate a micro-batch into one row (batch size 1) with position ids restarting per sequence.

    Labels are the examples' own (prompt -100, answer + end-of-turn kept); the first token of every
    sequence is a prompt token, so no label crosses a sequence boundary. `pad_to_multiple_of` appends
    one filler sequence (pad ids, labels -100, its own positions) so that the row length takes few
    distinct values (each new length is a new shape for the compiled flex_attention); the Trainer's
    `include_num_input_tokens_seen="non_padding"` does not count it.
    """

    pad_token_id: int
    pad_to_multiple_of: int = 1
    seq_lens: bool = False  # also the sequence boundaries for `workshop_varlen` attention

    def __call__(self, features: list[dict]) -> dict:
        ids, labels, pos, lens = [], [], [], []
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            if n == 0 or len(f["labels"]) != n:
                raise ValueError(f"micro-batch example {i}: input_ids has {n} tokens, labels "
                                 f"{len(f['labels'])} (they must be equal and non-empty)")
            ids += list(f["input_ids"])
            labels += list(f["labels"])
            pos += list(range(n))
            lens.append(n)
        m = self.pad_to_multiple_of
        filler = (-len(ids)) % m if m > 1 else 0
        if filler:
            ids += [self.pad_token_id] * filler
            labels += [IGNORE_INDEX] * filler
            pos += list(range(filler))
            lens.append(filler)
        out = {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
               "position_ids": torch.tensor([pos])}
        if self.seq_lens:
            # transformers' names for varlen boundaries (forwarded to the attention function)
            out["cu_seq_lens_q"] = torch.tensor([0] + lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
            out["max_length_q"] = max(lens)
        return out


# --- Liger kernels ---------------------------------------------------------------------------------------
LIGER_KERNELS = ["rope", "rms_norm", "swiglu", "fused_linear_cross_entropy"]


def base_model(model):
    """The causal LM itself: under a PeftModel its base model, else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def liger_available() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def apply_liger(model, layer_kernels: bool = True) -> list[str]:
    """Liger's Llama kernels on this model instance (the base causal LM under a PeftModel); without
    `layer_kernels` only the fused linear cross-entropy (compiled layers fuse rope/RMSNorm/SwiGLU).

    EXAONE's model_type is 'exaone', which Liger's automatic dispatch does not know; transformers 5
    builds it from the Llama classes, so `apply_liger_kernel_to_llama(model=...)` fits. The fused
    linear cross-entropy replaces this instance's forward only; rope is a module-level function in
    transformers' Llama code, so it changes for every Llama-family model in this process (it is the
    same math).
    """
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    base = base_model(model)
    if base.config.model_type not in ("llama", "exaone"):
        raise ValueError(f"Liger Llama 커널은 Llama 계열 전용입니다 (model_type={base.config.model_type})")
    if not hasattr(base.config, "pretraining_tp"):  # a Llama-only field that Liger's forward reads
        base.config.pretraining_tp = 1
    apply_liger_kernel_to_llama(model=base, rope=layer_kernels, rms_norm=layer_kernels, swiglu=layer_kernels,
                                fused_linear_cross_entropy=True, cross_entropy=False)
    kernels = list(LIGER_KERNELS) if layer_kernels else LIGER_KERNELS[-1:]
    base._workshop_liger = tuple(kernels)
    return kernels


def uses_liger_loss(model) -> bool:
    return bool(getattr(base_model(model), "_workshop_liger", False))


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
        emb, table = self.emb, self.cpu_emb

        def embed(input_ids):
            rows = torch.nn.functional.embedding(input_ids.to("cpu"), table, emb.padding_idx)
            return rows.to(input_ids.device)

        emb.forward = embed
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


# --- the loss ------------------------------------------------------------------------------------------
def fast_completion_loss(model, inputs: dict, num_items_in_batch=None):
    """Completion-only loss of a (flattened or padded) batch; Liger's fused loss when it is applied.

    Same value as HF's causal-LM loss: sum of token losses at answer positions divided by the
    number of answer tokens in the whole accumulation group (`num_items_in_batch`).
    """
    from .training import completion_loss, completion_positions

    if not uses_liger_loss(model):
        return completion_loss(model, inputs, num_items_in_batch)
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep = completion_positions(labels)
    targets = labels[:, keep + 1]
    n = num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE_INDEX).sum()
    if torch.is_tensor(n):
        n = n.to(labels.device)
    out = model(**inputs, logits_to_keep=keep, shift_labels=targets, num_items_in_batch=n, use_cache=False)
    return out.loss, out


# --- attention -----------------------------------------------------------------------------------------
VARLEN_ATTENTION = "workshop_varlen"


_reference_varlen = reference_varlen  # per-sequence sdpa: CPU path and the kernels' reference


@functools.lru_cache(maxsize=None)
def _varlen_kernel():
    """torch's varlen flash-attention function and its parameter names (None before torch 2.10)."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None, frozenset()
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


def _cuda_varlen(q, k, v, cu: torch.Tensor, max_len: int, scale: float | None) -> torch.Tensor:
    fn, params = _varlen_kernel()
    kw = {"scale": scale}
    if "window_size" in params:
        kw["window_size"] = (-1, 0)  # causal
    else:
        kw["is_causal"] = True
    if q.shape[1] != k.shape[1]:
        if "enable_gqa" in params:
            kw["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    return fn(q, k, v, cu, cu, max_len, max_len, **kw)


def varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                             scaling: float | None = None, cu_seq_lens_q=None, max_length_q=None, **kwargs):
    """transformers attention function for padding-free rows: each packed sequence attends to itself.

    query/key/value: (1, heads, row tokens, head dim); the boundaries come from FlatteningCollator
    (`cu_seq_lens_q`, `max_length_q`). Without them (generation, padded batches) it is plain sdpa with
    the mask transformers built.
    """
    if cu_seq_lens_q is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"{VARLEN_ATTENTION}: a packed row has batch size 1, got {query.shape[0]}")
    if dropout:
        raise ValueError(f"{VARLEN_ATTENTION}: attention dropout is not supported (got {dropout})")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # tokens x heads x head dim
    if q.is_cuda and _varlen_kernel()[0] is not None:
        out = _cuda_varlen(q.contiguous(), k.contiguous(), v.contiguous(), cu_seq_lens_q.to(q.device),
                           int(max_length_q), scaling)
    elif torch.compiler.is_compiling():  # a compiled decoder layer (fastpath_compile): one opaque op
        out = reference_varlen_op(q, k, v, cu_seq_lens_q, max_length_q, scaling)
    else:
        out = _reference_varlen(q, k, v, cu_seq_lens_q.tolist(), scaling)
    return out.unsqueeze(0), None  # (1, tokens, heads, head dim), as transformers' attention functions


# attention functions that read the packed row's boundaries (FlatteningCollator(seq_lens=True))
SEQUENCE_BOUNDARY_ATTENTIONS = (VARLEN_ATTENTION, EFFICIENT_VARLEN_ATTENTION)


def register_varlen_attention() -> str:
    """Register `workshop_varlen` with transformers (attention + the sdpa mask for generation)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(VARLEN_ATTENTION, varlen_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(VARLEN_ATTENTION, sdpa_mask)
    return VARLEN_ATTENTION


def _no_ampere_gpu(what: str) -> str | None:
    """Why this machine cannot run compute-capability-8.0 attention kernels (None if it can)."""
    if not torch.cuda.is_available():
        return "CUDA 없음"
    major, minor = torch.cuda.get_device_capability()
    if major < 8:
        return f"compute capability {major}.{minor} < 8.0 (T4/V100): {what} → sdpa"
    return None


@functools.lru_cache(maxsize=None)
def varlen_attention_works(dtype: torch.dtype = torch.bfloat16) -> tuple[bool, str]:
    """Does torch's varlen flash kernel run (forward + backward) on this GPU and match sdpa?"""
    missing = _no_ampere_gpu("flash 커널 없음")
    if missing:
        return False, missing
    if _varlen_kernel()[0] is None:
        return False, f"torch {torch.__version__}에 torch.nn.attention.varlen 없음 (2.10 이상 필요) → sdpa"
    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        q = torch.randn(96, 8, 64, device="cuda", dtype=dtype, generator=g, requires_grad=True)
        kv = torch.randn(2, 96, 2, 64, device="cuda", dtype=dtype, generator=g)
        cu = [0, 40, 96]
        got = _cuda_varlen(q, kv[0], kv[1], torch.tensor(cu, dtype=torch.int32, device="cuda"), 56, None)
        got.float().sum().backward()
        ref = _reference_varlen(q.detach(), kv[0], kv[1], cu, None)
        err = (got.detach().float() - ref.float()).abs().max().item()
        if err > 2e-2:
            return False, f"varlen 커널 결과가 sdpa와 다름 (최대 오차 {err:.3g}) → sdpa"
        return True, "varlen flash attention (시퀀스마다 따로: 패킹된 행 전체의 제곱 계산 없음)"
    except Exception as err:  # noqa: BLE001 - any failure means: use sdpa
        return False, f"varlen 커널 실행 실패 → sdpa ({type(err).__name__}: {str(err)[:120]})"


@functools.lru_cache(maxsize=None)
def flex_attention_compiles(dtype: torch.dtype = torch.bfloat16) -> tuple[bool, str]:
    """Try flex_attention (compiled, forward + backward) on a tiny packed input on this GPU."""
    missing = _no_ampere_gpu("flex_attention 커널 미지원")
    if missing:
        return False, missing
    import time

    t0 = time.perf_counter()
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        seq = torch.tensor([0] * 100 + [1] * 156, device="cuda")

        def mask(b, h, q, kv):
            return (seq[q] == seq[kv]) & (q >= kv)

        bm = create_block_mask(mask, None, None, 256, 256, device="cuda")
        q = torch.randn(1, 2, 256, 64, device="cuda", dtype=dtype, requires_grad=True)
        torch.compile(flex_attention)(q, q, q, block_mask=bm).sum().backward()
        torch.cuda.synchronize()
        return True, (f"flex_attention이 이 GPU에서 컴파일됨 (점검 {time.perf_counter() - t0:.0f}s; "
                      "첫 스텝에서 모델 크기로 한 번 더 컴파일, 1~2분)")
    except Exception as err:  # noqa: BLE001 - any failure means: use sdpa
        return False, f"flex_attention 컴파일 실패 → sdpa ({type(err).__name__}: {str(err)[:120]})"


# --- memory plan ---------------------------------------------------------------------------------------
# Calibration against `workshop bench` on an H200 (EXAONE-7.8B shape, docs/benchmarks.md): a layer
# without checkpointing kept 0.84x the textbook estimate (Liger's SwiGLU/RMSNorm recompute cheap
# intermediates); ~0.3 GiB on top of the parts for allocator blocks, the optimizer's paged buffers and
# attention workspaces, bf16 and fp16 alike (an earlier fp16-only 1.9 GiB was memory left by the
# previous recipe in the same process, see bench --isolate). With one process per recipe the estimates
# stay 0.5-1 GiB above the measured peaks on small budgets.
ACTIVATION_CALIBRATION = 0.84
FIXED_OVERHEAD_GIB = 0.3


def layer_activation_bytes(s: Shape, tokens: int, bytes_per_value: int = 2) -> float:
    """Activations one decoder layer keeps for backward without checkpointing (q/k/v, attention
    output, norms, MLP gate/up/product, LoRA dropout inputs): memory.layer_activation_bytes_per_token,
    calibrated on the GPU."""
    return layer_activation_bytes_per_token(s, bytes_per_value) * tokens * ACTIVATION_CALIBRATION


def fast_path_memory(s: Shape, tokens: int, checkpoint_layers: int, r: int = 16,
                     targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj"),
                     fused_loss: bool = True, completion_tokens: int = 0, bytes_per_value: int = 2,
                     offload_vocab: bool = False) -> dict:
    """Estimated peak GiB of one training step of the fast path (NF4 weights, embeddings in 16 bits;
    with `offload_vocab` the embedding and lm_head stay in CPU memory, the lm_head visiting the GPU
    at the end of each forward)."""
    # weights and LoRA state as memory.estimate counts them (no fp32 upcast, 8-bit optimizer)
    fixed = estimate(s, 0, r, targets, fused_loss=True, upcast_embeddings=False)
    full = layer_activation_bytes(s, tokens, bytes_per_value)
    kept = s.hidden * bytes_per_value * tokens
    ck = min(max(checkpoint_layers, 0), s.layers)
    acts = (s.layers - ck) * full + ck * kept
    # backward holds one layer's activation gradients; a checkpointed layer also its recomputation
    working = full * (2 if ck else 1)
    logits = (256 * 1024**2 if fused_loss else completion_tokens * s.vocab * (2 + 4 + 4))
    parts = {"activations": acts, "working": working, "loss": logits}
    weights = fixed["weights"]
    if offload_vocab:
        weights -= vocab_gib(s, bytes_per_value)
        # the lm_head is back on the GPU at the end of the forward, next to that moment's working set
        parts["lm_head (forward end)"] = max(0.0, s.vocab * s.hidden * bytes_per_value - working)
    out = {"weights": weights, "lora+grad+optim": fixed["lora+grad+optim"],
           **{k: v / GIB for k, v in parts.items()}}
    out["overhead"] = FIXED_OVERHEAD_GIB
    out["total"] = sum(out.values())
    return out


@dataclass
class FastPlan:
    """What the fast path will do for one training run, and why (printed by `workshop train`)."""

    enabled: bool
    mode: str = "plain"  # plain | budget | 16gb
    padding_free: bool = False
    liger: bool = False
    attention: str = "sdpa"
    checkpoint_layers: int = 0
    num_layers: int = 0
    micro_batch: int = 1
    grad_accum: int = 1
    upcast_non_4bit: bool = True
    offload_vocab: bool = False
    pad_to_multiple_of: int = 1
    compile_layers: bool = False  # decoder layers through torch.compile (fastpath_compile)
    compile_keep_liger: bool = False  # Liger's rope/RMSNorm/SwiGLU inside the compiled layers
    budget_gib: float | None = None
    estimate_gib: float | None = None
    reasons: dict = field(default_factory=dict)

    @property
    def checkpointing(self) -> str:
        if self.checkpoint_layers <= 0:
            return "off"
        if self.checkpoint_layers >= self.num_layers:
            return "all"
        return f"{self.checkpoint_layers}/{self.num_layers} layers"

    def lines(self) -> list[str]:
        if not self.enabled:
            return [f"[fast] 고속 경로 꺼짐: {self.reasons.get('fast_path', '')}"]
        out = [f"[fast] 고속 경로 mode={self.mode}: padding_free={self.padding_free}, liger={self.liger}, "
               f"attention={self.attention}, checkpointing={self.checkpointing}, "
               f"micro_batch={self.micro_batch} x accumulation {self.grad_accum}, "
               f"offload_vocab={self.offload_vocab}, compile_layers={self.compile_layers}"]
        if self.estimate_gib is not None:
            out.append(f"[fast] 예상 최대 메모리 {self.estimate_gib:.1f} GiB / 예산 {self.budget_gib:.1f} GiB")
        out += [f"[fast]   {k}: {v}" for k, v in self.reasons.items()]
        return out


# Cost model for choosing (micro-batch, checkpointed layers, vocabulary offload), fitted to
# `workshop bench` on H200s (docs/benchmarks.md): recomputing every layer adds about half a step (with
# frozen 4-bit weights the backward is about one forward); every micro-batch costs a fixed ~9,000
# tokens' worth of time -- with varlen attention a token costs ~40 us, and the CPU needs ~0.37 s to
# issue one micro-batch's kernels through 32 layers x (4-bit dequantization, LoRA, norms): the
# profiler showed a memory-bounded step with 4.6 s of CPU work for 1.5 s of GPU work, so micro-batches
# of 1-2 sequences leave the GPU idle. Moving the lm_head in and gathering embeddings on the CPU
# costs ~600 tokens' worth per micro-batch.
RECOMPUTE_COST = 0.5
MICRO_BATCH_OVERHEAD_TOKENS = 9000
VOCAB_OFFLOAD_TOKENS = 600


def micro_batch_tokens(m: int, mean_tokens: int, p90_tokens: int) -> int:
    """Tokens to plan for in a micro-batch of m sequences: the mean plus a spread that shrinks as
    sequences average out (p90 for a single sequence)."""
    return int(m * mean_tokens + (p90_tokens - mean_tokens) * math.sqrt(m))


def step_cost(m: int, ck: int, layers: int, mean_tokens: int, offload: bool = False) -> float:
    per_micro_batch = MICRO_BATCH_OVERHEAD_TOKENS + (VOCAB_OFFLOAD_TOKENS if offload else 0)
    return 1 + RECOMPUTE_COST * ck / layers + per_micro_batch / (m * max(mean_tokens, 1))


def fixed_checkpoint_layers(setting, layers: int) -> int | None:
    """`train.gradient_checkpointing` as a layer count: on/true = all, off/false = 0, N = the first N
    layers (capped), auto = None (decided from the memory budget)."""
    s = str(setting).lower()
    n = {"on": layers, "true": layers, "off": 0, "false": 0}.get(s)
    return min(int(s), layers) if n is None and s.isdigit() else n


def vocab_gib(shape: Shape, bytes_per_value: int = 2) -> float:
    """GiB of the input embedding and lm_head in 16 bits (one table if tied)."""
    return shape.vocab * shape.hidden * bytes_per_value * (1 if shape.tied_embeddings else 2) / GIB


def vocab_offload_options(setting: str, liger: bool, on_cuda: bool, shape: Shape) -> tuple[list[bool], str]:
    """Which VocabOffload choices the planner may weigh (setting auto | on | off), and why not."""
    from .distributed import dist_info

    setting = str(setting).lower()
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"train.offload_vocab={setting!r}: auto | on | off")
    why = ("설정에서 끔" if setting == "off" else
           "CUDA에서만" if not on_cuda else
           "Liger fused loss가 필요 (lm_head를 backward까지 잡아 두지 않음)" if not liger else
           "임베딩과 lm_head를 공유하는(tied) 모델" if shape.tied_embeddings else
           "여러 프로세스(DDP/FSDP)에서는 쓰지 않음" if dist_info().world_size > 1 else "")
    if why:
        return [False], why
    return ([True] if setting == "on" else [False, True]), ""


def fast_path_off_reason(cfg, device) -> str | None:
    """Why the fast path is off for this config and device (None = it is on)."""
    if cfg.train.fast_path == "off":
        return "설정에서 끔"
    if cfg.train.fast_path == "auto" and device.device != "cuda":
        return "CUDA가 아님 (CPU는 작은 모델: 기본 경로)"
    return None


def plan_fast_path(cfg, device, shape: Shape, mean_tokens: int, p90_tokens: int | None = None,
                   completion_tokens: int = 0, budget_gib: float | None = None,
                   kernels: tuple[bool, bool] | None = None) -> FastPlan:
    """Decide the fast path's parts for this run.

    `mean_tokens`/`p90_tokens`: token lengths of the training sequences; `shape`: the model's shape.
    The effective batch (micro-batch x accumulation, the seed's 4 x 4 = 16) is kept; the micro-batch
    and the number of checkpointed layers are chosen together: for each micro-batch the fewest
    checkpointed layers that fit the memory budget, then the pair with the lowest estimated step time
    (`step_cost`). `kernels` = (Liger installed, varlen flash kernel runs[, memory-efficient varlen
    kernel runs]) for planning another machine's GPU (plan_table; Triton is then assumed installed);
    by default this machine is probed.
    """
    t = cfg.train
    p90_tokens = p90_tokens or mean_tokens
    on_cuda = device.device == "cuda"
    off = fast_path_off_reason(cfg, device)
    if off:
        return FastPlan(False, reasons={"fast_path": off})
    plan = FastPlan(True, num_layers=shape.layers, upcast_non_4bit=False)
    r = plan.reasons
    mode = t.memory_mode
    if mode == "auto":
        mode = "16gb" if device.dtype == torch.float16 else "budget"
    if mode not in ("budget", "16gb"):
        raise ValueError(f"train.memory_mode={mode!r}: auto | budget | 16gb")
    plan.mode = mode
    r["mode"] = ("fp16 GPU(T4급): fp16 + compute capability 7.5 커널만 + 전체 체크포인팅 + fused loss" if mode == "16gb"
                 else "메모리 예산 안에서 가장 빠른 구성")
    plan.padding_free = bool(t.padding_free)
    r["padding_free"] = "패딩 없는 배치 (RAFT 길이 편차만큼 계산 절약)" if plan.padding_free else "설정에서 끔"
    has_liger, has_varlen = (kernels or (liger_available(), None))[:2]
    if t.liger_kernels and on_cuda and has_liger:
        plan.liger = True
        r["liger"] = "rope·RMSNorm·SwiGLU·fused linear CE (logits를 만들지 않음)"
    else:
        r["liger"] = ("설정에서 끔" if not t.liger_kernels else
                      "CUDA 필요 (Triton 커널)" if not on_cuda else "liger-kernel 미설치: pip install liger-kernel")
    attn = cfg.model.attn_implementation
    if attn != "auto":
        plan.attention, r["attention"] = attn, "설정에서 지정"
    elif not plan.padding_free:
        plan.attention, r["attention"] = "sdpa", "패딩 배치: sdpa"
    elif mode == "16gb":
        # only kernels that run on compute capability 7.5 (T4): the memory-efficient varlen kernel
        plan.attention = EFFICIENT_VARLEN_ATTENTION
    else:
        # varlen flash attention where the kernel runs; flex_attention is opt-in
        # (model.attn_implementation="flex_attention", probed by flex_attention_compiles): with
        # padding-free batches every new row length recompiles it, and on an H200 the flex recipe did
        # not get through its warm-up steps in 10 minutes.
        plan.attention = VARLEN_ATTENTION
    if plan.attention == VARLEN_ATTENTION:
        ok, why = (varlen_attention_works(device.dtype) if on_cuda and has_varlen is None else
                   (True, "CPU: 시퀀스별 sdpa (참조 구현)") if not on_cuda else
                   (has_varlen, "varlen flash attention" if has_varlen else "varlen 커널 없음 → sdpa"))
        if not ok:  # no flash kernel: the memory-efficient varlen kernel where it runs, else sdpa
            plan.attention = EFFICIENT_VARLEN_ATTENTION if attn == "auto" else "sdpa"
        r["attention"] = why
    if plan.attention == EFFICIENT_VARLEN_ATTENTION:
        has_efficient = kernels[2] if kernels and len(kernels) > 2 else None
        ok, why = (efficient_varlen_works(device.dtype) if on_cuda and has_efficient is None else
                   (True, "CPU: 시퀀스별 sdpa (참조 구현)") if not on_cuda else
                   (has_efficient, "memory-efficient varlen attention" if has_efficient else
                    "memory-efficient varlen 커널 없음 → sdpa"))
        if not ok:
            plan.attention = "sdpa"
        r["attention"] = why if ok or "attention" not in r else f"{r['attention']}; {why}"
    if plan.attention == "flex_attention" and on_cuda:
        ok, why = flex_attention_compiles(device.dtype)
        if not ok:
            plan.attention = "sdpa"
        r["attention"] = why
    # a filler sequence only helps the compiled flex_attention (fewer distinct shapes); sdpa would
    # just compute it
    plan.pad_to_multiple_of = PAD_MULTIPLE if (plan.padding_free and plan.attention == "flex_attention") else 1
    from .distributed import dist_info

    plan.compile_layers, plan.compile_keep_liger, r["compile"] = compile_choice(
        t.compile_layers, on_cuda, dist_info().world_size, has_triton=True if kernels else None)
    # memory budget -> micro-batch and checkpointed layers
    effective = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if budget_gib is None:
        budget_gib = t.memory_budget_gib or ((device.vram_gib or 0) * 0.85 if on_cuda else 0)
        if mode == "16gb" and not t.memory_budget_gib and on_cuda:
            # a 16 GB card (15 GiB usable) also holds the CUDA context, allocator slack and evaluation
            budget_gib = min(budget_gib, SIXTEEN_GB_BUDGET_GIB)
    plan.budget_gib = budget_gib
    fixed_ck = fixed_checkpoint_layers(t.gradient_checkpointing, shape.layers)
    if mode == "16gb" and fixed_ck is None:
        fixed_ck = shape.layers

    offloads, why_not = vocab_offload_options(t.offload_vocab, plan.liger, on_cuda, shape)

    def est(m, ck, off=False):
        return fast_path_memory(shape, micro_batch_tokens(m, mean_tokens, p90_tokens), ck, cfg.lora.r,
                                tuple(cfg.lora.target_modules), plan.liger, m * completion_tokens,
                                offload_vocab=off)["total"]

    best = None
    if not budget_gib:  # CPU (no budget): the configured batch, checkpointing as set (default off)
        best = (t.per_device_train_batch_size, fixed_ck or 0, False)
    else:
        for m in (d for d in range(min(effective, 16), 0, -1) if effective % d == 0):
            for off in offloads:
                options = [fixed_ck] if fixed_ck is not None else range(0, shape.layers + 1)
                ck = next((c for c in options if est(m, c, off) <= budget_gib), None)
                if ck is not None and (best is None or step_cost(m, ck, shape.layers, mean_tokens, off)
                                       < step_cost(*best[:2], shape.layers, mean_tokens, best[2])):
                    best = (m, ck, off)
        if best is None:
            best = (1, shape.layers, offloads[-1])
            r["memory"] = f"예산 {budget_gib:.1f} GiB에 맞는 구성이 없음: 가장 작은 구성으로 시도 (OOM 가능)"
    plan.micro_batch, plan.checkpoint_layers, plan.offload_vocab = best
    plan.grad_accum = max(1, effective // plan.micro_batch)
    if budget_gib:
        plan.estimate_gib = round(est(*best), 2)
    r["offload_vocab"] = (f"임베딩·lm_head를 쓰지 않는 동안 CPU 메모리에 둠 (GPU에서 {vocab_gib(shape):.2f} GiB 절약, "
                          "더 큰 micro-batch)" if plan.offload_vocab else why_not or "예산에 여유가 있어 GPU에 둠")
    if "memory" not in r:
        if fixed_ck is not None:
            r["checkpointing"] = f"설정/모드로 고정: {plan.checkpointing}"
        elif plan.checkpoint_layers == 0:
            r["checkpointing"] = "예산에 여유가 있어 끔 (재계산 없음: 가장 빠름)"
        elif plan.checkpoint_layers < shape.layers:
            r["checkpointing"] = f"예산에 맞추려고 {plan.checkpointing}만 재계산 (부분 체크포인팅)"
        else:
            r["checkpointing"] = "예산이 빠듯해 모든 층 재계산"
    r["batch"] = (f"유효 배치 {effective} = micro-batch {plan.micro_batch} x 누적 {plan.grad_accum} "
                  f"(시퀀스 평균 {mean_tokens}, p90 {p90_tokens} 토큰)")
    r["upcast"] = "임베딩·lm_head를 fp32로 올리지 않음 (EXAONE에서 1.7 GB 절약)"
    return plan


# --- applying the plan ---------------------------------------------------------------------------------
def set_checkpointing(model, layers: int) -> int:
    """Gradient checkpointing for the first `layers` decoder layers only (0 = off). Returns the count."""
    base = base_model(model)
    blocks = [m for m in base.modules() if hasattr(m, "gradient_checkpointing") and hasattr(m, "self_attn")]
    if layers <= 0:
        if getattr(base, "is_gradient_checkpointing", False):
            base.gradient_checkpointing_disable()
        return 0
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for i, block in enumerate(blocks):
        block.gradient_checkpointing = i < layers
    return min(layers, len(blocks))


def prepare_fast_model(model, plan: FastPlan, lora_settings) -> tuple[object, list[str]]:
    """LoRA without the fp32 upcast, attention backend, Liger kernels, (partial) checkpointing and
    the compiled decoder layers (checked once; eager again, with Liger's layer kernels, if the check fails)."""
    from .models import apply_lora

    if not hasattr(model, "peft_config"):
        model = apply_lora(model, lora_settings, gradient_checkpointing=False,
                           upcast_non_4bit=plan.upcast_non_4bit)
    base = model.get_base_model()
    if plan.attention == VARLEN_ATTENTION:
        register_varlen_attention()
    elif plan.attention == EFFICIENT_VARLEN_ATTENTION:
        register_efficient_varlen_attention()
    if base.config._attn_implementation != plan.attention:
        base.set_attn_implementation(plan.attention)
    kernels = []
    layer_kernels = not plan.compile_layers or plan.compile_keep_liger
    if plan.liger:
        kernels = list(base._workshop_liger) if uses_liger_loss(model) else apply_liger(model, layer_kernels)
    set_checkpointing(model, plan.checkpoint_layers)
    if plan.checkpoint_layers:
        base.enable_input_require_grads()
    if plan.compile_layers:
        batch = FlatteningCollator(0, seq_lens=plan.attention in SEQUENCE_BOUNDARY_ATTENTIONS)(
            probe_features(base.config.vocab_size))
        base._workshop_compiled, why = compile_checked(model, fast_completion_loss, batch)
        plan.reasons["compile"] = f"{plan.reasons.get('compile', '')}: {why}".lstrip(": ")
        if base._workshop_compiled is None:
            plan.compile_layers = False
            if plan.liger and not layer_kernels:
                kernels = apply_liger(model, layer_kernels=True)
    return model, kernels


def sequence_token_stats(dataset) -> tuple[int, int, int]:
    """(mean, p90, mean completion) token counts of a tokenized dataset (input_ids/labels)."""
    lens = sorted(len(x) for x in dataset["input_ids"])
    comp = [sum(1 for v in lab if v != IGNORE_INDEX) for lab in dataset["labels"]]
    p90 = lens[min(len(lens) - 1, math.ceil(0.9 * len(lens)) - 1)]
    return int(sum(lens) / len(lens)), int(p90), int(sum(comp) / max(len(comp), 1))


# GPUs a participant may have: (name, GiB, bf16 support)
TYPICAL_GPUS = [("H200", 139.8, True), ("H100 80GB", 79.6, True), ("A100 40GB", 39.4, True),
                ("RTX 4090 / L4 (24GB)", 23.6, True), ("T4 (16GB, Colab)", 14.7, False)]


def plan_table(cfg, shape: Shape | None = None, mean_tokens: int = 1062, p90_tokens: int = 1420,
               completion_tokens: int = 120) -> list[dict]:
    """What the fast path would choose on typical GPUs for EXAONE-7.8B and RAFT-length sequences
    (with the GPU install: Liger kernels, Triton, the varlen flash kernel on compute capability >= 8.0
    cards and the memory-efficient varlen kernel on all)."""
    import copy

    from .config import load_config
    from .env import DeviceChoice
    from .memory import EXAONE_7_8B

    shape = shape or EXAONE_7_8B
    full = load_config("full").train
    rows = []
    for name, vram, bf16 in TYPICAL_GPUS:
        c = copy.deepcopy(cfg)
        c.train.fast_path = "on"
        # the seed's batch (size full), whatever size this session runs
        c.train.per_device_train_batch_size = full.per_device_train_batch_size
        c.train.gradient_accumulation_steps = full.gradient_accumulation_steps
        dev = DeviceChoice("cuda", torch.bfloat16 if bf16 else torch.float16, "", name, vram)
        # as installed on a GPU machine (`make` adds liger-kernel there); flash kernels need bf16-class cards
        p = plan_fast_path(c, dev, shape, mean_tokens, p90_tokens, completion_tokens, kernels=(True, bf16, True))
        rows.append({"GPU": name, "메모리 GiB": vram, "모드": p.mode, "dtype": "bf16" if bf16 else "fp16",
                     "micro-batch x 누적": f"{p.micro_batch} x {p.grad_accum}", "체크포인팅": p.checkpointing,
                     "어텐션": p.attention, "임베딩·lm_head": "CPU" if p.offload_vocab else "GPU",
                     "층 컴파일": "예" if p.compile_layers else "아니오",
                     "예산 GiB": round(p.budget_gib, 1), "예상 최대 GiB": p.estimate_gib})
    return rows
