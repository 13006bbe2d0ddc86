"""Side by side with what users would pick instead (issue 11 item 4, issue 30 item 5): equal wall-clock budgets,
same training function, same space, same split, same machine, several seeds, interleaved.

    python bench/bench_peers.py clicklog_large --budget-s 600 --seeds 5
    python bench/bench_peers.py flights --all-rows --budget-s 600 --seeds 5 --data-root DIR
    python bench/bench_peers.py fashion_cnn --budget-s 900 --seeds 5
    python bench/bench_peers.py quickstart --budget-s 60 --seeds 2 --set train.epochs=1     # smoke run

Contenders (each run in a subprocess of its own, 2 trials in flight x 1 CPU, the study's search space):

- ``ours``: sparsearch's controller with the study's own settings: its sampler, trial pruner and warm start (TPE +
  Hyperband on the bundled full-size studies, ``warm_start = "portfolio"`` on the bundled studies),
  ``[study] timeout`` = the budget;
- ``random``: the plain baseline: the same controller with ``sampler = "random"`` and ``warm_start = "none"`` (no
  portfolio of measured configurations), the same pruner;
- ``optuna``: plain ``optuna`` ``study.optimize`` in 2 processes on one journal file, TPE + ``HyperbandPruner``;
- ``tune``: Ray Tune ``Tuner`` + ``OptunaSearch`` (TPE over the same define-by-run space) + ``ASHAScheduler``,
  ``max_concurrent_trials = 2``, 1 CPU per trial, ``time_budget_s`` = the budget.

Every contender trains with :mod:`bench.peers_objective` (one function) and reports at the study's
``reports_per_epoch``; each completed trial is also evaluated on the held-out test rows, which no contender selects
on: the anytime curve is the test metric of the incumbent (best by validation) against wall time.

Rounds (``--round NAME``, default ``issue30``): a round never reuses another's records or prepared data. Each run's
JSON is saved as soon as it finishes (``bench/results/peers/<study>/<round>/<contender>-s<seed>.json``) with its
``config`` (contender, seed, budget, overrides, a fingerprint of the study spec and, in rounds after
``issue30-r2``, the rule that seeds each trial's initial weights: ``trial_seed_rule``) and, from round
``issue30-i``'s seed 3 on, ``search``: the trials it started, completed and pruned (Tune's ASHA stops are not told
apart from budget cuts: no count) and, for the controller, its start-up plan and preparation time; a run whose
record has the same config is skipped, one with another config runs again, so an interrupted benchmark resumes.
Scratch (the prepared data ``prepared-<fingerprint>.pkl``, journals, Ray Tune's folders, the plot) goes to
``bench/out/peers/<study>/<round>/``. ``--summary`` judges a round: the table (per seed, the time ours needs to
reach each peer's median final test metric, as a fraction of the peer's budget; the target is the worst seed's
ratio <= 0.5) and the verdicts on the final test metrics, written to ``bench/results/peers-<study>-<round>.json``.
The records of issue 11 (``bench/results/peers/<study>/*.json``, cited by BENCHMARKS.md) are not touched.

``--all-rows`` lifts ``[data] max_rows`` above the table's size (as bench_boosting.py does); a study whose data is a
file under the shared data folder (``flights``) reads it from ``--data-root``. Neither makes a run "shrunk". A run
with ``--set`` overrides is not the bundled study: its records and summary go under ``bench/out/peers/shrunk/``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

BENCH = _results.BENCH
OUT = _results.OUT / "peers"
CONTENDERS = ("ours", "random", "optuna", "tune")
ROUND = "issue30"
"""The default ``--round``: issue 30 item 5's measurements (issue 11's records sit one folder up, untouched)."""
TRIAL_SEED_BY_NUMBER = ("issue11", "issue30", "issue30-r2")
"""The rounds measured with trial ``n`` trained from torch seed ``n`` on every seed (:func:`trial_seed_rule`)."""
ALL_ROWS = 100_000_000
"""``[data] max_rows`` above the table's size: every row (``--all-rows``; bench_boosting.py's figure)."""
SHARED_DATA = "shared/data/"
"""A bundled study whose ``[data] path`` runs through this folder reads its file from ``--data-root`` instead."""
LEGACY_ROUND = "issue11"
"""Issue 11's records sit in ``bench/results/peers/<study>/`` itself (cited by BENCHMARKS.md): ``--round issue11``
summarises them as they are (into ``peers-<study>.json``) and never runs into that folder."""
TARGET_RATIO = 0.5
"""Issue 30's target: ours reaches each peer's median final test metric within 0.5x the peer's wall time."""
# Every contender trains on the one prepared split (``prepared.pkl``). These also seed their sampler with the run's
# seed (ours' and random's controller, Tune's ``OptunaSearch(seed=seed)``), so their runs of one seed share split and
# seed and are compared paired by seed; plain Optuna's two workers draw with seeds ``10 * seed + k``: unpaired
SEEDED_BY_RUN_SEED = frozenset({"ours", "random", "tune"})
ENV = {"OMP_NUM_THREADS": "1"}
"""Every contender's processes, besides the package's Ray settings (``sparsearch._ray.set_ray_env``)."""


