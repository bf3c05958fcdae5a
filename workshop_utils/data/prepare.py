"""The preprocessing pipeline: load -> validate/normalize -> split -> RAFT -> save.

`prepare(...)` is what `workshop prepare` and notebook 01 run; `ensure_prepared(cfg)` is what later
notebooks call: it reuses build/data when it is there and rebuilds it (saying so) when it is not.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..config import DataSettings, WorkshopConfig
from ..paths import resolve
from .io import FileInfo, load_raw
from .raft import Corpus, RaftOptions, to_raft
from .schema import ValidationReport, validate
from .split import assign_splits, read_splits

SPLIT_FILES = ("train", "validation", "test")


@dataclass
class PrepareResult:
    out_dir: Path
    report: ValidationReport
    files: list[FileInfo]
    splits: dict[str, list[dict]]
    corpus: Corpus
    summary: dict = field(default_factory=dict)
    split_of: dict[str, str] = field(default_factory=dict)  # doc key -> train | validation | test

    @property
    def records(self) -> list[dict]:
        """The validated, normalized canonical records (before the RAFT conversion)."""
        return [r.data for r in self.report.kept]


def prepare(raw_paths: Sequence[str | Path], out_dir: str | Path, settings: DataSettings | None = None,
            mapping: Mapping[str, str] | None = None, splits_file: str | Path | None = "default",
            save_dataset: bool = True, raft_options: RaftOptions | None = None) -> PrepareResult:
    """Run the whole preprocessing flow and write its outputs to `out_dir`.

    Writes {train,validation,test}.jsonl, corpus.jsonl, rejects.jsonl, prepare_summary.json and a
    datasets.DatasetDict (out_dir/dataset). Raises only when nothing at all could be read.
    """
    settings = settings or DataSettings()
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw, files = load_raw(raw_paths)
    if not raw:
        raise ValueError(f"읽을 수 있는 레코드가 없습니다 (nothing could be read) from {list(map(str, raw_paths))}")
    report = validate(raw, mapping=mapping, min_length=settings.min_length, max_length=settings.max_length)
    assert report.read == len(raw), "every raw record must be kept or rejected"
    records = [r.data for r in report.kept]
    if splits_file == "default":
        splits_file = settings.splits_file
    declared = {}
    if splits_file and resolve(splits_file).exists():
        declared = read_splits(resolve(splits_file))
    split_of, how = assign_splits(records, declared, settings.validation_fraction, settings.test_fraction,
                                  settings.seed)
    corpus = Corpus.from_records(records)
    opts = raft_options or RaftOptions.from_settings(settings)
    splits = to_raft(records, split_of, opts, corpus) if records else {s: [] for s in SPLIT_FILES}
    report.write_rejects(out / "rejects.jsonl")
    for name in SPLIT_FILES:
        _write_jsonl(out / f"{name}.jsonl", splits[name])
    _write_jsonl(out / "corpus.jsonl", corpus.records())
    if save_dataset and records:
        _save_dataset_dict(splits, out / "dataset")
    summary = {
        "read": report.read,
        "kept": len(report.kept),
        "rejected": len(report.rejected),
        "by_reason": report.by_reason(),
        "splits": {k: len(v) for k, v in splits.items()},
        "documents": len(corpus.texts),
        "split_assignment": how,
        "doc_id_conflicts": corpus.conflicts,
        "normalization": dict(report.normalization),
        "files": [{"path": f.path, "format": f.format, "encoding": f.encoding, "records": f.records,
                   "unreadable": f.unreadable} for f in files],
        "raft": {"num_distractors": opts.num_distractors, "hard_fraction": opts.hard_distractor_fraction,
                 "hard_method": opts.hard_method, "oracle_fraction": opts.oracle_fraction,
                 "no_oracle_target": opts.no_oracle_target, "max_context_len": opts.max_context_len,
                 "add_cot": opts.add_cot},
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "prepare_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    return PrepareResult(out, report, files, splits, corpus, summary, split_of)


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _save_dataset_dict(splits: dict[str, list[dict]], path: Path) -> None:
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()

    cols = sorted({k for rows in splits.values() for r in rows for k in r})

    def table(rows: list[dict]) -> dict[str, list]:
        return {c: [json.dumps(r[c], ensure_ascii=False) if c in ("context", "doc_ids") else r.get(c)
                    for r in rows] for c in cols}

    dd = DatasetDict({name: Dataset.from_dict(table(rows)) for name, rows in splits.items() if rows})
    dd.save_to_disk(str(path))


def data_dir(cfg: WorkshopConfig) -> Path:
    return cfg.build_path / "data"


def ensure_prepared(cfg: WorkshopConfig, verbose: bool = True) -> Path:
    """Return build/data, rebuilding it from the raw files when it is missing or was built with
    other RAFT settings (a notebook run alone must still work)."""
    out = data_dir(cfg)
    summary_path = out / "prepare_summary.json"
    wanted = {"num_distractors": cfg.data.num_distractors, "max_context_len": cfg.data.max_context_len,
              "add_cot": cfg.data.add_cot, "oracle_fraction": cfg.data.oracle_fraction}
    if summary_path.exists() and all((out / f"{s}.jsonl").exists() for s in SPLIT_FILES):
        raft = json.loads(summary_path.read_text(encoding="utf-8")).get("raft", {})
        if all(raft.get(k) == v for k, v in wanted.items()):
            return out
        reason = "설정이 달라져서 (RAFT settings changed)"
    else:
        reason = "아직 없어서 (missing)"
    if verbose:
        print(f"[prepare] {out} 데이터가 {reason} 원본에서 다시 만듭니다: {cfg.data.raw_paths}")
    prepare(cfg.data.raw_paths, out, cfg.data)
    return out


def load_splits(cfg: WorkshopConfig) -> dict[str, list[dict]]:
    """The prepared RAFT splits (rebuilt first if needed)."""
    out = ensure_prepared(cfg)
    return {s: read_jsonl(out / f"{s}.jsonl") for s in SPLIT_FILES}


def load_corpus(cfg: WorkshopConfig) -> list[dict]:
    return read_jsonl(ensure_prepared(cfg) / "corpus.jsonl")
