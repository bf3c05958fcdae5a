"""The RAFT paper's central comparison on our data: which TRAINING format makes the best RAG model?

Zhang et al. (2024), "RAFT: Adapting Language Model to Domain Specific RAG" (arXiv 2403.10131), Table 1:
RAFT beats domain-specific fine-tuning with and without RAG; and training with some distractor documents
makes the model robust to more documents at test time. The seed's slide "RAFT 워크플로우" shows the same
contrast: Train: RAFT vs Golden Only; Test: RAG top-k.

One call (`run_ablation`, `workshop ablate`) trains the same base model with the same steps and seed in
three formats that differ ONLY in their training data:

  (a) golden_only   the golden document alone (k = 0 distractors, P = 1.0), CoT target
  (b) raft          golden + k distractors, the golden left out of 1-P = 20% of the examples, CoT target
  (c) raft_no_cot   (b)'s contexts with the bare answer as target (no chain-of-thought)

and evaluates each, and the base model (adapter off), on ONE fixed set of test questions and contexts:
golden only, golden + k distractors, and RAG top-k (BM25) for k = 1, 3, 5. The test rows are built once,
from the test documents, before any training; every model answers exactly the same prompts.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import platform
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import DataSettings, WorkshopConfig, environment, load_config
from .data.prepare import prepare
from .data.raft import final_answer, to_raft
from .data.split import doc_key
from .data.text import tokenizer_mode
from .evaluate.generation import answer_examples
from .evaluate.metrics import compute_metrics
from .evaluate.sets import EvalSet, build_eval_sets, select_test
from .model.choice import resolve_model
from .model.load import load_model
from .report import plots
from .runtime.device import choose_device
from .runtime.errors import WorkshopError
from .train.fastpath.plan import fast_path_off_reason
from .train.trainer import train

PAPER = "Zhang et al., 2024, RAFT: Adapting Language Model to Domain Specific RAG (arXiv 2403.10131)"
PAPER_FINDINGS = [
    "RAFT(방해 문서 + CoT로 학습)가 도메인 특화 파인튜닝(DSF)보다 RAG가 있을 때와 없을 때 모두 높다 (Table 1)",
    "CoT(인용 + 추론) 목표를 빼면 정확도가 떨어진다 (Table 2)",
    "골든 문서만으로 학습하면 테스트 때 문서가 늘수록(top-k) 약해지고, 방해 문서와 함께 학습하면 더 견고하다 "
    "(Fig. 5·6: P = 80% 정도, 방해 문서 몇 개)",
]


@dataclass(frozen=True)
class TrainFormat:
    """One training-data format: only these RAFT options differ between the trained models."""

    key: str
    label: str
    distractors: bool  # False: the golden document alone (k = 0)
    oracle_fraction: float
    add_cot: bool


FORMATS = (
    TrainFormat("golden_only", "(a) 골든 문서만 (Golden Only)", False, 1.0, True),
    TrainFormat("raft", "(b) RAFT: 방해 문서 + CoT, P=0.8", True, 0.8, True),
    TrainFormat("raft_no_cot", "(c) RAFT, CoT 없이 (답만)", True, 0.8, False),
)
BASE = "base"
BASE_LABEL = "원본 모델 (학습 전)"
FORMAT_LABELS = {BASE: BASE_LABEL, **{f.key: f.label for f in FORMATS}}
METRICS = ("rougeL", "rouge1", "f1", "bleu", "exact_match")
METRIC_NAMES = {"rougeL": "ROUGE-L", "rouge1": "ROUGE-1", "f1": "F1 (문자)", "bleu": "BLEU", "exact_match": "EM"}
# A CoT target (quote + reasoning + <ANSWER>:) is ~3.9x the answer in tokens (p95 683 vs 174 with the
# offline tokenizer): CoT-trained models get this multiple of the answer's generation budget.
COT_TOKEN_FACTOR = 4


# Per size. On the 2-core CI CPU a training step on one CoT example (~900 tokens with the offline
# tokenizer) costs 40-70 s of CPU time and a forward pass over the five test prompts of one question
# (~2,800 tokens) about 20 s, so the CPU sizes train one step per format, on one seed, and generate a
# few tokens for one question: they prove the machinery, not the paper. tiny (CI) retrieves top-1 and
# top-3 only: the same code as top-5, whose prompt is the longest of the five. Small generation batches: the
# prompts are sorted by length, so batches of two pad little (one batch of five pads every prompt to
# the RAG top-5 length). Sequences up to 2048 tokens so that no CoT example loses its documents to
# truncation (at 1024 the formats would see the same cut context). Elsewhere three seeds and the
# config's training and evaluation settings.
SIZE_PLANS = {
    "tiny": {"seeds": (0,), "rag_ks": (1, 3), "max_steps": 1, "num_examples": 1, "max_new_tokens": 4,
             "max_new_tokens_cot": 4, "eval_batch_size": 2, "max_seq_length": 2048},
    "smoke": {"seeds": (0,), "max_steps": 8, "num_examples": 4, "max_new_tokens": 32, "max_new_tokens_cot": 64,
              "eval_batch_size": 4, "max_seq_length": 2048},
    # a GPU with the offline model (notebook 06's GPU numbers): three seeds, every prompt of a model in one
    # generation batch (24 questions x 5 settings); SmolLM2 spends ~2 tokens per Hangul character, so golden + 2
    # distractors of ~600 characters and the CoT target need ~4,000 tokens
    "workshop": {"seeds": (0, 1, 2), "max_steps": 20, "num_examples": 24, "max_new_tokens": 128,
                 "max_new_tokens_cot": 384, "eval_batch_size": 120, "max_seq_length": 4096},
}


def formats_table(k: int):
    """What each trained model sees in training (and the base model, which is not trained)."""
    import pandas as pd

    rows = [{"형식": BASE_LABEL, "학습 문맥": "학습하지 않음 (어댑터 끔)", "골든 포함 비율 P": "-", "학습 목표": "-"}]
    for f in FORMATS:
        docs = f"골든 + 방해 {k}개 (골든이 빠지면 방해 {k}개만)" if f.distractors else "골든 문서 1개"
        target = "CoT: ##begin_quote## 인용 + 추론 + <ANSWER>: 답" if f.add_cot else "답만"
        rows.append({"형식": f.label, "학습 문맥": docs, "골든 포함 비율 P": f.oracle_fraction, "학습 목표": target})
    return pd.DataFrame(rows).set_index("형식")


def default_seeds(size: str) -> tuple[int, ...]:
    """Seeds per size: one on the CPU sizes (time), three where a GPU makes the spread affordable."""
    return SIZE_PLANS.get(size, {}).get("seeds", (0, 1, 2))


@dataclass
class AblationPlan:
    """What the ablation varies and how it evaluates (the model and training settings come from the config)."""

    seeds: tuple = field(default=(0,), metadata={"help": "학습 시드들 (LoRA 초기화, 데이터 순서, 방해 문서 추출)"})
    rag_ks: tuple = field(default=(1, 3, 5), metadata={"help": "RAG top-k 평가에서 검색할 문서 수들"})
    num_distractors: int = field(default=0, metadata={
        "help": "(b)(c)와 '골든 + 방해' 테스트의 방해 문서 수 k (0이면 data.num_distractors, 최소 1)"})
    max_steps: int = field(default=0, metadata={"help": "형식마다 학습할 스텝 수 (0이면 train.max_steps)"})
    max_seq_length: int = field(default=0, metadata={"help": "학습 시퀀스 최대 토큰 수 (0이면 model.max_seq_length)"})
    num_examples: int = field(default=0, metadata={"help": "테스트 질문 수 (0이면 eval.num_examples)"})
    max_new_tokens: int = field(default=0, metadata={
        "help": "답만 학습한 모델과 원본 모델의 생성 토큰 한도 (0이면 eval.max_new_tokens)"})
    max_new_tokens_cot: int = field(default=0, metadata={
        "help": f"CoT로 학습한 모델의 생성 토큰 한도 (0이면 답 한도 x {COT_TOKEN_FACTOR})"})
    eval_batch_size: int = field(default=0, metadata={
        "help": "생성 배치 크기: 모든 설정의 프롬프트를 모아 길이순으로 나눔 (0이면 eval.batch_size)"})
    metric: str = field(default="rougeL", metadata={"help": f"표·그림·판정의 지표: {', '.join(METRICS)}"})
    reuse_base: str = field(default="auto", metadata={
        "help": "형식마다 원본 모델을 다시 쓸지: auto(기본 경로면 어댑터만 떼어 재사용, GPU 고속 경로면 새로 로드) | on | off"})

    @classmethod
    def for_size(cls, size: str, **kw) -> "AblationPlan":
        """The plan for a size (SIZE_PLANS), with explicit keyword arguments taking precedence."""
        return cls(**{"seeds": default_seeds(size), **SIZE_PLANS.get(size, {}), **kw})

    def validate(self) -> None:
        """Raise ValueError (Korean) for settings the ablation cannot run with."""
        seeds = list(self.seeds)
        if not seeds:
            raise WorkshopError("시드(--seeds)가 하나 이상 필요합니다")
        if len(set(seeds)) != len(seeds) or any(not isinstance(s, int) or s < 0 for s in seeds):
            raise WorkshopError(f"시드는 서로 다른 0 이상의 정수여야 합니다: {seeds}")
        if not self.rag_ks or any(not isinstance(k, int) or k < 1 for k in self.rag_ks):
            raise WorkshopError(f"RAG top-k의 k는 1 이상의 정수여야 합니다: {list(self.rag_ks)}")
        if self.metric not in METRICS:
            raise WorkshopError(f"지표 '{self.metric}'를 알 수 없습니다: {', '.join(METRICS)} 중 하나")
        if self.reuse_base not in ("auto", "on", "off"):
            raise WorkshopError(f"reuse_base는 auto | on | off 입니다: {self.reuse_base!r}")
        counts = ("num_distractors", "max_steps", "max_seq_length", "num_examples", "max_new_tokens",
                  "max_new_tokens_cot", "eval_batch_size")
        if any(getattr(self, n) < 0 for n in counts):
            raise WorkshopError(f"{', '.join(counts)}는 0 이상이어야 합니다")


# --- settings: the test columns ------------------------------------------------------------------------
def setting_keys(rag_ks) -> list[str]:
    return ["golden_only", "golden_distractors"] + [f"rag_top{k}" for k in rag_ks]


def setting_label(key: str, k_distractors: int) -> str:
    if key == "golden_only":
        return "골든만 (문서 1)"
    if key == "golden_distractors":
        return f"골든+방해 (문서 {k_distractors + 1})"
    return f"RAG top-{key.removeprefix('rag_top')}"


def setting_docs(key: str, k_distractors: int) -> int:
    """How many documents the test context holds in this setting."""
    if key == "golden_only":
        return 1
    if key == "golden_distractors":
        return k_distractors + 1
    return int(key.removeprefix("rag_top"))


# --- data -----------------------------------------------------------------------------------------------
def raft_options(fmt: TrainFormat, base: DataSettings, k: int, seed: int) -> DataSettings:
    """The RAFT options of one training format: only distractors, P and CoT change."""
    return dataclasses.replace(base, num_distractors=k if fmt.distractors else 0,
                               oracle_fraction=fmt.oracle_fraction, add_cot=fmt.add_cot, seed=seed)


def training_examples(records: list[dict], split_of: dict[str, str], corpus, fmt: TrainFormat,
                      base: DataSettings, k: int, seed: int, limit: int = 0) -> list[dict]:
    """The train split in one format (distractors drawn from train documents only, as in `prepare`).

    `limit` > 0: a seeded random sample of that many examples -- what `limit` optimizer steps consume
    (the Trainer would draw them from a shuffled full split alike), so nothing unused is tokenized."""
    train_records = [r for r in records if split_of.get(doc_key(r)) == "train"]
    rows = to_raft(train_records, split_of, raft_options(fmt, base, k, seed), corpus)["train"]
    if 0 < limit < len(rows):
        rows = random.Random(seed).sample(rows, limit)
    return rows


def test_sets(test: list[dict], corpus: list[dict], cfg: WorkshopConfig, rag_ks) -> dict[str, EvalSet]:
    """The fixed test contexts: golden only, golden + k distractors (the test rows themselves) and
    BM25 top-k for each k. Built once; every model answers these same prompts."""
    sets = build_eval_sets(test, corpus, cfg, ["golden_only", "golden_distractors"])
    for k in rag_ks:
        c = copy.deepcopy(cfg)
        c.eval.rag_k = k
        sets[f"rag_top{k}"] = build_eval_sets(test, corpus, c, ["rag_topk"])["rag_topk"]
    return sets


# --- the result -----------------------------------------------------------------------------------------
@dataclass
class Comparison:
    """Mean difference of two formats in one setting, judged against the seeds' spread."""

    setting: str
    mean_a: float
    std_a: float
    mean_b: float
    std_b: float
    n_seeds: int

    @property
    def diff(self) -> float:
        return self.mean_b - self.mean_a

    @property
    def spread(self) -> float:
        """The sum of the two standard deviations: a difference below it is not told apart."""
        return self.std_a + self.std_b

    @property
    def outcome(self) -> str:
        """'higher' / 'lower' (b vs a, beyond the spread), 'within' the spread, 'unknown' (one seed)."""
        if self.n_seeds < 2:
            return "unknown"
        if abs(self.diff) <= self.spread:
            return "within"
        return "higher" if self.diff > 0 else "lower"