def _env(**more: str) -> dict[str, str]:
    """The environment of a contender's subprocess: this one's, the package's Ray settings and :data:`ENV`."""
    from sparsearch._ray import set_ray_env

    set_ray_env(private=True)  # every contender's Ray is private and local
    return {**os.environ, **ENV, **more}


def _parse_set(items: list[str]) -> dict[str, Any]:
    import tomllib

    out = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = tomllib.loads(f"v = {value}")["v"]
    return out


def _spec(study: str, overrides: dict[str, Any], **more: Any) -> Any:
    from sparsearch import load_study

    return load_study(study, **{**overrides, **more})


LATER_FIELDS: dict[tuple[str, str], object] = {("train", "keep_epoch"): "best"}
"""Study fields added after a round's first runs were recorded, with the value that behaves as before they existed:
at that value a field is left out of :func:`fingerprint`, so that adding it does not run a finished round again
(``keep_epoch = "best"`` is what every trial did before the field was added). Any other value counts."""


def fingerprint(spec: Any) -> str:
    """A digest of the study spec (its TOML form, keys sorted): records and prepared data of another spec are
    never reused. Fields of :data:`LATER_FIELDS` at their earlier behaviour are left out."""
    doc = spec.to_toml_dict()
    for (section, key), value in LATER_FIELDS.items():
        if doc.get(section, {}).get(key, value) == value:
            doc.get(section, {}).pop(key, None)
    raw = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def data_overrides(study: str, *, all_rows: bool, data_root: str | None) -> dict[str, Any]:
    """The overrides that point the study at its data (not the user's ``--set``: they do not make a run shrunk):
    ``[data] path`` re-rooted under ``--data-root`` when the bundled study reads a file of the shared data folder,
    and ``[data] max_rows`` above the table's size with ``all_rows``."""
    out: dict[str, Any] = {}
    path = _spec(study, {}).data.path
    if path is not None and SHARED_DATA in Path(path).as_posix():
        relative = Path(path).as_posix().split(SHARED_DATA, 1)[1]
        out["data"] = str(_results.data_file(_results.data_root(data_root), relative).resolve())
    if all_rows:
        out["data.max_rows"] = ALL_ROWS
    return out


def _objective(spec: Any) -> str:
    obj = spec.study.objectives[0]
    if len(spec.study.objectives) != 1 or not obj.startswith("val_"):
        raise SystemExit(f"bench_peers compares single-objective studies on a val_* metric, got {spec.study.objectives}")
    return obj


def _hyperband(spec: Any) -> dict[str, int]:
    """The study's multi-fidelity settings, so every peer prunes on the same rungs as ours (same minimum resource,
    same reduction factor, same maximum: epochs x reports per epoch)."""
    params = spec.pruner_params()
    return {"min_resource": int(params.get("min_resource", 1)),
            "max_resource": int(params.get("max_resource", spec.train.epochs * spec.train.reports_per_epoch)),
            "reduction_factor": int(params.get("reduction_factor", 3))}


def use_trial_seed_rule(config: dict[str, Any] | None, seed: int) -> None:
    """Set this run's seeding rule for :func:`peers_objective.trial_seed` in the environment, which its Optuna
    workers and Ray's workers inherit: the run's seed under rule ``"run"``, nothing under ``"number"``."""
    if (config or {}).get("trial_seed") == "run":
        os.environ["SPARSEARCH_PEERS_RUN_SEED"] = str(seed)
    else:
        os.environ.pop("SPARSEARCH_PEERS_RUN_SEED", None)


# -- one run per subprocess -------------------------------------------------------------------------------------
def run_one(contender: str, seed: int, study: str, overrides: dict[str, Any], budget: float, folder: Path,
            config: dict[str, Any] | None = None) -> dict:
    spec = _spec(study, overrides, seed=seed)
    objective = _objective(spec)
    hidden = "hidden_test_" + objective.removeprefix("val_")
    direction = spec.study.resolved_directions()[0]
    use_trial_seed_rule(config, seed)
    started = time.time()
    if contender in ("ours", "random"):
        rows, search = _run_ours(spec, contender, seed, budget, folder, objective, hidden)
    elif contender == "optuna":
        rows, search = _run_optuna(spec, seed, budget, folder, objective, hidden)
    elif contender == "tune":
        rows, search = _run_tune(spec, seed, budget, folder, objective, hidden)
    else:
        raise SystemExit(f"unknown contender {contender!r}; choose from {', '.join(CONTENDERS)}")
    rows.sort(key=lambda r: r["t"])
    return {"config": config, "contender": contender, "seed": seed, "study": study, "overrides": overrides,
            "budget_s": budget,
            "objective": objective, "direction": direction, "wall_s": time.time() - started, "trials": rows,
            "search": search, "curve": anytime(rows, direction == "maximize")}


def _trial_counts(trials: list[Any]) -> dict[str, int]:
    """How many Optuna trials a run started, completed and pruned (``search`` in its record): ``trials`` lists the
    completed ones only, and a contender that prunes most of what it starts searches differently from one that
    does not."""
    states = [t.state.name for t in trials]
    return {"started": len(states), "completed": states.count("COMPLETE"), "pruned": states.count("PRUNED")}


def _run_ours(spec, contender, seed, budget, folder, objective, hidden) -> tuple[list[dict], dict]:
    from sparsearch import run_study

    sampler = "random" if contender == "random" else spec.study.sampler
    # the plain baseline starts cold; ours keeps the study's own warm start (the bundled studies': "portfolio")
    warm = {"warm_start": "none"} if contender == "random" else {}
    run_dir = folder / f"{contender}-s{seed}"
    # a run that was interrupted left its storage behind: start afresh, or its trials would count on a new clock
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    os.environ["SPARSEARCH_PEERS_DEADLINE"] = str(t0 + budget)  # Ray's workers inherit it (peers_objective)
    result = run_study(spec, results_dir=run_dir, progress=False, sampler=sampler,
                       n_trials=100_000, timeout=budget, study_name=f"{spec.study.name}-{contender}-s{seed}", **warm,
                       **{"study.objective": "peers_objective:ours", "tracking.enabled": False})
    rows = []
    for t in result.trials:
        if t.state.name != "COMPLETE" or t.datetime_complete is None:
            continue
        metrics = t.user_attrs.get("metrics", {})
        rows.append({"t": t.datetime_complete.timestamp() - t0, "val": t.values[0], "test": metrics.get(hidden),
                     "params": t.params, "warm_start": t.user_attrs.get("warm_start")})
    # the start-up trials the controller chose (search/startup.py) and its data preparation, outside the trials
    info = result.info
    return rows, {**_trial_counts(result.trials), "startup": info.startup if info is not None else None,
                  "prepare_s": info.prepare_s if info is not None else None}


def _run_optuna(spec, seed, budget, folder, objective, hidden) -> tuple[list[dict], dict]:
    import optuna

    folder.mkdir(parents=True, exist_ok=True)
    journal = folder / f"optuna-s{seed}.journal"
    journal.unlink(missing_ok=True)
    t0 = time.time()
    env = _env(SPARSEARCH_PEERS_DEADLINE=str(t0 + budget))
    procs = [subprocess.Popen([sys.executable, __file__, "_optuna_worker", "--journal", str(journal),
                               "--seed", str(seed), "--worker", str(k), "--budget-s", str(budget),
                               "--spec", json.dumps(spec.to_toml_dict())], env=env)
             for k in range(2)]
    for p in procs:
        p.wait()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="peer", storage=storage)
    rows = [{"t": t.datetime_complete.timestamp() - t0, "val": t.value, "test": t.user_attrs.get(hidden),
             "params": t.params} for t in study.trials if t.state.name == "COMPLETE"]
    return rows, _trial_counts(study.trials)


def _optuna_worker(journal: str, seed: int, k: int, budget: float, raw: str) -> None:
    import optuna
    import peers_objective

    from sparsearch.search.spec import parse_study
    from sparsearch.spaces import suggest_config

    spec = parse_study(json.loads(raw))
    objective = _objective(spec)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    study = optuna.create_study(study_name="peer", storage=storage, load_if_exists=True,
                                direction=spec.study.resolved_directions()[0],
                                sampler=optuna.samplers.TPESampler(seed=seed * 10 + k, constant_liar=True),
                                pruner=optuna.pruners.HyperbandPruner(**_hyperband(spec)))
    data = peers_objective.prepared()
    top_k = spec.data.top_k

    def fn(trial):
        features = None
        if top_k is not None and top_k[0] < top_k[1]:
            features = tuple(data.candidates[: trial.suggest_int("data.top_k", top_k[0], top_k[1])])
        config = suggest_config(trial, spec.space, spec.train, n_features=len(data.candidates) or None)

        def report(step, metrics):
            trial.report(metrics[objective], step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        metrics = peers_objective.train_config(config, features, seed=peers_objective.trial_seed(trial.number),
                                               report=report)
        for key, value in metrics.items():
            if key.startswith("hidden_test_"):
                trial.set_user_attr(key, value)
        return metrics[objective]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(fn, timeout=budget)


def _run_tune(spec, seed, budget, folder, objective, hidden) -> tuple[list[dict], dict]:
    import peers_objective
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from sparsearch._ray import connect_ray
    from sparsearch.spaces import config_from_params

    data = peers_objective.prepared()
    n_features = len(data.candidates) or None
    direction = spec.study.resolved_directions()[0]

    space = peers_objective.DefineByRunSpace(spec.to_toml_dict(), n_features)
    hb = _hyperband(spec)

    def trainable(params):
        import peers_objective as po

        d = po.prepared()
        features = tuple(d.candidates[: int(params["data.top_k"])]) if "data.top_k" in params else None
        config = config_from_params(params, spec.space, spec.train, n_features=n_features)
        number = zlib.crc32(json.dumps(params, sort_keys=True, default=str).encode()) % 100_000  # per config
        metrics = po.train_config(config, features, seed=po.trial_seed(number),
                                  report=lambda step, m: tune.report({objective: m[objective], "step": step}))
        tune.report({objective: metrics[objective], hidden: metrics[hidden], "done_trial": 1})

    # this process was started by main() with _env(): its Ray workers inherit OMP_NUM_THREADS, PYTHONPATH (bench/)
    # and SPARSEARCH_PEERS_DATA from it
    connect_ray("local", num_cpus=2, object_store_memory=300_000_000)
    t0 = time.time()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}),
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(space=space, metric=objective, mode=direction[:3], seed=seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=hb["max_resource"] + 1,
                                    grace_period=hb["min_resource"], reduction_factor=hb["reduction_factor"]),
            metric=objective, mode=direction[:3], num_samples=-1, max_concurrent_trials=2, time_budget_s=budget),
        run_config=tune.RunConfig(storage_path=str(folder / f"tune-s{seed}"), verbose=0),
    )
    grid = tuner.fit()
    rows = []
    for res in grid:
        m = res.metrics or {}
        if m.get("done_trial") and hidden in m:
            rows.append({"t": float(m["timestamp"]) - t0, "val": m[objective], "test": m[hidden],
                         "params": dict(res.config or {})})
    ray.shutdown()
    # ASHA's early stops and the trials the budget cut short are not told apart in Tune's results: no "pruned"
    return rows, {"started": len(grid), "completed": len(rows), "pruned": None}


# -- figures ------------------------------------------------------------------------------------------------------
def anytime(rows: list[dict], maximize: bool) -> list[list[float]]:
    """``[t, incumbent val, incumbent test]`` each time the incumbent (best by validation) changes."""
    curve, best = [], None
    for r in rows:
        if r["val"] is None or r["test"] is None or not math.isfinite(r["val"]):
            continue
        if best is None or (r["val"] > best if maximize else r["val"] < best):
            best = r["val"]
            curve.append([r["t"], r["val"], r["test"]])
    return curve


def time_to_reach(curve: list[list[float]], target: float, maximize: bool) -> float | None:
    for t, _, test in curve:
        if (test >= target) if maximize else (test <= target):
            return t
    return None


def anytime_band(docs: list[dict], points: int = 25) -> dict[str, list]:
    """The incumbent's test metric over seeds on a common time grid (0..budget): median, min and max over the seeds
    that have an incumbent by then, and how many do."""
    budget = max(d["budget_s"] for d in docs)
    grid = np.linspace(0, budget, points)
    values = np.full((len(docs), points), np.nan)
    for i, d in enumerate(docs):
        for t, _, test in d["curve"]:
            values[i, grid >= t] = test
    have = (~np.isnan(values)).sum(axis=0)
    with warnings.catch_warnings():  # all-NaN columns (no incumbent yet) warn
        warnings.simplefilter("ignore", RuntimeWarning)
        med, lo, hi = np.nanmedian(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)
    clean = lambda a: [None if not math.isfinite(x) else round(float(x), 6) for x in a]  # noqa: E731
    return {"t": [round(float(t), 1) for t in grid], "median": clean(med), "min": clean(lo), "max": clean(hi),
            "seeds_with_incumbent": [int(h) for h in have]}


