"""Evaluation metrics that are right for Korean.

- ROUGE: the `rouge-score` package's default tokenizer keeps only [a-z0-9], so it deletes Hangul and
  two identical Korean strings score 0. We give it a mecab-ko morpheme tokenizer instead.
- BLEU: sacrebleu with tokenize="ko-mecab" (sacrebleu[ko]); 0-100, with its signature. We do not
  use `evaluate.load(...)`, which downloads metric code from the Hub.
- Cosine: sentence-transformers embeddings. A multilingual model when the Hub is reachable; offline,
  the packaged English-only all-MiniLM-L6-v2 (its Korean scores are weak: a stand-in, said so).
- EM / F1: KorQuAD-style (normalized exact match; character-level F1 without spaces).
"""
from __future__ import annotations

import functools
import re
import string
import unicodedata
from collections import Counter

import numpy as np

from ..data.embeddings import cosine_similarities
from ..data.text import morphs, tokenizer_mode, whitespace_tokens


class MorphemeTokenizer:
    """rouge_score-compatible tokenizer: mecab-ko morphemes, Latin/digits kept, punctuation dropped."""

    def tokenize(self, text: str) -> list[str]:
        return list(morphs(text))


class WhitespaceTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return whitespace_tokens(text)


@functools.lru_cache(maxsize=4)
def _rouge_scorer(tokenizer: str):
    from rouge_score import rouge_scorer

    tok = {"mecab": MorphemeTokenizer(), "whitespace": WhitespaceTokenizer(), "default": None}[tokenizer]
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=tok)


def rouge(predictions: list[str], references: list[str], tokenizer: str = "mecab") -> tuple[dict, list[dict]]:
    """Mean ROUGE-1/2/L F1 (+ precision/recall) and per-example scores."""
    scorer = _rouge_scorer(tokenizer)
    per = []
    for p, r in zip(predictions, references):
        s = scorer.score(r, p)  # rouge_score takes (target, prediction)
        per.append({f"{k}{suffix}": getattr(v, attr) for k, v in s.items()
                    for suffix, attr in (("", "fmeasure"), ("_precision", "precision"), ("_recall", "recall"))})
    agg = {k: float(np.mean([e[k] for e in per])) if per else 0.0 for k in (per[0] if per else {})}
    return agg, per


def bleu(predictions: list[str], references: list[str], tokenize: str = "ko-mecab") -> tuple[dict, list[float]]:
    """Corpus BLEU (0-100) with its signature, precisions, brevity penalty; plus sentence BLEU."""
    import sacrebleu

    if tokenize == "ko-mecab" and tokenizer_mode() == "whitespace":
        tokenize = "13a"
    metric = sacrebleu.metrics.BLEU(tokenize=tokenize)
    corpus = metric.corpus_score(predictions, [references])
    sent_metric = sacrebleu.metrics.BLEU(tokenize=tokenize, effective_order=True)
    per = [sent_metric.sentence_score(p, [r]).score for p, r in zip(predictions, references)]
    return {"bleu": corpus.score, "bleu_precisions": list(corpus.precisions), "bleu_bp": corpus.bp,
            "bleu_signature": str(metric.get_signature())}, per


def _normalize_answer(s: str) -> str:
    s = unicodedata.normalize("NFC", s).lower()
    s = re.sub(r"[%s‘’“”·…]" % re.escape(string.punctuation), " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(_normalize_answer(prediction) == _normalize_answer(reference))


def char_f1(prediction: str, reference: str) -> float:
    """KorQuAD 1.0 F1: character-level overlap of the normalized strings, spaces removed."""
    p = list(_normalize_answer(prediction).replace(" ", ""))
    r = list(_normalize_answer(reference).replace(" ", ""))
    common = Counter(p) & Counter(r)
    same = sum(common.values())
    if not p or not r or same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(r)
    return 2 * prec * rec / (prec + rec)


# --- the public entry --------------------------------------------------------------------------------
def compute_metrics(predictions: list[str], references: list[str], rouge_tokenizer: str = "mecab",
                    bleu_tokenize: str = "ko-mecab", embedding_model: str | None = "auto",
                    verbose: bool = True) -> dict:
    """All metrics for parallel lists of predictions and references.

    Returns rouge1/rouge2/rougeL (F1) with *_precision/*_recall, bleu (0-100) with signature,
    cosine (or None when embedding_model is None), exact_match, f1, n, and `per_example` rows.
    """
    if len(predictions) != len(references):
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) differ in length")
    if not predictions:
        raise ValueError("평가할 예측이 없습니다 (no predictions)")
    bad = [i for i, p in enumerate(predictions) if not isinstance(p, str)]
    if bad:
        raise TypeError(f"prediction {bad[0]} is {type(predictions[bad[0]]).__name__}, expected str")
    out: dict = {"n": len(predictions)}
    r_agg, r_per = rouge(predictions, references, rouge_tokenizer)
    out.update(r_agg)
    b_agg, b_per = bleu(predictions, references, bleu_tokenize)
    out.update(b_agg)
    ems = [exact_match(p, r) for p, r in zip(predictions, references)]
    f1s = [char_f1(p, r) for p, r in zip(predictions, references)]
    out["exact_match"] = float(np.mean(ems))
    out["f1"] = float(np.mean(f1s))
    cos: list[float | None] = [None] * len(predictions)
    if embedding_model:
        cos, name = cosine_similarities(predictions, references, embedding_model, verbose)
        out["cosine"] = float(np.mean(cos))
        out["embedding_model"] = name
    else:
        out["cosine"] = None
    out["per_example"] = [
        {"rouge1": rp["rouge1"], "rouge2": rp["rouge2"], "rougeL": rp["rougeL"], "bleu": bp,
         "cosine": c, "exact_match": e, "f1": f}
        for rp, bp, c, e, f in zip(r_per, b_per, cos, ems, f1s)]
    return out


# The headline metrics in table order, with their labels: every table, plot, report and summary uses this.
METRIC_LABELS = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "bleu": "BLEU",
                 "cosine": "Cosine Similarity", "exact_match": "Exact Match", "f1": "F1 (문자)"}
HEADLINE = tuple(METRIC_LABELS)


def headline(metrics: dict) -> dict:
    return {k: metrics.get(k) for k in HEADLINE}
