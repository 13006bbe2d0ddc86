"""The ``sparsearch`` command line.

Every subcommand prints human-readable tables, or one JSON document on stdout with ``--json``. Progress goes to
stderr. Bad input of any kind exits with status 2 and one line on stderr; an interrupted run exits with 130.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import tomllib

from sparsearch import __version__
from sparsearch._table import table
from sparsearch.errors import SparsearchError, first_line

PROG = "sparsearch"
HELP_WIDTH = 100


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, width=HELP_WIDTH, max_help_position=32)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout at the end")
    p.add_argument("--debug", action="store_true", help="show full tracebacks for unexpected errors")


def _add_overrides(p: argparse.ArgumentParser) -> None:
    from sparsearch.search.spec.overrides import OVERRIDES  # the table itself: nothing heavy is imported

    g = p.add_argument_group("overrides (any study-file field)")
    for name, o in OVERRIDES.items():
        g.add_argument(o.flag, dest=name, type=o.type, metavar=o.metavar, help=o.help)
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="set any field, value in TOML syntax (e.g. --set train.lr=[1e-3,1e-2]); repeatable")
    p.add_argument("--results", default="sparsearch-results", metavar="DIR",
                   help="results folder: storage, MLflow store, artifacts, caches (default: %(default)s)")
    quiet = p.add_mutually_exclusive_group()
    quiet.add_argument("--quiet", action="store_true", help="no progress lines")
    quiet.add_argument("--verbose", action="store_true", help="log details (Optuna, Ray) to stderr")


def _add_store(p: argparse.ArgumentParser, *, storage: bool = True, tracking: bool = True,
               study_file: bool = False) -> None:
    """Where a command reads a stored study from: the results folder, and the Optuna storage and MLflow store that
    override its defaults (with ``study_file``, a study file's ``[storage]`` / ``[tracking]`` come first)."""
    first = "the study file's, else " if study_file else ""
    p.add_argument("--results", default="sparsearch-results", metavar="DIR", help="results folder")
    if storage:
        p.add_argument("--storage", metavar="URL", help=f"storage URL (default: {first}the results folder's journal)")
    if tracking:
        p.add_argument("--tracking-uri", metavar="URI", help=f"MLflow store (default: {first}the results folder's)")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to keep the README's CLI reference in sync)."""
    parser = _Parser(prog=PROG, formatter_class=_formatter,
                     description="Search compact, accurate sparse neural networks for large sparse tabular data.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("run", help="run or resume a study", formatter_class=_formatter,
                       description="Run a study (a .toml file or a bundled study name such as 'quickstart'). "
                       "Re-running with the same name and storage resumes it. With no STUDY, --data FILE --target "
                       "COL runs the bundled study for your own table ('table').")
    p.add_argument("study", metavar="STUDY", nargs="?", default=None,
                   help="study file (.toml) or bundled study name (default with --data: 'table')")
    _add_overrides(p)
    _add_common(p)

    p = sub.add_parser("rank", help="rank features by cardinality-aware mutual information",
                       formatter_class=_formatter,
                       description="Rank the features of a parquet/CSV/TSV file (or folder, or glob) against a "
                       "target, with a data-quality report.")
    p.add_argument("data", metavar="DATA", help="file, folder or glob (parquet, csv, tsv)")
    p.add_argument("--target", required=True, metavar="COL", help="target column")
    p.add_argument("--method", default="adjusted-mi", metavar="M", help="ranking method (default: %(default)s)")
    p.add_argument("--top", type=int, default=20, metavar="K", help="rows to print (default: %(default)s)")
    p.add_argument("--out", metavar="FILE", help="write the full ranking (.tsv, .csv, .json or .parquet)")
    p.add_argument("--plot", metavar="FILE", help="write a chart of the top features (.png or .html)")
    p.add_argument("--features", metavar="A,B,...", help="rank only these columns")
    p.add_argument("--n-bins", type=int, default=16, metavar="N", help="quantile bins of numeric features")
    p.add_argument("--report", choices=("none", "basic", "full"), default="basic", metavar="R",
                   help="data-quality report: basic (from the ranking's counts, no extra pass), full (adds the "
                   "duplicate checks: one more pass), or none (default: %(default)s)")
    p.add_argument("--no-report", action="store_true", help="skip the data-quality report (= --report none)")
    p.add_argument("--interactions", type=int, default=0, metavar="K",
                   help="also rank pairs of features by chance-corrected interaction information; print the K best")
    p.add_argument("--lowrank-z", type=float, default=None, metavar="Z",
                   help="with --interactions: pairs of two high-cardinality features whose low-rank interaction test "
                   "(a user x item affinity) reaches this z come first; inf turns the test off (default: "
                   "RankOptions.lowrank_z, 6)")
    p.add_argument("--ray-address", metavar="ADDR", help="count row shards on this Ray cluster")
    p.add_argument("--cache", metavar="DIR", help="reuse a ranking stored in DIR for the same data, target and "
                   "options, or store this one there (the cache the search's prefilter uses)")
    _add_common(p)

    p = sub.add_parser("compare", help="compare samplers (e.g. TPE against random search) over seeds",
                       formatter_class=_formatter,
                       description="Run the same study once per sampler and seed at the same budget and write a "
                       "report (best-so-far curves with spread, final values), also logged to MLflow.")
    p.add_argument("study", metavar="STUDY", help="study file (.toml) or bundled study name")
    p.add_argument("--samplers", default="tpe,random", metavar="A,B", help="samplers (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, metavar="N", help="seeds per sampler (default: %(default)s)")
    p.add_argument("--report", metavar="FILE", help="report path (.html; default: RESULTS/reports/...)")
    _add_overrides(p)
    _add_common(p)

    p = sub.add_parser("show", help="list a stored study's trials", formatter_class=_formatter,
                       description="Print the trials of a stored study (read from the same storage as 'run').")
    p.add_argument("study_name", metavar="STUDY_NAME", help="study name")
    _add_store(p, tracking=False)
    p.add_argument("--top", type=int, default=0, metavar="N", help="print only the N best trials")
    _add_common(p)

    p = sub.add_parser("predict", help="predict new rows with a study's best model", formatter_class=_formatter,
                       description="Predict raw rows (same columns as the study's data) with the best model the "
                       "study logged to MLflow: class probabilities, one column per class, or the classes.")
    p.add_argument("study_name", metavar="STUDY_NAME", help="study name")
    p.add_argument("data", metavar="DATA", help="file, folder or glob (parquet, csv, tsv)")
    p.add_argument("--out", required=True, metavar="FILE", help="predictions (.csv, .tsv, .json or .parquet)")
    p.add_argument("--format", default="compact", choices=("dense", "compact", "csr"),
                   help="network form to run: masked dense layers, compacted, or CSR (same predictions; "
                   "default: %(default)s)")
    p.add_argument("--output", default="proba", choices=("proba", "class"),
                   help="class probabilities or the most probable class (default: %(default)s)")
    _add_store(p)
    _add_common(p)

    p = sub.add_parser("export", help="export a study's model to ONNX or TorchScript with a JSON encoder",
                       formatter_class=_formatter,
                       description="Write the compact network of the model a study logged (ONNX or TorchScript, "
                       "returning class probabilities) and its encoder as JSON (encoder.json: how raw columns "
                       "become the network's inputs), so that it runs without Python.")
    p.add_argument("study_name", metavar="STUDY_NAME", help="study name")
    from sparsearch.search.export import EXPORT_FORMATS  # light: the registry of export formats

    p.add_argument("--format", required=True, choices=tuple(EXPORT_FORMATS), help="network format")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if absent)")
    _add_store(p)
    _add_common(p)

    p = sub.add_parser("refit", help="retrain a trial on every training row with Ray Train and Ray Data",
                       formatter_class=_formatter,
                       description="Retrain a study's trial (default: the best, or each Pareto trial) from its "
                       "parameters and seed on the study's training and validation rows (never its test rows), or "
                       "on a larger parquet source, data-parallel with Ray Train; rows stream through Ray Data. "
                       "Logs an MLflow 'refit' run with the packaged model and reports test metrics beside the "
                       "trial's.")
    p.add_argument("study", metavar="STUDY", help="the study file (.toml) or bundled study name the study ran from")
    p.add_argument("--trial", type=int, metavar="N", help="trial number to refit (default: the best trial(s))")
    p.add_argument("--data", metavar="PATH", help="train on this parquet file, folder or glob (the study's columns) "
                   "instead of the study's rows")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="Ray Train workers (default: %(default)s)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="N",
                   help="CPUs of each worker (default: %(default)s)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="N",
                   help="GPUs of each worker; > 0 trains on GPUs with nccl (default: %(default)s, gloo on CPUs)")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (default: RAY_ADDRESS or local)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted refit from its last checkpoint")
    p.add_argument("--register-model", action="store_true",
                   help="register the refitted model as a new version of the model named after the study")
    _add_store(p, study_file=True)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_common(p)

    p = sub.add_parser("ui", help="start the MLflow UI over the results", formatter_class=_formatter,
                       description="Start the MLflow UI on 127.0.0.1 over the results folder's tracking store.")
    _add_store(p, storage=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=5000, help="port (default: %(default)s)")
    p.add_argument("--workers", type=int, metavar="N", help="server processes (default: MLflow's)")
    p.add_argument("--dry-run", action="store_true", help="print the command instead of running it")
    _add_common(p)

    p = sub.add_parser("dashboard", help="start optuna-dashboard over a study's storage", formatter_class=_formatter,
                       description="Start optuna-dashboard on 127.0.0.1 over the storage of 'run' (journal file, "
                       "SQLite or PostgreSQL). Ctrl-C stops it.")
    p.add_argument("study_name", nargs="?", metavar="STUDY", help="study to open (default: list every study)")
    _add_store(p, tracking=False)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port, 0 for any free one (default: %(default)s)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --host (the dashboard has no login and can delete studies)")
    _add_common(p)

    p = sub.add_parser("studies", help="list the bundled studies", formatter_class=_formatter,
                       description="List the study files shipped with sparsearch.")
    _add_common(p)
    return parser


