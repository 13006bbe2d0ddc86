"""Ray helpers shared by every wing (features shards counts on Ray, search runs trials on it)."""

from __future__ import annotations

import os
import socket

from sparsearch.errors import ConnectionProblem

__all__ = ["check_ray_reachable"]


def check_ray_reachable(address: str | None, timeout: float = 3.0) -> None:
    """Fail in seconds when a Ray address names a ``[ray://]host:port`` that does not answer.

    ``ray.init`` retries an unreachable address for minutes. ``None`` falls back to ``RAY_ADDRESS``; ``auto``,
    ``local`` and addresses that are not ``host:port`` are left to ``ray.init``.

    Example:
        >>> check_ray_reachable("local")  # nothing to check
    """
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address or address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or "/" in host:
        return
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError, OverflowError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ConnectionProblem(f"cannot connect to Ray at {address!r}: {reason}") from None
