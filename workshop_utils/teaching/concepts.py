"""00-concepts: why fine-tune (the opening before/after demo), LoRA arithmetic, 4-bit quantization and memory
tables, runnable and CPU-cheap."""
from __future__ import annotations

from contextlib import contextmanager

import torch

from ..data.quality.grounding import golden_document, groundedness
from ..data.raft import final_answer
from ..evaluate.generation import answer_examples
from ..model.shape import Shape
from ..runtime.device import GIB
from ..train.memory import estimate, nf4_bytes_per_param


def before_after(model, tokenizer, examples: list[dict], max_new_tokens: int) -> "list[dict]":
    """The opening demo: company questions, with their documents as in training, answered by the base model
    (adapter off) and by the tuned one (adapter on) of ONE loaded model, next to the reference answer and the
    share of each answer's content words that the golden document contains (groundedness)."""
    base = answer_examples(model, tokenizer, examples, max_new_tokens, base=True, progress=False).texts
    tuned = answer_examples(model, tokenizer, examples, max_new_tokens, base=False, progress=False).texts
    rows = []
    for ex, b, t in zip(examples, base, tuned):
        doc = golden_document(ex)
        rows.append({"질문": ex["question"], "참조 답변": ex.get("reference_answer", ex["answer"]),
                     "원본 모델 (before)": b, "파인튜닝 후 (after)": t,
                     "문서 근거 (before)": groundedness(final_answer(b), doc)["overlap"],
                     "문서 근거 (after)": groundedness(final_answer(t), doc)["overlap"]})
    return rows


def lora_param_counts(d: int, k: int, r: int) -> dict:
    """Parameters of a full update ΔW (d×k) vs LoRA's B (d×r) and A (r×k)."""
    full = d * k
    lora = r * (d + k)
    return {"d": d, "k": k, "r": r, "full": full, "lora": lora, "reduction": 1 - lora / full}


def lora_update(W: torch.Tensor, r: int, alpha: float, seed: int = 0) -> dict:
    """W' = W + (alpha/r)·B·A on a real matrix; B starts at zero (peft's init), so W' = W at step 0.

    Returns the tensors and a check that the merged layer and the two-path LoRA layer agree.
    """
    g = torch.Generator().manual_seed(seed)
    d, k = W.shape
    A = torch.randn(r, k, generator=g) / k**0.5
    B = torch.zeros(d, r)
    W0 = W + (alpha / r) * B @ A
    B = torch.randn(d, r, generator=g) * 0.01  # as if after some training
    delta = (alpha / r) * B @ A
    x = torch.randn(3, k, generator=g)
    two_path = x @ W.T + (alpha / r) * (x @ A.T) @ B.T
    merged = x @ (W + delta).T
    return {"W": W, "A": A, "B": B, "delta": delta, "rank": int(torch.linalg.matrix_rank(delta)),
            "init_equals_W": bool(torch.equal(W0, W)), "max_diff_merged_vs_two_path": float((two_path - merged).abs().max())}


@contextmanager
def _single_thread():
    """Tiny matrices gain nothing from threads; on a busy 2-core machine OpenMP spinning made the
    fit below 15x slower (80 s vs 5 s)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def fit_low_rank(d: int = 256, true_rank: int = 4, ranks=(1, 2, 4, 8, 16), steps: int = 400, seed: int = 0) -> list[dict]:
    """Fit B·A (rank r) to a target ΔW of rank `true_rank`: once r ≥ true_rank the error collapses.

    This is why small r suffices when the needed update is low-rank (LoRA paper's hypothesis).
    """
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(d, true_rank, generator=g) @ torch.randn(true_rank, d, generator=g) / true_rank**0.5
    rows = []
    for r in ranks:
        with _single_thread():
            rows.append(_fit_one(target, d, r, steps, seed))
    return rows


def _fit_one(target: torch.Tensor, d: int, r: int, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    A = torch.nn.Parameter(torch.randn(r, d) / d**0.5)
    B = torch.nn.Parameter(torch.randn(d, r) * 0.01)
    opt = torch.optim.Adam([A, B], lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((B @ A - target) ** 2).mean()
        loss.backward()
        opt.step()
    rel = float((B @ A - target).detach().norm() / target.norm())
    return {"r": r, "파라미터 r(d+k)": r * 2 * d, "상대 오차 ‖BA−ΔW‖/‖ΔW‖": round(rel, 4)}


def int4_absmax(w: torch.Tensor, blocksize: int = 64) -> torch.Tensor:
    """A plain symmetric int4 baseline: per block of 64, scale = absmax/7, round to {-7..7}."""
    flat = w.flatten()
    pad = (-flat.numel()) % blocksize
    x = torch.nn.functional.pad(flat, (0, pad)).view(-1, blocksize)
    scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 7
    q = torch.clamp(torch.round(x / scale), -7, 7)
    return (q * scale).flatten()[: flat.numel()].view_as(w)


def bnb_roundtrip(w: torch.Tensor, quant_type: str, blocksize: int = 64) -> torch.Tensor:
    """Quantize with bitsandbytes (NF4 or FP4, blocksize 64) and dequantize back."""
    import bitsandbytes.functional as F

    q, state = F.quantize_4bit(w, blocksize=blocksize, quant_type=quant_type)
    return F.dequantize_4bit(q, state, quant_type=quant_type).to(w.dtype)


def quantization_errors(n: int = 1 << 20, std: float = 0.02, seed: int = 0) -> list[dict]:
    """Error of NF4, FP4 and int4-absmax on normally distributed weights (like trained LLM weights)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g) * std
    w2d = w.view(1024, -1)
    rows = []
    for name, fn in (("NF4 (bitsandbytes)", lambda x: bnb_roundtrip(x, "nf4")),
                     ("FP4 (bitsandbytes)", lambda x: bnb_roundtrip(x, "fp4")),
                     ("int4 absmax (기준선)", int4_absmax)):
        deq = fn(w2d).flatten()
        err = deq - w
        rows.append({"방식": name, "MSE": float((err ** 2).mean()), "상대 오차 ‖e‖/‖w‖": float(err.norm() / w.norm()),
                     "서로 다른 값 수": int(torch.unique(fn(w2d[:1])).numel())})
    return rows


