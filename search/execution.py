"""The state of one execution of a study (one call of ``run_study``) and its bookkeeping in the Optuna study.

An :class:`Execution` knows the spec, this driver's id and identity, the MLflow tracker and trial log, and the
models kept for the test evaluation. It writes what a trial's report brings back into the study and tells the
trial (:meth:`Execution.tell`), and it finds RUNNING trials whose driver stopped and re-queues them
(:meth:`Execution.fail_stale`). The keys it writes into the study are defined here.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from sparsearch._redact import redact
from sparsearch.errors import first_line
from sparsearch.search import _liveness
from sparsearch.search._internals import study_id, study_storage, trial_id
from sparsearch.search.progress import ProgressPrinter
from sparsearch.search.results import best_values
from sparsearch.search.spec import StudySpec
from sparsearch.search.storage import (
    absolute_storage_url,
    batched_writes,
    default_storage_url,
    env_storage_url,
)
from sparsearch.search.tracking import Tracker, default_tracking_uri
from sparsearch.search.trial_log import RUN_PREFIX, TrialLog
from sparsearch.search.worker import TrialReport

__all__ = ["DONE_PREFIX", "DRIVER_ATTR", "DRIVER_PROC_PREFIX", "HEARTBEAT_ATTR", "Execution", "resolve_urls"]

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



def resolve_urls(spec: StudySpec, results_dir: Path) -> tuple[str, str]:
    # absolute: the storage actor and workers open a journal or SQLite file from Ray's working folder
    storage = absolute_storage_url(spec.storage.url or env_storage_url() or default_storage_url(results_dir))
    tracking = spec.tracking.uri or default_tracking_uri(results_dir)
    return storage, tracking


class Execution:
    """State of one execution of a study (one call of :func:`run_study`)."""

    def __init__(self, spec: StudySpec, results_dir: Path, progress: Callable[..., Any] | bool) -> None:
        self.spec = spec
        self.results_dir = results_dir
        self.objectives = list(spec.study.objectives)
        self.directions = spec.study.resolved_directions()
        self.driver_id = uuid.uuid4().hex[:12]
        self.identity = _liveness.driver_identity()
        self.storage_url, self.tracking_uri = resolve_urls(spec, results_dir)
        experiment = spec.tracking.experiment or spec.study.name
        self.tracker = Tracker(self.tracking_uri, experiment, results_dir / "artifacts",
                               enabled=spec.tracking.enabled, study_name=spec.study.name)
        self.progress = progress
        self.printer: ProgressPrinter | None = None
        self.trial_log: TrialLog | None = None
        self.model_uri: str | None = None
        self.models: dict[int, tuple[list[float], Any, tuple[str, ...] | None]] = {}
        """Trained models that may be evaluated on the test rows at the end: number -> (values, model,
        features). Only the best trial (single objective) or this execution's non-dominated trials are kept."""
        self.n_run = 0

    def say(self, text: str) -> None:
        if self.printer is not None:
            self.printer.message(text)

    def trial_done(self, study: optuna.Study, frozen: FrozenTrial, duration: float) -> None:
        """One progress line for a finished trial (when progress is shown)."""
        if self.printer is None:
            return
        best = best_values(study, len(self.objectives))
        note = str(frozen.user_attrs.get("fail_reason", ""))[:120] if frozen.state == TrialState.FAIL else ""
        self.printer.trial_done(frozen.number, frozen.state.name, list(frozen.values) if frozen.values else None,
                                best, duration, note)

    def signed(self, values: list[float]) -> list[float]:
        """``values`` with every objective turned into one to maximise (the order ``models`` keeps)."""
        return [v if d == "maximize" else -v for d, v in zip(self.directions, values)]

    def best_kept(self) -> tuple[int, Any, tuple[str, ...] | None] | None:
        """``(number, model, features)`` of the kept model that is best in the first objective (ties: the
        earlier trial), or ``None`` when no model is kept."""
        if not self.models:
            return None
        number = max(self.models, key=lambda n: (self.models[n][0][0], -n))
        _, model, features = self.models[number]
        return number, model, features

    def keep_model(self, frozen: FrozenTrial, model: Any, features: tuple[str, ...] | None) -> None:
        """Keep ``model`` if its trial may end up best (for the test evaluation), dropping dominated ones."""
        if model is None or frozen.state != TrialState.COMPLETE or frozen.values is None:
            return
        values = self.signed(frozen.values)

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
        storage.set_study_system_attr(study_id(study), f"{DRIVER_PROC_PREFIX}{self.driver_id}",
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
                   if trial_id(t) not in in_flight]
        if not running:
            return 0, 0
        attrs = storage.get_study_system_attrs(study_id(study))
        drivers = {key.removeprefix(DRIVER_PROC_PREFIX): value for key, value in attrs.items()
                   if key.startswith(DRIVER_PROC_PREFIX) and isinstance(value, dict)}
        for t in running:
            reason = self._stale_reason(t, drivers, now)
            if reason is None:
                continue
            try:
                storage.set_trial_user_attr(trial_id(t), "fail_reason", reason)
                storage.set_trial_state_values(trial_id(t), TrialState.FAIL)
            except UpdateFinishedTrialError:  # another driver (or its own, late) finished it first
                continue
            stale += 1
            requeued += self.requeue(study, t)
            run_id = storage.get_study_system_attrs(study_id(study)).get(f"{RUN_PREFIX}{t.number}")
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
        storage = study_storage(study)
        tid = trial_id(trial)
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
                                        redact(first_line(report.error))[:500])
        storage.set_trial_user_attr(tid, "duration_s", round(report.duration_s, 3))
        if report.node:
            storage.set_trial_user_attr(tid, "ray_node", report.node[:16])
        if report.device:
            storage.set_trial_user_attr(tid, "device", report.device)
