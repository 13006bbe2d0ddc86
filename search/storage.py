"""Optuna storage: URL handling, journal batching and locking, and the storage actor for workers that need it.

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

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalFileOpenLock

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from sparsearch._redact import redact
from sparsearch.errors import ConnectionProblem, SpecError, first_line
from sparsearch.search._internals import BaseJournalFileLock, journal_parts, set_journal_backend, sync_journal

__all__ = ["IDEMPOTENT", "RayStorageProxy", "StorageActorLost", "StorageServer", "absolute_storage_url", "batched_writes",
           "default_storage_url", "is_backend_failure", "is_memory_url", "is_storage_outage", "open_storage"]

def default_storage_url(results_dir: Path) -> str:
    """The embedded default: a journal file in the results folder."""
    return f"journal:{(results_dir / 'optuna.journal').resolve()}"


_BATCHES = threading.local()
"""Per thread: the journal backends (by id) whose writes are being held, and the logs held for each."""


class _BatchingBackend:
    """A journal backend that holds the appends a thread makes inside :func:`batched_writes` and writes the rest."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        held = getattr(_BATCHES, "held", {}).get(id(self))
        if held is not None:
            held.extend(logs)
        else:
            self._inner.append_logs(logs)

    def __getattr__(self, name: str) -> Any:  # read_logs and anything else: the real backend
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
    if parts is None:
        yield
        return
    lock, backend = parts
    with lock:
        backend = journal_parts(storage)[1]  # type: ignore[index]
        if not isinstance(backend, _BatchingBackend):
            backend = _BatchingBackend(backend)
            set_journal_backend(storage, backend)  # type: ignore[arg-type]
    batches = _BATCHES.__dict__.setdefault("held", {})
    if id(backend) in batches:  # nested: the outer block appends
        yield
        return
    held: list[dict[str, Any]] = []
    batches[id(backend)] = held
    try:
        yield
    finally:
        del batches[id(backend)]
        if held:
            with lock:  # as JournalStorage's own writes: append, then read back
                backend.append_logs(held)
                sync_journal(storage)  # type: ignore[arg-type]


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
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{Path(path).expanduser().absolute()}"
    return url


def is_journal(url: str) -> bool:
    """Whether ``url`` names a journal file (``journal:PATH`` or a path ending in ``.journal``/``.log``)."""
    return url.startswith("journal:") or url.endswith((".journal", ".log"))


def journal_path(url: str) -> Path:
    """The file of a journal storage URL."""
    return Path(url.removeprefix("journal:").removeprefix("//"))


def open_storage(url: str) -> BaseStorage:
    """Open an Optuna storage from a sparsearch storage URL.

    Accepted: ``journal:PATH`` (or a path ending in ``.journal``/``.log``), ``sqlite:///PATH``,
    ``postgresql://...``, ``mysql://...`` (any SQLAlchemy URL Optuna accepts), and ``memory``.
    """
    if is_memory_url(url):
        return optuna.storages.InMemoryStorage()
    if is_journal(url):
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
    scheme = url.split(":", 1)[0] if "://" in url else ""
    if scheme.split("+")[0] not in ("sqlite", "postgresql", "postgres", "mysql", "oracle", "mssql"):
        raise SpecError(
            f"storage URL {redact(url)!r} is not understood; allowed: journal:PATH, sqlite:///PATH, "
            "postgresql://USER:PASSWORD@HOST:PORT/DB, mysql://..., memory"
        )
    if scheme == "postgres":
        url = "postgresql" + url[len("postgres"):]
        scheme = "postgresql"
    if scheme == "postgresql":
        url = _postgres_driver(url)
    if scheme.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and not Path(path).parent.exists():
            raise SpecError(f"storage {url!r}: folder {str(Path(path).parent)!r} does not exist")
    try:
        engine_kwargs = {"pool_pre_ping": True} if not scheme.startswith("sqlite") else {
            "connect_args": {"timeout": 60}}
        # not wrapped in Optuna's _CachedStorage: its cache raises KeyError for a trial another process created
        # (several drivers on one study: every trial failed), and here the driver and the storage actor are two
        # clients of the same study
        return _rdb_with_schema_retry(url, engine_kwargs)
    except ModuleNotFoundError as exc:
        raise SpecError(f"storage {redact(url)!r} needs the Python driver {exc.name!r}: pip install it") from None
    except Exception as exc:  # SQLAlchemy OperationalError and friends: say which server, never the password.
        reason = redact(first_line(exc))
        raise ConnectionProblem(f"cannot open storage {redact(url)!r}: {reason}") from None


