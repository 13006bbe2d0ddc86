"""Test-wide setup: Ray binds 127.0.0.1 only and phones nowhere; one local Ray per test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

for _key, _value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_AUTH_MODE": "disabled",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "OMP_NUM_THREADS": "1",
}.items():
    os.environ.setdefault(_key, _value)
# Ray workers inherit the environment of the process that starts Ray: make the test helper modules
# (custom objectives in tests/search/) importable there.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS / "search"), os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, str(TESTS / "search"))
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole session (2 CPUs, no dashboard, small object store); stopped at the end."""
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200_000_000,
                 logging_level="ERROR", log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()
