"""Text normalization for Korean QA data, reporting what changed.

Order matters: HTML entities first (they can hide spaces and control characters), then Unicode NFC
(NFD Hangul looks identical but is 2-3 code points per syllable), then control/format characters,
full-width ASCII, and whitespace.
"""
from __future__ import annotations

import html
import re
import unicodedata
from collections import Counter

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_ENTITY = re.compile(r"&(#\d+|#x[0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]{1,31});")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")
# Full-width ASCII forms (U+FF01..U+FF5E) map to ASCII; other compatibility characters (①, ㈜)
# keep their meaning, so this is narrower than NFKC on purpose.
_FULLWIDTH = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}


def _is_removable(ch: str) -> bool:
    if ch in "\n\t":
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cf", "Cs", "Co") or (cat == "Cn" and (ord(ch) & 0xFFFE) == 0xFFFE)


def normalize_text(text: str, multiline: bool = False) -> tuple[str, set[str]]:
    """Return the normalized text and the set of change kinds applied."""
    changes: set[str] = set()
    out = text
    if _ENTITY.search(out):
        unescaped = html.unescape(out)
        if unescaped != out:
            changes.add("html_entities")
            out = unescaped
    nfc = unicodedata.normalize("NFC", out)
    if nfc != out:
        changes.add("unicode_nfc")
        out = nfc
    if "\ufeff" in out:
        changes.add("bom")
        out = out.replace("\ufeff", "")
    no_ansi = _ANSI.sub("", out)
    cleaned = "".join(ch for ch in no_ansi if not _is_removable(ch))
    if cleaned != out:
        changes.add("control_chars")
        out = cleaned
    folded = out.translate(_FULLWIDTH)
    if folded != out:
        changes.add("fullwidth")
        out = folded
    ws = out.replace("\r\n", "\n").replace("\r", "\n")
    if multiline:
        ws = "\n".join(_SPACES.sub(" ", ln).strip() for ln in ws.split("\n"))
        ws = _BLANK_LINES.sub("\n\n", ws).strip()
    else:
        ws = _SPACES.sub(" ", ws.replace("\n", " ")).strip()
    if ws != out:
        changes.add("whitespace")
        out = ws
    return out, changes


def normalize_record(rec: dict, text_fields: tuple[str, ...] = ("question", "answer", "cot", "title"),
                     multiline_fields: tuple[str, ...] = ("context",)) -> tuple[dict, Counter]:
    """Normalize the text fields of one canonical record (context may be a list of documents)."""
    out = dict(rec)
    counts: Counter = Counter()
    for key in text_fields + multiline_fields:
        value = out.get(key)
        multi = key in multiline_fields
        if isinstance(value, str):
            out[key], ch = normalize_text(value, multi)
            counts.update(f"{key}:{c}" for c in ch)
        elif isinstance(value, list):
            new = []
            for item in value:
                item2, ch = normalize_text(item, multi)
                counts.update(f"{key}:{c}" for c in ch)
                new.append(item2)
            out[key] = new
    return out, counts