# ----------------------------------------------------------------------------------------------------------------
def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    from sparsearch.errors import SpecError
    from sparsearch.search.spec.overrides import OVERRIDES

    out = {k: getattr(args, k) for k in OVERRIDES if getattr(args, k, None) is not None}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or "." not in key:
            raise SpecError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=2")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word is a string
        out[key.strip()] = value
    return out


_JSON_OUT: list[Any] = []
"""The real stdout while a ``--json`` command runs (everything else printed then goes to stderr)."""


def _emit(args: argparse.Namespace, document: Any, text: str) -> None:
    if args.json:
        out = _JSON_OUT[-1] if _JSON_OUT else sys.stdout
        json.dump(document, out, indent=2, default=str)
        out.write("\n")
        out.flush()
    else:
        print(text)


def _trials_table(doc: dict[str, Any], top: int = 0) -> str:
    objectives = doc.get("objectives") or ["value"]
    trials = doc["trials"]
    if top:
        done = [t for t in trials if t["state"] == "COMPLETE" and t["values"]]
        sign = -1 if (doc.get("directions") or ["maximize"])[0] == "maximize" else 1
        trials = sorted(done, key=lambda t: sign * t["values"][0])[:top]
    # the parameters that differ between the shown trials, most informative first
    names = sorted({k for t in trials for k in t["params"]})
    varying = [k for k in names if len({str(t["params"].get(k)) for t in trials}) > 1]
    param_names = sorted(varying, key=lambda k: (not k.startswith(("sparsity.", "data.")), k))[:8]
    headers = ["#", "state", *objectives, "sparsity", *[p.split(".", 1)[-1] for p in param_names]]
    rows = []
    for t in trials:
        vals = t["values"] or [None] * len(objectives)
        rows.append([t["number"], t["state"], *vals, t["user_attrs"].get("realized_sparsity"),
                     *[t["params"].get(p) for p in param_names]])
    return table(headers, rows)


