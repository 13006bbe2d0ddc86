"""Controller benchmarks (issue 5): overhead per trial against plain Optuna, 2-worker scaling, 3 simulated nodes.

    python bench/bench_controller.py overhead --trials 200 --repeats 3
    python bench/bench_controller.py scaling --trials 8
    python bench/bench_controller.py nodes --trials 60
    python bench/bench_controller.py growth --trials 10000 --tune-trials 500 --profile FILE   # issue 12, item 5

Each prints one JSON document; ratios are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from sparsearch._ray import connect_ray, set_ray_env

HERE = Path(__file__).resolve().parent
# the package's Ray settings before any Ray start: the simulated clusters below start Ray's processes themselves
set_ray_env(private=True)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, str(HERE))
REPO = str(HERE.parent)
"""This checkout: its files count as sparsearch's in the profile."""

import _results  # noqa: E402  (bench/ is not a package)

SAMPLER = "tpe"
"""The sampler of the overhead benchmark (--sampler); both contenders use it."""


def study(name: str, objective: str, n_trials: int, workers: int, tracking: bool, sampler: str | None = None) -> dict:
    sampler = sampler or SAMPLER
    return {
        "study": {"name": name, "n_trials": n_trials, "sampler": sampler, "objective": f"bench_objectives:{objective}"},
        "data": {"generator": "click_log", "params": {"n_rows": 1000, "n_noise": 2, "max_cardinality": 50},
                 "prefilter": "none"},
        "train": {"epochs": 1},
        "execution": {"workers": workers},
        "tracking": {"enabled": tracking, "log_model": False},
    }


def ours(raw: dict, results: Path) -> float:
    from sparsearch import load_study, run_study

    spec = load_study(raw)
    start = time.perf_counter()
    result = run_study(spec, results_dir=results, progress=False)
    elapsed = time.perf_counter() - start
    assert len(result.trials) == raw["study"]["n_trials"]
    return elapsed


def plain(objective, n_trials: int, results: Path, n_jobs: int = 1, sampler: str | None = None) -> float:
    import optuna

    from sparsearch.search.registry import make_sampler
    from sparsearch.search.storage import open_storage

    sampler = sampler or SAMPLER
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"journal:{results / 'plain.journal'}")
    st = optuna.create_study(storage=storage, sampler=make_sampler(sampler, 0), direction="maximize")
    start = time.perf_counter()
    st.optimize(objective, n_trials=n_trials, n_jobs=n_jobs)
    return time.perf_counter() - start


def plain_with_mlflow(objective, n_trials: int, results: Path, sampler: str | None = None) -> float | None:
    """The peer with tracking: plain Optuna plus Optuna's own MLflow callback (optuna-integration), same store kind."""
    try:
        from optuna_integration.mlflow import MLflowCallback
    except ImportError:  # pip install 'sparsearch[bench]'
        return None
    import logging

    import optuna

    from sparsearch.search.registry import make_sampler
    from sparsearch.search.storage import open_storage

    sampler = sampler or SAMPLER
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    callback = MLflowCallback(tracking_uri=f"sqlite:///{results / 'plain_mlflow.db'}", metric_name="val_auc")
    storage = open_storage(f"journal:{results / 'plain_mlflow.journal'}")
    st = optuna.create_study(study_name="plain_mlflow", storage=storage, sampler=make_sampler(sampler, 0),
                             direction="maximize")
    start = time.perf_counter()
    st.optimize(objective, n_trials=n_trials, callbacks=[callback])
    return time.perf_counter() - start


