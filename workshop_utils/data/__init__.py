"""Data loading, validation, normalization, splitting and RAFT conversion."""
from .io import FileInfo, RawRecord, detect_encoding, load_raw
from .jsonl import read_jsonl
from .normalize import normalize_record, normalize_text
from .prepare import PreparedDataError, PrepareResult, ensure_prepared, load_corpus, load_splits, prepare
from .raft import Corpus, extract_quotes, final_answer, target_text, to_raft, truncate_document
from .schema import REASONS, Reject, ValidationReport, validate
from .split import assign_splits, doc_key, hash_split, read_splits

__all__ = [
    "Corpus", "FileInfo", "PrepareResult", "PreparedDataError", "REASONS", "RawRecord", "Reject",
    "ValidationReport", "assign_splits", "detect_encoding", "doc_key", "ensure_prepared",
    "extract_quotes", "final_answer", "hash_split", "load_corpus", "load_raw", "load_splits",
    "normalize_record", "normalize_text", "prepare", "read_jsonl", "read_splits", "target_text",
    "to_raft", "truncate_document", "validate",
]
