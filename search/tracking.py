"""MLflow tracking: one experiment per study name, one parent run per execution, one child run per trial.

Only the driver talks to MLflow, so a study on a cluster logs to a local SQLite store as well as to a server, and
concurrent workers can never race on the store. Documented behaviour when the store fails:

* unreachable at start: the study does not start (``ConnectionProblem``, exit 2); nothing has been computed yet;
* fails mid-study: a warning is printed once, trials keep running and are stored in Optuna; every trial whose
  child run could not be written is written again at the end of the execution (``sync``) and, failing that, by
  the next execution of the same study. Nothing computed is lost: the Optuna storage is the record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sparsearch._redact import redact
from sparsearch._types import JSONMapping
from sparsearch.errors import ConnectionProblem, first_line

if TYPE_CHECKING:
    import datetime
    from typing import TypeGuard

    import pandas as pd
    import polars as pl
    from mlflow import MlflowClient
    from mlflow.entities import Metric
    from mlflow.models.model import ModelInfo
    from optuna.trial import FrozenTrial
    from torch import nn

    from sparsearch.search.model import SparsearchModel
    from sparsearch.search.protocol import ReportState

__all__ = ["EXPERIMENT_KIND", "EXPERIMENT_KIND_TAG", "Tracker", "best_so_far_points", "default_tracking_uri",
           "experiment_ui_url", "warm_up_plots"]

log = logging.getLogger("sparsearch")

T = TypeVar("T")

_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
_PAUSE_AFTER_FAILURE_S = 30.0

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow 3 keeps an experiment's type in (what the UI writes when a user picks one)."""
EXPERIMENT_KIND = "custom_model_development"
"""Its value for a classic model-training experiment ("Machine learning"), as opposed to ``genai_development``."""
UI_WORKFLOW = "machine_learning"
"""The ``workflowType`` of MLflow's UI that shows the model-training view (runs, charts, models)."""
MAX_BEST_LISTED = 20
"""Best trials listed on the parent run (a Pareto front can be large; tag values are capped at 5000 characters)."""


def experiment_ui_url(base_url: str, experiment_id: str | None = None, run_id: str | None = None) -> str:
    """A link into MLflow's UI that opens in its model-training view.

    MLflow 3.17's UI picks GenAI or model training from a ``workflowType`` URL parameter, then from the
    browser's last choice, and defaults to GenAI; it does not read the experiment's ``mlflow.experimentKind`` tag
    for that (mlflow#24498). So links that sparsearch prints carry the parameter; the tag is set too
    (:data:`EXPERIMENT_KIND`), which is what MLflow records for the experiment's type.

    Example:
        >>> experiment_ui_url("http://127.0.0.1:5000", "3")
        'http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning'
    """
    base = base_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType={UI_WORKFLOW}"
    path = f"/#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base}{path}?workflowType={UI_WORKFLOW}"


def best_so_far_points(trials: Sequence[FrozenTrial], directions: Sequence[str]) -> list[tuple[int, int, list[float | None]]]:
    """The search's progress: ``(trial number, completion time in ms, best value of each objective so far)``.

    One point per finished trial, in trial-number order, from the first complete trial on; pruned and failed
    trials repeat the best so far (Optuna's best is over complete trials only). Each objective's best is its own
    (for a multi-objective study, the best of each objective alone, not a point of the Pareto front).

    Example:
        >>> from optuna.trial import TrialState, create_trial
        >>> ts = [create_trial(value=v, state=TrialState.COMPLETE) for v in (0.6, 0.5, 0.7)]
        >>> for n, t in enumerate(ts):
        ...     t.number = n
        >>> [(n, b) for n, _, b in best_so_far_points(ts, ["maximize"])]
        [(0, [0.6]), (1, [0.6]), (2, [0.7])]
    """
    from optuna.trial import TrialState

    best: list[float | None] = [None] * len(directions)
    out = []
    stamp = 0
    for t in sorted(trials, key=lambda t: t.number):
        if not t.state.is_finished():
            continue
        if t.state == TrialState.COMPLETE and t.values is not None:
            for i, (v, d) in enumerate(zip(t.values, directions)):
                b = best[i]
                if _finite(v) and (b is None or (v > b if d == "maximize" else v < b)):
                    best[i] = float(v)
        # the time a trial finished, kept non-decreasing in trial-number order (trials finish out of order; MLflow
        # lists a metric's history by time, and a chart over time should not run backwards)
        stamp = max(stamp, _millis(t.datetime_complete or t.datetime_start))
        if any(b is not None for b in best):
            out.append((t.number, stamp, list(best)))
    return out


