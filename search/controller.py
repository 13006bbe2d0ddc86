"""The search controller: Optuna ask/tell in the driver, trials as Ray tasks, every trial in MLflow.

Flow of one execution (see ARCHITECTURE.md):

1. validate the study (:mod:`sparsearch.search.spec`), open MLflow (fail fast when unreachable);
2. prepare the data once: load, rank features (cached per fingerprint), prefilter, encode, split;
3. start or join Ray; ``ray.put`` the data once; start the storage actor; create or resume the study;
4. fail stale RUNNING trials left by a dead driver and re-queue them;
5. loop: ``study.ask()`` and sample the config in the driver (define-by-run space), submit a Ray task, keep at
   most ``workers`` in flight, collect in completion order with ``ray.wait``, ``study.tell`` each result
   explicitly COMPLETE, PRUNED or FAIL, log its child run; heartbeats for running trials; per-trial time budgets;
6. evaluate the best trial (or every Pareto trial) once on the held-out test rows (:func:`_evaluate_test`);
7. log the parent run's summary, plots and best model; return a :class:`StudyResult`.

Random search is this same code path with ``sampler = "random"``.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from sparsearch._ray import check_ray_reachable
from sparsearch.errors import ConnectionProblem, SpecError
from sparsearch.search import _liveness
from sparsearch.search.data import PreparedData, prepare_data, trial_features
from sparsearch.search.progress import ProgressPrinter
from sparsearch.search.registry import make_pruner, make_sampler
from sparsearch.search.spec import StudySpec, load_study
from sparsearch.search.storage import (
    RayStorageProxy,
    absolute_storage_url,
    batched_writes,
    default_storage_url,
    env_storage_url,
    is_journal,
    open_storage,
    redact,
    start_storage_server,
)
from sparsearch.search.tracking import Tracker, default_tracking_uri, warm_up_plots
from sparsearch.search.trial_log import LOGGED_PREFIX, RUN_PREFIX, TrialLog
from sparsearch.search.worker import MEMORY_REASON_ATTR, TrialPayload, TrialReport, execute_trial

__all__ = ["StudyResult", "load_result", "run_study"]

log = logging.getLogger("sparsearch")

HEARTBEAT_ATTR = "sparsearch:heartbeat"
DRIVER_ATTR = "sparsearch:driver"
DRIVER_PROC_PREFIX = "sparsearch:driver-proc:"
"""Study system attribute per driver id: its host, process id and process start time, refreshed with its
heartbeats (see :mod:`sparsearch.search._liveness`)."""
DONE_PREFIX = "sparsearch:driver-done:"
"""Study system attribute per driver id: set when that driver finished (its unlogged trials may be synced)."""
HEADLINE_ATTRS = ("realized_sparsity", "nnz_params", "flops_sparse")
"""Metrics kept as trial user attributes of their own (all metrics are in the ``metrics`` attribute)."""
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_enable_metrics_collection": "0",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
"""Set (unless already set) before any Ray start: Ray binds 127.0.0.1 and phones nowhere."""


@dataclass
class StudyResult:
    """The outcome of :func:`run_study` (or :func:`load_result` for a stored study)."""

    study_name: str
    storage: str
    tracking_uri: str | None
    mlflow_parent_run_id: str | None
    study: optuna.Study
    objectives: list[str]
    directions: list[str]
    elapsed_s: float = 0.0
    n_trials_run: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    model_uri: str | None = None
    """The best trial's model as an MLflow pyfunc (raw rows in, probabilities out), when one was logged:
    ``mlflow.pyfunc.load_model(model_uri).predict(raw_frame)``."""

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The best trial (single objective) or the Pareto front (several objectives)."""
        return _best_complete(self.study, len(self.directions))

    @property
    def best_trial(self) -> FrozenTrial | None:
        best = self.best_trials
        return best[0] if best else None

    def trials_dataframe(self) -> Any:
        """All trials as a pandas DataFrame (Optuna's layout: number, values, params_*, user_attrs_*, state)."""
        return self.study.trials_dataframe(multi_index=False)

    def test_metrics(self) -> dict[int, dict[str, float]]:
        """Metrics on the held-out test rows of the best trial(s) that have them: number -> ``{"test_auc": ...}``."""
        out = {}
        for t in self.best_trials:
            rec = get_test_record(self.study, t.number)
            if rec is not None:
                out[t.number] = dict(rec["metrics"])
        return out

    def to_json(self) -> dict[str, Any]:
        """The public JSON document of ``sparsearch run --json`` (field names are a stable interface).

        Documented in README.md ("The run JSON"). ``best_values`` are validation metrics (what the search
        selected on); ``test_metrics`` are the incumbent's metrics on the held-out test rows, computed once.
        """
        best = self.best_trial
        tests = self.test_metrics()
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "tracking_uri": self.tracking_uri,
            "mlflow_parent_run_id": self.mlflow_parent_run_id,
            "model_uri": self.model_uri,
            "objectives": self.objectives,
            "directions": self.directions,
            "n_trials": len(self.trials),
            "n_trials_run": self.n_trials_run,
            "n_complete": self.count(TrialState.COMPLETE),
            "n_pruned": self.count(TrialState.PRUNED),
            "n_failed": self.count(TrialState.FAIL),
            "best_values": list(best.values) if best else None,
            "best_params": dict(best.params) if best else None,
            "best_trial_number": best.number if best else None,
            "pareto_front": [t.number for t in self.best_trials] if len(self.directions) > 1 else None,
            "test_metrics": _jsonable(tests.get(best.number)) if best is not None and best.number in tests else None,
            "test": [{"number": n, "metrics": _jsonable(m)} for n, m in tests.items()],
            "split": _jsonable(self.info.get("split")),
            "elapsed_s": round(self.elapsed_s, 3),
            "info": self.info,
            "trials": [trial_json(t) for t in self.trials],
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def trial_json(t: FrozenTrial) -> dict[str, Any]:
    duration = t.duration.total_seconds() if t.duration is not None else None
    return {
        "number": t.number,
        "state": t.state.name,
        "values": _jsonable(list(t.values)) if t.values is not None else None,
        "params": _jsonable(dict(t.params)),
        "user_attrs": _jsonable(dict(t.user_attrs)),
        "duration_s": duration,
    }


