"""Full-size studies (issue 11, item 3), each run as a new user runs it, measured in full on this machine.

    python bench/bench_fullsize.py clicklog   # clicklog_large, 2,000,000 rows; ceiling = AUC of the true p on test rows
    python bench/bench_fullsize.py fashion    # fashion_cnn, 60,000 images, t10k test; + the dense reference
    python bench/bench_fullsize.py flights    # flights, all rows; + HistGradientBoostingClassifier on the same split
    python bench/bench_fullsize.py clicklog --pruner none    # the same study without multi-fidelity
    python bench/bench_fullsize.py clicklog --seeds 0 1 2 3 4   # one study per seed (split and sampler), + summary
    python bench/bench_fullsize.py fashion --seeds 0 1 2 3 4 --no-dense   # the sparse study only, per seed
    python bench/bench_fullsize.py clicklog --seeds 0 1 2 3 4 --tag portfolio2  # again, after a change: own records

Each run is the bundled study through ``run_study`` (a fresh results folder under ``bench/out/fullsize/``), timed end
to end; the figures are the incumbent's metrics on the held-out test rows (evaluated once, by the controller). Each
run's JSON goes to ``bench/results/fullsize-<name>[-<variant>].json`` as soon as it finishes; a done run is skipped.
With ``--seeds``, seed s is the study's ``seed`` (its split of the rows and its sampler; clicklog's generated rows
stay the same), each seed is its own run (``-seed=s``), and ``fullsize-<name>-seeds.json`` summarises them against
the issue-29 targets (clicklog: at most 0.003 below the ceiling; fashion: test accuracy at least 0.90 at 90% or more
realised sparsity). ``--tag NAME`` puts NAME in every label, so that a re-measurement after a change of the code
keeps its own records and leaves the earlier ones as they were.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

OUT = _results.OUT / "fullsize"
RESULTS = _results.RESULTS


ALL_ROWS = 100_000_000
"""``[data] max_rows`` above any data set here: every row (the bundled flights study samples 100,000)."""


def _study(name: str, label: str, **overrides: Any) -> dict[str, Any]:
    from sparsearch import run_study

    folder = OUT / label
    shutil.rmtree(folder, ignore_errors=True)
    t0 = time.perf_counter()
    result = run_study(name, results_dir=folder, **overrides)
    wall = time.perf_counter() - t0
    doc = result.to_json()
    best = result.best_trial
    return {"study": name, "label": label, "overrides": {k: str(v) for k, v in overrides.items()}, "wall_s": wall,
            "n_complete": doc["n_complete"], "n_pruned": doc["n_pruned"], "n_failed": doc["n_failed"],
            "best_values": doc["best_values"], "test_metrics": doc["test_metrics"], "split": doc["split"],
            "best_params": doc["best_params"],
            "best_realized_sparsity": best.user_attrs.get("realized_sparsity") if best else None,
            "trials": [{"number": t["number"], "state": t["state"], "values": t["values"],
                        "duration_s": t["duration_s"],
                        "realized_sparsity": t["user_attrs"].get("realized_sparsity"),
                        "params": t["params"]} for t in doc["trials"]]}


def _save(name: str, doc: dict[str, Any]) -> None:
    _results.save(doc, key=f"fullsize-{name}", results=RESULTS)
    print(json.dumps({k: v for k, v in doc.items() if k != "trials"}, default=str))


def clicklog(variant: dict[str, Any], label: str) -> dict[str, Any]:
    doc = _study("clicklog_large", label, **variant)
    # the ceiling: the generator's true click probability, scored on the same test rows
    import numpy as np

    from sparsearch import load_study
    from sparsearch.features import DATASETS
    from sparsearch.search.data import split_digest
    from sparsearch.spaces import split_indices
    from sparsearch.spaces.metrics import binary_auc

    spec = load_study("clicklog_large", **variant)
    df, p = DATASETS["click_log"](**spec.data.params, return_probability=True)
    y = df["click"].to_numpy().astype(np.int64)
    del df
    tr, va, te = split_indices(y, spec.train.val_fraction, spec.train.test_fraction, spec.study.seed or 0)
    if split_digest((tr, va, te)) != doc["split"]["digest"]:
        raise SystemExit("the ceiling would be scored on other test rows than the study's: refusing to compare")
    doc["ceiling_test_auc"] = float(binary_auc(y[te], p[te]))
    doc["gap_to_ceiling"] = doc["ceiling_test_auc"] - (doc["test_metrics"] or {}).get("test_auc", float("nan"))
    doc["targets"] = {"wall_s_max": 1800, "gap_max": 0.01}
    return doc


def fashion(variant: dict[str, Any], dense_reference: bool, label: str) -> dict[str, Any]:
    # the sparse study's half is kept as soon as it ends, so a session that ends during the dense reference loses
    # only that half; a later run picks the saved half up (``--force`` discards it)
    half = _half(label)
    doc = _results.load_run(half)
    if doc is not None:
        print(f"sparse study read from {half} (done earlier); running the dense reference")
    else:
        doc = _study("fashion_cnn", label, **variant)
        _results.save_run(half, doc)
    if not dense_reference:
        return _fashion_targets(doc, half)
    # the dense reference: the same space at sparsity 0, in the same run
    dense = _study("fashion_cnn", label.replace("fashion", "fashion-dense", 1), study_name="fashion_cnn-dense",
                   **{"space.methods": ["dense"], **variant})
    doc["dense_reference"] = {k: dense[k] for k in ("wall_s", "test_metrics", "best_values", "n_complete")}
    return _fashion_targets(doc, half)


def _fashion_targets(doc: dict[str, Any], half: Path) -> dict[str, Any]:
    sparse_ok = [t for t in doc["trials"] if (t["realized_sparsity"] or 0) >= 0.90]
    doc["targets"] = {"test_accuracy_min": 0.90, "realized_sparsity_min": 0.90, "wall_s_max": 3600,
                      "n_trials_at_90pct": len(sparse_ok)}
    half.unlink()
    return doc


def flights(variant: dict[str, Any], label: str) -> dict[str, Any]:
    doc = _study("flights", label, **{"data.max_rows": ALL_ROWS, **variant})
    # the peer a tabular user reaches for first, on the same split (fitted on training rows, scored on test rows)
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier

    from sparsearch import load_study
    from sparsearch.search.data import prepare_data
    from sparsearch.spaces.metrics import binary_auc

    same_rows = {k: v for k, v in variant.items() if k.startswith(("data.", "train.", "seed"))}
    spec = load_study("flights", **{"data.max_rows": ALL_ROWS, **same_rows, "data.prefilter": "none", "data.top_k": 1000})  # every feature column
    prepared = prepare_data(spec, OUT / "flights-hgb")
    if prepared.split["digest"] != doc["split"]["digest"]:
        raise SystemExit("the peer would see another split than the study: refusing to compare")

    def xy(d: Any) -> tuple[Any, Any]:
        return np.hstack([d.categorical.astype(np.float64), d.numeric.astype(np.float64)]), d.y

    xtr, ytr = xy(prepared.train)
    xte, yte = xy(prepared.test)
    t0 = time.perf_counter()
    # native categorical splits where a column has at most 255 codes; higher-cardinality codes go in as ordinals
    cats = np.array([c <= 255 for c in prepared.train.cardinalities] + [False] * prepared.train.numeric.shape[1])
    hgb = HistGradientBoostingClassifier(categorical_features=cats, random_state=0, max_iter=300,
                                         early_stopping=True, validation_fraction=0.1)
    hgb.fit(xtr, ytr)
    doc["hgb"] = {"test_auc": float(binary_auc(yte, hgb.predict_proba(xte)[:, 1])),
                  "fit_s": time.perf_counter() - t0, "n_features": int(xtr.shape[1]),
                  "split_digest": prepared.split["digest"]}
    return doc


def _half(label: str) -> Path:
    """Where a two-part run (fashion: sparse study, then its dense reference) keeps its first part until the second
    one ends."""
    return RESULTS / f"fullsize-{label}.sparse-half.json"


def _suffix(variant: dict[str, Any]) -> str:
    return "".join(f"-{k.split('.')[-1]}={v}" for k, v in sorted(variant.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("name", choices=["clicklog", "fashion", "flights"])
    ap.add_argument("--pruner", default=None, help="override [study] pruner (e.g. none: without multi-fidelity)")
    ap.add_argument("--force", action="store_true", help="re-run even when the JSON exists")
    ap.add_argument("--seeds", type=_results.seed, nargs="+", default=None, metavar="S",
                    help="one study per seed (its split and sampler), then a summary over them")
    ap.add_argument("--no-dense", action="store_true", help="fashion: skip the dense reference")
    ap.add_argument("--tag", type=_tag, default="", help="a name in every label: a re-measurement's own records")
    ap.add_argument("--smoke", action="append", default=[], metavar="KEY=VALUE",
                    help="shrink the study to check the script (results go to bench/out, never bench/results)")
    args = ap.parse_args(argv)
    variant: dict[str, Any] = {"pruner": args.pruner} if args.pruner else {}
    if args.smoke:
        import tomllib

        global RESULTS
        RESULTS = OUT / "smoke"
        variant.update({k: tomllib.loads(f"v = {v}")["v"] for k, _, v in (x.partition("=") for x in args.smoke)})
    if args.no_dense and args.name != "fashion":
        ap.error("--no-dense: only the fashion study has a dense reference")
    name = args.name + (f"-{args.tag}" if args.tag else "")
    if args.seeds is None:
        _one(args.name, name, variant, args.force, not args.no_dense)
        return 0
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds: each seed once, got {args.seeds}")
    labels = [_one(args.name, name, {**variant, "seed": s}, args.force, not args.no_dense) for s in args.seeds]
    _save(f"{name}{_suffix(variant)}-seeds", summarise(args.name, args.seeds, labels))
    return 0


def _tag(text: str) -> str:
    if not text or not all(ch.isalnum() or ch in "-_." for ch in text):
        raise argparse.ArgumentTypeError(f"a tag is letters, digits and - _ ., got {text!r}")
    return text


def _one(study: str, name: str, variant: dict[str, Any], force: bool, dense_reference: bool) -> str:
    """Run one study (skipped when its JSON exists, unless ``force``) and return its label (``name`` and the
    variant)."""
    label = name + _suffix(variant)
    if force:
        _half(label).unlink(missing_ok=True)
    elif _results.load_run(RESULTS / f"fullsize-{label}.json") is not None and not _half(label).exists():
        print(f"done already: {RESULTS / f'fullsize-{label}.json'} (--force to re-run)")
        return label
    if study == "fashion":
        doc = fashion(variant, dense_reference, label)
    else:
        doc = {"clicklog": clicklog, "flights": flights}[study](variant, label)
    _save(label, doc)
    return label


GAP_MAX = 0.003
"""Issue 29's clicklog target: the test AUC at most this far below the Bayes ceiling (the study's own target is
0.01)."""


def summarise(name: str, seeds: list[int], labels: list[str]) -> dict[str, Any]:
    """The per-seed table and the issue-29 target over the seeds' runs (read back from their JSON)."""
    import statistics

    rows = []
    for seed, label in zip(seeds, labels, strict=True):
        doc = _results.load_run(RESULTS / f"fullsize-{label}.json")
        if doc is None:
            raise SystemExit(f"seed {seed}: no record at fullsize-{label}.json")
        row = {"seed": seed, "wall_s": doc["wall_s"], "n_complete": doc["n_complete"], "n_pruned": doc["n_pruned"],
               "n_failed": doc["n_failed"], "val": doc["best_values"], "test": doc["test_metrics"],
               "realized_sparsity": doc["best_realized_sparsity"], "split_digest": doc["split"]["digest"],
               "best_params": doc["best_params"]}
        if name == "clicklog":
            row.update(ceiling=doc["ceiling_test_auc"], gap=doc["gap_to_ceiling"])
        rows.append(row)
    out: dict[str, Any] = {"study": name, "seeds": seeds, "runs": rows}
    if name == "clicklog":
        gaps = [r["gap"] for r in rows]
        out["target"] = {"gap_max": GAP_MAX, "gap_mean": statistics.fmean(gaps), "gap_median": statistics.median(gaps),
                         "gap_worst": max(gaps), "seeds_within": sum(g <= GAP_MAX for g in gaps),
                         "met_on_every_seed": all(g <= GAP_MAX for g in gaps)}
    elif name == "fashion":
        ok = [(r["test"] or {}).get("test_accuracy", 0.0) >= 0.90 and (r["realized_sparsity"] or 0.0) >= 0.90
              for r in rows]
        out["target"] = {"test_accuracy_min": 0.90, "realized_sparsity_min": 0.90, "seeds_within": sum(ok),
                         "met_on_every_seed": all(ok)}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
