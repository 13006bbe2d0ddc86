"""Concurrency and load (issue 7, requirement 4): four driver processes share one study name, one storage and one
MLflow store for 200 trivial trials; every trial is recorded exactly once in Optuna and in MLflow, with no lock
error. The same against PostgreSQL. The figures of ``bench/bench_load.py`` (same code) are in BENCHMARKS.md."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    from _procs import ray_head

    with ray_head(tmp_path_factory.mktemp("ray-head")) as h:
        yield h


def check(row: dict) -> None:
    assert row["problems"] == [], row["problems"]
    assert row["numbers_ok"] and row["optuna_trials"] == row["trials_expected"], row
    assert row["optuna_lost"] == 0 and row["optuna_duplicated"] == 0, row
    assert row["mlflow_parent_runs"] == row["processes"], row
    assert row["mlflow_child_runs"] == row["trials_expected"], row
    assert row["mlflow_lost"] == 0 and row["mlflow_duplicated"] == 0, row


def test_four_drivers_share_the_journal_storage_and_mlflow_store(head, tmp_path):
    from bench_load import run_load

    check(run_load(tmp_path, gcs=head["gcs"], timeout=400))


@pytest.mark.postgres
def test_four_drivers_share_a_postgresql_storage(head, tmp_path):
    url = os.environ.get("SPARSEARCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide SPARSEARCH_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL server: set SPARSEARCH_TEST_POSTGRES_URL (bash .ci/postgres.sh start DIR PORT)")
    from bench_load import run_load

    check(run_load(tmp_path, storage=url, gcs=head["gcs"], timeout=400))
