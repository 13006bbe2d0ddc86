"""Benchmark of the features ranker: speed and quality against OutRank and scikit-learn, in one run.

Stages (each writes bench/out/ranker_<stage>_<rows>.json for ``report``; the whole command's raw results also go
to bench/results/<command>.json, committed behind the BENCHMARKS.md figures):

    python bench/bench_ranker.py gen        # 2,000,000 x 100 categorical click log -> bench/out/click<rows>.parquet (+ csv)
    python bench/bench_ranker.py compare    # ours, scikit-learn and OutRank end to end: same runs, interleaved
    python bench/bench_ranker.py ours       # memory-bandwidth ratio, in-memory time, every method's quality
    python bench/bench_ranker.py stream     # 20,000,000 x 50 parquet ranked in a subprocess: peak RSS
    python bench/bench_ranker.py flights    # <data root>/nycflights13: where ID-like tailnum/flight land
    python bench/bench_ranker.py hard       # weak signal: every chance correction, and ours vs OutRank (compare)
    python bench/bench_ranker.py report

Options (before or after the stages): ``--rows N`` (default 2,000,000; smoke runs use e.g. 50000), ``--runs R``
(default 3), ``--threads T`` (cores given to every contender; default: all of this machine's).

``compare`` gives every contender the same conditions: each run is a fresh process (start-up, imports, reading
the file and ranking all timed, as OutRank's command line must be), every contender gets ``--runs`` runs, the
runs are interleaved round by round with the order rotated each round, and every contender is summarised by the
same statistic (median wall time, with min and max). Threads: polars, numba and BLAS/OpenMP are capped at
``--threads`` in every process, scikit-learn gets ``n_jobs=threads`` and OutRank ``--num_threads threads``.

OutRank is a peer for measurement only; ``bash bench/outrank_env.sh`` builds its pinned environment in
bench/.venv-outrank.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
OUTRANK = HERE / ".venv-outrank" / "bin" / "outrank"
ROWS = 2_000_000
GEN = dict(n_informative=6, n_redundant=2, n_noise=92, n_numeric=0, max_cardinality=100_000, positive_rate=0.1, seed=0)
ARGS = argparse.Namespace(rows=ROWS, runs=3, threads=os.cpu_count() or 1, data_root=None)
RAW: dict = {}


def _save(stage: str, doc: dict) -> None:
    _results.save_run(OUT / f"ranker_{stage}_{ARGS.rows}.json", doc, indent=2)  # what ``report`` reads
    RAW[stage] = doc
    print(json.dumps(doc, indent=2, default=float))


def _parquet(hard: bool = False) -> Path:
    return OUT / f"click{ARGS.rows}{'_hard' if hard else ''}.parquet"


def _csv_dir(hard: bool = False) -> Path:
    return OUT / f"csv{ARGS.rows}{'_hard' if hard else ''}"


def _quality(features: list[str], cards: dict[str, int] | None = None) -> dict:
    """Top-6 precision on the 6 informative features, best noise rank, rank-vs-cardinality of noise."""
    from scipy.stats import spearmanr

    rank = {f: i + 1 for i, f in enumerate(features)}
    top6 = features[:6]
    noise = [f for f in features if f.startswith("noise_")]
    card = [int(f.rsplit("_c", 1)[1]) for f in noise]
    rho, p = spearmanr([rank[f] for f in noise], card)
    red = {f: (rank[f], rank[f.split("_of_")[1]]) for f in features if f.startswith("red_")}
    return {
        "top6_informative": sum(f.startswith("inf_") for f in top6),
        "top6": top6,
        "best_noise_rank": min(rank[f] for f in noise),
        "noise_rank_vs_cardinality_spearman": float(rho),
        "noise_rank_vs_cardinality_p": float(p),
        "redundant_rank_vs_original": red,
        "informative_ranks": {f: rank[f] for f in features if f.startswith("inf_")},
    }


def stage_gen() -> None:
    from sparsearch.features import make_click_log

    t = time.perf_counter()
    df = make_click_log(ARGS.rows, **GEN)
    OUT.mkdir(parents=True, exist_ok=True)
    df.write_parquet(_parquet())
    _csv_dir().mkdir(exist_ok=True)
    df.write_csv(_csv_dir() / "data.csv")
    _save("gen", {"rows": df.height, "columns": df.width, "seconds": time.perf_counter() - t, "params": GEN,
                  "click_rate": float(df["click"].mean())})


# -- the contenders of ``compare``: each run is one fresh process ----------------------------------------------------
_OURS_CHILD = """
import json, sys, time
t0 = time.perf_counter()
from sparsearch.features import rank_features
t1 = time.perf_counter()
r = rank_features(sys.argv[1], "click")
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_and_rank_s": t2 - t1, "features": r["feature"].to_list()}))
"""

_SKLEARN_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np, polars as pl
from sklearn.feature_selection import mutual_info_classif
t1 = time.perf_counter()
df = pl.read_parquet(sys.argv[1])
names = df.drop("click").columns
mi = mutual_info_classif(df.drop("click").to_numpy(), df["click"].to_numpy(), discrete_features=True,
                         n_jobs=int(sys.argv[2]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "read_and_rank_s": t2 - t1,
                  "features": [names[i] for i in np.argsort(-mi, kind="stable")]}))
"""


