"""FP8 input gradients through the frozen 4-bit weights (`train.fp8_backward`, opt-in).

What it changes, and what it does not:
- a QLoRA step multiplies by each frozen weight twice: the forward (y = x W^T) and the backward's input
  gradient (dx = dy W). Nothing else touches the frozen weights (they get no gradient), and on a card
  with room those two products are ~3/4 of the step (docs/benchmarks.md).
- here the backward's product runs in FP8 (E4M3) on FP8 tensor cores (twice bf16's rate on Hopper / Ada):
  dy is scaled per row (per token) and W^T per row (per input feature) into E4M3's range, multiplied
  with fp32 accumulation, and the result comes back in bf16 (`torch._scaled_mm`, row-wise scales).
  W's FP8 copy is made once, from the dequantized NF4 weight (+1 byte per weight: 6.5 GiB for EXAONE-7.8B).
- the forward is untouched (bitsandbytes' 4-bit product): the loss of every step's forward is the loss
  of the bf16 path, bit for bit. The LoRA gradients differ by FP8's rounding of dy and W (3 mantissa
  bits, relative error <= 1/16 per element, averaging out over each dot product): measured and tested as
  closeness (`gradient_agreement`), not equality; tests/test_fp8_backward.py.
- the LoRA matrices themselves (A, B and their gradients) stay in bf16/fp32: only the frozen base's
  input gradient is FP8.

Where: CUDA compute capability >= 8.9 (Ada, Hopper) in bf16, dimensions multiple of 16; CPU (torch >= 2.8
has the same row-wise `_scaled_mm`, for the tests). Off by default: it trades exact gradients for speed,
so a participant turns it on (`train.fp8_backward: on`, the bench recipe `default+fp8`).
"""
from __future__ import annotations

import functools

import torch

FP8_SETTINGS = ("off", "on")
E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # largest finite E4M3 value
ALIGN = 16  # _scaled_mm: both dimensions of the weight a multiple of 16
TRITON_MAX_ROW = 32768  # the Triton row kernel keeps a row in registers: up to this many values


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, N) -> (E4M3 values (M, N), fp32 scales (M, 1)) with x ~= values * scales, each row scaled so its
    largest magnitude maps to E4M3's largest value (all-zero rows get a tiny scale, not a division by 0)."""
    amax = x.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12)
    scale = amax * (1.0 / E4M3_MAX)  # a product, as torch on CUDA computes tensor / scalar: same bits everywhere
    return (x.float() / scale).to(E4M3), scale