def _test_lines(doc: dict[str, Any]) -> list[str]:
    """The incumbents' held-out test metrics (what to quote; the validation values selected them)."""
    lines = []
    split = doc.get("split") or {}
    rows = f" on {split['n_test']} held-out test rows" if split.get("n_test") else ""
    for entry in doc.get("test") or []:
        lines.append(f"test of trial #{entry['number']}{rows}: " + ", ".join(
            f"{k}={v:.4g}" for k, v in entry["metrics"].items() if v is not None))
    return lines


def _cmd_run(args: argparse.Namespace) -> int:
    from sparsearch.search.controller import run_study

    result = run_study(args.study, results_dir=args.results, progress=not args.quiet, **_overrides(args))
    doc = result.to_json()
    best = result.best_trial
    lines = [f"study {doc['study_name']}: {doc['n_complete']} complete, {doc['n_pruned']} pruned, "
             f"{doc['n_failed']} failed ({doc['n_trials_run']} run now) in {doc['elapsed_s']:.1f}s"]
    if best is not None:
        lines.append(f"best trial #{best.number}: " + ", ".join(
            f"{o}={v:.4g}" for o, v in zip(result.objectives, best.values)))
    lines += _test_lines(doc)
    lines += ["", "best trials:", _trials_table(doc, top=5), "",
              f"storage:  {doc['storage']}", f"tracking: {doc['tracking_uri']} (parent run "
              f"{doc['mlflow_parent_run_id']})", f"browse:   sparsearch ui --results {args.results}"]
    if doc.get("model_uri"):
        lines.append(f"model:    {doc['model_uri']} (sparsearch predict {doc['study_name']} DATA --out FILE)")
    _emit(args, doc, "\n".join(lines))
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    from sparsearch.search.results import load_result

    result = load_result(args.study_name, storage=args.storage, results_dir=args.results)
    doc = result.to_json()
    head = (f"study {doc['study_name']} ({doc['storage']}): {doc['n_trials']} trials, {doc['n_complete']} complete, "
            f"{doc['n_pruned']} pruned, {doc['n_failed']} failed")
    _emit(args, doc, "\n".join([head, *_test_lines(doc), _trials_table(doc, top=args.top)]))
    return 0