def _thread_env() -> dict[str, str]:
    """The same thread caps for every contender's process."""
    n = str(ARGS.threads)
    return {**os.environ, "POLARS_MAX_THREADS": n, "NUMBA_NUM_THREADS": n, "OMP_NUM_THREADS": n,
            "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n}  # Ray's settings: set_ray_env() in main


def _outrank_cmd(csv_dir: Path, out: Path) -> list[str]:
    return [str(OUTRANK), "--task", "ranking", "--data_path", str(csv_dir), "--data_source", "csv-raw",
            "--heuristic", "MI-numba-randomized", "--target_ranking_only", "True", "--label_column", "click",
            "--output_folder", str(out), "--num_threads", str(ARGS.threads)]


def _run_contender(name: str, hard: bool, run: int) -> dict:
    """One timed run of contender ``name`` in a fresh process: wall time, the child's own timings, its ranking."""
    if name == "ours":
        cmd = [sys.executable, "-c", _OURS_CHILD, str(_parquet(hard))]
    elif name == "ours_cli":  # `sparsearch rank` as a new user runs it: start-up, default report, printed table
        cmd = [sys.executable, "-m", "sparsearch", "rank", str(_parquet(hard)), "--target", "click"]
    elif name == "sklearn":
        cmd = [sys.executable, "-c", _SKLEARN_CHILD, str(_parquet(hard)), str(ARGS.threads)]
    else:
        out = OUT / f"outrank_out{ARGS.rows}{'_hard' if hard else ''}_run{run}"
        shutil.rmtree(out, ignore_errors=True)
        cmd = _outrank_cmd(_csv_dir(hard), out)
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_thread_env())
    wall = time.perf_counter() - t
    doc: dict = {"wall_s": wall, "returncode": proc.returncode}
    if proc.returncode != 0:
        doc["stderr_tail"] = proc.stderr[-1500:]
        return doc
    if name == "ours_cli":
        doc["stdout_lines"] = len(proc.stdout.splitlines())
        return doc
    if name == "outrank":
        parsed = _parse_outrank(out)
        shutil.rmtree(out, ignore_errors=True)
        doc.update(parsed)
        return doc
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    doc.update({k: child[k] for k in ("import_s", "read_and_rank_s")}, **_quality(child["features"]))
    return doc


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def _compare(contenders: list[str], hard: bool = False) -> dict:
    """Every contender ``--runs`` times, interleaved round by round (order rotated); medians, spreads, ratios."""
    if "outrank" in contenders and not OUTRANK.exists():
        print("# OutRank is not installed: bash bench/outrank_env.sh", file=sys.stderr)
        contenders = [c for c in contenders if c != "outrank"]
    runs: dict[str, list[dict]] = {c: [] for c in contenders}
    order_log = []
    for r in range(ARGS.runs):
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        order_log.append(order)
        for name in order:
            runs[name].append(_run_contender(name, hard, r))
            print(f"round {r + 1}/{ARGS.runs} {name}: {runs[name][-1]['wall_s']:.2f} s", file=sys.stderr, flush=True)
    doc: dict = {"rows": ARGS.rows, "runs_per_contender": ARGS.runs, "threads": ARGS.threads,
                 "statistic": "median wall time of a fresh process per run (min, max over runs)",
                 "order_per_round": order_log, "contenders": {}}
    for name, rs in runs.items():
        ok = [x for x in rs if x["returncode"] == 0]
        entry: dict = {"failed_runs": len(rs) - len(ok), "raw": rs}
        if ok:
            entry["wall_s"] = _summary([x["wall_s"] for x in ok])
            if "read_and_rank_s" in ok[0]:
                entry["read_and_rank_s"] = _summary([x["read_and_rank_s"] for x in ok])
            last = ok[-1]
            entry["quality"] = {k: last[k] for k in ("top6_informative", "best_noise_rank",
                                                     "noise_rank_vs_cardinality_spearman", "informative_ranks")
                                if k in last}
            entry["top6_informative_per_run"] = [x.get("top6_informative") for x in ok]
        doc["contenders"][name] = entry
    ours = doc["contenders"].get("ours", {})
    for name, entry in doc["contenders"].items():
        if name == "ours" or "wall_s" not in entry or "wall_s" not in ours:
            continue
        paired = [p["wall_s"] / o["wall_s"] for p, o in zip(entry["raw"], ours["raw"])
                  if p["returncode"] == 0 and o["returncode"] == 0]
        entry["ratio_of_medians_vs_ours"] = entry["wall_s"]["median"] / ours["wall_s"]["median"]
        entry["paired_ratio_vs_ours"] = _summary(paired)
    cli = doc["contenders"].get("ours_cli", {})
    for name, entry in doc["contenders"].items():
        if name in ("ours", "ours_cli") or "wall_s" not in entry or "wall_s" not in cli:
            continue
        paired = [p["wall_s"] / o["wall_s"] for p, o in zip(entry["raw"], cli["raw"])
                  if p["returncode"] == 0 and o["returncode"] == 0]
        entry["ratio_of_medians_vs_ours_cli"] = entry["wall_s"]["median"] / cli["wall_s"]["median"]
        entry["paired_ratio_vs_ours_cli"] = _summary(paired)
    return doc


