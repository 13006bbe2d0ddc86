"""No shared filesystem: every task runs on a Ray node that cannot see the driver's results and data folders.

The head has no CPUs, so every task lands on the second node, whose processes run in their own mount namespace
with empty tmpfs mounts over the driver's results and data folders (``unshare --mount``, as root). A study with a
trial pruner, a distributed ranking of a folder of parquet files and ``compare`` must all succeed there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _procs import env, free_ports, listening_addresses, ray_head, stop_group

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent

STUDY = """
[study]
name = "hidden"
n_trials = 4
pruner = "median"
pruner_params = { n_startup_trials = 1, n_warmup_steps = 0 }
[data]
target = "click"
top_k = 4
[space]
depth = 1
width = [8, 16]
[train]
epochs = 2
batch_size = 256
[execution]
workers = 2
heartbeat_interval = 0.5
stale_after = 30
"""


def _namespaces_allowed(probe_dir: Path) -> str | None:
    """``None`` when this machine lets us mount a tmpfs in a new mount namespace, else why not."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "-o",
                               "size=1m", "tmpfs", str(probe_dir)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare is not available: {exc}"
    if proc.returncode != 0:
        return f"mount namespaces are forbidden here: {(proc.stderr or proc.stdout).strip()[:200]}"
    return None


def _cli(*args: str, timeout: float = 240) -> dict:
    proc = subprocess.run([sys.executable, "-m", "sparsearch", *args, "--json"], capture_output=True, text=True,
                          env=env(), timeout=timeout)
    assert proc.returncode == 0, f"sparsearch {args[0]} failed:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def test_study_ranking_and_compare_run_on_a_node_that_cannot_see_the_drivers_files(tmp_path):
    import optuna
    import psutil

    from sparsearch.features import make_click_log, rank_features
    from sparsearch.search.storage import open_storage

    reason = _namespaces_allowed(tmp_path / "probe")
    if reason is not None:
        pytest.skip(reason)
    results, data = tmp_path / "results", tmp_path / "data"
    results.mkdir()
    data.mkdir()
    frame = make_click_log(3000, n_noise=4, seed=0)
    for i in range(3):  # a folder of parquet files, several row groups each
        frame.slice(i * 1000, 1000).write_parquet(data / f"part-{i}.parquet", row_group_size=250)
    study = tmp_path / "hidden.toml"
    study.write_text(STUDY)

    with ray_head(tmp_path, num_cpus=0) as head:
        address = f"127.0.0.1:{head['gcs']}"
        metrics, agent, runtime_env = free_ports(3)
        mounts = " && ".join(f"mount -t tmpfs -o size=16m tmpfs {d}" for d in (results, data))
        cmd = (f"{mounts} && exec {sys.executable} {HERE / '_hidden_node.py'} {address} 2 {metrics} {agent} "
               f"{runtime_env}")
        log = open(tmp_path / "hidden-node.log", "w")
        node = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", cmd],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=env(), start_new_session=True)
        try:
            line = node.stdout.readline()
            assert line.startswith("READY "), f"the hidden node did not start: {line!r}"
            hidden_node_id = line.split()[1]

            # a task on that node: the driver's folders are there, but empty (its own tmpfs)
            probe = textwrap.dedent(f"""
                import json, os, ray
                ray.init(address={address!r}, logging_level="ERROR", log_to_driver=False)
                @ray.remote(num_cpus=1)
                def look():
                    return {{"node": ray.get_runtime_context().get_node_id(),
                            "results": os.listdir({str(results)!r}), "data": os.listdir({str(data)!r})}}
                print(json.dumps(ray.get(look.remote())))
                ray.shutdown()
            """)
            seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env(),
                                  timeout=120)
            assert seen.returncode == 0, seen.stderr[-2000:]
            view = json.loads(seen.stdout.strip().splitlines()[-1])
            assert view == {"node": hidden_node_id, "results": [], "data": []}, view
            assert sorted(p.name for p in data.iterdir()) == ["part-0.parquet", "part-1.parquet", "part-2.parquet"]

            run = _cli("run", str(study), "--data", str(data), "--ray-address", address, "--results", str(results))
            states = [t["state"] for t in run["trials"]]
            assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}, run["trials"]
            assert {t["user_attrs"]["ray_node"] for t in run["trials"]} == {hidden_node_id[:16]}
            assert (results / "optuna.journal").is_file() and (results / "mlflow.db").is_file()  # driver side
            # the trial pruner read each epoch's value from the study while trials ran: reported from the hidden
            # node through the storage actor, as the journal on the driver's side shows
            stored = optuna.load_study(study_name="hidden", storage=open_storage(f"journal:{results}/optuna.journal"))
            assert all(t.intermediate_values for t in stored.trials), [t.intermediate_values for t in stored.trials]

            # the ranking's row shards are counted on the hidden node, and give exactly the local ranking
            ranked = _cli("rank", str(data), "--target", "click", "--ray-address", address, "--no-report")["features"]
            local = rank_features(str(data), target="click")
            assert {r["n_rows"] for r in ranked} == {3000}
            assert {r["feature"]: r["score"] for r in ranked} == dict(zip(local["feature"], local["score"]))

            compared = _cli("compare", str(study), "--data", str(data), "--samplers", "tpe,random", "--seeds", "1",
                            "--n-trials", "2", "--ray-address", address, "--results", str(results), timeout=300)
            assert sorted(compared["runs"]) == ["random", "tpe"], compared["runs"]
            assert all(len(by_seed) == 1 for by_seed in compared["runs"].values())
            assert compared["report_path"] and Path(compared["report_path"]).is_file()  # written driver side

            pids = {node.pid, head["pid"]}
            for pid in list(pids):
                try:
                    pids |= {p.pid for p in psutil.Process(pid).children(recursive=True)}
                except psutil.NoSuchProcess:
                    pass
            addresses = listening_addresses(pids)
            assert addresses and addresses <= {"127.0.0.1", "::ffff:127.0.0.1"}, addresses
        finally:
            stop_group(node, grace=10)
            log.close()
