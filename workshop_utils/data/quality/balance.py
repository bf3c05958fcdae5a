"""Class (topic) balance and what to do about an imbalance."""
from __future__ import annotations

from collections import Counter


# --- balance -----------------------------------------------------------------------------------------------
def balance(records: list[dict], key: str = "topic") -> dict:
    counts = Counter(r.get(key) or "(없음)" for r in records)
    most, least = max(counts.values()), min(counts.values())
    ratio = most / least if least else float("inf")
    if ratio <= 1.5:
        advice = "균형이 양호합니다 (최대/최소 비율 ≤ 1.5)."
    else:
        small = [k for k, v in counts.items() if v < most / 1.5]
        advice = (f"불균형 (최대/최소 {ratio:.1f}배): 적은 클래스 {small}를 오버샘플링하거나 많은 클래스를 "
                  "언더샘플링하고, 분류 작업이면 클래스별 지표도 따로 보세요.")
    return {"counts": dict(counts.most_common()), "ratio": round(ratio, 2), "advice": advice}
