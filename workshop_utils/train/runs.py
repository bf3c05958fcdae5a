"""Run directories: every training run gets its own folder, and nothing replaces a run without a flag.

    <build>/runs/<train.output_dir name>/               one folder per configuration name (e.g. smoke-qlora)
        20261129-213045-a1b2c3/                          one run: <start time>-<identity>
            run.json  config.yaml  checkpoint-N/  runs/ (TensorBoard)  adapter/  eval/  report/
        latest                                           the name of the newest completed run

A run's identity is a hash of what decides the training's result: the base model, the training data (its
content), the LoRA settings and the training settings that change the math (not logging, checkpoint cadence
or the fast-path knobs, which may differ between machines). `--resume auto` continues only an unfinished run
of the same identity; every checkpoint carries the identity too (`workshop_run.json`), so a checkpoint of
other data or settings is refused.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..config import WorkshopConfig, save_config
from ..runtime.errors import WorkshopError

RUN_FILE = "run.json"
CHECKPOINT_FILE = "workshop_run.json"
LATEST = "latest"
# training settings that do not change what is learned (cadence, logging, how the GPU computes it)
NOT_IDENTITY = {"output_dir", "logging_steps", "eval_steps", "save_steps", "save_total_limit", "report_to",
                "eval_max_examples", "early_stopping_patience", "early_stopping_threshold", "fast_path", "padding_free",
                "liger_kernels", "memory_mode", "memory_budget_gib", "offload_vocab", "offload_activations",
                "gradient_checkpointing", "per_device_eval_batch_size"}
# settings that change what is learned but came after runs were recorded: part of the identity only when set away
# from this default, so the identities (and folders) of earlier runs stay as they were
ADDED_LATER = {"fp8_backward": "off"}  # FP8 gradients (fastpath/fp8.py) differ a little from exact ones


@dataclass
class RunIdentity:
    """What a run learned from: the hash names the run folder and is checked before resuming."""

    model: str
    data: str  # hash of the training and validation examples
    settings: dict

    @property
    def fingerprint(self) -> str:
        text = json.dumps({"model": self.model, "data": self.data, "settings": self.settings}, sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def differences(self, other: dict) -> list[str]:
        """What differs from a recorded identity (run.json / workshop_run.json), in words."""
        out = []
        if other.get("model") != self.model:
            out.append(f"모델 {other.get('model')} → {self.model}")
        if other.get("data") != self.data:
            out.append("학습 데이터 (data)")
        old = other.get("settings") or {}
        out += [f"{k} {old.get(k)!r} → {v!r}" for k, v in self.settings.items() if old.get(k) != v]
        return out

    def to_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, **dataclasses.asdict(self)}


def data_hash(splits: dict[str, list[dict]]) -> str:
    """A hash of the examples a run trains and validates on (wherever they were prepared)."""
    h = hashlib.sha256()
    for name in ("train", "validation"):
        for row in splits.get(name) or []:
            h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def run_identity(cfg: WorkshopConfig, model_name: str, splits: dict[str, list[dict]]) -> RunIdentity:
    m = cfg.model
    settings = {"model." + k: getattr(m, k) for k in ("load_in_4bit", "quant_type", "double_quant", "max_seq_length")}
    settings.update({"lora." + f.name: getattr(cfg.lora, f.name) for f in dataclasses.fields(cfg.lora)})
    for f in dataclasses.fields(cfg.train):
        value = getattr(cfg.train, f.name)
        if f.name not in NOT_IDENTITY and (f.name not in ADDED_LATER or value != ADDED_LATER[f.name]):
            settings["train." + f.name] = value
    return RunIdentity(model_name, data_hash(splits), settings)


def runs_root(cfg: WorkshopConfig) -> Path:
    """The folder that holds this configuration's runs (<build>/<train.output_dir>)."""
    return cfg.runs_dir


