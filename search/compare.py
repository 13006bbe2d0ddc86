"""Sampler comparisons: the same study per sampler and seed at the same budget, with spread and a verdict.

Random search is a first-class baseline (DOMAIN.md section 3): ``compare_samplers(study, samplers=["tpe",
"random"], seeds=5)`` runs every (sampler, seed) pair through the same controller code path, then reports
best-so-far curves with spread over seeds, final best values, and whether the guided sampler beats random search,
by how much and with what confidence (bootstrap interval of the difference of means, one-sided Mann-Whitney U).
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
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import TrialState

from sparsearch._ray import connect_ray
from sparsearch._table import table
from sparsearch.errors import SpecError
from sparsearch.search.controller import run_study
from sparsearch.search.results import RunInfo, StudyResult, load_result
from sparsearch.search.spec import StudySpec, apply_overrides, load_study, parse_study

__all__ = ["CompareReport", "best_so_far", "compare_samplers", "comparison_run", "incumbent_test_vectors",
           "to_test_metric", "verdict"]


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


def verdict(a: list[float], b: list[float], *, maximize: bool, names: tuple[str, str], seed: int = 0,
            n_boot: int = 5000) -> dict[str, Any]:
    """Does ``a`` beat ``b``? Difference of means, bootstrap 95% CI, one-sided Mann-Whitney U.

    One rule for every claim: "beats" (or "is worse than") needs a CI that excludes 0 on that side *and* a
    one-sided p < 0.05 in that direction; anything else is "no difference shown". With three seeds per side
    the smallest one-sided p is 0.05, so no three-seed comparison can claim a win.

    Example:
        >>> verdict([0.9, 0.91, 0.92, 0.93, 0.94], [0.8, 0.81, 0.82, 0.83, 0.84], maximize=True,
        ...         names=("tpe", "random"))["outcome"]
        'wins'
        >>> verdict([0.9, 0.8, 0.85], [0.86, 0.84, 0.83], maximize=True, names=("tpe", "random"))["outcome"]
        'no difference shown'
    """
    from scipy.stats import mannwhitneyu

    xa, xb = np.asarray(a, float), np.asarray(b, float)
    sign = 1.0 if maximize else -1.0
    diff = sign * (xa.mean() - xb.mean())
    rng = np.random.default_rng(seed)
    boots = sign * (rng.choice(xa, (n_boot, xa.size)).mean(1) - rng.choice(xb, (n_boot, xb.size)).mean(1))
    lo, hi = np.quantile(boots, [0.025, 0.975])
    enough = xa.size > 1 and xb.size > 1
    p = float(mannwhitneyu(sign * xa, sign * xb, alternative="greater").pvalue) if enough else math.nan
    p_worse = float(mannwhitneyu(sign * xa, sign * xb, alternative="less").pvalue) if enough else math.nan
    if lo > 0 and p < 0.05:
        outcome = "wins"
        text = f"{names[0]} beats {names[1]} by {diff:.4g} (95% CI {lo:.4g} to {hi:.4g}, one-sided p = {p:.3g})"
    elif hi < 0 and p_worse < 0.05:
        outcome, p = "loses", p_worse
        text = (f"{names[0]} is worse than {names[1]} by {-diff:.4g} (95% CI {lo:.4g} to {hi:.4g}, "
                f"one-sided p = {p:.3g})")
    else:
        outcome = "no difference shown"
        text = (f"no difference shown: {names[0]} - {names[1]} = {diff:+.4g} (95% CI {lo:.4g} to {hi:.4g}, "
                f"one-sided p = {p:.3g}); more seeds or trials are needed to tell them apart")
    return {"a": names[0], "b": names[1], "improvement": float(diff), "ci95": [float(lo), float(hi)],
            "p_value": p, "n_a": int(xa.size), "n_b": int(xb.size), "outcome": outcome, "text": text}


@dataclass
class CompareReport:
    """The outcome of :func:`compare_samplers`."""

    study_name: str
    objective: str
    direction: str
    samplers: list[str]
    seeds: list[int]
    runs: dict[str, dict[int, dict[str, Any]]]
    verdicts: list[dict[str, Any]]
    report_path: Path | None
    environment: dict[str, Any]
    elapsed_s: float
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def final_bests(self, sampler: str) -> list[float]:
        """The incumbents' validation values (what each run selected on), one per seed."""
        return [r["best"] for r in self.runs[sampler].values() if r["best"] is not None]

    def final_tests(self, sampler: str) -> list[float]:
        """The incumbents' held-out test values, one per seed: what the verdict is decided on."""
        return [r["test"] for r in self.runs[sampler].values() if r.get("test") is not None]

    @property
    def test_objective(self) -> str:
        return "test_hypervolume" if self.objective == "hypervolume" else to_test_metric(self.objective)

    def summary_rows(self) -> list[list[Any]]:
        rows = []
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

    def to_json(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name, "objective": self.objective, "direction": self.direction,
            "samplers": self.samplers, "seeds": self.seeds,
            "decided_on": self.test_objective,
            "summary": [dict(zip(["sampler", "n_seeds", "mean_test", "std_test", "min_test", "max_test",
                                  "mean_best_val", "mean_elapsed_s"], r)) for r in self.summary_rows()],
            "runs": {s: {str(k): {kk: vv for kk, vv in v.items()} for k, v in runs.items()}
                     for s, runs in self.runs.items()},
            "verdicts": self.verdicts, "report_path": str(self.report_path) if self.report_path else None,
            "mlflow_run_id": self.mlflow_run_id, "environment": self.environment, "elapsed_s": self.elapsed_s,
        }


