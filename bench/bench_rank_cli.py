"""`sparsearch rank FILE --target y` as a user runs it (a new process each time), code trees compared interleaved.

    python bench/bench_rank_cli.py DATA [NAME=REPO_DIR ...] [--rounds N] [--label L] [-- EXTRA CLI ARGS]
    python bench/bench_rank_cli.py FILE --rounds 3 base=<copy of a commit> head=.    # BENCHMARKS.md's form

DATA is a parquet/CSV path (target column ``y`` unless ``-- --target NAME``), or a row count: then bench_interactions.py's data
of that many rows x 100 columns is written to a temp folder. Each variant is a source tree with this repository's
layout (``sparsearch/``, ``features/``, ``search/``, ``spaces/``, ``studies/``); without any, the tree this script
lives in is timed alone. The variants run in the same order each round (A B A B ...), each under GNU time
(``time -v``: ``--time-binary``, default the ``time`` found on PATH), and the medians of wall seconds, user and
system CPU seconds, minor page faults and maximum resident memory are printed as one JSON document (with every
run), also saved as bench/results/rank-cli-<label>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

ROOT = _results.ROOT
PACKAGES = {"features": "features", "search": "search", "spaces": "spaces", "studies": "studies"}
FIELDS = {"user_s": "User time (seconds)", "sys_s": "System time (seconds)",
          "minor_faults": "Minor (reclaiming a frame) page faults", "max_rss_kb": "Maximum resident set size (kbytes)"}


def package_dir(repo: Path, into: Path) -> Path:
    """A folder holding ``sparsearch/`` laid out as installed (subpackages linked from ``repo``), for PYTHONPATH."""
    pkg = into / "sparsearch"
    pkg.mkdir(parents=True)
    for item in (repo / "sparsearch").iterdir():
        (pkg / item.name).symlink_to(item)
    for sub, folder in PACKAGES.items():
        (pkg / sub).symlink_to(repo / folder)
    return into


def run_once(pythonpath: Path, args: list[str], time_binary: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    t = time.perf_counter()
    proc = subprocess.run([time_binary, "-v", sys.executable, "-m", "sparsearch.cli", *args], env=env,
                          cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"sparsearch {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    out = {"wall_s": wall}
    for key, label in FIELDS.items():
        m = re.search(re.escape(label) + r":\s*([\d.]+)", proc.stderr)
        out[key] = float(m.group(1)) if m else float("nan")
    return out


def _variant(text: str) -> tuple[str, Path]:
    name, sep, repo = text.partition("=")
    if not sep or not name or not repo:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=REPO_DIR, e.g. base=/tmp/base or head=.")
    if not Path(repo, "sparsearch").is_dir():
        raise argparse.ArgumentTypeError(f"{text!r}: {repo} holds no sparsearch/ (a checkout of this repository)")
    return name, Path(repo).resolve()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:  # what follows goes to `sparsearch rank` unchanged
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="a parquet/CSV file, or a row count (generated data of that many rows x 100)")
    ap.add_argument("variants", nargs="*", type=_variant, metavar="NAME=REPO_DIR",
                    help="source trees to compare (default: this one, as HEAD)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians (default 3)")
    ap.add_argument("--label", default=None,
                    help="names the result bench/results/rank-cli-<label>.json (default: the rows, or the file name)")
    ap.add_argument("--time-binary", default=shutil.which("time"), metavar="PATH",
                    help="GNU time, run as `time -v` (default: the `time` on PATH)")
    args = ap.parse_intermixed_args(argv)  # options may stand between DATA and the variants
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    if not args.time_binary:
        ap.error("no GNU time on PATH (apt-get install time); or give --time-binary PATH")
    data = args.data
    if not data.isdigit() and not Path(data).exists():
        ap.error(f"DATA {data!r} is neither a row count nor an existing file")
    label = args.label or (f"{data}x100" if data.isdigit() else Path(data).stem)
    specs = args.variants or [("HEAD", ROOT)]
    tmp = Path(tempfile.mkdtemp(prefix="bench_rank_cli_"))
    if data.isdigit():
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_interactions import make_data

        path = tmp / f"bench_{data}x100.parquet"
        make_data(int(data), 100).write_parquet(path, row_group_size=100_000)
        data = str(path)
    variants = {name: package_dir(repo, tmp / name) for name, repo in specs}
    loads = {name: subprocess.run([sys.executable, "-c", "import sparsearch.features as f; print(f.__file__)"],
                                  env={**os.environ, "PYTHONPATH": str(pp)}, cwd=tempfile.gettempdir(), check=True,
                                  capture_output=True, text=True).stdout.strip() for name, pp in variants.items()}
    cli = ["rank", data, *([] if "--target" in extra else ["--target", "y"]), *extra]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, pp in variants.items():
            runs[name].append(run_once(pp, cli, args.time_binary))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    doc = {"cli": " ".join(["sparsearch", *cli]), "loads": loads,
           "statistic": "median over interleaved rounds", "median": med, "runs": runs}
    print(json.dumps(doc, indent=1))
    _results.save(doc, key=f"rank-cli-{label}")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
