"""Optuna storage: URLs (``urls``), journal files (``journal``), databases (``rdb``), and the storage actor for
workers that need it (``actor``); :func:`open_storage` (``opening``) opens any of them.

The driver opens the study's storage itself (journal files and databases take several clients; in-process calls
are ~100x cheaper than actor round trips). A Ray worker reaches it only when it must (see
:class:`sparsearch.search.worker.WorkerTrial`): on the driver's node a journal file is opened directly (it takes
a file lock per write, so many processes may append); otherwise through :class:`StorageServer`, a Ray actor pinned
to the driver's node, and :class:`RayStorageProxy`, a complete :class:`optuna.storages.BaseStorage` that forwards
each call. So:

* a worker can build a real ``optuna.Trial``: define-by-run suggestions, ``report`` and ``should_prune`` reach
  the study while the trial trains, on a laptop or on a cluster whose workers cannot see the driver's files;
* credentials in a database URL never leave the driver's node (workers never get the URL, only the actor);
* an in-memory storage lives in the actor alone and the driver uses it through the proxy too.

Optuna's own gRPC proxy would do the forwarding too, but it does not support ``JournalStorage`` (optuna#6084),
the embedded default here.
"""

from __future__ import annotations

from sparsearch.search.storage.actor import (
    IDEMPOTENT,
    RayStorageProxy,
    StorageActorLost,
    StorageServer,
    is_storage_outage,
    start_storage_server,
)
from sparsearch.search.storage.journal import batched_writes
from sparsearch.search.storage.opening import open_storage
from sparsearch.search.storage.rdb import is_backend_failure
from sparsearch.search.storage.urls import (
    absolute_storage_url,
    default_storage_url,
    env_storage_url,
    is_journal,
    is_memory_url,
    journal_path,
)

__all__ = ["IDEMPOTENT", "RayStorageProxy", "StorageActorLost", "StorageServer", "absolute_storage_url",
           "batched_writes", "default_storage_url", "env_storage_url", "is_backend_failure", "is_journal",
           "is_memory_url", "is_storage_outage", "journal_path", "open_storage", "start_storage_server"]
