"""04 evaluation: what the seed's ROUGE slide counts (words) next to what mecab-ko counts (morphemes)."""
from __future__ import annotations

from collections import Counter

from ..data.text import morphs, whitespace_tokens


def overlap_table(reference: str, prediction: str) -> "list[dict]":
    """Whitespace vs morpheme tokens for one pair: what the seed's ROUGE slide counts vs what mecab
    counts (the seed's Seoul example says 7/8 'words'; those 7 are morphemes)."""
    rows = []
    for name, fn in (("공백 단위 (whitespace)", whitespace_tokens), ("형태소 단위 (mecab-ko)", lambda s: list(morphs(s)))):
        ref, pred = fn(reference), fn(prediction)
        common = Counter(ref) & Counter(pred)
        n = sum(common.values())
        rows.append({"토큰화": name, "참조 토큰": " / ".join(ref), "생성 토큰": " / ".join(pred),
                     "겹침": n, "참조 토큰 수": len(ref), "ROUGE-1 recall": n / len(ref) if ref else 0.0,
                     "겹친 토큰": " / ".join(sorted(common.elements(), key=ref.index))})
    return rows