def cmd_overhead(args: argparse.Namespace) -> dict:
    """Each repeat runs every contender once, interleaved, so load drifts hit them alike; ratios are per repeat."""
    import statistics

    import bench_objectives as objs
    import ray

    connect_ray("local", num_cpus=2, object_store_memory=200_000_000)
    global SAMPLER
    SAMPLER = args.sampler
    n = args.trials
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours(study("warmup", "trivial", 4, 2, False), tmp / "w")  # imports, worker start-up
        for r in range(args.repeats):
            runs = {
                "plain": lambda d: plain(objs.plain_trivial, n, d),
                "ours_no_mlflow": lambda d: ours(study("nomlflow", "trivial", n, 1, False), d),
                "ours": lambda d: ours(study("full", "trivial", n, 1, True), d),
                "plain_mlflow": lambda d: plain_with_mlflow(objs.plain_trivial, n, d),
            }
            for name, fn in runs.items():
                folder = tmp / f"{name}-{r}"
                folder.mkdir()
                elapsed = fn(folder)
                if elapsed is not None:
                    times.setdefault(name, []).append(elapsed)
    ray.shutdown()
    out: dict = {"trials": n, "repeats": args.repeats, "sampler": args.sampler, "cores": os.cpu_count()}
    for name, values in times.items():
        out[f"{name}_ms_per_trial"] = 1000 * statistics.median(values) / n
    ratios = {"ratio_no_mlflow": ("ours_no_mlflow", "plain"), "ratio_with_mlflow_vs_plain": ("ours", "plain"),
              "ratio_with_mlflow_vs_optuna_mlflow_callback": ("ours", "plain_mlflow")}
    for key, (a, b) in ratios.items():
        if a in times and b in times:
            per_repeat = [x / y for x, y in zip(times[a], times[b], strict=True)]
            out[key] = statistics.median(per_repeat)
            out[key + "_range"] = [min(per_repeat), max(per_repeat)]
    return out


