"""RAFT conversion: question + golden document + k distractors -> grounded answer (optionally CoT).

Following the RAFT paper (Zhang et al., 2024): each training example puts the golden document among
k distractor documents (default 4) in shuffled order; with probability 1-P (P = 0.8) the golden
document is left out. Distractors are a configurable mix of hard ones (BM25-nearest or same topic:
"near-miss" documents that a careless model confuses) and random ones. Held-out splits always keep
the golden document; the evaluation builds its own settings (golden only / + distractors / RAG).
"""
from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, field

from ..config import NO_ANSWER_TEXT, DataSettings
from .retrieval import BM25Index
from .split import doc_key
from .text import char_ngrams, sentences

QUOTE_RE = re.compile(r"##begin_quote##(.*?)##end_quote##", re.S)
ANSWER_MARK = "<ANSWER>:"
NO_ANSWER_COT = ("##Reason: 주어진 문맥들을 살펴보면 질문에서 묻는 내용을 직접 다루는 문서가 없습니다. "
                 "근거 없이 추측하지 않고 답이 없다고 말해야 합니다. " + ANSWER_MARK + " " + NO_ANSWER_TEXT)


def extract_quotes(cot: str) -> list[str]:
    """The spans a CoT quotes between ##begin_quote## and ##end_quote##."""
    return [q.strip() for q in QUOTE_RE.findall(cot or "") if q.strip()]


def final_answer(text: str) -> str:
    """The answer part of a model output: after the last '<ANSWER>:' when there is a CoT."""
    if ANSWER_MARK in text:
        text = text.rsplit(ANSWER_MARK, 1)[1]
    return text.strip()


@dataclass
class Corpus:
    """Unique documents by key, with topic and title; built from validated records."""

    texts: dict[str, str] = field(default_factory=dict)
    topics: dict[str, str] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return list(self.texts)

    def records(self) -> list[dict]:
        """One dict per document (doc_id, topic, title, text): corpus.jsonl's rows."""
        return [{"doc_id": k, "topic": self.topics[k], "title": self.titles[k], "text": self.texts[k]}
                for k in self.ids]

    @classmethod
    def from_records(cls, records: list[dict]) -> "Corpus":
        c = cls()
        for r in records:
            docs = [r["context"]] if isinstance(r["context"], str) else r["context"]
            key = doc_key(r)
            text = docs[0] if len(docs) == 1 else "\n".join(docs)
            if key in c.texts:
                if c.texts[key] != text:
                    c.conflicts.append(key)
                continue
            c.texts[key] = text
            c.topics[key] = r.get("topic") or ""
            c.titles[key] = r.get("title") or ""
        return c


def evidence_sentences(doc: str, answer: str, cot: str | None = None) -> list[int]:
    """Indices of the sentences that support the answer: those containing a CoT quote, else the
    sentence with the largest character-trigram overlap with the answer."""
    sents = sentences(doc)
    quotes = extract_quotes(cot or "")
    hits = [i for i, s in enumerate(sents) if any(q in s or s in q for q in quotes)]
    if hits:
        return hits
    target = char_ngrams(final_answer(answer).removeprefix("문맥에 따르면"))
    if not target or not sents:
        return [0] if sents else []
    scores = [len(target & char_ngrams(s)) for s in sents]
    return [max(range(len(sents)), key=scores.__getitem__)]


def truncate_document(doc: str, max_chars: int, keep: list[int] | None = None) -> str:
    """Shorten `doc` to about `max_chars` at sentence boundaries, never dropping `keep` sentences.

    The seed's `doc[:max_context_len]` can cut the very sentence that holds the answer; here the
    evidence sentences stay and their neighbours are added while they fit.
    """
    if len(doc) <= max_chars:
        return doc
    sents = sentences(doc)
    if not sents:
        return doc[:max_chars]
    chosen = set(keep or [0])
    length = sum(len(sents[i]) + 1 for i in chosen)
    lo, hi = min(chosen), max(chosen)
    while True:
        grew = False
        for j in (hi + 1, lo - 1):
            if 0 <= j < len(sents) and j not in chosen and length + len(sents[j]) + 1 <= max_chars:
                chosen.add(j)
                length += len(sents[j]) + 1
                lo, hi = min(chosen), max(chosen)
                grew = True
        if not grew:
            break
    return " ".join(sents[i] for i in sorted(chosen))


def auto_cot(doc: str, answer: str) -> str:
    """A RAFT-style CoT for records that have none: quote the evidence sentence, then answer."""
    sents = sentences(doc)
    idx = evidence_sentences(doc, answer)
    quote = " ".join(sents[i] for i in idx) if sents else doc
    return (f"##Reason: 질문에 답하는 근거는 문맥의 ##begin_quote##{quote}##end_quote## 부분입니다. "
            f"{ANSWER_MARK} {answer}")


