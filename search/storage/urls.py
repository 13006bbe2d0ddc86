"""Storage URLs: which kind of storage a URL names, its journal file, absolute paths, and the defaults.

Example:
    >>> is_journal("journal:results/optuna.journal"), is_memory_url("memory"), str(journal_path("journal:a/b.log"))
    (True, True, 'a/b.log')
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["absolute_storage_url", "default_storage_url", "env_storage_url", "is_journal", "is_memory_url",
           "journal_path"]


def default_storage_url(results_dir: Path) -> str:
    """The embedded default: a journal file in the results folder."""
    return f"journal:{(results_dir / 'optuna.journal').resolve()}"


def is_memory_url(url: str) -> bool:
    """Whether ``url`` names an in-memory storage (the study lives in one process only)."""
    return url in ("memory", "inmemory", ":memory:")


def absolute_storage_url(url: str) -> str:
    """``url`` with a relative journal or SQLite path made absolute (against the driver's working folder).

    The storage actor and the workers on the driver's node open the same file from processes whose working
    folder is Ray's, not the driver's.

    Example:
        >>> absolute_storage_url("postgresql://u:p@db/x")
        'postgresql://u:p@db/x'
    """
    if is_memory_url(url):
        return url
    if is_journal(url):
        path = journal_path(url)
        return f"journal:{path.expanduser().absolute()}" if str(path).strip() else url
    if url.startswith("sqlite:///"):
        db = url.removeprefix("sqlite:///")
        if db and db != ":memory:" and not db.startswith("/"):
            return f"sqlite:///{Path(db).expanduser().absolute()}"
    return url


def is_journal(url: str) -> bool:
    """Whether ``url`` names a journal file (``journal:PATH`` or a path ending in ``.journal``/``.log``)."""
    return url.startswith("journal:") or url.endswith((".journal", ".log"))


def journal_path(url: str) -> Path:
    """The file of a journal storage URL."""
    return Path(url.removeprefix("journal:").removeprefix("//"))



def env_storage_url() -> str | None:
    """``SPARSEARCH_STORAGE`` from the environment, if set."""
    return os.environ.get("SPARSEARCH_STORAGE") or None
