"""Ray clusters and faults that need their own processes: job submission, several nodes, a killed driver,
an MLflow server (REST API) that goes away mid-study. Everything binds 127.0.0.1 and is stopped by the test."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest
from _faults import assert_one_child_run_per_trial, assert_stored_once
from _procs import env, mlflow_server, ray_head, stop_group
from optuna.trial import TrialState

pytestmark = pytest.mark.slow

STUDY = """
[study]
name = "{name}"
n_trials = {n_trials}
objective = "sparsearch_test_objectives:{objective}"
[data]
generator = "click_log"
params = {{ n_rows = 2000, n_noise = 4, max_cardinality = 200 }}
[train]
epochs = 1
[execution]
workers = 2
heartbeat_interval = 0.5
stale_after = {stale_after}
"""


def study_file(tmp_path, name="s", n_trials=4, objective="quadratic", stale_after=60):
    path = tmp_path / f"{name}.toml"
    path.write_text(STUDY.format(name=name, n_trials=n_trials, objective=objective, stale_after=stale_after))
    return path


def test_ray_job_submit_runs_a_study_on_a_head_with_non_default_ports(tmp_path):
    with ray_head(tmp_path) as head:
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "job", "submit", "--address",
               f"http://127.0.0.1:{head['dashboard']}", "--", "sparsearch", "run", str(study_file(tmp_path)),
               "--results", str(tmp_path / "res"), "--json"]
        for _attempt in range(10):  # the job agent may need a few seconds after the dashboard is up
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), timeout=300)
            if "No available agent" not in proc.stdout + proc.stderr:
                break
            time.sleep(3)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert "succeeded" in proc.stdout + proc.stderr
    from sparsearch.search.controller import load_result

    result = load_result("s", results_dir=tmp_path / "res")
    assert len(result.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in result.trials)


def test_three_node_cluster_spreads_trials_and_binds_loopback_only(tmp_path):
    script = textwrap.dedent(f"""
        import json, os, psutil, ray
        from ray.cluster_utils import Cluster
        from sparsearch.search.controller import run_study
        from sparsearch.search.spec import load_study
        cluster = Cluster(initialize_head=True, head_node_args={{"num_cpus": 1, "include_dashboard": False}})
        cluster.add_node(num_cpus=1)
        cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address)
        spec = load_study({str(study_file(tmp_path, n_trials=6, objective="slow_quadratic"))!r}, workers=3)
        result = run_study(spec, results_dir={str(tmp_path / "res")!r}, progress=False)
        pids = {{p.pid for p in psutil.Process().children(recursive=True)}}
        listening = sorted({{c.laddr.ip for c in psutil.net_connections("inet")
                            if c.status == psutil.CONN_LISTEN and c.pid in pids}})
        print(json.dumps({{"nodes": sorted({{t.user_attrs.get("ray_node") for t in result.trials}}),
                          "states": [t.state.name for t in result.trials], "listening": listening,
                          "n_nodes": len(ray.nodes())}}))
        ray.shutdown()
        cluster.shutdown()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["n_nodes"] == 3
    assert len(doc["states"]) == 6 and set(doc["states"]) <= {"COMPLETE", "PRUNED"}
    assert len(doc["nodes"]) >= 2, doc["nodes"]
    assert doc["listening"] and set(doc["listening"]) <= {"127.0.0.1", "::ffff:127.0.0.1"}, doc["listening"]