def _millis(when: datetime.datetime | None) -> int:
    return int(when.timestamp() * 1000) if when is not None else int(time.time() * 1000)


def default_tracking_uri(results_dir: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a SQLite store in the results folder."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(results_dir / 'mlflow.db').resolve()}"


def _check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast (instead of MLflow's minutes of HTTP retries) when a tracking server does not answer."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout).close()
    except OSError as exc:
        raise ConnectionProblem(f"cannot reach MLflow tracking server {redact(uri)!r}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """An exclusive lock on ``<store>.lock`` for a SQLite tracking URI (a no-op for other stores)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        fcntl = None  # type: ignore[assignment]  # a module or None: Windows has no fcntl
    if fcntl is None or not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///"))
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _flat(prefix: str, value: object, out: dict[str, object]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def flatten(mapping: JSONMapping, prefix: str = "") -> dict[str, object]:
    """Flatten nested mappings into dotted keys.

    Example:
        >>> flatten({"a": {"b": 1}, "c": 2})
        {'a.b': 1, 'c': 2}
    """
    out: dict[str, object] = {}
    _flat(prefix, mapping, out)
    return out


def warm_up_plots() -> None:
    """Import and set up what the parent run's plots need (~2 s the first time: scikit-learn, plotly)."""
    try:
        import optuna.importance  # noqa: F401  (imports scikit-learn: ~1.5 s)
        import optuna.visualization  # noqa: F401
        import plotly.graph_objects as go

        go.Figure(go.Scatter(x=[0, 1], y=[0, 1])).to_html(include_plotlyjs="cdn", full_html=True)
    except Exception:  # plots are optional; _plots reports its own failures
        pass


@contextlib.contextmanager
def fluent_tracking_uri(uri: str | None) -> Iterator[None]:
    """Point MLflow's global ("fluent") tracking URI at ``uri`` for a block, then restore both the global URI and
    ``MLFLOW_TRACKING_URI`` (``mlflow.set_tracking_uri`` also sets the variable). ``None`` changes nothing."""
    import mlflow

    from sparsearch.search._internals import get_fluent_tracking_uri, restore_fluent_tracking_uri

    saved_env, saved_uri = os.environ.get("MLFLOW_TRACKING_URI"), get_fluent_tracking_uri()
    try:
        if uri:
            mlflow.set_tracking_uri(uri)
        yield
    finally:
        restore_fluent_tracking_uri(saved_uri)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def _finite(x: object) -> TypeGuard[float]:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


class Tracker:
    """Logs a study execution to MLflow from the driver. Every method is safe to call when tracking is off."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path, *, enabled: bool = True,
                 study_name: str | None = None) -> None:
        self.uri = uri
        self.experiment = experiment
        self.enabled = enabled
        self.study_name = study_name
        """The Optuna study whose trials the child runs are (their ``optuna.study_name`` tag)."""
        self.parent_run_id: str | None = None
        self.experiment_id: str | None = None
        self._artifact_root = artifact_root
        self._client: MlflowClient | None = None
        self._warned = False
        self._paused_until = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self.failures: list[str] = []

    @property
    def artifact_root(self) -> Path:
        return self._artifact_root

    @property
    def _open_client(self) -> MlflowClient:
        """The client :meth:`connect` opened (logging calls run only then: :meth:`_guard` and :meth:`submit` skip
        them while it is ``None``)."""
        if self._client is None:
            raise RuntimeError("the MLflow client is not open (Tracker.connect was not called, or tracking is off)")
        return self._client

    @property
    def _open_experiment_id(self) -> str:
        """The experiment :meth:`connect` opened or created (set whenever the client is open)."""
        if self.experiment_id is None:
            raise RuntimeError("no MLflow experiment is open (Tracker.connect was not called, or tracking is off)")
        return self.experiment_id

    # -- background logging -------------------------------------------------------------------------------------
    def submit(self, fn: Callable[[], object]) -> Future[object]:
        """Run ``fn`` on the tracker's single logging thread, in submission order, off the search loop."""
        if not self.enabled or self._client is None:
            done: Future[object] = Future()
            done.set_result(None)
            return done
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsearch-mlflow")
        return self._pool.submit(fn)

    def flush(self) -> None:
        """Wait until everything submitted has been logged (or has failed and been recorded)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- connection -------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Open the store and the experiment; raise ``ConnectionProblem`` when unreachable."""
        if not self.enabled:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        # MLflow retries an unreachable server for minutes by default (7 retries, backoff factor 2, 120 s
        # timeout). A study must not stall on its logbook: fail a call within seconds, keep the trial in Optuna,
        # and write the run later (see the module docstring). Users can still set these variables themselves.
        for key, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for noisy in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        _check_reachable(self.uri)
        try:
            # drivers starting together on one new SQLite store raced on its schema migration ("table ... already
            # exists") and on creating the experiment: one at a time, under a file lock beside the store
            with _store_lock(self.uri):
                self._client = MlflowClient(tracking_uri=self.uri)
                exp = self._client.get_experiment_by_name(self.experiment)
                if exp is None:
                    location = None
                    if "://" not in self.uri or self.uri.startswith(("sqlite:", "file:")):
                        path = self._artifact_root / self.experiment
                        location = path.resolve().as_uri()
                    try:
                        self.experiment_id = self._client.create_experiment(
                            self.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
                    except Exception:
                        # another process created it since the lookup (the file lock covers local stores only, not
                        # a tracking server): use theirs; any other failure is raised as before
                        exp = self._client.get_experiment_by_name(self.experiment)
                        if exp is None:
                            raise
                        self.experiment_id = exp.experiment_id
                else:
                    self.experiment_id = exp.experiment_id
                    if EXPERIMENT_KIND_TAG not in exp.tags:  # a kind the user chose in the UI is kept
                        self._client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        except Exception as exc:
            msg = redact(first_line(exc))
            raise ConnectionProblem(f"cannot reach MLflow tracking store {redact(self.uri)!r}: {msg[:300]}") from None

    def _guard(self, what: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T | None:
        """Run one logging call; on failure warn once, pause logging for a while, and return ``None``."""
        if not self.enabled or self._client is None:
            return None
        if time.monotonic() < self._paused_until:
            self.failures.append(f"{what}: skipped (tracking store unavailable)")
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            reason = redact(first_line(exc))
            self.failures.append(f"{what}: {reason}")
            self._paused_until = time.monotonic() + _PAUSE_AFTER_FAILURE_S
            if not self._warned:
                log.warning("MLflow logging failed (%s: %s); trials go on and are kept in Optuna storage", what,
                            reason[:200])
                self._warned = True
            return None

    def resume(self) -> None:
        """Try the store again now (used before the end-of-execution backfill)."""
        self._paused_until = 0.0

    # -- runs ---------------------------------------------------------------------------------------------------
    def start_parent(self, run_name: str, params: JSONMapping, tags: Mapping[str, str]) -> str | None:
        def go() -> str:
            study_tag = {"optuna.study_name": self.study_name} if self.study_name else {}
            run = self._open_client.create_run(self._open_experiment_id, run_name=run_name, tags={**study_tag, **tags})
            self._log(run.info.run_id, params=params)
            return run.info.run_id

        self.parent_run_id = self._guard("start parent run", go)
        return self.parent_run_id

    def start_trial(self, number: int, params: JSONMapping, tags: Mapping[str, str]) -> str | None:
        """Create the trial's child run (status RUNNING) and log its parameters."""
        if self.parent_run_id is None:
            return None

        def create() -> str:
            # the optuna.* tags link the run to its Optuna trial (study, number, state), as Optuna's own MLflow
            # callback names the study and trial number; ``trial_number`` and ``state`` are kept as they were
            all_tags = {"mlflow.parentRunId": self.parent_run_id, "trial_number": str(number),
                        "optuna.trial.number": str(number), "optuna.trial.state": "RUNNING",
                        **({"optuna.study_name": self.study_name} if self.study_name else {}), **tags}
            return self._open_client.create_run(self._open_experiment_id, run_name=f"trial-{number}", tags=all_tags).info.run_id

        run_id = self._guard(f"start trial {number}", create)
        if run_id is not None:  # a run that exists is returned even if its parameters could not be written
            self._guard(f"log parameters of trial {number}", self._log, run_id, params=params)
        return run_id

    def child_runs(self, study: str) -> dict[int, str]:
        """Trial number -> id of a child run of ``study`` already in the experiment (any driver's, any status).

        A driver killed between creating a trial's run and recording it in the study leaves a run that no study
        attribute names; the next execution finishes that run instead of creating a second one.
        """
        experiment_id = self.experiment_id
        if experiment_id is None:
            return {}

        def go() -> dict[int, str]:
            found: dict[int, str] = {}
            query = f"tags.study = '{study}'" if "'" not in study else ""
            token = None
            while True:
                page = self._open_client.search_runs([experiment_id], filter_string=query, max_results=1000,
                                                page_token=token)
                for run in page:
                    tags = run.data.tags
                    if tags.get("study") == study and "mlflow.parentRunId" in tags and "trial_number" in tags:
                        found.setdefault(int(tags["trial_number"]), run.info.run_id)
                token = page.token
                if not token:
                    return found

        return self._guard("find trial child runs", go) or {}

    def finish_trial(
        self,
        run_id: str | None,
        *,
        state: ReportState,
        history: Sequence[Mapping[str, float]] = (),
        metrics: JSONMapping | None = None,
        accounting: JSONMapping | None = None,
        error: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> bool:
        """Log per-epoch metrics (with step), final metrics, accounting and the trial state; end the run."""
        if run_id is None:
            return False
        status = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}.get(state, "FAILED")

        def go() -> bool:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            batch = []
            for row in history:
                step = int(row.get("step", row.get("epoch", 0)))
                batch += [Metric(k, float(v), now, step) for k, v in row.items() if k != "step" and _finite(v)]
            final = flatten(metrics or {})
            batch += [Metric(k, float(v), now, 0) for k, v in final.items() if _finite(v) and k not in
                      {m.key for m in batch}]
            all_tags = {"state": state, "optuna.trial.state": state, **(tags or {})}
            if error:
                all_tags["error"] = redact(error)[-4000:]
            self._log(run_id, metrics=batch, tags=all_tags)
            if accounting:
                self._open_client.log_dict(run_id, json.loads(json.dumps(accounting, default=str)), "accounting.json")
            self._open_client.set_terminated(run_id, status=status)
            return True

        return bool(self._guard(f"finish trial run {run_id}", go))

    def finish_parent(self, status: str, metrics: Mapping[str, float], tags: Mapping[str, str]) -> None:
        run_id = self.parent_run_id
        if run_id is None:
            return

        def go() -> None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._log(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)],
                      tags=tags)
            self._open_client.set_terminated(run_id, status=status)

        self._guard("finish parent run", go)

    def log_run(self, run_id: str | None, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None) -> None:
        """Add metrics (step 0) and tags to an existing run, finished or not (e.g. a trial's test metrics)."""
        if run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._guard("log run metrics", self._log, run_id, metrics=[
            Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)], tags=tags or {})

    def log_search(self, run_id: str | None, trials: Sequence[FrozenTrial], objectives: Sequence[str],
                   directions: Sequence[str], best: Sequence[FrozenTrial], child_runs: Mapping[int, str]) -> None:
        """The search on the parent run: its progress, its trials as a table, and which trials are best.

        * ``best_so_far_<objective>`` metrics with step = trial number (one per finished trial, timestamped when
          it finished), and ``trial_<objective>`` (each complete trial's value), so the run's chart shows the
          search's progress as Optuna's optimization history does;
        * ``trials_table.json``, the trials as an MLflow table (``log_table``; shown by the UI's artifact view);
        * tags ``best_trials`` (numbers) and ``best_trial_runs`` (number: child run id), and ``best_trial`` =
          ``true`` on those child runs, so ``tags.best_trial = "true"`` finds them in the runs table.
        """
        if run_id is None:
            return
        from mlflow.entities import Metric

        metrics: list[Metric] = []
        stamps: dict[int, int] = {}
        for number, when, values in best_so_far_points(trials, directions):
            stamps[number] = when
            metrics += [Metric(f"best_so_far_{name}", v, when, number) for name, v in zip(objectives, values)
                        if v is not None]
        from optuna.trial import TrialState

        for t in sorted(trials, key=lambda t: t.number):
            if t.state == TrialState.COMPLETE and t.values is not None:
                stamp = stamps.get(t.number) or _millis(t.datetime_complete)
                metrics += [Metric(f"trial_{name}", float(v), stamp, t.number)
                            for name, v in zip(objectives, t.values) if _finite(v)]
        listed = list(best)[:MAX_BEST_LISTED]
        tags = {"best_trials": ", ".join(str(t.number) for t in listed)}
        runs = {t.number: child_runs[t.number] for t in listed if t.number in child_runs}
        if runs:
            tags["best_trial_runs"] = ", ".join(f"{n}: {r}" for n, r in runs.items())
        self._guard("log the search's progress", self._log, run_id, metrics=metrics, tags=tags if listed else {})
        for number, child in runs.items():
            self._guard(f"tag best trial {number}", lambda c=child: self._open_client.set_tag(c, "best_trial", "true"))

    def log_table(self, run_id: str | None, df: pd.DataFrame, name: str = "trials_table.json") -> None:
        """Log a pandas DataFrame as an MLflow table (``MlflowClient.log_table``) on ``run_id``."""
        if run_id is None:
            return

        def go() -> None:
            # Optuna's own bookkeeping columns stay in trials.csv only; MLflow's table view reads a column name
            # with dots as a nested path and shows its cells empty: params_arch.depth -> params_arch/depth
            table = df[[c for c in df.columns if not str(c).startswith("system_attrs_")]].copy()
            table.columns = [str(c).replace(".", "/") for c in table.columns]
            for col in table.columns:  # MLflow writes tables as JSON: times as text, durations in seconds
                kind = str(table[col].dtype)
                if kind.startswith("datetime"):
                    table[col] = [None if v is None or v != v else str(v) for v in table[col]]
                elif kind.startswith("timedelta"):
                    table[col] = table[col].dt.total_seconds()
                elif kind == "object":
                    table[col] = table[col].map(lambda v: v if v is None or isinstance(v, (str, int, float, bool))
                                                else json.dumps(v, default=str))
            import warnings

            with warnings.catch_warnings():  # pandas 3 deprecation notices from inside MLflow's log_table
                warnings.simplefilter("ignore", DeprecationWarning)
                self._open_client.log_table(run_id, data=table, artifact_file=name)

        self._guard(f"log table {name}", go)

    def log_artifact_text(self, run_id: str | None, name: str, text: str) -> None:
        if run_id is None:
            return

        def go() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / name
                path.write_text(text, encoding="utf-8")
                self._open_client.log_artifact(run_id, str(path))

        self._guard(f"log artifact {name}", go)

    def log_artifact_file(self, run_id: str | None, path: Path, artifact_path: str | None = None) -> None:
        if run_id is not None:
            self._guard(f"log artifact {path.name}", self._open_client.log_artifact, run_id, str(path), artifact_path)

    def log_torch_model(self, run_id: str | None, model: nn.Module, name: str = "best_model") -> str | None:
        """Log a torch model with ``mlflow.pytorch`` on ``run_id``; returns its model URI."""
        import torch

        # we choose pickle deliberately (pt2 needs an input example per model kind); the model is our own
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        def log() -> ModelInfo:
            import mlflow.pytorch

            return mlflow.pytorch.log_model(model, name=name, pip_requirements=[f"torch=={torch.__version__}"],
                                            serialization_format="pickle")

        return self._log_model(run_id, model, "log best model", log)

    def log_pyfunc_model(self, run_id: str | None, model: SparsearchModel, example: pl.DataFrame | pd.DataFrame, *, name: str = "best_model",
                         registered_name: str | None = None) -> str | None:
        """Log a :class:`~sparsearch.search.model.SparsearchModel` (pyfunc) on ``run_id`` with its signature and
        input example (raw rows); optionally register it as ``registered_name``. Returns its model URI."""

        def log() -> ModelInfo:
            import mlflow.pyfunc

            from sparsearch.search.model import model_signature
            from sparsearch.search.requirements import model_requirements

            example_pd = example.to_pandas() if hasattr(example, "to_pandas") else example
            # MLflow warns that a Python object is cloudpickled: deliberate (the model is our own object)
            pyfunc_log = logging.getLogger("mlflow.pyfunc")
            level = pyfunc_log.level
            pyfunc_log.setLevel(logging.ERROR)
            try:
                with tempfile.TemporaryDirectory() as scratch:  # sparsearch's wheel, when the model carries it
                    reqs, code_paths = model_requirements(Path(scratch))
                    return mlflow.pyfunc.log_model(name=name, python_model=model, input_example=example_pd,
                                                   signature=model_signature(model, example_pd),
                                                   pip_requirements=reqs, code_paths=code_paths or None,
                                                   registered_model_name=registered_name)
            finally:
                pyfunc_log.setLevel(level)

        return self._log_model(run_id, model, "log best model", log)

    def _log_model(self, run_id: str | None, model: object, what: str, log_fn: Callable[[], ModelInfo]) -> str | None:
        if run_id is None or model is None:
            return None

        def go() -> str:
            import mlflow
            import mlflow.pyfunc
            import mlflow.pytorch

            # MLflow logs models through the global "fluent" API: point it at our store for this call only
            with fluent_tracking_uri(self.uri), mlflow.start_run(run_id=run_id):
                info = log_fn()
            return info.model_uri

        return self._guard(what, go)

    def _log(self, run_id: str, *, params: JSONMapping | None = None, metrics: Sequence[Metric] = (),
             tags: Mapping[str, object] | None = None) -> None:
        from mlflow.entities import Param, RunTag

        plist = [Param(str(k)[:250], redact(str(v))[:6000]) for k, v in flatten(params or {}).items()]
        tlist = [RunTag(str(k)[:250], redact(str(v))[:5000]) for k, v in (tags or {}).items()]
        metrics = list(metrics)
        # one call per batch of at most 1000 metrics, 100 params and 100 tags (MLflow's limits): a trial is one
        # database transaction, not three
        chunks = max(1, -(-len(metrics) // 1000), -(-len(plist) // 100), -(-len(tlist) // 100))
        for i in range(chunks):
            m, p, t = metrics[i * 1000:(i + 1) * 1000], plist[i * 100:(i + 1) * 100], tlist[i * 100:(i + 1) * 100]
            if m or p or t:
                self._open_client.log_batch(run_id, metrics=m, params=p, tags=t)
