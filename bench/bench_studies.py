"""Studies benchmarks (issue 6): the two headline claims, measured on the bundled studies.

    python bench/bench_studies.py prefilter   # same study with / without the MI prefilter, and at a 3x feature space
    python bench/bench_studies.py samplers    # TPE vs random (single objective), NSGA-II and TPE vs random (multi)
    python bench/bench_studies.py repro       # the same study and seed twice: same trials, same metrics?

Both run every study through the same controller (``run_study`` / ``compare_samplers``) on one local Ray
(2 CPUs), write one self-contained HTML page per comparison (tables and embedded plots) plus JSON under
``bench/out/studies/``, and log each page to MLflow (the SQLite store in that folder). The budgets that fit a
2-core VM are the presets below (``PRESETS``); every figure in BENCHMARKS.md names the command that produced it.
Re-running a ``samplers`` command reuses the finished runs (delete ``bench/out/studies/<label>`` to start afresh).
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

import numpy as np

OUT = Path(__file__).resolve().parent / "out" / "studies"
ROOT = Path(__file__).resolve().parent.parent

# Budgets that fit a 2-core VM (a few minutes per comparison). Keys are load_study overrides.
# TPE samples its first 10 trials at random (Optuna's n_startup_trials) and NSGA-II its first generation (population
# 50), both from the same seeded RandomSampler as random search: below those budgets they ARE random search (measured:
# identical trials at 10 trials). Budgets here are therefore 30 trials (TPE) and 60 (NSGA-II).
PRESETS: dict[str, dict[str, Any]] = {
    "clicklog_large": {"n_trials": 30, "train.epochs": 1, "data.params.n_rows": 50_000,
                       "data.params.n_noise": 100, "data.params.max_cardinality": 50_000},
    "flights": {"n_trials": 30, "train.epochs": 1, "data.max_rows": 20_000},
    "fashion_cnn": {"n_trials": 20, "train.epochs": 1, "data.params.limit": 2_000},
}
MULTI_PRESETS: dict[str, dict[str, Any]] = {
    "flights": {"n_trials": 60, "data.max_rows": 10_000},
    "clicklog_large": {"n_trials": 60, "data.params.n_rows": 20_000},
    "fashion_cnn": {"n_trials": 60, "data.params.limit": 1_000},
}
MULTI_OBJECTIVES = {"flights": ["val_auc", "nnz_params"], "clicklog_large": ["val_auc", "nnz_params"],
                    "fashion_cnn": ["val_accuracy", "nnz_params"]}


# -- helpers ------------------------------------------------------------------------------------------------------
def _ray_up() -> None:
    """One local Ray for the whole benchmark, with the project's settings (run_study joins it, never stops it)."""
    for key, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0",
                       "RAY_enable_metrics_collection": "0", "MLFLOW_DISABLE_TELEMETRY": "true",
                       "RAY_AUTH_MODE": "disabled"}.items():
        os.environ.setdefault(key, value)
    import logging

    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200_000_000,
                 logging_level=logging.WARNING, log_to_driver=False)


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``--set section.key=VALUE`` (TOML value syntax) into load_study overrides."""
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=1")
        try:
            out[key] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            out[key] = value
    return out


def _command() -> str:
    return "python bench/bench_studies.py " + " ".join(sys.argv[1:])


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _html_table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{trs}</table>"


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;max-width:64em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>{body}</body></html>")


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _log_page(results: Path, experiment: str, run_name: str, files: list[Path], metrics: dict[str, float],
              params: dict[str, Any]) -> str | None:
    from sparsearch.search.tracking import Tracker, default_tracking_uri

    tracker = Tracker(default_tracking_uri(results), experiment, results / "artifacts")
    tracker.connect()
    run = tracker.start_parent(run_name, params, {"sparsearch.kind": "bench-studies"})
    for f in files:
        tracker.log_artifact_file(run, f)
    tracker.finish_parent("FINISHED", {k: v for k, v in metrics.items() if math.isfinite(v)}, {})
    return run


def _mean_sd(xs: list[float]) -> tuple[float, float]:
    arr = np.asarray(xs, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _warm_up(base: Any, results: Path) -> None:
    """Two tiny untimed trials: start both Ray workers and import torch in them, so no timed run pays start-up."""
    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import parse_study

    warm = base.to_toml_dict()
    warm["study"].update({"n_trials": 2, "name": "warmup"})
    if base.data.generator == "click_log":
        warm["data"].update({"params": {**warm["data"]["params"], "n_rows": 2_000}, "top_k": [2, 2]})
    elif not base.data.is_image:
        warm["data"]["max_rows"] = 2_000
    warm["tracking"]["enabled"] = False
    shutil.rmtree(results, ignore_errors=True)  # a fresh throwaway study every time
    run_study(parse_study(warm, origin="warm-up"), results_dir=results, progress=False)


# -- prefilter ------------------------------------------------------------------------------------------------------
def _n_columns(spec: Any) -> int:
    """Candidate feature columns of a generated click log (informative + redundant + noise + numeric)."""
    import inspect

    from sparsearch.features import make_click_log

    defaults = {k: p.default for k, p in inspect.signature(make_click_log).parameters.items()}
    p = {**defaults, **spec.data.params}
    return int(p["n_informative"] + p["n_redundant"] + p["n_noise"] + p["n_numeric"])


def bench_prefilter(args: argparse.Namespace) -> dict[str, Any]:
    from sparsearch.search.compare import best_so_far, environment_info, verdict
    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import load_study, parse_study
    from sparsearch.search.tracking import default_tracking_uri

    overrides = {**PRESETS.get(args.study, {}), "n_trials": args.n_trials, **_parse_set(args.set)}
    base = load_study(args.study, **overrides)
    n_all = _n_columns(base) if base.data.generator == "click_log" else None
    arms: list[tuple[str, dict[str, Any]]] = [
        (f"prefilter, top {args.k}", {"prefilter": args.method, "top_k": [args.k, args.k]}),
        ("no prefilter, all features", {"prefilter": "none"}),
        (f"prefilter, top {args.k * 3} (3x space)", {"prefilter": args.method, "top_k": [3 * args.k, 3 * args.k]}),
    ]
    label = f"prefilter-{args.study}" + ("" if args.method == "adjusted-mi" else f"-{args.method}")
    results = OUT / label
    if results.exists():
        shutil.rmtree(results)  # timings must be fresh: no cached ranking, no reused trials
    results.mkdir(parents=True)
    tracking = default_tracking_uri(results)
    _ray_up()
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in arms}
    fingerprint = None
    _warm_up(base, results / "warmup")
    started = time.perf_counter()
    for seed in range(args.seeds):
        for i, (name, change) in enumerate(arms):  # interleaved per seed: machine noise hits every arm alike
            raw = base.to_toml_dict()
            raw["data"].update(change)
            if change["prefilter"] == "none":
                raw["data"].pop("top_k", None)
            raw["study"].update({"seed": seed, "name": f"{base.study.name}-arm{i}-s{seed}"})
            raw["tracking"]["uri"] = tracking
            spec = parse_study(raw, origin=f"prefilter arm {name!r}")
            run_dir = results / f"arm{i}-s{seed}"  # its own cache: every prefiltered run ranks afresh
            res = run_study(spec, results_dir=run_dir, progress=False)
            maximize = res.directions[0] == "maximize"
            values = [t.values[0] if t.values and t.state.name == "COMPLETE" else None
                      for t in sorted(res.trials, key=lambda t: t.number)]
            curve = best_so_far(values, maximize)
            fingerprint = res.info.get("data_fingerprint")
            row = {"seed": seed, "elapsed_s": res.elapsed_s, "best": curve[-1], "curve": curve,
                   "n_features": len(res.info["features"]), "timings": res.info["timings"],
                   "n_complete": sum(v is not None for v in values)}
            rows[name].append(row)
            print(f"[prefilter] {name:34s} seed {seed}: best {base.study.objectives[0]} {row['best']:.4f}, "
                  f"{row['n_features']} features, {row['elapsed_s']:.1f} s "
                  f"(rank {row['timings'].get('rank_s', 0):.1f} s)", flush=True)
    names = [n for n, _ in arms]
    objective = base.study.objectives[0]
    maximize = base.study.resolved_directions()[0] == "maximize"
    ref = rows[names[1]]
    summary = []
    for name in names:
        bests = [r["best"] for r in rows[name]]
        walls = [r["elapsed_s"] for r in rows[name]]
        ratios = [r["elapsed_s"] / b["elapsed_s"] for r, b in zip(rows[name], ref)]
        m, sd = _mean_sd(bests)
        w, wsd = _mean_sd(walls)
        summary.append({"arm": name, "n_features": rows[name][0]["n_features"], "seeds": len(bests),
                        "mean_best": m, "std_best": sd, "min_best": min(bests), "max_best": max(bests),
                        "mean_wall_s": w, "std_wall_s": wsd,
                        "mean_rank_s": float(np.mean([r["timings"].get("rank_s", 0.0) for r in rows[name]])),
                        "wall_ratio_vs_no_prefilter": float(np.exp(np.mean(np.log(ratios))))})
    verdicts = {}
    for name in (names[0], names[2]):
        v = verdict([r["best"] for r in rows[name]], [r["best"] for r in ref], maximize=maximize,
                    names=(name, names[1]))
        ratio = next(s["wall_ratio_vs_no_prefilter"] for s in summary if s["arm"] == name)
        no_loss = v["ci95"][1] >= 0  # the interval of (arm - unfiltered) reaches 0 or above: no loss detected
        v["wall_ratio"] = ratio
        v["claim_held"] = bool(no_loss and ratio < 0.5)
        v["claim_text"] = (
            f"{name}: best {objective} {'+' if v['improvement'] >= 0 else ''}{v['improvement']:.4f} vs no prefilter "
            f"(95% CI {v['ci95'][0]:+.4f} to {v['ci95'][1]:+.4f}; {'no loss detected' if no_loss else 'a loss'}) "
            f"at {ratio:.2f}x the wall time -> claim (within noise at < 0.5x time) "
            f"{'HELD' if v['claim_held'] else 'NOT supported'}")
        verdicts[name] = v
    doc = {"command": _command(), "study": args.study, "overrides": overrides, "objective": objective,
           "n_columns": n_all, "summary": summary, "verdicts": verdicts, "runs": rows,
           "elapsed_s": time.perf_counter() - started, "environment": environment_info(fingerprint)}
    page = results.parent / f"{label}.html"
    png = _prefilter_plot(rows, objective)
    head = ["arm", "features explored", "seeds", f"mean best {objective}", "std", "min", "max", "mean wall s",
            "std wall s", "mean ranking s", "wall / no prefilter (geo. mean of per-seed ratios)"]
    table_rows = [[s["arm"], s["n_features"], s["seeds"], s["mean_best"], s["std_best"], s["min_best"],
                   s["max_best"], s["mean_wall_s"], s["std_wall_s"], s["mean_rank_s"],
                   s["wall_ratio_vs_no_prefilter"]] for s in summary]
    body = (f"<p>Command: <code>{html.escape(doc['command'])}</code>. Study <b>{html.escape(args.study)}</b> with "
            f"overrides <code>{html.escape(json.dumps(overrides))}</code>; {objective} "
            f"({'max' if maximize else 'min'}imised); every arm and seed runs the same trial budget through "
            "<code>run_study</code>, each with its own cache (the ranking is paid in every prefiltered run and "
            "is part of its wall time).</p>" + _html_table(head, table_rows)
            + "<h2>Verdicts</h2><ul>" + "".join(f"<li>{html.escape(v['claim_text'])}</li>" for v in verdicts.values())
            + "</ul><h2>Best so far and wall time</h2>" + _img(png, "prefilter curves")
            + f"<h2>Environment</h2><pre>{html.escape(json.dumps(doc['environment'], indent=2))}</pre>")
    page.write_text(_page(f"Prefilter claim: {args.study}", body), encoding="utf-8")
    js = page.with_suffix(".json")
    js.write_text(json.dumps(doc, indent=2, default=str))
    metrics = {f"mean_best_arm{i}": s["mean_best"] for i, s in enumerate(summary)}
    metrics |= {f"wall_ratio_arm{i}": s["wall_ratio_vs_no_prefilter"] for i, s in enumerate(summary)}
    doc["mlflow_run_id"] = _log_page(OUT, "studies-bench", label, [page, js], metrics,
                                     {"study": args.study, "seeds": args.seeds, "n_trials": args.n_trials})
    js.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\nreport: {page}")
    for v in verdicts.values():
        print(v["claim_text"])
    return doc


def _prefilter_plot(rows: dict[str, list[dict[str, Any]]], objective: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for i, (name, runs) in enumerate(rows.items()):
        arr = np.array([r["curve"] for r in runs], float)
        x = np.arange(1, arr.shape[1] + 1)
        ax.plot(x, np.nanmean(arr, 0), label=name)
        ax.fill_between(x, np.nanmin(arr, 0), np.nanmax(arr, 0), alpha=0.2)
        walls = [r["elapsed_s"] for r in runs]
        bx.bar(i, np.mean(walls), yerr=np.std(walls), label=name, capsize=4)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"best {objective} so far")
    ax.set_title("mean over seeds, band = min..max")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    bx.set_xticks(range(len(rows)), [n.split(",")[0] + ("\n" + n.split(",")[1] if "," in n else "") for n in rows],
                  fontsize=8)
    bx.set_ylabel("wall time per study (s)")
    bx.set_title("wall time (mean, sd over seeds)")
    return _png(fig)


# -- samplers -------------------------------------------------------------------------------------------------------
def hypervolume_2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (quality maximised, cost minimised) and bounded by ``ref`` = (worst quality,
    worst cost).

    Example:
        >>> hypervolume_2d([(0.8, 1.0), (0.9, 2.0)], ref=(0.5, 3.0))
        0.7
    """
    pts = sorted((c, q) for q, c in points if q > ref[0] and c < ref[1])
    # sweep by cost: the staircase of the running best quality
    area, best_q = 0.0, ref[0]
    for j, (c, q) in enumerate(pts):
        best_q = max(best_q, q)
        c_next = pts[j + 1][0] if j + 1 < len(pts) else ref[1]
        area += (best_q - ref[0]) * (c_next - c)
    return round(area, 12)


