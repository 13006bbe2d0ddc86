"""The state of one execution of a study (one call of ``run_study``) and its bookkeeping in the Optuna study.

An :class:`Execution` knows the spec, this driver's id and identity, the storage and tracking URLs, the MLflow
tracker and trial log; it is complete when constructed, and nothing else sets its state. It writes what a trial's report brings back into the study and tells the
trial (:meth:`Execution.tell`), and it finds RUNNING trials whose driver stopped and re-queues them
(:meth:`Execution.fail_stale`). The keys it writes into the study, and how, are in :mod:`~sparsearch.search.records`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from sparsearch._types import JSONDict
from sparsearch.search import _liveness, records
from sparsearch.search._internals import study_id, trial_id
from sparsearch.search.protocol import TrialReport
from sparsearch.search.spec import StudySpec
from sparsearch.search.storage import absolute_storage_url, default_storage_url, env_storage_url
from sparsearch.search.tracking import Tracker, default_tracking_uri
from sparsearch.search.trial_log import TrialLog

__all__ = ["Execution", "resolve_urls"]

log = logging.getLogger("sparsearch")


def resolve_urls(spec: StudySpec, results_dir: Path) -> tuple[str, str]:
    # absolute: the storage actor and workers open a journal or SQLite file from Ray's working folder
    storage = absolute_storage_url(spec.storage.url or env_storage_url() or default_storage_url(results_dir))
    tracking = spec.tracking.uri or default_tracking_uri(results_dir)
    return storage, tracking


class Execution:
    """State of one execution of a study (one call of :func:`run_study`)."""

    def __init__(self, spec: StudySpec, results_dir: Path) -> None:
        """Everything an execution holds is set here: call it once the storage and Ray address were checked (it
        starts the MLflow writer process, whose imports and store connection overlap the study's start-up)."""
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
        # trial child runs are written by a writer process of the driver's (off the search loop's GIL), or its thread
        self.trial_log = TrialLog(self.tracker, use_process=spec.tracking.enabled and spec.tracking.writer == "process",
                                  log_file=results_dir / "logs" / "mlflow-writer.log")

    # -- trial bookkeeping ------------------------------------------------------------------------------------------
    def record_driver(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        """Write this driver's host, process id and process start time (and the time) into the study."""
        records.record_driver(storage, study_id(study), self.driver_id, self.identity)

    def _stale_reason(self, t: FrozenTrial, drivers: dict[str, JSONDict], now: float) -> str | None:
        """Why RUNNING trial ``t`` (not this driver's) is stale, or ``None`` while its driver may be alive.

        A driver on the owner's own host sees at once whether the owner's process is gone; elsewhere, a trial is
        stale after ``stale_after`` seconds without a heartbeat (until the first one, its start time stands in).
        """
        execution = self.spec.execution
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        owner = records.owner(t)
        record = drivers.get(owner) if owner else None
        if owner == self.driver_id:
            return None
        if record is not None and _liveness.process_gone(record):
            return records.stale_gone_reason(record)
        if owner is None and now - started > execution.heartbeat_interval and not records.has_heartbeat(t):
            # the owner is written right after study.ask(): a driver killed in between left no name. It is one of
            # the drivers of this host that are gone if one of them was running when the trial started
            for other in drivers.values():
                if _liveness.process_gone(other) and float(_liveness.recorded_number(other.get("started", 0.0))) <= started + 1.0:
                    return records.Reason.STALE_NAMELESS.value
        beat = records.last_heartbeat(t, started)
        if now - beat > execution.stale_after:
            return records.stale_silent_reason(now - beat)
        return None

    def fail_stale(self, study: optuna.Study, storage: optuna.storages.BaseStorage, in_flight: set[int],
                   on_failed: Callable[[FrozenTrial, str | None], None] | None = None) -> tuple[int, int]:
        """Fail RUNNING trials whose driver is gone or stopped sending heartbeats; re-queue them (up to
        ``max_retries``). ``on_failed(trial, run_id)`` is called for each (``run_id``: its MLflow child run, if
        one was created).

        Returns ``(failed, requeued)``.
        """
        now = time.time()
        stale = requeued = 0
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if trial_id(t) not in in_flight]
        if not running:
            return 0, 0
        drivers = records.driver_records(storage.get_study_system_attrs(study_id(study)))
        for t in running:
            reason = self._stale_reason(t, drivers, now)
            if reason is None:
                continue
            if not records.fail_stored_trial(storage, t, reason):
                continue
            stale += 1
            requeued += self.requeue(study, t)
            if on_failed is not None:
                on_failed(t, records.created_run(storage.get_study_system_attrs(study_id(study)), t.number))
        return stale, requeued

    def requeue(self, study: optuna.Study, t: FrozenTrial) -> bool:
        return records.requeue(study, t, self.spec.execution.max_retries)

    def tell(self, study: optuna.Study, trial: optuna.Trial, report: TrialReport,
             attrs: JSONDict | None = None) -> FrozenTrial:
        """Store what ``report`` brings back (plus the driver's user ``attrs``), then tell the trial's state."""
        return records.store_and_tell(study, trial, report, attrs or {}, self.driver_id)
