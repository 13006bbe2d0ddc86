"""A planted user x item affinity: our study, with crosses searched, against LightGBM with native categoricals
(issue #29, item 5). Test AUC on the same split, paired by seed.

    python bench/bench_affinity.py                    # 300,000 rows, 5 seeds, 20 trials, 4 epochs, crosses [0, 2]
    python bench/bench_affinity.py --rows 4000 --seeds 1 --n-trials 1 --epochs 1     # a smoke run

Data: `make_affinity_log(ROWS, seed=s)` (features/_datasets.py): `user_id` (2,000 levels) and `item_id` (1,500
levels) whose click logit is a latent user vector dot a latent item vector (marginals nearly uninformative), two
weak context features and four noise columns (4 to 5,000 levels). Each seed runs:

- ours: the bundled `table` study, the one `sparsearch run --data FILE --target COL` runs on a user's own table
  (its space: numeric encodings, efficient ensembles, cross layers, factorization-machine products of the
  embeddings; its warm-start portfolio, TPE and median pruner), with the benchmark's settings on top: all ROWS rows
  (`data.max_rows` lifted), N_TRIALS trials of EPOCHS epochs, and `[data] crosses = [0, CROSSES]` searched (the pair
  ranker proposes the pairs on the training rows, and the search decides whether to use them). Its incumbent,
  chosen on the validation rows, is scored once on the test rows;
- LightGBM: `LGBMClassifier()` with default settings, every column a native categorical, fitted on the same
  training rows (the study's own split, checked by its digest) and scored on the same test rows;
- the Bayes ceiling: the AUC of the true click probabilities on those test rows.

Each seed's row is saved as soon as it finishes (bench/out/affinity/) and skipped when the command runs again with
the same settings; the summary (mean paired difference ours - LightGBM, a 95% t interval, the exact one-sided
sign-flip p) goes to bench/results/affinity-<rows>x<seeds>seeds.json and stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

RUNS = _results.OUT / "affinity"
PAIRS = "lowrank-z6"  # the pair ranker: chance-corrected interaction after the low-rank test (features/_lowrank.py)
VAL, TEST = 0.2, 0.2


def _split(df, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """The study's split of these rows (search/data.py: stratified on the class codes, the study seed) and its
    digest as the study records it."""
    from sparsearch.search.data import split_digest
    from sparsearch.spaces import split_indices

    codes = df["click"].rank("dense").to_numpy().astype(np.int64) - 1
    parts = split_indices(codes, VAL, TEST, seed)
    return (*parts, split_digest(parts))


def _lightgbm(df, tr: np.ndarray, te: np.ndarray, seed: int) -> tuple[float, float]:
    """Test AUC of LightGBM with default settings and native categoricals, and its fit time in seconds."""
    import lightgbm as lgb
    from sklearn.metrics import roc_auc_score

    x = df.drop("click").to_pandas().astype("category")  # every column is an integer ID or code
    y = df["click"].to_numpy()
    model = lgb.LGBMClassifier(random_state=seed, verbose=-1)
    t0 = time.perf_counter()
    model.fit(x.iloc[tr], y[tr])
    fit_s = time.perf_counter() - t0
    return float(roc_auc_score(y[te], model.predict_proba(x.iloc[te])[:, 1])), fit_s


def table_study(seed: int, n_rows: int, n_trials: int, epochs: int, crosses: int) -> dict:
    """The bundled `table` study (a user's own table) on the affinity log, with this benchmark's settings on top."""
    import tomllib

    from sparsearch.search.spec.load import bundled_studies

    raw = tomllib.loads(bundled_studies()["table"].read_text())
    raw["study"].update({"name": f"affinity-s{seed}", "n_trials": n_trials, "seed": seed})
    data = {k: v for k, v in raw["data"].items() if k != "max_rows"}  # every generated row
    data.update({"generator": "affinity_log", "target": "click", "crosses": [0, crosses],
                 "params": {"n_rows": n_rows, "seed": seed}})
    raw["data"] = data
    raw["train"].update({"epochs": epochs, "val_fraction": VAL, "test_fraction": TEST})
    raw["tracking"] = {"enabled": False}
    return raw


def run_seed(seed: int, n_rows: int, n_trials: int, epochs: int, crosses: int) -> dict:
    from sklearn.metrics import roc_auc_score

    from sparsearch import load_study, run_study
    from sparsearch.features import make_affinity_log

    df, p = make_affinity_log(n_rows, seed=seed, return_probability=True)
    tr, _, te, digest = _split(df, seed)
    raw = table_study(seed, n_rows, n_trials, epochs, crosses)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        doc = run_study(load_study(raw), results_dir=Path(tmp), progress=False).to_json()
    study_s = time.perf_counter() - t0
    if doc["split"]["digest"] != digest:
        raise RuntimeError(f"seed {seed}: the study split its rows differently ({doc['split']['digest']} != {digest})")
    lgb_auc, lgb_s = _lightgbm(df, tr, te, seed)
    y = df["click"].to_numpy()
    best = doc["best_params"] or {}
    return {"seed": seed, "test_auc_ours": doc["test_metrics"]["test_auc"], "test_auc_lightgbm": lgb_auc,
            "diff": doc["test_metrics"]["test_auc"] - lgb_auc, "bayes_test_auc": float(roc_auc_score(y[te], p[te])),
            "crosses_used": best.get("data.crosses"), "crosses_proposed": doc["info"].get("crosses"),
            "best_params": best, "best_val_auc": (doc["best_values"] or [None])[0],
            "study_s": round(study_s, 1), "lightgbm_fit_s": round(lgb_s, 2), "n_complete": doc["n_complete"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=_results.positive_int, default=300_000, help="rows of the affinity log (default 300000)")
    ap.add_argument("--seeds", type=_results.positive_int, default=5, help="paired seeds (default 5)")
    ap.add_argument("--n-trials", type=_results.positive_int, default=20, help="trials per study (default 20)")
    ap.add_argument("--epochs", type=_results.positive_int, default=4, help="epochs per trial (default 4)")
    ap.add_argument("--crosses", type=_results.positive_int, default=2, help="searched [data] crosses = [0, K] (default 2)")
    args = ap.parse_args(argv)
    # "pairs": the pair ranker's version; rows of the ranker before its low-rank test (no such key) run again
    settings = {"study": "table", "rows": args.rows, "n_trials": args.n_trials, "epochs": args.epochs,
                "crosses": args.crosses, "pairs": PAIRS}
    runs = [(seed, {**settings, "seed": seed},
             RUNS / f"table-{args.rows}x{args.n_trials}x{args.epochs}-crosses{args.crosses}-s{seed}.json")
            for seed in range(args.seeds)]
    out: dict = {**settings, "seeds": args.seeds,
                 "runs": _results.run_seeds("affinity", runs, lambda seed: run_seed(seed, args.rows, args.n_trials,
                                                                                     args.epochs, args.crosses))}
    from sparsearch.search.compare import verdict

    diffs = [r["diff"] for r in out["runs"]]
    out["mean_test_auc_ours_minus_lightgbm"] = statistics.fmean(diffs)
    # the project's one rule: paired by seed (same split), exact sign-flip test, bootstrap interval
    out["verdict"] = verdict([r["test_auc_ours"] for r in out["runs"]], [r["test_auc_lightgbm"] for r in out["runs"]],
                             maximize=True, names=("ours", "lightgbm"), paired=True)
    print(json.dumps(out, indent=2))
    _results.save(out, key=f"affinity-{args.rows}x{args.seeds}seeds")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