def nf4_levels() -> torch.Tensor:
    """The 16 NF4 code values (quantiles of N(0,1), normalized to [-1, 1])."""
    import bitsandbytes.functional as F

    return F.get_4bit_type("nf4", device="cpu").float()


def normal_quantile_levels(offset: float = 0.9677083) -> torch.Tensor:
    """NF4 rebuilt from the normal distribution (QLoRA §3, bitsandbytes' create_normal_map).

    8 positive levels at N(0,1) quantiles of probabilities from `offset` down to 0.5, 7 negative ones
    the same way, plus an exact 0; divided by the largest so they span [-1, 1]. Equal to nf4_levels():
    each level covers an equal share of a normal distribution's probability mass.
    """
    normal = torch.distributions.Normal(0.0, 1.0)
    pos = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
    neg = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
    levels = torch.cat([pos, neg, torch.zeros(1, dtype=torch.float64)]).sort().values
    return (levels / levels.max()).float()


def double_quant_savings(params: float = 7.8e9, blocksize: int = 64) -> dict:
    """Bits per parameter spent on quantization constants with and without double quantization."""
    single = 32 / blocksize
    double = 8 / blocksize + 32 / (blocksize * 256)
    saved_bits = single - double
    return {"absmax bits/param (fp32)": single, "absmax bits/param (double quant)": round(double, 3),
            "절약 bits/param": round(saved_bits, 3), "모델 전체 절약 (MB)": round(params * saved_bits / 8 / 1e6)}


ESTIMATE_SCENARIOS = {
    "16비트 가중치 + LoRA": {"quant": "fp16", "checkpointing": False},
    "NF4 (QLoRA)": {"checkpointing": False},
    "NF4 + 체크포인팅": {"checkpointing": True},
    "NF4 + 체크포인팅 + fused loss": {"checkpointing": True, "fused_loss": True},
}


COMPONENT_NAMES = {"weights": "가중치", "lora+grad+optim": "LoRA+grad+옵티마이저", "activations": "활성화",
                   "working": "역전파 작업 공간", "logits": "logits", "overhead": "고정 오버헤드", "total": "합계"}


def estimate_table(s: Shape, tokens_per_micro_batch: int, r: int = 16,
                   targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> list[dict]:
    """`estimate` for the standard scenarios (16-bit vs NF4, checkpointing, fused loss), in GiB."""
    rows = []
    for label, kw in ESTIMATE_SCENARIOS.items():
        kw = dict(kw)
        layers = s.layers if kw.pop("checkpointing") else 0
        est = estimate(s, tokens_per_micro_batch, r, tuple(targets), checkpoint_layers=layers, **kw)
        rows.append({"모델": s.name, "구성": label, "토큰/마이크로배치": tokens_per_micro_batch,
                     **{f"{COMPONENT_NAMES[k]} (GiB)": round(v, 2) for k, v in est.items()}})
    return rows


def weights_table(shapes: list[Shape]) -> list[dict]:
    """Weights in fp16 vs NF4 (with and without double quantization) and LoRA parameter counts."""
    rows = []
    for s in shapes:
        total = s.total_params()
        lin, emb = s.linear_params(), s.embedding_params()
        rows.append({
            "모델": s.name, "파라미터": f"{total / 1e9:.2f}B" if total > 1e9 else f"{total / 1e6:.0f}M",
            "fp16 가중치 (GiB)": round(total * 2 / GIB, 2),
            "NF4 (GiB)": round((lin * nf4_bytes_per_param(False) + emb * 2) / GIB, 2),
            "NF4 + double quant (GiB)": round((lin * nf4_bytes_per_param(True) + emb * 2) / GIB, 2),
            "LoRA r=16 q/k/v/o 파라미터": s.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj"]),
        })
    return rows