@dataclass
class AblationResult:
    """Rows (format, seed, setting, k, docs, metrics) of every evaluation, the training runs, and meta."""

    rows: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def metric(self) -> str:
        return self.meta.get("metric", "rougeL")

    @property
    def settings(self) -> list[str]:
        return setting_keys(self.meta.get("rag_ks", (1, 3, 5)))

    @property
    def formats(self) -> list[str]:
        present = {r["format"] for r in self.rows}
        return [f for f in [BASE] + [f.key for f in FORMATS] if f in present]

    @property
    def k_distractors(self) -> int:
        return self.meta.get("num_distractors", 1)

    def values(self, fmt: str, setting: str, metric: str | None = None) -> list[float]:
        metric = metric or self.metric
        return [r[metric] for r in self.rows if r["format"] == fmt and r["setting"] == setting]

    def stat(self, fmt: str, setting: str, metric: str | None = None) -> tuple[float, float, int]:
        """(mean, sample standard deviation over seeds, number of seeds); std 0 for one value."""
        vals = self.values(fmt, setting, metric)
        if not vals:
            return math.nan, math.nan, 0
        return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)

    def summary(self, metric: str | None = None):
        """Long table: one row per (format, setting) with mean, std and n."""
        import pandas as pd

        rows = []
        for f in self.formats:
            for s in self.settings:
                mean, std, n = self.stat(f, s, metric)
                rows.append({"format": f, "형식": FORMAT_LABELS[f], "setting": s,
                             "설정": setting_label(s, self.k_distractors), "문서 수": setting_docs(s, self.k_distractors),
                             "mean": mean, "std": std, "n": n})
        return pd.DataFrame(rows)

    def table(self, metric: str | None = None, digits: int = 3):
        """Formats x test settings, each cell 'mean ± std' over the seeds (the base model: one value)."""
        import pandas as pd

        cells = {}
        for f in self.formats:
            row = {}
            for s in self.settings:
                mean, std, n = self.stat(f, s, metric)
                cell = f"{mean:.{digits}f}" if f == BASE or n == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"
                row[setting_label(s, self.k_distractors)] = cell if n else ""
            cells[FORMAT_LABELS[f]] = row
        df = pd.DataFrame.from_dict(cells, orient="index")
        df.index.name = f"{METRIC_NAMES.get(metric or self.metric, metric)} (평균 ± 표준편차, 시드 {self.n_seeds}개)"
        return df

    @property
    def n_seeds(self) -> int:
        return len(self.meta.get("seeds", ())) or 1

    def compare(self, a: str, b: str, settings: list[str] | None = None, metric: str | None = None) -> list[Comparison]:
        out = []
        for s in settings or self.settings:
            ma, sa, na = self.stat(a, s, metric)
            mb, sb, nb = self.stat(b, s, metric)
            out.append(Comparison(s, ma, sa, mb, sb, min(na, nb)))
        return out

    def verdict(self, metric: str | None = None) -> str:
        """Plain Korean: does (b) RAFT beat (a) golden-only training on RAG top-k beyond the seeds' spread?"""
        metric = metric or self.metric
        name = METRIC_NAMES.get(metric, metric)
        rag = [s for s in self.settings if s.startswith("rag_top")]
        comps = self.compare("golden_only", "raft", rag, metric)
        lines = [f"[판정] 지표 {name}, 시드 {self.n_seeds}개. '편차 밖' = 평균 차이가 두 형식의 시드 간 표준편차 합보다 큼.",
                 "RAG top-k에서 (b) RAFT vs (a) 골든만:"]
        for c in comps:
            lab = setting_label(c.setting, self.k_distractors)
            judged = {"higher": "편차 밖으로 (b)가 높음 (논문과 같은 방향)",
                      "lower": "편차 밖으로 (b)가 낮음 (논문과 반대 방향)",
                      "within": "차이가 시드 간 편차 안: 구별할 수 없음",
                      "unknown": "시드가 1개라 편차를 모름: 판정하지 않음"}[c.outcome]
            lines.append(f"  - {lab}: (b) {c.mean_b:.3f} ± {c.std_b:.3f} vs (a) {c.mean_a:.3f} ± {c.std_a:.3f} "
                         f"→ 차이 {c.diff:+.3f}, 편차 {c.spread:.3f}: {judged}")
        outcomes = {c.outcome for c in comps}
        if outcomes == {"unknown"}:
            lines.append("결론: 시드가 하나뿐이라 차이가 우연인지 알 수 없습니다. 시드를 늘려(--seeds 0 1 2) 다시 재세요.")
        elif outcomes == {"higher"}:
            lines.append("결론: 우리 데이터에서 논문의 방향이 재현됩니다: 모든 k에서 RAFT 학습이 골든만 학습보다 편차 밖으로 높습니다.")
        elif "higher" in outcomes and "lower" not in outcomes:
            n = sum(c.outcome == "higher" for c in comps)
            lines.append(f"결론: 부분적으로만 재현됩니다: {len(comps)}개 중 {n}개의 k에서 RAFT가 편차 밖으로 높고, "
                         "나머지는 편차 안입니다.")
        elif "lower" in outcomes and "higher" not in outcomes:
            lines.append("결론: 논문과 반대 방향입니다: RAFT 학습이 골든만 학습보다 낮은 k가 있고 높은 k는 없습니다.")
        elif {"higher", "lower"} <= outcomes:
            lines.append("결론: k에 따라 방향이 엇갈립니다: 논문의 방향을 재현했다고 말할 수 없습니다.")
        else:
            lines.append("결론: 차이가 모두 시드 간 편차 안입니다: 이 규모(모델·데이터·스텝)에서는 논문의 방향을 확인하지 못했습니다.")
        cot = self.compare("raft_no_cot", "raft", rag, metric)
        if cot and not any(math.isnan(c.mean_a) or math.isnan(c.mean_b) for c in cot):
            mean_diff = statistics.fmean(c.diff for c in cot)
            beyond = [setting_label(c.setting, self.k_distractors) for c in cot if c.outcome in ("higher", "lower")]
            lines.append(f"CoT: (b) - (c) 평균 차이 {mean_diff:+.3f} (RAG top-k 평균); 편차 밖인 k: "
                         f"{', '.join(beyond) if beyond else '없음'}. 논문은 CoT가 도움이 된다고 보고합니다.")
        if len(rag) >= 2:
            first, last = rag[0], rag[-1]
            drops = []
            for f in ("golden_only", "raft", "raft_no_cot", BASE):
                a, b = self.stat(f, first, metric)[0], self.stat(f, last, metric)[0]
                if not (math.isnan(a) or math.isnan(b)):
                    drops.append(f"{FORMAT_LABELS[f].split(' ')[0] if f != BASE else '원본'} {b - a:+.3f}")
            lines.append(f"문서가 늘 때 ({setting_label(first, 0)} → {setting_label(last, 0)}) 변화: " + ", ".join(drops)
                         + " (논문: 방해 문서로 학습한 모델이 덜 떨어짐)")
        return "\n".join(lines)

    def markdown(self, metric: str | None = None) -> str:
        """The mean ± std table as Markdown (plus how it was measured)."""
        df = self.table(metric)
        head = "| " + " | ".join([df.index.name] + list(df.columns)) + " |"
        sep = "|" + "---|" * (len(df.columns) + 1)
        body = ["| " + " | ".join([str(i)] + [str(v) for v in row]) + " |" for i, row in zip(df.index, df.values)]
        m = self.meta
        note = (f"\n\n크기 {m.get('size')}, 모델 {m.get('model')}, {m.get('device')}, 스텝 {m.get('max_steps')}, "
                f"시드 {list(m.get('seeds', []))}, 테스트 질문 {m.get('num_examples')}개, 방해 문서 k={self.k_distractors}, "
                f"생성 한도 {m.get('max_new_tokens')}/{m.get('max_new_tokens_cot')} 토큰(답/CoT), "
                f"지표 토크나이저 {m.get('ko_tokenizer', 'mecab')}, "
                f"총 {m.get('seconds', 0):.0f}초.")
        return "\n".join([head, sep] + body) + note

    def plot(self, metric: str | None = None):
        """Metric vs number of test documents, one line per training format (+ the base model): left the
        settings that always hold the golden document, right RAG top-k. Error bars = std over seeds."""
        import matplotlib.pyplot as plt


        metric = metric or self.metric
        k = self.k_distractors
        rag = [s for s in self.settings if s.startswith("rag_top")]
        fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 4.2), sharey=True,
                                          gridspec_kw={"width_ratios": [1, 1.6]})
        styles = {BASE: dict(color=plots.BASE_COLOR, linestyle="--", marker="s"),
                  "golden_only": dict(color="#e08a2b", marker="o"), "raft": dict(color=plots.TUNED_COLOR, marker="o"),
                  "raft_no_cot": dict(color="#5aa469", marker="^")}
        for f in self.formats:
            for ax, keys in ((left, ["golden_only", "golden_distractors"]), (right, rag)):
                stats = [self.stat(f, s, metric) for s in keys]
                xs = [setting_docs(s, k) for s in keys]
                ax.errorbar(xs, [m for m, _, _ in stats], yerr=[sd for _, sd, _ in stats], capsize=3,
                            label=FORMAT_LABELS[f], **styles[f])
        left.set_xticks([1, k + 1], ["골든만", f"골든+방해 {k}"])
        left.set_xlabel("테스트 문서 수 (골든 포함)")
        left.set_ylabel(METRIC_NAMES.get(metric, metric))
        left.set_title("골든 문서가 있는 문맥", fontsize=10)
        right.set_xticks([setting_docs(s, k) for s in rag])
        right.set_xlabel("검색 문서 수 k (BM25 top-k)")
        right.set_title("RAG top-k", fontsize=10)
        for ax in (left, right):
            ax.grid(alpha=0.3)
        handles, labels = right.get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
        fig.suptitle(f"학습 형식별 {METRIC_NAMES.get(metric, metric)} vs 테스트 문서 수 (시드 {self.n_seeds}개, 막대 = 표준편차)",
                     fontsize=11)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        plt.close(fig)
        return fig

    def to_dict(self) -> dict:
        return {"meta": self.meta, "runs": self.runs, "rows": self.rows}

    @classmethod
    def load(cls, path: str | Path) -> "AblationResult":
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(rows=d["rows"], runs=d["runs"], meta=d["meta"])

    def save(self, out_dir: str | Path, plot: bool = True) -> dict[str, Path]:
        """ablation.json (everything), ablation.md (table + verdict), ablation.png (the plot)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {"json": out / "ablation.json", "markdown": out / "ablation.md"}
        files["json"].write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        if self.rows:
            text = f"# RAFT 학습 형식 비교 (ablation)\n\n{self.markdown()}\n\n```\n{self.verdict()}\n```\n"
            files["markdown"].write_text(text, encoding="utf-8")
        if plot and self.rows:

            files["plot"] = plots.save(self.plot(), out / "ablation.png")
        return files


# --- running it -----------------------------------------------------------------------------------------
def check_out_dir(out: Path) -> None:
    """Refuse a folder that holds something other than an earlier ablation (never delete user files)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "ablation.json").exists())):
        raise WorkshopError(f"출력 폴더 {out}에 ablation 결과가 아닌 파일이 있습니다: 빈 폴더나 새 경로를 주세요 (--out)")


