"""The fast path's plan for one run (a FastPlan): which parts are on and why, and the micro-batch and
checkpointed layers chosen from the memory budget with a cost model fitted on the GPU."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ...data.prompts import IGNORE_INDEX
from ...model.attention import VARLEN_ATTENTION, flex_attention_compiles, varlen_attention_works
from ...model.attention_kernels import EFFICIENT_VARLEN_ATTENTION, efficient_varlen_works
from ...model.shape import Shape
from ...runtime import device as runtime_device
from ...runtime.distributed import dist_info
from ..collators import PAD_MULTIPLE
from ..memory import checkpoint_input_bytes, estimate, optimizer_state_bytes, vocab_gib
from .compile import compile_choice
from .dropout import DROPOUT_MASK_SETTINGS
from .fp8 import FP8_SETTINGS, fp8_supported
from .kernels import liger_available

SIXTEEN_GB_BUDGET_GIB = 8.0  # 16gb mode: planned peak allocated on a T4-class card


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
    offload_activations: bool = False  # checkpointed layers' inputs in CPU memory (fastpath/offload.py)
    optim: str | None = None  # the optimizer the fast path picks instead of the configured one (optimizer_choice)
    pad_to_multiple_of: int = 1
    compile_layers: bool = False  # decoder layers through torch.compile (fastpath/compile.py)
    compile_keep_liger: bool = False  # Liger's rope/RMSNorm/SwiGLU inside the compiled layers
    fp8_backward: bool = False  # the frozen weights' input gradients in FP8 (fastpath/fp8.py)
    hash_dropout: bool = False  # LoRA dropout masks from a hash instead of Philox (fastpath/dropout.py)
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
               f"offload_vocab={self.offload_vocab}, offload_activations={self.offload_activations}, "
               f"compile_layers={self.compile_layers}" + (f", optim={self.optim}" if self.optim else "")
               + (", fp8_backward=True" if self.fp8_backward else "")
               + (", hash_dropout=True" if self.hash_dropout else "")]
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
# ActivationOffload copies each checkpointed layer's input out and back on a side stream, behind the compute;
# planned as 5% of a step with every layer offloaded, so that it is chosen only when it buys a bigger micro-batch.
ACTIVATION_OFFLOAD_COST = 0.05
# pinned CPU memory for the offloaded inputs: at most this share of the machine's RAM (Colab: 12.7 GiB)
ACTIVATION_OFFLOAD_RAM_SHARE = 0.4


def micro_batch_tokens(m: int, mean_tokens: int, p90_tokens: int) -> int:
    """Tokens to plan for in a micro-batch of m sequences: the mean plus a spread that shrinks as
    sequences average out (p90 for a single sequence)."""
    return int(m * mean_tokens + (p90_tokens - mean_tokens) * math.sqrt(m))


def step_cost(m: int, ck: int, layers: int, mean_tokens: int, offload: bool = False,
              offload_activations: bool = False) -> float:
    per_micro_batch = MICRO_BATCH_OVERHEAD_TOKENS + (VOCAB_OFFLOAD_TOKENS if offload else 0)
    return (1 + (RECOMPUTE_COST + (ACTIVATION_OFFLOAD_COST if offload_activations else 0)) * ck / layers
            + per_micro_batch / (m * max(mean_tokens, 1)))


def fixed_checkpoint_layers(setting, layers: int) -> int | None:
    """`train.gradient_checkpointing` as a layer count: on/true = all, off/false = 0, N = the first N
    layers (capped), auto = None (decided from the memory budget)."""
    s = str(setting).lower()
    n = {"on": layers, "true": layers, "off": 0, "false": 0}.get(s)
    return min(int(s), layers) if n is None and s.isdigit() else n


def vocab_offload_options(setting: str, liger: bool, on_cuda: bool, shape: Shape) -> tuple[list[bool], str]:
    """Which VocabOffload choices the planner may weigh (setting auto | on | off), and why not."""

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


def activation_offload_options(setting: str, on_cuda: bool) -> tuple[list[bool], str]:
    """Which ActivationOffload choices the planner may weigh (setting auto | on | off), and why not."""
    setting = str(setting).lower()
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"train.offload_activations={setting!r}: auto | on | off")
    why = ("설정에서 끔" if setting == "off" else
           "CUDA에서만 (고정 메모리로 복사)" if not on_cuda else
           "여러 프로세스(DDP/FSDP)에서는 쓰지 않음" if dist_info().world_size > 1 else "")
    if why:
        return [False], why
    return ([True] if setting == "on" else [False, True]), ""


SEED_OPTIMIZER = "paged_adamw_8bit"
FUSED_ADAMW = "adamw_torch_fused"


def optimizer_choice(optim: str, on_cuda: bool, lora_params: int, room_gib: float | None) -> tuple[str | None, str]:
    """The optimizer for the fast path, and why. The seed's paged_adamw_8bit keeps Adam's two moments in 8 bits
    and pages them to CPU memory under pressure: for a 7B model's full state that matters, but LoRA's state is
    small (EXAONE-7.8B, r=16 on q/k/v/o: 13.6M parameters, 104 MiB in fp32) while bitsandbytes updates it
    tensor by tensor (256 kernels and Python calls per step: ~15 ms of an H200 step, during which the GPU
    mostly waits). torch's fused AdamW updates every tensor in a few kernels with exact fp32 moments; it is
    picked when its larger state (memory.optimizer_state_bytes: 6 bytes more per LoRA parameter) fits the budget
    (`room_gib`: budget minus the plan's estimate; None = no budget). Any other configured optimizer is kept
    (returns None)."""
    if str(optim) != SEED_OPTIMIZER:
        return None, f"설정의 {optim}"
    if not on_cuda:
        return None, "CPU: 설정 그대로"
    extra_gib = lora_params * (optimizer_state_bytes(FUSED_ADAMW) - optimizer_state_bytes(optim)) / 1024**3
    if room_gib is not None and room_gib < extra_gib:
        return None, f"예산에 fp32 상태({extra_gib * 1024:.0f} MiB 더)를 둘 여유가 없어 {SEED_OPTIMIZER}"
    return FUSED_ADAMW, (f"LoRA 파라미터 {lora_params / 1e6:.1f}M개의 Adam 상태는 fp32로도 "
                         f"{lora_params * optimizer_state_bytes(FUSED_ADAMW) / 1024**2:.0f} MiB: 8비트 페이징(텐서마다 커널·파이썬 호출) 대신 "
                         "fused AdamW (모든 텐서를 커널 몇 개로, 정확한 fp32 모멘트)")


def dropout_choice(setting, compiled: bool, p: float) -> tuple[bool, str]:
    """(LoRA dropout masks from a hash, why) for `train.lora_dropout_masks` (hash | peft): only in
    compiled layers (eagerly the position index would be a tensor the size of each input) and only when p > 0."""
    s = str(setting).lower()
    if s not in DROPOUT_MASK_SETTINGS:
        raise ValueError(f"train.lora_dropout_masks={setting!r}: {' | '.join(DROPOUT_MASK_SETTINGS)}")
    if not p:
        return False, "lora_dropout=0: 마스크 없음"
    if s == "peft":
        return False, f"p={p}: peft의 nn.Dropout (Philox 난수)"
    if not compiled:
        return False, f"p={p}: peft의 nn.Dropout (층을 컴파일하지 않아 해시 마스크를 쓰지 않음)"
    return True, (f"p={p}: 마스크를 값의 위치·모듈 키·스텝 카운터의 정수 해시로 (Philox보다 싸고, 체크포인팅 재계산에서 "
                  "같은 마스크; 분포는 같고 난수열만 다름)")


def fp8_choice(setting, device, fp8_cores: bool | None = None) -> tuple[bool, str]:
    """(FP8 input gradients, why) for `train.fp8_backward` (off | on) on this device (`fp8_cores`: whether the
    GPU has FP8 tensor cores, for planning another machine's GPU; None = probe this one)."""
    s = str(setting).lower()
    if s not in FP8_SETTINGS:
        raise ValueError(f"train.fp8_backward={setting!r}: {' | '.join(FP8_SETTINGS)}")
    if s == "off":
        return False, "끔 (기본: 그래디언트가 bf16 경로와 같음; 켜면 Ada·Hopper GPU에서 역전파가 빨라짐)"
    if dist_info().world_size > 1:
        return False, "켤 수 없음: 여러 프로세스(DDP/FSDP)에서는 측정하지 않음 (FSDP는 4비트 가중치를 나눠 가짐)"
    ok, why = fp8_supported(device.device, device.dtype, fp8_cores)
    if not ok:
        return False, f"켤 수 없음: {why}"
    return True, (f"고정된 4비트 가중치의 입력 그래디언트를 FP8로 ({why}; 순전파·loss는 그대로, 그래디언트는 FP8 "
                  "반올림만큼 다름; 가중치 FP8 사본만큼 메모리 더)")


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
    kernel runs[, FP8 tensor cores]]) for planning another machine's GPU (plan_table; Triton is then assumed
    installed); by default this machine is probed.
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
    r["mode"] = ("fp16 GPU(T4급): fp16 + compute capability 7.5 커널만 + 전체 체크포인팅 + fused loss"
                 if mode == "16gb"
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
    plan.compile_layers, plan.compile_keep_liger, r["compile"] = compile_choice(
        t.compile_layers, on_cuda, dist_info().world_size, has_triton=True if kernels else None)
    plan.fp8_backward, r["fp8_backward"] = fp8_choice(t.fp8_backward, device,
                                                      kernels[3] if kernels and len(kernels) > 3 else None)
    plan.hash_dropout, r["lora_dropout"] = dropout_choice(t.lora_dropout_masks, plan.compile_layers,
                                                          cfg.lora.lora_dropout)
    # memory budget -> micro-batch and checkpointed layers
    effective = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if budget_gib is None:
        budget_gib = t.memory_budget_gib or ((device.vram_gib or 0) * 0.85 if on_cuda else 0)
        if mode == "16gb" and not t.memory_budget_gib and on_cuda:
            # a 16 GB card (15 GiB usable) also holds the CUDA context, allocator slack and evaluation
            budget_gib = min(budget_gib, SIXTEEN_GB_BUDGET_GIB)
        available = runtime_device.cuda_available_gib() if on_cuda and not t.memory_budget_gib else None
        if available is not None and available * 0.9 < budget_gib:
            # other processes on this card (a shared server, another notebook): plan within what is left
            budget_gib = available * 0.9
            r["budget"] = (f"GPU에 다른 프로세스가 있어 남은 메모리({available:.1f} GiB)의 90%로 계획 "
                           "(예산을 정하려면 WORKSHOP_MEMORY_BUDGET_GIB, docs/server.md)")
    plan.budget_gib = budget_gib
    fixed_ck = fixed_checkpoint_layers(t.gradient_checkpointing, shape.layers)
    if mode == "16gb" and fixed_ck is None:
        fixed_ck = shape.layers

    offloads, why_not = vocab_offload_options(t.offload_vocab, plan.liger, on_cuda, shape)
    act_offloads, act_why_not = activation_offload_options(t.offload_activations, on_cuda)
    ram_gib = runtime_device.system_ram_gib()

    def est(m, ck, off=False, act=False, optimizer=SEED_OPTIMIZER):
        return estimate(shape, micro_batch_tokens(m, mean_tokens, p90_tokens), cfg.lora.r,
                        tuple(cfg.lora.target_modules), checkpoint_layers=ck, fused_loss=plan.liger,
                        logit_tokens=m * completion_tokens, upcast_embeddings=False, offload_vocab=off,
                        compiled=plan.compile_layers and not plan.compile_keep_liger,
                        offload_activations=act, optimizer=optimizer, fp8_backward=plan.fp8_backward)["total"]

    def pinned_gib(m, ck):  # CPU memory the offloaded inputs take
        return ck * checkpoint_input_bytes(shape, micro_batch_tokens(m, mean_tokens, p90_tokens)) / 1024**3

    def cost(choice):
        m, ck, off, act = choice
        return step_cost(m, ck, shape.layers, mean_tokens, off, act)

    best = None
    if not budget_gib:  # CPU (no budget): the configured batch, checkpointing as set (default off)
        best = (t.per_device_train_batch_size, fixed_ck or 0, False, False)
    else:
        options = [fixed_ck] if fixed_ck is not None else range(0, shape.layers + 1)
        for m in (d for d in range(min(effective, 16), 0, -1) if effective % d == 0):
            for off in offloads:
                for act in act_offloads:
                    ck = next((c for c in options if est(m, c, off, act) <= budget_gib), None)
                    if ck is None or (act and (not ck or pinned_gib(m, ck) > ACTIVATION_OFFLOAD_RAM_SHARE * ram_gib)):
                        continue
                    if best is None or cost((m, ck, off, act)) < cost(best):
                        best = (m, ck, off, act)
        if best is None:
            best = (1, shape.layers, offloads[-1], act_offloads[-1])
            r["memory"] = f"예산 {budget_gib:.1f} GiB에 맞는 구성이 없음: 가장 작은 구성으로 시도 (OOM 가능)"
    plan.micro_batch, plan.checkpoint_layers, plan.offload_vocab, plan.offload_activations = best
    plan.grad_accum = max(1, effective // plan.micro_batch)
    if budget_gib:
        plan.estimate_gib = round(est(*best), 2)
    lora_params = shape.lora_params(cfg.lora.r, list(cfg.lora.target_modules))
    plan.optim, r["optim"] = optimizer_choice(t.optim, on_cuda, lora_params,
                                              budget_gib - plan.estimate_gib if budget_gib else None)
    if plan.optim and budget_gib:
        plan.estimate_gib = round(est(*best, optimizer=plan.optim), 2)
    r["offload_vocab"] = (f"임베딩·lm_head를 쓰지 않는 동안 CPU 메모리에 둠 (GPU에서 {vocab_gib(shape):.2f} GiB 절약, "
                          "더 큰 micro-batch)" if plan.offload_vocab else why_not or "예산에 여유가 있어 GPU에 둠")
    r["offload_activations"] = (
        f"체크포인팅한 층의 입력 {plan.checkpoint_layers}개를 고정 CPU 메모리에 둠 (약 "
        f"{pinned_gib(plan.micro_batch, plan.checkpoint_layers):.2f} GiB, 복사는 계산 뒤에 숨김): 더 큰 micro-batch; "
        "재계산은 값이 쓰이지 않는 down_proj 곱을 건너뜀 (Llama 형태의 층)"
        if plan.offload_activations else act_why_not or
        ("체크포인팅 없음" if not plan.checkpoint_layers else "GPU에 두어도 같은 micro-batch가 들어감"))
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


def sequence_token_stats(dataset) -> tuple[int, int, int]:
    """(mean, p90, mean completion) token counts of a tokenized dataset (input_ids/labels)."""
    lens = sorted(len(x) for x in dataset["input_ids"])
    comp = [sum(1 for v in lab if v != IGNORE_INDEX) for lab in dataset["labels"]]
    p90 = lens[min(len(lens) - 1, math.ceil(0.9 * len(lens)) - 1)]
    return int(sum(lens) / len(lens)), int(p90), int(sum(comp) / max(len(comp), 1))