class RankProgress:
    """Rows per second and ETA on one terminal line; silent on pipes and with --json."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()
        self.last = -1
        self.shown = False

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if done < self.last:  # a new pass over the rows (the pair pass) starts its own clock
            self.start = now
        self.last = done
        rate = done / max(now - self.start, 1e-9)
        text = f"counted {done:,}" + (f" of {total:,}" if total else "") + f" rows ({rate:,.0f} rows/s"
        if total and rate > 0:
            text += f", ETA {max(total - done, 0) / rate:.0f}s"
        print(f"\r{text})\033[K", end="", file=sys.stderr, flush=True)
        self.shown = True

    def close(self) -> None:
        if self.shown:
            print(file=sys.stderr, flush=True)


def _write_frame(out: Path, frame: Any, json_indent: int | None = None) -> None:
    """Write a polars frame as .parquet, .json, .tsv or .csv (by ``out``'s suffix), to a temporary name renamed at
    the end: a failed write never leaves a file that looks complete. An OS error is one line naming ``--out``."""
    from sparsearch.errors import SpecError

    suffix = out.suffix.lower()
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".parquet":
            frame.write_parquet(tmp)
        elif suffix == ".json":
            tmp.write_text(json.dumps(frame.to_dicts(), indent=json_indent, default=str))
        else:
            frame.write_csv(tmp, separator="\t" if suffix == ".tsv" else ",")
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SpecError(f"--out {str(out)!r}: cannot write: {exc.strerror or exc}") from None


def _cached_rank(cache: Any, key: str) -> Any:
    """The :class:`~sparsearch.features.RankResult` stored under ``key``, or ``None``."""
    from sparsearch.features import RankResult

    start = time.perf_counter()
    ranking = cache.load(key)
    if ranking is None:
        return None
    return RankResult(features=ranking, pairs=cache.load(key, "pairs"), quality=cache.load(key, "quality"),
                      seconds={"cache": time.perf_counter() - start})


def _cmd_rank(args: argparse.Namespace) -> int:
    from sparsearch.errors import SpecError
    from sparsearch.features import RankOptions, rank

    if args.top < 1:
        raise SpecError(f"--top must be >= 1, got {args.top}")
    if args.interactions < 0:
        raise SpecError(f"--interactions must be >= 0 (pairs to print), got {args.interactions}")
    features = [f.strip() for f in args.features.split(",") if f.strip()] if args.features else None
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".tsv", ".csv", ".json", ".parquet"):
        raise SpecError(f"--out {args.out!r}: extension must be .tsv, .csv, .json or .parquet")
    plot = Path(args.plot) if args.plot else None
    if plot is not None and plot.suffix.lower() not in (".png", ".html"):
        raise SpecError(f"--plot {args.plot!r}: extension must be .png or .html")
    for flag, path in (("--out", out), ("--plot", plot)):
        if path is not None:
            _check_writable(flag, path)  # before any work, and so that a failure leaves nothing behind

    report_kind = "none" if args.no_report else args.report
    progress = RankProgress(enabled=not args.json and sys.stderr.isatty())
    lowrank = {} if args.lowrank_z is None else {"lowrank_z": args.lowrank_z}
    try:  # checked here, before the cache is looked up (a bad value is a one-line error, exit 2)
        opts = RankOptions(method=args.method, n_bins=args.n_bins, ray_address=args.ray_address,
                           use_ray=bool(args.ray_address), progress=progress, interactions=args.interactions,
                           **lowrank)
    except SpecError as exc:
        if str(exc).startswith("lowrank_z "):  # name the flag the user typed
            raise SpecError("--lowrank-z " + str(exc).removeprefix("lowrank_z ")) from None
        raise
    cache = key = result = None
    if args.cache:
        from sparsearch.features import RankingCache, data_fingerprint

        cache = RankingCache(args.cache)
        key = cache.key(data_fingerprint(args.data), target=args.target, method=args.method,
                        options={"n_bins": args.n_bins, "features": features, "interactions": args.interactions,
                                 "report": report_kind, "lowrank_z": opts.lowrank_z})
        result = _cached_rank(cache, key)
    if result is None:
        try:
            result = rank(args.data, args.target, opts, features=features, report=report_kind)
        finally:
            progress.close()
        if cache is not None:
            for part, frame in (("pairs", result.pairs), ("quality", result.quality), ("ranking", result.features)):
                if frame is not None:  # the ranking last: its file says the entry is complete
                    cache.store(key, frame, part)  # type: ignore[arg-type]  # a cache gives a key
    ranking, pairs, report = result.features, result.pairs, result.quality
    if out is not None:
        _write_frame(out, ranking, json_indent=2)
    if plot is not None:
        from sparsearch.features import plot_ranking

        plot_ranking(ranking, plot)
    if args.json:
        # {"target", "method", "features": [ranking rows], "pairs": [pair rows] (empty without --interactions),
        #  "quality": [findings] (empty with --report none), "seconds": {stage: seconds}}
        _emit(args, {"target": args.target, "method": args.method, "features": ranking.to_dicts(),
                     "pairs": pairs.to_dicts() if pairs is not None else [],
                     "quality": report.to_dicts() if report is not None else [], "seconds": result.seconds}, "")
        return 0
    cols = [c for c in ("rank", "feature", "score", "mi", "chance_mi", "cardinality", "missing_rate")
            if c in ranking.columns]
    shown = ranking.head(args.top).select(cols)
    text = [f"ranking of {ranking.height} features by {args.method} (target {args.target!r})",
            table(cols, shown.rows())]
    if pairs is not None:
        pcols = ["rank", "feature_a", "feature_b", "score", "adjusted_joint_mi", "adjusted_mi_a", "adjusted_mi_b",
                 "redundancy", "lowrank_z"]
        text += ["", f"best {pairs.height} pairs: low-rank interactions of two high-cardinality features first (by "
                 "lowrank_z), then by chance-corrected interaction information (score, nats):",
                 table(pcols, pairs.select(pcols).rows()) if pairs.height else "fewer than 2 features: no pairs"]
    if report is not None:
        text += ["", "data-quality report" + (" (duplicate checks: --report full)" if args.report == "basic" else "")
                 + ":", table(report.columns, report.rows()) if report.height else "no issues found"]
    if out is not None:
        text.append(f"\nwrote {out}")
    print("\n".join(text))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from sparsearch.errors import DataError, SpecError
    from sparsearch.features import read_table
    from sparsearch.search.model import load_study_model

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".tsv", ".csv", ".json", ".parquet"):
        raise SpecError(f"--out {args.out!r}: extension must be .csv, .tsv, .json or .parquet")
    _check_writable("--out", out)
    rows = read_table(args.data)
    model, uri = load_study_model(args.study_name, results_dir=args.results, storage=args.storage,
                                  tracking_uri=args.tracking_uri)
    import polars as pl

    wanted = model.metadata.get_input_schema().input_names()  # only the columns the model reads
    absent = [c for c in wanted if c not in rows.columns]
    if absent:
        raise DataError(f"{args.data}: lacks column(s) {', '.join(absent)} that the model of study "
                        f"{args.study_name!r} reads ({', '.join(wanted)})")
    rows = rows.select(wanted)
    pred = pl.from_pandas(model.predict(rows.to_pandas(), params={"format": args.format, "output": args.output}))
    _write_frame(out, pred)
    doc = {"study_name": args.study_name, "model_uri": uri, "n_rows": pred.height, "columns": pred.columns,
           "format": args.format, "output": args.output, "out": str(out)}
    _emit(args, doc, f"predicted {pred.height} rows with {uri} ({args.format}); wrote {out}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from sparsearch.errors import SpecError
    from sparsearch.search.export import export_study

    try:
        result = export_study(args.study_name, fmt=args.format, out=args.out, results_dir=args.results,
                              storage=args.storage, tracking_uri=args.tracking_uri)
    except ImportError as exc:  # the export extra is not installed: an environment to fix, one line
        raise SpecError(first_line(exc)) from None
    doc = result.as_dict()
    opset = f", opset {doc['opset']}" if doc["opset"] is not None else ""
    note = "" if doc["portable"] else (" (packaged before the stable hash: a hashed column's buckets need polars' "
                                       "hash, see the README)")
    _emit(args, doc, f"exported {doc['model_uri']} ({doc['format']}{opset}): wrote {doc['network']} and "
          f"{doc['encoder']}{note}")
    return 0


def _cmd_refit(args: argparse.Namespace) -> int:
    from sparsearch.search.refit import RefitFailed, refit

    overrides = {k: v for k, v in (("storage", args.storage), ("tracking_uri", args.tracking_uri)) if v is not None}
    try:
        result = refit(args.study, trial=args.trial, data=args.data, workers=args.workers,
                       cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
                       ray_address=args.ray_address, results_dir=args.results, resume=args.resume,
                       register_model=args.register_model, progress=not args.quiet, **overrides)
    except RefitFailed as exc:  # not bad input: training stopped (a worker died); checkpoints are kept
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: refit interrupted; no model was logged (add --resume to continue from the last "
              "checkpoint)", file=sys.stderr)
        return 130
    doc = result.to_json()
    lines = []
    for run in doc["runs"]:
        test = ", ".join(f"{k}={v:.4g}" for k, v in (run["test_metrics"] or {}).items())
        trial = ", ".join(f"{k}={v:.4g}" for k, v in (run["trial_test_metrics"] or {}).items())
        lines += [f"refit of trial #{run['trial']}: {run['rows_seen']:,} rows seen over {run['epochs']} epoch(s) "
                  f"on {run['workers']} worker(s), {run['rows_per_s']:,.0f} rows/s",
                  f"  test (refit): {test or '-'}", f"  test (trial): {trial or '-'}",
                  f"  model: {run['model_uri']}"]
    _emit(args, doc, "\n".join(lines))
    return 0


def _check_writable(flag: str, path: Path) -> None:
    """Raise SpecError unless ``path`` can be created: its nearest existing ancestor is a writable folder."""
    from sparsearch.errors import SpecError

    if path.is_dir():
        raise SpecError(f"{flag} {str(path)!r} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SpecError(f"{flag} {str(path)!r}: {str(parent)!r} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SpecError(f"{flag} {str(path)!r}: folder {str(parent)!r} is not writable")


def _cmd_compare(args: argparse.Namespace) -> int:
    from sparsearch.errors import SpecError
    from sparsearch.search.compare import compare_samplers

    samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if len(samplers) < 1:
        raise SpecError("--samplers needs at least one sampler name, e.g. tpe,random")
    if args.seeds < 1:
        raise SpecError(f"--seeds must be >= 1, got {args.seeds}")
    report = compare_samplers(args.study, samplers=samplers, seeds=args.seeds, results_dir=args.results,
                              report_path=args.report, progress=not args.quiet, **_overrides(args))
    _emit(args, report.to_json(), report.summary_text())
    return 0


def _cmd_ui(args: argparse.Namespace) -> int:
    from sparsearch.search.tracking import default_tracking_uri

    results = Path(args.results)
    uri = args.tracking_uri or default_tracking_uri(results)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        from sparsearch.errors import SpecError

        raise SpecError(f"no MLflow store at {uri!r} (run a study first, or pass --results / --tracking-uri)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    base = f"http://{args.host}:{args.port}"
    links = _experiment_links(uri, base)
    if args.dry_run or args.json:
        _emit(args, {"command": cmd, "tracking_uri": uri, "url": base, "experiments": links}, " ".join(cmd))
        return 0
    print(f"MLflow UI at {base} (Ctrl-C stops it)", file=sys.stderr)
    for name, link in list(links.items())[:20]:  # open in the model-training view, not MLflow's GenAI default
        print(f"  {name}: {link}", file=sys.stderr)
    sys.stderr.flush()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def _experiment_links(uri: str, base: str) -> dict[str, str]:
    """Experiment name -> a link that opens it in MLflow's model-training view (most recent first)."""
    from sparsearch.search.tracking import experiment_ui_url

    if uri.startswith(("http://", "https://")):  # a server has its own UI; never wait on its retries here
        return {}
    try:
        from mlflow.tracking import MlflowClient

        experiments = MlflowClient(tracking_uri=uri).search_experiments(max_results=100,
                                                                        order_by=["last_update_time DESC"])
    except Exception:  # the UI itself reports an unreadable store
        return {}
    return {e.name: experiment_ui_url(base, e.experiment_id) for e in experiments if e.name != "Default"}


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from sparsearch.search.dashboard import open_dashboard

    board = open_dashboard(args.study_name, storage=args.storage, results_dir=args.results, host=args.host,
                           port=args.port, allow_remote=args.allow_remote)
    n = len(board.studies)
    _emit(args, board.to_json(), f"optuna-dashboard at {board.study_url or board.url} over {board.storage} "
          f"({n} stud{'y' if n == 1 else 'ies'}; Ctrl-C stops it)")
    sys.stdout.flush()
    try:
        board.serve()
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see _terminate): a clean stop, not an interrupted run
        pass
    print("optuna-dashboard stopped", file=sys.stderr)
    return 0