class DistractorSampler:
    """Picks hard (BM25-nearest or same-topic) and random distractors from a document pool."""

    def __init__(self, corpus: Corpus, opts: DataSettings):
        self.corpus = corpus
        self.opts = opts
        self.by_topic: dict[str, list[str]] = defaultdict(list)
        for k, t in corpus.topics.items():
            self.by_topic[t].append(k)
        self._bm25 = None
        if opts.hard_method == "bm25" and opts.num_distractors > 0 and opts.hard_distractor_fraction > 0:

            self._bm25 = BM25Index.build(corpus.ids, [corpus.texts[k] for k in corpus.ids], opts.bm25_tokens)

    def hard_candidates(self, questions: list[str], goldens: list[str], n: int) -> list[list[str]] | None:
        """BM25: the nearest documents per question (computed in one batch). Topic: None (sampled lazily)."""
        if self._bm25 is None:
            return None
        k = min(len(self.corpus.ids), n + 8)
        hits, _ = self._bm25.search(questions, k)
        return [[h for h in row if h != g] for row, g in zip(hits, goldens)]

    def same_topic(self, gold: str, n: int, pool_set: set, rng: random.Random) -> list[str]:
        """Up to n random same-topic documents from the pool (rejection sampling: O(n), not O(topic))."""
        cands = self.by_topic[self.corpus.topics[gold]]
        out: list[str] = []
        for _ in range(8 * n + 8):
            if len(out) >= n:
                break
            d = cands[rng.randrange(len(cands))]
            if d != gold and d in pool_set and d not in out:
                out.append(d)
        return out


def to_raft(records: list[dict], split_of: dict[str, str], opts: DataSettings,
            corpus: Corpus | None = None) -> dict[str, list[dict]]:
    """Convert canonical records into RAFT examples, grouped by split (train/validation/test); every RAFT
    option (k, P, hard distractors, CoT, ...) comes from the data settings."""
    corpus = corpus or Corpus.from_records(records)
    rng = random.Random(opts.seed)
    train_pool = ([d for d in corpus.ids if split_of.get(d) == "train"]
                  if opts.distractor_pool == "same_split" else corpus.ids)
    pools = {"train": (train_pool, set(train_pool)), "other": (corpus.ids, set(corpus.ids))}
    sampler = DistractorSampler(corpus, opts)
    k = opts.num_distractors
    n_hard = round(k * opts.hard_distractor_fraction)
    goldens = [doc_key(r) for r in records]
    hard = sampler.hard_candidates([r["question"] for r in records], goldens, n_hard) if n_hard else None
    out: dict[str, list[dict]] = {"train": [], "validation": [], "test": []}
    for i, (rec, gold) in enumerate(zip(records, goldens)):
        split = split_of[gold]
        pool, pool_set = pools["train" if split == "train" else "other"]
        if not n_hard:
            chosen: list[str] = []
        elif hard is not None:
            chosen = [h for h in hard[i][: 4 * n_hard + 8] if h in pool_set][:n_hard]
        else:
            chosen = sampler.same_topic(gold, n_hard, pool_set, rng)
        available = len(pool_set) - (gold in pool_set)
        want = min(k, available)
        while len(chosen) < want:  # rejection sampling: O(k) per record, not O(corpus)
            d = pool[rng.randrange(len(pool))]
            if d != gold and d not in chosen:
                chosen.append(d)
        oracle = split != "train" or rng.random() < opts.oracle_fraction
        doc_ids = chosen + ([gold] if oracle else [])
        rng.shuffle(doc_ids)
        answer = rec["answer"]
        cot = rec.get("cot")
        context = []
        for d in doc_ids:
            text = corpus.texts[d]
            keep = evidence_sentences(text, answer, cot) if d == gold and len(text) > opts.max_context_len else None
            context.append(truncate_document(text, opts.max_context_len, keep))
        ex = {
            "id": rec.get("id") or f"rec-{i:06d}",
            "instruction": opts.instruction,
            "context": context,
            "golden_index": doc_ids.index(gold) if oracle else None,
            "doc_ids": doc_ids,
            "golden_doc_id": gold,
            "question": rec["question"],
            "answer": answer,
            "reference_answer": answer,
            "topic": rec.get("topic") or corpus.topics.get(gold, ""),
            "split": split,
        }
        if not oracle and opts.no_oracle_target == "abstain":
            ex["answer"] = NO_ANSWER_TEXT
        if opts.add_cot:
            if not oracle and opts.no_oracle_target == "abstain":
                ex["cot"] = NO_ANSWER_COT
            else:
                ex["cot"] = cot if cot and ANSWER_MARK in cot else auto_cot(corpus.texts[gold], answer)
        out[split].append(ex)
    return out


def target_text(example: dict) -> str:
    """What the model is trained to produce: the CoT when the example has one, else the answer."""
    return example.get("cot") or example["answer"]
