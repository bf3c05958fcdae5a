"""Token lengths of the chat-formatted training sequences, and the max_seq_length they suggest."""
from __future__ import annotations

import math

import numpy as np

from ..prompts import render_prompt
from ..raft import target_text

# --- token lengths ---------------------------------------------------------------------------------------
CANDIDATE_LENGTHS = (256, 512, 768, 1024, 1536, 2048, 3072, 4096)


def token_lengths(tokenizer, examples: list[dict]) -> np.ndarray:
    """Full training-sequence length (chat-formatted prompt + answer + end token) per example."""

    prompts = [render_prompt(tokenizer, e) for e in examples]
    answers = [target_text(e) for e in examples]
    p = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    a = tokenizer(answers, add_special_tokens=False)["input_ids"]
    return np.array([len(x) + len(y) + 1 for x, y in zip(p, a)])


def length_stats(lengths: np.ndarray) -> dict:
    return {"count": int(lengths.size), "mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()),
            "recommended_max_seq_length": recommend_max_seq_length(lengths)}


def recommend_max_seq_length(lengths: np.ndarray, multiple: int = 64) -> int:
    """The p95 length rounded up to a multiple of 64 (hardware-friendly); longer ones are truncated."""
    return int(math.ceil(np.percentile(lengths, 95) / multiple) * multiple)


def truncation_table(lengths: np.ndarray, candidates=CANDIDATE_LENGTHS) -> list[dict]:
    rows = []
    for L in candidates:
        over = lengths > L
        rows.append({"max_seq_length": L, "잘리는 예제 수": int(over.sum()), "잘리는 비율": round(float(over.mean()), 3),
                     "잘리는 토큰 비율": round(float(np.clip(lengths - L, 0, None).sum() / lengths.sum()), 3)})
    return rows
