"""One storage URL to an open Optuna storage: memory, a journal file, or a database."""

from __future__ import annotations

import optuna
from optuna.storages import BaseStorage

from sparsearch.search.storage.journal import open_journal
from sparsearch.search.storage.rdb import open_rdb
from sparsearch.search.storage.urls import is_journal, is_memory_url

__all__ = ["open_storage"]


def open_storage(url: str) -> BaseStorage:
    """Open an Optuna storage from a sparsearch storage URL.

    Accepted: ``journal:PATH`` (or a path ending in ``.journal``/``.log``), ``sqlite:///PATH``,
    ``postgresql://...``, ``mysql://...`` (any SQLAlchemy URL Optuna accepts), and ``memory``.
    """
    if is_memory_url(url):
        return optuna.storages.InMemoryStorage()
    if is_journal(url):
        return open_journal(url)
    return open_rdb(url)
