"""Writes into a cache that several processes share (a class on one GPU server, DDP ranks, pytest workers).

One process builds an entry (a converted model, a download) while the others wait for it and then use
what it built: `cache_lock` is a file lock next to the entry (the `filelock` package, the same the Hub
stack uses for its own cache). 
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# A conversion takes ~30 s on 2 CPU cores and a 16 GB download a few minutes: wait long, not forever.
WAIT_S = 3600.0


def lock_path(entry: Path) -> Path:
    """The lock file of a cache entry: a hidden sibling, `.NAME.lock`."""
    entry = Path(entry)
    return entry.parent / f".{entry.name}.lock"


@contextmanager
def cache_lock(entry: Path, what: str, timeout: float = WAIT_S, verbose: bool = True) -> Iterator[None]:
    """Hold the lock of `entry` while building it; say so when another process holds it (and wait).

    The lock file is created with the process's umask: on a shared cache directory use umask 002 and a
    group-owned directory (docs/server.md) so every member of the class can take it.
    """
    from filelock import FileLock, Timeout

    path = lock_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if verbose:
            print(f"[cache] 다른 프로세스가 {what} 중입니다: 끝날 때까지 기다립니다 (잠금 파일 {path})")
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise TimeoutError(f"{path}: {timeout:.0f}초 동안 잠금이 풀리지 않았습니다 ({what}). 그 프로세스가 "
                               f"살아 있는지 확인하고, 없으면 잠금 파일을 지우세요") from None
    try:
        yield
    finally:
        lock.release()


def shared_tmpdir(parent: Path, prefix: str) -> Path:
    """A temporary directory inside `parent` (renamed into place when complete) with the permissions of an
    ordinary directory (mkdtemp makes 0700, which other users of a shared cache could not read)."""
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=prefix))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp
