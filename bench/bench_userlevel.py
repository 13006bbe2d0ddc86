"""User-level comparison (issue 30 item 5): each tool as its documentation suggests a user run it on the same data,
against ``sparsearch run``. The training function differs on purpose: the peers train a user's own PyTorch MLP.

    python bench/bench_userlevel.py clicklog_large --budget-s 600 --seeds 5
    python bench/bench_userlevel.py flights --all-rows --budget-s 600 --seeds 5 --data-root DIR
    python bench/bench_userlevel.py --smoke                    # quickstart, 1 seed, tiny budget, under bench/out

Same split, same cores (2 trials in flight x 1 CPU), same wall-clock budget, seeds interleaved (rotated order):

- ``sparsearch``: ``run_study(study, seed=s, timeout=budget)`` as the README's ``sparsearch run STUDY`` does (the
  study's own sampler, pruner, warm start, tracking); its best trial's test metric as the controller reports it
  (``StudyResult.to_json()["test_metrics"]``). Seed ``s`` splits the rows with seed ``s``: the split the peers get.
- ``optuna``: a plain Optuna study over a user's own PyTorch MLP, shaped as Optuna's PyTorch example
  (https://github.com/optuna/optuna-examples/blob/main/pytorch/pytorch_simple.py): ``n_layers`` 1..3, units 4..128
  per layer, dropout 0.2..0.5, optimizer Adam / RMSprop / SGD, log-uniform learning rate 1e-5..1e-1, a report
  per epoch with ``trial.should_prune()``; ``TPESampler(seed=s)`` + ``MedianPruner``, ``study.optimize(timeout=
  budget, n_jobs=2)`` (the one-line entry point of https://github.com/optuna/optuna-examples/blob/main/README.md).
- ``tune``: Ray Tune as its PyTorch tutorial suggests (https://docs.ray.io/en/latest/tune/examples/
  tune-pytorch-cifar.html): a function trainable reporting each epoch, ``tune.with_parameters`` for the data,
  ``tune.choice`` / ``tune.loguniform`` search space (layer sizes powers of 2, learning rate 1e-4..1e-1, batch
  size), the default random search, ``ASHAScheduler(grace_period=1, reduction_factor=2)``, ``Tuner`` with
  ``num_samples=-1`` and ``time_budget_s`` = the budget, 1 CPU per trial.

The user's inputs are built from the raw table as a user would with pandas and scikit-learn, fitted on the
training rows only: codes of the training rows' categories (unknown and rare ones share one code) into an
``nn.Embedding`` per categorical column (every column that is not a float: strings, booleans, integer IDs),
``SimpleImputer`` + ``StandardScaler`` for float columns (:data:`USER_INPUTS`). The best trial by validation is refitted (its
configuration, the epochs it ran, seed ``s``) on the training rows and scored once on the test rows, after the
budget (the refit time is recorded, not counted).

Each run's JSON is saved as it finishes (``bench/results/userlevel/<study>/<round>/<contender>-s<seed>.json``,
with a ``config``: a run whose record has the same config is skipped) and the summary (final test metrics per
seed, verdicts of sparsearch against each peer by :func:`sparsearch.search.compare.verdict`, paired by seed: same
split) goes to ``bench/results/userlevel-<study>-<round>.json``. ``--smoke`` and ``--set`` runs stay under
bench/out. Image studies (``fashion_cnn``) are not compared here: the user-level MLP is for tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)
import bench_peers  # noqa: E402

# in each sparsearch run's config: a record made under the earlier start-up rule (first trials' mean duration, not
# recorded), with which every clicklog_large run of round issue30 stayed random search, runs again
from sparsearch.search.startup import ESTIMATE  # noqa: E402

CONTENDERS = ("sparsearch", "optuna", "tune")
SMOKE = {"study": "quickstart", "budget_s": 20.0, "seeds": 1, "set": ["train.epochs=1"]}
OUT = _results.OUT / "userlevel"
METRICS = ("auc", "accuracy", "logloss")
USER_INPUTS = "floats-numeric"
"""How the user's inputs treat a column: float columns are numbers (imputed and scaled), every other column
(strings, booleans and integers, such as a click log's ID columns) is a category with an embedding. Recorded in
each peer run's config; a peer record made under another rule runs again. The rule before it
(``"ints-numeric"``, not recorded) scaled integer columns as numbers, which turned clicklog_large's 312 integer ID
columns into meaningless scalars (plain Optuna, seed 0: 0.674 test AUC)."""
MIN_FREQUENCY = 5
"""A category seen fewer times on the training rows shares the unknown code (scikit-learn's ``min_frequency``)."""


# -- the user's data: raw table rows of the split ------------------------------------------------------------------
def raw_table(spec: Any) -> Any:
    """The study's table as a user has it (polars): the file or generator, the study's ``sql``, ``max_rows``, rows
    with a label; the same rows, in the same order, that the controller splits."""
    import polars as pl

    from sparsearch.features import DATASETS, read_table

    data = spec.data
    if data.path is not None:
        df = read_table(data.path)
    else:
        params = dict(data.params)
        params.setdefault("seed", spec.study.seed)
        df = DATASETS[data.generator](**params)
    if data.sql is not None:
        df = pl.SQLContext(data=df, eager=True).execute(data.sql)
    if data.max_rows is not None and df.height > data.max_rows:
        df = df.sample(n=data.max_rows, seed=spec.study.seed or 0, shuffle=False)
    return df.filter(pl.col(data.target).is_not_null())


def split_rows(spec: Any, work: Path) -> dict[str, np.ndarray]:
    """The row indices of train / validation / test of ``spec`` (its seed splits): bench_peers' prepared split,
    saved small beside it (``split-<fingerprint>.npz``)."""
    import pickle

    fp = bench_peers.fingerprint(spec)
    path = work / f"split-{fp}.npz"
    if not path.exists():
        with open(bench_peers.prepare(spec, work), "rb") as fh:
            indices = pickle.load(fh).indices
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in indices.items()})
        os.replace(tmp, path)
    with np.load(path) as z:
        return {k: z[k] for k in ("train", "val", "test")}


class UserData:
    """What a user builds from the table with pandas and scikit-learn, fitted on the training rows: integer codes
    per categorical column (``pd.Index.get_indexer`` over the training rows' categories seen at least
    :data:`MIN_FREQUENCY` times; 0 = unknown, rare or missing), ``SimpleImputer`` + ``StandardScaler`` numeric
    columns, class labels. Column by column: one object array of all columns would not fit memory on
    clicklog_large (2M x 316)."""

    def __init__(self, df: Any, target: str, features: list[str], rows: dict[str, np.ndarray]) -> None:
        import pandas as pd
        import polars as pl
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import StandardScaler

        numeric = [c for c in features if df.schema[c].is_float()]  # USER_INPUTS
        categorical = [c for c in features if c not in numeric]
        labels = df[target].to_numpy()
        self.classes = np.unique(labels[rows["train"]])
        y_all = np.searchsorted(self.classes, labels)
        codes = np.zeros((df.height, len(categorical)), np.int32)
        self.cardinalities = []
        for k, c in enumerate(categorical):
            values = df[c].cast(pl.String).to_pandas()
            counts = values.iloc[rows["train"]].value_counts()
            categories = counts.index[counts >= MIN_FREQUENCY]
            codes[:, k] = pd.Index(categories).get_indexer(values).astype(np.int32) + 1  # unknown: -1 + 1
            self.cardinalities.append(len(categories) + 1)
        if numeric:
            num_all = df.select(numeric).cast(pl.Float64).to_numpy()
            imp = SimpleImputer().fit(num_all[rows["train"]])
            scale = StandardScaler().fit(imp.transform(num_all[rows["train"]]))
            num_all = scale.transform(imp.transform(num_all)).astype(np.float32)
        else:
            num_all = np.zeros((df.height, 0), np.float32)
        self.parts = {part: {"cat": codes[ix], "num": num_all[ix], "y": y_all[ix]}
                      for part, ix in rows.items()}
        self.n_numeric = len(numeric)

    def nbytes(self) -> int:
        return sum(a.nbytes for p in self.parts.values() for a in p.values())


def _metric(name: str, y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    if name == "auc":
        return float(roc_auc_score(y, proba[:, 1]) if proba.shape[1] == 2 else
                     roc_auc_score(y, proba, multi_class="ovr"))
    if name == "accuracy":
        return float(accuracy_score(y, proba.argmax(1)))
    return float(log_loss(y, proba, labels=list(range(proba.shape[1]))))


# -- the user's model -------------------------------------------------------------------------------------------------
def build_mlp(data: UserData, layers: list[int], dropout: float, emb_dim: int) -> Any:
    import torch
    from torch import nn

    class UserMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.ModuleList(nn.Embedding(n, emb_dim) for n in data.cardinalities)
            width = emb_dim * len(data.cardinalities) + data.n_numeric
            body: list[nn.Module] = []
            for units in layers:
                body += [nn.Linear(width, units), nn.ReLU(), nn.Dropout(dropout)]
                width = units
            body.append(nn.Linear(width, len(data.classes)))
            self.body = nn.Sequential(*body)

        def forward(self, cat: Any, num: Any) -> Any:
            x = torch.cat([e(cat[:, i]) for i, e in enumerate(self.emb)] + [num], dim=1)
            return self.body(x)

    return UserMLP()


def train_user_mlp(data: UserData, params: dict[str, Any], epochs: int, seed: int, metric: str,
                   report: Any = None) -> tuple[Any, float]:
    """Train the user's MLP for ``epochs`` with ``params``; ``report(epoch, val)`` after each epoch (it may raise to
    stop); return the model and its last validation metric."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    model = build_mlp(data, [int(u) for u in params["layers"]], float(params["dropout"]), int(params["emb_dim"]))
    opt = getattr(torch.optim, params["optimizer"])(model.parameters(), lr=float(params["lr"]))
    tr = data.parts["train"]
    cat, num, y = torch.from_numpy(tr["cat"]), torch.from_numpy(tr["num"]), torch.from_numpy(tr["y"])
    gen = torch.Generator().manual_seed(seed)
    batch = int(params["batch_size"])
    val = math.nan
    for epoch in range(epochs):
        model.train()
        for ix in torch.randperm(len(y), generator=gen).split(batch):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(cat[ix], num[ix]), y[ix])
            loss.backward()
            opt.step()
        val = score(model, data, "val", metric)
        if report is not None:
            report(epoch, val)
    return model, val


def score(model: Any, data: UserData, part: str, metric: str) -> float:
    import torch

    p = data.parts[part]
    model.eval()
    with torch.no_grad():
        cat, num = torch.from_numpy(p["cat"]), torch.from_numpy(p["num"])
        proba = torch.cat([torch.softmax(model(c, n), 1) for c, n in zip(cat.split(65536), num.split(65536))])
    return _metric(metric, p["y"], proba.numpy())


# -- the contenders -------------------------------------------------------------------------------------------------
def run_sparsearch(study: str, seed: int, overrides: dict[str, Any], budget: float, work: Path) -> dict:
    import shutil

    from sparsearch import run_study

    folder = work / f"sparsearch-s{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    result = run_study(study, results_dir=folder, progress=False, seed=seed, timeout=budget, n_trials=100_000,
                       **overrides)
    doc = result.to_json()
    return {"test_metrics": doc.get("test_metrics"), "n_trials": len(result.trials),
            "best_val": None if result.best_trial is None else result.best_trial.values[0],
            "startup": doc.get("info", {}).get("startup")}  # the start-up trials TPE drew before it guided


def run_optuna(data: UserData, seed: int, budget: float, epochs: int, metric: str, maximize: bool) -> dict:
    import optuna

    def objective(trial: Any) -> float:
        n_layers = trial.suggest_int("n_layers", 1, 3)
        params = {"layers": [trial.suggest_int(f"n_units_l{i}", 4, 128) for i in range(n_layers)],
                  "dropout": trial.suggest_float("dropout", 0.2, 0.5),
                  "optimizer": trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"]),
                  "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True), "emb_dim": 8, "batch_size": 512}
        trial.set_user_attr("params", params)

        def report(epoch: int, val: float) -> None:
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return train_user_mlp(data, params, epochs, seed=trial.number, metric=metric, report=report)[1]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if maximize else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner())
    study.optimize(objective, timeout=budget, n_jobs=2)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return {"n_trials": len(study.trials), "best": None}
    best = study.best_trial
    return {"n_trials": len(study.trials), "n_complete": len(done),
            "best": {"params": best.user_attrs["params"], "val": best.value, "epochs": epochs}}


def run_tune(data: UserData, seed: int, budget: float, epochs: int, metric: str, maximize: bool, work: Path) -> dict:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from sparsearch._ray import connect_ray

    def trainable(config: dict[str, Any], data: UserData) -> None:
        train_user_mlp(data, _tune_params(config), epochs, seed=seed, metric=metric,
                       report=lambda epoch, val: tune.report({"val": val}))

    # the tutorial's space: two hidden layers of 2**i units, log-uniform learning rate, a batch size choice
    space = {"l1": tune.choice([2 ** i for i in range(2, 9)]), "l2": tune.choice([2 ** i for i in range(2, 9)]),
             "lr": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([256, 512, 1024, 2048])}
    mode = "max" if maximize else "min"
    # tune.with_parameters puts the data in Ray's object store once: room for it
    connect_ray("local", num_cpus=2, object_store_memory=300_000_000 + int(1.5 * data.nbytes()))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(trainable, data=data), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(metric="val", mode=mode, num_samples=-1, time_budget_s=budget,
                                    scheduler=ASHAScheduler(max_t=epochs, grace_period=1, reduction_factor=2)),
        run_config=tune.RunConfig(storage_path=str((work / f"tune-s{seed}").resolve()), verbose=0),
    )
    grid = tuner.fit()
    n = len(grid)  # every trial Tune created, including those still pending when the budget ended
    reported = sum(1 for r in grid if r.metrics and "val" in r.metrics)  # trained at least one epoch
    try:
        best = grid.get_best_result("val", mode, scope="last")
    except RuntimeError:
        best = None
    ray.shutdown()
    if best is None or not best.metrics or "val" not in best.metrics:
        return {"n_trials": n, "n_reported": reported, "best": None}
    params = _tune_params(best.config)
    return {"n_trials": n, "n_reported": reported, "best": {"params": params, "val": best.metrics["val"],
                                    "epochs": int(best.metrics["training_iteration"])}}


def _tune_params(config: dict[str, Any]) -> dict[str, Any]:
    """The tutorial's configuration as the user MLP's parameters (Adam, dropout 0.2, embeddings of 8)."""
    return {"layers": [int(config["l1"]), int(config["l2"])], "lr": float(config["lr"]),
            "batch_size": int(config["batch_size"]), "dropout": 0.2, "optimizer": "Adam", "emb_dim": 8}


def run_one(contender: str, seed: int, study: str, overrides: dict[str, Any], budget: float, work: Path,
            config: dict[str, Any]) -> dict:
    from sparsearch import load_study

    spec = load_study(study, **{**overrides, "seed": seed})
    objective = spec.study.objectives[0]
    metric = objective.removeprefix("val_")
    if len(spec.study.objectives) != 1 or not objective.startswith("val_") or metric not in METRICS:
        raise SystemExit(f"bench_userlevel compares single-objective studies on val_{{{','.join(METRICS)}}}, got "
                         f"{spec.study.objectives}")
    maximize = spec.study.resolved_directions()[0] == "maximize"
    started = time.time()
    out: dict[str, Any] = {"config": config, "contender": contender, "seed": seed, "study": study,
                           "budget_s": budget, "objective": objective, "maximize": maximize}
    if contender == "sparsearch":
        ran = run_sparsearch(study, seed, overrides, budget, work)
        tests = ran.pop("test_metrics") or {}
        test = next((v for k, v in tests.items() if k.removeprefix("test_") == metric), None)
        out.update(ran, wall_s=time.time() - started, test=test, test_metrics=tests)
        return out
    rows = split_rows(spec, work)
    df = raw_table(spec)
    features = [c for c in (spec.data.features or df.columns) if c != spec.data.target
                and c not in spec.data.exclude]
    data = UserData(df, spec.data.target, features, rows)
    del df
    epochs = spec.train.epochs
    prepared_s = time.time() - started
    t0 = time.time()
    if contender == "optuna":
        ran = run_optuna(data, seed, budget, epochs, metric, maximize)
    else:
        ran = run_tune(data, seed, budget, epochs, metric, maximize, work)
    search_s = time.time() - t0
    test, refit_s = None, 0.0
    if ran["best"] is not None:  # refit the best configuration on the training rows, scored once on test
        t1 = time.time()
        model, _ = train_user_mlp(data, ran["best"]["params"], ran["best"]["epochs"], seed=seed, metric=metric)
        test = score(model, data, "test", metric)
        refit_s = time.time() - t1
    out.update(ran, prepare_s=prepared_s, search_s=search_s, refit_s=refit_s, wall_s=time.time() - started,
               test=test)
    return out


# -- summary --------------------------------------------------------------------------------------------------------
def summary(study: str, records: Path, results: Path, round_name: str) -> dict[str, Any]:
    from sparsearch.search.compare import verdict

    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(records.glob("*-s*.json")):
        doc = json.loads(path.read_text())
        runs.setdefault(doc["contender"], {})[int(doc["seed"])] = doc
    if "sparsearch" not in runs:
        raise SystemExit(f"no finished sparsearch runs under {records}")
    maximize = next(iter(runs["sparsearch"].values()))["maximize"]
    table = {c: {str(s): d["test"] for s, d in sorted(by_seed.items())} for c, by_seed in runs.items()}
    verdicts = {}
    for peer, by_seed in runs.items():
        if peer == "sparsearch":
            continue
        seeds = sorted(set(by_seed) & set(runs["sparsearch"]))
        missing = [f"{c}-s{s}" for s in seeds for c in ("sparsearch", peer)
                   if runs[c][s]["test"] is None or not math.isfinite(runs[c][s]["test"])]
        if missing or not seeds:
            verdicts[peer] = {"outcome": "not judged", "text": "no final test metric: " + ", ".join(missing)
                              if missing else "no common seeds"}
            continue
        verdicts[peer] = verdict([runs["sparsearch"][s]["test"] for s in seeds], [by_seed[s]["test"] for s in seeds],
                                 maximize=maximize, names=("sparsearch", peer), paired=True)
        verdicts[peer]["seeds"] = seeds
    doc = {"study": study, "round": round_name, "final_test_per_seed": table, "verdicts": verdicts,
           "runs": {c: {str(s): {k: d.get(k) for k in ("test", "wall_s", "n_trials", "refit_s", "best")}
                        for s, d in sorted(by_seed.items())} for c, by_seed in runs.items()}}
    _results.save(doc, key=f"userlevel-{study}-{round_name}", results=results)
    for c, row in table.items():
        print(f"{c}: " + ", ".join(f"s{s} {v:.4f}" if v is not None else f"s{s} none" for s, v in row.items()))
    for peer, v in verdicts.items():
        print(f"sparsearch vs {peer}: {v['text']}")
    return doc


# -- driver ---------------------------------------------------------------------------------------------------------
def _internal(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog=f"{Path(__file__).name} _run", description="internal: one run")
    ap.add_argument("--contender", choices=CONTENDERS, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--budget-s", type=float, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--record", type=Path, required=True)
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--config", default="{}")
    args = ap.parse_args(argv[1:])
    import bench_userlevel  # by module name, so that Ray's workers unpickle its classes by reference

    doc = bench_userlevel.run_one(args.contender, args.seed, args.study, json.loads(args.overrides), args.budget_s, args.work,
                  json.loads(args.config))
    _results.save_run(args.record, doc, indent=1)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_run":
        return _internal(argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", nargs="?", help="a bundled tabular study (not with --smoke)")
    ap.add_argument("--budget-s", type=float, default=None, help="wall-clock budget of every run")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="study override (TOML value)")
    ap.add_argument("--round", type=bench_peers._round_name, default=bench_peers.ROUND,
                    help=f"the round's name (default {bench_peers.ROUND})")
    ap.add_argument("--all-rows", action="store_true", help="every row of the table (e.g. flights)")
    _results.add_data_root(ap)
    ap.add_argument("--smoke", action="store_true",
                    help=f"{SMOKE['study']}, {SMOKE['seeds']} seed, {SMOKE['budget_s']:.0f} s, "
                         f"{' '.join(SMOKE['set'])}: checks the script (under bench/out)")
    ap.add_argument("--summary", action="store_true", help="only summarise the round's finished runs")
    args = ap.parse_args(argv)
    if args.smoke:
        if args.study not in (None, SMOKE["study"]):
            ap.error(f"--smoke runs {SMOKE['study']}; got study {args.study!r}")
        args.study, args.seeds, args.set = SMOKE["study"], SMOKE["seeds"], [*SMOKE["set"], *args.set]
        args.budget_s = args.budget_s or SMOKE["budget_s"]
    if args.study is None:
        ap.error("a study is required (or --smoke)")
    contenders = args.contenders.split(",")
    unknown = sorted(set(contenders) - set(CONTENDERS))
    if unknown:
        ap.error(f"--contenders: unknown {', '.join(unknown)}; choose from {', '.join(CONTENDERS)}")
    if args.seeds < 1:
        ap.error(f"--seeds: at least 1, got {args.seeds}")
    from sparsearch import load_study

    if load_study(args.study).data.is_image:
        ap.error(f"{args.study} is an image study; the user-level comparison is for tabular studies "
                 "(clicklog_large, flights, quickstart, ...)")
    user = bench_peers._parse_set(args.set)
    if args.smoke or user:  # not the bundled study: never under bench/results
        records, results = OUT / "shrunk" / "userlevel" / args.study / args.round, OUT / "shrunk"
    else:
        records, results = _results.RESULTS / "userlevel" / args.study / args.round, _results.RESULTS
    work = OUT / args.study / args.round
    if args.summary:
        summary(args.study, records, results, args.round)
        return 0
    if args.budget_s is None or args.budget_s <= 0:
        ap.error("--budget-s: a positive number of seconds is required to run (only --summary goes without)")
    overrides = {**bench_peers.data_overrides(args.study, all_rows=args.all_rows, data_root=args.data_root),
                 **user}
    env = bench_peers._env(PYTHONPATH=os.pathsep.join(p for p in (str(_results.BENCH),
                                                                   os.environ.get("PYTHONPATH")) if p))
    bench_peers.run_seeds("userlevel", __file__, args, contenders, work, records, overrides,
                          lambda seed: bench_peers.fingerprint(load_study(args.study, **{**overrides, "seed": seed})),
                          env, extra_config=lambda c: {"startup": ESTIMATE} if c == "sparsearch" else {"user_inputs": USER_INPUTS})
    if not any(records.glob("sparsearch-s*.json")):  # a peer run may finish first: its record is saved, no verdict yet
        print(f"[userlevel] no sparsearch run under {records} yet: the summary waits for one (--summary)")
        return 0
    summary(args.study, records, results, args.round)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
