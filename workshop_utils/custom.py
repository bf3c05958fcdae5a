"""Bring your own data (05): one declared column mapping, then the same pipeline, plus the seed's
data-preparation checklist evaluated on the data.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from .config import DataSettings, WorkshopConfig
from .data.prepare import PrepareResult, prepare


@dataclass
class ChecklistItem:
    number: int
    title: str
    ok: bool
    detail: str
    advice: str = ""

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        tail = f"  → {self.advice}" if not self.ok and self.advice else ""
        return f"{mark} {self.number}. {self.title}: {self.detail}{tail}"


def prepare_custom(paths: Sequence[str | Path], mapping: Mapping[str, str], out_dir: str | Path,
                   settings: DataSettings | None = None, splits_file: str | Path | None = None) -> PrepareResult:
    """The shipped pipeline on your files: `mapping` says which column is question/context/answer
    (and optionally id, doc_id, topic, title, cot). Without a splits file the documents are split
    deterministically by hash, so no document's questions land in two splits."""
    return prepare(paths, out_dir, settings or DataSettings(), mapping=mapping, splits_file=splits_file)


def data_checklist(prep: PrepareResult, quality_summary: dict, min_size: int = 500,
                   source_note: str | None = None) -> list[ChecklistItem]:
    """The seed's 데이터 준비 체크리스트 (1-6), evaluated on prepared data and its quality report."""
    s = prep.summary
    n = s["kept"]
    items = [ChecklistItem(1, "충분한 데이터 양 확보", n >= min_size, f"{n}개 (권장 {min_size}개 이상, 이상적 1,000~10,000)",
                           "데이터를 더 모으거나 질문 바꿔 쓰기(paraphrase) 등 증강을 고려하세요")]
    issues = (quality_summary.get("exact_duplicate_groups", 0) + quality_summary.get("near_duplicate_pairs", 0)
              + quality_summary.get("weak_grounding", 0))
    rej = s["rejected"]
    items.append(ChecklistItem(2, "품질 검증 수행", rej == 0 and issues == 0,
                               f"검증 거부 {rej}개, 중복/근사 중복/근거 약함 {issues}건",
                               "rejects.jsonl과 품질 보고서의 목록을 수동 검토하세요"))
    bal = quality_summary.get("topic_balance", {})
    ratio = bal.get("ratio", 1.0)
    items.append(ChecklistItem(3, "균형잡힌 분포 확인", ratio <= 3.0, f"주제 최대/최소 비율 {ratio}",
                               bal.get("advice", "")))
    splits = s["splits"]
    items.append(ChecklistItem(4, "RAFT 포맷 변환 완료", splits["train"] > 0,
                               f"골든 + 방해 문서 {s['raft']['num_distractors']}개, P={s['raft']['oracle_fraction']}"))
    val_ok = splits["validation"] > 0 and splits["test"] > 0
    total = sum(splits.values()) or 1
    shared = split_leakage(prep.splits)
    items.append(ChecklistItem(5, "Train/Validation 분할", val_ok and not shared,
                               f"train {splits['train']} / validation {splits['validation']} / test {splits['test']} "
                               f"({splits['train'] / total:.0%} 학습), 문서 단위 분할 ({s['split_assignment']}), "
                               f"여러 분할에 걸친 문서 {len(shared)}개",
                               "문서 수가 너무 적으면 검증/테스트 세트가 비어 있을 수 있습니다. 같은 문서가 학습과 "
                               "평가에 함께 있으면 점수가 부풀려집니다: 문서 단위로 나누세요"))
    pii = quality_summary.get("pii_hits", 0)
    items.append(ChecklistItem(6, "윤리적·법적 문제 검토", pii == 0 and bool(source_note),
                               f"개인정보 의심 {pii}건, 출처/라이선스 기록: {source_note or '없음'}",
                               "PII를 마스킹(mask_pii)하고 데이터 출처·라이선스를 기록하세요"))
    return items


def split_leakage(splits: dict[str, list[dict]]) -> list[str]:
    """Golden documents that appear in more than one split (train vs validation/test leakage)."""
    seen: dict[str, set[str]] = {}
    for name, rows in splits.items():
        for r in rows:
            seen.setdefault(r["golden_doc_id"], set()).add(name)
    return sorted(d for d, names in seen.items() if len(names) > 1)


def total_steps(cfg: WorkshopConfig, n_train: int, world_size: int = 1) -> int:
    """Optimizer steps of one run: max_steps, else epochs x ceil(batches / grad_accum) (as the Trainer counts)."""
    t = cfg.train
    if t.max_steps > 0:
        return t.max_steps
    batches = math.ceil(n_train / (t.per_device_train_batch_size * world_size))
    return max(1, math.ceil(t.num_train_epochs * max(1, math.ceil(batches / t.gradient_accumulation_steps))))


def fit_schedule(cfg: WorkshopConfig, n_train: int, evals: int = 4, world_size: int = 1) -> tuple[WorkshopConfig, list[dict]]:
    """Scale the step-based settings of a large data set (warmup 100 steps, evaluate/save every 500) to a
    small one: a warmup of half the run or more becomes a 10% ratio, a run with fewer than two evaluations
    gets about `evals` of them (checkpoints on the same steps, as early stopping needs), and the loss is
    logged about 10 times. Returns a copy of cfg and the rows of what changed (none when it already fits)."""
    c = copy.deepcopy(cfg)
    t = c.train
    total = total_steps(c, n_train, world_size)
    rows: list[dict] = []

    def change(name: str, value, why: str) -> None:
        rows.append({"설정": f"train.{name}", "전": getattr(t, name), "후": value, "이유": why})
        setattr(t, name, value)

    if t.warmup_steps >= 1 and t.warmup_steps >= total / 2:
        change("warmup_steps", 0.1, f"전체 {total} 스텝 중 {t.warmup_steps:g} 스텝이 웜업: 비율 0.1 (10%)로")
    if t.eval_steps > 0 and t.eval_steps > total / 2:
        every = max(1, total // evals)
        change("eval_steps", every, f"{t.eval_steps} 스텝마다 평가하면 {total} 스텝 동안 검증 loss가 거의 없음")
        change("save_steps", every, "체크포인트를 평가와 같은 스텝에 (early stopping의 best model 복원에 필요)")
    if t.logging_steps > max(1, total // 10):
        change("logging_steps", max(1, total // 10), "학습 곡선에 점이 10개쯤 찍히도록")
    return c, rows
