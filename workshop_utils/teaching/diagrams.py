"""Figures drawn by the library where the slides show pictures: a RAFT training record (question, golden and
distractor documents, a CoT answer whose quotes come from the golden document) and LoRA's W + BA with the
parameter counts. Matplotlib only, so nothing binary lives in the repository."""
from __future__ import annotations

import re
import textwrap

import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

from ..data.raft import extract_quotes
from ..report import plots  # noqa: F401  (registers the Korean font)

GOLDEN, DISTRACTOR, QUESTION, ANSWER, QUOTE = "#2e8b57", "#9aa5b1", "#2b7bb9", "#f0ad4e", "#d9534f"

# The seed's RAFT example (slide 「RAFT 포맷의 실제 예시」), with the CoT written in the RAFT paper's quoting format
# that this workshop trains on (the slide's free-text cot cannot be checked against the documents).
SEED_RAFT_EXAMPLE = {
    "question": "한국의 수도는 어디인가요?",
    "context": ["한국의 수도는 서울이며, 인구는 약 1천만 명입니다. 서울은 정치, 경제, 문화의 중심지입니다.",
                "대한민국의 상징인 태극기는 흰색 바탕에 중앙의 태극 문양과 네 모서리의 건곤감리가 그려져 있습니다.",
                "부산은 한국의 제2의 도시로, 해양 산업과 관광으로 유명합니다."],
    "golden_index": 0,
    "cot": "##Reason: 첫 번째 문서에 ##begin_quote## 한국의 수도는 서울이며 ##end_quote## 라고 나옵니다. "
           "나머지 문서는 태극기와 부산에 대한 내용이라 질문과 관계가 없습니다. <ANSWER>: 한국의 수도는 서울입니다.",
}


def _wrap(text: str, width: int, max_lines: int) -> str:
    lines = textwrap.wrap(text, width=width, break_long_words=True) or [""]
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: max(0, width - 1)] + "…"
    return "\n".join(lines)


def _box(ax, x: float, y: float, w: float, h: float, color: str, title: str, body: str, width: int,
         max_lines: int, fill: float = 0.12) -> None:
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.015", linewidth=1.6,
                                edgecolor=color, facecolor=color, alpha=fill))
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.008,rounding_size=0.015", linewidth=1.6,
                                edgecolor=color, facecolor="none"))
    ax.text(x + 0.012, y + h - 0.02, title, fontsize=9.5, fontweight="bold", color=color, va="top")
    ax.text(x + 0.012, y + h - 0.075, _wrap(body, width, max_lines), fontsize=8.2, va="top", linespacing=1.35)


