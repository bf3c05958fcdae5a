"""The Hugging Face Hub: offline mode, reachability, the token (never printed), model access.

`hub_reachable` is the one function that touches the network and it honours HF_HUB_OFFLINE."""
from __future__ import annotations

import functools
import os
import socket


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """Can we reach huggingface.co? False at once when HF_HUB_OFFLINE is set."""
    if is_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def hf_token() -> str | None:
    """The Hugging Face token from the environment or the cached login (never print it)."""
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # noqa: BLE001 - any failure means "no token"
        return None


def model_access(model_id: str, token: str | None) -> tuple[bool, str]:
    try:
        from huggingface_hub import HfApi

        info = HfApi().model_info(model_id, token=token)
        return True, f"접근 가능 (gated={getattr(info, 'gated', False)})"
    except Exception as err:  # noqa: BLE001 - report any failure as "no access"
        return False, f"{type(err).__name__}"