@dataclass
class RunInfo:
    path: Path
    record: dict

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def complete(self) -> bool:
        return (self.path / "adapter" / "adapter_config.json").is_file()

    @property
    def fingerprint(self) -> str | None:
        return self.record.get("identity", {}).get("fingerprint")

    def checkpoints(self) -> list[Path]:
        return sorted((p for p in self.path.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                      key=lambda p: int(p.name.split("-")[-1]))


def list_runs(cfg: WorkshopConfig) -> list[RunInfo]:
    """This configuration's runs, oldest first."""
    root = runs_root(cfg)
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if p.is_dir() and (p / RUN_FILE).is_file():
            out.append(RunInfo(p, json.loads((p / RUN_FILE).read_text(encoding="utf-8"))))
    return out


def run_label(run_dir: str | Path) -> str:
    """A run's name for trackers and listings: <configuration name>-<run folder> (one name per run)."""
    run_dir = Path(run_dir)
    return f"{run_dir.parent.name}-{run_dir.name}" if (run_dir / RUN_FILE).exists() else run_dir.name


def new_run(cfg: WorkshopConfig, identity: RunIdentity, name: str | None = None, overwrite: bool = False) -> Path:
    """Create the folder of a new run (its run.json and resolved config.yaml written first)."""
    root = runs_root(cfg)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = root / (name or f"{stamp}-{identity.fingerprint[:6]}")
    if path.exists():
        if name and not overwrite:
            raise WorkshopError(f"실행 폴더 {path}가 이미 있습니다: 이어서 학습하려면 --resume, 바꾸려면 --overwrite, "
                                "아니면 다른 --run 이름을 쓰세요")
        if overwrite:
            shutil.rmtree(path)
        else:  # two runs started in the same second
            i = 2
            while (root / f"{path.name}-{i}").exists():
                i += 1
            path = root / f"{path.name}-{i}"
    path.mkdir(parents=True)
    record = {"name": path.name, "started": dt.datetime.now().isoformat(timespec="seconds"), "size": cfg.size,
              "identity": identity.to_dict()}
    (path / RUN_FILE).write_text(json.dumps(record, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    save_config(cfg, path / "config.yaml", note=f"실행 {path.name}")
    return path


def resumable_run(cfg: WorkshopConfig, identity: RunIdentity) -> tuple[RunInfo | None, list[str]]:
    """The newest unfinished run with checkpoints and this identity, and why others were not taken."""
    why = []
    for run in reversed(list_runs(cfg)):
        if run.complete or not run.checkpoints():
            continue
        if run.fingerprint == identity.fingerprint:
            return run, why
        diff = identity.differences(run.record.get("identity", {}))
        why.append(f"{run.name}: {', '.join(diff[:3]) or '식별값이 다름'}")
    return None, why


def completed_run(cfg: WorkshopConfig, identity: RunIdentity | None = None) -> RunInfo | None:
    """The newest completed run (with this identity when given; else the one `latest` names)."""
    runs = [r for r in list_runs(cfg) if r.complete]
    if identity is not None:
        runs = [r for r in runs if r.fingerprint == identity.fingerprint]
        return runs[-1] if runs else None
    pointer = runs_root(cfg) / LATEST
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8").strip()
        named = [r for r in runs if r.name == name]
        if named:
            return named[0]
    return runs[-1] if runs else None


def mark_latest(run_dir: Path) -> None:
    """Record `run_dir` as the newest completed run of its configuration."""
    (run_dir.parent / LATEST).write_text(run_dir.name + "\n", encoding="utf-8")


def checkpoint_identity(checkpoint: str | Path) -> dict | None:
    """The identity a checkpoint was written with (its own file, else its run's run.json)."""
    ckpt = Path(checkpoint)
    for f in (ckpt / CHECKPOINT_FILE, ckpt.parent / RUN_FILE):
        if f.is_file():
            data = json.loads(f.read_text(encoding="utf-8"))
            return data.get("identity", data)
    return None
