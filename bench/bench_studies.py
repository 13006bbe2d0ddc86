"""Studies benchmarks (issue 11, item 5): last round's two claims, re-measured on held-out test metrics.

Full size (the bundled studies as a user runs them; flights on all rows), 5 seeds. Run from the repository root on
a quiet machine; each command resumes where it stopped (finished runs are skipped), so it can be interrupted:

    python bench/bench_studies.py prefilter                     # clicklog_large, 2M rows: top 10 / all / top 30
    python bench/bench_studies.py prefilter --study flights     # flights, all rows: top 3 / all 12 / top 9
    python bench/bench_studies.py samplers --studies clicklog_large
    python bench/bench_studies.py samplers --studies flights
    python bench/bench_studies.py samplers --studies fashion_cnn
    python bench/bench_studies.py samplers --studies clicklog_large,flights --multi-only   # [val_auc, nnz_params]

Time on the 2-core VM, estimated from the measured full-size runs (the bundled clicklog_large study took 124.7 s
end to end with Hyperband and 289.8 s without, flights on all rows 41.0 s; bench/results/fullsize-*.json) and from
smoke runs (2 seeds x 2 trials on 5,000 rows: 3-5 s a run plus about 15 s of Ray start and warm-up per command):

- ``prefilter`` clicklog_large: per seed about 2 min (top 10) + 2-3 min (top 30) + the unfiltered run over 316
  columns, not measured at full size. On 100,000 rows a one-epoch unfiltered trial took 12-13 s against 0.5-1.0 s
  for top 10 (13-25x), so at 2M rows expect it to run into the study's 27-minute timeout plus the trials still
  running: 30-45 min. Total for 5 seeds: about 3-4.5 hours, peak memory roughly 8-10 GB.
- ``prefilter --study flights``: about 1 min per run, 15 runs: about 15-20 minutes.
- ``samplers`` clicklog_large (single objective): about 2-3 min per run, 10 runs: about 25-40 minutes.
- ``samplers`` flights: about 1 min per run, 10 runs: about 10-15 minutes.
- ``samplers`` fashion_cnn (all 60,000 images, 12 epochs with cosine decay, Hyperband, no new trial after 40
  minutes): one full trial takes 8-12 minutes on one core (study v3), so a run lasts about an hour; 10 runs:
  about 10 hours.
  (The earlier 4-epoch study finished its 30 trials in 29 minutes: bench/results/fullsize-fashion-v1.json.)
- ``--multi-only`` (no trial pruner: multi-objective studies cannot prune): clicklog about 5 min per run (289.8 s
  without Hyperband), flights about 2 min; both studies, tpe and random, 5 seeds: about 1.5 hours.

The protocol (README, "The run JSON"; search/compare.py): every run is ``run_study`` on the study with its own
seed, which also seeds the stratified train / validation / test split; the prefilter ranks the training rows only;
the incumbent (best by validation) is evaluated once on the test rows. Every verdict is decided on those **test**
metrics with :func:`sparsearch.search.compare.decide` (``verdict``'s one rule): "wins" needs a bootstrap 95% interval
of the difference that excludes 0 and a one-sided permutation p < 0.05; anything else is "no difference shown",
which is not proof that the two are the same. The arms of a seed share its split (and, for samplers, the seed), so
they are compared paired by seed (exact sign-flip test on the per-seed differences).

- ``prefilter``: three arms per seed, rotated seed by seed: the prefilter keeping the top k features, no prefilter
  (every column), and the prefilter keeping 3k. Each run has its own fresh results folder, so a prefiltered run pays
  its own ranking. Reported: the quality outcome of each prefiltered arm against no prefilter, and its wall time
  as the geometric mean of the per-seed ratios (the claim: <= 0.5x).
- ``samplers``: the study's sampler (TPE) against random search on the same study, budget and seeds, decided on
  the incumbent's test metric (as ``compare_samplers`` does); ``--multi-only`` runs the study with objectives
  ``[quality, nnz_params]`` and no pruner, decided on the hypervolume of each run's Pareto trials' test vectors
  (the reference point: the worst validation values seen over all runs, as ``compare_samplers`` sets it).
- ``repro``: the same study and seed twice per sampler: same trials, same metrics?

Output: one small JSON per finished run (``bench/results/studies/<label>/<arm>-s<seed>.json``: the incumbent's test
metrics, its validation values, wall time, trial counts, seed, data fingerprint, command) written as soon as it
finishes; a re-run skips runs whose JSON exists with the same settings. Then the summary
``bench/results/studies-<label>.json`` and an HTML page ``bench/out/studies/<label>.html``. Study folders (Optuna
storage, MLflow, ranking cache) go to ``bench/out/studies/runs/<label>/``.

Smoke runs: ``--set KEY=VALUE`` (a study override, TOML value) shrinks a run, e.g. ``--seeds 2 --set n_trials=2
--set data.params.n_rows=5000``. Any override but ``data.path`` marks the JSON ``"full_size": false``, and shrunk
output goes to ``bench/out/studies/shrunk/`` (never bench/results) unless ``--out DIR`` says where.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _results  # bench/_results.py: the results writer (bench/ is not a package)
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
OUT = BENCH / "out" / "studies"

ALL_ROWS = 100_000_000
"""``[data] max_rows`` above any data set here: every row (the bundled flights study samples 100,000)."""
DEFAULT_K = {"clicklog_large": 10, "flights": 3}
"""Features kept by the prefilter arm (the 3x arm keeps 3k): last round's choices (flights has 12 candidates)."""
MULTI_OBJECTIVES = {"flights": ["val_auc", "nnz_params"], "clicklog_large": ["val_auc", "nnz_params"],
                    "fashion_cnn": ["val_accuracy", "nnz_params"]}
