"""`sparsearch rank FILE --target y` as a user runs it (a new process each time), code trees compared interleaved.

Usage: python bench/bench_rank_cli.py DATA [ROUNDS] [NAME=REPO_DIR ...] [-- EXTRA CLI ARGS]

DATA is a parquet/CSV path (target column ``y`` unless ``-- --target NAME``), or a row count: then bench_interactions.py's data
of that many rows x 100 columns is written to a temp folder. Each variant is a source tree with this repository's
layout (``sparsearch/``, ``features/``, ``search/``, ``spaces/``, ``studies/``); without any, the tree this script
lives in is timed alone. The variants run in the same order each round (A B A B ...), each under
``/usr/bin/time -v``, and the medians of wall seconds, user and system CPU seconds, minor page faults and maximum
resident memory are printed as one JSON document (with every run).
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
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


def run_once(pythonpath: Path, args: list[str]) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    t = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "sparsearch.cli", *args], env=env,
                          cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"sparsearch {' '.join(args)} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    out = {"wall_s": wall}
    for key, label in FIELDS.items():
        m = re.search(re.escape(label) + r":\s*([\d.]+)", proc.stderr)
        out[key] = float(m.group(1)) if m else float("nan")
    return out


def main() -> None:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    if not argv:
        raise SystemExit(__doc__)
    data = argv[0]
    rounds = int(argv[1]) if len(argv) > 1 and "=" not in argv[1] else 3
    specs = [a for a in argv[1:] if "=" in a] or [f"HEAD={ROOT}"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_rank_cli_"))
    if data.isdigit():
        sys.path.insert(0, str(ROOT / "bench"))
        from bench_interactions import make_data

        path = tmp / f"bench_{data}x100.parquet"
        make_data(int(data), 100).write_parquet(path, row_group_size=100_000)
        data = str(path)
    variants = {}
    for spec in specs:
        name, repo = spec.split("=", 1)
        variants[name] = package_dir(Path(repo).resolve(), tmp / name)
    loads = {name: subprocess.run([sys.executable, "-c", "import sparsearch.features as f; print(f.__file__)"],
                                  env={**os.environ, "PYTHONPATH": str(pp)}, cwd=tempfile.gettempdir(), check=True,
                                  capture_output=True, text=True).stdout.strip() for name, pp in variants.items()}
    args = ["rank", data, *([] if "--target" in extra else ["--target", "y"]), *extra]
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for _ in range(rounds):
        for name, pp in variants.items():
            runs[name].append(run_once(pp, args))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(json.dumps({"command": " ".join(["python", *sys.argv]), "cli": " ".join(["sparsearch", *args]),
                      "loads": loads,
                      "statistic": "median over interleaved rounds", "median": med, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
