"""Database storages (SQLite, PostgreSQL, MySQL, ...) through Optuna's ``RDBStorage``: opening one, with a
PostgreSQL driver picked and the schema race of several new clients retried, and telling a backend failure."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage

from sparsearch._redact import redact
from sparsearch.errors import ConnectionProblem, SpecError, first_line

__all__ = ["is_backend_failure", "open_rdb"]


def open_rdb(url: str) -> BaseStorage:
    """An RDB storage (SQLite, PostgreSQL, MySQL, ...: any SQLAlchemy URL Optuna accepts) for ``url``.

    A PostgreSQL URL gets an installed driver; a server that cannot be reached is a :class:`ConnectionProblem`
    naming it without its password.
    """
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
        engine_kwargs: dict[str, object] = {"pool_pre_ping": True} if not scheme.startswith("sqlite") else {
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


def _rdb_with_schema_retry(url: str, engine_kwargs: dict[str, object], attempts: int = 4) -> BaseStorage:
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


def is_backend_failure(exc: BaseException) -> bool:
    """An error of the Optuna storage backend itself (its server went away), not of sparsearch's code."""
    from optuna.exceptions import StorageInternalError

    return isinstance(exc, StorageInternalError) or type(exc).__module__.startswith(("sqlalchemy", "psycopg"))