# ----------------------------------------------------------------------------------------------------------------
def _connect_ray(address: str | None) -> bool:
    """Start or join Ray. Returns whether this call started it (and so must shut it down).

    When Ray is already initialised in this process (``run_study`` called from a program that uses Ray), that Ray
    is used; an explicit ``HOST:PORT`` naming another cluster is an error rather than silently ignored.
    """
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    import ray

    if ray.is_initialized():
        _check_same_cluster(address, ray.get_runtime_context().gcs_address)
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    try:
        if address and address != "local":
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            # a private, loopback-only Ray: no token is needed (and none can leak)
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False, object_store_memory=None)
    except Exception as exc:  # ConnectionError, RuntimeError, ValueError from a malformed address
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionProblem(f"cannot connect to Ray at {address!r}: {msg[:300]}") from None
    return True


def _check_same_cluster(address: str | None, current: str | None) -> None:
    from sparsearch._ray import validate_ray_address

    if not address or address.startswith("ray://") or not current:
        return
    wanted = validate_ray_address(address)
    if wanted is None:  # auto, local
        return
    host, _, port = current.rpartition(":")
    loopback = {"localhost", "127.0.0.1", "::1"}

    def same_host(a: str, b: str) -> bool:
        return a == b or (a in loopback and b in loopback)

    if not (same_host(wanted[0], host) and str(wanted[1]) == port):
        raise SpecError(f"Ray is already initialised in this process (cluster at {current}), so ray_address "
                        f"{address!r} cannot be joined; call ray.shutdown() first, or leave ray_address unset")


def _resolve_urls(spec: StudySpec, results_dir: Path) -> tuple[str, str]:
    # absolute: the storage actor and workers open a journal or SQLite file from Ray's working folder
    storage = absolute_storage_url(spec.storage.url or env_storage_url() or default_storage_url(results_dir))
    tracking = spec.tracking.uri or default_tracking_uri(results_dir)
    return storage, tracking


def _check_results_dir(results_dir: Path) -> Path:
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SpecError(f"results folder {str(results_dir)!r} is not writable: {exc.strerror or exc}") from None
    return results_dir


def _best_values(study: optuna.Study, n_objectives: int) -> list[float] | None:
    try:
        if n_objectives == 1:
            return [study.best_value]
        return None
    except ValueError:
        return None


