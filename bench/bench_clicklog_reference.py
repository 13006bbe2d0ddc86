"""How close to the Bayes ceiling can a model *learn* clicklog_large from its 1.2M training rows? A well-specified
reference for issue 29's ceiling gap.

    python bench/bench_clicklog_reference.py                         # seeds 0 1 2 3 4, beside fullsize-clicklog-seed=*
    python bench/bench_clicklog_reference.py --tag portfolio2        # beside fullsize-clicklog-portfolio2-seed=*
    python bench/bench_clicklog_reference.py --smoke                 # 20,000 rows, seed 0: checks the script

The generator's click logit is additive: a random effect per level of each informative categorical ``inf_<i>``
(Zipf-distributed levels, up to 5,000 of them) plus a linear effect of ``num_0`` (``features/_datasets.py``).
A logistic regression on one-hot ``inf_*`` columns and ``num_0`` is therefore the *true* model family; what keeps it
below the ceiling (the AUC of the true probability on the test rows) is only the estimation error of the per-level
effects from the training rows. Its test gap is the part of a network's gap that no architecture or search removes.

Per seed s, on exactly the split of ``run_study("clicklog_large", seed=s)`` (the split digest is checked against
the study's record when it exists): one-hot levels, the ``num_0`` mean and its missing indicator are fitted on the
training rows only (a level first seen in validation or test rows is all zeros); ``LogisticRegression`` (L2, lbfgs)
for each C of a small grid is fitted on the training rows, C is chosen on validation AUC, and the chosen model is
scored once on the test rows. Each seed's record goes to ``bench/results/clicklog-reference/`` as it finishes (a
done seed is skipped); the summary (per seed: ceiling, reference and ours, test AUC and gaps) to
``bench/results/clicklog-reference[-TAG].json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

C_GRID = (0.03, 0.3, 3.0)
"""Inverse L2 strengths tried per seed (chosen on validation AUC)."""


def _features(df: Any, tr: Any) -> Any:
    """One-hot ``inf_*`` (levels of the training rows), ``num_0`` (training mean for a missing value) and its missing
    indicator, as one sparse matrix over every row."""
    import numpy as np
    import scipy.sparse as sp
    from sklearn.preprocessing import OneHotEncoder

    inf = [c for c in df.columns if c.startswith("inf_")]
    cats = df.select(inf).to_numpy()
    onehot = OneHotEncoder(handle_unknown="ignore", dtype=np.float32).fit(cats[tr])
    num = df["num_0"].to_numpy().astype(np.float64)
    missing = np.isnan(num)
    fill = float(np.nanmean(num[tr]))
    dense = np.column_stack([np.where(missing, fill, num), missing.astype(np.float64)])
    return sp.hstack([onehot.transform(cats), sp.csr_matrix(dense)], format="csr"), len(inf), onehot


def run_seed(seed: int, smoke: bool) -> dict[str, Any]:
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from sparsearch import load_study
    from sparsearch.features import DATASETS
    from sparsearch.search.data import split_digest
    from sparsearch.spaces import split_indices
    from sparsearch.spaces.metrics import binary_auc

    overrides: dict[str, Any] = {"seed": seed}
    if smoke:
        overrides.update({"data.params.n_rows": 20_000, "data.params.n_noise": 4})
    spec = load_study("clicklog_large", **overrides)
    df, p = DATASETS["click_log"](**spec.data.params, return_probability=True)
    y = df["click"].to_numpy().astype(np.int64)
    tr, va, te = split_indices(y, spec.train.val_fraction, spec.train.test_fraction, spec.study.seed or 0)
    digest = split_digest((tr, va, te))
    t0 = time.perf_counter()
    x, n_inf, onehot = _features(df, tr)
    del df
    prepare_s = time.perf_counter() - t0
    fits = []
    best: tuple[float, Any] | None = None
    for c in C_GRID:
        t0 = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=300).fit(x[tr], y[tr])
        val_auc = float(binary_auc(y[va], model.predict_proba(x[va])[:, 1]))
        fits.append({"C": c, "val_auc": val_auc, "fit_s": time.perf_counter() - t0, "n_iter": int(model.n_iter_[0])})
        if best is None or val_auc > best[0]:
            best = (val_auc, model)
    assert best is not None
    chosen = best[1]
    test_auc = float(binary_auc(y[te], chosen.predict_proba(x[te])[:, 1]))
    ceiling = float(binary_auc(y[te], p[te]))
    row: dict[str, Any] = {
        "seed": seed, "split_digest": digest, "n_train": int(tr.size), "n_val": int(va.size), "n_test": int(te.size),
        "n_informative": n_inf, "n_levels": int(sum(len(c) for c in onehot.categories_)), "prepare_s": prepare_s,
        "fits": fits, "chosen_C": float(chosen.C), "reference_test_auc": test_auc, "ceiling_test_auc": ceiling,
        "reference_gap": ceiling - test_auc}
    return row


def _with_ours(row: dict[str, Any], ours: Path) -> dict[str, Any]:
    """The reference's row with the study's test AUC and gap on the same split (the study's record at ``ours``), or
    the row alone when that study has not run; the split digests must match."""
    out = {k: v for k, v in row.items() if k != "config" and not k.startswith("ours_")}
    doc = _results.load_run(ours)
    if doc is None:
        return out
    if doc["split"]["digest"] != row["split_digest"]:
        raise SystemExit(f"seed {row['seed']}: the split differs from {ours.name}: refusing to compare")
    auc = doc["test_metrics"]["test_auc"]
    return {**out, "ours_test_auc": auc, "ours_gap": row["ceiling_test_auc"] - auc, "ours_record": ours.name}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=_results.seed, nargs="+", default=[0, 1, 2, 3, 4], metavar="S")
    ap.add_argument("--tag", default="", help="compare with fullsize-clicklog-TAG-seed=S.json (bench_fullsize --tag)")
    ap.add_argument("--smoke", action="store_true", help="20,000 rows; results under bench/out, never bench/results")
    args = ap.parse_args(argv)
    results = _results.OUT / "smoke" if args.smoke else _results.RESULTS
    name = "clicklog" + (f"-{args.tag}" if args.tag else "")
    rows = []
    for seed in args.seeds:
        record = results / "clicklog-reference" / f"seed{seed}.json"
        config = {"seed": seed, "C_grid": list(C_GRID), "smoke": args.smoke}
        row = _results.load_run(record, config)
        if row is None:
            print(f"[reference] seed {seed} ...", file=sys.stderr, flush=True)
            row = run_seed(seed, args.smoke)
            _results.save_run(record, {"config": config, **row})
        else:
            print(f"[reference] seed {seed}: done already ({record})", file=sys.stderr, flush=True)
        # the study's figures are read at summary time (never stored with the reference): each tag gets its own
        rows.append(_with_ours(row, results / f"fullsize-{name}-seed={seed}.json"))
        print(json.dumps(rows[-1]), flush=True)
    summary: dict[str, Any] = {"seeds": args.seeds, "C_grid": list(C_GRID), "runs": rows,
                               "reference_gap_mean": statistics.fmean(r["reference_gap"] for r in rows)}
    if all("ours_gap" in r for r in rows):
        summary["ours_gap_mean"] = statistics.fmean(r["ours_gap"] for r in rows)
        summary["ours_minus_reference_mean"] = statistics.fmean(r["reference_gap"] - r["ours_gap"] for r in rows)
    _results.save(summary, key=f"{name.replace('clicklog', 'clicklog-reference', 1)}", results=results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
