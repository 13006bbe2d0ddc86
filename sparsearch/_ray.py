"""The one Ray connection helper of every wing: features/ shards counts on Ray, search/ runs trials on it, and
``compare`` runs several studies on one Ray.

:func:`connect_ray` starts a private loopback-only Ray or joins a cluster, and says whether it started it (the
caller then shuts it down); :func:`check_ray_reachable` fails in seconds on an address that does not answer.
"""

from __future__ import annotations

import logging
import os
import socket

from sparsearch.errors import ConnectionProblem, SpecError, first_line

__all__ = ["PRIVATE_RAY_ENV", "RAY_ENV", "check_ray_reachable", "connect_ray", "set_ray_env",
           "validate_ray_address"]

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
"""Set (unless already set) before any Ray start: Ray binds 127.0.0.1 and phones nowhere."""


PRIVATE_RAY_ENV = {"RAY_AUTH_MODE": "disabled"}
"""Also set for a private, loopback-only Ray (no token is needed, and none can leak)."""


def set_ray_env(*, private: bool = False) -> None:
    """Apply :data:`RAY_ENV` (values the user set win). Call before Ray's first import: it reads them once.

    ``private=True`` also applies :data:`PRIVATE_RAY_ENV`, for a program that starts its own local Ray processes
    (``ray.cluster_utils.Cluster`` in the benchmarks, or subprocesses that start one).
    """
    for key, value in {**RAY_ENV, **(PRIVATE_RAY_ENV if private else {})}.items():
        os.environ.setdefault(key, value)


def validate_ray_address(address: str) -> tuple[str, int] | None:
    """Check the syntax of a Ray address; return ``(host, port)``, or ``None`` for ``auto`` and ``local``.

    Ray Client addresses (``ray://``) are refused: in client mode the driver runs off the cluster, where the
    storage actor and the workers cannot reach what it opens (the journal file, the ranking shards' source, the
    MLflow writer); the driver must run on a node of the cluster (``ray job submit``, or ``HOST:PORT`` there).

    Example:
        >>> validate_ray_address("127.0.0.1:6379")
        ('127.0.0.1', 6379)
    """
    if address in ("auto", "local"):
        return None
    if address.startswith("ray://"):
        raise SpecError(f"Ray address {address!r}: Ray Client (ray://) is not supported, the driver must run on a "
                        "node of the cluster; submit the run with `ray job submit -- sparsearch run ...`, or give "
                        "the head's HOST:PORT from a cluster node")
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host or "/" in host or any(c.isspace() for c in host):
        raise SpecError(f"Ray address {address!r} is not understood; allowed: auto, local, HOST:PORT")
    return host, int(port)


def check_ray_reachable(address: str | None, timeout: float = 3.0) -> None:
    """Fail in seconds when a Ray address does not answer (``ray.init`` retries for minutes).

    ``None`` falls back to ``RAY_ADDRESS``; ``auto`` and ``local`` are left to ``ray.init``.

    Example:
        >>> check_ray_reachable("local")  # nothing to check
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        return
    target = validate_ray_address(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except (OSError, ValueError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ConnectionProblem(f"cannot connect to Ray at {address!r}: {reason}") from None


def connect_ray(address: str | None, *, num_cpus: int | None = None,
                object_store_memory: int | None = None) -> bool:
    """Start or join Ray. Returns whether this call started it (and so must shut it down).

    ``address``: ``None`` (then ``RAY_ADDRESS``, else a private Ray), ``"local"`` (a private Ray), ``"auto"`` or
    ``HOST:PORT`` (join that cluster). A private Ray binds 127.0.0.1 only and needs no token; ``num_cpus`` and
    ``object_store_memory`` size it (``None``: Ray's defaults) and are ignored when joining a cluster.

    When Ray is already initialised in this process (a program that uses Ray calls sparsearch), that Ray is used;
    an explicit ``HOST:PORT`` naming another cluster is an error rather than silently ignored.

    Raises:
        ConnectionProblem: the address does not answer or Ray refuses it (one line).
        SpecError: a malformed address, ``ray://``, or another cluster than the one this process joined.
    """
    set_ray_env()
    import ray

    if ray.is_initialized():
        _check_same_cluster(address, ray.get_runtime_context().gcs_address)
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    check_ray_reachable(address)
    try:
        if address and address != "local":
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # a private, loopback-only Ray: no token is needed (and none can leak)
            set_ray_env(private=True)
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, object_store_memory=object_store_memory)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from a malformed address
        msg = first_line(exc)
        raise ConnectionProblem(f"cannot connect to Ray at {address!r}: {msg[:300]}") from None
    return True


def _check_same_cluster(address: str | None, current: str | None) -> None:
    if not address or address.startswith("ray://") or not current:
        return
    wanted = validate_ray_address(address)
    if wanted is None:  # auto, local
        return
    host, _, port = current.rpartition(":")
    loopback = {"localhost", "127.0.0.1", "::1"}

    def same_host(a: str, b: str) -> bool:
        return a == b or (a in loopback and b in loopback)

    if not (same_host(wanted[0], host) and str(wanted[1]) == port):
        raise SpecError(f"Ray is already initialised in this process (cluster at {current}), so ray_address "
                        f"{address!r} cannot be joined; call ray.shutdown() first, or leave ray_address unset")
