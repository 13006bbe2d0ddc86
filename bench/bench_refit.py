"""Refit at scale (issue #31 item 2): a trial retrained with Ray Train on a click log far larger than memory allows.

    python bench/bench_refit.py                          # 20M rows, study on 200k rows, refit on 1 and 2 workers
    python bench/bench_refit.py --smoke                  # a tiny run of every step (about 3 minutes on 2 cores)
    python bench/bench_refit.py --study S.toml --data DIR --results R   # refit a study that already ran

Steps:

1. **Data.** A click log of ``--rows`` rows (default 20,000,000) is generated chunk by chunk (``--chunk-rows``,
   never all in memory) and written as a parquet folder (one file per chunk) under ``bench/out/refit/``: ``--inf``
   informative categorical columns (Zipf-like, cardinalities 2 .. 5,000, each value a fixed random effect on the
   click logit), ``--noise`` noise columns (cardinalities 2 .. 20,000), two numeric columns (one informative, 2%
   missing) and ``click``. The effects are drawn once from ``--seed``, the rows from a generator per chunk, so every
   chunk follows the same model. A folder that is complete (its ``_done.json`` was written with the same settings) is reused.
2. **Study.** A separate sample of ``--study-rows`` rows (another generator: none of the log's rows) is the
   study's data; the study (``--trials`` random trials of a GMP sparse MLP on the ``--top-k`` best features,
   ``--epochs`` epochs) runs once, unless ``--study`` names one that ran.
3. **Refit.** ``sparsearch refit STUDY --data LOG --workers N --json`` for each ``--workers`` value, each in its own
   process, whose peak resident memory is read from the kernel (``wait4``); each Ray Train worker reports its own
   (``worker_peak_rss_mb``). Target: each at most ``--rss-target-mb`` (2,048). Reported: rows/s, rows seen, the
   refit's test AUC on the study's test rows against the trial's.

Output: ``bench/results/refit.json`` (``--smoke``: ``bench/out/refit/smoke/``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

OUT = _results.OUT / "refit"
MAX_CARD_INF = 5_000
MAX_CARD_NOISE = 20_000
STUDY_CHUNK = 10**9
"""The generator index of the study's sample: far from any chunk of the log."""


class ClickModel:
    """The generative model of the log: fixed per-value effects, rows drawn per chunk."""

    def __init__(self, n_inf: int, n_noise: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.inf_cards = [int(k) for k in np.unique(np.geomspace(2, MAX_CARD_INF, n_inf).round().astype(int))]
        while len(self.inf_cards) < n_inf:
            self.inf_cards.append(self.inf_cards[-1] + 1)
        self.noise_cards = [int(k) for k in np.geomspace(2, MAX_CARD_NOISE, max(n_noise, 1)).round()][:n_noise]
        self.effects = [rng.normal(size=k) * 0.55 for k in self.inf_cards]
        self.probs = {k: self._zipf(k) for k in {*self.inf_cards, *self.noise_cards}}
        self.intercept = -2.6  # about 10% clicks
        self.seed = seed

    @staticmethod
    def _zipf(k: int) -> np.ndarray:
        p = 1.0 / np.arange(1, k + 1) ** 1.05
        return p / p.sum()

    def chunk(self, n: int, index: int) -> Any:
        import polars as pl

        rng = np.random.default_rng([self.seed, index + 1])
        cols: dict[str, np.ndarray] = {}
        logit = np.full(n, self.intercept)
        for i, (k, effect) in enumerate(zip(self.inf_cards, self.effects, strict=True)):
            x = rng.choice(k, n, p=self.probs[k])
            logit += effect[x]
            cols[f"inf_{i}"] = x.astype(np.int32)
        for i, k in enumerate(self.noise_cards):
            cols[f"noise_{i}_c{k}"] = rng.choice(k, n, p=self.probs[k]).astype(np.int32)
        z = rng.normal(size=n)
        logit += 0.5 * z
        z[rng.random(n) < 0.02] = np.nan
        cols["num_0"], cols["num_1"] = z, rng.normal(size=n)
        click = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)
        return pl.DataFrame({**cols, "click": click}).with_columns(pl.col("num_0").fill_nan(None))