def cmd_scaling(args: argparse.Namespace) -> dict:
    import ray

    connect_ray("local", num_cpus=2, object_store_memory=200_000_000)
    out = {"trials": args.trials, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours(study("warmup", "trivial", 2, 2, False), tmp / "w")
        out["one_worker_s"] = ours(study("w1", "cpu_bound", args.trials, 1, False), tmp / "a")
        out["two_workers_s"] = ours(study("w2", "cpu_bound", args.trials, 2, False), tmp / "b")
    ray.shutdown()
    out["speedup"] = out["one_worker_s"] / out["two_workers_s"]
    return out


def cmd_nodes(args: argparse.Namespace) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    connect_ray(cluster.address)
    out = {"trials": args.trials, "nodes": len(ray.nodes()), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours(study("warmup", "trivial", 3, 3, False), tmp / "w")
        elapsed = ours(study("nodes", "trivial", args.trials, 3, True), tmp / "a")
    out["elapsed_s"] = elapsed
    out["trials_per_s"] = args.trials / elapsed
    ray.shutdown()
    cluster.shutdown()
    return out


def _window_rates(stamps: list[float], window: int) -> dict[str, float]:
    """Seconds per trial over the first and the last ``window`` completions (completion times, sorted)."""
    stamps = sorted(stamps)
    w = min(window, len(stamps) // 2)
    first = (stamps[w - 1] - stamps[0]) / (w - 1)
    last = (stamps[-1] - stamps[-w]) / (w - 1)
    return {"window": w, "first_ms_per_trial": 1000 * first, "last_ms_per_trial": 1000 * last,
            "growth_last_over_first": last / first}


def cmd_growth(args: argparse.Namespace) -> dict:
    """10,000 trivial trials, 4 workers, a simulated 2-node cluster: does the controller's time per trial stay flat?

    The same objective and sampler are run by plain Optuna (``study.optimize``, 4 threads, journal storage) and by
    Ray Tune (``Tuner`` + ``OptunaSearch``, 4 concurrent trials) on the same cluster, one after the other.
    """
    import cProfile
    import pstats

    import bench_objectives as objs
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    connect_ray(cluster.address)
    n, w = args.trials, args.window
    out: dict = {"trials": n, "nodes": len(ray.nodes()), "workers": 4, "sampler": args.sampler,
                 "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from sparsearch import load_study, run_study

        raw = study("growth", "trivial", n, 4, False, sampler=args.sampler)
        prof = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        if prof:
            prof.enable()
        result = run_study(load_study(raw), results_dir=tmp / "ours", progress=False)
        if prof:
            prof.disable()
            prof.dump_stats(args.profile)
            stats = pstats.Stats(prof)
            by_package: dict[str, float] = {}
            for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
                key = "optuna" if "/optuna/" in filename else "sparsearch" if filename.startswith(REPO) or \
                    "sparsearch" in filename else "ray" if "/ray/" in filename else "other"
                by_package[key] = by_package.get(key, 0.0) + tottime
            out["ours_profile_self_seconds_by_package"] = {k: round(v, 1) for k, v in by_package.items()}
        out["ours_s"] = time.perf_counter() - start
        stamps = [t.datetime_complete.timestamp() for t in result.trials if t.datetime_complete]
        out["ours"] = _window_rates(stamps, w)
        if args.ours_only:
            out["ours_trials_per_s"] = n / out["ours_s"]
            out["profiled"] = bool(prof)
            ray.shutdown()
            cluster.shutdown()
            return out

        import optuna

        from sparsearch.search.registry import make_sampler
        from sparsearch.search.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        st = optuna.create_study(storage=open_storage(f"journal:{tmp / 'plain.journal'}"),
                                 sampler=make_sampler(args.sampler, 0), direction="maximize")
        start = time.perf_counter()
        st.optimize(objs.plain_trivial, n_trials=n, n_jobs=4)
        out["plain_optuna_s"] = time.perf_counter() - start
        out["plain_optuna"] = _window_rates([t.datetime_complete.timestamp() for t in st.trials], w)

        from ray import tune
        from ray.tune.search.optuna import OptunaSearch

        def trainable(config):
            tune.report({"val_auc": 1.0 - (config["extra.x"] - 1.0) ** 2})

        start = time.perf_counter()
        grid = tune.Tuner(
            tune.with_resources(trainable, {"cpu": 1}),
            tune_config=tune.TuneConfig(search_alg=OptunaSearch(space=objs.trivial_space, metric="val_auc", mode="max",
                                                                sampler=make_sampler(args.sampler, 0)),
                                        num_samples=args.tune_trials, max_concurrent_trials=4),
            run_config=tune.RunConfig(storage_path=str(tmp / "tune"), verbose=0),
        ).fit()
        out["ray_tune_s"] = time.perf_counter() - start
        out["ray_tune_trials"] = args.tune_trials
        out["ray_tune"] = _window_rates([float(r.metrics["timestamp"]) for r in grid if r.metrics],
                                        min(w, args.tune_trials // 4))
    for name, count in (("ours", n), ("plain_optuna", n), ("ray_tune", args.tune_trials)):
        out[f"{name}_trials_per_s"] = count / out[f"{name}_s"]
    ray.shutdown()
    cluster.shutdown()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name, default in (("overhead", 200), ("scaling", 8), ("nodes", 60), ("growth", 10_000)):
        p = sub.add_parser(name)
        p.add_argument("--trials", type=int, default=default)
        if name == "growth":
            p.add_argument("--window", type=int, default=1000, help="trials in the first and last window")
            p.add_argument("--sampler", default="tpe")
            p.add_argument("--profile", default=None, help="write a cProfile of our driver to this file (it slows "
                           "our driver: use with --ours-only, and compare throughput from a run without it)")
            p.add_argument("--ours-only", action="store_true", help="run our controller only (no peers)")
            p.add_argument("--tune-trials", type=int, default=500,
                           help="Ray Tune's trials (its throughput, ~0.3-3 trials/s here, makes 10,000 take hours)")
        if name == "overhead":
            p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; medians are reported")
            p.add_argument("--sampler", default="tpe", help="the sampler both contenders use (default: tpe)")
    args = parser.parse_args()
    result = {"overhead": cmd_overhead, "scaling": cmd_scaling, "nodes": cmd_nodes, "growth": cmd_growth}[args.cmd](args)
    def tidy(v):
        return round(v, 4) if isinstance(v, float) else [tidy(x) for x in v] if isinstance(v, list) else v

    print(json.dumps({k: tidy(v) for k, v in result.items()}, indent=2))
    _results.save({k: tidy(v) for k, v in result.items()})  # bench/results/<command>.json, committed


if __name__ == "__main__":
    main()