def _multi_hv(report: Any, results: Path, objectives: list[str]) -> dict[str, Any]:
    """Hypervolume (quality up, log10 cost down) of every run's completed trials, per trial and final."""
    from sparsearch.search.compare import verdict
    from sparsearch.search.controller import load_result

    quality_ref = 0.5 if objectives[0] == "val_auc" else 0.1  # chance level: AUC 0.5, 10-class accuracy 0.1
    per_run: dict[str, dict[int, list[tuple[float, float] | None]]] = {}
    costs = []
    for sampler, runs in report.runs.items():
        per_run[sampler] = {}
        for seed, run in runs.items():
            res = load_result(run["study_name"], results_dir=results)
            pts: list[tuple[float, float] | None] = []
            for t in sorted(res.trials, key=lambda t: t.number):
                if t.state.name == "COMPLETE" and t.values and t.values[1] > 0:
                    pts.append((t.values[0], math.log10(t.values[1])))
                    costs.append(pts[-1][1])
                else:
                    pts.append(None)
            per_run[sampler][seed] = pts
    ref = (quality_ref, max(costs) + 0.1 if costs else 1.0)
    curves: dict[str, list[list[float]]] = {}
    finals: dict[str, list[float]] = {}
    for sampler, runs in per_run.items():
        curves[sampler], finals[sampler] = [], []
        for pts in runs.values():
            curve = [hypervolume_2d([p for p in pts[: i + 1] if p is not None], ref) for i in range(len(pts))]
            curves[sampler].append(curve)
            finals[sampler].append(curve[-1] if curve else 0.0)
    verdicts = [verdict(finals[s], finals["random"], maximize=True, names=(s, "random"))
                for s in finals if s != "random" and "random" in finals]
    return {"reference_point": {objectives[0]: ref[0], f"log10 {objectives[1]}": ref[1]}, "final": finals,
            "curves": curves, "verdicts": verdicts}