def raft_record(record: dict | None = None, title: str = "RAFT 학습 예제 하나: 질문과 문서들을 주고, 근거를 인용한 답을 학습"):
    """A RAFT record drawn as the RAFT paper's figure draws it: the question, the documents in their order
    (golden in green, distractors in grey, or no golden at all for the 1-P share), and the training target
    (CoT) with its quoted span in red, pointing back at the golden document."""
    rec = record or SEED_RAFT_EXAMPLE
    docs = list(rec["context"]) if not isinstance(rec["context"], str) else [rec["context"]]
    golden = rec.get("golden_index")
    target = rec.get("cot") or rec.get("answer", "")
    fig, ax = plt.subplots(figsize=(11, 5.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.05, 1)
    ax.axis("off")
    ax.set_title(title, fontsize=12, loc="left")
    _box(ax, 0.0, 0.83, 1.0, 0.13, QUESTION, "질문 (question)", rec["question"], 110, 1)
    n = len(docs)
    gap = 0.015
    w = (1.0 - gap * (n - 1)) / n
    per_line = max(10, int(w * 85) - 1)  # Hangul characters that fit a box of this width
    for i, doc in enumerate(docs):
        if n <= 3:
            role = "골든 문서 (정답 근거)" if i == golden else "방해 문서 (distractor)"
        else:
            role = "골든 (정답 근거)" if i == golden else "방해"
        _box(ax, i * (w + gap), 0.42, w, 0.34, GOLDEN if i == golden else DISTRACTOR, f"문서 {i + 1}: {role}",
             doc, per_line, 6)
    if golden is None:
        ax.text(0.5, 0.395, "이 예제에는 골든 문서가 없습니다 (1-P 예제): 학습 목표는 '문맥에 답이 없다'", ha="center",
                fontsize=9, color=QUOTE)
    _box(ax, 0.0, 0.08, 1.0, 0.26, ANSWER, "학습 목표 (CoT: 근거 인용 + <ANSWER>)", "", 120, 1, fill=0.10)
    _target_text(ax, target, 0.012, 0.265)
    ax.text(0.0, -0.02, "학습(Train: RAFT): 골든 + 방해 문서 k개, 예제의 1-P는 골든 없이  |  "
            "테스트(RAG top-k): 검색기가 찾은 k개 문서 (골든이 없을 수도 있음)", fontsize=8.5, color="#5f6b77")
    quotes = extract_quotes(target)
    if quotes and golden is not None:
        src = (golden * (w + gap) + w / 2, 0.42)
        ax.add_patch(FancyArrowPatch((0.5, 0.34), src, arrowstyle="-|>", mutation_scale=14, color=QUOTE,
                                     linewidth=1.4, linestyle="--"))
        ok = all(q in docs[golden] for q in quotes)
        ax.text(0.51, 0.37, "인용은 골든 문서에 글자 그대로 있어야 함" + (" (확인됨)" if ok else " (없음!)"), fontsize=8.5,
                color=QUOTE)
    plt.close(fig)  # shown once, as the cell's value
    return fig


def _target_text(ax, target: str, x: float, y: float, right: float = 0.985, max_lines: int = 5) -> None:
    """The CoT with quoted spans in red: one text object per word, so colours can change mid-line; lines are broken
    where the drawn words reach `right` (measured, since Hangul and Latin widths differ)."""
    parts = re.split(r"(##begin_quote##.*?##end_quote##)", target, flags=re.S)
    words: list[tuple[str, bool]] = []
    for part in parts:
        quoted = part.startswith("##begin_quote##")
        body = f"「{part[len('##begin_quote##'):-len('##end_quote##')].strip()}」" if quoted else part
        words += [(word, quoted) for word in body.split()]
    renderer = ax.figure.canvas.get_renderer()
    to_data = ax.transData.inverted()
    gap = 0.006
    cx, line = x, 0
    for i, (word, quoted) in enumerate(words):
        style = dict(fontsize=8.6, va="top", color=QUOTE if quoted else "black", fontweight="bold" if quoted else "normal")
        t = ax.text(cx, y - line * 0.04, word, **style)
        x1 = t.get_window_extent(renderer=renderer).transformed(to_data).x1
        if x1 > right and cx > x:
            t.remove()
            line += 1
            cx = x
            if line >= max_lines:
                ax.text(cx, y - line * 0.04, "…", **style)
                return
            t = ax.text(cx, y - line * 0.04, word, **style)
            x1 = t.get_window_extent(renderer=renderer).transformed(to_data).x1
        cx = x1 + gap


def lora_matrices(d: int = 4096, k: int = 4096, r: int = 8, alpha: int | None = None):
    """W' = W + (alpha/r)·B·A: the frozen d×k weight next to the two trained factors B (d×r) and A (r×k),
    with their parameter counts. r is drawn wider than to scale so that B and A are visible."""
    alpha = alpha if alpha is not None else 2 * r
    full, lora = d * k, r * (d + k)
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    side = 3.2
    h_w = side * d / max(d, k)
    w_w = side * k / max(d, k)
    thin = 0.45  # r drawn wider than to scale
    y0 = 0.9
    ax.add_patch(Rectangle((0.3, y0), w_w, h_w, facecolor="#d5dbe1", edgecolor="#5f6b77", hatch="//", linewidth=1.5))
    ax.text(0.3 + w_w / 2, y0 + h_w / 2, f"W (동결)\n{d:,} × {k:,}", ha="center", va="center", fontsize=11,
            fontweight="bold")
    ax.text(0.3 + w_w / 2, y0 - 0.35, f"학습 안 함: {full:,}개", ha="center", fontsize=9.5, color="#5f6b77")
    ax.text(0.3 + w_w + 0.35, y0 + h_w / 2, "+", fontsize=24, va="center")
    ax.text(0.3 + w_w + 1.1, y0 + h_w / 2, f"α/r\n= {alpha}/{r}", fontsize=9.5, va="center", ha="center")
    bx = 0.3 + w_w + 1.65
    ax.add_patch(Rectangle((bx, y0), thin, h_w, facecolor=GOLDEN, alpha=0.35, edgecolor=GOLDEN, linewidth=1.5))
    ax.text(bx + thin / 2, y0 + h_w + 0.15, f"B\n{d:,}×{r}", ha="center", va="bottom", fontsize=9.5, color=GOLDEN,
            fontweight="bold")
    ax.text(bx + thin / 2, y0 - 0.35, "0으로 시작", ha="center", fontsize=8.5, color=GOLDEN)
    ax.text(bx + thin + 0.12, y0 + h_w / 2, "×", fontsize=18, va="center")
    ax_x = bx + thin + 0.6
    ax.add_patch(Rectangle((ax_x, y0 + h_w - thin), w_w, thin, facecolor=QUESTION, alpha=0.35, edgecolor=QUESTION,
                           linewidth=1.5))
    ax.text(ax_x + w_w / 2, y0 + h_w + 0.15, f"A  {r}×{k:,}", ha="center", va="bottom", fontsize=9.5,
            color=QUESTION, fontweight="bold")
    ax.text(ax_x + w_w / 2, y0 + h_w - thin - 0.3, "작은 난수로 시작", ha="center", fontsize=8.5, color=QUESTION)
    ax.text(ax_x + w_w / 2, y0 + 0.9, f"학습: r(d+k) = {r}×({d:,}+{k:,})\n= {lora:,}개 ({lora / full:.2%})",
            ha="center", fontsize=10, fontweight="bold")
    ax.text(ax_x + w_w / 2, y0 + 0.1, "(r은 보이도록 실제보다 넓게 그림)", ha="center", fontsize=8, color="#5f6b77")
    ax.set_title(f"LoRA: W' = W + (α/r)·B·A   (d={d:,}, k={k:,}, r={r}: 학습 파라미터 {1 - lora / full:.1%} 절감)",
                 fontsize=12, loc="left")
    plt.close(fig)  # shown once, as the cell's value
    return fig
