"""Helpers for tests that start their own servers: free loopback ports, process groups stopped for sure."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_AUTH_MODE": "disabled",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, **ENV, **extra}
    out.pop("RAY_ADDRESS", None)
    return out


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Stop a process started with start_new_session=True and everything in its process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def wait_http(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def ray_head(tmp: Path, num_cpus: int = 2) -> Iterator[dict[str, int]]:
    """A Ray head on 127.0.0.1 with every port chosen free (6379 may be taken), stopped at exit."""
    gcs, dash, agent, agent_grpc, rt_env, metrics = free_ports(6)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
           "--node-ip-address=127.0.0.1", f"--port={gcs}", "--dashboard-host=127.0.0.1",
           f"--dashboard-port={dash}", f"--dashboard-agent-listen-port={agent}",
           f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={rt_env}",
           f"--metrics-export-port={metrics}", f"--num-cpus={num_cpus}", "--include-dashboard=true"]
    log = open(tmp / "ray-head.log", "w")
    # several drivers share this 2-CPU head: Ray kills a worker idle for 1 s once a node has more workers than
    # CPUs, so each driver's trial workers were killed and restarted between trials (90+ worker processes, 3-5x
    # slower); keep idle workers for a minute
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env(RAY_idle_worker_killing_time_threshold_ms="60000"))
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version")
        yield {"gcs": gcs, "dashboard": dash, "pid": proc.pid}
    finally:
        stop_group(proc)
        log.close()


@contextlib.contextmanager
def mlflow_server(tmp: Path, db: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    log = open(tmp / f"mlflow-{port}.log", "w")
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{db}",
           "--default-artifact-root", (tmp / "mlartifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env(), start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_group(proc)
        log.close()


def listening_addresses(pids: set[int]) -> set[str]:
    import psutil

    out = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            out.add(conn.laddr.ip)
    return out
