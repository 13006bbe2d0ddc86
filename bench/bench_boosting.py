"""Ours against gradient boosting on `flights`, all rows (issue #29, item 8): test AUC paired by seed on the same
split, and prediction latency per row.

    python bench/bench_boosting.py                      # all 327,346 rows, seeds 0 1 2 3 4 (hours: five studies)
    python bench/bench_boosting.py --seeds 0 1          # some seeds (done seeds are skipped)
    python bench/bench_boosting.py --smoke              # 5,000 rows, seed 0, 2 trials, 1 epoch: checks the script

Each seed s runs, one after the other (interleaved by seed):

- ours: the bundled study ``run_study("flights", seed=s)`` on every row (``data.max_rows`` above the table's size),
  in a fresh results folder under bench/out/boosting/; its best network (chosen on validation rows) is scored once
  on the test rows by the controller. Recorded: test AUC, the study's wall time, and the realised sparsity of the
  best network's prunable weights (the issue asks for at least 80%: a miss is flagged, the study is not altered);
- HistGradientBoostingClassifier() with default settings (random_state = s), native categorical splits for the
  string columns (codes fitted on the training rows); scikit-learn allows at most 255 levels per categorical
  feature, so a string column with more training levels (tailnum) enters as its ordinal code (recorded);
- LGBMClassifier() with default settings (random_state = s), the string columns as pandas ``category`` (native
  categoricals; levels from the training rows, an unseen level is missing);
- LightGBM tuned by Optuna (TPE, seed s) for the wall time our study took on that seed: each trial fits on the
  training rows with early stopping on the validation rows, is selected by validation AUC, and the best is scored
  once on the test rows.

The peers read every feature column of the study's table (the study's prefilter keeps 4 to 10 of them); they fit on
exactly the study's training rows and are scored on exactly its test rows: the split is rebuilt by the study's own
code (``sparsearch.search.data.fit_encoder``), its digest and sizes are checked against the run's ``split``, and
the packaged best network is scored on those rows again (its AUC must reproduce the controller's test AUC).

Every contender gets the same cores: the study's workers x cpus_per_trial (2), as Ray's CPUs, LightGBM's n_jobs,
scikit-learn's OpenMP threads and torch's threads. Latency per row (median of repeated calls, batch 1 and 256, the
first test rows): the best network in its compact and CSR forms (the pyfunc formats), on encoded inputs and from
raw rows (encoder included), against LightGBM's ``predict_proba`` on a pandas frame and its booster on a numeric
array, default and tuned.

Each seed's record goes to bench/results/boosting/ as soon as it finishes and is skipped when the command runs again
with the same settings (``--force`` runs it again); the summary (per-seed table, paired verdicts ours vs each peer
on test AUC via ``sparsearch.search.compare.verdict``, latency) goes to bench/results/boosting-flights.json
(``--smoke``: bench/out/boosting/smoke/, never bench/results).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

RUNS = _results.OUT / "boosting"
RECORDS = _results.RESULTS / "boosting"
STUDY = "flights"
DATA = "nycflights13/flights.parquet"
ALL_ROWS = 100_000_000
"""``[data] max_rows`` above the table's size: every row (the bundled study samples 100,000)."""
SMOKE = {"rows": 5000, "n_trials": 2, "epochs": 1, "tune_cap_s": 10.0}
HGB_MAX_LEVELS = 255
"""scikit-learn's limit on the levels of a native categorical feature (``max_bins``)."""
TARGETS = {"realized_sparsity_min": 0.80, "study_wall_s_max": 1800.0}
LATENCY_BATCHES = (1, 256)
LATENCY_RUNS = {1: 201, 256: 51}
PEERS = ("hgb", "lightgbm", "lightgbm_tuned")


# ----------------------------------------------------------------------------------------------------- ours

def _overrides(settings: dict[str, Any], seed: int, data_path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed, "data": str(data_path), "data.max_rows": settings["rows"]}
    if settings["n_trials"] is not None:
        out["n_trials"] = settings["n_trials"]
    if settings["epochs"] is not None:
        out["train.epochs"] = settings["epochs"]
    return out