def _plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for c, band in doc["anytime"].items():
        t = np.array(band["t"])
        f = lambda k, b=band: np.array([np.nan if v is None else v for v in b[k]])  # noqa: E731
        (line,) = ax.plot(t, f("median"), label=f"{c} (median of {len(doc['runs'][c])} seeds)")
        ax.fill_between(t, f("min"), f("max"), color=line.get_color(), alpha=0.15)
    ax.set_xlabel("wall time, s")
    ax.set_ylabel("test metric of the incumbent (best by validation)")
    ax.set_title(f"{doc['study']}: anytime curves, min..max over seeds")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def seed_ratios(docs: list[dict], target: float, peer_budget: float, maximize: bool) -> dict[int, float | None]:
    """Per seed of ours (``docs``), the time its incumbent's test metric first reaches ``target`` (the peer's median
    final) as a fraction of the peer's budget; ``None`` where it never does within ours' budget."""
    out: dict[int, float | None] = {}
    for d in docs:
        t = time_to_reach(d["curve"], target, maximize)
        out[int(d["seed"])] = None if t is None else t / peer_budget
    return out


def worst_ratio(ratios: dict[int, float | None]) -> float | None:
    """The target's figure: the largest per-seed ratio (the slowest seed), ``None`` if any seed never reaches."""
    if not ratios or any(r is None for r in ratios.values()):
        return None
    return max(r for r in ratios.values() if r is not None)


def judge(ratios: dict[int, float | None], final_verdict: dict[str, Any], peer: str) -> dict[str, Any]:
    """The issue's targets for one peer: ours reaches the peer's median final test metric in at most 0.5x the
    peer's wall time on *every* seed (the worst seed's ratio, not the median over seeds), and ours' final test
    metric never "loses" against the peer (:func:`final_verdict`).

    When the finals show no difference, reaching the peer's median final is decided by seed noise as much as by the
    search, and the wording says so rather than calling a time ratio a speed-up.
    """
    outcome = final_verdict["outcome"]
    worst = worst_ratio(ratios)
    shown = ", ".join(f"s{s}: " + ("never" if r is None else f"{r:.2f}x") for s, r in sorted(ratios.items()))
    if worst is None:
        target = "missed"
        reached = sum(r is not None for r in ratios.values())
        text = (f"ours does not reach {peer}'s median final test metric on every seed within its budget "
                f"({reached}/{len(ratios)}; {shown})")
    elif worst <= TARGET_RATIO:
        target = "met"
        text = (f"ours reaches {peer}'s median final test metric within {worst:.2f}x {peer}'s wall time on every "
                f"seed ({shown})")
    else:
        target = "missed"
        text = (f"ours needs up to {worst:.2f}x {peer}'s wall time to reach its median final test metric (target "
                f"{TARGET_RATIO}x on every seed; {shown})")
    if outcome == "no difference shown":
        text += "; the final test metrics show no difference, so this time is decided by seed spread as much as " \
                "by the search"
    elif outcome == "loses":
        text += f"; ours' final test metric is worse than {peer}'s"
    else:
        text += f"; ours' final test metric beats {peer}'s"
    return {"target": target, "worst_ratio": worst, "ratios": {str(s): r for s, r in sorted(ratios.items())},
            "final_target": "missed" if outcome == "loses" else "met", "final_outcome": outcome, "text": text}


def final_verdict(finals: dict[str, dict[int, float | None]], peer: str, maximize: bool) -> dict[str, Any]:
    """Ours against ``peer`` on the final test metrics (``{contender: {seed: final or None}}``), by
    :func:`compare.verdict`'s one rule: paired by seed when both contenders seed their sampler with the run's
    seed (:data:`SEEDED_BY_RUN_SEED`) and ran the same seeds, unpaired otherwise. A run with no final (no trial
    completed within its budget) stops the summary with its name: it is never dropped."""
    from sparsearch.search.compare import verdict

    for c in ("ours", peer):
        for seed, x in sorted(finals[c].items()):
            if x is None or not math.isfinite(x):
                raise SystemExit(f"summary: run {c}-s{seed} has no final test metric (no trial completed within its "
                                 f"budget); every run of a comparison needs one: re-run it or leave the seed out")
    seeds_a, seeds_b = sorted(finals["ours"]), sorted(finals[peer])
    paired = peer in SEEDED_BY_RUN_SEED and seeds_a == seeds_b
    design = ("paired: same split and sampler seed on every seed" if paired else
              f"unpaired: {peer} " + ("ran other seeds" if peer in SEEDED_BY_RUN_SEED
                                      else "seeds its samplers otherwise (10 * seed + k)"))
    v = verdict([finals["ours"][s] for s in seeds_a], [finals[peer][s] for s in seeds_b], maximize=maximize,
                names=("ours", peer), paired=paired)
    return {**v, "design": design, "seeds": seeds_a}