def _cmd_studies(args: argparse.Namespace) -> int:
    from sparsearch.search.spec import bundled_studies

    studies = bundled_studies()
    rows = []
    for name, path in sorted(studies.items()):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        rows.append([name, first])
    _emit(args, [{"name": n, "description": d} for n, d in rows], table(["study", "description"], rows,
                                                                          max_width=90))
    return 0


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (``ray job stop``, a batch scheduler) stops a run like Ctrl-C: finished trials are kept."""
    raise KeyboardInterrupt


COMMANDS = {"run": _cmd_run, "rank": _cmd_rank, "compare": _cmd_compare, "show": _cmd_show, "predict": _cmd_predict,
            "export": _cmd_export, "refit": _cmd_refit, "ui": _cmd_ui, "dashboard": _cmd_dashboard,
            "studies": _cmd_studies}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsearch`` console script."""
    import logging
    import signal

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error (already printed, one line)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "verbose", False):
        for noisy in ("ray", "mlflow", "alembic", "optuna"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _terminate)
    if getattr(args, "json", False):
        # stdout carries the JSON document alone: anything else printed meanwhile (Ray prints cluster warnings
        # to stdout from a background thread, libraries print) goes to stderr
        _JSON_OUT.append(sys.stdout)
        sys.stdout = sys.stderr
    try:
        return COMMANDS[args.command](args)
    except SparsearchError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; finished trials are kept in storage and MLflow (re-run to resume)",
              file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        from sparsearch._redact import redact

        first = first_line(str(exc))
        print(f"{PROG}: internal error: {type(exc).__name__}: {redact(first)[:300]} (re-run with --debug for "
              "the traceback, and please report it)", file=sys.stderr)
        return 1
    finally:
        if getattr(args, "json", False):
            sys.stdout = _JSON_OUT.pop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
