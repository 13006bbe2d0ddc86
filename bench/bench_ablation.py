"""What each ingredient of issue 29 is worth on `flights` (all rows): the study with every ingredient on, then with
each one off in turn, 10-minute studies, paired by seed on the same split (issue #29, item 8).

    python bench/bench_ablation.py --data-root ../shared/data          # 10 arms x 3 seeds x 600 s: about 6 hours
    python bench/bench_ablation.py --arms all,last-epoch --seeds 1     # some arms, some seeds
    python bench/bench_ablation.py --smoke                             # 5,000 rows, 2 trials of 1 epoch per arm

Each run is the bundled `flights` study on every row (`data.max_rows` lifted), `seed = s` (its own split, shared by
every arm of that seed), `timeout = BUDGET_S` and no trial cap (`n_trials` far above what fits), so that every arm
gets the same wall-clock search budget, whatever its trials cost; the study's best network, chosen on validation
rows, is scored once on the test rows by the controller. The arms (`ARMS`):

- `all`: the bundled study as shipped;
- `encoder-all-rows`: the encoder fitted on every labelled row, test rows included (the behaviour before issue 29:
  vocabularies, hashing decisions, medians, missing-value indicators). Done by wrapping `TabularEncoder.fit` in
  this process (the study encodes in the driver); the record keeps the rows the fit saw, so the arm proves it ran;
- `ordered-ints-off`: `[data] ordered_ints` unset: integer columns are categorical codes only (numbers as numbers
  off; `flights` has no float feature);
- `no-quantile`, `no-ple`, `no-plr`: that numeric encoding taken out of `[space] numeric_encoding`;
- `no-ensembles`: `ensemble_size = 1`;
- `last-epoch`: `[train] keep_epoch = "last"` (best-epoch selection off);
- `no-cross-layers`: `cross_layers = 0` (the DCN-v2 cross block off);
- `no-fm`: `fm_dim = 0` (the factorization-machine pairwise products off).

A warm-start portfolio entry that the smaller space excludes is clipped or skipped by the controller (its note is
in the record). Runs go seed by seed, the arms' order rotated by seed (interleaved); each run is a subprocess with
its own Ray and a fresh results folder (no encoding cache shared between arms), and its record is saved as it
finishes (bench/results/ablation/<arm>-s<seed>.json, committed) and skipped when the command runs again with the
same settings. The summary, per arm against `all`, is `sparsearch.search.compare.verdict(..., paired=True)` on test
AUC (exact sign-flip test, bootstrap interval; with 3 seeds the smallest one-sided p is 1/8, so no arm can "win" or
"lose": the mean paired difference and its interval are the measured number), in
bench/results/ablation-flights.json.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

STUDY = "flights"
DATA = "nycflights13/flights.parquet"
ALL_ROWS = 100_000_000
"""``[data] max_rows`` above the table's size: every row (the bundled study samples 100,000)."""
BUDGET_S = 600.0
NO_TRIAL_CAP = 100_000
"""``n_trials`` far above what fits in the budget: the timeout ends every arm's study."""
SEEDS = 3
SMOKE = {"rows": 5000, "n_trials": 2, "epochs": 1, "budget_s": 60.0}
RECORDS = _results.RESULTS / "ablation"
SMOKE_RECORDS = _results.OUT / "ablation" / "smoke"
WORK = _results.OUT / "ablation" / "work"


def _without(encoding: str) -> dict[str, Any]:
    from sparsearch import load_study

    kept = [e for e in load_study(STUDY).space.numeric_encoding if e != encoding]
    return {"space.numeric_encoding": kept}


ARMS: dict[str, str] = {
    "all": "every ingredient on (the bundled study)",
    "encoder-all-rows": "encoder fitted on every labelled row (test rows included)",
    "ordered-ints-off": "integers categorical only (data.ordered_ints unset)",
    "no-quantile": "numeric_encoding without quantile",
    "no-ple": "numeric_encoding without ple",
    "no-plr": "numeric_encoding without plr",
    "no-ensembles": "ensemble_size = 1",
    "last-epoch": "train.keep_epoch = last",
    "no-cross-layers": "cross_layers = 0",
    "no-fm": "fm_dim = 0",
}


def arm_overrides(arm: str) -> dict[str, Any]:
    """The study overrides of ``arm`` (on top of the run's own: data, seed, rows, budget)."""
    if arm in ("all", "encoder-all-rows"):
        return {}
    if arm == "ordered-ints-off":
        return {}  # an override of None means "not given": study_source() removes the key instead
    if arm.startswith("no-") and arm[3:] in ("quantile", "ple", "plr"):
        return _without(arm[3:])
    return {"no-ensembles": {"space.ensemble_size": [1, 1]}, "last-epoch": {"train.keep_epoch": "last"},
            "no-cross-layers": {"space.cross_layers": [0, 0]}, "no-fm": {"space.fm_dim": [0, 0]}}[arm]


