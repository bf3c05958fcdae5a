"""The run report (`workshop run`): Markdown + HTML with the tables and charts, the summary JSON, and
the closing table printed in the terminal."""
from __future__ import annotations

import json
from pathlib import Path

from ..evaluate.results import EvalResult, before_after
from ..evaluate.sets import SETTING_NAMES
from .markdown import md_table, to_html

DISCUSSION = [
    ("ROUGE-1은 높지만 ROUGE-2가 낮다면 어떤 문제가 있을까요?",
     "단어는 맞지만 순서나 문법이 어색할 가능성이 있습니다.", ("rouge1", "rouge2")),
    ("Cosine Similarity가 높지만 BLEU가 낮은 경우는 무엇을 의미할까요?",
     "의미는 같지만 표현 방식이 다릅니다. 이것이 좋은 건가요, 나쁜 건가요?", ("cosine", "bleu")),
    ("특정 작업에서 어떤 지표를 가장 중요하게 봐야 할까요?",
     "요약, 질의응답, 번역 등 작업마다 중요한 지표가 다릅니다. 사실형 QA라면 EM/F1도 함께 보세요.",
     ("exact_match", "f1")),
]


def discussion_rows(metrics: dict, setting: str = "golden_distractors") -> "list[dict]":
    """Each discussion question with the numbers that answer it (base and tuned) for one setting."""
    by_model = metrics[setting]
    rows = []
    for i, (question, hint, keys) in enumerate(DISCUSSION, start=1):
        row = {"토론 질문": f"{i}. {question}", "힌트": hint}
        for model, label in (("base", "원본 모델"), ("tuned", "파인튜닝 후")):
            m = by_model.get(model, {})
            row[label] = ", ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), (int, float)))
        rows.append(row)
    return rows


def comparison_rows(metrics: dict, setting: str = "golden_distractors") -> list[dict]:
    return [{"평가 지표 (metric)": label, "원본 모델 (base)": b, "파인튜닝 후 (tuned)": t, "개선율 (change)": change}
            for label, b, t, change in before_after(metrics[setting])]


def write_report(out_dir: str | Path, title: str, run_info: dict, train_summary: dict, res: EvalResult,
                 images: dict[str, Path]) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {title}", "", "## 실행 정보 (run)", md_table([{"항목": k, "값": v} for k, v in run_info.items()]), "",
          "## 학습 (training)",
          md_table([{"항목": k, "값": train_summary.get(k)} for k in
                     ("steps", "seconds", "tokens_per_s", "final_loss", "train_loss", "eval_loss", "trainable_params",
                      "gradient_checkpointing", "peak_gib")]), ""]
    for d in train_summary.get("diagnoses") or []:
        md.append(f"> {d}")
    if "loss_curve" in images:
        md += ["", f"![loss]({images['loss_curve'].name})", ""]
    if "golden_distractors" in res.metrics:
        md += ["## 파인튜닝 전후 비교 (골든 + 방해 문서)", md_table(comparison_rows(res.metrics)), ""]
    if "comparison_plot" in images:
        md += [f"![comparison]({images['comparison_plot'].name})", ""]
    md += ["## RAFT 평가 설정별 결과", md_table([
        {"설정": SETTING_NAMES.get(s, s), "모델": model, "ROUGE-L": m["rougeL"], "BLEU": m["bleu"],
         "Cosine": m.get("cosine") if m.get("cosine") is not None else "-", "F1": m["f1"],
         "recall@k": res.retrieval.get(s, "-")}
        for s, by in res.metrics.items() for model, m in by.items()]), ""]
    if "settings_plot" in images:
        md += [f"![settings]({images['settings_plot'].name})", ""]
    if res.embedding_model and "MiniLM-L6" in res.embedding_model:
        md += ["> Cosine은 영어 전용 오프라인 임베딩 모델(all-MiniLM-L6-v2)로 계산했습니다: 한국어에는 약한 대용품입니다.", ""]
    samples = [p for p in res.predictions if p["setting"] == "golden_distractors"][:5]
    md += ["## 샘플 예측", md_table([{"질문": p["question"], "참조": p["reference"], "원본": p.get("base", ""),
                                      "튜닝": p.get("tuned", "")} for p in samples]), ""]
    md += ["## 토론 질문"]
    m = res.metrics.get("golden_distractors", {}).get("tuned", {})
    for q, hint, keys in DISCUSSION:
        nums = ", ".join(f"{k}={m[k]:.3f}" for k in keys if isinstance(m.get(k), float))
        md += [f"- **{q}** 힌트: {hint} (이번 결과: {nums})"]
    md_text = "\n".join(md) + "\n"
    md_path = out / "report.md"
    md_path.write_text(md_text, encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(to_html(md_text, out), encoding="utf-8")
    return {"markdown": md_path, "html": html_path}


def write_summary(path: str | Path, summary: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def print_table(summary: dict) -> str:
    """The closing table of `make run`: metric, base, tuned, change (Korean/English)."""
    rows = [("평가 지표 metric", "원본 base", "튜닝 tuned", "개선율 change")]
    rows += [(label, f"{b:.3f}", f"{t:.3f}", change) for label, b, t, change in before_after(summary)]
    widths = [max(_width(r[i]) for r in rows) for i in range(4)]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c + " " * (w - _width(c)) for c, w in zip(r, widths)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _width(s: str) -> int:
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)