def environment_info(fingerprint: str | None = None) -> dict[str, Any]:
    """Package versions, machine and data fingerprint: what a reader needs to reproduce a figure."""
    versions = {}
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
        if all(x is not None and math.isfinite(x) for x in vec):
            out.append([float(x) for x in vec])
    return out


def _run_values(result: StudyResult) -> list[list[float] | None]:
    return [list(t.values) if t.state == TrialState.COMPLETE and t.values else None
            for t in sorted(result.trials, key=lambda t: t.number)]


def hypervolume_so_far(values: list[list[float] | None], directions: list[str], reference: np.ndarray) -> list[float]:
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
    **overrides: Any,
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
    runs: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in samplers}
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
            runs[s][seed] = {"study_name": spec.study.name, "values": values,
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
    verdicts = []
    baseline = "random" if "random" in samplers else samplers[-1]
    for s in samplers:
        if s == baseline:
            continue
        # decided on the incumbents' held-out test metric, never on the validation metric the runs selected on
        a = [r["test"] for r in runs[s].values() if r.get("test") is not None]
        b = [r["test"] for r in runs[baseline].values() if r.get("test") is not None]
        metric = "test_hypervolume" if objective == "hypervolume" else to_test_metric(objective)
        if not (a or b):  # no test rows (test_fraction = 0) or a custom objective that returns no model
            a, b = ([r["best"] for r in runs[x].values() if r["best"] is not None] for x in (s, baseline))
            metric = f"{objective} (no test metrics: decided on the validation metric the runs selected on)"
        if a and b:
            v = verdict(a, b, maximize=maximize, names=(s, baseline))
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

    def cell(v: Any) -> str:
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
<h2>Verdict (on the incumbents' {html.escape(report.test_objective)}, held-out test rows)</h2><ul>{verdicts or '<li>only one sampler: nothing to compare</li>'}</ul>
<h2>Best so far</h2><img alt="best-so-far curves" src="data:image/png;base64,{img}">
<h2>Environment</h2><pre>{env}</pre></body></html>"""


def _log_report(base: Any, results: Path, report: CompareReport) -> str | None:
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
    for suffix in (".html", ".png", ".json"):
        tracker.log_artifact_file(run, report.report_path.with_suffix(suffix))
    metrics = {f"mean_{report.test_objective}_{r[0]}": r[2] for r in report.summary_rows() if r[2] is not None}
    metrics.update({f"mean_best_{r[0]}": r[6] for r in report.summary_rows() if r[6] is not None})
    tracker.finish_parent("FINISHED", metrics, {})
    return run
