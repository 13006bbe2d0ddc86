r"""Benchmarks of issue #13: `sparsearch rank` end to end against the library call, pairs, mrmr/3mr speed.

    python bench/bench_interactions.py                  # 200,000 x 100, a temp folder, 3 rounds
    python bench/bench_interactions.py --rows 2000000 --out bench/out/interactions --peer outrank-default
    python bench/bench_interactions.py --rows 2000000 --out bench/out/interactions --rounds 1 \
        --peer outrank-pairs --peer-limit-s 3000        # the lead's runs

``--peer outrank-default`` times OutRank's default run, ``outrank`` adds ``--interaction_order 2``,
``outrank-pairs`` times only our pairs and OutRank's ``--interaction_order 2``, the peer stopped after
``--peer-limit-s`` seconds if given: then its time is reported as "not finished".

1. Writes a parquet of ROWS x COLS categorical columns (cardinalities 2 to 100,000 on a log grid, half
   uniform and half Zipf-skewed, 5% missing in every third column, a quarter strings, a few informative, one XOR pair) and times,
   in one run, in the same process order each round (interleaved, ``--rounds`` rounds, median):
   - a new process that only imports sparsearch.features and pyarrow (the CLI's fixed start-up cost),
   - `rank_features(path, target)` (the library call, in this process),
   - `sparsearch rank path --target y` as a new user runs it (a subprocess: start-up, default report, printing),
   - `sparsearch rank ... --interactions 20` (all pairs of every column),
   - `rank_features(..., method="mrmr")` and `"3mr"`.
   With ``outrank`` (the peer, installed as in bench_ranker.py: ``bench/.venv-outrank``), the same rows as CSV
   also go through OutRank's default run and OutRank with ``--interaction_order 2``, in the same rounds; the top
   of OutRank's target rows and ours (``pairs``) are saved beside the timings.
2. Prints one JSON document: seconds per variant, the ratios to the library call, and the peers' top rows; the
   same goes to bench/results/interactions-<rows>x<cols>[-<peer>].json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

PEER_MODES = ("outrank", "outrank-default", "outrank-pairs")


def make_data(n_rows: int, n_cols: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cards = np.unique(np.geomspace(2, 100_000, n_cols).astype(np.int64))
    cols: dict[str, np.ndarray | pl.Series] = {}
    logit = np.full(n_rows, -2.0)
    for i in range(n_cols - 2):
        c = int(cards[i % len(cards)])
        if i % 2:
            p = 1.0 / np.arange(1, c + 1) ** 1.1
            x = rng.choice(c, n_rows, p=p / p.sum())
        else:
            x = rng.integers(0, c, n_rows)
        if i % 10 == 3:  # informative: a random effect per value
            logit += rng.normal(0, 0.5, c)[x]
        s = pl.Series(f"c{i}_card{c}", x)
        if i % 4 == 1:
            s = s.cast(pl.String)  # a quarter of the columns are strings
        if i % 3 == 2:
            frame = pl.DataFrame({"v": s, "m": rng.random(n_rows) < 0.05})
            s = frame.select(pl.when(pl.col("m")).then(None).otherwise(pl.col("v"))).to_series().rename(s.name)
        cols[s.name] = s
    a, b = rng.integers(0, 4, n_rows), rng.integers(0, 2, n_rows)
    cols["xor_a"], cols["xor_b"] = a, b
    logit += 1.0 * np.where((a % 2) ^ b, 1.0, -1.0)
    cols["y"] = (rng.random(n_rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    return pl.DataFrame(cols)


def cli(*args: str) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sparsearch.cli", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=_results.positive_int, default=200_000, help="rows of the generated data (default 200000)")
    ap.add_argument("--cols", type=_results.positive_int, default=100, help="columns of the generated data (default 100)")
    ap.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="folder for the data and the peer's files, reused when the data is there (default: a "
                         "new temp folder)")
    ap.add_argument("--rounds", type=_results.positive_int, default=3, help="interleaved rounds; medians (default 3)")
    ap.add_argument("--peer", choices=PEER_MODES, default=None, help="time OutRank too (bench/.venv-outrank)")
    ap.add_argument("--peer-limit-s", type=float, default=None, metavar="S",
                    help="stop the peer after S seconds and report it as not finished")
    args = ap.parse_args(argv)
    n_rows, n_cols = args.rows, args.cols
    out = args.out if args.out is not None else Path(tempfile.mkdtemp())
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_{n_rows}x{n_cols}.parquet"
    if not path.exists():
        make_data(n_rows, n_cols).write_parquet(path, row_group_size=100_000)
    from sparsearch.features import rank_features

    def lib(method: str = "adjusted-mi") -> float:
        t = time.perf_counter()
        rank_features(path, "y", method=method)
        return time.perf_counter() - t

    def imports() -> float:  # the fixed cost of a new process: interpreter, sparsearch.features, pyarrow
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sparsearch.features, pyarrow.parquet"], check=True)
        return time.perf_counter() - t

    variants = {
        "new process: imports only": imports,
        "library rank_features": lambda: lib(),
        "cli rank (default)": lambda: cli("rank", str(path), "--target", "y"),
        "cli rank --interactions 20": lambda: cli("rank", str(path), "--target", "y", "--interactions", "20"),
        "library mrmr": lambda: lib("mrmr"),
        "library 3mr": lambda: lib("3mr"),
    }
    peers: dict[str, object] = {}
    peer_mode = args.peer or ""
    limit = args.peer_limit_s
    unfinished: dict[str, float] = {}
    if peer_mode:
        exe = Path(__file__).resolve().parent / ".venv-outrank" / "bin" / "outrank"
        csv_dir = out / f"csv_{n_rows}x{n_cols}"
        if not csv_dir.exists():
            csv_dir.mkdir()
            pl.read_parquet(path).write_csv(csv_dir / "data.csv")

        def outrank(order: int) -> float:
            folder = (out / f"outrank_order{order}").resolve()
            cmd = [str(exe), "--task", "ranking", "--data_path", str(csv_dir.resolve()), "--data_source", "csv-raw",
                   "--heuristic", "MI-numba-randomized", "--target_ranking_only", "True", "--label_column", "y",
                   "--output_folder", str(folder), "--num_threads", "2", "--interaction_order", str(order)]
            t = time.perf_counter()
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=limit, cwd=folder.parent)  # OutRank writes a checkpoint TSV into its working folder
            except subprocess.TimeoutExpired:
                unfinished[f"outrank order {order}"] = time.perf_counter() - t
                return float("nan")
            secs = time.perf_counter() - t
            table = pl.read_csv(folder / "pairwise_ranks.tsv", separator="\t")
            rows = table.filter(pl.col("FeatureA").str.starts_with("y")).sort("Score", descending=True)
            peers[f"outrank order {order} top10"] = rows.head(10).rows()
            return secs

        if peer_mode != "outrank-pairs":
            variants["outrank default"] = lambda: outrank(1)
        else:
            variants.clear()
        if peer_mode in ("outrank", "outrank-pairs"):
            variants["outrank --interaction_order 2"] = lambda: outrank(2)

        def ours_pairs() -> float:
            t = time.perf_counter()
            doc = subprocess.run([sys.executable, "-m", "sparsearch.cli", "rank", str(path), "--target", "y",
                                  "--interactions", "10", "--json"], check=True, capture_output=True, text=True)
            secs = time.perf_counter() - t
            peers["ours pairs top10"] = [(r["feature_a"], r["feature_b"], r["score"])
                                         for r in json.loads(doc.stdout)["pairs"]]
            return secs

        variants["cli rank --interactions 10 --json"] = ours_pairs
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            times[name].append(fn())
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med.get("library rank_features", float("nan"))
    doc = {"rows": n_rows, "cols": n_cols,
           "statistic": "median over interleaved rounds", "seconds": med, "runs": times,
           "ratio_to_library": {k: v / base for k, v in med.items()}, "peers": peers,
           "peer_limit_s": limit, "not_finished_after_s": unfinished}
    if "outrank default" in med:
        doc["outrank_default_over_cli_rank_default"] = med["outrank default"] / med["cli rank (default)"]
    print(json.dumps(doc, indent=2, default=str))
    _results.save(doc, key=f"interactions-{n_rows}x{n_cols}{'-' + peer_mode if peer_mode else ''}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
