"""The data-quality report (`workshop quality`): Markdown + HTML with the plots, and the filtered data."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.jsonl import write_jsonl
from ..data.quality.checks import QualityReport, filter_records
from . import plots
from .markdown import md_table, to_html


def write_quality_report(report: QualityReport, records: list[dict], out_dir: str | Path,
                         lengths: np.ndarray | None = None) -> dict[str, Path]:
    """Markdown + HTML report with the plots, and the filtered data set (filtered.jsonl)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s = report.summary()
    images = {}
    bal = report.balance["counts"]
    images["balance"] = plots.save(plots.bar(list(bal), list(bal.values()), "주제별 샘플 수", "개수"), out / "balance.png")
    if lengths is not None and len(lengths):
        st = report.lengths
        images["lengths"] = plots.save(plots.histogram(list(lengths), "토큰 길이 분포", "tokens",
                                                       {"mean": st["mean"], "p95": st["p95"]}), out / "lengths.png")
    md = ["# 데이터 품질 보고서", "", md_table([{"항목": k, "값": v} for k, v in s.items()
                                             if k not in ("token_length", "topic_balance")]), ""]
    if report.lengths:
        md += ["## 토큰 길이", md_table([report.lengths]), ""]
        if "lengths" in images:
            md += ["![lengths](lengths.png)", ""]
        md += [md_table(report.truncation), ""]
    md += ["## 주제 균형", report.balance["advice"], "", "![balance](balance.png)", ""]
    md += ["## 근거가 약한 샘플 (weakest grounding)",
           md_table([{k: w[k] for k in ("id", "question", "answer", "groundedness", "relevance")}
                      for w in report.weakest[:10]]), ""]
    if report.near:
        md += ["## 근사 중복 (MinHash LSH)", md_table([
            {"a": records[p.i].get("id"), "b": records[p.j].get("id"), "jaccard": p.jaccard,
             "질문 a": records[p.i]["question"], "질문 b": records[p.j]["question"]} for p in report.near[:10]]), ""]
    if report.pii:
        md += ["## 개인정보 의심 (PII)", md_table(report.pii[:20]), ""]
    text = "\n".join(md) + "\n"
    (out / "quality_report.md").write_text(text, encoding="utf-8")
    (out / "quality_report.html").write_text(to_html(text, out), encoding="utf-8")
    write_jsonl(out / "filtered.jsonl", filter_records(records, report))
    (out / "quality_summary.json").write_text(json.dumps(s, ensure_ascii=False, indent=1, default=str),
                                              encoding="utf-8")
    return {"markdown": out / "quality_report.md", "html": out / "quality_report.html",
            "filtered": out / "filtered.jsonl", **images}