def test_killed_driver_resumes_and_loses_nothing(tmp_path):
    import optuna

    from sparsearch.search.storage import open_storage

    path = study_file(tmp_path, name="killed", n_trials=12, objective="slow_quadratic", stale_after=1)
    results = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "sparsearch", "run", str(path), "--results", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                            start_new_session=True)
    journal = results / "optuna.journal"
    deadline = time.monotonic() + 180
    complete_before: dict[int, float] = {}
    try:
        while time.monotonic() < deadline:
            time.sleep(0.5)
            if not journal.exists():
                continue
            try:
                study = optuna.load_study(study_name="killed", storage=open_storage(f"journal:{journal}"))
            except KeyError:  # the driver has not created the study yet
                continue
            done = [t for t in study.trials if t.state == TrialState.COMPLETE]
            running = [t for t in study.trials if t.state == TrialState.RUNNING]
            if len(done) >= 2 and running:
                complete_before = {t.number: t.values[0] for t in done}
                break
        assert complete_before, "the driver never got two trials done"
    finally:
        stop_group(proc, grace=0)  # SIGKILL-equivalent for the driver and its local Ray
    resumed = subprocess.run([sys.executable, "-m", "sparsearch", "run", str(path), "--results", str(results),
                              "--n-trials", "2", "--json"], capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = json.loads(resumed.stdout)
    states = {t["number"]: t for t in doc["trials"]}
    assert not [t for t in doc["trials"] if t["state"] == "RUNNING"]
    for number, value in complete_before.items():  # nothing completed before the kill is lost
        assert states[number]["state"] == "COMPLETE" and states[number]["values"] == [value]
    stale = [t for t in doc["trials"] if "stale" in str(t["user_attrs"].get("fail_reason", ""))]
    assert stale, "the dead driver's RUNNING trials were not failed"
    retried = {t["user_attrs"].get("retry_of") for t in doc["trials"]} - {None}
    assert {t["number"] for t in stale} <= retried
    # each finished trial stored once, one MLflow child run per trial number (the dead driver's parent run
    # and the resumed one's together)
    assert_stored_once(doc["trials"])
    assert_one_child_run_per_trial(f"sqlite:///{results / 'mlflow.db'}", "killed", doc["trials"])


def test_a_sigkilled_driver_is_seen_dead_at_once_by_the_next_driver_on_its_host(tmp_path):
    """With stale_after far longer than the test, only the dead driver's process record can free its trials."""
    import os
    import signal

    import optuna

    from sparsearch.search.storage import open_storage

    path = study_file(tmp_path, name="sigkill", n_trials=12, objective="slow_quadratic", stale_after=600)
    results = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "sparsearch", "run", str(path), "--results", str(results)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(),
                            start_new_session=True)
    journal = results / "optuna.journal"
    deadline = time.monotonic() + 180
    running_at_kill: set[int] = set()
    try:
        while time.monotonic() < deadline and not running_at_kill:
            time.sleep(0.3)
            if not journal.exists():
                continue
            try:
                study = optuna.load_study(study_name="sigkill", storage=open_storage(f"journal:{journal}"))
            except KeyError:
                continue
            trials = study.trials
            if any(t.state == TrialState.COMPLETE for t in trials):
                running_at_kill = {t.number for t in trials if t.state == TrialState.RUNNING}
        assert running_at_kill, "the driver never had a trial complete and others running"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and its local Ray, no clean-up at all
        proc.wait(30)
    finally:
        stop_group(proc, grace=0)
    start = time.monotonic()
    resumed = subprocess.run([sys.executable, "-m", "sparsearch", "run", str(path), "--results", str(results),
                              "--n-trials", "1", "--json"], capture_output=True, text=True, env=env(), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert time.monotonic() - start < 300
    doc = json.loads(resumed.stdout)
    assert not [t for t in doc["trials"] if t["state"] == "RUNNING"], doc["trials"]
    gone = {t["number"] for t in doc["trials"] if "is gone" in str(t["user_attrs"].get("fail_reason", ""))}
    assert running_at_kill <= gone | {t["number"] for t in doc["trials"] if t["state"] == "COMPLETE"}
    assert gone, "the dead driver's trials were not failed by its process record"
    retried = {t["user_attrs"].get("retry_of") for t in doc["trials"]} - {None}
    assert gone <= retried  # and re-queued, then run by the resumed driver
    assert {t["state"] for t in doc["trials"] if t["user_attrs"].get("retry_of") in gone} <= {"COMPLETE", "PRUNED"}


@pytest.mark.usefixtures("ray_session")
def test_mlflow_server_rest_api_and_an_outage_mid_study(tmp_path):
    """Runs are browsable through the server's REST API; when the server dies mid-study, trials go on, and the
    missing child runs are written by the next execution once the server is back."""
    import urllib.request

    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import load_study

    db = tmp_path / "mlflow.db"

    def search_runs(uri: str, experiment: str) -> list[dict]:
        req = urllib.request.Request(f"{uri}/api/2.0/mlflow/experiments/get-by-name?experiment_name={experiment}")
        exp_id = json.load(urllib.request.urlopen(req))["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [exp_id], "max_results": 1000}).encode()
        req = urllib.request.Request(f"{uri}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        return json.load(urllib.request.urlopen(req)).get("runs", [])

    spec = load_study(study_file(tmp_path, name="srv", n_trials=3))
    spec2 = load_study(study_file(tmp_path, name="srv2", n_trials=4, objective="slow_quadratic"))
    with mlflow_server(tmp_path, db) as uri:
        result = run_study(spec, results_dir=tmp_path / "res", progress=False, tracking_uri=uri)
        runs = search_runs(uri, "srv")
        tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in runs]
        parent = [r for r, tg in zip(runs, tags) if "mlflow.parentRunId" not in tg]
        assert [p["info"]["run_id"] for p in parent] == [result.mlflow_parent_run_id]
        assert sum(tg.get("mlflow.parentRunId") == result.mlflow_parent_run_id for tg in tags) == 3

        # now the server dies while the next study runs (after the start-up check passed)
        import threading

        from sparsearch.search import controller

        original = controller._drive

        def drive_then_kill(ex, *args, **kwargs):
            def kill_soon():
                time.sleep(2.5)
                for proc in _server_processes(uri):
                    proc.kill()

            threading.Thread(target=kill_soon, daemon=True).start()
            return original(ex, *args, **kwargs)

        controller._drive = drive_then_kill
        try:
            start = time.monotonic()
            outage = run_study(spec2, results_dir=tmp_path / "res", progress=False, tracking_uri=uri)
            assert time.monotonic() - start < 90  # logging failures do not stall the study
        finally:
            controller._drive = original
    assert len(outage.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in outage.trials)  # nothing lost
    with mlflow_server(tmp_path, db) as uri:
        run_study(spec2, results_dir=tmp_path / "res", progress=False, tracking_uri=uri, n_trials=1)
        runs = search_runs(uri, "srv2")
        children = [r for r in runs if any(t["key"] == "mlflow.parentRunId" for t in r["data"].get("tags", []))]
        numbers = sorted(int(t["value"]) for r in children for t in r["data"]["tags"] if t["key"] == "trial_number")
        assert numbers == list(range(5))  # exactly one child run per trial after the backfill
        assert all(r["info"]["status"] != "RUNNING" for r in children)
    from sparsearch.search.controller import load_result

    trials = load_result("srv2", results_dir=tmp_path / "res").trials
    assert len(trials) == 5
    assert_stored_once(trials)
    assert_one_child_run_per_trial(f"sqlite:///{db}", "srv2", trials)


def _server_processes(uri: str):
    import psutil

    port = int(uri.rsplit(":", 1)[1])
    pids = {c.pid for c in psutil.net_connections("inet") if c.laddr.port == port and c.pid}
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
            parent = p.parent()
            if parent is not None and "mlflow" in " ".join(parent.cmdline()):
                procs += [parent]
        except psutil.NoSuchProcess:
            pass
    return procs


def test_local_ray_started_by_sparsearch_binds_loopback_only(tmp_path):
    """Every server of the local Ray listens on 127.0.0.1 only, and none is left listening after shutdown."""
    script = textwrap.dedent("""
        import json, time, psutil
        from _procs import listening_addresses
        from sparsearch._ray import connect_ray
        assert connect_ray(None)
        import ray
        pids = {p.pid for p in psutil.Process().children(recursive=True)}
        during = sorted(listening_addresses(pids))
        ray.shutdown()
        deadline = time.monotonic() + 30
        while listening_addresses(pids) and time.monotonic() < deadline:
            time.sleep(0.5)
        print(json.dumps({"during": during, "after": sorted(listening_addresses(pids))}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env(), timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    addresses = set(doc["during"])
    assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
    assert doc["after"] == [], f"servers still listening after ray.shutdown(): {doc['after']}"