def stage_compare() -> None:
    _save("compare", _compare(["ours", "ours_cli", "sklearn", "outrank"]))


def stage_ours() -> None:
    """In one process: the memory-bandwidth limit, the in-memory time, every method's quality (one run each)."""
    from sparsearch.features import available_methods, rank_features

    path = _parquet()
    doc: dict = {"runs": "one run per method, in process (quality; times are indicative)"}
    codes = pl.read_parquet(path).drop("click").to_numpy().astype(np.int32, copy=False)
    codes = np.asfortranarray(codes)
    best = min(_timed(np.add.reduce, codes, axis=None, dtype=np.int64) for _ in range(5))
    doc["bandwidth_read_s"] = best
    doc["bandwidth_GBps"] = codes.nbytes / best / 1e9
    codes = None
    t = time.perf_counter()
    pl.read_parquet(path)
    doc["polars_read_parquet_s"] = time.perf_counter() - t
    df = pl.read_parquet(path)
    t = time.perf_counter()
    ranking = rank_features(df, "click")
    doc["in_memory_s"] = time.perf_counter() - t
    doc["default"] = _quality(ranking["feature"].to_list())
    doc["methods"] = {}
    for m in available_methods():
        t = time.perf_counter()
        r = rank_features(df, "click", method=m)
        doc["methods"][m] = {"seconds": time.perf_counter() - t, **_quality(r["feature"].to_list())}
        print(m, doc["methods"][m]["top6_informative"], doc["methods"][m]["best_noise_rank"], flush=True)
    _save("ours", doc)


