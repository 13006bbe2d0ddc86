"""Does `[data] crosses` pay? Test AUC with and without crosses, same budget, paired by seed (issue #13, item 3).

Usage: python bench/bench_crosses.py [N_ROWS] [SEEDS] [N_TRIALS] [EPOCHS] [CROSSES]
       (defaults 40000, 5, 8, 2, 2; smoke: python bench/bench_crosses.py 8000 2 2 1 2)

Data: `make_click_log(N_ROWS, n_interactions=2, interaction_scale=1.5, seed=s)`: two planted pairs whose signal
exists only jointly, besides the usual informative, redundant and noise features. Each seed runs the same study
twice (TPE, N_TRIALS trials, the prefilter keeps the top 6 single features): with `crosses = 0` and with
`crosses = CROSSES`. The study's incumbent (chosen on validation rows) is evaluated once on the held-out test
rows; the paired test-AUC differences are summarised by their mean and a 95% t interval. Prints one JSON document.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path


def main() -> None:
    n_rows, seeds, n_trials, epochs, crosses = (int(a) for a in (sys.argv[1:] + ["40000", "5", "8", "2", "2"][len(sys.argv) - 1:])[:5])
    import ray
    from scipy import stats

    from sparsearch import load_study, run_study
    from sparsearch._ray import connect_ray

    connect_ray("local")  # Ray's own size: one trial per core
    out: dict = {"rows": n_rows, "seeds": seeds, "n_trials": n_trials, "epochs": epochs, "crosses": crosses, "runs": []}
    try:
        for seed in range(seeds):
            row = {"seed": seed}
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
            out["runs"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        ray.shutdown()
    diffs = [r["diff"] for r in out["runs"]]
    mean = statistics.fmean(diffs)
    if len(diffs) > 1:
        half = stats.t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
        out["mean_test_auc_gain"], out["ci95"] = mean, [mean - half, mean + half]
    else:
        out["mean_test_auc_gain"] = mean
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
