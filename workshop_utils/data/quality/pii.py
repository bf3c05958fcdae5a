"""Personal information (Korean formats: 주민등록번호, phone numbers, accounts, cards, e-mail): find and mask."""
from __future__ import annotations

import re

# --- PII --------------------------------------------------------------------------------------------------
PII_PATTERNS = {
    "주민등록번호": re.compile(r"(?<!\d)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])-?[1-8]\d{6}(?!\d)"),
    "휴대전화": re.compile(r"(?<!\d)01[016789]-?\d{3,4}-?\d{4}(?!\d)"),
    "유선전화": re.compile(r"(?<!\d)0(2|[3-6][1-5])-\d{3,4}-\d{4}(?!\d)"),
    "이메일": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "카드번호": re.compile(r"(?<!\d)\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{4}(?!\d)"),
    "계좌번호": re.compile(r"(?<![\d-])\d{2,6}-\d{2,6}-\d{2,6}(-\d{1,6})?(?![\d-])"),
}


MASKS = {k: f"[{k}]" for k in PII_PATTERNS}


def _is_account(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    if len(digits) < 10:
        return False
    if re.fullmatch(r"(19|20)\d{2}-\d{1,2}-\d{1,2}", s):  # a date
        return False
    return True


def find_pii(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for every PII-looking span; card numbers are not counted as accounts."""
    found: list[tuple[str, str]] = []
    taken: list[tuple[int, int]] = []
    for kind, pat in PII_PATTERNS.items():
        for m in pat.finditer(text):
            span = m.span()
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            if kind == "계좌번호" and not _is_account(m.group(0)):
                continue
            found.append((kind, m.group(0)))
            taken.append(span)
    return found


def mask_pii(text: str) -> str:
    for kind, value in find_pii(text):
        text = text.replace(value, MASKS[kind])
    return text


def scan_pii(records: list[dict], fields: tuple[str, ...] = ("question", "context", "answer")) -> list[dict]:
    hits = []
    for i, r in enumerate(records):
        for f in fields:
            v = r.get(f)
            for t in (v if isinstance(v, list) else [v]):
                if isinstance(t, str):
                    for kind, value in find_pii(t):
                        hits.append({"index": i, "id": r.get("id"), "field": f, "kind": kind, "text": value})
    return hits


def mask_records(records: list[dict], fields: tuple[str, ...] = ("question", "context", "answer", "cot")) -> list[dict]:
    out = []
    for r in records:
        r2 = dict(r)
        for f in fields:
            v = r2.get(f)
            if isinstance(v, str):
                r2[f] = mask_pii(v)
            elif isinstance(v, list):
                r2[f] = [mask_pii(x) for x in v]
        out.append(r2)
    return out
