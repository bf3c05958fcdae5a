"""Experiment tracking: TensorBoard (always), W&B (when installed and configured, offline otherwise,
never a blocking login prompt), trackio (when installed and asked for: a local dashboard, nothing
sent anywhere), and the seed's manual experiment log filled in automatically.

The seed's template:
    ## 실험 #001
    - 날짜 / 데이터셋 / 베이스 모델 / LoRA 설정 / 학습 설정 / 결과 / 관찰 / 다음 실험
Each run writes experiments/NNN-<name>.md with that template plus the git commit and the package
versions, so the run can be reproduced.
"""
from __future__ import annotations

import datetime as dt
import importlib.util
import os
import re
import subprocess
from pathlib import Path

from ..config import config_yaml
from ..model.choice import resolve_model
from ..runtime.packages import package_version
from ..runtime.paths import experiments_dir, project_root

VERSION_PACKAGES = ["torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets",
                    "sentence-transformers", "sacrebleu", "workshop-utils"]


def wandb_mode() -> str:
    """'disabled' (not installed / WANDB_DISABLED), the user's WANDB_MODE, 'online' with an API key,
    else 'offline' -- so `wandb.init` never stops a notebook to ask for a login."""
    if package_version("wandb") is None or os.environ.get("WANDB_DISABLED", "").lower() in ("1", "true"):
        return "disabled"
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    if os.environ.get("WANDB_API_KEY") or (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
        return "online"
    return "offline"


def configure_wandb(project: str = "exaone-qlora-raft") -> str:
    """Set the W&B environment for the Trainer's WandbCallback; returns the mode."""
    mode = wandb_mode()
    if mode != "disabled":
        os.environ["WANDB_MODE"] = mode
        os.environ.setdefault("WANDB_PROJECT", project)
        os.environ.setdefault("WANDB_SILENT", "true")
    return mode


TRACKIO_INSTALL = "pip install -e '.[tracking]'"


def trackio_available() -> bool:
    """Whether trackio is installed: transformers' own test (find_spec), minus a bare folder named
    trackio on the path (a namespace package, e.g. a TRACKIO_DIR under the working directory)."""
    try:
        spec = importlib.util.find_spec("trackio")
    except ValueError:
        return False
    return spec is not None and spec.origin is not None


def trackio_dir() -> Path:
    """Where trackio keeps its local database: TRACKIO_DIR, else <HF_HOME>/trackio."""
    from huggingface_hub.constants import HF_HOME

    return Path(os.environ["TRACKIO_DIR"]) if os.environ.get("TRACKIO_DIR") else Path(HF_HOME) / "trackio"


def trackio_dashboard_command(project: str) -> str:
    """The terminal command that opens trackio's local dashboard for a project."""
    return f'trackio show --project "{project}"'


def git_commit(root: Path | None = None) -> str:
    root = root or project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    return {p: package_version(p) or "-" for p in VERSION_PACKAGES}


def next_experiment_number(directory: Path) -> int:
    nums = [int(m.group(1)) for p in directory.glob("*.md") if (m := re.match(r"(\d{3,})-", p.name))]
    return max(nums, default=0) + 1


def fmt(v, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def write_experiment_log(cfg, train_summary: dict, metrics: dict | None, dataset: str, name: str = "run",
                         observation: str = "", next_step: str = "", directory: str | Path | None = None,
                         extra: dict | None = None, config_file: str | Path | None = None) -> Path:
    """Fill the seed's experiment template from a run and write experiments/NNN-<name>.md, with the run's
    resolved settings (`config_file`, else `cfg`) so that it can be repeated with `workshop run --config`."""
    directory = Path(directory) if directory else experiments_dir()
    directory.mkdir(parents=True, exist_ok=True)
    n = next_experiment_number(directory)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    t, lo = cfg.train, cfg.lora
    m = metrics or {}
    lines = [
        f"## 실험 #{n:03d}",
        f"- 날짜: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        f"- 데이터셋: {dataset}",
        f"- 베이스 모델: {base_model_name(cfg, extra)}",
        "- LoRA 설정:",
        f"  * r={lo.r}, alpha={lo.lora_alpha}, dropout={lo.lora_dropout}",
        f"  * target: {', '.join(lo.target_modules)}",
        "- 학습 설정:",
        f"  * epochs={t.num_train_epochs}, max_steps={t.max_steps}, lr={t.learning_rate:g}",
        f"  * batch_size={t.per_device_train_batch_size}, grad_accum={t.gradient_accumulation_steps}, "
        f"optim={t.optim}, size={cfg.size}",
        "- 결과:",
        f"  * ROUGE-1: {fmt(m.get('rouge1'))}",
        f"  * ROUGE-L: {fmt(m.get('rougeL'))}",
        f"  * BLEU: {fmt(m.get('bleu'), 1)}",
        f"  * Cosine: {fmt(m.get('cosine'))}",
        f"  * Train time: {fmt(train_summary.get('seconds'), 0)}s, steps={train_summary.get('steps')}, "
        f"final loss={fmt(train_summary.get('final_loss'))}",
        f"- 관찰: {observation or auto_observation(train_summary)}",
        f"- 다음 실험: {next_step or '한 번에 하나의 하이퍼파라미터만 바꿔 보세요 (예: r=8 또는 epochs 줄이기)'}",
        "",
        "### 재현 정보",
        f"- git commit: {git_commit()}",
        "- 패키지: " + ", ".join(f"{k}=={v}" for k, v in versions().items()),
    ]
    for k, v in (extra or {}).items():
        if k != "model":
            lines.append(f"- {k}: {v}")
    if config_file and Path(config_file).is_file():
        lines += [f"- 다시 실행: workshop run --config {config_file}", "", "### 설정 (config.yaml)", "```yaml",
                  Path(config_file).read_text(encoding="utf-8").rstrip(), "```"]
    else:
        lines += ["", "### 설정 (resolved config)", "```yaml", config_yaml(cfg).rstrip(), "```"]
    path = directory / f"{n:03d}-{slug}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def base_model_name(cfg, extra: dict | None = None) -> str:
    """The model a run trained: given in `extra`, else what cfg resolves to (e.g. 'auto' -> EXAONE or
    the offline model)."""
    if extra and extra.get("model"):
        return str(extra["model"])

    return resolve_model(cfg.model).model_id


def auto_observation(train_summary: dict) -> str:
    diags = train_summary.get("diagnoses") or []
    if diags:
        return " / ".join(d.splitlines()[0].replace("[진단] ", "") for d in diags)
    ev = train_summary.get("eval_loss")
    return f"검증 loss {fmt(ev)}" if ev is not None else "특이사항 없음"
