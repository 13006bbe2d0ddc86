"""Every record sparsearch keeps in an Optuna study, and every operation on them.

This module is the one place that spells a study key or a failure reason. Other modules call its functions:

- **trial user attributes** (shown by ``trials_dataframe``, the run JSON and ``show``): ``fail_reason`` (or
  ``note`` for a trial that ended otherwise with a message), ``metrics``, the headline metrics, ``duration_s``,
  ``ray_node``, ``device``, ``target_sparsity``, ``retry_of`` / ``attempt`` on a re-queued trial, and
  ``warm_start`` (``"portfolio"`` or ``"study:NAME"``) on a trial enqueued by ``[study] warm_start``;
- **trial system attributes**: the driver that owns the trial (:data:`DRIVER_ATTR`) and its heartbeat
  (:data:`HEARTBEAT_ATTR`);
- **study user attributes**: ``objectives``, ``created_by``, ``split``, ``test:<number>`` (a trial's metrics on
  the held-out test rows) and the best model's ``model_uri`` / ``model_tracking_uri`` / ``model_trial``;
- **study system attributes**: each driver's identity with its last heartbeat (``sparsearch:driver-proc:<id>``),
  a finished driver (``sparsearch:driver-done:<id>``), and each trial's MLflow child run, once created
  (``sparsearch:mlflow-run:<n>``) and once complete (``sparsearch:mlflow:<n>``).

The names are a stable interface (``tests/search/test_layout.py`` compares them with a golden file).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from sparsearch._redact import redact
from sparsearch._types import JSONDict, JSONMapping, JSONValue, ParamValue
from sparsearch.errors import first_line
from sparsearch.search._internals import study_id, study_storage, trial_id
from sparsearch.search.storage import batched_writes

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

    from sparsearch.search.protocol import ReportState, TrialReport

__all__ = [
    "DONE_PREFIX", "DRIVER_ATTR", "DRIVER_PROC_PREFIX", "FAIL_REASON", "HEADLINE_ATTRS", "HEARTBEAT_ATTR",
    "LOGGED_PREFIX", "RUN_PREFIX", "TEST_PREFIX", "Reason", "child_runs", "driver_records", "fail_reason",
    "fail_stored_trial", "fail_trial", "finished_state", "get_test_record", "logged_numbers", "mark_driver_done", "mark_logged", "mark_runs",
    "memory_reason", "model_uri", "model_tracking_uri", "record_driver", "record_heartbeat", "record_owner",
    "requeue", "retry_of", "run_key", "logged_key", "set_model", "set_split", "set_study_identity",
    "stored_objectives", "stored_split", "stored_test_metrics", "store_and_tell", "store_test_record", "trial_metrics",
    "WARM_START", "enqueue_warm", "warm_source", "warm_started",
]

# -- trial user attributes -----------------------------------------------------------------------------------------
FAIL_REASON = "fail_reason"
"""Why a trial failed (one line)."""
NOTE = "note"
"""A message of a trial that did not fail (a pruned trial's pruner message)."""
METRICS = "metrics"
"""Every numeric metric of a trial, in one attribute (one storage write)."""
HEADLINE_ATTRS = ("realized_sparsity", "nnz_params", "flops_sparse")
"""Metrics kept as trial user attributes of their own (all metrics are in the ``metrics`` attribute)."""
DURATION = "duration_s"
RAY_NODE = "ray_node"
DEVICE = "device"
TARGET_SPARSITY = "target_sparsity"
"""The configuration's target sparsity, stored with the result."""
RETRY_OF = "retry_of"
"""On a re-queued trial: the number of the trial it runs again."""
ATTEMPT = "attempt"
"""On a re-queued trial: how many times its work was re-queued (up to ``max_retries``)."""
WARM_START = "warm_start"
"""On a trial enqueued by ``[study] warm_start``: where its parameters came from (``portfolio``, ``study:NAME``)."""

# -- trial system attributes ---------------------------------------------------------------------------------------
DRIVER_ATTR = "sparsearch:driver"
"""The id of the driver that dispatched the trial (whose MLflow child run it is)."""
HEARTBEAT_ATTR = "sparsearch:heartbeat"
"""The time of the owning driver's last heartbeat for this RUNNING trial."""

# -- study user attributes -----------------------------------------------------------------------------------------
OBJECTIVES = "objectives"
CREATED_BY = "created_by"
SPLIT = "split"
"""How the rows were split (read back by ``show``)."""
TEST_PREFIX = "test:"
"""Study user attribute per trial number: that trial's metrics on the held-out test rows (set once)."""
MODEL_URI = "model_uri"
MODEL_TRACKING_URI = "model_tracking_uri"
MODEL_TRIAL = "model_trial"

# -- study system attributes ---------------------------------------------------------------------------------------
DRIVER_PROC_PREFIX = "sparsearch:driver-proc:"
"""Study system attribute per driver id: its host, process id and process start time, refreshed with its
heartbeats (see :mod:`sparsearch.search._liveness`)."""
DONE_PREFIX = "sparsearch:driver-done:"
"""Study system attribute per driver id: set when that driver finished (its unlogged trials may be synced)."""
RUN_PREFIX = "sparsearch:mlflow-run:"
"""Study system attribute per trial number: its MLflow child run id, set when the run is created."""
LOGGED_PREFIX = "sparsearch:mlflow:"
"""Study system attribute per trial number: set once the trial's child run is complete."""


class Reason(str, Enum):
    """The fixed failure reasons (and the messages for child runs) sparsearch writes; see also the ``*_reason``
    functions for the ones that carry a value."""

    INTERRUPTED = "interrupted (re-queued for the next run)"
    INTERRUPTED_RUN = "interrupted"
    STALE_RUN = "stale trial (its driver stopped)"
    STALE_NAMELESS = "stale: started by a driver of this host that is gone (before it recorded its name)"
    STORAGE_OUTAGE = "storage outage"
    REQUEUED = " (re-queued)"

    def __str__(self) -> str:
        return self.value


def stale_gone_reason(record: JSONMapping) -> str:
    return f"stale: its driver (pid {record.get('pid')} on {record.get('host')}) is gone (the process no longer exists)"


def stale_silent_reason(seconds: float) -> str:
    return f"stale: no heartbeat for {seconds:.0f}s (its driver stopped)"


def not_finite_reason(values: list[float]) -> str:
    return f"objective is not finite: {values}"


def invalid_config_reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def task_error_reason(exc: BaseException, *, lost: bool) -> str:
    """A Ray task's error: its worker or node was lost (``worker died``), or the task itself failed."""
    first = first_line(str(exc), limit=200)
    return f"{'worker died' if lost else 'task error'}: {type(exc).__name__}: {first}"


def timeout_reason(timeout: float) -> str:
    return f"time budget exceeded: ran over trial_timeout = {timeout:g}s"


def memory_reason(rss_mb: float, limit_mb: int) -> str:
    return f"memory budget exceeded: resident {rss_mb:.0f} MB > trial_memory_mb {limit_mb}"


def outage_reason(exc: BaseException, tb: str) -> str:
    return f"storage outage in the worker: {type(exc).__name__}: {exc}\n{tb}"


def requeued(reason: str) -> str:
    """``reason`` for a trial that was re-queued: the mark goes at the end of its first line."""
    first, sep, rest = reason.partition("\n")
    return f"{first}{Reason.REQUEUED}{sep}{rest}"


# -- trials ----------------------------------------------------------------------------------------------------------
def finished_state(state: TrialState) -> ReportState:
    """A finished trial's state by the name a worker's report gives it (``COMPLETE``, ``PRUNED``, ``FAIL``).

    Example:
        >>> finished_state(TrialState.PRUNED)
        'PRUNED'
    """
    if state == TrialState.COMPLETE:
        return "COMPLETE"
    if state == TrialState.PRUNED:
        return "PRUNED"
    if state == TrialState.FAIL:
        return "FAIL"
    raise ValueError(f"trial state must be COMPLETE, PRUNED or FAIL (a finished trial), got {state.name}")


def fail_reason(t: FrozenTrial) -> str | None:
    """Why trial ``t`` failed, when it did and the reason was stored."""
    reason = t.user_attrs.get(FAIL_REASON)
    return None if reason is None else str(reason)


def stored_fail_reason(storage: BaseStorage, tid: int) -> str | None:
    """The failure reason a worker stored on a running trial before its process ended (its memory budget)."""
    reason = storage.get_trial_user_attrs(tid).get(FAIL_REASON)
    return None if reason is None else str(reason)


def set_fail_reason(storage: BaseStorage, tid: int, reason: str) -> None:
    """Store ``reason`` on a running trial (a worker does, before its process stops on the memory budget)."""
    storage.set_trial_user_attr(tid, FAIL_REASON, reason)


def trial_metrics(t: FrozenTrial) -> dict[str, float]:
    return dict(t.user_attrs.get(METRICS, {}))


def retry_of(t: FrozenTrial | optuna.Trial) -> int | None:
    """The number of the trial that ``t`` runs again, or ``None`` for a fresh trial."""
    value = t.user_attrs.get(RETRY_OF)
    return None if value is None else int(value)


def owner(t: FrozenTrial) -> str | None:
    """The id of the driver that dispatched trial ``t`` (``None``: killed before it recorded itself)."""
    value = t.system_attrs.get(DRIVER_ATTR)
    return None if value is None else str(value)


def last_heartbeat(t: FrozenTrial, default: float) -> float:
    return float(t.system_attrs.get(HEARTBEAT_ATTR, default))


def has_heartbeat(t: FrozenTrial) -> bool:
    return t.system_attrs.get(HEARTBEAT_ATTR) is not None


def record_owner(storage: BaseStorage, tid: int, driver_id: str) -> None:
    """Record that driver ``driver_id`` owns the trial (raises ``UpdateFinishedTrialError`` once it is finished)."""
    storage.set_trial_system_attr(tid, DRIVER_ATTR, driver_id)


def record_heartbeat(storage: BaseStorage, tid: int) -> None:
    """Refresh a running trial's heartbeat; a trial another driver already failed as stale is left alone."""
    try:
        storage.set_trial_system_attr(tid, HEARTBEAT_ATTR, time.time())
    except UpdateFinishedTrialError:  # failed as stale by another driver: see store_and_tell
        pass


def fail_trial(study: optuna.Study, trial: optuna.Trial, reason: str, driver_id: str) -> FrozenTrial:
    """Fail a trial this driver holds (its configuration was invalid, or it was interrupted) with ``reason``."""
    storage = study_storage(study)
    storage.set_trial_user_attr(trial_id(trial), FAIL_REASON, reason)
    record_owner(storage, trial_id(trial), driver_id)
    return study.tell(trial, state=TrialState.FAIL)


def fail_stored_trial(storage: BaseStorage, t: FrozenTrial, reason: str) -> bool:
    """Fail another driver's RUNNING trial ``t`` with ``reason``; ``False`` when it was finished first."""
    try:
        storage.set_trial_user_attr(trial_id(t), FAIL_REASON, reason)
        storage.set_trial_state_values(trial_id(t), TrialState.FAIL)
    except UpdateFinishedTrialError:  # another driver (or its own, late) finished it first
        return False
    return True


def requeue(study: optuna.Study, t: FrozenTrial, max_retries: int) -> bool:
    """Enqueue ``t``'s parameters again (as a retry of it) unless its work was re-queued ``max_retries`` times."""
    attempt = int(t.user_attrs.get(ATTEMPT, 0)) + 1
    if attempt > max_retries:
        return False
    warm = {WARM_START: t.user_attrs[WARM_START]} if WARM_START in t.user_attrs else {}
    study.enqueue_trial(dict(t.params), user_attrs={RETRY_OF: t.number, ATTEMPT: attempt, **warm})
    return True


def driver_attrs(target_sparsity: float | None) -> JSONDict:
    """The user attributes the driver stores with a trial's result (what it knows from the sampled config)."""
    return {TARGET_SPARSITY: float(target_sparsity)} if target_sparsity is not None else {}


def store_and_tell(study: optuna.Study, trial: optuna.Trial, report: TrialReport, attrs: Mapping[str, JSONValue],
                   driver_id: str) -> FrozenTrial:
    """Store what ``report`` brings back (plus the driver's user ``attrs``), then tell the trial's state.

    A COMPLETE report with a value that is not finite fails the trial. When another driver failed the trial as
    stale while it ran here, the stored outcome stands (the re-queued copy runs again) and is returned.
    """
    import logging

    storage = study_storage(study)
    tid = trial_id(trial)
    try:
        with batched_writes(storage):  # one append to a journal file instead of ~6
            _store_report(storage, tid, report, attrs, driver_id)
        if report.state == "COMPLETE":
            values = report.values or []
            if any(not math.isfinite(v) for v in values):
                storage.set_trial_user_attr(tid, FAIL_REASON, not_finite_reason(values))
                return study.tell(trial, state=TrialState.FAIL)
            return study.tell(trial, values)
        if report.state == "PRUNED":
            return study.tell(trial, state=TrialState.PRUNED)
        return study.tell(trial, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        logging.getLogger("sparsearch").warning(
            "trial %d was failed as stale by another driver while it ran here; its result is dropped (the "
            "re-queued copy runs again)", trial.number)
        return storage.get_trial(tid)


def _store_report(storage: BaseStorage, tid: int, report: TrialReport, attrs: Mapping[str, JSONValue],
                  driver_id: str) -> None:
    record_owner(storage, tid, driver_id)  # whose MLflow runs these are (sync)
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
        storage.set_trial_user_attr(tid, METRICS, numeric)
    for key in HEADLINE_ATTRS:
        if key in numeric:
            storage.set_trial_user_attr(tid, key, numeric[key])
    if report.error:
        storage.set_trial_user_attr(tid, FAIL_REASON if report.state == "FAIL" else NOTE,
                                    redact(first_line(report.error))[:500])
    storage.set_trial_user_attr(tid, DURATION, round(report.duration_s, 3))
    if report.node:
        storage.set_trial_user_attr(tid, RAY_NODE, report.node[:16])
    if report.device:
        storage.set_trial_user_attr(tid, DEVICE, report.device)


# -- drivers ---------------------------------------------------------------------------------------------------------
def record_driver(storage: BaseStorage, sid: int, driver_id: str, identity: Mapping[str, JSONValue]) -> None:
    """Write a driver's host, process id and process start time (and the time: its heartbeat) into the study."""
    storage.set_study_system_attr(sid, f"{DRIVER_PROC_PREFIX}{driver_id}", {**identity, "beat": time.time()})


def driver_records(attrs: JSONMapping) -> dict[str, JSONDict]:
    """Driver id -> its recorded identity, from a study's system attributes."""
    return {key.removeprefix(DRIVER_PROC_PREFIX): value for key, value in attrs.items()
            if key.startswith(DRIVER_PROC_PREFIX) and isinstance(value, dict)}


def mark_driver_done(study: optuna.Study, driver_id: str) -> None:
    """Record that ``driver_id`` has logged what it could: its remaining unlogged trials are any driver's to sync."""
    study_storage(study).set_study_system_attr(study_id(study), f"{DONE_PREFIX}{driver_id}", time.time())


def driver_done(attrs: JSONMapping, driver_id: str) -> bool:
    return f"{DONE_PREFIX}{driver_id}" in attrs


# -- MLflow child runs -----------------------------------------------------------------------------------------------
def run_key(number: int) -> str:
    """The study system attribute naming trial ``number``'s child run once it exists."""
    return f"{RUN_PREFIX}{number}"


def logged_key(number: int) -> str:
    """The study system attribute naming trial ``number``'s child run once it is complete."""
    return f"{LOGGED_PREFIX}{number}"


def mark_runs(storage: BaseStorage, sid: int, marks: Mapping[str, str]) -> None:
    """Write child-run marks (:func:`run_key` / :func:`logged_key` -> run id) in one journal append."""
    with batched_writes(storage):
        for key, run_id in marks.items():
            storage.set_study_system_attr(sid, key, run_id)


def mark_logged(study: optuna.Study, number: int, run_id: str) -> None:
    """Record (on the study: a finished trial is read-only) that trial ``number`` has its complete child run."""
    study_storage(study).set_study_system_attr(study_id(study), logged_key(number), run_id)


def study_system_attrs(study: optuna.Study) -> JSONDict:
    return study_storage(study).get_study_system_attrs(study_id(study))


def created_run(attrs: JSONMapping, number: int) -> str | None:
    """Trial ``number``'s child run id, if one was created (complete or not)."""
    value = attrs.get(run_key(number))
    return None if value is None else str(value)


def logged_run(attrs: JSONMapping, number: int) -> str | None:
    """Trial ``number``'s child run id, if the run is complete."""
    value = attrs.get(logged_key(number))
    return None if value is None else str(value)


def child_runs(attrs: JSONMapping) -> dict[int, str]:
    """Trial number -> MLflow child run id, as recorded in the study's system attributes."""
    out: dict[int, str] = {}
    for key, value in attrs.items():
        for prefix in (RUN_PREFIX, LOGGED_PREFIX):
            if key.startswith(prefix) and key[len(prefix):].isdigit() and isinstance(value, str):
                out[int(key[len(prefix):])] = value
    return out


def logged_numbers(attrs: JSONMapping) -> list[str]:
    """The keys of the trials whose child runs are complete."""
    return [k for k in attrs if k.startswith(LOGGED_PREFIX)]


# -- the study -------------------------------------------------------------------------------------------------------
def set_study_identity(study: optuna.Study, objectives: list[str]) -> None:
    """Mark a new study as sparsearch's, with its objectives' names."""
    study.set_user_attr(OBJECTIVES, objectives)
    study.set_user_attr(CREATED_BY, "sparsearch")


def stored_objectives(study: optuna.Study) -> list[str] | None:
    stored = study.user_attrs.get(OBJECTIVES)
    return None if stored is None else list(stored)


def stored_split(study: optuna.Study) -> JSONDict | None:
    return study.user_attrs.get(SPLIT)


def set_split(study: optuna.Study, split: JSONDict) -> None:
    """Record how the rows were split (read back by ``show``), unless the study has it already."""
    if split and stored_split(study) != split:
        study.set_user_attr(SPLIT, split)


def get_test_record(study: optuna.Study, number: int) -> JSONDict | None:
    """The stored test evaluation of trial ``number`` (``{"metrics": ..., "n_rows": ..., ...}``) or ``None``."""
    rec = study.user_attrs.get(f"{TEST_PREFIX}{number}")
    return rec if isinstance(rec, dict) else None


def stored_test_metrics(record: JSONMapping) -> dict[str, float]:
    """The metrics of a stored test record (:func:`get_test_record`) by name: ``{"test_auc": ..., ...}``."""
    metrics = record["metrics"]
    if not isinstance(metrics, dict):
        raise TypeError(f"a test record's metrics must be a JSON object, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(value, int | float):
            raise TypeError(f"test metric {name!r} must be a number, got {type(value).__name__}")
        out[name] = value
    return out


def store_test_record(study: optuna.Study, number: int, record: JSONDict) -> None:
    study.set_user_attr(f"{TEST_PREFIX}{number}", record)


def set_model(study: optuna.Study, uri: str, tracking_uri: str, number: int | None) -> None:
    """Record the best model's URI for ``sparsearch predict`` (``number`` ``None``: this execution's best, not the
    study's incumbent)."""
    study.set_user_attr(MODEL_URI, uri)
    study.set_user_attr(MODEL_TRACKING_URI, tracking_uri)
    study.set_user_attr(MODEL_TRIAL, number)


def model_uri(study: optuna.Study) -> str | None:
    return study.user_attrs.get(MODEL_URI)


def model_tracking_uri(study: optuna.Study) -> str | None:
    return study.user_attrs.get(MODEL_TRACKING_URI)


def enqueue_warm(study: optuna.Study, params: Mapping[str, ParamValue], source: str) -> None:
    """Enqueue a warm-start trial with ``params``, marked with :data:`WARM_START` = ``source``."""
    study.enqueue_trial(dict(params), user_attrs={WARM_START: source}, skip_if_exists=False)


def warm_source(t: FrozenTrial | optuna.Trial) -> str | None:
    """Where a warm-start trial's parameters came from, or ``None`` for a trial the sampler chose."""
    source = t.user_attrs.get(WARM_START)
    return str(source) if source is not None else None


def warm_started(study: optuna.Study) -> bool:
    """Whether any trial of ``study`` (waiting, running or finished) was enqueued by a warm start."""
    return any(WARM_START in t.user_attrs for t in study.get_trials(deepcopy=False))