def write_log(model: ClickModel, rows: int, chunk_rows: int, folder: Path, settings: dict[str, Any]) -> dict:
    """The parquet folder of ``rows`` rows (reused when complete with the same settings)."""
    done = folder / "_done.json"
    previous = _results.load_run(done, settings)
    if previous is not None:
        return previous
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.parquet"):
        old.unlink()
    t0 = time.perf_counter()
    written = 0
    for index, start in enumerate(range(0, rows, chunk_rows)):
        n = min(chunk_rows, rows - start)
        model.chunk(n, index).write_parquet(folder / f"part-{index:05d}.parquet")
        written += n
        print(f"[bench] wrote {written:,} of {rows:,} rows", file=sys.stderr, flush=True)
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    doc = {"config": settings, "rows": written, "parquet_bytes": size, "seconds": time.perf_counter() - t0}
    _results.save_run(done, doc)  # last: the folder is complete
    return doc


def study_file(path: Path, name: str, data: Path, args: argparse.Namespace) -> Path:
    path.write_text(f"""# bench_refit's study: a sample of the click log model, searched before the refit
[study]
name = "{name}"
objectives = ["val_auc"]
n_trials = {args.trials}
sampler = "random"
seed = {args.seed}

[data]
path = "{data}"
target = "click"
prefilter = "adjusted-mi"
top_k = {args.top_k}

[space]
model = "mlp"
depth = [1, 2]
width = [32, 128]
target_sparsity = [0.8, 0.95]
methods = ["gmp"]

[train]
epochs = {args.epochs}
batch_size = {args.batch_size}

[execution]
workers = 1
cpus_per_trial = 1
""")
    return path