def summary(study: str, folder: Path, results: Path | None = None, plot: bool = True,
            plot_to: Path | None = None, round_name: str | None = None,
            peers_from: tuple[str, Path] | None = None) -> dict[str, Any]:
    """Judge the run records under ``folder`` (one round's); save ``<results>/peers-<study>-<round>.json``
    (``peers-<study>.json`` without a round; default bench/results) and the anytime plot at ``plot_to`` (default
    ``folder/anytime.png``).

    ``peers_from=(ROUND, FOLDER)`` judges this round's contenders against the contenders it lacks as recorded in
    another round (ours run again under a new rule, against the peers already measured): the records must share
    the study's fingerprint and budget, the summary names that round (``peers_from``) and is saved as
    ``peers-<study>-<round>-vs-<ROUND>.json``."""
    runs: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*-s*.json")):
        doc = json.loads(path.read_text())
        runs.setdefault(doc["contender"], []).append(doc)
    if not runs:
        raise SystemExit(f"no finished runs under {folder}")
    if peers_from is not None:
        _add_peers(runs, *peers_from)
    maximize = next(iter(runs.values()))[0]["direction"] == "maximize"
    for docs in runs.values():
        for d in docs:
            # every contender is judged on what it had within the budget: our controller and plain Optuna stop
            # *starting* trials at the budget and (since the fashion_cnn runs) the shared objective stops running
            # ones at their first report after it; Ray Tune stops them itself. A trial that completes after the
            # budget does not count for anyone
            d["curve"] = anytime([r for r in d["trials"] if r["t"] <= d["budget_s"]], maximize)
            d["late_trials"] = sum(r["t"] > d["budget_s"] for r in d["trials"])
    finals = {c: [d["curve"][-1][2] if d["curve"] else math.nan for d in docs] for c, docs in runs.items()}
    table, per_seed_ratios = [], {}
    for c, docs in runs.items():
        row = {"contender": c, "seeds": len(docs), "final_test_median": float(np.nanmedian(finals[c])),
               "final_test_min": float(np.nanmin(finals[c])), "final_test_max": float(np.nanmax(finals[c])),
               "trials_median": float(np.median([len(d["trials"]) - d["late_trials"] for d in docs])),
               "late_trials_total": int(sum(d["late_trials"] for d in docs)),
               "wall_s_median": float(np.median([d["wall_s"] for d in docs]))}
        if all(d.get("search") for d in docs):  # records from round issue30-i's seed 3 on
            row["trials_started_median"] = float(np.median([d["search"]["started"] for d in docs]))
        for peer, peer_docs in runs.items():
            if peer == c:
                continue
            target = float(np.nanmedian(finals[peer]))
            budget = float(np.median([d["budget_s"] for d in peer_docs]))
            ratios = seed_ratios(docs, target, budget, maximize)
            # the target is per seed: the worst seed's ratio, and every seed's beside it
            row[f"time_to_{peer}_final_over_its_budget"] = worst_ratio(ratios)
            row[f"time_to_{peer}_final_over_its_budget_per_seed"] = {str(s): r for s, r in sorted(ratios.items())}
            row[f"reached_{peer}_final"] = f"{sum(r is not None for r in ratios.values())}/{len(ratios)}"
            if c == "ours":
                per_seed_ratios[peer] = ratios
        table.append(row)
    verdicts, targets = {}, {}
    if "ours" in runs:
        for peer in runs:
            if peer == "ours":
                continue
            by_seed = {c: {d["seed"]: (d["curve"][-1][2] if d["curve"] else None) for d in runs[c]}
                       for c in ("ours", peer)}
            v = final_verdict(by_seed, peer, maximize)
            verdicts[peer] = v
            targets[peer] = judge(per_seed_ratios[peer], v, peer)
    doc = {"study": study, "round": round_name, "table": table, "final_verdicts": verdicts,
           "targets": targets, **({"peers_from": peers_from[0]} if peers_from else {}),
           "runs": {c: [{"seed": d["seed"], "final": d["curve"][-1] if d["curve"] else None,
                         "n_trials": len(d["trials"]) - d["late_trials"], "late_trials": d["late_trials"],
                         "wall_s": d["wall_s"], "curve": d["curve"]} for d in docs] for c, docs in runs.items()}}
    doc["anytime"] = {c: anytime_band(docs) for c, docs in runs.items()}
    key = f"peers-{study}" + (f"-{round_name}" if round_name else "") + (f"-vs-{peers_from[0]}" if peers_from else "")
    _results.save(doc, key=key, results=results)
    if plot:
        plot_to = folder / "anytime.png" if plot_to is None else plot_to
        plot_to.parent.mkdir(parents=True, exist_ok=True)
        _plot(doc, plot_to)
    for row in table:
        print(json.dumps(row))
    for peer, v in verdicts.items():
        print(f"vs {peer}: {v['text']}\n    target: {targets[peer]['target']}: {targets[peer]['text']}\n"
              f"    final never loses: {targets[peer]['final_target']}")
    return doc