def run_ours(overrides: dict[str, Any], folder: Path) -> dict[str, Any]:
    from sparsearch import run_study

    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    result = run_study(STUDY, results_dir=folder, progress=False, **overrides)
    wall = time.perf_counter() - t0
    doc = result.to_json()
    best = result.best_trial
    if best is None or not doc["test_metrics"]:
        raise RuntimeError(f"study {STUDY!r} with {overrides} ended without a best trial scored on test rows "
                           f"({doc['n_complete']} complete, {doc['n_failed']} failed)")
    return {"wall_s": wall, "study_name": doc["study_name"], "test_auc": doc["test_metrics"]["test_auc"],
            "test_metrics": doc["test_metrics"], "best_values": doc["best_values"],
            "best_params": doc["best_params"], "best_trial_number": doc["best_trial_number"],
            "realized_sparsity_trial": best.user_attrs.get("realized_sparsity"),
            "n_complete": doc["n_complete"], "n_pruned": doc["n_pruned"], "n_failed": doc["n_failed"],
            "split": doc["split"], "model_uri": doc["model_uri"]}


# ------------------------------------------------------------------------------------------------ the rows

def study_rows(overrides: dict[str, Any], folder: Path, split: dict[str, Any]) -> tuple[Any, dict[str, Any], Any]:
    """The study's loaded table and its train / val / test row indices, rebuilt by the study's own code (the
    ranking comes from the study's cache in ``folder``); refuses when the split is not the run's."""
    from sparsearch import load_study
    from sparsearch.search.data import fit_encoder

    spec = load_study(STUDY, **overrides)
    prepared, df = fit_encoder(spec, folder)
    ix = prepared.indices
    if prepared.split["digest"] != split["digest"]:
        raise SystemExit(f"the peers would see another split ({prepared.split['digest']}) than the study "
                         f"({split['digest']}): refusing to compare")
    for part in ("train", "val", "test"):
        if ix[part].size != split[f"n_{part}"]:
            raise SystemExit(f"{part} rows: {ix[part].size} rebuilt, {split[f'n_{part}']} in the study")
    return df, ix, spec


def peer_frame(df: Any, spec: Any, train: np.ndarray) -> tuple[Any, Any, list[str], list[str]]:
    """Every feature column as pandas (string columns as ``category`` with the training rows' levels), the
    target, and the categorical and numeric column names."""
    import pandas as pd
    import polars as pl

    target = spec.data.target
    columns = [c for c in (spec.data.features or df.columns) if c != target and c not in spec.data.exclude]
    cats = [c for c in columns if df.schema[c] in (pl.String, pl.Categorical, pl.Boolean)
            or isinstance(df.schema[c], pl.Enum)]
    nums = [c for c in columns if c not in cats]
    x = df.select(columns).to_pandas()
    for c in cats:
        levels = sorted(pd.unique(x[c].iloc[train].dropna()).tolist(), key=str)
        # a level only outside the training rows is missing (as LightGBM reads a level it was not fitted on)
        x[c] = pd.Categorical(x[c].where(x[c].isin(levels)), categories=levels)
    y = df[target].rank("dense").to_numpy().astype(np.int64) - 1  # the study's class codes
    return x, y, cats, nums


def as_codes(x: Any) -> np.ndarray:
    """A float array of ``x``: category columns as their codes (a missing or unseen level, code -1, as NaN, as
    LightGBM reads pandas categories), other columns as numbers."""
    import pandas as pd

    cols = []
    for c in x.columns:
        if isinstance(x[c].dtype, pd.CategoricalDtype):
            codes = x[c].cat.codes.to_numpy().astype(np.float64)
            codes[codes < 0] = np.nan
            cols.append(codes)
        else:
            cols.append(x[c].to_numpy(dtype=np.float64, na_value=np.nan))
    return np.column_stack(cols)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


# ----------------------------------------------------------------------------------------------- the peers

