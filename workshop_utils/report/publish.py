"""Step 5: save, merge, model card, push to the Hub (only with a token and a reachable Hub)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..runtime.device import GIB
from ..runtime.hub import hf_token, hub_reachable


def merge_memory_gib(num_params: float, dtype: torch.dtype = torch.bfloat16) -> float:
    """RAM needed to merge: the base in 16-bit (merging into 4-bit weights would re-quantize them and
    lose the update's precision), plus the adapter; ~2 bytes/param for bf16/fp16, 4 for fp32."""
    return num_params * (4 if dtype == torch.float32 else 2) / GIB


def merged_model(base_path: str, adapter_dir: str | Path, dtype: torch.dtype = torch.float32, verbose: bool = True):
    """The base loaded in 16/32-bit (not 4-bit) with the adapter merged in (merge_and_unload), in memory."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    n = sum(p.numel() for p in base.parameters())
    if verbose:
        print(f"[merge] 원본을 {str(dtype).replace('torch.', '')}로 로드: 파라미터 {n / 1e6:.0f}M, "
              f"약 {merge_memory_gib(n, dtype):.2f} GiB (EXAONE-7.8B라면 bf16으로 약 "
              f"{merge_memory_gib(7.8e9):.1f} GiB RAM 필요)")
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()


def merge_adapter(base_path: str, adapter_dir: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32,
                  verbose: bool = True) -> Path:
    """Load the base in full precision (not 4-bit), apply the adapter, merge_and_unload, save."""
    from transformers import AutoTokenizer

    merged = merged_model(base_path, adapter_dir, dtype, verbose)
    out = Path(out_dir)
    merged.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(out)
    return out


def model_card(base_model: str, dataset: str, lora: dict, train: dict, metrics: dict | None) -> str:
    """A README.md for the Hub: base model, data, LoRA and training config, metrics."""
    rows = "\n".join(f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |"
                     for k, v in (metrics or {}).items() if v is not None)
    return f"""---
base_model: {base_model}
library_name: peft
tags: [qlora, lora, raft, korean]
language: [ko]
---
# QLoRA adapter (RAFT, Korean)

LoRA adapter trained with QLoRA (4-bit NF4 base + LoRA) on RAFT-format Korean data.

- 베이스 모델 (base model): `{base_model}`
- 데이터 (data): {dataset}
- LoRA: `{json.dumps(lora, ensure_ascii=False)}`
- 학습 (training): `{json.dumps(train, ensure_ascii=False, default=str)}`

## 평가 (evaluation, held-out test split)
| metric | value |
|---|---|
{rows}

## 사용법
```python
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base = AutoModelForCausalLM.from_pretrained("{base_model}")
model = PeftModel.from_pretrained(base, "<this repo>")
```
"""


def push_adapter(adapter_dir: str | Path, repo_id: str | None, card: str, private: bool = True) -> dict:
    """Push when a repo id is given, a token exists and the Hub is reachable; otherwise write the card
    locally and say why. The token is read from the environment/cached login and never printed or stored."""
    adapter_dir = Path(adapter_dir)
    (adapter_dir / "README.md").write_text(card, encoding="utf-8")
    if not repo_id:
        return {"pushed": False, "card": str(adapter_dir / "README.md"),
                "reason": "업로드할 저장소 이름(repo_id, 예: '내아이디/exaone-qlora-finetuned')이 없어 "
                          "업로드하지 않았습니다: 모델 카드는 로컬에 저장했습니다"}
    token = hf_token()
    if token is None:
        return {"pushed": False, "card": str(adapter_dir / "README.md"),
                "reason": "토큰이 없어 업로드하지 않았습니다: `hf auth login` 또는 HF_TOKEN 설정 후 다시 실행하세요"}
    if not hub_reachable():
        return {"pushed": False, "card": str(adapter_dir / "README.md"),
                "reason": "Hub에 접속할 수 없어(오프라인) 업로드하지 않았습니다: 모델 카드는 로컬에 저장했습니다"}
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(adapter_dir), repo_id=repo_id)
    return {"pushed": True, "repo": repo_id, "card": str(adapter_dir / "README.md")}