def _hv_plot(hv: dict[str, Any], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for sampler, curves in hv["curves"].items():
        arr = np.array(curves, float)
        x = np.arange(1, arr.shape[1] + 1)
        ax.plot(x, arr.mean(0), label=f"{sampler} (mean of {len(curves)} seeds)")
        ax.fill_between(x, arr.min(0), arr.max(0), alpha=0.2)
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume so far")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _png(fig)


def bench_samplers(args: argparse.Namespace) -> list[dict[str, Any]]:
    from sparsearch.search.compare import compare_samplers
    from sparsearch.search.spec import load_study

    _ray_up()
    docs = []
    extra = _parse_set(args.set)
    for study in args.studies.split(","):
        overrides = PRESETS.get(study, {})
        mine = {**extra, **({"n_trials": args.n_trials} if args.n_trials else {})}  # the command line wins
        variants = []
        if not args.multi_only:
            variants.append(("single", ["tpe", "random"], mine))
        if not args.single_only:
            variants.append(("multi", args.multi_samplers.split(","),
                             {**MULTI_PRESETS.get(study, {}), "study.objectives": MULTI_OBJECTIVES[study],
                              "study.pruner": "none", "study_name": f"{study}_mo", **mine}))
        _warm_up(load_study(study, **{**overrides, **mine}), OUT / "warmup")
        for kind, samplers, more in variants:
            label = f"samplers-{study}-{kind}"
            results = OUT / label
            page = OUT / f"{label}.html"
            t0 = time.perf_counter()
            report = compare_samplers(study, samplers=samplers, seeds=args.seeds, results_dir=results,
                                      report_path=page, progress=False, **{**overrides, **more})
            doc = {"command": _command(), "study": study, "variant": kind, "overrides": {**overrides, **more},
                   "report": report.to_json(), "wall_s": time.perf_counter() - t0}
            print(report.summary_text(), flush=True)
            if kind == "multi":
                objectives = MULTI_OBJECTIVES[study]
                hv = _multi_hv(report, results, objectives)
                doc["hypervolume"] = hv
                png = _hv_plot(hv, f"{study}: hypervolume of ({objectives[0]} up, log10 {objectives[1]} down)")
                extra_html = ("<h2>Multi-objective: hypervolume</h2><p>Reference point "
                              f"{html.escape(json.dumps(hv['reference_point']))}; the verdict above is on "
                              f"{objectives[0]} alone, these are on the hypervolume of the whole front.</p><ul>"
                              + "".join(f"<li>{html.escape(v['text'])}</li>" for v in hv["verdicts"])
                              + "</ul>" + _img(png, "hypervolume curves"))
                text = page.read_text(encoding="utf-8").replace("<h2>Environment</h2>",
                                                                extra_html + "<h2>Environment</h2>")
                page.write_text(text, encoding="utf-8")
                for v in hv["verdicts"]:
                    print("hypervolume:", v["text"], flush=True)
                _log_page(results, f"{study}_mo-hypervolume", label, [page],
                          {f"mean_hv_{s}": float(np.mean(v)) for s, v in hv["final"].items()},
                          {"study": study, "samplers": samplers})
            page.with_suffix(".bench.json").write_text(json.dumps(doc, indent=2, default=str))
            docs.append(doc)
    return docs


def bench_repro(args: argparse.Namespace) -> dict[str, Any]:
    """Run the same study and seed twice per sampler; compare trial parameters and metrics trial by trial."""
    from sparsearch.search.compare import environment_info
    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import load_study

    overrides = {**PRESETS.get(args.study, {}), "n_trials": args.n_trials, **_parse_set(args.set)}
    results = OUT / f"repro-{args.study}"
    if results.exists():
        shutil.rmtree(results)
    _ray_up()
    _warm_up(load_study(args.study, **overrides), results / "warmup")
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
    (OUT / f"repro-{args.study}.json").write_text(json.dumps(out, indent=2, default=str))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prefilter", help="with / without the prefilter, and at a 3x feature space")
    a.add_argument("--study", default="clicklog_large")
    a.add_argument("--seeds", type=int, default=3)
    a.add_argument("--n-trials", type=int, default=8)
    a.add_argument("--k", type=int, default=10, help="features kept by the prefilter (the 3x arm keeps 3k)")
    a.add_argument("--method", default="adjusted-mi")
    a.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    b = sub.add_parser("samplers", help="TPE vs random; NSGA-II and TPE vs random on [quality, nnz_params]")
    b.add_argument("--studies", default="clicklog_large,flights,fashion_cnn")
    b.add_argument("--seeds", type=int, default=5)
    b.add_argument("--n-trials", type=int, default=None, help="default: the study's preset")
    b.add_argument("--multi-samplers", default="nsga2,tpe,random")
    b.add_argument("--single-only", action="store_true")
    b.add_argument("--multi-only", action="store_true")
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    c = sub.add_parser("repro", help="same study and seed twice: identical trials and metrics?")
    c.add_argument("--study", default="flights")
    c.add_argument("--samplers", default="random,tpe")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--n-trials", type=int, default=6)
    c.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = p.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)  # study paths such as ../shared/... are relative to the repository root
    {"prefilter": bench_prefilter, "samplers": bench_samplers, "repro": bench_repro}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
