"""optuna-dashboard over a study's storage (``sparsearch dashboard``), bound to 127.0.0.1 by default.

The dashboard is served in this process, over the storage opened the way the driver opens it
(:func:`sparsearch.search.storage.open_storage`): a journal file with sparsearch's write lock, SQLite or
PostgreSQL. optuna-dashboard has no login and can edit notes and delete studies, so a non-loopback address is
refused unless the caller allows it explicitly.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sparsearch._redact import redact
from sparsearch._types import JSONDict
from sparsearch.errors import SpecError, closest
from sparsearch.search.storage import default_storage_url, env_storage_url, open_storage

__all__ = ["LOOPBACK_HOSTS", "Dashboard", "open_dashboard"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Addresses the dashboard binds without ``allow_remote``."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connections never keep the process alive after a stop


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log line per request (a browser makes dozens a second); errors are still printed."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if str(code).startswith("5"):
            super().log_request(code, size)


@dataclass
class Dashboard:
    """A dashboard listening on ``url`` (started by :func:`open_dashboard`; :meth:`serve` blocks)."""

    url: str
    storage: str
    studies: list[str]
    study_url: str | None
    server: WSGIServer = field(repr=False)
    _stopped: threading.Event = field(default_factory=threading.Event, repr=False)

    def serve(self) -> None:
        """Answer requests until :meth:`stop` is called (another thread) or ``KeyboardInterrupt``."""
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.server.server_close()
            self._stopped.set()

    def stop(self) -> None:
        """Stop :meth:`serve` (from another thread) and close the socket."""
        self.server.shutdown()
        self._stopped.wait(10)

    def to_json(self) -> JSONDict:
        return {"url": self.url, "study_url": self.study_url, "storage": self.storage, "studies": list(self.studies)}


def resolve_storage_url(storage: str | None, results_dir: str | os.PathLike[str]) -> str:
    """``storage``, else ``SPARSEARCH_STORAGE``, else the results folder's journal (as ``sparsearch run``)."""
    return storage or env_storage_url() or default_storage_url(Path(results_dir))


def open_dashboard(study: str | None = None, *, storage: str | None = None,
                   results_dir: str | os.PathLike[str] = "sparsearch-results", host: str = "127.0.0.1",
                   port: int = 8080, allow_remote: bool = False) -> Dashboard:
    """Bind optuna-dashboard to ``host:port`` over the study's storage; call :meth:`Dashboard.serve` to run it.

    Args:
        study: the study to open (its page is ``Dashboard.study_url``); ``None`` lists every study.
        storage: journal:PATH, sqlite:///PATH or postgresql://...; default as :func:`resolve_storage_url`.
        port: 0 picks a free port.
        allow_remote: bind an address other than 127.0.0.1/localhost/::1.

    Raises:
        SpecError: a non-loopback host without ``allow_remote``, a bad port, no such storage or study, or a
            port that is taken.
    """
    if host not in LOOPBACK_HOSTS and not allow_remote:
        raise SpecError(f"--host {host!r} is not a loopback address; optuna-dashboard has no login and can edit "
                        f"and delete studies, so it binds {', '.join(LOOPBACK_HOSTS)} only unless --allow-remote "
                        "is given")
    if not 0 <= port <= 65535:
        raise SpecError(f"--port must be in 0..65535 (0: any free port), got {port}")
    url = resolve_storage_url(storage, results_dir)
    if url.startswith("journal:") and not Path(url.removeprefix("journal:")).is_file():
        raise SpecError(f"no study storage at {url!r} (run a study first, or pass --storage / --results)")
    backend = open_storage(url)
    import optuna

    names = sorted(s.study_name for s in optuna.get_all_study_summaries(backend, include_best_trial=False))
    if study is not None and study not in names:
        hint = closest(study, names)
        there = f"studies there: {', '.join(names)}" if names else "that storage has no studies yet"
        raise SpecError(f"no study {study!r} in {redact(url)!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                        + f"; {there}")
    if not names:
        raise SpecError(f"storage {redact(url)!r} has no studies yet (run a study first)")
    try:
        import optuna_dashboard
    except ImportError:  # pragma: no cover - a required dependency; a broken install is still explained
        raise SpecError("optuna-dashboard is not installed: pip install optuna-dashboard") from None
    app = optuna_dashboard.wsgi(backend)
    server_class = _Server6 if ":" in host else _Server
    try:
        server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise SpecError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
    bound = server.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{bound}"
    study_url = None
    if study is not None:
        study_url = f"{base}/dashboard/studies/{backend.get_study_id_from_name(study)}"
    return Dashboard(url=f"{base}/dashboard", storage=redact(url), studies=names, study_url=study_url,
                     server=server)