NOT_SIZE = {"data", "data.path"}
"""Overrides that leave a run at full size (where the data file is); any other ``--set`` shrinks or changes it."""


# -- pure helpers (tests/test_bench_studies.py) ---------------------------------------------------------------------
def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` (TOML value syntax; a bare word is a string) into load_study overrides.

    Example:
        >>> parse_set(["n_trials=2", "data.params.n_rows=5_000", "pruner=none"])
        {'n_trials': 2, 'data.params.n_rows': 5000, 'pruner': 'none'}
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. n_trials=2 or data.params.n_rows=5000")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def is_full_size(overrides: dict[str, Any]) -> bool:
    """True when no override changes the study's size or budget (only where its data file is may change)."""
    return all(k in NOT_SIZE for k in overrides)


def geo_mean(ratios: list[float]) -> float:
    """Geometric mean (of per-seed wall-time ratios).

    Example:
        >>> round(geo_mean([0.25, 1.0]), 6)
        0.5
    """
    arr = np.asarray(ratios, float)
    return float(np.exp(np.log(arr).mean())) if arr.size else math.nan


def prefilter_claim(arm: str, v: dict[str, Any], ratio: float, metric: str) -> dict[str, Any]:
    """The prefilter claim for one arm, in its three parts: quality outcome (``verdict``'s rule), the wall-time
    ratio against no prefilter, and whether both parts of "the same or better metric at <= 0.5x the time" hold.

    Only "wins" shows "better"; "no difference shown" leaves "the same" unproven (it is not evidence of equality),
    so the claim is "shown" only on a win at <= 0.5x, "not contradicted" on no difference shown at <= 0.5x.
    """
    fast = bool(math.isfinite(ratio) and ratio <= 0.5)
    outcome = v["outcome"]
    if outcome == "loses":
        status = "not held: worse test metric"
    elif not fast:
        status = f"not held: {ratio:.2f}x the wall time (> 0.5x)"
    elif outcome == "wins":
        status = "shown: better test metric at <= 0.5x the wall time"
    else:
        status = ("not shown, not contradicted: no difference shown at <= 0.5x the wall time (this is not "
                  "proof of the same metric)")
    text = (f"{arm} vs no prefilter, on {metric}: {v['text']}; wall time {ratio:.2f}x "
            f"(geometric mean of {v['n_a']} per-seed ratios; {'<=' if fast else '>'} 0.5x) -> {status}")
    return {"arm": arm, "metric": metric, "quality_outcome": outcome, "wall_ratio": ratio,
            "wall_ratio_le_half": fast, "claim": status.split(":")[0], "text": text, "verdict": v}


def by_seed(runs: list[dict[str, Any]], key: str = "test") -> dict[int, dict[str, Any]]:
    """One arm's run records as :func:`sparsearch.search.compare.decide` takes them: ``{seed: run}`` with the
    decision value under ``key``, the run's name and its split digest (what pairs it with the other arm's run)."""
    return {r["seed"]: {"study_name": r.get("study", f"seed {r['seed']}"), key: r.get(key),
                        "split_digest": (r.get("split") or {}).get("digest")} for r in runs}


def summarize_arm(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean / sd / min / max of the test value, the validation value selected on, wall time and trial counts."""
    tests = [r["test"] for r in runs if r.get("test") is not None]
    vals = [r["best_values"][0] for r in runs if r.get("best_values")]
    walls = [r["wall_s"] for r in runs]

    def stats(xs: list[float], name: str) -> dict[str, Any]:
        a = np.asarray(xs, float)
        return {f"mean_{name}": float(a.mean()) if a.size else None,
                f"sd_{name}": float(a.std(ddof=1)) if a.size > 1 else None,
                f"min_{name}": float(a.min()) if a.size else None, f"max_{name}": float(a.max()) if a.size else None}

    return {"seeds": [r["seed"] for r in runs], **stats(tests, "test"), **stats(vals, "val"), **stats(walls, "wall_s"),
            "n_complete": sum(r["n_complete"] for r in runs), "n_pruned": sum(r["n_pruned"] for r in runs),
            "n_failed": sum(r["n_failed"] for r in runs),
            "n_features": sorted({r["n_features"] for r in runs if r.get("n_features") is not None}),
            "mean_rank_s": float(np.mean([r["timings"].get("rank_s", 0.0) for r in runs])) if runs else None}


def pareto_test_hypervolumes(runs: list[dict[str, Any]], directions: list[str]) -> tuple[list[float], list[float]]:
    """Every run's hypervolume of its Pareto trials' test vectors (what the multi-objective verdict is decided
    on), with the reference point ``compare_samplers`` uses: the worst validation value seen over all runs + 10%.
    Returns (reference in the minimised space, one hypervolume per run)."""
    from sparsearch.search.compare import hypervolume_so_far

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    seen = np.array([sign * np.asarray(v, float) for r in runs for v in r["values"]
                     if v is not None and all(math.isfinite(x) for x in v)])
    reference = (seen.max(axis=0) + 0.1 * np.abs(seen.max(axis=0)) + 1e-9) if seen.size else np.ones(len(sign))
    hvs = []
    for r in runs:
        hv = hypervolume_so_far(r["test_vectors"], directions, reference) if r["test_vectors"] else []
        hvs.append(hv[-1] if hv else 0.0)
    return [float(x) for x in reference], hvs


# -- running ----------------------------------------------------------------------------------------------------------
def _command() -> str:
    return "python bench/bench_studies.py " + " ".join(sys.argv[1:])


def _ray_up() -> None:
    """One local Ray for the whole benchmark, with the project's settings (run_study joins it, never stops it);
    Ray's own sizes, as `sparsearch run` starts it (the full-size data needs GBs). Joins one already started."""
    from sparsearch._ray import connect_ray

    connect_ray("local")


def _warm_up(base: Any, folder: Path) -> None:
    """Two tiny untimed trials: start both Ray workers and import torch in them, so no timed run pays start-up."""
    from sparsearch import run_study
    from sparsearch.search.spec import parse_study

    warm = base.to_toml_dict()
    warm["study"].update({"n_trials": 2, "name": "warmup", "pruner": "none", "objectives": warm["study"]["objectives"][:1]})
    warm["study"].pop("timeout", None)
    warm["study"].pop("pruner_params", None)
    warm["train"]["epochs"] = 1
    if base.data.generator == "click_log":
        warm["data"].update({"params": {**warm["data"]["params"], "n_rows": 2_000}, "top_k": [2, 2]})
    elif base.data.is_image:
        warm["data"]["params"] = {**warm["data"].get("params", {}), "limit": 500}
    else:
        warm["data"]["max_rows"] = 2_000
    warm["tracking"].pop("uri", None)  # tracked like the timed runs (MLflow's start-up is paid here), in ``folder``
    shutil.rmtree(folder, ignore_errors=True)
    run_study(parse_study(warm, origin="warm-up"), results_dir=folder, progress=False)
    shutil.rmtree(folder, ignore_errors=True)


class Paths:
    """Where a comparison's run JSONs, summary, page and study folders go."""

    def __init__(self, label: str, out: str | None, full_size: bool) -> None:
        if out is not None:
            root = Path(out).resolve()
            self.results, self.pages, self.runs = root, root, root / "runs" / label
        elif full_size:
            self.results, self.pages, self.runs = RESULTS, OUT, OUT / "runs" / label
        else:  # a shrunk run can never land where the full-size figures live
            root = OUT / "shrunk"
            self.results, self.pages, self.runs = root, root, root / "runs" / label
        self.label = label
        self.run_json = self.results / "studies" / label
        self.summary = self.results / f"studies-{label}.json"
        self.page = self.pages / f"{label}.html"


def _study_overrides(study: str, extra: dict[str, Any]) -> dict[str, Any]:
    base = {"data.max_rows": ALL_ROWS} if study == "flights" else {}  # flights on every row
    return {**base, **extra}


def _load(study: str, overrides: dict[str, Any]) -> Any:
    from sparsearch import load_study
    from sparsearch.errors import SpecError

    try:
        return load_study(study, **overrides)
    except SpecError as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    """Bad input: one line on stderr, exit status 2."""
    print(f"bench_studies: {message}", file=sys.stderr)
    raise SystemExit(2)


def _data_missing(spec: Any) -> str | None:
    if spec.data.path is not None and not Path(str(spec.data.path)).exists():
        return f"{spec.data.path} does not exist (give another copy with --set data.path=PATH)"
    return None


def _run_one(spec: Any, folder: Path, config: dict[str, Any], path: Path, full_size: bool) -> dict[str, Any]:
    """Run one study in a fresh folder; save and return its small record."""
    from sparsearch import run_study
    from sparsearch.search.compare import incumbent_test_vectors, to_test_metric

    shutil.rmtree(folder, ignore_errors=True)  # fresh: no cached ranking, no earlier trials
    t0 = time.perf_counter()
    res = run_study(spec, results_dir=folder, progress=False)
    wall = time.perf_counter() - t0
    doc = res.to_json()
    objectives = list(res.objectives)
    tests = doc["test_metrics"] or {}
    rec = {
        "config": config, "full_size": full_size, "seed": config["seed"], "study": spec.study.name,
        "objectives": objectives, "directions": list(res.directions),
        "wall_s": wall, "elapsed_s": res.elapsed_s, "n_trials": doc["n_trials"], "n_complete": doc["n_complete"],
        # the budget: fewer trials than planned means the study's timeout stopped it
        "n_trials_planned": spec.study.n_trials, "timeout_s": spec.study.timeout,
        "n_pruned": doc["n_pruned"], "n_failed": doc["n_failed"],
        "best_values": doc["best_values"], "best_trial_number": doc["best_trial_number"],
        # the decision value of a single-objective run; a multi-objective run is decided on its test hypervolume
        # (test_metrics is then the first Pareto trial's, as in the run JSON)
        "test_metrics": tests, "test": tests.get(to_test_metric(objectives[0])) if len(objectives) == 1 else None,
        "n_features": len(res.info.get("features") or []) or None, "timings": res.info.get("timings", {}),
        "data_fingerprint": res.info.get("data_fingerprint"),
        "split": {k: (doc["split"] or {}).get(k) for k in ("n_train", "n_val", "n_test", "seed", "test_source",
                                                           "digest")},
        "best_params": doc["best_params"], "command": _command(), "loadavg_at_end": list(os.getloadavg()),
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if len(objectives) > 1:  # what the hypervolume verdict needs: validation values (reference), Pareto test vectors
        rec["values"] = [list(t.values) for t in res.trials if t.state.name == "COMPLETE" and t.values]
        rec["test_vectors"] = incumbent_test_vectors(res, objectives)
        rec["pareto_size"] = len(res.best_trials)
    _results.save_run(path, rec)
    return rec


def _run_all(paths: Paths, arms: list[tuple[str, Any]], seeds: int, base_config: dict[str, Any], full_size: bool,
             tag: str) -> dict[str, list[dict[str, Any]]]:
    """Every (arm, seed), arms rotated seed by seed (machine drift hits every arm alike); done runs are skipped."""
    records: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in arms}
    todo = []
    for seed in range(seeds):
        order = arms[seed % len(arms):] + arms[: seed % len(arms)]
        for name, make in order:
            spec = make(seed)
            config = {**base_config, "arm": name, "seed": seed}
            if spec.study.sampler_params:  # a run saved with other sampler options runs again
                config["sampler_params"] = spec.study.sampler_params
            path = paths.run_json / f"{name}-s{seed}.json"
            rec = _results.load_run(path, config)
            if rec is not None:
                print(f"[{tag}] {name} seed {seed}: done already ({path.name}), skipped", flush=True)
                records[name].append(rec)
            else:
                todo.append((name, spec, seed, config, path))
    if todo:
        _ray_up()
        _warm_up(todo[0][1], paths.runs / "warmup")
    for name, spec, seed, config, path in todo:
        rec = _run_one(spec, paths.runs / f"{name}-s{seed}", config, path, full_size)
        records[name].append(rec)
        print(f"[{tag}] {name} seed {seed}: test {rec['test']}, val {rec['best_values']}, {rec['wall_s']:.1f} s "
              f"({rec['n_complete']} complete, {rec['n_pruned']} pruned, {rec['n_features']} features)", flush=True)
    for name in records:
        records[name].sort(key=lambda r: r["seed"])
    return records


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """A run as the summary keeps it (no per-trial values, no parameters)."""
    keep = ("seed", "study", "test", "test_metrics", "best_values", "wall_s", "n_trials", "n_trials_planned", "timeout_s",
            "n_complete", "n_pruned", "n_failed",
            "n_features", "timings", "data_fingerprint", "split", "test_hypervolume", "pareto_size")
    return {k: rec[k] for k in keep if k in rec}


# -- prefilter --------------------------------------------------------------------------------------------------------
def bench_prefilter(args: argparse.Namespace) -> dict[str, Any]:
    from sparsearch.search.compare import RULE, decide, environment_info, to_test_metric
    from sparsearch.search.spec import parse_study

    extra = parse_set(args.set)
    full = is_full_size(extra)
    overrides = _study_overrides(args.study, extra)
    base = _load(args.study, overrides)
    if base.data.is_image:
        _fail(f"prefilter: {args.study!r} is an image study (no feature prefilter); choose a tabular study: "
              f"{', '.join(DEFAULT_K)}")
    if (missing := _data_missing(base)) is not None:
        _fail(f"prefilter: {missing}")
    k = args.k or DEFAULT_K.get(args.study, 10)
    label = f"prefilter-{args.study}" + ("" if args.method == "adjusted-mi" else f"-{args.method}")
    paths = Paths(label, args.out, full)
    names = {"top": f"top{k}", "all": "all", "top3": f"top{3 * k}"}
    titles = {names["top"]: f"prefilter {args.method}, top {k}", names["all"]: "no prefilter, all features",
              names["top3"]: f"prefilter {args.method}, top {3 * k} (3x space)"}

    def maker(name: str, prefilter: str, top: int | None) -> tuple[str, Any]:
        def make(seed: int) -> Any:
            raw = base.to_toml_dict()
            raw["data"]["prefilter"] = prefilter
            if top is None:
                raw["data"].pop("top_k", None)
            else:
                raw["data"]["top_k"] = [top, top]
            raw["study"].update({"seed": seed, "name": f"{base.study.name}-{name}-s{seed}"})
            return parse_study(raw, origin=f"prefilter arm {name!r}")
        return name, make

    arms = [maker(names["top"], args.method, k), maker(names["all"], "none", None),
            maker(names["top3"], args.method, 3 * k)]
    config = {"kind": "prefilter", "study": args.study, "overrides": overrides, "k": k, "method": args.method}
    started = time.perf_counter()
    records = _run_all(paths, arms, args.seeds, config, full, "prefilter")
    objective = base.study.objectives[0]
    metric = to_test_metric(objective)
    maximize = base.study.resolved_directions()[0] == "maximize"
    ref = {r["seed"]: r for r in records[names["all"]]}
    summary = {}
    for name, runs in records.items():
        ratios = [r["wall_s"] / ref[r["seed"]]["wall_s"] for r in runs if r["seed"] in ref]
        summary[name] = {"arm": titles[name], **summarize_arm(runs),
                         "wall_ratio_vs_no_prefilter": geo_mean(ratios), "per_seed_wall_ratios": ratios}
    claims = {}
    for name in (names["top"], names["top3"]):
        v = decide(by_seed(records[name]), by_seed(records[names["all"]]), names=(titles[name], titles[names["all"]]),
                   maximize=maximize, metric=metric)
        claims[name] = prefilter_claim(titles[name], v, summary[name]["wall_ratio_vs_no_prefilter"], metric)
    fingerprint = next((r["data_fingerprint"] for rs in records.values() for r in rs), None)
    doc = {"benchmark": "prefilter", "command": _command(), "full_size": full, "study": args.study,
           "overrides": overrides, "size_overrides": {k2: v2 for k2, v2 in extra.items() if k2 not in NOT_SIZE},
           "k": k, "method": args.method, "seeds": args.seeds, "objective": objective, "decided_on": metric,
           "rule": RULE,
           "arms": summary, "claims": claims, "runs": {n: [_slim(r) for r in rs] for n, rs in records.items()},
           "elapsed_s": time.perf_counter() - started, "environment": environment_info(fingerprint),
           "machine": _results.machine(), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write(paths, doc, _prefilter_page(doc, records, titles))
    for c in claims.values():
        print(c["text"], flush=True)
    return doc


# -- samplers ---------------------------------------------------------------------------------------------------------
def bench_samplers(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sparsearch.search.compare import RULE, comparison_run, decide, environment_info, to_test_metric

    extra = parse_set(args.set)
    full = is_full_size(extra)
    samplers = args.samplers.split(",")
    baseline = "random" if "random" in samplers else samplers[-1]
    docs = []
    for study in args.studies.split(","):
        overrides = _study_overrides(study, extra)
        variants = ([] if args.multi_only else ["single"]) + ([] if args.single_only else ["multi"])
        for kind in variants:
            more = {} if kind == "single" else {"study.objectives": MULTI_OBJECTIVES[study], "pruner": "none",
                                                "study_name": f"{study}_mo"}
            base = _load(study, {**more, **overrides})
            if (missing := _data_missing(base)) is not None:
                print(f"[samplers] {study}: skipped, {missing}", flush=True)
                continue
            label = f"samplers-{study}-{kind}"
            paths = Paths(label, args.out, full)

            def maker(sampler: str, base: Any = base) -> tuple[str, Any]:
                return sampler, lambda seed: comparison_run(base, sampler, seed)

            config = {"kind": f"samplers-{kind}", "study": study, "overrides": {**more, **overrides}}
            started = time.perf_counter()
            records = _run_all(paths, [maker(s) for s in samplers], args.seeds, config, full, f"samplers {kind}")
            directions = base.study.resolved_directions()
            objectives = list(base.study.objectives)
            if kind == "single":
                metric, maximize, key = to_test_metric(objectives[0]), directions[0] == "maximize", "test"
                values = {s: [r["test"] for r in rs if r.get("test") is not None] for s, rs in records.items()}
                extra_doc: dict[str, Any] = {}
            else:
                metric, maximize, key = "test_hypervolume", True, "test_hypervolume"
                reference, hvs = pareto_test_hypervolumes([r for rs in records.values() for r in rs], directions)
                it = iter(hvs)
                for rs in records.values():
                    for r in rs:
                        r["test_hypervolume"] = next(it)
                values = {s: [r["test_hypervolume"] for r in rs] for s, rs in records.items()}
                extra_doc = {"objectives": objectives, "directions": directions,
                             "reference_point_minimised": reference,
                             "reference_note": "objectives to maximise are negated; the worst validation value "
                                               "seen over all runs + 10% (as compare_samplers)"}
            verdicts = []
            for s in samplers:
                if s != baseline:
                    v = decide(by_seed(records[s], key), by_seed(records[baseline], key), names=(s, baseline),
                               maximize=maximize, metric=metric)
                    verdicts.append({**v, "metric": metric, "text": f"on {metric}: {v['text']}"})
            summary = {}
            for s, rs in records.items():
                arr = np.asarray(values[s], float)
                summary[s] = {**summarize_arm(rs), "mean_decision": float(arr.mean()) if arr.size else None,
                              "sd_decision": float(arr.std(ddof=1)) if arr.size > 1 else None}
            fingerprint = next((r["data_fingerprint"] for rs in records.values() for r in rs), None)
            doc = {"benchmark": f"samplers-{kind}", "command": _command(), "full_size": full, "study": study,
                   "overrides": {**more, **overrides},
                   "size_overrides": {k2: v2 for k2, v2 in extra.items() if k2 not in NOT_SIZE},
                   "samplers": samplers, "baseline": baseline, "seeds": args.seeds, "decided_on": metric,
                   "rule": RULE,
                   **extra_doc, "summary": summary, "verdicts": verdicts,
                   "runs": {s: [_slim(r) for r in rs] for s, rs in records.items()},
                   "elapsed_s": time.perf_counter() - started, "environment": environment_info(fingerprint),
                   "machine": _results.machine(), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            _write(paths, doc, _samplers_page(doc, values))
            for v in verdicts:
                print(f"[samplers] {study} {kind}: {v['text']}", flush=True)
            docs.append(doc)
    return docs


# -- pages ------------------------------------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return "-" if v is None else str(v)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _page(title: str, doc: dict[str, Any], body: str) -> str:
    warn = "" if doc["full_size"] else (
        f"<p><b>Shrunk run, not full size</b>: overrides {html.escape(json.dumps(doc['size_overrides']))}.</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:64em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{warn}<p>Command: <code>{html.escape(doc['command'])}</code>; overrides "
            f"<code>{html.escape(json.dumps(doc['overrides']))}</code>; {doc['seeds']} seeds; decided on "
            f"<b>{html.escape(doc['decided_on'])}</b> (held-out test rows). Rule: {html.escape(doc['rule'])}.</p>"
            f"{body}<h2>Environment</h2><pre>{html.escape(json.dumps(doc['environment'], indent=2))}</pre>"
            "</body></html>")


def _dots(values: dict[str, list[float]], walls: dict[str, list[float]], metric: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    for i, (name, xs) in enumerate(values.items()):
        ax.scatter([i] * len(xs), xs, alpha=0.7)
        bx.scatter([i] * len(walls[name]), walls[name], alpha=0.7)
    for a, ylabel in ((ax, metric), (bx, "wall time per run (s)")):
        a.set_xticks(range(len(values)), list(values), fontsize=8)
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3)
    ax.set_title("one dot per seed")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return f"<img alt='per-seed values' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _prefilter_page(doc: dict[str, Any], records: dict[str, list[dict[str, Any]]], titles: dict[str, str]) -> str:
    m = doc["decided_on"]
    head = ["arm", "features", "seeds", f"mean {m}", "sd", "min", "max", f"mean {doc['objective']} (selected on)",
            "mean wall s", "sd", "mean ranking s", "wall / no prefilter (geo. mean)", "complete", "pruned"]
    rows = [[s["arm"], ",".join(map(str, s["n_features"])), len(s["seeds"]), s["mean_test"], s["sd_test"],
             s["min_test"], s["max_test"], s["mean_val"], s["mean_wall_s"], s["sd_wall_s"], s["mean_rank_s"],
             s["wall_ratio_vs_no_prefilter"], s["n_complete"], s["n_pruned"]] for s in doc["arms"].values()]
    claims = "".join(f"<li>{html.escape(c['text'])}</li>" for c in doc["claims"].values())
    plot = _dots({titles[n]: [r["test"] for r in rs if r.get("test") is not None] for n, rs in records.items()},
                 {titles[n]: [r["wall_s"] for r in rs] for n, rs in records.items()}, m)
    return _page(f"Prefilter claim: {doc['study']}", doc,
                 _table(head, rows) + f"<h2>The claim, per arm</h2><ul>{claims}</ul>" + plot)


def _samplers_page(doc: dict[str, Any], values: dict[str, list[float]]) -> str:
    m = doc["decided_on"]
    head = ["sampler", "seeds", f"mean {m}", "sd", "mean validation best (selected on)", "mean wall s", "complete",
            "pruned"]
    rows = [[s, len(v["seeds"]), v["mean_decision"], v["sd_decision"], v["mean_val"], v["mean_wall_s"],
             v["n_complete"], v["n_pruned"]] for s, v in doc["summary"].items()]
    verdicts = "".join(f"<li>{html.escape(v['text'])}</li>" for v in doc["verdicts"])
    plot = _dots(values, {s: [r["wall_s"] for r in rs] for s, rs in doc["runs"].items()}, m)
    return _page(f"Guided vs random search: {doc['study']} ({doc['benchmark']})", doc,
                 _table(head, rows) + f"<h2>Verdict</h2><ul>{verdicts or '<li>nothing to compare</li>'}</ul>" + plot)


def _write(paths: Paths, doc: dict[str, Any], page: str) -> None:
    _results.save(doc, key=paths.summary.stem, results=paths.summary.parent)
    paths.page.parent.mkdir(parents=True, exist_ok=True)
    paths.page.write_text(page, encoding="utf-8")
    print(f"[studies] summary: {paths.summary}\n[studies] page: {paths.page}", flush=True)


# -- repro ------------------------------------------------------------------------------------------------------------
def bench_repro(args: argparse.Namespace) -> dict[str, Any]:
    """Run the same study and seed twice per sampler; compare trial parameters and metrics trial by trial."""
    from sparsearch import run_study
    from sparsearch.search.compare import environment_info

    overrides = {**_study_overrides(args.study, parse_set(args.set)), "n_trials": args.n_trials}
    base = _load(args.study, overrides)
    results = OUT / "runs" / f"repro-{args.study}"
    shutil.rmtree(results, ignore_errors=True)
    _ray_up()
    _warm_up(base, results / "warmup")
    out: dict[str, Any] = {"command": _command(), "study": args.study, "overrides": overrides, "samplers": {}}
    fingerprint = None
    for sampler in args.samplers.split(","):
        runs = []
        for rep in range(2):
            res = run_study(args.study, results_dir=results, progress=False, sampler=sampler, seed=args.seed,
                            study_name=f"{args.study}-{sampler}-rep{rep}", **overrides)
            fingerprint = res.info.get("data_fingerprint")
            runs.append({t.number: (dict(t.params), list(t.values) if t.values else None, t.state.name)
                         for t in res.trials})
        a, b = runs
        same_params = sum(a[n][0] == b.get(n, (None,))[0] for n in a)
        diffs = [abs(x - y) for n in a if n in b and a[n][1] and b[n][1] and a[n][0] == b[n][0]
                 for x, y in zip(a[n][1], b[n][1])]
        row = {"trials": len(a), "same_params": same_params, "max_abs_metric_diff_same_params":
               max(diffs) if diffs else None, "workers": overrides.get("workers", "study default")}
        out["samplers"][sampler] = row
        print(f"[repro] {sampler}: {same_params}/{len(a)} trials with identical parameters; max |metric diff| "
              f"among them {row['max_abs_metric_diff_same_params']}", flush=True)
    out["environment"] = environment_info(fingerprint)
    _results.save(out, key=f"repro-{args.study}", results=OUT)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prefilter", help="top k / no prefilter / top 3k, decided on the test metric")
    a.add_argument("--study", default="clicklog_large", choices=sorted(DEFAULT_K))
    a.add_argument("--seeds", type=int, default=5)
    a.add_argument("--k", type=int, default=None,
                   help="features kept by the prefilter arm; the 3x arm keeps 3k (default: clicklog_large 10, "
                        "flights 3)")
    a.add_argument("--method", default="adjusted-mi")
    a.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="study override (TOML value); any but data.path marks the run as not full size")
    a.add_argument("--out", default=None, help="folder for the run JSONs, summary and page (default: "
                   "bench/results + bench/out/studies at full size, bench/out/studies/shrunk otherwise)")
    b = sub.add_parser("samplers", help="the study's sampler (TPE) vs random, decided on the test metric")
    b.add_argument("--studies", default="clicklog_large,flights,fashion_cnn")
    b.add_argument("--seeds", type=int, default=5)
    b.add_argument("--samplers", default="tpe,random", help="the last one, or 'random', is the baseline")
    b.add_argument("--single-only", action="store_true", default=None,
                   help="single objective only (the default; kept for old commands)")
    b.add_argument("--multi-only", action="store_true",
                   help="the multi-objective variant only: [quality, nnz_params], no pruner, test hypervolume")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="study override (TOML value); any but data.path marks the run as not full size")
    b.add_argument("--out", default=None, help="as for prefilter")
    c = sub.add_parser("repro", help="same study and seed twice: identical trials and metrics?")
    c.add_argument("--study", default="flights")
    c.add_argument("--samplers", default="random,tpe")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--n-trials", type=int, default=6)
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    if args.cmd == "samplers":
        if args.single_only and args.multi_only:
            p.error("--single-only and --multi-only exclude each other")
        args.single_only = not args.multi_only
    if getattr(args, "seeds", 2) < 2:
        p.error("--seeds must be at least 2 (a verdict needs two seeds per side; the issue asks for 5)")
    if getattr(args, "out", None):
        args.out = str(Path(args.out).resolve())  # before the chdir below
    OUT.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # study paths such as ../shared/... are relative to the repository root
    {"prefilter": bench_prefilter, "samplers": bench_samplers, "repro": bench_repro}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