def run_hgb(x: Any, y: np.ndarray, ix: dict[str, np.ndarray], cats: list[str], seed: int,
            cores: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    # native categorical where the training rows have <= 255 levels
    native = [c for c in cats if len(x[c].cat.categories) <= HGB_MAX_LEVELS]
    arr = as_codes(x)
    mask = np.array([c in native for c in x.columns])
    model = HistGradientBoostingClassifier(categorical_features=mask, random_state=seed)
    with threadpool_limits(cores):
        t0 = time.perf_counter()
        model.fit(arr[ix["train"]], y[ix["train"]])
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        p = model.predict_proba(arr[ix["test"]])[:, 1]
        predict_s = time.perf_counter() - t0
    return {"test_auc": _auc(y[ix["test"]], p), "fit_s": fit_s, "predict_s": predict_s,
            "n_iter": int(model.n_iter_), "native_categorical": native,
            "ordinal_codes": [c for c in cats if c not in native]}


def run_lightgbm(x: Any, y: np.ndarray, ix: dict[str, np.ndarray], seed: int, cores: int) -> tuple[dict, Any]:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(random_state=seed, n_jobs=cores, verbose=-1)
    t0 = time.perf_counter()
    model.fit(x.iloc[ix["train"]], y[ix["train"]])
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    p = model.predict_proba(x.iloc[ix["test"]])[:, 1]
    predict_s = time.perf_counter() - t0
    return {"test_auc": _auc(y[ix["test"]], p), "fit_s": fit_s, "predict_s": predict_s}, model


def run_lightgbm_tuned(x: Any, y: np.ndarray, ix: dict[str, np.ndarray], seed: int, cores: int,
                       budget_s: float) -> tuple[dict, Any]:
    """Optuna TPE over LightGBM's usual knobs for ``budget_s`` seconds (a trial that started in time finishes):
    fit on the training rows, early stopping and selection on the validation rows, the best scored once on test."""
    import lightgbm as lgb
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    xtr, ytr, xva, yva = x.iloc[ix["train"]], y[ix["train"]], x.iloc[ix["val"]], y[ix["val"]]
    kept: dict[str, Any] = {"auc": -1.0, "model": None}
    # LightGBM 4.7 renamed eval_set (deprecated) to eval_X / eval_y; the bench extra allows lightgbm>=4.0
    fit_args = inspect.signature(lgb.LGBMClassifier.fit).parameters
    validation = ({"eval_X": (xva,), "eval_y": (yva,)} if "eval_X" in fit_args else {"eval_set": [(xva, yva)]})

    def objective(trial: optuna.Trial) -> float:
        params = {
            "n_estimators": trial.suggest_int("n_estimators", 50, 3000, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.005, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 8, 1024, log=True),
            "min_child_samples": trial.suggest_int("min_child_samples", 5, 300, log=True),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
            "subsample": trial.suggest_float("subsample", 0.4, 1.0),
            "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 30.0, log=True),
            "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 10.0, log=True),
            "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 100.0, log=True),
            "cat_l2": trial.suggest_float("cat_l2", 1.0, 100.0, log=True),
            "max_cat_threshold": trial.suggest_int("max_cat_threshold", 8, 128, log=True),
        }
        model = lgb.LGBMClassifier(**params, subsample_freq=1, random_state=seed, n_jobs=cores, verbose=-1)
        model.fit(xtr, ytr, **validation, eval_metric="auc", callbacks=[lgb.early_stopping(50, verbose=False)])
        auc = _auc(yva, model.predict_proba(xva)[:, 1])
        trial.set_user_attr("best_iteration", int(model.best_iteration_ or params["n_estimators"]))
        if auc > kept["auc"]:
            kept.update(auc=auc, model=model)
        return auc

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    t0 = time.perf_counter()
    study.optimize(objective, timeout=budget_s)
    wall = time.perf_counter() - t0
    model = kept["model"]
    if model is None:
        raise RuntimeError(f"LightGBM tuning finished no trial in {budget_s:.0f} s")
    t0 = time.perf_counter()
    p = model.predict_proba(x.iloc[ix["test"]])[:, 1]
    predict_s = time.perf_counter() - t0
    return {"test_auc": _auc(y[ix["test"]], p), "val_auc": study.best_value, "budget_s": budget_s,
            "wall_s": wall, "n_trials": len(study.trials), "best_params": study.best_params,
            "best_iteration": study.best_trial.user_attrs["best_iteration"], "predict_s": predict_s}, model


# -------------------------------------------------------------------------------------- the packaged network

def packaged_network(study_name: str, folder: Path, df: Any, test: np.ndarray, y: np.ndarray,
                     cores: int) -> tuple[dict[str, Any], Any]:
    """The study's packaged model (the pyfunc ``sparsearch predict`` loads): its test AUC on the rebuilt test rows
    in each format and the realised sparsity of its prunable weights."""
    import torch

    from sparsearch.search.model import load_study_model
    from sparsearch.spaces import sparsity_summary

    torch.set_num_threads(cores)
    pyfunc, _ = load_study_model(study_name, results_dir=folder)
    model = pyfunc.unwrap_python_model()
    rows = df[test]
    aucs = {fmt: _auc(y[test], model.probabilities(rows, fmt)[:, 1]) for fmt in ("dense", "compact", "csr")}
    summary = sparsity_summary(model.network("dense"))
    return {"test_auc_by_format": aucs, "realized_sparsity": summary["realized_sparsity"],
            "nnz_prunable": summary["nnz_prunable"], "nnz_params": summary["nnz_params"],
            "n_params": summary["n_params"]}, model


def latency(model: Any, df: Any, x: Any, test: np.ndarray, boosters: dict[str, Any],
            cores: int) -> dict[str, float]:
    """Milliseconds per row (median of repeated calls) at each batch size, on the first test rows."""
    import torch

    from sparsearch.spaces import measure_latency

    torch.set_num_threads(cores)
    out: dict[str, float] = {}
    for b in LATENCY_BATCHES:
        def per_row(fn: Any, b: int = b) -> float:
            return measure_latency(fn, runs=LATENCY_RUNS[b], warmup=3) / b

        raw = df[test[:b]]
        cat, num = model.encoder.transform(raw)
        cat_t, num_t = torch.from_numpy(cat), torch.from_numpy(num)
        for fmt in ("compact", "csr"):
            net = model.network(fmt)
            out[f"ours_{fmt}_encoded_b{b}"] = per_row(lambda net=net, c=cat_t, n=num_t: net(c, n))
            out[f"ours_{fmt}_raw_b{b}"] = per_row(lambda fmt=fmt, raw=raw: model.probabilities(raw, fmt))
        frame = x.iloc[test[:b]]
        codes = as_codes(frame)
        for name, booster in boosters.items():
            out[f"{name}_predict_proba_b{b}"] = per_row(lambda m=booster, f=frame: m.predict_proba(f))
            out[f"{name}_booster_array_b{b}"] = per_row(
                lambda m=booster, a=codes: m.booster_.predict(a, num_threads=cores))
    return out


# ------------------------------------------------------------------------------------------------ one seed

def run_seed(seed: int, settings: dict[str, Any], data_path: Path, cores: int) -> dict[str, Any]:
    overrides = _overrides(settings, seed, data_path)
    folder = RUNS / settings["label"] / f"seed{seed}"
    print(f"[boosting] seed {seed}: our study ...", file=sys.stderr, flush=True)
    ours = run_ours(overrides, folder)
    df, ix, spec = study_rows(overrides, folder, ours["split"])
    x, y, cats, nums = peer_frame(df, spec, ix["train"])
    packaged, model = packaged_network(ours["study_name"], folder, df, ix["test"], y, cores)
    ours.update(packaged)
    ours["test_auc_reproduced"] = abs(packaged["test_auc_by_format"]["dense"] - ours["test_auc"]) <= 1e-6
    if not ours["test_auc_reproduced"]:
        print(f"[boosting] seed {seed}: WARNING the packaged network scores {packaged['test_auc_by_format']} on "
              f"the rebuilt test rows, the controller {ours['test_auc']}", file=sys.stderr, flush=True)
    print(f"[boosting] seed {seed}: HistGradientBoosting, LightGBM ...", file=sys.stderr, flush=True)
    hgb = run_hgb(x, y, ix, cats, seed, cores)
    lgbm, lgbm_model = run_lightgbm(x, y, ix, seed, cores)
    budget = ours["wall_s"] if settings["tune_cap_s"] is None else min(ours["wall_s"], settings["tune_cap_s"])
    print(f"[boosting] seed {seed}: LightGBM tuned for {budget:.0f} s ...", file=sys.stderr, flush=True)
    tuned, tuned_model = run_lightgbm_tuned(x, y, ix, seed, cores, budget)
    lat = latency(model, df, x, ix["test"], {"lightgbm": lgbm_model, "lightgbm_tuned": tuned_model}, cores)
    misses = []
    if (ours["realized_sparsity"] or 0.0) < TARGETS["realized_sparsity_min"]:
        misses.append(f"realised sparsity {ours['realized_sparsity']:.3f} < {TARGETS['realized_sparsity_min']}")
    if ours["wall_s"] > TARGETS["study_wall_s_max"]:
        misses.append(f"study took {ours['wall_s']:.0f} s > {TARGETS['study_wall_s_max']:.0f} s")
    return {"seed": seed, "n_rows": int(df.height), "n_train": int(ix["train"].size), "n_val": int(ix["val"].size),
            "n_test": int(ix["test"].size), "split_digest": ours["split"]["digest"], "categorical": cats,
            "numeric": nums, "ours": ours, "hgb": hgb, "lightgbm": lgbm, "lightgbm_tuned": tuned,
            "latency_ms_per_row": lat, "misses": misses}


# ------------------------------------------------------------------------------------------------ summary

def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    from sparsearch.search.compare import verdict

    table = [{"seed": r["seed"], "ours": r["ours"]["test_auc"], **{p: r[p]["test_auc"] for p in PEERS},
              "ours_realized_sparsity": r["ours"]["realized_sparsity"], "ours_study_s": r["ours"]["wall_s"],
              "hgb_fit_s": r["hgb"]["fit_s"], "lightgbm_fit_s": r["lightgbm"]["fit_s"],
              "lightgbm_tuned_trials": r["lightgbm_tuned"]["n_trials"], "misses": r["misses"]} for r in rows]
    ours = [t["ours"] for t in table]
    if len(table) >= 2:
        verdicts = {p: verdict(ours, [t[p] for t in table], maximize=True, names=("ours", p), paired=True)
                    for p in PEERS}
    else:  # a paired test needs two seeds or more
        verdicts = {p: {"outcome": "not decided", "text": f"ours - {p} = {ours[0] - table[0][p]:+.4f} on one "
                        "seed: a verdict needs two seeds or more"} for p in PEERS}
    keys = rows[0]["latency_ms_per_row"].keys() if rows else []
    lat = {k: statistics.median(r["latency_ms_per_row"][k] for r in rows) for k in keys}
    return {"table": table, "verdicts_test_auc": verdicts,
            "mean_test_auc": {k: statistics.fmean(t[k] for t in table) for k in ("ours", *PEERS)},
            "latency_ms_per_row_median_over_seeds": lat,
            "misses": {t["seed"]: t["misses"] for t in table if t["misses"]}}


def _print_table(summary: dict[str, Any]) -> None:
    print(f"{'seed':>4} {'ours':>8} {'hgb':>8} {'lgbm':>8} {'lgbm-opt':>8} {'sparsity':>8} {'study_s':>8}  misses")
    for t in summary["table"]:
        print(f"{t['seed']:>4} {t['ours']:>8.4f} {t['hgb']:>8.4f} {t['lightgbm']:>8.4f} {t['lightgbm_tuned']:>8.4f} "
              f"{t['ours_realized_sparsity']:>8.3f} {t['ours_study_s']:>8.0f}  {'; '.join(t['misses']) or '-'}")
    for peer, v in summary["verdicts_test_auc"].items():
        print(f"ours vs {peer}: {v['text']}")
    print("latency, ms per row (median over seeds):")
    for k, v in summary["latency_ms_per_row_median_over_seeds"].items():
        print(f"  {k:<36} {v:.5f}")


def _study_digest() -> str:
    """A digest of the bundled study's settings: a changed study file runs every seed again."""
    from sparsearch import load_study

    raw = load_study(STUDY).to_raw()
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=_results.seed, nargs="+", default=None, metavar="S",
                    help="study seeds, each its own split (default 0 1 2 3 4; with --smoke: 0)")
    ap.add_argument("--smoke", action="store_true",
                    help=f"{SMOKE['rows']:,} rows, {SMOKE['n_trials']} trials, {SMOKE['epochs']} epoch, tuning "
                         f"capped at {SMOKE['tune_cap_s']:.0f} s: checks the script in about a minute (results "
                         "under bench/out, never bench/results)")
    ap.add_argument("--force", action="store_true", help="run every seed again, even when its record exists")
    _results.add_data_root(ap)  # nycflights13/flights.parquet under it
    args = ap.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else ([0] if args.smoke else [0, 1, 2, 3, 4])
    if len(set(seeds)) != len(seeds):
        ap.error(f"--seeds: each seed once, got {' '.join(map(str, seeds))}")
    data_path = _results.data_file(_results.data_root(args.data_root), DATA)

    from sparsearch import load_study

    execution = load_study(STUDY).execution
    cores = int(execution.workers * execution.cpus_per_trial)
    if args.smoke:
        settings = {"label": "smoke", "rows": SMOKE["rows"], "n_trials": SMOKE["n_trials"],
                    "epochs": SMOKE["epochs"], "tune_cap_s": SMOKE["tune_cap_s"]}
    else:
        settings = {"label": "all-rows", "rows": ALL_ROWS, "n_trials": None, "epochs": None, "tune_cap_s": None}
    config_base = {**settings, "cores": cores, "study_digest": _study_digest(), "data": DATA}
    # each seed's record is committed beside the summary (bench/results/boosting/), so that a session that ends
    # mid-benchmark keeps every finished seed; smoke records stay under bench/out
    folder = RUNS if args.smoke else RECORDS
    runs = [(seed, {**config_base, "seed": seed}, folder / f"{settings['label']}-s{seed}.json") for seed in seeds]
    rows = _results.run_seeds("boosting", runs, lambda seed: run_seed(seed, settings, data_path, cores),
                              num_cpus=cores, force=args.force)
    summary = summarise(rows)
    _print_table(summary)
    doc = {"study": STUDY, "settings": {k: v for k, v in config_base.items() if k != "label"}, "seeds": seeds,
           "targets": TARGETS, **summary, "runs": rows}
    results = RUNS / "smoke" if args.smoke else None
    _results.save(doc, key=f"boosting-{STUDY}", results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