def _timed(fn, *args, **kwargs) -> float:
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


def _parse_outrank(out: Path) -> dict:
    """OutRank writes (FeatureA, FeatureB, Score) rows; the target's rows rank the features."""
    table = out / "pairwise_ranks.tsv"
    if not table.exists():
        return {"error": f"{table} not written"}
    ranking = pl.read_csv(table, separator="\t")
    ranking = ranking.with_columns(pl.col("FeatureA").str.split("-(").list.first().alias("a"),
                                   pl.col("FeatureB").str.split("-(").list.first().alias("b"))
    rows = ranking.filter((pl.col("a") == "click") & (pl.col("b") != "click")).sort("Score", descending=True,
                                                                                     maintain_order=True)
    return _quality(rows["b"].to_list())


def stage_hard() -> None:
    """Weak signal (effect_scale 0.3): where using every row matters. Every chance correction (one run each, in
    process, from parquet) and ours vs OutRank end to end under ``compare``'s conditions."""
    from sparsearch.features import make_click_log, rank_features

    params = {**GEN, "effect_scale": 0.3}
    if not _parquet(hard=True).exists():
        df = make_click_log(ARGS.rows, **params)
        df.write_parquet(_parquet(hard=True))
        _csv_dir(hard=True).mkdir(parents=True, exist_ok=True)
        df.write_csv(_csv_dir(hard=True) / "data.csv")
    doc: dict = {"params": params, "methods": {}}
    for m in ["adjusted-mi", "adjusted-mi-asymptotic", "adjusted-mi-permutation", "adjusted-mi-shift", "g-test", "mi"]:
        t = time.perf_counter()
        r = rank_features(_parquet(hard=True), "click", method=m)
        doc["methods"][m] = {"seconds": time.perf_counter() - t, **_quality(r["feature"].to_list())}
        print(m, doc["methods"][m]["top6_informative"], doc["methods"][m]["best_noise_rank"], flush=True)
    doc["compare"] = _compare(["ours", "outrank"], hard=True)
    _save("hard", doc)


_STREAM_CHILD = """
import resource, sys, time, json
from sparsearch.features import rank_features
t = time.perf_counter()
r = rank_features(sys.argv[1], "click", batch_size=1_000_000)
secs = time.perf_counter() - t
# VmHWM is this process's own peak RSS (ru_maxrss survives exec and would report the parent's peak)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"seconds": secs, "peak_rss_MB": int(hwm) / 1024, "top6": r["feature"].head(6).to_list()}))
"""


def stage_stream() -> None:
    import pyarrow.parquet as pq

    from sparsearch.features import make_click_log

    path = OUT / "click20m.parquet"
    if not path.exists():
        writer = None
        for i in range(10):
            part = make_click_log(2_000_000, n_informative=6, n_redundant=2, n_noise=42, n_numeric=0,
                                  max_cardinality=100_000, seed=100 + i).to_arrow()
            writer = writer or pq.ParquetWriter(path, part.schema)
            writer.write_table(part, row_group_size=500_000)
        writer.close()
    proc = subprocess.run([sys.executable, "-c", _STREAM_CHILD, str(path)], capture_output=True, text=True)
    doc = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr[-2000:]}
    doc["rows"] = pq.ParquetFile(path).metadata.num_rows
    doc["columns"] = pq.ParquetFile(path).metadata.num_columns
    doc["file_MB"] = path.stat().st_size / 1e6
    _save("stream", doc)


def stage_flights() -> None:
    from sparsearch.features import rank_features

    path = _results.data_file(_results.data_root(ARGS.data_root), "nycflights13/flights.parquet")
    df = pl.read_parquet(path)
    df = df.filter(pl.col("arr_delay").is_not_null()).with_columns((pl.col("arr_delay") > 15).cast(pl.Int8).alias("late"))
    feats = ["year", "month", "day", "hour", "minute", "carrier", "flight", "tailnum", "origin", "dest", "distance"]
    doc: dict = {"rows": df.height, "target": "arr_delay > 15", "features": feats}
    for m in ["mi", "adjusted-mi", "g-test"]:
        r = rank_features(df.select([*feats, "late"]), "late", method=m)
        doc[m] = {row["feature"]: {"rank": row["rank"], "cardinality": row["cardinality"], "mi": row["mi"],
                                   "chance_mi": row["chance_mi"], "score": row["score"]}
                  for row in r.iter_rows(named=True)}
    _save("flights", doc)


