"""Load raw records from JSON, JSONL and CSV files, keeping where each record came from.

Encodings: UTF-8, UTF-8 with BOM, UTF-16 (BOM), CP949/EUC-KR (as Excel saves Korean CSV). Nothing
here raises on bad content: a malformed JSON line or an undecodable byte becomes a `RawRecord` with
`error` set, which validation turns into a reject (file + line + reason).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..runtime.paths import project_root

SUPPORTED_SUFFIXES = (".json", ".jsonl", ".csv")
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


@dataclass
class RawRecord:
    """One record as read: the parsed object (or None) and where it came from."""

    data: Any
    source: str
    locator: str
    error: str | None = None  # reason code when the record could not even be parsed
    message: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} {self.locator}"


@dataclass
class FileInfo:
    path: str
    format: str
    encoding: str
    records: int = 0
    unreadable: int = 0
    notes: list[str] = field(default_factory=list)
    resolved: str = ""  # absolute path: the file's identity in a prepared folder's manifest
    size: int = 0
    sha256: str = ""


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(project_root()))
    except ValueError:
        return str(path)


def detect_encoding(raw: bytes) -> str:
    """BOM first; then strict UTF-8; then CP949 (a superset of EUC-KR). Falls back to the
    encoding that decodes the most lines (the rest become undecodable-byte rejects)."""
    for bom, enc in _BOMS:
        if raw.startswith(bom):
            return enc
    for enc in ("utf-8", "cp949"):
        try:
            raw.decode(enc)
            return enc
        except UnicodeDecodeError:
            continue
    lines = raw.splitlines()

    def bad(enc: str) -> int:
        n = 0
        for ln in lines:
            try:
                ln.decode(enc)
            except UnicodeDecodeError:
                n += 1
        return n

    return min(("utf-8", "cp949"), key=bad)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus the supported files inside named directories (sorted)."""
    out: list[Path] = []
    for p in paths:
        path = Path(p)
        if not path.is_absolute() and not path.exists():
            path = project_root() / path
        if path.is_dir():
            out.extend(sorted(f for f in path.iterdir() if f.suffix.lower() in SUPPORTED_SUFFIXES))
        elif path.exists():
            out.append(path)
        else:
            raise FileNotFoundError(f"원본 데이터 경로가 없습니다 (no such raw path): {p}")
    return out


def load_raw(paths: Iterable[str | Path]) -> tuple[list[RawRecord], list[FileInfo]]:
    """Read every record of every file; returns records (parse failures included) and file infos."""
    records: list[RawRecord] = []
    infos: list[FileInfo] = []
    for path in expand_paths(paths):
        recs, info = load_file(path)
        records.extend(recs)
        infos.append(info)
    return records, infos


def load_file(path: Path) -> tuple[list[RawRecord], FileInfo]:
    raw = path.read_bytes()
    enc = detect_encoding(raw)
    suffix = path.suffix.lower()
    name = _display(path)
    if suffix == ".jsonl":
        recs = list(_read_jsonl(raw, enc, name))
        fmt = "jsonl"
    elif suffix == ".json":
        recs = _read_json(raw, enc, name)
        fmt = "json"
    elif suffix == ".csv":
        recs = list(_read_csv(raw, enc, name))
        fmt = "csv"
    else:
        raise ValueError(f"{name}: 지원하지 않는 형식 (unsupported format); use .json, .jsonl or .csv")
    info = FileInfo(name, fmt, enc, records=len(recs), unreadable=sum(r.error is not None for r in recs),
                    resolved=str(path.resolve()), size=len(raw), sha256=hashlib.sha256(raw).hexdigest())
    return recs, info


def _strip_bom(text: str) -> str:
    return text[1:] if text.startswith("\ufeff") else text


