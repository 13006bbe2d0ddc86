"""Every verdict of BENCHMARKS.md recomputed under the rule of issue 30 from the committed raw JSON in bench/results/.

    python bench/restate_verdicts.py            # a Markdown table: comparison, old verdict, new verdict, changed?
    python bench/restate_verdicts.py --json     # the same as JSON (old and new verdict dicts)

Nothing is re-run: each comparison reads the per-seed test metrics its benchmark saved, and decides them with
:func:`sparsearch.search.compare.verdict` (paired by seed where both arms share the split and the seed, unpaired
otherwise; exact permutation p-values, bootstrap 95% intervals). The pairing of each file is the design its
benchmark ran:

- ``studies-samplers-*``: ``comparison_run`` gives TPE and random the same study seed, hence the same split
  (checked: the saved split digests match seed by seed) -> paired;
- ``studies-prefilter-*``: the three arms of a seed run the study with that seed (split digests match) -> paired;
- ``peers-*``: one prepared split for every contender; ours, random and Tune seed their sampler with the run's
  seed -> paired; plain Optuna's workers draw with ``10 * seed + k`` -> unpaired (``bench_peers.final_verdict``);
- ``crosses-40000x5seeds``: each seed runs the same generated data and split with and without crosses -> paired.

The old verdict is the one saved in the same file (the rule of issue 11: bootstrap interval and one-sided
Mann-Whitney, unpaired); the crosses file saved none (BENCHMARKS.md gave a sign test, p = 1/32).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.exists():
        raise SystemExit(f"restate_verdicts: {path} is missing (the committed raw file this verdict is read from)")
    return json.loads(path.read_text())


def _studies(name: str, arms: list[tuple[str, str]], old: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Comparisons of a bench_studies summary: ``arms`` = [(arm, baseline)], ``old`` = arm -> the saved verdict."""
    from bench_studies import by_seed

    from sparsearch.search.compare import decide

    doc = _load(name)
    maximize = True  # every studies-* file here is decided on test AUC or test accuracy
    out = []
    for arm, base in arms:
        v = decide(by_seed(doc["runs"][arm]), by_seed(doc["runs"][base]), names=(arm, base), maximize=maximize,
                   metric=doc["decided_on"])
        out.append({"file": name, "a": arm, "b": base, "metric": doc["decided_on"], "old": old[arm], "new": v})
    return out


def comparisons() -> list[dict[str, Any]]:
    """Every decided comparison with raw per-seed values in bench/results/, old and new verdict."""
    from bench_peers import final_verdict

    from sparsearch.search.compare import verdict

    out = []
    for study in ("clicklog_large", "flights", "fashion_cnn"):
        name = f"studies-samplers-{study}-single.json"
        doc = _load(name)
        out += _studies(name, [("tpe", "random")], {"tpe": doc["verdicts"][0]})
    for study, arms in (("flights", ["top3", "top9"]), ("clicklog_large", ["top10", "top30"])):
        name = f"studies-prefilter-{study}.json"
        doc = _load(name)
        out += _studies(name, [(a, "all") for a in arms], {a: doc["claims"][a]["verdict"] for a in arms})
    for study in ("clicklog_large", "fashion_cnn"):
        name = f"peers-{study}.json"
        doc = _load(name)
        finals = {c: {r["seed"]: (r["final"][2] if r["final"] else None) for r in runs}
                  for c, runs in doc["runs"].items()}
        for peer in ("random", "optuna", "tune"):
            out.append({"file": name, "a": "ours", "b": peer, "metric": "final test metric",
                        "old": doc["final_verdicts"][peer], "new": final_verdict(finals, peer, maximize=True)})
    doc = _load("crosses-40000x5seeds.json")
    runs = sorted(doc["runs"], key=lambda r: r["seed"])
    new = verdict([r["test_auc_crosses_2"] for r in runs], [r["test_auc_crosses_0"] for r in runs], maximize=True,
                  names=("2 crosses", "no crosses"), paired=True)
    old = {"outcome": "wins", "text": f"mean gain +{doc['mean_test_auc_gain']:.3f}, 95% t interval "
                                      f"{doc['ci95'][0]:+.3f} to {doc['ci95'][1]:+.3f}, one-sided sign test p = 1/32"}
    out.append({"file": "crosses-40000x5seeds.json", "a": "2 crosses", "b": "no crosses", "metric": "test_auc",
                "old": old, "new": new})
    return out


def _short(v: dict[str, Any]) -> str:
    if "improvement" not in v:
        return f"{v['outcome']} ({v['text']})"
    lo, hi = v["ci95"]
    how = f", {v['test']}" if "test" in v else ", Mann-Whitney (normal approximation), unpaired"
    return f"**{v['outcome']}**: {v['improvement']:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}), one-sided p = " \
           f"{v['p_value']:.3g}{how}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of a Markdown table")
    args = ap.parse_args(argv)
    rows = comparisons()
    for r in rows:
        r["changed"] = r["old"]["outcome"] != r["new"]["outcome"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| raw file | comparison | was (issue 11 rule) | now (issue 30 rule) | changed |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['file']}` | {r['a']} vs {r['b']} | {_short(r['old'])} | {_short(r['new'])} | "
              f"{'**yes**' if r['changed'] else 'no'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