def study_source(arm: str) -> str | dict[str, Any]:
    """What ``run_study`` loads for ``arm``: the bundled study's name, or its sections with a key removed."""
    if arm != "ordered-ints-off":
        return STUDY
    import tomllib

    from sparsearch.search.spec.load import bundled_studies

    raw = tomllib.loads(bundled_studies()[STUDY].read_text(encoding="utf-8"))
    del raw["data"]["ordered_ints"]  # integers are categorical codes only, as before issue 29
    return raw


@contextlib.contextmanager
def _encoder_on_every_row(seen: list[int]) -> Iterator[None]:
    """``TabularEncoder.fit`` ignores its ``rows``: every labelled row enters the fit (``seen`` gets the row count
    of each fit)."""
    from sparsearch.spaces.encoder import TabularEncoder

    original = TabularEncoder.fit.__func__  # type: ignore[attr-defined]

    def fit_all(cls: type, df: Any, target: str, **kwargs: Any) -> Any:
        kwargs["rows"] = None
        seen.append(int(df.height))
        return original(cls, df, target, **kwargs)

    TabularEncoder.fit = classmethod(fit_all)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        TabularEncoder.fit = classmethod(original)  # type: ignore[method-assign,assignment]


def run_arm(arm: str, seed: int, settings: dict[str, Any], data_path: Path, folder: Path) -> dict[str, Any]:
    """One study run of ``arm`` on ``seed``: its test AUC and what the study chose."""
    from sparsearch import run_study
    from sparsearch._ray import connect_ray

    overrides: dict[str, Any] = {"seed": seed, "data": str(data_path), "data.max_rows": settings["rows"],
                                 "n_trials": settings["n_trials"], "timeout": settings["budget_s"],
                                 **arm_overrides(arm)}
    if settings["epochs"] is not None:
        overrides["train.epochs"] = settings["epochs"]
    from sparsearch import load_study

    spec = load_study(study_source(arm), **overrides)
    shutil.rmtree(folder, ignore_errors=True)
    connect_ray("local", num_cpus=settings["cores"])
    fits: list[int] = []
    patch = _encoder_on_every_row(fits) if arm == "encoder-all-rows" else contextlib.nullcontext()
    t0 = time.perf_counter()
    with patch:
        result = run_study(study_source(arm), results_dir=folder, progress=False, **overrides)
    wall = time.perf_counter() - t0
    doc = result.to_json()
    best = result.best_trial
    if best is None or not doc["test_metrics"]:
        raise RuntimeError(f"{arm} seed {seed}: the study ended without a best trial scored on test rows "
                           f"({doc['n_complete']} complete, {doc['n_failed']} failed)")
    if arm == "encoder-all-rows" and not fits:
        raise RuntimeError("encoder-all-rows: the encoder was never fitted in this process; the arm did not run")
    info = doc.get("info") or {}
    row = {"arm": arm, "seed": seed, "test_auc": doc["test_metrics"]["test_auc"],
           "test_metrics": doc["test_metrics"], "best_val_auc": (doc["best_values"] or [None])[0],
           "best_params": doc["best_params"], "best_trial_number": doc["best_trial_number"],
           "realized_sparsity": best.user_attrs.get("realized_sparsity"),
           "n_trials_run": doc["n_trials_run"], "n_complete": doc["n_complete"], "n_pruned": doc["n_pruned"],
           "n_failed": doc["n_failed"], "wall_s": round(wall, 1), "timings": info.get("timings"),
           "warnings": info.get("warnings"), "split": doc["split"]}
    row["ordered_ints"] = spec.data.ordered_ints  # what the arm ran with, as loaded
    row["space"] = {k: getattr(spec.space, k) for k in ("numeric_encoding", "ensemble_size", "cross_layers",
                                                         "fm_dim")}
    row["keep_epoch"] = spec.train.keep_epoch
    if fits:
        row["encoder_fit_rows"] = fits
        row["split_rows"] = {k: doc["split"].get(f"n_{k}") for k in ("train", "val", "test")}
    shutil.rmtree(folder, ignore_errors=True)  # the packaged models are not kept: the record is the result
    return row


