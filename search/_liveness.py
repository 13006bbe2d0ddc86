"""Is a driver still alive? Its identity (host, process, start time) and a check that needs no waiting.

A driver records :func:`driver_identity` in the study with its heartbeats. Another driver on the same host (same
hostname, same kernel boot, same process-id namespace) can tell at once whether that process is gone: its pid no
longer exists, or now belongs to a process started at another time (pids are reused). Drivers on other hosts
cannot see the process and keep using the heartbeat age (``[execution] stale_after``).
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache

from sparsearch._types import JSONDict, JSONMapping

__all__ = ["driver_identity", "process_gone", "recorded_number", "same_host"]


@lru_cache(maxsize=1)
def _host_key() -> JSONDict:
    """What makes two processes' pids comparable: hostname, kernel boot id, pid namespace."""
    key: JSONDict = {"host": socket.gethostname()}
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            key["boot_id"] = fh.read().strip()
    except OSError:  # not Linux: the hostname alone
        pass
    try:
        key["pid_ns"] = os.stat("/proc/self/ns/pid").st_ino  # containers sharing a hostname and kernel
    except OSError:
        pass
    return key


def driver_identity() -> JSONDict:
    """This process as a JSON-able record: ``host``, ``pid``, ``started`` (process start time), and the host key.

    Example:
        >>> import os
        >>> driver_identity()["pid"] == os.getpid()
        True
    """
    import psutil

    return {**_host_key(), "pid": os.getpid(), "started": round(psutil.Process().create_time(), 2)}


def recorded_number(value: object) -> int | float | str:
    """A number read from a driver record, as ``int()`` and ``float()`` take it; ``TypeError`` (what they raise)
    for anything else (a record is JSON: a hand-edited or foreign one may hold ``null`` or a list)."""
    if isinstance(value, int | float | str):
        return value
    raise TypeError(f"a driver record holds {type(value).__name__} where a number belongs")


def same_host(record: JSONMapping) -> bool:
    """Whether ``record`` (a :func:`driver_identity`) names a process this process can look up."""
    here = _host_key()
    return all(record.get(k) == v for k, v in here.items())


def process_gone(record: JSONMapping) -> bool:
    """Whether the process ``record`` names is certainly gone; ``False`` when it lives or cannot be checked here.

    Example:
        >>> process_gone(driver_identity())
        False
    """
    import psutil

    if not isinstance(record, dict) or not same_host(record) or "pid" not in record:
        return False
    try:
        proc = psutil.Process(int(recorded_number(record["pid"])))
        started = proc.create_time()
        if abs(round(started, 2) - float(recorded_number(record.get("started", started)))) > 0.05:
            return True  # the same pid started at another moment is another process (pids are reused)
        return proc.status() == psutil.STATUS_ZOMBIE  # killed, not yet reaped by its parent
    except psutil.NoSuchProcess:
        return True
    except (psutil.AccessDenied, ValueError, TypeError):
        return False  # it exists (or cannot be told): the heartbeat age decides