def _spread(w: dict, digits: int = 2) -> str:
    return f"{w['median']:.{digits}f} ({w['min']:.{digits}f}-{w['max']:.{digits}f})"


def _compare_rows(cmp: dict, label: dict[str, str]) -> list[str]:
    ours = cmp["contenders"].get("ours", {})
    lines = []
    for name, entry in cmp["contenders"].items():
        if "wall_s" not in entry:
            lines.append(f"| {label[name]} | failed in {entry['failed_runs']} of {cmp['runs_per_contender']} runs "
                         "| - | - | - | - |")
            continue
        q = entry["quality"]
        if name == "ours":
            ratio = "1"
        else:
            pr = entry["paired_ratio_vs_ours"]
            ratio = f"{entry['ratio_of_medians_vs_ours']:.1f}x slower (per round {pr['min']:.1f}-{pr['max']:.1f}x)"
        spearman = q.get("noise_rank_vs_cardinality_spearman", float("nan"))
        lines.append(f"| {label[name]} | {_spread(entry['wall_s'])} | {ratio} | {q.get('top6_informative', '-')}/6 | "
                     f"{q.get('best_noise_rank', '-')} | {spearman:+.2f} |")
    if "read_and_rank_s" in ours:
        lines.append("")
        lines.append(f"Ours without process start-up and imports (read and rank only): "
                     f"{_spread(ours['read_and_rank_s'])} s.")
    return lines


