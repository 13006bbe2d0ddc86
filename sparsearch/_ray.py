"""Ray helpers shared by every wing (features shards counts on Ray, search runs trials on it)."""

from __future__ import annotations

import os
import socket

from sparsearch.errors import ConnectionProblem, SpecError

__all__ = ["check_ray_reachable", "validate_ray_address"]


def validate_ray_address(address: str) -> tuple[str, int] | None:
    """Check the syntax of a Ray address; return ``(host, port)``, or ``None`` for ``auto`` and ``local``.

    Example:
        >>> validate_ray_address("ray://127.0.0.1:10001")
        ('127.0.0.1', 10001)
    """
    if address in ("auto", "local"):
        return None
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not host or "/" in host or any(c.isspace() for c in host):
        raise SpecError(f"Ray address {address!r} is not understood; allowed: auto, local, HOST:PORT, "
                        "ray://HOST:PORT")
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
