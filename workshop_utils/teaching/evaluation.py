"""04 evaluation: what the seed's ROUGE slide counts (words) next to what mecab-ko counts (morphemes); the seed's
`evaluate.load("rouge")` tried for real; the seed's cosine example recomputed with the seed's own model."""
from __future__ import annotations

from collections import Counter

from ..data.embeddings import MULTILINGUAL_EMBEDDING, cosine_similarities
from ..data.text import morphs, whitespace_tokens
from ..evaluate.metrics import rouge
from ..runtime.hub import hub_reachable

SEED_COSINE_REFERENCE = "서울의 인구는 약 천만 명입니다"
SEED_COSINE_PAIRS = [  # (compared sentence, relation, the slide's number)
    ("수도 서울에는 대략 1000만 명이 살고 있습니다", "슬라이드 예시 (같은 의미)", 0.892),
    ("부산의 대표 음식은 돼지국밥입니다", "다른 의미", None),
    ("법인카드로 골프장에서 결제할 수 있나요?", "다른 의미", None),
]


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


def seed_evaluate_rouge(text: str) -> dict:
    """The seed-era `evaluate.load("rouge")`, tried for real, next to the workshop's `rouge` on the same identical
    pair. Offline the load fails (the metric's code is downloaded from the Hub) and the message is returned; online
    it loads, and rouge-score's default tokenizer gives the identical Korean pair 0."""
    ours = {k: v for k, v in rouge([text], [text])[0].items() if k in ("rouge1", "rouge2", "rougeL")}
    try:
        import evaluate as hf_evaluate  # Hugging Face's `evaluate` (optional): only this demonstration uses it
    except ImportError:
        return {"loaded": False, "workshop": ours,
                "message": "evaluate 패키지가 설치되어 있지 않습니다 (pip install evaluate): 설치해도 지표 코드는 Hub에서 받습니다"}
    try:
        metric = hf_evaluate.load("rouge")
    except Exception as err:  # offline: FileNotFoundError/ConnectionError from the Hub lookup
        return {"loaded": False, "workshop": ours,
                "message": f'evaluate.load("rouge") 실패 ({type(err).__name__}): {err}\n'
                           "→ 지표 코드를 Hugging Face Hub에서 내려받아야 하는데 접속할 수 없습니다 (오프라인)"}
    scores = {k: round(float(v), 3) for k, v in metric.compute(predictions=[text], references=[text]).items()}
    return {"loaded": True, "workshop": ours,
            "message": f'evaluate.load("rouge") 성공 (Hub 접속됨). 완전히 같은 한국어 문장의 점수: {scores} '
                       "← 기본 토크나이저가 한글을 지워 0점"}


def seed_cosine_table(reference: str = SEED_COSINE_REFERENCE, pairs=SEED_COSINE_PAIRS) -> "list[dict]":
    """The slide's cosine example recomputed with the slide's own model (all-MiniLM-L6-v2, packaged, offline) next
    to the slide's 0.892, for the slide's pair and unrelated Korean sentences; and the multilingual model's scores
    when the Hub is reachable."""
    sentences = [p[0] for p in pairs]
    seed_model, _ = cosine_similarities(sentences, [reference] * len(pairs), model="offline", verbose=False)
    multi = (cosine_similarities(sentences, [reference] * len(pairs), model=MULTILINGUAL_EMBEDDING, verbose=False)[0]
             if hub_reachable() else [None] * len(pairs))
    return [{"참조": reference, "비교 문장": s, "관계": rel, "슬라이드": slide if slide is not None else "",
             "all-MiniLM-L6-v2 (슬라이드의 모델)": round(a, 3),
             "다국어 모델": round(b, 3) if b is not None else "Hub 접속 필요 (오프라인)"}
            for (s, rel, slide), a, b in zip(pairs, seed_model, multi)]