def _add_peers(runs: dict[str, list[dict]], round_name: str, folder: Path) -> None:
    """Add to ``runs`` the contenders it lacks, from ``round_name``'s records under ``folder`` (see :func:`summary`).
    Refuses, in one line, a round with none of them or a record of another study spec or budget."""
    mine = {(d["config"]["spec_fingerprint"], d["budget_s"]) for docs in runs.values() for d in docs}
    lacking = set(CONTENDERS) - set(runs)
    found: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*-s*.json")):
        doc = json.loads(path.read_text())
        if doc["contender"] not in lacking:
            continue
        theirs = (doc["config"]["spec_fingerprint"], doc["budget_s"])
        if theirs not in mine:
            raise SystemExit(f"--peers-from {round_name}: {path.name} ran another study spec or budget "
                             f"(fingerprint and budget {theirs}; this round's: {sorted(mine)})")
        found.setdefault(doc["contender"], []).append(doc)
    if not found:
        raise SystemExit(f"--peers-from {round_name}: no records of {', '.join(sorted(lacking)) or 'any contender'} "
                         f"(the contenders this round lacks) under {folder}")
    runs.update(found)


def _internal(argv: list[str]) -> int:
    """The processes this script starts: ``_run`` (one contender, one seed) and ``_optuna_worker``."""
    ap = argparse.ArgumentParser(prog=f"{Path(__file__).name} {argv[0]}",
                                 description="internal: started by bench_peers.py itself")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--budget-s", type=float, required=True)
    if argv[0] == "_optuna_worker":
        ap.add_argument("--journal", required=True)
        ap.add_argument("--worker", type=int, required=True)
        ap.add_argument("--spec", required=True, help="the study as JSON (StudySpec.to_toml_dict)")
        args = ap.parse_args(argv[1:])
        _optuna_worker(args.journal, args.seed, args.worker, args.budget_s, args.spec)
        return 0
    ap.add_argument("--contender", choices=CONTENDERS, required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--work", type=Path, required=True, help="the contender's scratch folder")
    ap.add_argument("--record", type=Path, required=True, help="where the run's JSON goes")
    ap.add_argument("--overrides", default="{}", help="study overrides as JSON")
    ap.add_argument("--config", default="null", help="the run's config as JSON (saved in its record)")
    args = ap.parse_args(argv[1:])
    doc = run_one(args.contender, args.seed, args.study, json.loads(args.overrides), args.budget_s, args.work,
                  json.loads(args.config))
    _results.save_run(args.record, doc, indent=None)
    return 0


def prepare(spec: Any, work: Path) -> Path:
    """The prepared data of ``spec`` (split, training-rows ranking, encoded parts), pickled once under ``work`` as
    ``prepared-<fingerprint>.pkl``: keyed by the spec, so it is never reused across spec changes."""
    spec_fp = fingerprint(spec)
    work.mkdir(parents=True, exist_ok=True)
    data_path = work / f"prepared-{spec_fp}.pkl"
    if not data_path.exists():
        from sparsearch.search.data import prepare_data

        prepared = prepare_data(spec, work / f"prep-{spec_fp}")
        tmp = data_path.with_name(data_path.name + ".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(prepared, fh, protocol=5)
        os.replace(tmp, data_path)  # an interrupted dump must not look prepared
    return data_path


def run_config(contender: str, seed: int, budget: float, overrides: dict[str, Any], spec_fingerprint: str,
               trial_seed: str = "number") -> dict:
    """What a run's record must match to count as done (:func:`_results.load_run`). ``trial_seed`` is the round's
    seeding rule (:func:`trial_seed_rule`); the earlier rounds' rule (``"number"``) leaves their configs as saved."""
    config = {"contender": contender, "seed": seed, "budget_s": budget, "overrides": overrides,
              "spec_fingerprint": spec_fingerprint}
    if trial_seed != "number":
        config["trial_seed"] = trial_seed
    return config


def trial_seed_rule(round_name: str) -> str:
    """How the shared training function seeds trial ``n`` of seed ``s`` in ``round_name``: ``"run"``
    (``s * 100_003 + n``, the controller's rule; :func:`peers_objective.trial_seed`) in every new round, ``"number"``
    (``n``) in the rounds measured with it (:data:`TRIAL_SEED_BY_NUMBER`), so that they finish under one rule."""
    return "number" if round_name in TRIAL_SEED_BY_NUMBER else "run"


def _round_name(text: str) -> str:
    if not text or not all(ch.isalnum() or ch in "-_." for ch in text) or text.startswith("."):
        raise argparse.ArgumentTypeError(f"a round is a folder name (letters, digits, - _ .), got {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("_optuna_worker", "_run"):  # one contender's process, started by this script
        return _internal(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of every run (required to run)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="study override (TOML value)")
    ap.add_argument("--round", type=_round_name, default=ROUND,
                    help=f"the round's name: its records, scratch and summary are its own (default {ROUND})")
    ap.add_argument("--all-rows", action="store_true",
                    help="every row of the table ([data] max_rows above its size; e.g. flights)")
    _results.add_data_root(ap)  # nycflights13/flights.parquet under it, for the flights study
    ap.add_argument("--summary", action="store_true", help="only summarise the round's finished runs")
    ap.add_argument("--peers-from", type=_round_name, default=None, metavar="ROUND",
                    help="with --summary: judge this round against the contenders it lacks as recorded in ROUND "
                         "(same study spec and budget)")
    args = ap.parse_args(argv)
    if args.peers_from is not None and not args.summary:
        ap.error("--peers-from: only with --summary (it judges finished runs against another round's records)")
    unknown = sorted(set(args.contenders.split(",")) - set(CONTENDERS))
    if unknown:
        ap.error(f"--contenders: unknown {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if args.seeds < 1:
        ap.error(f"--seeds: at least 1, got {args.seeds}")
    user = _parse_set(args.set)
    records, results, work = _places(args.study, args.round, shrunk=bool(user))
    named = None if args.round == LEGACY_ROUND and not user else args.round
    if args.summary:
        peers = None
        if args.peers_from is not None:
            peers = (args.peers_from, _places(args.study, args.peers_from, shrunk=bool(user))[0])
        summary(args.study, records, results=results, plot_to=work / "anytime.png", round_name=named,
                peers_from=peers)
        return 0
    if named is None:
        ap.error(f"--round {LEGACY_ROUND}: issue 11's records are kept as they are (only --summary); run a new round")
    if args.budget_s is None or args.budget_s <= 0:
        ap.error("--budget-s: a positive number of seconds is required to run (only --summary goes without)")
    overrides = {**data_overrides(args.study, all_rows=args.all_rows, data_root=args.data_root), **user}
    spec_fp = fingerprint(_spec(args.study, overrides))
    data_path = prepare(_spec(args.study, overrides), work)  # one split and ranking for every contender
    env = _env(SPARSEARCH_PEERS_DATA=str(data_path),
               PYTHONPATH=os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p))
    run_seeds("peers", __file__, args, args.contenders.split(","), work, records, overrides, lambda seed: spec_fp, env,
              trial_seed_rule(args.round))
    summary(args.study, records, results=results, plot_to=work / "anytime.png", round_name=args.round)
    return 0


def run_seeds(tag: str, script: str, args: argparse.Namespace, contenders: list[str], work: Path, records: Path,
              overrides: dict[str, Any], spec_fp_of: Any, env: dict[str, str], trial_seed: str = "number",
              extra_config: Any = None) -> None:
    """Run every contender on every seed, interleaved (the order rotated by seed), each in a subprocess of
    ``script`` (``_run``); a run whose record holds the same config is skipped (bench_peers and bench_userlevel).
    ``extra_config(contender)``, when given, adds settings of the script's own to a contender's config."""
    for seed in range(args.seeds):
        spec_fp = spec_fp_of(seed)
        order = contenders[seed % len(contenders):] + contenders[: seed % len(contenders)]  # interleaved, rotated
        for c in order:
            record = records / f"{c}-s{seed}.json"
            config = {**run_config(c, seed, args.budget_s, overrides, spec_fp, trial_seed),
                      **(extra_config(c) if extra_config is not None else {})}
            if _results.load_run(record, config) is not None:
                print(f"[{tag}] {args.study} {c} seed {seed}: done already ({record.name}), skipped", flush=True)
                continue
            print(f"[{tag}] {args.study} {c} seed {seed} ({args.budget_s:.0f} s)", flush=True)
            subprocess.run([sys.executable, script, "_run", "--contender", c, "--seed", str(seed),
                            "--study", args.study, "--budget-s", str(args.budget_s), "--work", str(work),
                            "--record", str(record), "--overrides", json.dumps(overrides),
                            "--config", json.dumps(config)], env=env, check=True)


def _places(study: str, round_name: str, *, shrunk: bool) -> tuple[Path, Path, Path]:
    """The round's run records, where its summary goes, and its scratch folder. A run with study overrides
    (``--set``) is not the bundled study: it goes under bench/out/peers/shrunk, never bench/results."""
    if shrunk:
        root = OUT / "shrunk"
        return root / "peers" / study / round_name, root, root / study / round_name
    if round_name == LEGACY_ROUND:
        return _results.RESULTS / "peers" / study, _results.RESULTS, OUT / study
    return _results.RESULTS / "peers" / study / round_name, _results.RESULTS, OUT / study / round_name


if __name__ == "__main__":
    raise SystemExit(main())
