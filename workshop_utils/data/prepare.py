"""The preprocessing pipeline: load -> validate/normalize -> split -> RAFT -> save, as a folder with an identity.

`prepare(...)` (`workshop prepare`, notebook 01) writes a prepared-data folder: the splits, the corpus, the
rejects, a datasets.DatasetDict, and `manifest.json` (the raw sources with size and SHA-256, every data
setting, the counts, the library version). The folder is written under a temporary name and renamed into
place when complete, so an interrupted prepare never leaves a folder that later commands accept. A folder
made from other raw sources is never replaced without `overwrite=True`.

`ensure_prepared(cfg)` is what training, evaluation and later notebooks call: with `cfg.data_dir` set it uses
exactly that folder; otherwise <build>/data, rebuilt (saying why) only when it is missing or was made from
the configured raw files with other settings.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from .. import __version__
from ..config import DataSettings, WorkshopConfig
from ..runtime.errors import WorkshopError
from ..runtime.paths import resolve
from .io import FileInfo, expand_paths, load_raw
from .jsonl import read_jsonl, write_jsonl
from .raft import Corpus, to_raft
from .schema import ValidationReport, validate
from .split import assign_splits, read_splits

SPLIT_FILES = ("train", "validation", "test")
MANIFEST = "manifest.json"
LEGACY_SUMMARY = "prepare_summary.json"  # folders written before the manifest existed


class PreparedDataError(WorkshopError):
    """A prepared-data folder that cannot be used or replaced as asked (Korean message: what, where, what to run)."""


class NothingKeptError(PreparedDataError):
    """Nothing to prepare: every raw record was rejected (the counts per reason are in `by_reason`) or the raw
    folder held no readable record (`by_reason` empty). `workshop prepare` exits 1, a data problem, not a usage one."""

    def __init__(self, message: str, by_reason: dict):
        super().__init__(message)
        self.by_reason = by_reason


@dataclass
class PrepareResult:
    out_dir: Path
    report: ValidationReport
    files: list[FileInfo]
    splits: dict[str, list[dict]]
    corpus: Corpus
    summary: dict = field(default_factory=dict)  # the folder's manifest
    split_of: dict[str, str] = field(default_factory=dict)  # doc key -> train | validation | test

    @property
    def records(self) -> list[dict]:
        """The validated, normalized canonical records (before the RAFT conversion)."""
        return [r.data for r in self.report.kept]


def prepare(raw_paths: Sequence[str | Path], out_dir: str | Path, settings: DataSettings | None = None,
            mapping: Mapping[str, str] | None = None, splits_file: str | Path | None = "default",
            save_dataset: bool = True, overwrite: bool = False) -> PrepareResult:
    """Run the whole preprocessing flow and write its outputs to `out_dir` (atomically).

    Writes {train,validation,test}.jsonl, corpus.jsonl, rejects.jsonl, manifest.json and a datasets.DatasetDict
    (out_dir/dataset). Raises PreparedDataError when `out_dir` holds data made from other raw sources (unless
    `overwrite`), and NothingKeptError when every record was rejected (nothing is written then).
    """
    settings = settings or DataSettings()
    t0 = time.perf_counter()
    out = Path(out_dir)
    raw, files = load_raw(raw_paths)
    if not raw:
        raise NothingKeptError(f"읽을 수 있는 레코드가 없습니다 (nothing could be read): {list(map(str, raw_paths))}", {})
    sources = sorted(f.resolved for f in files)
    check_replaceable(out, sources, overwrite)
    if mapping:
        check_mapping(mapping, raw)
    report = validate(raw, mapping=mapping, min_length=settings.min_length, max_length=settings.max_length)
    assert report.read == len(raw), "every raw record must be kept or rejected"
    if not report.kept:
        reasons = ", ".join(f"{k} {v}개" for k, v in report.by_reason().items())
        raise NothingKeptError(f"모든 레코드가 거부되었습니다 (0 kept of {report.read}): {reasons}. "
                               "열 이름이 다르면 --mapping으로 알려 주세요", report.by_reason())
    records = [r.data for r in report.kept]
    if splits_file == "default":
        splits_file = settings.splits_file
    declared = {}
    if splits_file and resolve(splits_file).exists():
        declared = read_splits(resolve(splits_file))
    split_of, how = assign_splits(records, declared, settings.validation_fraction, settings.test_fraction,
                                  settings.seed)
    corpus = Corpus.from_records(records)
    splits = to_raft(records, split_of, settings, corpus)
    manifest = {
        "format": 1,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "library_version": __version__,
        "sources": [{"path": f.path, "resolved": f.resolved, "size": f.size, "sha256": f.sha256, "format": f.format,
                     "encoding": f.encoding, "records": f.records, "unreadable": f.unreadable} for f in files],
        "settings": dataclasses.asdict(settings),
        "mapping": dict(mapping) if mapping else None,
        "splits_file": str(splits_file) if splits_file and declared else None,
        "read": report.read,
        "kept": len(report.kept),
        "rejected": len(report.rejected),
        "by_reason": report.by_reason(),
        "splits": {k: len(v) for k, v in splits.items()},
        "documents": len(corpus.texts),
        "split_assignment": how,
        "doc_id_conflicts": corpus.conflicts,
        "normalization": dict(report.normalization),
    }
    with _staging(out) as tmp:
        report.write_rejects(tmp / "rejects.jsonl")
        for name in SPLIT_FILES:
            write_jsonl(tmp / f"{name}.jsonl", splits[name])
        write_jsonl(tmp / "corpus.jsonl", corpus.records())
        if save_dataset:
            _save_dataset_dict(splits, tmp / "dataset")
        manifest["seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    return PrepareResult(out, report, files, splits, corpus, manifest, split_of)


def check_mapping(mapping: Mapping[str, str], raw: list) -> None:
    """Every column a mapping names must exist in the raw records (else one line naming it and the columns)."""
    columns: dict[str, None] = {}
    for r in raw:
        if isinstance(r.data, dict):
            columns.update(dict.fromkeys(r.data))
    missing = [f"'{col}' ({canon})" for canon, col in mapping.items() if col not in columns]
    if missing:
        raise PreparedDataError(f"매핑의 열 {', '.join(missing)}이 원본에 없습니다 (mapping names missing columns). "
                                f"있는 열: {', '.join(list(columns)[:12])}")


def read_manifest(folder: str | Path) -> dict | None:
    """The manifest of a prepared-data folder (a pre-manifest folder's summary, converted), or None."""
    folder = Path(folder)
    if (folder / MANIFEST).is_file():
        return json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    if (folder / LEGACY_SUMMARY).is_file():
        old = json.loads((folder / LEGACY_SUMMARY).read_text(encoding="utf-8"))
        return {**old, "sources": [{"path": f["path"], "resolved": str(resolve(f["path"]).resolve())}
                                   for f in old.get("files", [])], "settings": None}
    return None


def source_list(manifest: dict) -> str:
    """The raw files of a manifest, for a message."""
    paths = [s["path"] for s in manifest.get("sources", [])]
    return ", ".join(paths[:4]) + (f" 외 {len(paths) - 4}개" if len(paths) > 4 else "")


def check_replaceable(out: Path, sources: list[str], overwrite: bool = False) -> None:
    """May a prepare from `sources` (resolved raw files) replace `out`? Yes when it is missing or empty, was
    made from the same raw files (with any settings: it is derived data), or `overwrite` is given."""
    if overwrite or not out.exists() or not any(out.iterdir()):
        return
    manifest = read_manifest(out)
    if manifest is None:
        raise PreparedDataError(f"{out}에 준비된 데이터가 아닌 파일이 있습니다 (no {MANIFEST}): 다른 --out 폴더를 "
                                "쓰거나, 지워도 되면 --overwrite를 붙이세요")
    if sorted(s["resolved"] for s in manifest["sources"]) != sources:
        raise PreparedDataError(f"{out}에는 다른 원본으로 만든 데이터가 있습니다 (원본: {source_list(manifest)}): "
                                "다른 --out 폴더를 쓰거나, 바꿔도 되면 --overwrite를 붙이세요")


class _staging:
    """Write a folder under a temporary name next to `out`, then swap it into place when the block ends
    without an error (an interrupted or failed write leaves only the temporary folder, which is ignored
    and removed by the next prepare of the same folder)."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.out.parent.glob(f".{self.out.name}.partial-*"):
            if not _alive(stale.name.rsplit("-", 1)[-1]):
                shutil.rmtree(stale, ignore_errors=True)
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            self.out.rename(old)
        self.tmp.rename(self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


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
    """The prepared-data folder of a config: `data_dir` when set, else <build_dir>/data."""
    return resolve(cfg.data_dir) if cfg.data_dir else cfg.build_path / "data"


def _settings_key(settings) -> str:
    return json.dumps(settings, sort_keys=True, ensure_ascii=False, default=str)


def ensure_prepared(cfg: WorkshopConfig, verbose: bool = True) -> Path:
    """The prepared data this config uses (see the module docstring); raises PreparedDataError when the
    default folder holds data made from other raw files, or `data_dir` is not a prepared folder."""
    out = data_dir(cfg)
    manifest = read_manifest(out)
    have_splits = all((out / f"{s}.jsonl").is_file() for s in SPLIT_FILES)
    if cfg.data_dir:
        if manifest is None or not have_splits:
            raise PreparedDataError(f"{out}는 준비된 데이터 폴더가 아닙니다 ({MANIFEST}와 train/validation/test.jsonl "
                                    f"필요): workshop prepare --raw <원본> --out {cfg.data_dir} 로 먼저 만드세요")
        return out
    wanted = sorted(str(p.resolve()) for p in expand_paths(cfg.data.raw_paths))
    if manifest is not None and have_splits:
        if sorted(s["resolved"] for s in manifest["sources"]) != wanted:
            raise PreparedDataError(
                f"{out}에는 다른 원본으로 만든 데이터가 있습니다 (원본: {source_list(manifest)}). 그 데이터를 쓰려면 "
                f"--data {out} (노트북: data_dir 설정), 기본 데이터를 다시 만들려면 먼저 그 폴더를 옮기거나 "
                f"workshop prepare --raw {' '.join(cfg.data.raw_paths)} --out {out} --overwrite")
        current = dataclasses.asdict(cfg.data)
        if manifest.get("settings") is not None and _settings_key(manifest["settings"]) == _settings_key(current):
            return out
        old = manifest.get("settings") or {}
        changed = [k for k in current if _settings_key(old.get(k)) != _settings_key(current[k])] if old else ["(이전 형식)"]
        reason = f"설정이 달라져서 (settings changed: {', '.join(changed)})"
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


def prepare_custom(paths: Sequence[str | Path], mapping: Mapping[str, str], out_dir: str | Path,
                   settings: DataSettings | None = None, splits_file: str | Path | None = None) -> PrepareResult:
    """The shipped pipeline on your files: `mapping` says which column is question/context/answer
    (and optionally id, doc_id, topic, title, cot). Without a splits file the documents are split
    deterministically by hash, so no document's questions land in two splits."""
    return prepare(paths, out_dir, settings or DataSettings(), mapping=mapping, splits_file=splits_file)
