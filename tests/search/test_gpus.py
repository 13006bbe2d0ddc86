"""GPUs: ``[execution] gpus_per_trial`` becomes Ray's ``num_gpus``; a study asking for GPUs the cluster lacks stops.

This machine has no GPU: a Ray started with logical GPUs (``num_gpus=2``) schedules and isolates trials exactly as
on GPU nodes (each task sees only its ``CUDA_VISIBLE_DEVICES``); torch finds no CUDA, so trials train on the CPU and
say so. Tests that need a Ray of their own run it in a subprocess (the test session shares one Ray).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from _procs import env

STUDY = """
[study]
name = "gpu"
n_trials = 5
objective = "sparsearch_test_objectives:gpu_probe"
[data]
generator = "click_log"
params = {{ n_rows = 1000, n_noise = 2, max_cardinality = 50 }}
prefilter = "none"
[train]
epochs = 1
[execution]
workers = {workers}
gpus_per_trial = {gpus}
"""


@pytest.mark.slow
def test_one_gpu_per_trial_on_two_logical_gpus_runs_two_trials_at_once_each_on_its_own_gpu(tmp_path):
    path = tmp_path / "gpu.toml"
    path.write_text(STUDY.format(workers=4, gpus=1))  # 4 requested in flight; Ray must hold it to 2
    script = textwrap.dedent(f"""
        import json, ray
        from mlflow.tracking import MlflowClient
        ray.init(address="local", num_cpus=4, num_gpus=2, include_dashboard=False,
                 object_store_memory=200_000_000, logging_level="ERROR", log_to_driver=False)
        from sparsearch.search.controller import run_study
        result = run_study({str(path)!r}, results_dir={str(tmp_path / "res")!r}, progress=False)
        client = MlflowClient(result.tracking_uri)
        runs = client.search_runs([client.get_experiment_by_name("gpu").experiment_id])
        tags = {{r.data.tags.get("trial_number"): r.data.tags.get("device") for r in runs
                if "mlflow.parentRunId" in r.data.tags}}
        print(json.dumps({{"trials": [{{"number": t.number, "state": t.state.name, **t.user_attrs}}
                                      for t in result.trials], "tags": tags}}))
        ray.shutdown()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    trials = doc["trials"]
    assert [t["state"] for t in trials] == ["COMPLETE"] * 5, trials
    for t in trials:
        assert t["cuda_visible_devices"] in ("0", "1") and t["gpu_ids"] == [t["cuda_visible_devices"]], t
        assert t["device"].startswith("cpu (Ray assigned GPU") and t["cuda_visible_devices"] in t["device"]
        assert doc["tags"][str(t["number"])] == t["device"]  # the child run records the device
    starts = sorted(t["ran"][0] for t in trials)
    overlap = 0
    for start in starts:
        running = [u for u in trials if u["ran"][0] <= start < u["ran"][1]]
        overlap = max(overlap, len(running))
        assert len({u["cuda_visible_devices"] for u in running}) == len(running), running  # distinct GPUs
    assert overlap == 2, starts  # at most 2 in flight, and 2 did run together


@pytest.mark.usefixtures("ray_session")
def test_asking_for_gpus_the_cluster_lacks_is_an_error_naming_the_resource(tmp_path):
    from sparsearch.errors import SpecError
    from sparsearch.search.controller import run_study

    path = tmp_path / "gpu.toml"
    path.write_text(STUDY.format(workers=1, gpus=1))
    with pytest.raises(SpecError, match=r"gpus_per_trial = 1 but no node .* \(resource 'GPU': 0 in the cluster"):
        run_study(path, results_dir=tmp_path / "res", progress=False, **{"tracking.enabled": False})


@pytest.mark.slow
def test_a_study_asking_for_gpus_the_cluster_lacks_stops_before_any_trial(tmp_path):
    path = tmp_path / "gpu.toml"
    path.write_text(STUDY.format(workers=1, gpus=0.5))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sparsearch", "run", str(path), "--results", str(tmp_path / "res"),
                           "--quiet"], capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gpus_per_trial = 0.5" in lines[0] and "'GPU': 0" in lines[0], lines
    assert time.monotonic() - start < 240  # no waiting on unschedulable tasks

    import optuna

    from sparsearch.search.storage import open_storage

    journal = tmp_path / "res" / "optuna.journal"
    studies = optuna.get_all_study_summaries(open_storage(f"journal:{journal}")) if journal.exists() else []
    assert studies == []  # not even created