def run_refit(study: Path, data: Path, results: Path, workers: int, args: argparse.Namespace) -> dict[str, Any]:
    """One ``sparsearch refit`` in its own process: its JSON and the process's peak resident memory."""
    cmd = [sys.executable, "-m", "sparsearch", "refit", str(study), "--data", str(data), "--results", str(results),
           "--workers", str(workers), "--cpus-per-worker", str(args.cpus_per_worker), "--json"]
    if args.ray_address:
        cmd += ["--ray-address", args.ray_address]
    print(f"[bench] {' '.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        out = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_refit.py: refit with {workers} worker(s) exited {proc.returncode}")
    doc = json.loads(out)
    run = doc["runs"][0]
    return {"workers": workers, "wall_s": time.perf_counter() - t0, "driver_peak_rss_mb": usage.ru_maxrss / 1024.0,
            "worker_peak_rss_mb": run["worker_peak_rss_mb"], "rows_seen": run["rows_seen"],
            "rows_per_s": run["rows_per_s"], "train_seconds": run["train_seconds"], "epochs": run["epochs"],
            "dropped_test_rows": run["dropped_test_rows"], "masks_identical": run["masks_identical"],
            "test_metrics": run["test_metrics"], "trial": run["trial"], "trial_test_metrics": run["trial_test_metrics"],
            "model_uri": run["model_uri"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows of the click log (default: %(default)s)")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per parquet file written")
    parser.add_argument("--inf", type=int, default=8, help="informative categorical columns")
    parser.add_argument("--noise", type=int, default=40, help="noise categorical columns")
    parser.add_argument("--study-rows", type=int, default=200_000, help="rows of the study's own sample")
    parser.add_argument("--trials", type=int, default=4, help="trials of the study")
    parser.add_argument("--top-k", type=int, default=32, help="features the study keeps")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of every trial (and so of the refit)")
    parser.add_argument("--batch-size", type=int, default=4096, help="batch size of every trial")
    parser.add_argument("--workers", default="1,2", help="refit worker counts (default: %(default)s)")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs of each Ray Train worker")
    parser.add_argument("--rss-target-mb", type=float, default=2048.0, help="peak RSS target of each process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--study", metavar="TOML", help="refit this study (it ran already; needs --data)")
    parser.add_argument("--data", metavar="DIR", help="the parquet log to refit on (default: generate one)")
    parser.add_argument("--results", metavar="DIR", help="the study's results folder (default: under bench/out)")
    parser.add_argument("--ray-address", metavar="ADDR", help="Ray cluster for the refits (default: a local Ray)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes (60k rows, 8 noise columns, study of 8k rows, 2 trials, 0.5 CPU per "
                        "worker); results under bench/out/refit/smoke")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.chunk_rows, args.noise, args.study_rows = 60_000, 20_000, 8, 8_000
        args.trials, args.top_k, args.batch_size, args.cpus_per_worker = 2, 8, 512, 0.5
    if args.study and not args.data:
        parser.error("--study needs --data (the parquet log to refit on)")
    try:
        counts = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers must be integers separated by commas, got {args.workers!r}")
    if not counts or min(counts) < 1:
        parser.error(f"--workers must be integers >= 1, got {args.workers!r}")

    from sparsearch._ray import set_ray_env

    set_ray_env()
    base = OUT / ("smoke" if args.smoke else "full")
    results = Path(args.results) if args.results else base / "results"
    doc: dict[str, Any] = {"config": {k: v for k, v in vars(args).items()}}
    if args.data:
        log_dir = Path(args.data)
    else:
        model = ClickModel(args.inf, args.noise, args.seed)
        settings = {"rows": args.rows, "chunk_rows": args.chunk_rows, "inf": args.inf, "noise": args.noise,
                    "seed": args.seed}
        log_dir = base / f"clicklog-{args.rows}"
        doc["log"] = write_log(model, args.rows, args.chunk_rows, log_dir, settings)
    if args.study:
        study = Path(args.study)
    else:
        from sparsearch import run_study

        sample = base / f"study-sample-{args.study_rows}.parquet"
        if not sample.exists():
            ClickModel(args.inf, args.noise, args.seed).chunk(args.study_rows, STUDY_CHUNK).write_parquet(sample)
        study = study_file(base / "study.toml", "bench-refit", sample.resolve(), args)
        study_config = {k: getattr(args, k) for k in ("study_rows", "trials", "top_k", "epochs", "batch_size", "inf",
                                                      "noise", "seed")}
        record = base / "study.json"
        done = _results.load_run(record, study_config)
        if done is None:  # the study runs once; its record lets a rerun go straight to the refits
            if not args.results and results.exists():  # only our own folder under bench/out
                shutil.rmtree(results)  # a study of other settings: its trials must not be resumed
            t0 = time.perf_counter()
            result = run_study(study, results_dir=results, progress=True)
            best = result.best_trial
            done = {"config": study_config, "seconds": time.perf_counter() - t0, "best_trial": best.number,
                    "best_values": best.values, "test": result.test_metrics().get(best.number)}
            _results.save_run(record, done)
        doc["study"] = {k: v for k, v in done.items() if k != "config"}
    # each refit's record is saved as it finishes (bench/out/refit/<base>/refit-<N>-workers.json), and a rerun with
    # the same settings skips the refits already done
    run_config = {"study": str(study), "data": str(log_dir.resolve()), "cpus_per_worker": args.cpus_per_worker,
                  "ray_address": args.ray_address}
    doc["refits"] = []
    for w in counts:
        record = base / f"refit-{w}-workers.json"
        done = _results.load_run(record, {**run_config, "workers": w})
        if done is None:
            done = {"config": {**run_config, "workers": w}, **run_refit(study, log_dir.resolve(), results, w, args)}
            _results.save_run(record, done)
        doc["refits"].append({k: v for k, v in done.items() if k != "config"})
    for r in doc["refits"]:
        peaks = [r["driver_peak_rss_mb"], *r["worker_peak_rss_mb"]]
        r["rss_target_met"] = max(peaks) <= args.rss_target_mb
        print(f"[bench] {r['workers']} worker(s): {r['rows_per_s']:,.0f} rows/s, driver {r['driver_peak_rss_mb']:.0f} "
              f"MB, workers {', '.join(f'{m:.0f}' for m in r['worker_peak_rss_mb'])} MB, test AUC "
              f"{(r['test_metrics'] or {}).get('test_auc')} (trial {(r['trial_test_metrics'] or {}).get('test_auc')})",
              file=sys.stderr, flush=True)
    _results.save(doc, key="refit-smoke" if args.smoke else "refit", results=base if args.smoke else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
