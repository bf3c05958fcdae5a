"""Evaluation results: metrics per setting and model, predictions, the seed's before/after table."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.jsonl import write_jsonl
from .metrics import METRIC_LABELS, headline
from .sets import SETTING_NAMES


@dataclass
class EvalResult:
    metrics: dict = field(default_factory=dict)  # setting -> model -> metrics (headline + details)
    predictions: list[dict] = field(default_factory=list)
    retrieval: dict = field(default_factory=dict)
    stop_rate: dict = field(default_factory=dict)
    seconds: float = 0.0
    embedding_model: str | None = None

    def table(self, setting: str = "golden_distractors"):
        """The seed's before/after table: 평가 지표 | 원본 모델 | 파인튜닝 후 | 개선율."""
        import pandas as pd

        return pd.DataFrame([{"평가 지표": label, "원본 모델": round(b, 3), "파인튜닝 후": round(t, 3), "개선율": change}
                             for label, b, t, change in before_after(self.metrics[setting])])

    def settings_table(self):
        import pandas as pd

        rows = []
        for s, by_model in self.metrics.items():
            for model, m in by_model.items():
                rows.append({"설정": SETTING_NAMES.get(s, s), "모델": model, "ROUGE-1": m["rouge1"],
                             "ROUGE-L": m["rougeL"], "BLEU": m["bleu"], "Cosine": m.get("cosine"),
                             "EM": m["exact_match"], "F1": m["f1"],
                             "recall@k": self.retrieval.get(s)})
        return pd.DataFrame(rows)

    def samples(self, setting: str = "golden_distractors", n: int = 5):
        import pandas as pd

        rows = [p for p in self.predictions if p["setting"] == setting][:n]
        return pd.DataFrame([{"질문": p["question"], "참조 답변": p["reference"], "원본 모델 답변": p["base"],
                              "파인튜닝 후 답변": p["tuned"], "ROUGE-L (원본→튜닝)":
                              f"{p['scores']['base']['rougeL']:.2f} → {p['scores']['tuned']['rougeL']:.2f}"}
                             for p in rows])


def before_after(by_model: dict) -> list[tuple[str, float, float, str]]:
    """(label, base, tuned, change) for every headline metric that both models have, in table order."""
    rows = []
    for k, label in METRIC_LABELS.items():
        b, t = by_model["base"].get(k), by_model["tuned"].get(k)
        if b is not None and t is not None:
            rows.append((label, b, t, improvement(b, t)))
    return rows


def improvement(base: float, tuned: float) -> str:
    if base == 0:
        return "n/a (원본 0)" if tuned else "0%"
    return f"{(tuned - base) / abs(base) * 100:+.1f}%"


def save_eval(res: EvalResult, out_dir: str | Path) -> dict[str, Path]:
    """metrics.json (per setting and model) and predictions.jsonl (the plots: report.plots.save_eval_plots)."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"metrics": res.metrics, "retrieval_recall_at_k": res.retrieval,
                                                  "stop_rate": res.stop_rate, "seconds": res.seconds,
                                                  "embedding_model": res.embedding_model},
                                                 ensure_ascii=False, indent=1), encoding="utf-8")
    return {"metrics": out / "metrics.json", "predictions": write_jsonl(out / "predictions.jsonl", res.predictions)}


def headline_metrics(res: EvalResult, setting: str = "golden_distractors") -> dict:
    return {name: headline(m) for name, m in res.metrics[setting].items()}
