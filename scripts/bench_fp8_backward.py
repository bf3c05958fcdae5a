"""The backward's input-gradient products of a QLoRA step, bf16 vs FP8 (train.fp8_backward), per weight shape.

For each frozen 4-bit weight of a decoder layer (EXAONE-3.0-7.8B by default) it times dx = dy W over a
micro-batch of tokens three ways and prints milliseconds, TFLOP/s and the error against an fp32 product:
- bnb: what bitsandbytes' MatMul4Bit.backward does (dequantize NF4 to bf16, then a bf16 matmul),
- bf16: the bf16 matmul alone (a dequantized copy kept),
- fp8: fastpath/fp8.fp8_input_grad (dy scaled per row into E4M3 by one Triton kernel, W's FP8 copy,
  row-wise _scaled_mm), and fp8_compiled: the same with the row scaling compiled by torch;
- quant / quant_compiled: the row scaling alone, each way.
Then the sum over one layer x layers: the step's share that FP8 changes.

    python scripts/bench_fp8_backward.py --tokens 16800          # on a CUDA GPU with FP8 (sm >= 8.9)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_perf import _time_ms  # noqa: E402

from workshop_utils.model.shape import EXAONE_7_8B as EXAONE  # noqa: E402
from workshop_utils.train.fastpath.fp8 import fp8_input_grad, fp8_weight, gpu_quantizer, quantize_rows  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16800, help="tokens in the micro-batch (default 16 x ~1,050)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--json", help="write the rows here too")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        print("CUDA GPU가 필요합니다 (FP8 텐서 코어, compute capability >= 8.9)")
        return 2
    import bitsandbytes.functional as bnbf

    dev = torch.device("cuda")
    torch.manual_seed(0)
    compiled_quant = torch.compile(quantize_rows, dynamic=True)
    quantizer, which = gpu_quantizer()
    print(f"row quantizer: {which}")

    def fp8_compiled(g, wt8, ws):  # the row scaling compiled by torch (a looped reduction: two reads per row)
        g8, gs = compiled_quant(g)
        return torch._scaled_mm(g8, wt8.t(), scale_a=gs, scale_b=ws, out_dtype=torch.bfloat16)

    rows, total = [], {"bnb": 0.0, "bf16": 0.0, "fp8": 0.0, "fp8_compiled": 0.0, "quant": 0.0,
                       "quant_compiled": 0.0}
    for name, (k_in, n_out) in EXAONE.module_dims().items():
        w = (torch.randn(n_out, k_in, device=dev) * k_in ** -0.5).to(torch.bfloat16)
        q, state = bnbf.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
        wd = bnbf.dequantize_4bit(q, state).to(torch.bfloat16)
        wt8, ws = fp8_weight(wd)
        g = torch.randn(a.tokens, n_out, device=dev, dtype=torch.bfloat16)
        flops = 2 * a.tokens * n_out * k_in
        ms = {"bnb": _time_ms(lambda: torch.matmul(g, bnbf.dequantize_4bit(q, state).to(g.dtype)), a.reps),
              "bf16": _time_ms(lambda: torch.matmul(g, wd), a.reps),
              "fp8": _time_ms(lambda: fp8_input_grad(g, wt8, ws), a.reps),
              "fp8_compiled": _time_ms(lambda: fp8_compiled(g, wt8, ws), a.reps),
              "quant": _time_ms(lambda: quantizer(g), a.reps),
              "quant_compiled": _time_ms(lambda: compiled_quant(g), a.reps)}
        ref = g.float() @ wd.float()
        err = {k: float((v.float() - ref).norm() / ref.norm())
               for k, v in (("bf16", g @ wd), ("fp8", fp8_input_grad(g, wt8, ws)))}
        row = {"module": name, "shape": [n_out, k_in], "ms": {k: round(v, 3) for k, v in ms.items()},
               "tflops": {k: round(flops / v / 1e9, 1) for k, v in ms.items()},
               "rel_error": {k: round(v, 5) for k, v in err.items()}}
        rows.append(row)
        for k in total:
            total[k] += ms[k] * EXAONE.layers
        print(f"{name:10s} {n_out:6d}x{k_in:<6d} " + "  ".join(
            f"{k} {ms[k]:6.2f} ms" + (f" {row['tflops'][k]:5.0f} TF/s" if "quant" not in k else "") for k in ms)
            + f"  err bf16 {err['bf16']:.4f} fp8 {err['fp8']:.4f}", flush=True)
    print(f"\n{EXAONE.layers} layers, {a.tokens} tokens: input-gradient products per micro-batch "
          + ", ".join(f"{k} {v:.0f} ms" for k, v in total.items())
          + f"; fp8 saves {total['bnb'] - total['fp8']:.0f} ms against bitsandbytes' backward")
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    if a.json:
        Path(a.json).write_text(json.dumps({"tokens": a.tokens, "rows": rows, "total_ms": total}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
