"""The one results writer of bench/: every script saves what it measured through this module.

Two kinds of files, both small JSON (timings and summaries, never data; over :data:`MAX_BYTES` is refused):

- :func:`save`: a command's result, ``bench/results/<name>.json`` (committed behind the BENCHMARKS.md figures),
  with the command, when it finished and the machine (cores, load average, versions) before the numbers. The name
  is the command line's slug unless the script names it (``key``), as the committed files were named.
- :func:`save_run` / :func:`load_run`: one run of a multi-run benchmark, written as soon as that run finishes, so an
  interrupted benchmark resumes: a later call finds the run done (and made with the same settings) and skips it.

Where data lives is :func:`data_root` (``--data-root``, else ``$SPARSEARCH_DATA_ROOT``, else ``../shared/data``
beside the repository); no script hard-codes a machine path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
"""Committed results: the figures of BENCHMARKS.md."""
OUT = BENCH / "out"
"""Scratch (not committed): study folders, generated data, smoke runs."""
MAX_BYTES = 200_000  # small files only: raw timings and summaries, never data
DATA_ROOT_ENV = "SPARSEARCH_DATA_ROOT"
DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
"""``../shared/data`` relative to the repository root (where the bundled flights study looks too)."""

_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)[^@\s]+@")


def command() -> str:
    """The command line as a user would type it from the repository root (passwords in URLs as ***)."""
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(ROOT)
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


def _jsonable(value: Any) -> Any:
    """numpy scalars as numbers; anything else JSON cannot write (paths, dates) as its text."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _text(doc: Any, what: str, indent: int = 1) -> str:
    text = json.dumps(doc, indent=indent, default=_jsonable)
    if len(text) > MAX_BYTES:
        raise ValueError(f"{what} is {len(text)} bytes; bench/results/ keeps files under {MAX_BYTES}")
    return text


def _write(path: Path, text: str) -> None:
    """Write whole or not at all: a run interrupted while writing must not look done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save(doc: dict[str, Any], *, key: str | None = None, results: Path | None = None) -> Path:
    """Write ``doc`` with the command and machine to ``<results>/<slug of key or command>.json``; return the path.

    ``results`` defaults to bench/results (committed); smoke runs pass a folder under bench/out. Keys of ``doc``
    win over the header's (a document that names its own ``command`` keeps it).
    """
    cmd = command()
    out = {"command": cmd, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": machine(), **doc}
    path = (RESULTS if results is None else Path(results)) / f"{_slug(key or cmd)}.json"
    _write(path, _text(out, f"result of {cmd!r}"))
    try:
        shown: Path | str = path.relative_to(ROOT)
    except ValueError:
        shown = path
    print(f"# raw results: {shown}", file=sys.stderr)
    return path


def save_run(path: Path, doc: dict[str, Any], *, indent: int | None = 1) -> Path:
    """Save one finished run's record at ``path`` (as soon as it finishes: the benchmark resumes from here)."""
    _write(Path(path), _text(doc, f"run record {Path(path).name}", indent=indent))
    return Path(path)


def load_run(path: Path, config: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The saved record of a finished run, or ``None`` when it must run (again).

    With ``config``, a record saved with other settings (its ``"config"`` differs) does not count as done.
    """
    path = Path(path)
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if config is None:
        return doc
    same = json.loads(json.dumps(doc.get("config"), default=str)) == json.loads(json.dumps(config, default=str))
    if not same:
        print(f"[bench] {path.name}: saved with other settings, running it again", file=sys.stderr, flush=True)
        return None
    return doc


def run_seeds(tag: str, runs: list[tuple[int, dict[str, Any], Path]], run_one: Callable[[int], dict[str, Any]], *,
              local_ray: bool = True, num_cpus: int | None = None, force: bool = False) -> list[dict[str, Any]]:
    """The rows of a per-seed benchmark, by seed: for each ``(seed, config, path)``, the row saved at ``path`` with
    that ``config`` (:func:`load_run`), else ``run_one(seed)``'s, saved as ``{"config": ..., "row": ...}`` as soon
    as it finishes. ``force`` runs every seed again, saved records or not.

    With ``local_ray``, the seeds still to run share one local Ray, started only when one is left to run (sized by
    ``num_cpus``; ``None``: Ray's own size, one trial per core) and shut down after, unless this process had a Ray
    already."""
    rows: list[dict[str, Any]] = []
    todo = []
    for seed, config, path in runs:
        done = None if force else load_run(path, config)
        if done is None:
            todo.append((seed, config, path))
        else:
            print(f"[{tag}] seed {seed}: done already ({path.name}), skipped", file=sys.stderr, flush=True)
            rows.append(done["row"])
    if todo:
        started = False
        if local_ray:
            from sparsearch._ray import connect_ray

            started = connect_ray("local", num_cpus=num_cpus)
        try:
            for seed, config, path in todo:
                row = run_one(seed)
                save_run(path, {"config": config, "row": row})
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        finally:
            if started:
                import ray

                ray.shutdown()
    return sorted(rows, key=lambda r: r["seed"])


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer of at least 1 (counts of rows, seeds, trials, epochs)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed(text: str) -> int:
    """An ``argparse`` type: a seed, an integer of 0 or more."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed must be 0 or more, got {value}")
    return value


def data_root(given: str | Path | None = None) -> Path:
    """Where the shared data sets are: ``given`` (``--data-root``), else ``$SPARSEARCH_DATA_ROOT``, else
    ``../shared/data`` beside the repository."""
    return Path(given or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT).expanduser()


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """The ``--data-root`` option, documented the same way in every script."""
    parser.add_argument("--data-root", default=None, metavar="DIR",
                        help=f"folder of the shared data sets (default: ${DATA_ROOT_ENV}, else ../shared/data "
                             "beside the repository)")


def data_file(root: Path, relative: str) -> Path:
    """``root / relative``, or a one-line exit 2 naming the file and how to point elsewhere."""
    path = Path(root) / relative
    if not path.exists():
        print(f"{Path(sys.argv[0]).name}: data file {path} does not exist; give the folder that holds "
              f"{relative} with --data-root DIR or ${DATA_ROOT_ENV}", file=sys.stderr)
        raise SystemExit(2)
    return path
