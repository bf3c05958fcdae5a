"""Schema validation: map raw fields to the canonical record, check presence, types and lengths.

Every raw record ends up either kept or rejected (read = kept + rejected, always). A reject carries
source file, line/row, field, a reason code and a message, and is written to rejects.jsonl.

Canonical record fields: question, context (str or list of str), answer; optional id, doc_id,
topic, title, cot, type.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..runtime.errors import WorkshopError
from .io import RawRecord
from .jsonl import write_jsonl
from .normalize import normalize_record

REQUIRED = ("question", "context", "answer")
OPTIONAL = ("id", "doc_id", "topic", "title", "cot", "type")
# Raw field names accepted for each canonical field (the seed's raw schema is {"q", "doc", "a"}).
ALIASES: dict[str, tuple[str, ...]] = {
    "question": ("question", "q", "query", "질문"),
    "context": ("context", "doc", "document", "documents", "passage", "문맥", "문서"),
    "answer": ("answer", "a", "response", "답변", "정답"),
    "id": ("id", "qa_id", "uid"),
    "doc_id": ("doc_id", "document_id", "docid"),
    "topic": ("topic", "category", "domain", "주제"),
    "title": ("title", "제목"),
    "cot": ("cot", "reasoning", "rationale"),
    "type": ("type",),
}

REASONS = {
    "malformed_json": "JSON 문법 오류로 읽을 수 없음",
    "malformed_csv": "CSV 행 구조 오류",
    "not_an_object": "레코드가 객체(dict)가 아님",
    "undecodable_bytes": "인코딩을 해석할 수 없는 바이트",
    "missing_field": "필수 필드 없음",
    "wrong_type": "필드 타입이 잘못됨",
    "empty": "빈 값 / None / 공백뿐",
    "too_short": "텍스트가 너무 짧음",
    "too_long": "텍스트가 너무 김",
    "duplicate": "앞 레코드와 완전히 같은 (질문, 문맥, 답변)",
}


@dataclass
class Reject:
    source: str
    locator: str
    field: str | None
    reason: str
    message: str
    record_id: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "locator": self.locator, "field": self.field,
                "reason": self.reason, "message": self.message, "record_id": self.record_id}


@dataclass
class Record:
    """A validated, canonical record plus its origin."""

    data: dict
    source: str
    locator: str

    @property
    def where(self) -> str:
        return f"{self.source} {self.locator}"


@dataclass
class ValidationReport:
    kept: list[Record] = field(default_factory=list)
    rejected: list[Reject] = field(default_factory=list)
    normalization: Counter = field(default_factory=Counter)

    @property
    def read(self) -> int:
        return len(self.kept) + len(self.rejected)

    def by_reason(self) -> dict[str, int]:
        return dict(Counter(r.reason for r in self.rejected).most_common())

    def summary(self):
        """DataFrame: reason code, Korean description, count (the notebook's 오류 유형별 개수)."""
        import pandas as pd

        rows = [{"reason": k, "설명": REASONS.get(k, ""), "count": v} for k, v in self.by_reason().items()]
        return pd.DataFrame(rows, columns=["reason", "설명", "count"])

    def normalization_summary(self):
        import pandas as pd

        rows = [{"field": k.split(":")[0], "change": k.split(":")[1], "records": v}
                for k, v in sorted(self.normalization.items())]
        return pd.DataFrame(rows, columns=["field", "change", "records"])

    def write_rejects(self, path: str | Path) -> Path:
        return write_jsonl(path, (r.to_dict() for r in self.rejected))


def resolve_mapping(columns: Iterable[str], mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """canonical field -> raw column, from an explicit mapping or the known aliases."""
    cols = list(columns)
    out: dict[str, str] = {}
    if mapping:
        unknown = set(mapping) - set(REQUIRED) - set(OPTIONAL)
        if unknown:
            raise WorkshopError(f"매핑에 알 수 없는 필드 (unknown canonical fields): {sorted(unknown)}; "
                             f"허용: {list(REQUIRED + OPTIONAL)}")
        out.update(mapping)
    lower = {c.lower(): c for c in cols}
    for canon, names in ALIASES.items():
        if canon in out:
            continue
        for n in names:
            if n in lower:
                out[canon] = lower[n]
                break
    return out


def _check_structure(raw: RawRecord, mapping: Mapping[str, str] | None) -> tuple[dict | None, Reject | None]:
    def reject(fld: str | None, reason: str, msg: str, rid: Any = None) -> tuple[None, Reject]:
        return None, Reject(raw.source, raw.locator, fld, reason, msg, None if rid is None else str(rid))

    if raw.error:
        return reject(None, raw.error, raw.message)
    src = raw.data
    m = resolve_mapping(src.keys(), mapping)
    rid = src.get(m["id"]) if "id" in m else None
    rec: dict[str, Any] = {}
    for canon in REQUIRED:
        col = m.get(canon)
        if col is None or col not in src:
            expected = mapping[canon] if mapping and canon in mapping else "/".join(ALIASES[canon][:3])
            return reject(canon, "missing_field",
                          f"record {rid or '?'} ({raw.where}): 필수 필드 '{canon}' 없음 (expected column '{expected}')", rid)
        value = src[col]
        if value is None:
            return reject(canon, "empty", f"record {rid or '?'} ({raw.where}): 필드 '{canon}'가 None/null", rid)
        if canon == "context":
            ok = isinstance(value, str) or (isinstance(value, list) and value and all(isinstance(v, str) for v in value))
            want = "str 또는 list[str]"
        else:
            ok = isinstance(value, str)
            want = "str"
        if not ok:
            return reject(canon, "wrong_type",
                          f"record {rid or '?'} ({raw.where}): 필드 '{canon}'는 {want}이어야 함 "
                          f"(got {type(value).__name__}: {str(value)[:30]!r})", rid)
        rec[canon] = value
    for canon in OPTIONAL:
        col = m.get(canon)
        if col is not None and col in src and src[col] not in (None, ""):
            v = src[col]
            rec[canon] = v if isinstance(v, str) else str(v)
    return rec, None


def _check_content(rec: dict, raw: RawRecord, min_len: int, max_len: int) -> Reject | None:
    rid = rec.get("id")
    for canon in REQUIRED:
        values = rec[canon] if isinstance(rec[canon], list) else [rec[canon]]
        for i, v in enumerate(values):
            label = canon if len(values) == 1 else f"{canon}[{i}]"
            if not v.strip():
                return Reject(raw.source, raw.locator, canon, "empty",
                              f"record {rid or '?'} ({raw.where}): 필드 '{label}'가 비어 있음 (정규화 후)", rid)
            if len(v) < min_len:
                return Reject(raw.source, raw.locator, canon, "too_short",
                              f"record {rid or '?'} ({raw.where}): 필드 '{label}' 길이 {len(v)} < {min_len}: {v!r}", rid)
            if len(v) > max_len:
                return Reject(raw.source, raw.locator, canon, "too_long",
                              f"record {rid or '?'} ({raw.where}): 필드 '{label}' 길이 {len(v)} > {max_len}", rid)
    return None


def validate(raw_records: Iterable[RawRecord], mapping: Mapping[str, str] | None = None,
             min_length: int = 5, max_length: int = 2048, normalize: bool = True,
             drop_exact_duplicates: bool = True) -> ValidationReport:
    """Schema check -> normalization -> content check (empty/length) -> exact-duplicate check.

    Lengths are checked after normalization on purpose: NFD Hangul inflates the character count and
    zero-width characters make an empty string look non-empty.
    """
    report = ValidationReport()
    seen: dict[tuple, str] = {}
    for raw in raw_records:
        rec, rej = _check_structure(raw, mapping)
        if rej:
            report.rejected.append(rej)
            continue
        if normalize:
            rec, counts = normalize_record(rec)
            report.normalization.update(counts)
        rej = _check_content(rec, raw, min_length, max_length)
        if rej:
            report.rejected.append(rej)
            continue
        if drop_exact_duplicates:
            ctx = rec["context"] if isinstance(rec["context"], str) else "\n".join(rec["context"])
            key = (rec["question"], ctx, rec["answer"])
            if key in seen:
                report.rejected.append(Reject(raw.source, raw.locator, "question", "duplicate",
                                              f"record {rec.get('id', '?')} ({raw.where}): {seen[key]}와 완전히 같음",
                                              rec.get("id")))
                continue
            seen[key] = f"record {rec.get('id', '?')} ({raw.where})"
        report.kept.append(Record(rec, raw.source, raw.locator))
    return report