def summarise(rows: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per arm: mean test AUC, and against `all` the paired verdict on the seeds both have."""
    from sparsearch.search.compare import verdict

    by = {(r["arm"], r["seed"]): r for r in rows}
    out: dict[str, Any] = {}
    for arm in arms:
        mine = sorted(s for (a, s) in by if a == arm)
        entry: dict[str, Any] = {"what": ARMS[arm], "seeds": mine,
                                 "mean_test_auc": statistics.fmean(by[arm, s]["test_auc"] for s in mine)
                                 if mine else None}
        both = [s for s in mine if ("all", s) in by]
        if arm != "all" and both:
            full = [by["all", s]["test_auc"] for s in both]
            off = [by[arm, s]["test_auc"] for s in both]
            entry["paired_seeds"] = both
            entry["effect_all_minus_off"] = [a - b for a, b in zip(full, off, strict=True)]
            entry["verdict"] = verdict(full, off, maximize=True, names=("all", arm), paired=True)
        out[arm] = entry
    return out


def _study_digest() -> str:
    """A digest of the bundled study's settings: a changed study file runs every arm again."""
    from sparsearch import load_study

    raw = load_study(STUDY).to_raw()
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _run_one(argv: list[str]) -> int:
    """``_run``: one arm on one seed, in this process (a fresh Ray), its record saved."""
    ap = argparse.ArgumentParser(prog="bench_ablation.py _run")
    ap.add_argument("--arm", required=True, choices=list(ARMS))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--record", required=True)
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    config = json.loads(args.config)
    import ray

    try:
        row = run_arm(args.arm, args.seed, config, Path(args.data), WORK / f"{args.arm}-s{args.seed}")
    finally:
        ray.shutdown()
    _results.save_run(Path(args.record), {"config": config, "row": row})
    print(json.dumps({k: row[k] for k in ("arm", "seed", "test_auc", "best_val_auc", "n_complete", "wall_s")}),
          flush=True)
    return 0


def _arm_list(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(f"unknown arm {unknown[0] if unknown else text!r}; allowed: "
                                         f"{', '.join(ARMS)}")
    return arms


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_run"]:
        return _run_one(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", type=_arm_list, default=list(ARMS),
                    help=f"comma-separated arms (default: all of them: {', '.join(ARMS)})")
    ap.add_argument("--seeds", type=_results.positive_int, default=SEEDS, help=f"paired seeds 0..N-1 (default {SEEDS})")
    ap.add_argument("--smoke", action="store_true",
                    help=f"{SMOKE['rows']:,} rows, {SMOKE['n_trials']} trials of {SMOKE['epochs']} epoch per arm: "
                         "checks the script (results under bench/out, never bench/results)")
    _results.add_data_root(ap)  # nycflights13/flights.parquet under it
    args = ap.parse_args(argv)
    data_path = _results.data_file(_results.data_root(args.data_root), DATA)

    from sparsearch import load_study

    execution = load_study(STUDY).execution
    cores = int(execution.workers * execution.cpus_per_trial)
    if args.smoke:
        settings = {"label": "smoke", "rows": SMOKE["rows"], "n_trials": SMOKE["n_trials"],
                    "epochs": SMOKE["epochs"], "budget_s": SMOKE["budget_s"]}
    else:
        settings = {"label": "all-rows", "rows": ALL_ROWS, "n_trials": NO_TRIAL_CAP, "epochs": None,
                    "budget_s": BUDGET_S}
    records = SMOKE_RECORDS if args.smoke else RECORDS
    base = {**settings, "cores": cores, "study_digest": _study_digest(), "data": DATA}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for seed in range(args.seeds):
        rot = seed % len(args.arms)
        for arm in args.arms[rot:] + args.arms[:rot]:  # interleaved: the order rotated by seed
            record = records / f"{arm}-s{seed}.json"
            config = {**base, "arm": arm, "seed": seed, "overrides": arm_overrides(arm)}
            if _results.load_run(record, config) is not None:
                print(f"[ablation] {arm} seed {seed}: done already ({record.name}), skipped", flush=True)
                continue
            print(f"[ablation] {arm} seed {seed} ({settings['budget_s']:.0f} s)", flush=True)
            subprocess.run([sys.executable, __file__, "_run", "--arm", arm, "--seed", str(seed),
                            "--data", str(data_path), "--record", str(record), "--config", json.dumps(config)],
                           env=env, check=True)
    rows = []
    for arm in args.arms:
        for seed in range(args.seeds):
            done = _results.load_run(records / f"{arm}-s{seed}.json")
            if done is not None:
                rows.append(done["row"])
    summary = summarise(rows, args.arms)
    for arm, entry in summary.items():
        line = f"{arm:<18} mean test AUC {entry['mean_test_auc']:.4f}"
        if "verdict" in entry:
            line += f"  all - {arm}: {entry['verdict']['text']}"
        print(line)
    doc = {"study": STUDY, "settings": {k: v for k, v in base.items() if k != "label"}, "arms": summary,
           "runs": rows}
    _results.save(doc, key=f"ablation-{STUDY}", results=records.parent if args.smoke else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