def run_config(cfg: WorkshopConfig, fmt: TrainFormat, k: int, seed: int, out: Path) -> WorkshopConfig:
    """cfg for one training run: its seed and folder, the format's data settings, no in-training
    evaluation (only the final adapter is kept; `run_ablation` also turns checkpoints off)."""
    c = copy.deepcopy(cfg)
    c.data.num_distractors = k if fmt.distractors else 0
    c.data.oracle_fraction = fmt.oracle_fraction
    c.data.add_cot = fmt.add_cot
    c.data.seed = seed
    c.train.seed = seed
    c.train.output_dir = str(out / "runs" / f"{fmt.key}-seed{seed}")
    steps, warmup = c.train.max_steps, c.train.warmup_steps
    if steps > 0 and (math.ceil(warmup * steps) if 0 < warmup < 1 else warmup) >= steps:
        c.train.warmup_steps = 0  # a warmup as long as the run trains at learning rate ~0 (1 step: exactly 0)
    c.train.eval_steps = 0
    c.train.early_stopping_patience = 0
    c.train.report_to = []
    return c


def _evaluate(model, tokenizer, sets: dict[str, EvalSet], max_new_tokens: int, batch_size: int, base: bool):
    """Generate for every setting in one pooled call (sorted by length, batched) and score per setting."""

    keys = [key for key, es in sets.items() for _ in es.examples]
    examples = [ex for es in sets.values() for ex in es.examples]
    gen = answer_examples(model, tokenizer, examples, max_new_tokens, batch_size, base=base, progress=False)
    preds = [final_answer(t) for t in gen.texts]
    out: dict[str, dict] = {}
    for key in sets:
        idx = [i for i, k in enumerate(keys) if k == key]
        m = compute_metrics([preds[i] for i in idx], [examples[i]["reference_answer"] for i in idx],
                            embedding_model=None, verbose=False)
        out[key] = {**{name: m[name] for name in METRICS}, "n": m["n"],
                    "stop_rate": sum(gen.stopped[i] for i in idx) / len(idx)}
    predictions = [{"setting": k, "id": ex["id"], "prediction": p} for k, ex, p in zip(keys, examples, preds)]
    return out, predictions, round(gen.seconds, 1)


