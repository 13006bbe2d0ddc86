"""Load and concurrency: 4 ``sparsearch run`` processes, one study name, one storage, one MLflow store.

Four driver processes join one Ray head (started here on free loopback ports) and run ``n_trials / 4`` trivial
trials each (``reliability_objectives:instant``: no training, so the controller, the Optuna storage and MLflow
are what is measured) on the same study name, storage and MLflow SQLite store. Afterwards every trial must be in
Optuna exactly once (numbers 0..n-1, all COMPLETE) and have exactly one MLflow child run; no process may report a
lock error or an MLflow failure.

Usage (figures go to BENCHMARKS.md, "Load and concurrency (issue 7)"):
    python bench/bench_load.py                      # embedded journal storage
    python bench/bench_load.py --postgres URL       # and the same against PostgreSQL
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "search"))
# the Ray head started here passes its environment to its workers: they must import the test objectives
if str(ROOT / "tests" / "search") not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "tests" / "search"),
                                                           os.environ.get("PYTHONPATH")) if p)

STUDY = """
[study]
name = "{name}"
n_trials = {n_trials}
objective = "reliability_objectives:instant"
sampler = "random"
pruner = "none"
[data]
generator = "click_log"
params = {{ n_rows = 500, n_noise = 2, max_cardinality = 50 }}
prefilter = "none"
[train]
epochs = 1
[execution]
workers = 2
cpus_per_trial = 0.5
[tracking]
log_model = false
"""

LOCK_WORDS = ("database is locked", "lock", "Traceback", "already exists")


def run_load(tmp: Path, *, storage: str | None = None, n_procs: int = 4, n_trials: int = 200,
             name: str | None = None, gcs: int | None = None, timeout: float = 600) -> dict:
    """Run the load once; return the figures and the raw findings (see the module docstring)."""
    import optuna
    from _procs import env
    from mlflow.tracking import MlflowClient

    from sparsearch.search.storage import open_storage

    name = name or f"load-{uuid.uuid4().hex[:8]}"
    results = tmp / "results"
    study = tmp / f"{name}.toml"
    study.write_text(STUDY.format(name=name, n_trials=n_trials // n_procs))
    cmd = [sys.executable, "-m", "sparsearch", "run", str(study), "--results", str(results), "--json", "--quiet"]
    if storage:
        cmd += ["--storage", storage]
    if gcs is not None:
        cmd += ["--ray-address", f"127.0.0.1:{gcs}"]
    pythonpath = os.pathsep.join([str(ROOT / "tests" / "search"), os.environ.get("PYTHONPATH", "")])
    start = time.perf_counter()
    procs = [subprocess.Popen([*cmd, "--seed", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env(PYTHONPATH=pythonpath)) for i in range(n_procs)]
    outs = [p.communicate(timeout=timeout) for p in procs]
    wall = time.perf_counter() - start
    docs, problems = [], []
    for p, (out, err) in zip(procs, outs):
        if p.returncode != 0:
            problems.append(f"exit {p.returncode}: {err.strip()[-500:]}")
            continue
        docs.append(json.loads(out))
        problems += [ln for ln in err.splitlines() if any(w in ln for w in LOCK_WORDS)]
        if docs[-1]["info"].get("mlflow_failures"):
            problems.append(f"{docs[-1]['info']['mlflow_failures']} MLflow failures")
    url = storage or f"journal:{results / 'optuna.journal'}"
    trials = optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)
    numbers = Counter(t.number for t in trials)
    states = Counter(t.state.name for t in trials)
    reasons = Counter(str(t.user_attrs.get("fail_reason", ""))[:120] for t in trials if t.state.name == "FAIL")
    complete = {t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    client = MlflowClient(tracking_uri=f"sqlite:///{results / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    child_numbers = Counter(r.data.tags["trial_number"] for r in runs if "mlflow.parentRunId" in r.data.tags)
    in_run = max((d["elapsed_s"] for d in docs), default=float("nan"))
    return {
        "backend": "postgresql" if storage and storage.startswith("postgres") else "journal",
        "processes": n_procs,
        "trials_expected": n_trials,
        "optuna_trials": len(trials),
        "optuna_complete": len(complete),
        "optuna_lost": n_trials - len(complete & set(range(n_trials))),
        "optuna_duplicated": sum(c - 1 for c in numbers.values()),
        "numbers_ok": sorted(numbers) == list(range(n_trials)),
        "mlflow_parent_runs": sum("mlflow.parentRunId" not in r.data.tags for r in runs),
        "mlflow_child_runs": sum(child_numbers.values()),
        "mlflow_lost": n_trials - len(set(child_numbers) & {str(i) for i in range(n_trials)}),
        "mlflow_duplicated": sum(c - 1 for c in child_numbers.values()),
        "states": dict(states),
        "fail_reasons": dict(reasons.most_common(3)),
        "problems": problems,
        "wall_s": round(wall, 2),
        "slowest_driver_s": in_run,
        "trials_per_s": round(n_trials / in_run, 2) if in_run == in_run else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", metavar="URL", help="also run against this PostgreSQL storage URL")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4)
    args = parser.parse_args()
    import tempfile

    from _procs import ray_head

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with ray_head(tmp) as head:
            for storage in [None, args.postgres] if args.postgres else [None]:
                sub = tmp / ("pg" if storage else "journal")
                sub.mkdir()
                row = run_load(sub, storage=storage, n_procs=args.processes, n_trials=args.trials, gcs=head["gcs"])
                print(json.dumps(row), flush=True)
                rows.append(row)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _results

    _results.save({"rows": rows})  # bench/results/<command>.json (the URL's password as ***), committed
    print("| storage | processes | trials | trials/s (slowest driver) | wall incl. start (s) | lost (Optuna / MLflow) "
          "| duplicated (Optuna / MLflow) | lock errors |")
    print("|---|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['processes']} | {r['trials_expected']} | {r['trials_per_s']} | {r['wall_s']} | "
              f"{r['optuna_lost']} / {r['mlflow_lost']} | {r['optuna_duplicated']} / {r['mlflow_duplicated']} | "
              f"{len(r['problems'])} |")


if __name__ == "__main__":
    main()
