"""Warm starts, the start-up choice, data preparation timing and the encoding cache in real studies on Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_controller import mlflow_runs, run, tiny

from sparsearch.search import records

pytestmark = pytest.mark.usefixtures("ray_session")


def test_portfolio_run_marks_trials_records_choices_and_reuses_the_encoding(tmp_path):
    raw = tiny("warm", n_trials=4, warm_start="portfolio")
    raw["space"]["distributions"] = ["uniform", "erk"]
    first = run(raw, tmp_path)
    doc = first.to_json()
    marks = [t["user_attrs"].get("warm_start") for t in doc["trials"]]
    assert marks[:3] == ["portfolio"] * 3 and marks[3] is None  # 3 MLP entries, then the sampler
    info = doc["info"]
    assert info["warm_start"]["mode"] == "portfolio" and info["warm_start"]["enqueued"] == 3
    assert any("clipped to this space" in n for n in info["warm_start"]["notes"])  # width [8, 32]
    assert any("clipped to this space" in n for n in info["notes"])
    assert info["startup"] == {"n_startup_trials": 2, "source": "n_trials", "fraction": 0.2,
                               "estimated_trials": None, "timeout_estimate": "throughput",
                               "warm_start_trials_count": True}
    assert info["prepare_s"] > 0 and info["prepare_s"] >= info["timings"]["encode_s"]
    assert info["encoding_cached"] is False
    client, runs = mlflow_runs(tmp_path, "warm")
    tagged = {r.data.tags.get("trial_number"): r.data.tags.get(records.WARM_START) for r in runs
              if "trial_number" in r.data.tags}
    assert tagged["0"] == tagged["1"] == tagged["2"] == "portfolio" and tagged["3"] is None

    again = run(raw, tmp_path, n_trials=1)  # resume: the portfolio is not enqueued twice
    info = again.to_json()["info"]
    assert info["warm_start"]["enqueued"] == 0
    assert sum(records.warm_source(t) == "portfolio" for t in again.trials) == 3
    assert len(again.trials) == 5
    assert info["encoding_cached"] is True  # same data, split and encoder: the encoded rows came from the cache


def test_warm_start_from_a_missing_study_exits_2_naming_the_studies(tmp_path):
    run(tiny("first", n_trials=1), tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sparsearch", "run", "quickstart", "--study-name", "second", "--n-trials", "1",
         "--warm-start", "study:nope",
         "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "study:nope" in last and "studies there: 'first'" in last


def test_timeout_study_sets_its_startup_from_the_first_trials(tmp_path):
    result = run(tiny("timed", n_trials=50, timeout=15.0), tmp_path)
    startup = result.to_json()["info"]["startup"]
    assert startup["source"] == "timeout"  # provisional (a fifth of 50: 10) until the first 2 trials ended
    expected = startup["estimated_trials"]
    assert 0 < expected <= 50
    assert startup["n_startup_trials"] == max(2, round(expected / 5)) <= 10
