"""Every quality check in one report (notebook 02, `workshop quality`), the filter it suggests, and the
seed's data-preparation checklist (notebook 05)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..prepare import PrepareResult
from .balance import balance
from .duplicates import NearDuplicate, embedding_near_duplicates, exact_duplicates, near_duplicates
from .grounding import answer_quality
from .lengths import length_stats, token_lengths, truncation_table
from .pii import mask_records, scan_pii


# --- the report ------------------------------------------------------------------------------------------
@dataclass
class QualityReport:
    n: int
    exact: list[list[int]]
    near: list[NearDuplicate]
    weakest: list[dict]
    lengths: dict
    truncation: list[dict]
    balance: dict
    pii: list[dict]
    embedding: list[NearDuplicate] = field(default_factory=list)
    embedding_model: str | None = None
    removed: list[int] = field(default_factory=list)
    token_counts: np.ndarray | None = None  # per-record sequence lengths behind `lengths`

    def summary(self) -> dict:
        return {"records": self.n, "exact_duplicate_groups": len(self.exact), "near_duplicate_pairs": len(self.near),
                "embedding_near_duplicate_pairs": len(self.embedding), "weak_grounding":
                sum(1 for w in self.weakest if w["groundedness"] < 0.5 or w["quote_ok"] is False),
                "pii_hits": len(self.pii), "token_length": self.lengths, "topic_balance": self.balance,
                "removed_by_filter": len(self.removed)}


def check_quality(records: list[dict], tokenizer=None, embedding_sample: int = 0, near_threshold: float = 0.7,
                  fields: tuple[str, ...] = ("question", "answer")) -> QualityReport:
    """Run every check on RAFT (or canonical) records. Near duplicates compare question + answer by
    default: two near-identical questions with different answers (e.g. the same question for two
    countries) are different facts, not duplicates to drop."""
    exact = exact_duplicates(records, tuple(dict.fromkeys(fields + ("answer",))))
    near = near_duplicates(records, fields, near_threshold)
    lengths = token_lengths(tokenizer, records) if tokenizer is not None and records and "instruction" in records[0] else None
    emb, emb_name = ([], None)
    if embedding_sample:
        emb, emb_name = embedding_near_duplicates(records, embedding_sample, fields=fields)
    dup_later = {j for g in exact for j in g[1:]} | {p.j for p in near}
    return QualityReport(
        n=len(records), exact=exact, near=near, weakest=answer_quality(records),
        lengths=length_stats(lengths) if lengths is not None else {},
        truncation=truncation_table(lengths) if lengths is not None else [],
        balance=balance(records), pii=scan_pii(records), embedding=emb, embedding_model=emb_name,
        removed=sorted(dup_later), token_counts=lengths)


def filter_records(records: list[dict], report: QualityReport, mask: bool = True) -> list[dict]:
    """Drop exact and near duplicates (keeping the first), mask PII."""
    drop = set(report.removed)
    kept = [r for i, r in enumerate(records) if i not in drop]
    return mask_records(kept) if mask else kept


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
                               f"골든 + 방해 문서 {s['settings']['num_distractors']}개, P={s['settings']['oracle_fraction']}"))
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
