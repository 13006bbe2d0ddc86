"""Ray helpers shared by every wing (features shards counts on Ray, search runs trials on it)."""

from __future__ import annotations

import os
import socket

from sparsearch.errors import ConnectionProblem, SpecError

__all__ = ["check_ray_reachable", "validate_ray_address"]


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