def fp8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A frozen weight W (N out, K in) as the FP8 operand of dx = dy W: (W^T in E4M3, row-major (K, N); scales
    (1, K), one per input feature)."""
    wt8, scale = quantize_rows(weight.t())
    return wt8.contiguous(), scale.view(1, -1)


@functools.cache
def _triton_row_kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def quantize_rows_kernel(x_ptr, q_ptr, s_ptr, n_cols, stride_x, stride_q, inv_max, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        # the scale as quantize_rows computes it (times the fp32 reciprocal of E4M3_MAX, passed in), then an IEEE
        # division (Triton's `/` on fp32 is approximate): the same values
        scale = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12) * inv_max
        tl.store(q_ptr + row * stride_q + cols, tl.math.div_rn(x, scale).to(tl.float8e4nv), mask=mask)
        tl.store(s_ptr + row, scale)

    return triton.next_power_of_2, quantize_rows_kernel


def quantize_rows_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_rows in one pass over x (CUDA, Triton): each program holds one row (up to TRITON_MAX_ROW values in
    registers; longer rows go to quantize_rows), so x is read once and E4M3 written once. torch.compile makes a looped reduction of the same
    code that reads each row twice (rows of dynamic length): on an H200 that took 48.7 ms of an 805 ms step."""
    m, n = x.shape
    if n > TRITON_MAX_ROW:
        return quantize_rows(x)
    next_pow2, kernel = _triton_row_kernel()
    x = x.contiguous()
    q = torch.empty((m, n), device=x.device, dtype=E4M3)
    scale = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    block = next_pow2(n)
    kernel[(m,)](x, q, scale, n, x.stride(0), q.stride(0), 1.0 / E4M3_MAX, BLOCK=block,
                 num_warps=min(max(block // 512, 4), 32))
    return q, scale


@functools.cache
def gpu_quantizer() -> tuple[object, str]:
    """(the row quantizer for CUDA tensors, which one): the Triton kernel where it runs and agrees with
    quantize_rows on a probe (identical scales, at most 0.1% of the E4M3 values one step apart from rounding),
    else quantize_rows compiled by torch (one fused kernel, two reads of each row)."""
    ref_fn = torch.compile(quantize_rows, dynamic=True)
    try:
        x = torch.randn(67, 5000, device="cuda", dtype=torch.bfloat16) * torch.logspace(
            -4, 2, 67, device="cuda").view(-1, 1).to(torch.bfloat16)
        x[3] = 0
        q, s = quantize_rows_triton(x)
        rq, rs = quantize_rows(x)
        differ = (q.view(torch.uint8) != rq.view(torch.uint8)).float().mean().item()
        if torch.equal(s, rs) and differ <= 1e-3:
            return quantize_rows_triton, "triton"
        why = f"Triton 커널이 참조와 다름 (scale 같음={torch.equal(s, rs)}, 다른 값 {differ:.2%})"
    except Exception as err:  # noqa: BLE001 - no Triton, or it cannot build here: the compiled torch code
        why = f"Triton 커널 없음 ({type(err).__name__}: {str(err)[:120]})"
    return ref_fn, f"torch.compile ({why})"


def fp8_input_grad(grad: torch.Tensor, wt8: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
    """dx = dy W with dy (..., N) scaled per row into E4M3 (on the GPU by one Triton kernel, gpu_quantizer) and W^T
    from fp8_weight; fp32 accumulation, the result in dy's dtype."""
    g = grad.reshape(-1, grad.shape[-1])
    g8, g_scale = (gpu_quantizer()[0] if g.is_cuda else quantize_rows)(g)
    out = torch._scaled_mm(g8, wt8.t(), scale_a=g_scale, scale_b=w_scale, out_dtype=torch.bfloat16)
    return out.to(grad.dtype).reshape(*grad.shape[:-1], wt8.shape[0])


# the backward of a compiled decoder layer calls it as one opaque step (traced, its row scaling broke dynamo's
# capture of the autograd.Function's backward)
_fp8_input_grad_op = torch.library.custom_op("workshop::fp8_input_grad", fp8_input_grad, mutates_args=())


@_fp8_input_grad_op.register_fake
def _(grad, wt8, w_scale):
    return grad.new_empty(*grad.shape[:-1], wt8.shape[0])


def fp8_supported(device: torch.device | str, dtype: torch.dtype, fp8_cores: bool | None = None) -> tuple[bool, str]:
    """Whether FP8 input gradients can run here, and why not. `fp8_cores`: whether the GPU has FP8 tensor cores
    (compute capability >= 8.9), given when planning for another machine's GPU; None = this machine's GPU."""
    device = torch.device(device)
    if not hasattr(torch, "_scaled_mm"):
        return False, "이 torch에 FP8 곱(_scaled_mm)이 없음"
    if device.type == "cuda":
        if dtype != torch.bfloat16:
            return False, f"FP8 역전파는 bf16 학습에서만 (지금 {str(dtype)[6:]}; T4의 fp16 모드는 FP8 텐서 코어가 없음)"
        if fp8_cores is not None:
            return fp8_cores, "FP8 텐서 코어" if fp8_cores else "FP8 텐서 코어가 없는 GPU (Ada·Hopper 이상에만 있음)"
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) < (8, 9):
            return False, f"FP8 텐서 코어가 없는 GPU (compute capability {major}.{minor} < 8.9: Ada·Hopper 이상)"
        return True, f"compute capability {major}.{minor}: FP8 텐서 코어"
    if device.type == "cpu":
        return True, "CPU: 같은 row-wise _scaled_mm (테스트용, 빠르지 않음)"
    return False, f"{device.type}에서는 측정하지 않음"


@functools.cache
def _fp8_linear4bit():
    """The Linear4bit subclass whose input gradient is FP8 (made once, on first use: bitsandbytes is imported
    only where the setting is on)."""
    import bitsandbytes as bnb
    from bitsandbytes.autograd._functions import MatMul4Bit

    class MatMul4BitFP8Grad(torch.autograd.Function):
        """bitsandbytes' 4-bit product forward; backward dx = dy W from W's FP8 copy."""

        @staticmethod
        def forward(ctx, A, B, wt8, w_scale, quant_state):
            out = MatMul4Bit.forward(ctx, A, B, None, None, quant_state)
            ctx.save_for_backward(wt8, w_scale)
            return out

        @staticmethod
        def backward(ctx, grad_output):
            wt8, w_scale = ctx.saved_tensors
            grad_a = _fp8_input_grad_op(grad_output, wt8, w_scale) if ctx.needs_input_grad[0] else None
            return grad_a, None, None, None, None

    class FP8GradLinear4bit(bnb.nn.Linear4bit):
        def forward(self, x):
            if not (torch.is_grad_enabled() and x.requires_grad) or x.numel() == 0:
                return super().forward(x)  # evaluation, generation, or nothing to differentiate
            inp_dtype = x.dtype
            if self.compute_dtype is not None:
                x = x.to(self.compute_dtype)
            return MatMul4BitFP8Grad.apply(x, self.weight, self._workshop_fp8_wt, self._workshop_fp8_scale,
                                           self.weight.quant_state).to(inp_dtype)

    return FP8GradLinear4bit


def frozen_linear4bits(model) -> list:
    """The frozen bitsandbytes 4-bit linear layers (under LoRA: their base layers) without bias whose shape
    fits FP8's alignment."""
    import bitsandbytes as bnb

    out = []
    for module in model.modules():  # peft's LoRA wrapper is also called Linear4bit: bitsandbytes' class only
        if not isinstance(module, bnb.nn.Linear4bit) or module.bias is not None:
            continue
        qs = getattr(module.weight, "quant_state", None)
        if qs is None or len(qs.shape) != 2 or any(d % ALIGN for d in qs.shape):
            continue
        out.append(module)
    return out


class FP8Backward:
    """FP8 input gradients for the model's frozen 4-bit linear layers (see the module docstring).

    `attach(model)` makes each layer's FP8 copy (dequantizing one layer at a time) and swaps the layer's class;
    `restore()` puts the classes back and frees the copies. `gib` is the memory the copies take."""

    def __init__(self):
        self.layers: list = []
        self.classes: list = []
        self.gib = 0.0

    def attach(self, model) -> "FP8Backward":
        import bitsandbytes.functional as bnbf

        cls = _fp8_linear4bit()
        for module in frozen_linear4bits(model):
            w = bnbf.dequantize_4bit(module.weight.data, module.weight.quant_state)
            module._workshop_fp8_wt, module._workshop_fp8_scale = fp8_weight(w)
            del w
            self.gib += (module._workshop_fp8_wt.numel() + 4 * module._workshop_fp8_scale.numel()) / 1024**3
            self.layers.append(module)
            self.classes.append(type(module))
            module.__class__ = cls
        return self

    def restore(self) -> None:
        for module, cls in zip(self.layers, self.classes):
            module.__class__ = cls
            del module._workshop_fp8_wt, module._workshop_fp8_scale
        self.layers, self.classes, self.gib = [], [], 0.0


def gradient_agreement(reference: dict, other: dict) -> dict:
    """How close two sets of gradients are (name -> tensor): the cosine of the concatenated vectors, the
    largest relative error of one tensor's norm (||other - ref|| / ||ref||) and its name."""
    ref = torch.cat([reference[k].float().flatten() for k in reference])
    got = torch.cat([other[k].float().flatten() for k in reference])
    cos = float(torch.nn.functional.cosine_similarity(ref, got, dim=0))
    rel = {k: float((other[k].float() - reference[k].float()).norm() / reference[k].float().norm().clamp(min=1e-30))
           for k in reference}
    worst = max(rel, key=rel.get)
    return {"cosine": cos, "max_rel_error": rel[worst], "worst": worst, "tensors": len(rel)}