def _journal_lock(path: str) -> Any:
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
        self._queue: Any = None

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

    def __getstate__(self) -> dict[str, Any]:
        return {"_path": self._path, "_inner": self._inner, "_queue": None}


def _rdb_with_schema_retry(url: str, engine_kwargs: dict[str, Any], attempts: int = 4) -> BaseStorage:
    """Open an RDB storage; retry when another client is creating the schema at the same moment.

    Several drivers starting together on a new PostgreSQL database race on ``CREATE TABLE`` (a unique violation
    on ``pg_type`` or "already exists"); the loser's next attempt finds the tables and goes on.
    """
    import random
    import time

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:
            text = str(exc).lower()
            racing = "duplicate key" in text or "already exists" in text or "uniqueviolation" in text
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")  # pragma: no cover


def _postgres_driver(url: str) -> str:
    """Pick an installed PostgreSQL driver for a plain ``postgresql://`` URL.

    SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; fall back to psycopg2 when only that is installed, and
    say how to install a driver when neither is.
    """
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        return url
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2" + url[len("postgresql"):]
    raise SpecError(f"storage {redact(url)!r} needs a PostgreSQL driver: pip install 'sparsearch[postgres]' "
                    "(psycopg 3)")


class StorageServer:
    """Owns one Optuna storage; every call is made here. Run as a Ray actor (see :func:`start_storage_server`)."""

    def __init__(self, url: str) -> None:
        self._storage = open_storage(url)

    def call(self, method: str, args: tuple, kwargs: dict) -> tuple[bool, Any]:
        try:
            return True, getattr(self._storage, method)(*args, **kwargs)
        except Exception as exc:  # returned, re-raised by the proxy with its own type
            return False, exc

    def ping(self) -> bool:
        return True


def start_storage_server(url: str, *, wait: bool = True) -> Any:
    """Start the storage actor on this (the driver's) node; with ``wait``, until its storage is open.

    Without ``wait`` the actor's process starts in the background (about a second here) while trials run; its
    first caller waits for it. The driver uses that when it has opened the same storage itself already (so the
    URL is known to work) and workers need the actor only for what they cannot do locally.

    Restarts: an actor over a file or a database is restarted by Ray when its process dies (it reopens the same
    storage); an in-memory study lives in the actor alone, so that actor is never restarted (a restart would
    silently start an empty study). Ray never re-sends a call itself (``max_task_retries=0``): the proxy retries
    only calls that are safe to repeat (see :data:`IDEMPOTENT`).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    restarts = 0 if is_memory_url(url) else -1
    actor_cls = ray.remote(num_cpus=0, max_restarts=restarts, max_task_retries=0)(StorageServer)
    actor = actor_cls.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False),
        runtime_env={"env_vars": {"OPTUNA_DISABLE_PROGRESS": "1"}},
    ).remote(url)
    if not wait:
        return actor
    try:
        ray.get(actor.ping.remote())
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        inner = getattr(cause, "cause", None) or cause
        if isinstance(inner, (SpecError, ConnectionProblem)):
            raise inner from None
        raise ConnectionProblem(f"cannot open storage {redact(url)!r}: {redact(first_line(inner))}") from None
    return actor


IDEMPOTENT = frozenset({
    "get_all_studies", "get_all_trials", "get_best_trial", "get_n_trials", "get_study_directions",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_system_attrs", "get_study_user_attrs",
    "get_trial", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id", "get_trial_param",
    "get_trial_params", "get_trial_system_attrs", "get_trial_user_attrs", "check_trial_is_updatable",
    "set_study_system_attr", "set_study_user_attr", "set_trial_intermediate_value", "set_trial_param",
    "set_trial_system_attr", "set_trial_user_attr",
})
"""Storage calls that give the same study when made twice (reads, and writes of a value under a key). Everything
else (``create_new_trial``, ``create_new_study``, ``set_trial_state_values``, deletions) is sent at most once: if
the actor died during the call, it may or may not have been applied."""


class StorageActorLost(ConnectionProblem):
    """The storage actor died during a call that cannot be repeated safely, or with the only copy of the study."""


def is_backend_failure(exc: BaseException) -> bool:
    """An error of the Optuna storage backend itself (its server went away), not of sparsearch's code."""
    from optuna.exceptions import StorageInternalError

    return isinstance(exc, StorageInternalError) or type(exc).__module__.startswith(("sqlalchemy", "psycopg"))