class _Execution:
    """State of one execution of a study (one call of :func:`run_study`)."""

    def __init__(self, spec: StudySpec, results_dir: Path, progress: Callable[..., Any] | bool) -> None:
        self.spec = spec
        self.results_dir = results_dir
        self.objectives = list(spec.study.objectives)
        self.directions = spec.study.resolved_directions()
        self.driver_id = uuid.uuid4().hex[:12]
        self.identity = _liveness.driver_identity()
        self.storage_url, self.tracking_uri = _resolve_urls(spec, results_dir)
        experiment = spec.tracking.experiment or spec.study.name
        self.tracker = Tracker(self.tracking_uri, experiment, results_dir / "artifacts",
                               enabled=spec.tracking.enabled, study_name=spec.study.name)
        self.progress = progress
        self.printer: ProgressPrinter | None = None
        self.trial_log: TrialLog | None = None
        self.best_model: Any = None
        self.best_value: float | None = None
        self.best_features: tuple[str, ...] | None = None
        self.model_uri: str | None = None
        self.models: dict[int, tuple[list[float], Any, tuple[str, ...] | None]] = {}
        """Trained models that may be evaluated on the test rows at the end: number -> (values, model,
        features). Only the best trial (single objective) or this execution's non-dominated trials are kept."""
        self.n_run = 0

    def say(self, text: str) -> None:
        if self.printer is not None:
            self.printer.message(text)

    def keep_model(self, frozen: FrozenTrial, model: Any, features: tuple[str, ...] | None) -> None:
        """Keep ``model`` if its trial may end up best (for the test evaluation), dropping dominated ones."""
        if model is None or frozen.state != TrialState.COMPLETE or frozen.values is None:
            return
        sign = [1.0 if d == "maximize" else -1.0 for d in self.directions]
        values = [s * v for s, v in zip(sign, frozen.values)]

        def dominates(a: list[float], b: list[float]) -> bool:
            return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

        if len(values) == 1:
            if any(kept[0][0] >= values[0] for kept in self.models.values()):
                return  # ties keep the earlier trial, as Optuna's best_trial does
            self.models = {}
        else:
            if any(dominates(kept[0], values) for kept in self.models.values()):
                return
            self.models = {n: kept for n, kept in self.models.items() if not dominates(values, kept[0])}
        self.models[frozen.number] = (values, model, features)

    # -- trial bookkeeping ------------------------------------------------------------------------------------------
    def record_driver(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        """Write this driver's host, process id and process start time (and the time) into the study."""
        storage.set_study_system_attr(study._study_id, f"{DRIVER_PROC_PREFIX}{self.driver_id}",
                                      {**self.identity, "beat": time.time()})

    def _stale_reason(self, t: FrozenTrial, drivers: dict[str, Any], now: float) -> str | None:
        """Why RUNNING trial ``t`` (not this driver's) is stale, or ``None`` while its driver may be alive.

        A driver on the owner's own host sees at once whether the owner's process is gone; elsewhere, a trial is
        stale after ``stale_after`` seconds without a heartbeat (until the first one, its start time stands in).
        """
        execution = self.spec.execution
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        owner = t.system_attrs.get(DRIVER_ATTR)
        record = drivers.get(owner) if owner else None
        if owner == self.driver_id:
            return None
        if record is not None and _liveness.process_gone(record):
            return (f"stale: its driver (pid {record.get('pid')} on {record.get('host')}) is gone "
                    f"(the process no longer exists)")
        if owner is None and now - started > execution.heartbeat_interval and t.system_attrs.get(
                HEARTBEAT_ATTR) is None:
            # the owner is written right after study.ask(): a driver killed in between left no name. It is one of
            # the drivers of this host that are gone if one of them was running when the trial started
            for other in drivers.values():
                if _liveness.process_gone(other) and float(other.get("started", 0.0)) <= started + 1.0:
                    return "stale: started by a driver of this host that is gone (before it recorded its name)"
        beat = float(t.system_attrs.get(HEARTBEAT_ATTR, started))
        if now - beat > execution.stale_after:
            return f"stale: no heartbeat for {now - beat:.0f}s (its driver stopped)"
        return None

    def fail_stale(self, study: optuna.Study, storage: optuna.storages.BaseStorage,
                   in_flight: set[int]) -> tuple[int, int]:
        """Fail RUNNING trials whose driver is gone or stopped sending heartbeats; re-queue them (up to
        ``max_retries``).

        Returns ``(failed, requeued)``.
        """
        now = time.time()
        stale = requeued = 0
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t._trial_id not in in_flight]
        if not running:
            return 0, 0
        attrs = storage.get_study_system_attrs(study._study_id)
        drivers = {key.removeprefix(DRIVER_PROC_PREFIX): value for key, value in attrs.items()
                   if key.startswith(DRIVER_PROC_PREFIX) and isinstance(value, dict)}
        for t in running:
            reason = self._stale_reason(t, drivers, now)
            if reason is None:
                continue
            try:
                storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
                storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            except UpdateFinishedTrialError:  # another driver (or its own, late) finished it first
                continue
            stale += 1
            requeued += self.requeue(study, t)
            run_id = storage.get_study_system_attrs(study._study_id).get(f"{RUN_PREFIX}{t.number}")
            if self.trial_log is not None:
                self.trial_log.finish(t.number, state="FAIL", error="stale trial (its driver stopped)", run_id=run_id)
        return stale, requeued

    def requeue(self, study: optuna.Study, t: FrozenTrial) -> bool:
        attempt = int(t.user_attrs.get("attempt", 0)) + 1
        if attempt > self.spec.execution.max_retries:
            return False
        study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number, "attempt": attempt})
        return True

    def tell(self, study: optuna.Study, trial: optuna.Trial, report: TrialReport,
             attrs: dict[str, Any] | None = None) -> FrozenTrial:
        """Store what ``report`` brings back (plus the driver's user ``attrs``), then tell the trial's state."""
        storage = study._storage
        tid = trial._trial_id
        try:
            with batched_writes(storage):  # one append to a journal file instead of ~6
                self._store_report(storage, tid, report, attrs or {})
            if report.state == "COMPLETE":
                values = report.values or []
                if any(not math.isfinite(v) for v in values):
                    storage.set_trial_user_attr(tid, "fail_reason", f"objective is not finite: {values}")
                    return study.tell(trial, state=TrialState.FAIL)
                return study.tell(trial, values)
            if report.state == "PRUNED":
                return study.tell(trial, state=TrialState.PRUNED)
            return study.tell(trial, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            # another driver failed this trial as stale (this driver was stalled past stale_after) and re-queued
            # its parameters: the stored outcome stands, the re-queued copy runs again
            log.warning("trial %d was failed as stale by another driver while it ran here; its result is dropped "
                        "(the re-queued copy runs again)", trial.number)
            return storage.get_trial(tid)

    def _store_report(self, storage: optuna.storages.BaseStorage, tid: int, report: TrialReport,
                      attrs: dict[str, Any]) -> None:
        storage.set_trial_system_attr(tid, DRIVER_ATTR, self.driver_id)  # whose MLflow runs these are (sync)
        for key, value in attrs.items():
            storage.set_trial_user_attr(tid, key, value)
        # what the worker's trial held (parameters it suggested, reported values, user attributes) goes into the
        # study before the trial finishes, so the stored trial is what Optuna itself would have written
        for name, (internal, dist) in report.params.items():
            storage.set_trial_param(tid, name, internal, dist)
        for step, value in report.intermediate.items():
            storage.set_trial_intermediate_value(tid, step, value)
        for key, value in report.user_attrs.items():
            storage.set_trial_user_attr(tid, key, value)
        numeric = {k: float(v) for k, v in report.metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        # one storage write for all metrics (each write is an fsync on a journal file); the headline ones are
        # also kept as their own attributes, where Optuna's trials_dataframe shows them as columns
        if numeric:
            storage.set_trial_user_attr(tid, "metrics", numeric)
        for key in HEADLINE_ATTRS:
            if key in numeric:
                storage.set_trial_user_attr(tid, key, numeric[key])
        if report.error:
            storage.set_trial_user_attr(tid, "fail_reason" if report.state == "FAIL" else "note",
                                        redact(report.error.strip().splitlines()[0])[:500])
        storage.set_trial_user_attr(tid, "duration_s", round(report.duration_s, 3))
        if report.node:
            storage.set_trial_user_attr(tid, "ray_node", report.node[:16])
        if report.device:
            storage.set_trial_user_attr(tid, "device", report.device)


def run_study(
    study: str | os.PathLike[str] | StudySpec,
    *,
    results_dir: str | os.PathLike[str] = "sparsearch-results",
    progress: bool | Callable[[str], None] = True,
    **overrides: Any,
) -> StudyResult:
    """Run (or resume) a study and return its result.

    Args:
        study: a study file path, a bundled study name (``"quickstart"``) or a :class:`StudySpec`.
        results_dir: where the embedded Optuna storage, MLflow store, artifacts and caches live.
        progress: print one progress line per trial to stderr (``True``), nothing (``False``).
        **overrides: see :data:`sparsearch.search.spec.OVERRIDES` (``n_trials=5``, ``sampler="random"``, ...)
            and dotted ``"section.key"`` entries. ``data=`` also takes a polars or pandas DataFrame (or a polars
            LazyFrame): it is encoded once and reaches the workers through Ray's object store once.
            ``objective=`` takes a function ``f(trial, config, train, val, report)`` (Ray serialises it, so one
            defined in a notebook or ``__main__`` runs on every node) or a ``"module:function"`` string.

    Returns:
        A :class:`StudyResult` with the Optuna study, all trials, the best trial(s) and the MLflow parent run id.

    Example:
        >>> import sparsearch
        >>> result = sparsearch.run_study("quickstart", n_trials=2, **{"train.epochs": 1})  # doctest: +SKIP
        >>> result.best_trial.values  # doctest: +SKIP
    """
    spec = study if isinstance(study, StudySpec) else load_study(study, **overrides)
    if isinstance(study, StudySpec) and overrides:
        from sparsearch.search.spec import apply_overrides, parse_study

        spec = parse_study(apply_overrides(spec.to_raw(), overrides), default_name=spec.study.name)
    results = _check_results_dir(Path(results_dir))
    ex = _Execution(spec, results, progress)
    start = time.perf_counter()

    open_storage(ex.storage_url)  # fail fast on a bad or unreachable storage, before any work
    for key, value in RAY_ENV.items():  # before Ray's first import: it reads them once (localhost resolution)
        os.environ.setdefault(key, value)
    import ray

    if not ray.is_initialized():
        check_ray_reachable(spec.execution.ray_address)  # and on an unreachable Ray address
    from concurrent.futures import ThreadPoolExecutor

    # trial child runs are written by a writer process of the driver's (off the search loop's GIL), or its thread
    ex.trial_log = TrialLog(ex.tracker, use_process=spec.tracking.enabled and spec.tracking.writer == "process",
                            log_file=results / "logs" / "mlflow-writer.log")
    # MLflow's store set-up (seconds for a new SQLite store: schema migrations) overlaps data preparation and Ray's
    # start; its failure is still reported before any trial runs, and first, as when it ran alone
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsearch-mlflow-connect")
    connecting = pool.submit(ex.tracker.connect)
    pool.shutdown(wait=False)
    started_ray = False
    try:
        prepared = prepare_data(spec, results)
        started_ray = _connect_ray(spec.execution.ray_address)
        connecting.result()
        # the parent run's plots come at the end; what they need takes ~2 s to set up: do it while trials run
        ex.tracker.submit(warm_up_plots)
    except BaseException:
        try:
            connecting.result()
        finally:
            ex.trial_log.close()
            if started_ray:
                ray.shutdown()
        raise
    actor = None
    status = "FAILED"
    try:
        # Workers on the driver's node open a journal file themselves; the storage actor serves every other case
        # (other nodes, databases, memory). It starts in the background: the driver has opened the storage already.
        if not (is_journal(ex.storage_url) and _single_node(spec.execution.ray_address)):
            actor = start_storage_server(ex.storage_url, wait=_is_memory(ex.storage_url))
        result = _drive(ex, prepared, actor, start)
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        if not _is_storage_failure(exc):
            raise
        # e.g. PostgreSQL restarted mid-study: stop with one clear line; finished trials are in storage already,
        # RUNNING ones are failed and re-queued by the next run (stale heartbeats)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConnectionProblem(
            f"storage {redact(ex.storage_url)!r} failed mid-study ({type(exc).__name__}: {redact(first)[:200]}); "
            "finished trials are kept: re-run the same command to resume") from None
    finally:
        if ex.trial_log is not None:
            ex.trial_log.close()
        ex.tracker.flush()
        if ex.tracker.parent_run_id is not None and status != "FINISHED":
            ex.tracker.finish_parent(status, {}, {"status": status})
        if actor is not None:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


def _single_node(address: str | None) -> bool:
    """Whether every trial runs on the driver's node: a one-node Ray that was not joined by address (a cluster
    joined by address may gain nodes while the study runs, e.g. by autoscaling)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    joined = address not in (None, "local")
    return not joined and len([n for n in ray.nodes() if n.get("Alive")]) == 1


def _is_storage_failure(exc: BaseException) -> bool:
    """An error of the Optuna storage backend itself (its server went away), not of sparsearch's code."""
    from optuna.exceptions import StorageInternalError

    return isinstance(exc, StorageInternalError) or type(exc).__module__.startswith(("sqlalchemy", "psycopg"))


def _open_study(ex: _Execution, storage: RayStorageProxy) -> optuna.Study:
    spec = ex.spec
    sampler = make_sampler(spec.study.sampler, spec.study.seed, **spec.study.sampler_params)
    pruner = make_pruner(spec.study.pruner, **spec.pruner_params())
    try:
        existing = optuna.load_study(study_name=spec.study.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        have = [d.name.lower() for d in existing.directions]
        if have != ex.directions:
            raise SpecError(
                f"study {spec.study.name!r} already exists in {redact(ex.storage_url)!r} with directions {have}, "
                f"but this study asks for {ex.directions}; use another --study-name"
            )
        stored = existing.user_attrs.get("objectives")
        if stored is not None and list(stored) != ex.objectives:
            raise SpecError(f"study {spec.study.name!r} already exists with objectives {stored}, but this study "
                            f"asks for {ex.objectives}; use another --study-name")
        if existing.metric_names is None:  # a study made before sparsearch named its metrics
            _set_metric_names(existing, ex.objectives)
        return existing
    study = optuna.create_study(study_name=spec.study.name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=ex.directions, load_if_exists=True)
    study.set_user_attr("objectives", ex.objectives)
    study.set_user_attr("created_by", "sparsearch")
    _set_metric_names(study, ex.objectives)
    return study


def _set_metric_names(study: optuna.Study, objectives: list[str]) -> None:
    """Name the study's objectives (``val_auc``, not "Objective 0") for optuna-dashboard and Optuna's plots.

    Optuna then also names the value columns of ``trials_dataframe`` after them (``value_val_auc``).
    """
    import warnings

    with warnings.catch_warnings():  # experimental since Optuna 3.2, still so in 5.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))


def _drive(ex: _Execution, prepared: PreparedData, actor: Any, start: float) -> StudyResult:
    import ray

    from sparsearch.spaces import suggest_config

    spec = ex.spec
    gpus = spec.execution.gpus_per_trial
    gpu_slots = _check_gpus(gpus)  # before the study is touched: nothing runs if no trial can be scheduled
    # The driver opens the storage itself (journal files and databases take several clients; in-process calls
    # are ~100x cheaper than actor round trips); only an in-memory storage lives in the actor alone.
    storage = RayStorageProxy(actor, retries=0) if _is_memory(ex.storage_url) else open_storage(ex.storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _open_study(ex, storage)
    n_before = len(study.get_trials(deepcopy=False))

    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    cpus = spec.execution.cpus_per_trial
    if cpus > cluster_cpus:
        raise SpecError(f"[execution] cpus_per_trial = {cpus} but the Ray cluster has only {cluster_cpus:g} CPUs")
    workers = spec.execution.workers or max(1, min(int(cluster_cpus // cpus), gpu_slots))

    params = {"study": spec.study.model_dump(mode="json"), "data": spec.data.model_dump(mode="json"),
              "space": spec.space.model_dump(mode="json"), "train": spec.train.model_dump(mode="json"),
              "execution": {**spec.execution.model_dump(mode="json"), "workers_effective": workers},
              "data_fingerprint": prepared.fingerprint, "n_rows": prepared.n_rows,
              "n_candidates": len(prepared.candidates)}
    tags = {"sparsearch.kind": "study", "sampler": spec.study.sampler, "seed": str(spec.study.seed),
            "data_fingerprint": prepared.fingerprint, "storage": redact(ex.storage_url),
            "optuna_trials_before": str(n_before), "driver": ex.driver_id}
    parent = ex.tracker.start_parent(f"{spec.study.name}-{time.strftime('%Y%m%d-%H%M%S')}", params, tags)
    if prepared.ranking is not None and parent is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "feature_ranking.csv"
            prepared.ranking.write_csv(path)
            ex.tracker.log_artifact_file(parent, path)

    if ex.progress:
        ex.printer = ProgressPrinter(spec.study.n_trials, ex.objectives)
        ex.say(f"study {spec.study.name!r}: {spec.study.n_trials} trials, sampler {spec.study.sampler}, "
               f"{workers} workers x {cpus:g} CPU, data {prepared.n_rows} rows, "
               f"{len(prepared.candidates) or '-'} features after prefilter"
               f"{f' + {len(prepared.crosses)} crosses' if prepared.crosses else ''}"
               f"{' (cached ranking)' if prepared.ranking_cached else ''}; storage {redact(ex.storage_url)}")
    if prepared.split and study.user_attrs.get("split") != prepared.split:
        study.set_user_attr("split", prepared.split)  # how the rows were split (read back by `show`)
    ex.trial_log.attach(storage, study._study_id)
    ex.record_driver(study, storage)
    stale, requeued_at_start = ex.fail_stale(study, storage, set())
    if stale:
        ex.say(f"failed {stale} stale RUNNING trial(s) left by a stopped driver; {requeued_at_start} re-queued")

    data_refs = [ray.put(prepared.train), ray.put(prepared.val)]  # once per study; workers keep them
    driver_node = ray.get_runtime_context().get_node_id()
    # a trial that reserves GPUs gets a fresh worker process (Ray's max_calls=1 for GPU tasks): CUDA is set up
    # once per process, for the CUDA_VISIBLE_DEVICES Ray gave that process's first task
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(execute_trial)
    top_k = spec.data.top_k
    searched_k = top_k is not None and top_k[0] < top_k[1]
    crosses = spec.data.crosses
    # a searched number of crosses; fewer pairs than asked may have a positive score, so the range is capped
    searched_c = crosses is not None and crosses[0] < crosses[1] and len(prepared.crosses) > crosses[0]
    n_features_for_space = len(prepared.candidates) or None

    in_flight: dict[Any, dict[str, Any]] = {}
    worker_space: dict[str, Any] = {}
    """Parameters that objectives suggest inside workers (name -> latest distribution), learned from results."""
    budget_used = 0
    pending_retries = requeued_at_start  # re-queued trials run on top of this execution's budget
    deadline = None if spec.study.timeout is None else time.monotonic() + spec.study.timeout
    last_beat = time.monotonic()

    def dispatch() -> None:
        nonlocal budget_used, pending_retries
        trial = study.ask()
        is_retry = "retry_of" in trial.user_attrs
        # A fresh trial uses the budget; a re-queued one uses a pending retry. Another driver on the same study
        # may pop "our" re-queued trials first: whatever we get then still uses up a slot, so the loop ends.
        if not is_retry and budget_used < spec.study.n_trials:
            budget_used += 1
        elif pending_retries > 0:
            pending_retries -= 1
        else:
            budget_used += 1
        # the trial's owner, at once: a later driver on this host fails it as soon as this process is gone (see
        # fail_stale); until the first heartbeat, the trial's start time stands for one
        try:
            storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, ex.driver_id)
        except UpdateFinishedTrialError:  # this driver stalled and another one failed the trial as stale
            log.warning("trial %d was failed as stale by another driver before it started here", trial.number)
            return
        try:
            features = None
            k = trial.suggest_int("data.top_k", top_k[0], top_k[1]) if searched_k else None
            c = (trial.suggest_int("data.crosses", crosses[0], min(crosses[1], len(prepared.crosses)))
                 if searched_c else None)
            if k is not None or c is not None:
                features = trial_features(prepared, k, c)
            config = suggest_config(trial, spec.space, spec.train, n_features=n_features_for_space)
        except Exception as exc:  # an invalid combination of parameters fails this trial only
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"{type(exc).__name__}: {exc}"[:500])
            storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, ex.driver_id)
            frozen = study.tell(trial, state=TrialState.FAIL)
            _finish_progress(ex, study, frozen, 0.0)
            return
        target = getattr(config, "target_sparsity", None)
        attrs = {"target_sparsity": float(target)} if target is not None else {}  # stored with the result
        run_tags = {"study": spec.study.name, "sampler": spec.study.sampler, "seed": str(spec.study.seed),
                    "data_fingerprint": prepared.fingerprint,
                    **({"retry_of": str(trial.user_attrs["retry_of"])} if is_retry else {})}
        ex.trial_log.start(trial.number, dict(trial.params), run_tags)  # never blocks the search loop
        distributions = trial.distributions  # a copy on each access
        payload = TrialPayload(
            study_name=spec.study.name, trial_id=trial._trial_id, number=trial.number, config=config,
            objectives=tuple(ex.objectives), sampler=spec.study.sampler, pruner=spec.study.pruner,
            pruner_params=spec.pruner_params(), seed=spec.study.seed, cpus=cpus, features=features,
            memory_mb=spec.execution.trial_memory_mb, objective=spec.study.objective,
            return_model=spec.tracking.log_model or prepared.test is not None,
            params={name: (value, distributions[name]) for name, value in trial.params.items()},
            proposals=_propose(study, trial, worker_space) if worker_space else {},
            user_attrs={**trial.user_attrs, **attrs}, datetime_start=trial.datetime_start,
            local_storage=ex.storage_url if is_journal(ex.storage_url) else None, driver_node=driver_node,
            gpus=gpus, mixed_precision=spec.execution.mixed_precision,
            storage_retries=0 if _is_memory(ex.storage_url) else 3,
        )
        ref = task.remote(payload, actor, data_refs)
        in_flight[ref] = {"trial": trial, "started": time.monotonic(), "reason": None, "attrs": attrs,
                          "driver_params": frozenset(payload.params), "features": features}
        ex.n_run += 1

    def collect(ref: Any) -> None:
        nonlocal pending_retries
        info = in_flight.pop(ref)
        trial: optuna.Trial = info["trial"]
        try:
            report: TrialReport = ray.get(ref)
        except Exception as exc:
            reason = info["reason"] or storage.get_trial_user_attrs(trial._trial_id).get(MEMORY_REASON_ATTR)
            lost = _worker_lost(exc)
            retryable = reason is None and lost
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            reason = reason or (f"worker died: {type(exc).__name__}: {first}" if lost else
                                f"task error: {type(exc).__name__}: {first}")
            report = TrialReport("FAIL", error=reason, duration_s=time.monotonic() - info["started"])
            frozen_before = storage.get_trial(trial._trial_id)
            if retryable and ex.requeue(study, frozen_before):
                pending_retries += 1
                report.error = reason + " (re-queued)"
        else:
            if report.retryable and ex.requeue(study, storage.get_trial(trial._trial_id)):
                pending_retries += 1
                first, _, rest = (report.error or "storage outage").partition("\n")
                report.error = f"{first} (re-queued)\n{rest}"
        frozen = ex.tell(study, trial, report, info["attrs"])
        for name, dist in frozen.distributions.items():  # learn the parameters objectives suggest in workers
            if name not in info["driver_params"]:
                worker_space[name] = dist
        layer_sparsity = {f"layer_sparsity.{layer['name']}": layer["sparsity"]
                          for layer in report.accounting.get("layers", []) if layer.get("prunable")}
        ex.trial_log.finish(frozen.number, state=frozen.state.name, history=report.history,
                            metrics={**report.metrics, **layer_sparsity}, accounting=report.accounting,
                            error=report.error if frozen.state == TrialState.FAIL else None,
                            tags={"device": report.device} if report.device else None)
        if frozen.state == TrialState.COMPLETE and report.model is not None:
            v = frozen.values[0]
            better = ex.best_value is None or (v > ex.best_value if ex.directions[0] == "maximize"
                                               else v < ex.best_value)
            if better:
                ex.best_value, ex.best_model, ex.best_features = v, report.model, info["features"]
        ex.keep_model(frozen, report.model, info["features"])
        _finish_progress(ex, study, frozen, report.duration_s)

    interrupted = False
    try:
        while True:
            now = time.monotonic()
            can_start_new = budget_used < spec.study.n_trials and (deadline is None or now < deadline)
            while len(in_flight) < workers and (can_start_new or pending_retries > 0):
                dispatch()
                can_start_new = budget_used < spec.study.n_trials and (deadline is None or now < deadline)
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=spec.execution.heartbeat_interval)
            for ref in ready:
                collect(ref)
            now = time.monotonic()
            if now - last_beat >= spec.execution.heartbeat_interval:
                last_beat = now
                ex.record_driver(study, storage)
                for info in in_flight.values():
                    try:
                        storage.set_trial_system_attr(info["trial"]._trial_id, HEARTBEAT_ATTR, time.time())
                    except UpdateFinishedTrialError:  # failed as stale by another driver: see _Execution.tell
                        pass
                ids = {info["trial"]._trial_id for info in in_flight.values()}
                pending_retries += ex.fail_stale(study, storage, ids)[1]  # this driver runs them
            if spec.execution.trial_timeout is not None:
                for ref, info in list(in_flight.items()):
                    if info["reason"] is None and now - info["started"] > spec.execution.trial_timeout:
                        info["reason"] = f"time budget exceeded: ran over trial_timeout = " \
                                         f"{spec.execution.trial_timeout:g}s"
                        ray.cancel(ref, force=True)
    except KeyboardInterrupt:
        interrupted = True
        for ref, info in list(in_flight.items()):
            ray.cancel(ref, force=True)
            trial = info["trial"]
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", "interrupted (re-queued for the next run)")
            storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, ex.driver_id)
            frozen = study.tell(trial, state=TrialState.FAIL)
            ex.requeue(study, frozen)
            ex.trial_log.finish(frozen.number, state="FAIL", error="interrupted")
        raise
    finally:
        ex.trial_log.close()
        if not interrupted:
            _sync_unlogged(ex, study, storage)

    _evaluate_test(ex, study, prepared, task, data_refs)
    elapsed = time.perf_counter() - start
    _finish_parent(ex, study, prepared, elapsed)
    final_study = _detach_study(ex, study)
    return StudyResult(
        study_name=spec.study.name, storage=redact(ex.storage_url),
        tracking_uri=redact(ex.tracking_uri) if spec.tracking.enabled else None,
        mlflow_parent_run_id=ex.tracker.parent_run_id, study=final_study, objectives=ex.objectives,
        directions=ex.directions, elapsed_s=elapsed, n_trials_run=ex.n_run, model_uri=ex.model_uri,
        info={"workers": workers, "cpus_per_trial": cpus, "data_fingerprint": prepared.fingerprint,
              "n_rows": prepared.n_rows, "split": prepared.split, "ranking_rows": prepared.ranking_rows, "features": list(prepared.candidates), "crosses": list(prepared.crosses), "timings": prepared.timings,
              "ranking_cached": prepared.ranking_cached, "mlflow_failures": len(ex.tracker.failures),
              "mlflow_logging": ex.trial_log.mode},
    )


def _worker_lost(exc: BaseException) -> bool:
    """Whether a trial's task failed because its worker process or node was lost (so running it again may work),
    not because of the task itself (an exception, a value that cannot be deserialised, a cancelled task)."""
    import ray

    lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
            ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError)
    return isinstance(exc, lost)


