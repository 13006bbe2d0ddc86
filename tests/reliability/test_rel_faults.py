"""Faults not covered in tests/search (issue 7, requirement 3): the PostgreSQL storage restarted mid-study.

The study must finish or stop with a clear one-line error (exit 2), and every trial completed before the fault
must still be in storage and have its MLflow child run. After the fault (and, if it stopped, one more execution
that fails and re-queues what the stopped one left RUNNING), every finished trial is stored once and has exactly
one MLflow child run, as BENCHMARKS.md's fault table says. Needs root and PostgreSQL binaries (as .ci/run has): the
test starts its own throwaway server with .ci/postgres.sh so that it can restart it.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _faults import assert_one_child_run_per_trial, assert_stored_once

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _pg(action: str, folder: Path, port: int | None = None) -> str:
    cmd = ["bash", str(ROOT / ".ci" / "postgres.sh"), action, str(folder)] + ([str(port)] if port else [])
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout.strip()


@pytest.fixture
def own_postgres(tmp_path_factory):
    if not glob.glob("/usr/lib/postgresql/*/bin") or os.geteuid() != 0 or not shutil.which("runuser"):
        if os.environ.get("CI"):
            pytest.fail("CI must be able to start PostgreSQL (root, Debian postgresql package)")
        pytest.skip("needs root and PostgreSQL binaries to start and restart a server")
    from _procs import free_ports

    folder = Path(f"/tmp/sparsearch-pgfault-{os.getpid()}")
    (port,) = free_ports(1)
    url = _pg("start", folder, port)
    try:
        yield url, folder, port
    finally:
        _pg("stop", folder)
        shutil.rmtree(folder, ignore_errors=True)


def test_postgresql_restarted_mid_study_keeps_every_completed_trial(own_postgres, tmp_path):
    import optuna

    from sparsearch.search.storage import open_storage

    url, folder, port = own_postgres
    study = tmp_path / "pgfault.toml"
    study.write_text("""
[study]
name = "pgfault"
n_trials = 10
objective = "sparsearch_test_objectives:slow_quadratic"
pruner = "none"
[data]
generator = "click_log"
params = { n_rows = 500, n_noise = 2, max_cardinality = 50 }
prefilter = "none"
[execution]
workers = 1
heartbeat_interval = 0.5
stale_after = 3
[tracking]
log_model = false
""")
    results = tmp_path / "res"
    tracking = f"sqlite:///{results / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "search"),
                                                           os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "sparsearch", "run", str(study), "--storage", url, "--results",
                             str(results), "--json", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    before: dict[int, float] = {}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            try:
                trials = optuna.load_study(study_name="pgfault", storage=open_storage(url)).get_trials()
            except KeyError:
                continue
            done = {t.number: t.values[0] for t in trials if t.state.name == "COMPLETE"}
            if len(done) >= 2:
                before = done
                break
        assert before, "the study never completed two trials"
        _pg("stop", folder)
        time.sleep(3)
        _pg("start", folder, port)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err[-3000:]
    if proc.returncode != 0:  # stopped: with one clear line
        assert proc.returncode == 2, err[-3000:]
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "storage" in lines[0], err[-3000:]
    else:
        doc = json.loads(out)
        assert doc["n_complete"] + doc["n_failed"] >= 10
        assert_stored_once(doc["trials"])
        assert_one_child_run_per_trial(tracking, "pgfault", doc["trials"])
    trials = optuna.load_study(study_name="pgfault", storage=open_storage(url)).get_trials()
    stored = {t.number: t for t in trials}
    for number, value in before.items():  # nothing completed before the fault is lost
        assert stored[number].state.name == "COMPLETE" and stored[number].values == [value]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    exp = client.get_experiment_by_name("pgfault")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    logged = {int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags}
    assert set(before) <= logged

    # one more execution settles what the fault left (a stopped driver's RUNNING trial is failed as stale and
    # re-queued); then nothing is stored twice and each trial number has exactly one child run
    time.sleep(3.5)  # stale_after
    again = subprocess.run([sys.executable, "-m", "sparsearch", "run", str(study), "--storage", url, "--results",
                            str(results), "--n-trials", "1", "--json", "--quiet"], capture_output=True, text=True,
                           env=env, timeout=240)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = json.loads(again.stdout)["trials"]
    assert not [t for t in trials if t["state"] == "RUNNING"]
    assert_stored_once(trials)
    assert_one_child_run_per_trial(tracking, "pgfault", trials)