def _read_jsonl(raw: bytes, enc: str, name: str) -> Iterable[RawRecord]:
    if enc == "utf-8-sig":
        raw, enc = raw[3:], "utf-8"
    if enc == "utf-16":
        lines = [ln.encode("utf-8") for ln in raw.decode("utf-16").splitlines()]
        enc = "utf-8"
    else:
        lines = raw.split(b"\n")
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        loc = f"line {no}"
        try:
            text = line.decode(enc).rstrip("\r")
        except UnicodeDecodeError as err:
            yield RawRecord(None, name, loc, "undecodable_bytes",
                            f"{enc}로 디코딩할 수 없는 바이트 (byte {err.start}): {line[err.start:err.start + 4]!r}")
            continue
        text = _strip_bom(text) if no == 1 else text
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            yield RawRecord(None, name, loc, "malformed_json", f"JSON 파싱 실패 (column {err.colno}): {err.msg}")
            continue
        if not isinstance(obj, dict):
            yield RawRecord(obj, name, loc, "not_an_object",
                            f"레코드가 JSON 객체가 아님 ({type(obj).__name__})")
            continue
        yield RawRecord(obj, name, loc)


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _read_json(raw: bytes, enc: str, name: str) -> list[RawRecord]:
    try:
        text = _strip_bom(raw.decode(enc))
    except UnicodeDecodeError as err:
        return [RawRecord(None, name, f"byte {err.start}", "undecodable_bytes",
                          f"파일 전체를 {enc}로 디코딩할 수 없음: {err.reason}")]
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        return [RawRecord(None, name, f"line {err.lineno}", "malformed_json",
                          f"JSON 파일 파싱 실패 (column {err.colno}): {err.msg}; 파일 전체를 읽지 못함")]
    # A list of records, or an object with one list of records (e.g. {"export": ..., "records": [...]}).
    if isinstance(doc, list):
        start = text.index("[")
    elif isinstance(doc, dict):
        keys = [k for k, v in doc.items() if isinstance(v, list)]
        if len(keys) != 1:
            return [RawRecord(doc, name, "line 1", "not_an_object",
                              "JSON 객체 안에서 레코드 목록을 찾지 못함 (list 값이 정확히 하나여야 함)")]
        key_pos = text.index(json.dumps(keys[0], ensure_ascii=False))
        start = text.index("[", key_pos)
    else:
        return [RawRecord(doc, name, "line 1", "not_an_object", "JSON 최상위가 목록이나 객체가 아님")]
    return list(_iter_array(text, start, name))


def _iter_array(text: str, start: int, name: str) -> Iterable[RawRecord]:
    """Walk a JSON array element by element so each record keeps its line number."""
    dec = json.JSONDecoder()
    i = start + 1
    n = len(text)
    item = 0
    while i < n:
        while i < n and text[i] in " \t\r\n,":
            i += 1
        if i >= n or text[i] == "]":
            return
        obj, end = dec.raw_decode(text, i)
        item += 1
        loc = f"line {_line_of(text, i)} (item {item})"
        if isinstance(obj, dict):
            yield RawRecord(obj, name, loc)
        else:
            yield RawRecord(obj, name, loc, "not_an_object", f"레코드가 JSON 객체가 아님 ({type(obj).__name__})")
        i = end


def _read_csv(raw: bytes, enc: str, name: str) -> Iterable[RawRecord]:
    text = _strip_bom(raw.decode(enc if enc != "utf-8-sig" else "utf-8-sig", errors="surrogateescape"))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    _ = reader.fieldnames  # consume the header so line numbers count from it
    prev_end = reader.line_num
    for row_no, row in enumerate(reader, start=1):
        loc = f"line {prev_end + 1} (row {row_no})"
        prev_end = reader.line_num
        bad = [k for k, v in row.items() if isinstance(v, str) and any(0xDC80 <= ord(c) <= 0xDCFF for c in v)]
        if bad:
            yield RawRecord(None, name, loc, "undecodable_bytes",
                            f"필드 '{bad[0]}'에 {enc}로 디코딩할 수 없는 바이트가 있음")
            continue
        if None in row:  # more cells than header columns
            yield RawRecord(dict(row), name, loc, "malformed_csv",
                            f"헤더보다 칸이 많음 ({len(row[None])}칸 초과)")
            continue
        yield RawRecord(dict(row), name, loc)
