"""Sampler comparisons: the same study per sampler and seed at the same budget, with spread and a verdict.

Random search is a first-class baseline (DOMAIN.md section 3): ``compare_samplers(study, samplers=["tpe",
"random"], seeds=5)`` runs every (sampler, seed) pair through the same controller code path, then reports
best-so-far curves with spread over seeds, final best values, and whether the guided sampler beats random search,
by how much and with what confidence. Runs of the same seed share the split and the sampler seed, so two arms are
compared paired by seed (exact sign-flip permutation test on the per-seed differences, bootstrap interval of their
mean); arms that do not share them are compared unpaired (exact permutation test of the difference of means,
bootstrap interval of that difference). :func:`verdict` states the one rule; every verdict names the test it used.
The report is one self-contained HTML page (the plot is embedded), also logged to MLflow.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal, NotRequired, TypeAlias, TypedDict

import numpy as np
from optuna.trial import TrialState

from sparsearch._ray import connect_ray
from sparsearch._table import table
from sparsearch._types import JSONDict
from sparsearch.errors import DataError, SpecError
from sparsearch.search.controller import run_study
from sparsearch.search.results import RunInfo, StudyResult, load_result
from sparsearch.search.spec import StudySpec, apply_overrides, load_study, parse_study

__all__ = ["CompareReport", "ComparisonRun", "Decision", "ReportedVerdict", "Verdict", "best_so_far",
           "compare_samplers", "comparison_run", "decide", "incumbent_test_vectors", "to_test_metric", "verdict"]


def best_so_far(values: list[float | None], maximize: bool) -> list[float]:
    """Running best over trials in order; ``None`` (pruned/failed) keeps the previous best (NaN before any).

    Example:
        >>> best_so_far([0.5, None, 0.7, 0.6], maximize=True)
        [0.5, 0.5, 0.7, 0.7]
    """
    out, best = [], math.nan
    for v in values:
        if v is not None and math.isfinite(v) and (math.isnan(best) or (v > best if maximize else v < best)):
            best = v
        out.append(best)
    return out


#: above this many sign flips (paired) or splits of the pooled values (unpaired) the permutation p-value is
#: estimated from random permutations instead of enumerated; 2**16 covers 16 pairs, C(16, 8) 8 seeds a side
EXACT_LIMIT = 2**16
ALPHA = 0.05
RULE = ("wins/loses: the bootstrap 95% interval of the difference excludes 0 on that side and the one-sided "
        "permutation p < 0.05 (paired by seed when both arms share the split and seed: sign-flip test on the per-seed "
        "differences; otherwise unpaired: test of the difference of means); otherwise 'no difference shown' "
        "(not proof of the same)")

Outcome: TypeAlias = Literal["wins", "loses", "no difference shown"]
"""What a verdict says about arm ``a`` against arm ``b`` (see :data:`RULE`)."""


class Verdict(TypedDict):
    """What :func:`verdict` returns (also written into the comparison JSON)."""

    a: str
    b: str
    improvement: float
    """Mean difference ``a - b`` in the direction of improvement (paired: mean of the per-seed differences)."""
    ci95: list[float]
    p_value: float
    n_a: int
    n_b: int
    paired: bool
    test: str
    """The permutation test as run, e.g. ``exact sign-flip permutation test ... (32 arrangements)``."""
    ci_method: str
    outcome: Outcome
    text: str


class Decision(Verdict):
    """What :func:`decide` returns: the verdict, its design (paired or not, and why) and the seeds compared."""

    design: str
    seeds: list[int]


class ReportedVerdict(Decision):
    """A verdict of :func:`compare_samplers`: a decision with the metric it was decided on."""

    metric: str


class ComparisonRun(TypedDict):
    """One (sampler, seed) run of :func:`compare_samplers`; ``curve``, ``test`` and ``best`` are added once every
    run has finished (a multi-objective comparison needs every run's values for its reference point)."""

    study_name: str
    values: list[list[float] | None]
    """The objective values of every trial in order; ``None`` for a trial that did not complete."""
    split_digest: str | None
    test_vectors: list[list[float]]
    elapsed_s: float
    n_complete: int
    mlflow_parent_run_id: str | None
    curve: NotRequired[list[float]]
    """Best so far (one objective) or hypervolume so far (several) after each trial."""
    test: NotRequired[float | None]
    """The incumbent's test value (test hypervolume with several objectives), ``None`` without one."""
    best: NotRequired[float | None]
    """The last value of ``curve`` (``None`` when NaN)."""


SummaryRow: TypeAlias = list[str | int | float | None]
"""One sampler's row of the summary table (:meth:`CompareReport.summary_head` names the columns)."""


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def _permutation_p(samples: tuple[np.ndarray, ...], *, paired: bool, alternative: str, seed: int) -> tuple[float, str]:
    """One-sided permutation p-value of the mean (paired: sign flips of the differences; unpaired: splits of the
    pooled values into groups of the same sizes), with the name of the test as run."""
    from scipy.stats import permutation_test

    stat: Callable[..., np.ndarray]
    if paired:
        total, kind, stat = 2 ** samples[0].size, "sign-flip permutation test on the per-seed differences", _mean
    else:
        total = math.comb(samples[0].size + samples[1].size, samples[0].size)
        kind, stat = "permutation test of the difference of means", _mean_difference
    exact = total <= EXACT_LIMIT
    if any(x.size < 2 for x in samples):  # scipy needs two values a sample: enumerate the few arrangements here
        return _tiny_exact_p(samples, paired=paired, alternative=alternative), f"exact {kind} ({total} arrangements)"
    res = permutation_test(samples, stat, permutation_type="samples" if paired else "independent",
                           alternative=alternative, vectorized=True, n_resamples=np.inf if exact else 99_999,
                           rng=np.random.default_rng(seed))
    name = f"exact {kind} ({total} arrangements)" if exact else f"{kind} (99,999 random arrangements of {total})"
    return float(res.pvalue), name


def _tiny_exact_p(samples: tuple[np.ndarray, ...], *, paired: bool, alternative: str) -> float:
    """The exact one-sided permutation p-value by enumeration, for samples scipy refuses (a single value)."""
    import itertools

    if paired:
        d = samples[0]
        stats = [float(np.mean(d * np.array(signs))) for signs in itertools.product((1.0, -1.0), repeat=d.size)]
        observed = float(np.mean(d))
    else:
        a, b = samples
        pooled, n_a = np.concatenate([a, b]), a.size
        stats = []
        for idx in itertools.combinations(range(pooled.size), n_a):
            mask = np.zeros(pooled.size, bool)
            mask[list(idx)] = True
            stats.append(float(pooled[mask].mean() - pooled[~mask].mean()))
        observed = float(a.mean() - b.mean())
    tol = 1e-12 * max(1.0, abs(observed))
    hits = sum(x >= observed - tol for x in stats) if alternative == "greater" else sum(
        x <= observed + tol for x in stats)
    return hits / len(stats)


def _bootstrap_ci(samples: tuple[np.ndarray, ...], *, paired: bool, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean paired difference (paired) or of the difference of means
    (unpaired: each arm resampled on its own). A sample with no spread gives a zero-width interval."""
    from scipy.stats import bootstrap

    if any(x.size < 2 for x in samples):
        return math.nan, math.nan
    res = bootstrap(samples, _mean if paired else _mean_difference, n_resamples=n_boot, method="percentile",
                    vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def verdict(a: list[float], b: list[float], *, maximize: bool, names: tuple[str, str], seed: int = 0,
            n_boot: int = 5000, paired: bool = False) -> Verdict:
    """Does ``a`` beat ``b``? Mean difference, a bootstrap 95% interval and a one-sided permutation test.

    ``paired=True`` when ``a[i]`` and ``b[i]`` share a split and a seed (the same study run by two samplers, or two
    arms of one seed): the test is a sign-flip permutation test on the per-seed differences and the interval is a
    bootstrap of their mean. Otherwise the arms are independent samples: a permutation test of the difference of
    means over every split of the pooled values, and a bootstrap of the difference of means with each arm
    resampled on its own. Both tests enumerate every arrangement (exact, ties included) up to
    :data:`EXACT_LIMIT` arrangements, and draw 99,999 random ones above it; the result names the test that ran.

    One rule for every claim: "wins" (or "loses") needs a 95% interval that excludes 0 on that side *and* a
    one-sided p < 0.05 in that direction; anything else is "no difference shown", which is not proof that the two
    are the same. The smallest one-sided p an exact test can give: paired, 1 / 2**k for k non-zero differences
    (1/32 = 0.031 for 5 seeds); unpaired, 1 / C(n_a + n_b, n_a) (1/20 = 0.05 for 3 seeds a side, so 3 against 3
    never wins; 1/252 for 5 a side).

    Raises:
        ValueError: an empty arm, a value that is not finite, or ``paired=True`` with arms of different lengths.

    Example:
        >>> verdict([0.9, 0.91, 0.92, 0.93, 0.94], [0.8, 0.81, 0.82, 0.83, 0.84], maximize=True,
        ...         names=("tpe", "random"))["outcome"]
        'wins'
        >>> verdict([0.9, 0.8, 0.85], [0.86, 0.84, 0.83], maximize=True, names=("tpe", "random"))["outcome"]
        'no difference shown'
        >>> verdict([0.9, 0.91, 0.92, 0.93, 0.94], [0.8, 0.8, 0.8, 0.8, 0.8], maximize=True, names=("tpe", "random"),
        ...         paired=True)["p_value"]
        0.03125
    """
    xa, xb = np.asarray(a, float), np.asarray(b, float)
    if xa.size == 0 or xb.size == 0:
        raise ValueError(f"verdict: each arm needs at least one value, got {xa.size} for {names[0]!r} and "
                         f"{xb.size} for {names[1]!r}")
    if paired and xa.shape != xb.shape:
        raise ValueError(f"verdict(paired=True): the arms must have one value per seed each, got {xa.size} "
                         f"values for {names[0]!r} and {xb.size} for {names[1]!r}")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
        raise ValueError(f"verdict: every value must be a finite number, got {names[0]}={list(a)} and "
                         f"{names[1]}={list(b)}")
    sign = 1.0 if maximize else -1.0
    samples: tuple[np.ndarray, ...] = ((sign * (xa - xb),) if paired else (sign * xa, sign * xb))
    diff = float(samples[0].mean()) if paired else float(samples[0].mean() - samples[1].mean())
    lo, hi = _bootstrap_ci(samples, paired=paired, n_boot=n_boot, seed=seed)
    p, test = _permutation_p(samples, paired=paired, alternative="greater", seed=seed)
    p_worse, _ = _permutation_p(samples, paired=paired, alternative="less", seed=seed)
    design = f"paired by seed, {xa.size} pairs" if paired else f"unpaired, {xa.size} vs {xb.size} seeds"
    how = (f"{design}; 95% bootstrap CI {lo:.4g} to {hi:.4g}" if math.isfinite(lo)
           else f"{design}; no bootstrap interval from one value")
    outcome: Outcome
    if lo > 0 and p < ALPHA:
        outcome = "wins"
        text = f"{names[0]} beats {names[1]} by {diff:.4g} ({how}; one-sided p = {p:.3g}, {test})"
    elif hi < 0 and p_worse < ALPHA:
        outcome, p = "loses", p_worse
        text = f"{names[0]} is worse than {names[1]} by {-diff:.4g} ({how}; one-sided p = {p:.3g}, {test})"
    else:
        outcome = "no difference shown"
        text = (f"no difference shown: {names[0]} - {names[1]} = {diff:+.4g} ({how}; one-sided p = {p:.3g}, "
                f"{test}); more seeds or trials are needed to tell them apart")
    return {"a": names[0], "b": names[1], "improvement": diff, "ci95": [lo, hi], "p_value": p,
            "n_a": int(xa.size), "n_b": int(xb.size), "paired": paired, "test": test,
            "ci_method": "percentile bootstrap of the " + ("mean paired difference" if paired
                                                            else "difference of means"),
            "outcome": outcome, "text": text}


@dataclass
class CompareReport:
    """The outcome of :func:`compare_samplers`."""

    study_name: str
    objective: str
    direction: str
    samplers: list[str]
    seeds: list[int]
    runs: dict[str, dict[int, ComparisonRun]]
    verdicts: list[ReportedVerdict]
    report_path: Path | None
    environment: JSONDict
    elapsed_s: float
    mlflow_run_id: str | None = None
    extra: dict[str, list[str]] = field(default_factory=dict)
    """``objectives`` and ``directions`` of the study (the plot of a multi-objective comparison reads them)."""

    def final_bests(self, sampler: str) -> list[float]:
        """The incumbents' validation values (what each run selected on), one per seed."""
        return [r["best"] for r in self.runs[sampler].values() if r["best"] is not None]

    def final_tests(self, sampler: str) -> list[float]:
        """The incumbents' held-out test values, one per seed: what the verdict is decided on."""
        return [test for r in self.runs[sampler].values() if (test := r.get("test")) is not None]

    @property
    def test_objective(self) -> str:
        return "test_hypervolume" if self.objective == "hypervolume" else to_test_metric(self.objective)

    def summary_rows(self) -> list[SummaryRow]:
        rows: list[SummaryRow] = []
        for s in self.samplers:
            vals, tests = self.final_bests(s), self.final_tests(s)
            secs = [r["elapsed_s"] for r in self.runs[s].values()]
            rows.append([s, len(vals), float(np.mean(tests)) if tests else None,
                         float(np.std(tests, ddof=1)) if len(tests) > 1 else None,
                         min(tests) if tests else None, max(tests) if tests else None,
                         float(np.mean(vals)) if vals else None, float(np.mean(secs))])
        return rows

    def summary_head(self) -> list[str]:
        return ["sampler", "seeds", f"mean {self.test_objective}", "std", "min", "max",
                f"mean best {self.objective} (selected on)", "mean wall s"]

    def summary_text(self) -> str:
        head = self.summary_head()
        lines = [f"comparison {self.study_name}: {self.direction} {self.objective}, "
                 f"{len(self.seeds)} seeds per sampler", table(head, self.summary_rows())]
        lines += [""] + [v["text"] for v in self.verdicts]
        if self.report_path:
            lines.append(f"\nreport: {self.report_path}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        """The comparison JSON (``sparsearch compare --json``, ``compare-<study>.json``)."""
        return {
            "study_name": self.study_name, "objective": self.objective, "direction": self.direction,
            "samplers": self.samplers, "seeds": self.seeds,
            "decided_on": self.test_objective, "rule": RULE,
            "summary": [dict(zip(["sampler", "n_seeds", "mean_test", "std_test", "min_test", "max_test",
                                  "mean_best_val", "mean_elapsed_s"], r)) for r in self.summary_rows()],
            "runs": {s: {str(k): {kk: vv for kk, vv in v.items()} for k, v in runs.items()}
                     for s, runs in self.runs.items()},
            "verdicts": self.verdicts, "report_path": str(self.report_path) if self.report_path else None,
            "mlflow_run_id": self.mlflow_run_id, "environment": self.environment, "elapsed_s": self.elapsed_s,
        }


def environment_info(fingerprint: str | None = None) -> JSONDict:
    """Package versions, machine and data fingerprint: what a reader needs to reproduce a figure."""
    versions: JSONDict = {}
    for pkg in ("sparsearch", "optuna", "ray", "torch", "mlflow", "polars", "numpy", "scikit-learn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "python": platform.python_version(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "data_fingerprint": fingerprint}


def to_test_metric(objective: str) -> str:
    """The held-out counterpart of a validation objective (``val_auc`` -> ``test_auc``); other objectives (model
    size, sparsity, FLOPs) do not depend on the rows and keep their name."""
    return "test_" + objective.removeprefix("val_") if objective.startswith("val_") else objective


def incumbent_test_vectors(result: StudyResult, objectives: list[str]) -> list[list[float]]:
    """Each best trial's objective vector on the test rows (validation metrics swapped for test metrics)."""
    tests = result.test_metrics()
    out = []
    for t in result.best_trials:
        if t.number not in tests:
            continue
        vec = [tests[t.number].get(to_test_metric(o)) if o.startswith("val_") else v for o, v in zip(objectives, t.values)]
        finite = [float(x) for x in vec if x is not None and math.isfinite(x)]
        if len(finite) == len(vec):
            out.append(finite)
    return out


def _run_values(result: StudyResult) -> list[list[float] | None]:
    return [list(t.values) if t.state == TrialState.COMPLETE and t.values else None
            for t in sorted(result.trials, key=lambda t: t.number)]


def hypervolume_so_far(values: Sequence[list[float] | None], directions: list[str],
                       reference: np.ndarray) -> list[float]:
    """Hypervolume of the trials so far, after each trial (multi-objective analogue of best-so-far).

    Objectives to maximise are negated so that everything is minimised; ``reference`` is in that space.

    Example:
        >>> hypervolume_so_far([[1.0, 1.0], None, [2.0, 0.5]], ["maximize", "minimize"], np.array([0.0, 2.0]))
        [1.0, 1.0, 3.0]
    """
    from sparsearch.search._internals import hypervolume

    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    points: list[np.ndarray] = []
    out = []
    for v in values:
        if v is not None and all(math.isfinite(x) for x in v):
            p = sign * np.asarray(v, float)
            if np.all(p < reference):
                points.append(p)
        out.append(hypervolume(np.array(points), reference) if points else 0.0)
    return out


def comparison_run(base: StudySpec, sampler: str, seed: int) -> StudySpec:
    """The study ``base`` run by ``sampler`` with ``seed`` as its own Optuna study ``<name>-<sampler>-s<seed>``.

    The study's ``sampler_params`` belong to its own sampler: another sampler runs with its defaults (random
    search takes no options; :func:`~sparsearch.search.spec.apply_overrides` drops them), so a study that tunes
    TPE (e.g. ``n_startup_trials``) can still be compared against random search.
    """
    raw = apply_overrides(base.to_raw(), {"sampler": sampler, "seed": seed,
                                          "study_name": f"{base.study.name}-{sampler}-s{seed}"})
    return parse_study(raw, origin=f"comparison run {sampler}/seed {seed}")


def compare_samplers(
    study: str | os.PathLike[str],
    *,
    samplers: list[str],
    seeds: int | list[int] = 3,
    results_dir: str | os.PathLike[str] = "sparsearch-results",
    report_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    **overrides: object,
) -> CompareReport:
    """Run ``study`` once per sampler and seed at the same budget and compare them.

    Each run is a separate Optuna study named ``<study>-<sampler>-s<seed>`` in the same storage, so an
    interrupted comparison resumes: a run that already has its trials is read back, not re-run.
    """
    if not samplers:
        raise SpecError("samplers: give at least one sampler name, e.g. ['tpe', 'random']")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    base = load_study(study, **overrides)
    specs = {(s, seed): comparison_run(base, s, seed) for s in samplers for seed in seed_list}
    objective = base.study.objectives[0]
    direction = base.study.resolved_directions()[0]
    maximize = direction == "maximize"
    results = Path(results_dir)
    started = time.perf_counter()
    started_ray = connect_ray(base.execution.ray_address)
    runs: dict[str, dict[int, ComparisonRun]] = {s: {} for s in samplers}
    fingerprint = None
    try:
        for (s, seed), spec in specs.items():
            try:
                existing = load_result(spec.study.name, storage=spec.storage.url, results_dir=results)
                done = sum(t.state.is_finished() for t in existing.trials)
            except SpecError:
                existing, done = None, 0
            t0 = time.perf_counter()
            if existing is None or done < spec.study.n_trials:
                remaining = spec.study.n_trials - done
                res = run_study(spec, results_dir=results, progress=progress, n_trials=remaining)
                fingerprint = res.info.data_fingerprint if isinstance(res.info, RunInfo) else fingerprint
            else:
                res = existing
            values = _run_values(res)[: spec.study.n_trials]
            split = res.info.split if res.info is not None else None
            digest = (split or {}).get("digest")  # a string (results.py writes it), or absent
            runs[s][seed] = {"study_name": spec.study.name, "values": values,
                             "split_digest": digest if isinstance(digest, str) else None,
                             "test_vectors": incumbent_test_vectors(res, list(base.study.objectives)),
                             "elapsed_s": time.perf_counter() - t0, "n_complete": sum(v is not None for v in values),
                             "mlflow_parent_run_id": res.mlflow_parent_run_id}
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    directions = base.study.resolved_directions()
    if len(directions) == 1:
        for run in (r for per in runs.values() for r in per.values()):
            run["curve"] = best_so_far([v[0] if v else None for v in run["values"]], maximize)
            run["test"] = run["test_vectors"][0][0] if run["test_vectors"] else None
    else:  # multi-objective: hypervolume against one reference point for every run (the worst value seen)
        objective, direction, maximize = "hypervolume", "maximize", True
        sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        seen = np.array([sign * np.asarray(v, float) for per in runs.values() for r in per.values()
                         for v in r["values"] if v is not None and all(math.isfinite(x) for x in v)])
        reference = (seen.max(axis=0) + 0.1 * np.abs(seen.max(axis=0)) + 1e-9) if seen.size else np.ones(len(sign))
        for run in (r for per in runs.values() for r in per.values()):
            run["curve"] = hypervolume_so_far(run["values"], directions, reference)
            # the test counterpart: hypervolume of the Pareto trials' test vectors, same reference point
            hv = hypervolume_so_far(run["test_vectors"], directions, reference) if run["test_vectors"] else []
            run["test"] = hv[-1] if hv else None
    for run in (r for per in runs.values() for r in per.values()):
        curve = run["curve"]
        run["best"] = curve[-1] if curve and not math.isnan(curve[-1]) else None
    verdicts: list[ReportedVerdict] = []
    baseline = "random" if "random" in samplers else samplers[-1]
    metric = "test_hypervolume" if objective == "hypervolume" else to_test_metric(objective)
    key: Literal["test", "best"] = "test"
    if not any(r.get("test") is not None for per in runs.values() for r in per.values()):
        # no test rows (test_fraction = 0) or a custom objective that returns no model: no run has a test value
        key, metric = "best", f"{objective} (no test metrics: decided on the validation metric the runs selected on)"
    for s in samplers:
        if s != baseline:
            # decided on the incumbents' held-out test metric, never on the validation metric the runs selected on
            v = decide(runs[s], runs[baseline], names=(s, baseline), maximize=maximize, key=key, metric=metric)
            verdicts.append({**v, "metric": metric, "text": f"on {metric}: {v['text']}"})
    report = CompareReport(study_name=base.study.name, objective=objective, direction=direction,
                           samplers=samplers, seeds=seed_list, runs=runs, verdicts=verdicts, report_path=None,
                           environment=environment_info(fingerprint), elapsed_s=time.perf_counter() - started,
                           extra={"objectives": list(base.study.objectives), "directions": directions})
    path = Path(report_path) if report_path else results / "reports" / f"compare-{base.study.name}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    png = _plot_png(report)
    path.with_suffix(".png").write_bytes(png)
    path.write_text(_html(report, png), encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps(report.to_json(), indent=2, default=str))
    report.report_path = path
    report.mlflow_run_id = _log_report(base, results, report)
    return report


def decide(runs_a: dict[int, ComparisonRun], runs_b: dict[int, ComparisonRun], *, names: tuple[str, str],
           maximize: bool, key: Literal["test", "best"] = "test", metric: str = "test metric") -> Decision:
    """:func:`verdict` on two arms of :func:`compare_samplers` (``{seed: run}``), paired when the design allows.

    The arms are paired when they ran the same seeds and every seed's two runs have the same split digest (the
    same train / validation / test rows); otherwise they are compared unpaired, and the result's ``design`` says
    why. Every run must have a value under ``key``: a run without one is an error that names it, never dropped.

    Raises:
        DataError: a run has no ``key`` value (e.g. no completed trial, so no incumbent to evaluate on test rows).
    """
    arm_values: list[dict[int, float]] = []
    for name, arm in zip(names, (runs_a, runs_b)):
        found: dict[int, float] = {}
        for seed, run in sorted(arm.items()):
            value = run.get(key)
            if value is None:
                raise DataError(f"compare: run {run.get('study_name', f'{name} seed {seed}')!r} ({name}, seed "
                                f"{seed}) has no {metric}: its study has no completed trial to evaluate; every "
                                f"run of a comparison needs one (re-run it or leave the seed out)")
            found[seed] = value
        arm_values.append(found)
    seeds = sorted(runs_a)
    if seeds != sorted(runs_b):
        paired, design = False, f"unpaired: the arms ran different seeds ({seeds} and {sorted(runs_b)})"
    elif odd := [s for s in seeds if runs_a[s].get("split_digest") is None
                 or runs_a[s].get("split_digest") != runs_b[s].get("split_digest")]:
        paired, design = False, f"unpaired: seed {odd[0]}'s runs do not share a known split digest"
    else:
        paired, design = True, "paired: both arms ran every seed on the same split"
    a = [float(arm_values[0][s]) for s in seeds]
    b = [float(arm_values[1][s]) for s in sorted(runs_b)]
    v = verdict(a, b, maximize=maximize, names=names, paired=paired)
    return {**v, "design": design, "seeds": seeds, "text": v["text"] if paired else f"{v['text']} [{design}]"}


def _plot_png(report: CompareReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = report.extra.get("objectives", [report.objective])
    multi = len(objectives) > 1
    fig, axes = plt.subplots(1, 2 if multi else 1, figsize=(12 if multi else 7, 4.2), dpi=110)
    ax = axes[0] if multi else axes
    if multi:  # every sampler's trials and Pareto front, over all seeds, in the first two objectives
        from sparsearch.search._internals import pareto_mask

        directions = report.extra["directions"]
        sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        for s in report.samplers:
            pts = np.array([v for r in report.runs[s].values() for v in r["values"] if v is not None], float)
            if not len(pts):
                continue
            front = pts[pareto_mask(pts * sign)]
            front = front[np.argsort(front[:, 0])]
            axes[1].scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.3)
            axes[1].plot(front[:, 0], front[:, 1], marker="o", label=f"{s} Pareto front")
        axes[1].set_xlabel(objectives[0])
        axes[1].set_ylabel(objectives[1])
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    for s in report.samplers:
        curves = [r["curve"] for r in report.runs[s].values() if r["curve"]]
        if not curves:
            continue
        n = max(len(c) for c in curves)
        arr = np.array([c + [c[-1]] * (n - len(c)) for c in curves], dtype=float)
        x = np.arange(1, n + 1)
        mean = np.nanmean(arr, axis=0)
        ax.plot(x, mean, label=f"{s} (mean of {len(curves)} seeds)")
        if len(curves) > 1:
            ax.fill_between(x, np.nanmin(arr, axis=0), np.nanmax(arr, axis=0), alpha=0.2)
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume so far" if multi else f"best {report.objective} so far")
    ax.set_title(f"{report.study_name}: best-so-far, band = min..max over seeds")
    ax.legend()
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _html(report: CompareReport, png: bytes) -> str:
    rows = report.summary_rows()
    head = report.summary_head()

    def cell(v: object) -> str:
        return html.escape(f"{v:.4g}" if isinstance(v, float) else str(v))

    trs = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    verdicts = "".join(f"<li>{html.escape(v['text'])}</li>" for v in report.verdicts)
    env = html.escape(json.dumps(report.environment, indent=2))
    img = base64.b64encode(png).decode()
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>sparsearch comparison
{html.escape(report.study_name)}</title><style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:right}}</style></head>
<body><h1>Sampler comparison: {html.escape(report.study_name)}</h1>
<p>{html.escape(report.direction)} <b>{html.escape(report.objective)}</b>; same budget and seeds
{html.escape(str(report.seeds))} for every sampler; wall time {report.elapsed_s:.0f} s.</p>
<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{trs}</table>
<h2>Verdict (on the incumbents' {html.escape(report.test_objective)}, held-out test rows)</h2>
<p>Rule: {html.escape(RULE)}.</p><ul>{verdicts or '<li>only one sampler: nothing to compare</li>'}</ul>
<h2>Best so far</h2><img alt="best-so-far curves" src="data:image/png;base64,{img}">
<h2>Environment</h2><pre>{env}</pre></body></html>"""


def _log_report(base: StudySpec, results: Path, report: CompareReport) -> str | None:
    if not base.tracking.enabled:
        return None
    from sparsearch.search.tracking import Tracker, default_tracking_uri

    tracker = Tracker(base.tracking.uri or default_tracking_uri(results), f"{base.study.name}-compare",
                      results / "artifacts")
    try:
        tracker.connect()
    except Exception:
        return None
    run = tracker.start_parent(f"compare-{'-'.join(report.samplers)}", {"samplers": report.samplers,
                                                                       "seeds": report.seeds},
                               {"sparsearch.kind": "compare"})
    path = report.report_path
    assert path is not None  # compare_samplers wrote the report before logging it
    for suffix in (".html", ".png", ".json"):
        tracker.log_artifact_file(run, path.with_suffix(suffix))
    # the mean columns are floats, or None without values
    metrics = {f"mean_{report.test_objective}_{r[0]}": r[2] for r in report.summary_rows() if isinstance(r[2], float)}
    metrics.update({f"mean_best_{r[0]}": r[6] for r in report.summary_rows() if isinstance(r[6], float)})
    tracker.finish_parent("FINISHED", metrics, {})
    return run