def _reuse(plan: AblationPlan, cfg: WorkshopConfig) -> bool:
    """Reuse the loaded base by removing the adapter (peft `unload`: the LoRA layers go, the base
    modules come back bit-identical) on the plain path; the GPU fast path patches the model in place
    (attention backend, Liger kernels), so there a fresh load is the safe start."""
    if plan.reuse_base != "auto":
        return plan.reuse_base == "on"

    return fast_path_off_reason(cfg, choose_device(cfg.model.compute_dtype)) is not None


def release_adapter(peft_model, cfg: WorkshopConfig, reuse: bool):
    """The base model for the next training: the same object with the LoRA layers removed (peft's
    `unload`, no merge), or a fresh load when reuse is off. Measured on the CI CPU: unload 0.05 s,
    a reload 2.3 s (warm file cache) to 9 s (cold)."""
    if reuse:
        return peft_model.unload()
    import torch


    del peft_model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return load_model(cfg.model, verbose=False).model


def ablation_config(**overrides) -> WorkshopConfig:
    """Notebook 06's settings: the offline model unless WORKSHOP_MODEL (or an override) names another. The plan
    trains every format for every seed (9 trainings on a GPU): with EXAONE-7.8B that is hours, not a class."""
    model = {} if "WORKSHOP_MODEL" in environment() or "model.model_id" in overrides else {"model.model_id": "offline"}
    return load_config(overrides={**model, **overrides})