def _check_gpus(gpus: float) -> int:
    """Check that a trial asking ``gpus`` GPUs fits on some node; return how many such trials fit at once.

    A task asking for resources no node has would wait forever (and with an autoscaler, for a node type that may
    never come): stop before any trial instead, naming the resource.
    """
    import ray

    if gpus <= 0:
        return 1 << 30
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes]
    total = float(ray.cluster_resources().get("GPU", 0.0))
    if not per_node or max(per_node) + 1e-9 < gpus:
        most = max(per_node, default=0.0)
        raise SpecError(f"[execution] gpus_per_trial = {gpus:g} but no node of the Ray cluster has that many GPUs "
                        f"(resource 'GPU': {total:g} in the cluster, at most {most:g} on one node)")
    return max(1, sum(int(g // gpus + 1e-9) for g in per_node))


def _propose(study: optuna.Study, trial: optuna.Trial, worker_space: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Values the study's sampler proposes for the parameters a worker is expected to suggest.

    Taken, as ``Trial._suggest`` would, from the trial's relative sample when the parameter is in the sampler's
    relative search space with the same distribution, and otherwise from ``sample_independent`` on the study as
    it stands now. The worker uses a proposal only if its objective suggests that name with that distribution
    (see :class:`~sparsearch.search.worker.WorkerTrial`); proposing is an optimisation and never fails a trial.
    """
    names = [name for name in worker_space if name not in trial.params]
    if not names:
        return {}
    out: dict[str, tuple[Any, Any]] = {}
    try:
        relative = trial.relative_params
        space = trial.relative_search_space or {}
        frozen = None
        for name in names:
            dist = worker_space[name]
            if name in relative and space.get(name) == dist:
                out[name] = (relative[name], dist)
                continue
            if frozen is None:
                frozen = study._storage.get_trial(trial._trial_id)
            out[name] = (study.sampler.sample_independent(study, frozen, name, dist), dist)
    except Exception as exc:  # the worker then asks the study itself
        if _is_storage_failure(exc):  # an outage, not a sampler's limit: never hidden
            raise
        log.debug("no proposals for trial %d: %s", trial.number, exc)
    return out


def _finish_progress(ex: _Execution, study: optuna.Study, frozen: FrozenTrial, duration: float) -> None:
    if ex.printer is None:
        return
    best = _best_values(study, len(ex.objectives))
    note = str(frozen.user_attrs.get("fail_reason", ""))[:120] if frozen.state == TrialState.FAIL else ""
    ex.printer.trial_done(frozen.number, frozen.state.name, list(frozen.values) if frozen.values else None, best,
                          duration, note)


def _sync_unlogged(ex: _Execution, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Write child runs for finished trials whose MLflow logging failed (this or an earlier execution)."""
    if not ex.spec.tracking.enabled or ex.tracker.parent_run_id is None:
        return
    ex.tracker.resume()
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    logged = study._storage.get_study_system_attrs(study._study_id)
    now = time.time()
    existing: dict[int, str] | None = None
    for t in study.get_trials(deepcopy=False, states=finished):
        if f"{LOGGED_PREFIX}{t.number}" in logged:
            continue
        owner = t.system_attrs.get(DRIVER_ATTR)
        if owner not in (None, ex.driver_id) and f"{DONE_PREFIX}{owner}" not in logged:
            finished_at = t.datetime_complete.timestamp() if t.datetime_complete else 0.0
            if now - finished_at <= ex.spec.execution.stale_after:
                continue  # a live driver logs its own trials (syncing them too gave duplicate child runs)
        # finish the child run created at dispatch when there is one, so a trial never gets two runs: the one
        # recorded in the study, else one in MLflow that a killed driver (or a storage outage) left unrecorded
        run_id = logged.get(f"{RUN_PREFIX}{t.number}")
        if run_id is None:
            if existing is None:
                existing = ex.tracker.child_runs(study.study_name)
            run_id = existing.get(t.number) or ex.tracker.start_trial(
                t.number, t.params, {"study": study.study_name, "synced_late": "true"})
        metrics = dict(t.user_attrs.get("metrics", {}))
        if ex.tracker.finish_trial(run_id, state=t.state.name, metrics=metrics,
                                   error=t.user_attrs.get("fail_reason")):
            _mark_logged(study, t.number, run_id)
    # this driver has logged what it could: its remaining unlogged trials are any later driver's to sync
    study._storage.set_study_system_attr(study._study_id, f"{DONE_PREFIX}{ex.driver_id}", time.time())


def _mark_logged(study: optuna.Study, number: int, run_id: str) -> None:
    """Record (on the study: a finished trial is read-only) that trial ``number`` has its MLflow child run."""
    study._storage.set_study_system_attr(study._study_id, f"{LOGGED_PREFIX}{number}", run_id)


TEST_PREFIX = "test:"
"""Study user attribute per trial number: that trial's metrics on the held-out test rows (set once)."""


def get_test_record(study: optuna.Study, number: int) -> dict[str, Any] | None:
    """The stored test evaluation of trial ``number`` (``{"metrics": ..., "n_rows": ..., ...}``) or ``None``."""
    rec = study.user_attrs.get(f"{TEST_PREFIX}{number}")
    return rec if isinstance(rec, dict) else None


def _best_complete(study: optuna.Study, n_objectives: int) -> list[FrozenTrial]:
    """The best trial, or the Pareto front of a multi-objective study (none before a trial completes)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return [study.best_trial] if n_objectives == 1 else list(study.best_trials)


def _trial_features(spec: StudySpec, prepared: PreparedData, params: dict[str, Any]) -> tuple[str, ...] | None:
    top_k = spec.data.top_k
    k = int(params["data.top_k"]) if top_k is not None and top_k[0] < top_k[1] and "data.top_k" in params else None
    c = int(params["data.crosses"]) if "data.crosses" in params else None
    return trial_features(prepared, k, c)


def _evaluate_test(ex: _Execution, study: optuna.Study, prepared: PreparedData, task: Any,
                   data_refs: list[Any]) -> None:
    """Evaluate the best trial (single objective) or every Pareto trial once on the held-out test rows.

    A trial's test metrics are stored as the study user attribute ``test:<number>`` and never recomputed for the
    same split: a resumed study that keeps its incumbent reports the same figures. The model comes from this
    execution when it trained the trial; otherwise (an incumbent of an earlier execution that was never tested) the
    trial is re-trained from its stored parameters with its own seed, on a Ray worker, and marked ``retrained``.
    """
    import ray

    from sparsearch.search.data import select_features
    from sparsearch.spaces import config_from_params, evaluate_model

    spec = ex.spec
    if prepared.test is None or spec.study.objective is not None:
        if spec.study.objective is not None and prepared.test is not None:
            log.info("no test metrics: a custom objective returns no model to evaluate")
        return
    digest = prepared.split.get("digest")
    for t in _best_complete(study, len(ex.objectives)):
        rec = get_test_record(study, t.number)
        if rec is not None and rec.get("split_digest") == digest:
            continue
        retrained = False
        kept = ex.models.get(t.number)
        try:
            if kept is not None:
                model, features = kept[1], kept[2]
            else:
                features = _trial_features(spec, prepared, t.params)
                config = config_from_params(t.params, spec.space, spec.train,
                                            n_features=len(prepared.candidates) or None)
                payload = TrialPayload(
                    study_name=spec.study.name, trial_id=t._trial_id, number=t.number, config=config,
                    objectives=tuple(ex.objectives), sampler=spec.study.sampler, pruner="none", pruner_params={},
                    seed=spec.study.seed, cpus=spec.execution.cpus_per_trial, features=features, return_model=True)
                report: TrialReport = ray.get(task.remote(payload, None, data_refs))
                if report.state != "COMPLETE" or report.model is None:
                    raise RuntimeError(f"re-training trial {t.number} ended {report.state}: {report.error}")
                model, retrained = report.model, True
                ex.models[t.number] = (list(t.values), model, features)  # the model logged for this trial
            metrics = evaluate_model(model, select_features(prepared.test, features))
        except Exception as exc:  # a test evaluation must never lose the study
            log.warning("could not evaluate trial %d on the test rows: %s", t.number, exc)
            continue
        rec = {"metrics": metrics, "n_rows": int(prepared.test.n_rows), "split_digest": digest,
               "retrained": retrained, "driver": ex.driver_id}
        study.set_user_attr(f"{TEST_PREFIX}{t.number}", rec)
        run_id = study._storage.get_study_system_attrs(study._study_id).get(f"{LOGGED_PREFIX}{t.number}")
        ex.tracker.log_run(run_id, metrics, {"test_evaluated": "true", "test_rows": str(rec["n_rows"])})
        ex.say(f"trial {t.number} on {rec['n_rows']} held-out test rows: "
               + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def _finish_parent(ex: _Execution, study: optuna.Study, prepared: PreparedData, elapsed: float) -> None:
    tracker = ex.tracker
    parent = tracker.parent_run_id
    if parent is None:
        return
    trials = study.get_trials(deepcopy=False)
    metrics = {
        "n_trials": len(trials),
        "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL for t in trials),
        "elapsed_s": elapsed,
    }
    best = _best_values(study, len(ex.objectives))
    if best:
        metrics[f"best_{ex.objectives[0]}"] = best[0]
    best_trials = _best_complete(study, len(ex.objectives))
    if len(best_trials) == 1 and (rec := get_test_record(study, best_trials[0].number)) is not None:
        metrics.update(rec["metrics"])  # the incumbent's test metrics (test_auc, ...) on the parent
    try:
        df = study.trials_dataframe(multi_index=False)
        tracker.log_artifact_text(parent, "trials.csv", df.to_csv(index=False))
        tracker.log_table(parent, df)  # the same trials, as a table MLflow's UI shows
    except Exception as exc:  # pragma: no cover - logging must never lose the study
        log.warning("could not write the trials table: %s", exc)
    tracker.log_search(parent, trials, ex.objectives, ex.directions, best_trials,
                       _child_runs(study))
    if metrics["n_complete"] >= 1:
        for name, html in _plots(study, ex.objectives).items():
            tracker.log_artifact_text(parent, name, html)
    if ex.spec.tracking.log_model:
        _log_best_model(ex, study, prepared, parent)
    tracker.finish_parent("FINISHED", metrics, {"status": "FINISHED"})


def _log_best_model(ex: _Execution, study: optuna.Study, prepared: PreparedData, parent: str) -> None:
    """Log the best trial's model as a pyfunc that takes raw rows (tabular studies; an image study's network is
    logged with mlflow.pytorch); record its URI on the study for ``sparsearch predict``.

    The model is the study's incumbent (the first of the Pareto front) when this execution holds it (trained or
    re-trained for the test rows), else this execution's best trial's.
    """
    best = _best_complete(study, len(ex.objectives))
    kept = ex.models.get(best[0].number) if best else None
    if kept is not None and kept[1] is not None:
        network, features, number = kept[1], kept[2], best[0].number
    elif ex.best_model is not None:
        network, features, number = ex.best_model, ex.best_features, None
    else:
        return
    if prepared.encoder is None:
        ex.model_uri = ex.tracker.log_torch_model(parent, network)
    else:
        from sparsearch.search.model import build_model_package

        package = build_model_package(network, prepared.encoder, features)
        registered = ex.spec.study.name if ex.spec.tracking.register_model else None
        example = prepared.example.select(list(package.encoder.raw_features))  # raw rows, as the model reads them
        ex.model_uri = ex.tracker.log_pyfunc_model(parent, package, example, registered_name=registered)
    if ex.model_uri is not None:
        study.set_user_attr("model_uri", ex.model_uri)
        study.set_user_attr("model_tracking_uri", redact(ex.tracking_uri))
        study.set_user_attr("model_trial", number)  # None: this execution's best, not the study's incumbent


def _child_runs(study: optuna.Study) -> dict[int, str]:
    """Trial number -> MLflow child run id, as recorded in the study (see :mod:`sparsearch.search.trial_log`)."""
    out: dict[int, str] = {}
    for key, value in study._storage.get_study_system_attrs(study._study_id).items():
        for prefix in (RUN_PREFIX, LOGGED_PREFIX):
            if key.startswith(prefix) and key[len(prefix):].isdigit() and isinstance(value, str):
                out[int(key[len(prefix):])] = value
    return out


class _SnapshotStudy(optuna.Study):
    """A read-only view of a study whose trials are listed once and never deep-copied.

    Optuna's importance plot reads ``study.trials`` (a deep copy of every trial) once per parameter: with 200
    trials of 20 parameters that was 2 s at the end of every study. The plots only read trials.
    """

    def __init__(self, study: optuna.Study) -> None:
        super().__init__(study_name=study.study_name, storage=study._storage, sampler=study.sampler,
                         pruner=study.pruner)
        self._snapshot = study.get_trials(deepcopy=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return list(self._snapshot)

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[FrozenTrial]:
        return [t for t in self._snapshot if states is None or t.state in states]


def _plots(study: optuna.Study, objectives: list[str]) -> dict[str, str]:
    """Optuna's visualizations as self-contained HTML (plotly) for the parent run."""
    import optuna.visualization as vis

    study = _SnapshotStudy(study)
    out: dict[str, str] = {}
    makers: dict[str, Callable[[], Any]] = {}
    if len(objectives) == 1:
        makers["optimization_history.html"] = lambda: vis.plot_optimization_history(study, target_name=objectives[0])
    else:
        makers["pareto_front.html"] = lambda: vis.plot_pareto_front(study, target_names=objectives)
    n_complete = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    if n_complete >= 3:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        makers["param_importances.html"] = lambda: vis.plot_param_importances(
            study, evaluator=evaluator, target=(lambda t: t.values[0]) if len(objectives) > 1 else None,
            target_name=objectives[0])
    import warnings

    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = make().to_html(include_plotlyjs="cdn", full_html=True)
        except Exception as exc:  # a plot must never fail a study
            log.info("skipped %s: %s", name, exc)
    return out


def _is_memory(url: str) -> bool:
    return url in ("memory", "inmemory", ":memory:")


def _detach_study(ex: _Execution, study: optuna.Study) -> optuna.Study:
    """A study object that stays usable after the storage actor is gone."""
    if _is_memory(ex.storage_url):
        local = optuna.storages.InMemoryStorage()
        optuna.copy_study(from_study_name=study.study_name, from_storage=study._storage, to_storage=local)
        return optuna.load_study(study_name=study.study_name, storage=local)
    return optuna.load_study(study_name=study.study_name, storage=open_storage(ex.storage_url))


def load_result(study_name: str, *, storage: str | None = None,
                results_dir: str | os.PathLike[str] = "sparsearch-results") -> StudyResult:
    """Read a stored study (what ``sparsearch show`` prints) without running anything."""
    results = Path(results_dir)
    url = storage or env_storage_url() or default_storage_url(results)
    if url.startswith("journal:") and not Path(url.removeprefix("journal:")).exists():
        raise SpecError(f"no study storage at {url!r} (run a study first, or pass --storage / --results)")
    backend = open_storage(url)
    try:
        study = optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        from sparsearch.errors import unknown_choice

        raise unknown_choice(f"study in {redact(url)!r}", study_name, names) from None
    objectives = list(study.user_attrs.get("objectives") or study.metric_names
                      or [f"value_{i}" for i in range(len(study.directions))])
    logged = [k for k in backend.get_study_system_attrs(study._study_id) if k.startswith(LOGGED_PREFIX)]
    return StudyResult(study_name=study_name, storage=redact(url), tracking_uri=None, mlflow_parent_run_id=None,
                       study=study, objectives=objectives, directions=[d.name.lower() for d in study.directions],
                       info={"n_mlflow_child_runs": len(logged), "split": study.user_attrs.get("split")},
                       model_uri=study.user_attrs.get("model_uri"))
