"""Fixtures of the features tests: one local Ray per session (reused if already running) and small data."""

from __future__ import annotations

import os

import pytest

for _key, _value in {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}.items():
    os.environ.setdefault(_key, _value)


@pytest.fixture(scope="session")
def features_ray(ray_session):
    """The session's local Ray (tests/conftest.py)."""
    return ray_session


@pytest.fixture(scope="session")
def click20k():
    from sparsearch.features import make_click_log

    return make_click_log(20_000, n_noise=12, seed=3)