def run_ablation(cfg: WorkshopConfig, plan: AblationPlan | None = None, out_dir: str | Path | None = None,
                 verbose: bool = True, formats: tuple[TrainFormat, ...] = FORMATS) -> AblationResult:
    """Train every format for every seed from the same base model and evaluate all of them (and the
    base model) on the same test prompts; writes ablation.json/.md/.png and predictions.jsonl under
    `out_dir` (default build/ablation) after every run, so an interrupted run keeps what it measured."""
    import torch

    plan = plan or AblationPlan.for_size(cfg.size)
    plan.validate()
    cfg = copy.deepcopy(cfg)
    if plan.max_steps:
        cfg.train.max_steps = plan.max_steps
    if plan.max_seq_length:
        cfg.model.max_seq_length = plan.max_seq_length
    if cfg.train.max_steps == 0 or cfg.train.max_steps < -1:
        raise WorkshopError(f"max_steps는 1 이상(또는 -1 = epochs로 결정)이어야 합니다: {cfg.train.max_steps}")
    out = (Path(out_dir) if out_dir else cfg.build_path / "ablation").resolve()
    check_out_dir(out)
    t_start = time.perf_counter()
    say = print if verbose else (lambda *a, **k: None)
    k = plan.num_distractors or max(1, cfg.data.num_distractors)
    answer_cap = plan.max_new_tokens or cfg.eval.max_new_tokens
    cot_cap = plan.max_new_tokens_cot or COT_TOKEN_FACTOR * answer_cap
    n_examples = plan.num_examples or cfg.eval.num_examples
    batch = plan.eval_batch_size or cfg.eval.batch_size
    effective = cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps
    limit = cfg.train.max_steps * effective if cfg.train.max_steps > 0 else 0
    base_opts = cfg.data
    # the reference data: test rows = golden + k distractors (test documents always keep the golden)
    prep = prepare(cfg.data.raw_paths, out / "data", dataclasses.replace(base_opts, num_distractors=k, add_cot=True),
                   save_dataset=False)
    records, corpus = prep.records, prep.corpus.records()
    test = select_test(prep.splits["test"], n_examples)
    sets = test_sets(test, corpus, cfg, plan.rag_ks)
    device = choose_device(cfg.model.compute_dtype)
    reuse = _reuse(plan, cfg)
    res = AblationResult(meta={
        "paper": PAPER, "size": cfg.size, "model": resolve_model(cfg.model).model_id, "device": device.line(),
        "seeds": list(plan.seeds), "formats": [f.key for f in formats], "rag_ks": list(plan.rag_ks),
        "num_distractors": k, "oracle_fraction": {f.key: f.oracle_fraction for f in formats},
        "no_oracle_target": cfg.data.no_oracle_target, "max_context_len": cfg.data.max_context_len,
        "max_steps": cfg.train.max_steps, "effective_batch": effective, "learning_rate": cfg.train.learning_rate,
        "warmup_steps": run_config(cfg, formats[0], k, 0, out).train.warmup_steps,
        "max_seq_length": cfg.model.max_seq_length,
        "num_examples": len(test), "test_ids": [ex["id"] for ex in test], "max_new_tokens": answer_cap,
        "max_new_tokens_cot": cot_cap, "metric": plan.metric, "reuse_base": reuse,
        "retrieval_recall": {key: es.retrieval_recall for key, es in sets.items() if es.retrieval_recall is not None},
        "ko_tokenizer": tokenizer_mode(), "platform": platform.platform(), "torch": torch.__version__,
        "out_dir": str(out), "status": "running", "seconds": 0.0})
    res.save(out, plot=False)
    say(f"[ablation] 형식 {len(formats)}개 x 시드 {list(plan.seeds)}, 테스트 질문 {len(test)}개 x 설정 "
        f"{len(sets)}개 ({', '.join(setting_label(s, k) for s in sets)}), 원본 모델 재사용={reuse}")
    t0 = time.perf_counter()
    loaded = load_model(cfg.model, verbose=verbose)
    tok, model = loaded.tokenizer, loaded.model
    load_seconds = time.perf_counter() - t0
    pred_path = out / "predictions.jsonl"
    pred_path.write_text("", encoding="utf-8")
    base_done = False
    for seed in plan.seeds:
        for fmt in formats:
            c = run_config(cfg, fmt, k, seed, out)
            rows = training_examples(records, prep.split_of, prep.corpus, fmt, base_opts, k, seed, limit)
            peft_model, tr = train(model, tok, {"train": rows}, c, resume=False, verbose=False, disable_tqdm=True,
                                   save_strategy="no")
            evaluations = [(BASE, True, answer_cap)] if not base_done else []
            evaluations.append((fmt.key, False, cot_cap if fmt.add_cot else answer_cap))
            eval_seconds = 0.0
            for name, base, cap in evaluations:
                scores, preds, secs = _evaluate(peft_model, tok, sets, cap, batch, base)
                eval_seconds += secs
                for key, m in scores.items():
                    res.rows.append({"format": name, "seed": None if base else seed, "setting": key,
                                     "docs": setting_docs(key, k), **m})
                with open(pred_path, "a", encoding="utf-8") as f:
                    for p in preds:
                        f.write(json.dumps({"format": name, "seed": None if base else seed, **p},
                                           ensure_ascii=False) + "\n")
            base_done = True
            res.runs.append({"format": fmt.key, "seed": seed, "steps": tr.steps, "train_seconds": tr.seconds,
                             "eval_seconds": round(eval_seconds, 1), "final_loss": tr.final_loss,
                             "train_loss": tr.train_loss, "train_examples": len(rows),
                             "without_golden": sum(r["golden_index"] is None for r in rows),
                             "truncated": tr.truncated,
                             "adapter_dir": tr.adapter_dir})
            t0 = time.perf_counter()
            model = release_adapter(peft_model, cfg, reuse)
            del peft_model
            load_seconds += time.perf_counter() - t0
            res.meta["seconds"] = round(time.perf_counter() - t_start, 1)
            res.meta["load_seconds"] = round(load_seconds, 1)
            res.save(out, plot=False)
            m = {key: v for key, v in zip(sets, (r[plan.metric] for r in res.rows[-len(sets):]))}
            loss = f"{tr.final_loss:.3f}" if tr.final_loss is not None else "-"
            say(f"[ablation] 시드 {seed} {fmt.label}: 학습 {tr.steps}스텝 {tr.seconds:.0f}초 (loss {loss}), "
                f"평가 {eval_seconds:.0f}초, {plan.metric} " + " ".join(f"{v:.3f}" for v in m.values())
                + f" | 누적 {res.meta['seconds']:.0f}초")
            if tr.truncated:
                say(f"[ablation] 주의: max_seq_length={cfg.model.max_seq_length}을 넘어 문맥이 잘린 학습 예제 "
                    f"{tr.truncated}개: 형식 차이가 흐려집니다 (AblationPlan.max_seq_length를 늘리세요)")
    res.meta["status"] = "done"
    res.meta["seconds"] = round(time.perf_counter() - t_start, 1)
    res.save(out)
    return res
