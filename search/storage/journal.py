"""Journal-file storages: opening one with sparsearch's queued file lock, and batching a thread's writes.

Many processes append to one journal (drivers, trial workers on the driver's node): each write takes the file's
lock. :func:`batched_writes` lets the driver store a finished trial with one lock and one fsync.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import BaseJournalBackend, JournalFileOpenLock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]  # a module or None: Windows has no fcntl

from sparsearch._types import JSONDict
from sparsearch.errors import SpecError
from sparsearch.search._internals import BaseJournalFileLock, journal_parts, set_journal_backend, sync_journal
from sparsearch.search.storage.urls import journal_path

__all__ = ["batched_writes", "open_journal"]


def open_journal(url: str) -> BaseStorage:
    """A journal storage on the file of ``url``, with sparsearch's write lock (see :func:`_journal_lock`)."""
    path = journal_path(url)
    if not str(path).strip() or path == Path(".") or path.is_dir():
        raise SpecError(f"storage {url!r}: give a journal file path, e.g. journal:results/optuna.journal")
    if not path.parent.exists():
        raise SpecError(f"storage {url!r}: folder {str(path.parent)!r} does not exist")
    if path.is_file() and path.stat().st_size:  # never append journal lines to some other file
        import json

        with open(path, "rb") as fh:
            first = fh.readline(1 << 16)
        try:
            json.loads(first)
        except ValueError:
            raise SpecError(f"storage {url!r}: {str(path)!r} exists and is not an Optuna journal file") from None
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=_journal_lock(str(path))))


def _journal_lock(path: str) -> BaseJournalFileLock:
    """The journal file's write lock: Optuna's open-file lock, with sparsearch's processes queued in front of it.

    ``JournalFileOpenLock`` retries a taken lock with an exponential back-off of up to 1 s. With many writers on one
    journal (drivers, trial workers) they kept colliding and sleeping. An ``flock`` on a side file queues
    sparsearch's processes in the kernel (each is woken as soon as the previous one releases), so the open-file
    lock behind it is then almost always free at once; it still excludes any other process that uses Optuna's
    ``JournalFileOpenLock`` on the same journal.
    """
    if fcntl is None:  # pragma: no cover - Windows: Optuna's lock alone
        return JournalFileOpenLock(path)
    return _QueuedOpenLock(path)


class _QueuedOpenLock(BaseJournalFileLock):
    """See :func:`_journal_lock`. Picklable (a study's storage may be pickled): the queue file is opened per use."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._inner = JournalFileOpenLock(path)
        self._queue: TextIO | None = None

    def acquire(self) -> bool:
        queue = open(self._path + ".queue", "a")  # noqa: SIM115 - held until release
        try:
            fcntl.flock(queue, fcntl.LOCK_EX)
            acquired = self._inner.acquire()
        except BaseException:
            queue.close()
            raise
        self._queue = queue
        return acquired

    def release(self) -> None:
        try:
            self._inner.release()
        finally:
            queue, self._queue = self._queue, None
            if queue is not None:
                queue.close()  # closing drops the flock

    def __getstate__(self) -> dict[str, object]:
        return {"_path": self._path, "_inner": self._inner, "_queue": None}


_BATCHES = threading.local()
"""Per thread: the journal backends (by id) whose writes are being held, and the logs held for each."""


class _BatchingBackend(BaseJournalBackend):
    """A journal backend that holds the appends a thread makes inside :func:`batched_writes` and writes the rest."""

    def __init__(self, inner: BaseJournalBackend) -> None:
        self._inner = inner

    def read_logs(self, log_number_from: int) -> Iterable[JSONDict]:
        return self._inner.read_logs(log_number_from)

    def append_logs(self, logs: list[JSONDict]) -> None:
        held = getattr(_BATCHES, "held", {}).get(id(self))
        if held is not None:
            held.extend(logs)
        else:
            self._inner.append_logs(logs)

    def __getattr__(self, name: str) -> object:  # anything else: the real backend's
        if name == "_inner":  # unpickling: not set yet
            raise AttributeError(name)
        return getattr(self._inner, name)


@contextlib.contextmanager
def batched_writes(storage: BaseStorage) -> Iterator[None]:
    """Append the journal writes this thread makes in the block at once: one file lock, one fsync.

    The driver stores what a finished trial brings back (metrics, parameters and reported values from the worker,
    bookkeeping attributes) with ~6 writes, each an fsync on a journal file. Inside the block, the calling thread's
    writes are held and appended together when it ends; its reads inside the block do not see them yet (nothing
    here reads them); other threads write as usual. Other storages (databases, memory, the storage actor) are
    written as usual. Relies on ``JournalStorage`` writing through its ``_backend`` (Optuna 4 and 5); if that
    changes, writes simply go one by one (``tests/search/test_storage.py`` notices).
    """
    parts = journal_parts(storage)
    # journal_parts gives parts of a JournalStorage only; the isinstance check says so to the type checker
    if parts is None or not isinstance(storage, optuna.storages.JournalStorage):
        yield
        return
    lock, backend = parts
    with lock:
        parts = journal_parts(storage)  # the same storage: not None; read again under its lock
        backend = parts[1] if parts is not None else backend
        if not isinstance(backend, _BatchingBackend):
            backend = _BatchingBackend(backend)
            set_journal_backend(storage, backend)
    batches = _BATCHES.__dict__.setdefault("held", {})
    if id(backend) in batches:  # nested: the outer block appends
        yield
        return
    held: list[JSONDict] = []
    batches[id(backend)] = held
    try:
        yield
    finally:
        del batches[id(backend)]
        if held:
            with lock:  # as JournalStorage's own writes: append, then read back
                backend.append_logs(held)
                sync_journal(storage)
