"""Korean tokenization shared by metrics, retrieval and quality checks.

Korean words (어절) glue particles and endings to stems ("인구는" = 인구 + 는), so whitespace tokens
under-count overlap. We use mecab-ko (the same analyzer sacrebleu's ko-mecab tokenizer uses, shipped
on PyPI with its dictionary) and keep Latin words and numbers as they are.
"""
from __future__ import annotations

import functools
import re
import unicodedata

from ..config import ko_tokenizer_mode

_PUNCT = re.compile(r"^[\W_]+$")


@functools.lru_cache(maxsize=1)
def _tagger():
    import mecab_ko

    return mecab_ko.Tagger("-Owakati")


def tokenizer_mode() -> str:
    """'mecab' (default) or 'whitespace' (WORKSHOP_KO_TOKENIZER=whitespace, e.g. on a machine where the
    106 MB mecab-ko dictionary cannot be installed; metrics are then NOT comparable to mecab ones)."""
    return ko_tokenizer_mode()


@functools.lru_cache(maxsize=65536)
def morphs(text: str, drop_punct: bool = True) -> tuple[str, ...]:
    """Morpheme tokens of `text` (NFC, lower-cased Latin); punctuation dropped by default."""
    if tokenizer_mode() == "whitespace":
        return tuple(whitespace_tokens(text))
    text = unicodedata.normalize("NFC", text).lower()
    toks = _tagger().parse(text).split()
    if drop_punct:
        toks = [t for t in toks if not _PUNCT.match(t)]
    return tuple(toks)


def whitespace_tokens(text: str) -> list[str]:
    """Whitespace tokens with surrounding punctuation removed (what the seed's slide counts)."""
    out = []
    for w in unicodedata.normalize("NFC", text).lower().split():
        w = w.strip(".,!?\"'()[]")
        if w:
            out.append(w)
    return out


def char_ngrams(text: str, n: int = 3) -> set[str]:
    """Character n-grams with spaces removed: robust shingles for Korean near-duplicate detection."""
    s = re.sub(r"\s+", "", unicodedata.normalize("NFC", text).lower())
    if len(s) <= n:
        return {s} if s else set()
    return {s[i:i + n] for i in range(len(s) - n + 1)}


def char_ngrams_list(text: str, n: int = 2) -> list[str]:
    """Character n-grams in order (with repeats), spaces removed: BM25 tokens without an analyzer."""
    s = re.sub(r"\s+", "", unicodedata.normalize("NFC", text).lower())
    return [s[i:i + n] for i in range(max(1, len(s) - n + 1))] if s else []


SENTENCE_END = re.compile(r"(?<=[.!?。])\s+")


def sentences(text: str) -> list[str]:
    """Split Korean prose into sentences at . ! ? followed by whitespace."""
    return [s.strip() for s in SENTENCE_END.split(text.strip()) if s.strip()]