def is_storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the study's storage could not be reached (not that a call was wrong): the storage
    actor died, a worker cannot reach the storage, or the database backend failed."""
    return isinstance(exc, (StorageActorLost, ConnectionProblem)) or is_backend_failure(exc)


class RayStorageProxy(BaseStorage):
    """A :class:`BaseStorage` that forwards every call to a :class:`StorageServer` actor.

    When the actor's process dies (its node's OOM killer, a crash), Ray restarts it over the same storage, and a
    call in :data:`IDEMPOTENT` is sent again (up to ``retries`` times); any other call, and every call to an
    in-memory study's actor (never restarted: the study died with it), raises :class:`StorageActorLost`. Errors
    the storage itself raises (a finished trial, a database outage) come back with their own type, never retried.
    """

    def __init__(self, actor: Any, *, retries: int = 3) -> None:
        self._actor = actor
        self._retries = retries

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        import time

        import ray

        attempt = 0
        while True:
            try:
                ok, value = ray.get(self._actor.call.remote(method, args, kwargs))
                break
            except ray.exceptions.RayActorError as exc:  # ActorDiedError, ActorUnavailableError (restarting)
                if method not in IDEMPOTENT or attempt >= self._retries:
                    first = first_line(exc, limit=200)
                    if not self._retries:
                        what = "the in-memory study was lost with it"
                    elif method not in IDEMPOTENT:
                        what = "the call was not repeated: it may or may not have been applied"
                    else:
                        what = f"it did not come back after {attempt} retries"
                    raise StorageActorLost(f"the study's storage actor died during {method}: {what} "
                                           f"({type(exc).__name__}: {first})") from None
                attempt += 1
                time.sleep(min(2.0, 0.2 * 2 ** attempt))  # Ray restarts the actor's process meanwhile
        if not ok:
            raise value
        return value

    def __reduce__(self) -> tuple:
        return (_proxy, (self._actor, self._retries))


def _proxy(actor: Any, retries: int) -> RayStorageProxy:
    return RayStorageProxy(actor, retries=retries)


def _forwarder(name: str) -> Any:
    def method(self: RayStorageProxy, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"Forwarded to the storage actor: ``BaseStorage.{name}``."
    return method


_FORWARDED = sorted(BaseStorage.__abstractmethods__) + [
    "get_best_trial", "get_n_trials", "get_trial_id_from_study_id_trial_number", "get_trial_number_from_id",
    "get_trial_param", "get_trial_params", "get_trial_system_attrs", "get_trial_user_attrs", "check_trial_is_updatable",
]
for _name in _FORWARDED:
    setattr(RayStorageProxy, _name, _forwarder(_name))
RayStorageProxy.__abstractmethods__ = frozenset()
del _name


def env_storage_url() -> str | None:
    """``SPARSEARCH_STORAGE`` from the environment, if set."""
    return os.environ.get("SPARSEARCH_STORAGE") or None
