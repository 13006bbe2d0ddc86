"""Raw results of a benchmark run, committed under bench/results/ (small JSON files, one per command).

Each file is named after the command that wrote it and holds that command, when and where it ran (cores, load
average, versions), the method (runs, statistic), and the raw numbers behind the BENCHMARKS.md figures.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MAX_BYTES = 200_000  # small files only: raw timings and summaries, never data


_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def command() -> str:
    """The command line as a user would type it from the repository root (passwords in URLs as ***)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        pass
    return _CREDENTIALS.sub(r"\1***@", " ".join(["python", str(script), *sys.argv[1:]]))


def _slug(text: str) -> str:
    text = re.sub(r"^python bench/(bench_)?", "", text).removesuffix(".py")
    text = re.sub(r"\.py\b", "", text)
    return re.sub(r"[^A-Za-z0-9.=_-]+", "_", text).strip("_")[:120]


def machine() -> dict[str, Any]:
    versions = {}
    for dist in ("sparsearch", "numpy", "polars", "scikit-learn", "scipy", "torch", "optuna", "ray", "mlflow"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return {"cpus": os.cpu_count(), "loadavg_at_end": os.getloadavg(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions}


def save(doc: dict[str, Any], *, key: str | None = None) -> Path:
    """Write ``doc`` with the command and machine to bench/results/<command slug>.json; return the path."""
    cmd = command()
    out = {"command": cmd, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine(), **doc}
    text = json.dumps(out, indent=1, default=float)
    if len(text) > MAX_BYTES:
        raise ValueError(f"result of {cmd!r} is {len(text)} bytes; bench/results/ keeps files under {MAX_BYTES}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{_slug(key or cmd)}.json"
    path.write_text(text + "\n")
    print(f"# raw results: {path.relative_to(RESULTS.parent.parent)}", file=sys.stderr)
    return path
