"""Does `[data] crosses` pay? Test AUC with and without crosses, same budget, paired by seed (issue #13, item 3).

    python bench/bench_crosses.py                   # the default size: 40,000 rows, 5 seeds, 8 trials, 2 epochs
    python bench/bench_crosses.py --rows 8000 --seeds 2 --n-trials 2 --epochs 1     # a smoke run

Data: `make_click_log(ROWS, n_interactions=2, interaction_scale=1.5, seed=s)`: two planted pairs whose signal
exists only jointly, besides the usual informative, redundant and noise features. Each seed runs the same study
twice (TPE, N_TRIALS trials, the prefilter keeps the top 6 single features): with `crosses = 0` and with
`crosses = CROSSES`. The study's incumbent (chosen on validation rows) is evaluated once on the held-out test
rows; the paired test-AUC differences are summarised by their mean and a 95% t interval. Each seed's pair is
saved as soon as it finishes (bench/out/crosses/) and skipped when the command runs again with the same settings;
the summary goes to bench/results/crosses-<rows>x<seeds>seeds.json (and stdout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

RUNS = _results.OUT / "crosses"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=_results.positive_int, default=40_000, help="rows of the click log (default 40000)")
    ap.add_argument("--seeds", type=_results.positive_int, default=5, help="paired seeds (default 5)")
    ap.add_argument("--n-trials", type=_results.positive_int, default=8, help="trials per study (default 8)")
    ap.add_argument("--epochs", type=_results.positive_int, default=2, help="epochs per trial (default 2)")
    ap.add_argument("--crosses", type=_results.positive_int, default=2, help="[data] crosses of the second arm (default 2)")
    args = ap.parse_args(argv)
    n_rows, seeds, n_trials, epochs, crosses = args.rows, args.seeds, args.n_trials, args.epochs, args.crosses
    out: dict = {"rows": n_rows, "seeds": seeds, "n_trials": n_trials, "epochs": epochs, "crosses": crosses, "runs": []}

    def run_one(seed: int) -> dict:
        from sparsearch import load_study, run_study

        row: dict = {"seed": seed}
        for k in (0, crosses):
            raw = {
                "study": {"name": f"crosses{k}-s{seed}", "n_trials": n_trials, "seed": seed},
                "data": {"generator": "click_log", "target": "click", "top_k": 6, "crosses": k,
                         "params": {"n_rows": n_rows, "n_interactions": 2, "interaction_scale": 1.5,
                                    "n_noise": 20, "seed": seed}},
                "train": {"epochs": epochs, "test_fraction": 0.2, "val_fraction": 0.2},
                "tracking": {"enabled": False},
            }
            with tempfile.TemporaryDirectory() as tmp:
                doc = run_study(load_study(raw), results_dir=Path(tmp), progress=False).to_json()
            row[f"test_auc_crosses_{k}"] = doc["test_metrics"]["test_auc"]
        row["diff"] = row[f"test_auc_crosses_{crosses}"] - row["test_auc_crosses_0"]
        return row

    runs = [(seed, {"rows": n_rows, "n_trials": n_trials, "epochs": epochs, "crosses": crosses, "seed": seed},
             RUNS / f"{n_rows}x{n_trials}x{epochs}-crosses{crosses}-s{seed}.json") for seed in range(seeds)]
    out["runs"] = _results.run_seeds("crosses", runs, run_one)
    diffs = [r["diff"] for r in out["runs"]]
    mean = statistics.fmean(diffs)
    if len(diffs) > 1:
        from scipy import stats

        half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
        out["mean_test_auc_gain"], out["ci95"] = mean, [mean - half, mean + half]
    else:
        out["mean_test_auc_gain"] = mean
    print(json.dumps(out, indent=2))
    _results.save(out, key=f"crosses-{n_rows}x{seeds}seeds")  # the name of the committed crosses-40000x5seeds.json
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