def stage_report() -> None:
    """Print the markdown section for BENCHMARKS.md from the stage results."""

    def load(stage):
        return _results.load_run(OUT / f"ranker_{stage}_{ARGS.rows}.json")

    cmp, ours, stream, flights, hard = (load(s) for s in ["compare", "ours", "stream", "flights", "hard"])
    rows = f"{ARGS.rows:,}"
    label = {"ours": "sparsearch `adjusted-mi` (default), parquet", "sklearn":
             f"scikit-learn `mutual_info_classif(discrete_features=True)`, `n_jobs={ARGS.threads}`, parquet",
             "outrank": f"OutRank 0.97.5 `MI-numba-randomized`, defaults (every 10th row), {ARGS.threads} threads, CSV"}
    lines = []
    if cmp:
        lines += [
            f"{cmp['runs_per_contender']} runs of each contender, interleaved (order rotated each round), each run a "
            f"fresh process (start-up, imports, read, rank), {cmp['threads']} threads for every contender; median "
            "wall time (min-max):",
            "",
            f"| ranker ({rows} rows x 100 categorical, cardinality 2..100,000) | wall time (s), median (min-max) | "
            "ratio of medians vs ours | top-6 informative | best noise rank | noise rank vs cardinality (Spearman) |",
            "|---|---|---|---|---|---|",
            *_compare_rows(cmp, label),
        ]
    if ours:
        lines += [
            "",
            f"One read of the int32 codes already in memory (`np.add.reduce`, {ours['bandwidth_GBps']:.1f} GB/s): "
            f"{ours['bandwidth_read_s']:.3f} s. In memory (frame already loaded) the default ranks in "
            f"{ours['in_memory_s']:.2f} s; polars alone reads the parquet file in {ours['polars_read_parquet_s']:.2f} s.",
            "",
            f"Every method on the same {rows} rows (in memory, one run each):",
            "",
            "| method | time (s) | top-6 informative | best noise rank | noise rank vs cardinality (Spearman) | "
            "redundant copy rank / its original's |",
            "|---|---|---|---|---|---|",
        ]
        for m, v in ours["methods"].items():
            red = "; ".join(f"{k}: {a}/{b}" for k, (a, b) in v["redundant_rank_vs_original"].items())
            lines.append(f"| `{m}` | {v['seconds']:.2f} | {v['top6_informative']}/6 | {v['best_noise_rank']} | "
                         f"{v['noise_rank_vs_cardinality_spearman']:+.2f} | {red} |")
    if hard:
        lines += ["", "Weak signal (`effect_scale=0.3`, same shape), from parquet, one run each in process:", "",
                  "| ranker | time (s) | top-6 informative | best noise rank | informative ranks |", "|---|---|---|---|---|"]
        for m, v in hard["methods"].items():
            lines.append(f"| `{m}` | {v['seconds']:.2f} | {v['top6_informative']}/6 | {v['best_noise_rank']} | "
                         f"{sorted(v['informative_ranks'].values())} |")
        lines += ["", "Weak signal, ours vs OutRank under the conditions of the main table:", "",
                  "| ranker | wall time (s), median (min-max) | ratio of medians vs ours | top-6 informative | "
                  "best noise rank | noise rank vs cardinality (Spearman) |", "|---|---|---|---|---|---|",
                  *_compare_rows(hard["compare"], label)]
    if stream:
        lines += ["", f"Streaming: {stream['rows']:,} rows x {stream['columns'] - 1} features parquet "
                  f"({stream['file_MB']:.0f} MB) ranked in {stream['seconds']:.1f} s with peak RSS "
                  f"{stream['peak_rss_MB']:.0f} MiB (whole process, `VmHWM`)."]
    if flights:
        def where(m, f):
            r = flights[m][f]
            return f"{r['rank']} (MI {r['mi']:.4f}, chance {r['chance_mi']:.4f})"
        lines += ["", f"nycflights13 ({flights['rows']:,} flights, target {flights['target']}, "
                  f"{len(flights['features'])} features):", "",
                  "| column | cardinality | rank by `mi` | rank by `adjusted-mi` | rank by `g-test` |", "|---|---|---|---|---|"]
        for f in ["tailnum", "flight"]:
            lines.append(f"| `{f}` | {flights['mi'][f]['cardinality']} | {where('mi', f)} | {where('adjusted-mi', f)} | "
                         f"{where('g-test', f)} |")
    print("\n".join(lines))


STAGES = {"gen": stage_gen, "compare": stage_compare, "ours": stage_ours, "stream": stage_stream,
          "hard": stage_hard, "flights": stage_flights, "report": stage_report}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stages", nargs="*", metavar="STAGE",
                    help=f"stages to run, in order (default: gen compare ours stream flights report); one of {list(STAGES)}")
    ap.add_argument("--rows", type=int, default=ROWS, help="rows of the generated click logs (default 2,000,000)")
    ap.add_argument("--runs", type=int, default=3, help="runs of every contender in compare/hard (default 3)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="cores given to every contender")
    _results.add_data_root(ap)  # flights: nycflights13/flights.parquet under it
    args = ap.parse_args()
    unknown = [s for s in args.stages if s not in STAGES]
    if unknown:
        ap.error(f"unknown stage(s) {unknown}; choose from {list(STAGES)}")
    if args.rows < 1000 or args.runs < 1 or args.threads < 1:
        ap.error("--rows must be >= 1000, --runs and --threads >= 1")
    ARGS.rows, ARGS.runs, ARGS.threads, ARGS.data_root = args.rows, args.runs, args.threads, args.data_root
    from sparsearch._ray import set_ray_env

    set_ray_env()  # the package's Ray settings, inherited by every contender's process
    for name in args.stages or ["gen", "compare", "ours", "stream", "flights", "report"]:
        t0 = time.perf_counter()
        STAGES[name]()
        print(f"# stage {name}: {time.perf_counter() - t0:.1f} s, peak RSS "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB", flush=True)
    if RAW:
        _results.save({"rows": ARGS.rows, "runs": ARGS.runs, "threads": ARGS.threads, "stages": RAW})


if __name__ == "__main__":
    main()
