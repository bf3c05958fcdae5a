"""Errors a participant caused and can fix: the `workshop` command prints their (Korean) message as one line
and exits non-zero, without a traceback. Everything else is a bug and keeps its traceback."""
from __future__ import annotations


class WorkshopError(ValueError):
    """Bad input (a setting, a path, a data folder, an adapter): the message says what, where and what to do."""
