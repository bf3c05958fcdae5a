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


def _removable_class() -> re.Pattern:
    """One regex for every control (Cc), format (Cf), surrogate (Cs), private-use (Co) character and
    the noncharacters U+xxFFFE/U+xxFFFF, except newline and tab: a per-character Python loop would
    dominate normalization time on 100k records."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x10000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        bad = (cat in ("Cc", "Cf", "Cs", "Co") or (cp & 0xFFFE) == 0xFFFE) and ch not in "\n\t"
        if bad:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))
    ranges += [(0xE0000, 0xE007F), (0xF0000, 0x10FFFF)]  # tags, supplementary private use
    parts = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{parts}]")


_REMOVABLE = _removable_class()


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
    cleaned = _REMOVABLE.sub("", no_ansi)
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
