"""The state of one execution of a study (one call of ``run_study``) and its bookkeeping in the Optuna study.

An :class:`Execution` knows the spec, this driver's id and identity, the MLflow tracker and trial log, and the
models kept for the test evaluation. It writes what a trial's report brings back into the study and tells the
trial (:meth:`Execution.tell`), and it finds RUNNING trials whose driver stopped and re-queues them
(:meth:`Execution.fail_stale`). The keys it writes into the study, and how, are in :mod:`~sparsearch.search.records`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sparsearch.search import _liveness, records
from sparsearch.search._internals import study_id, trial_id
from sparsearch.search.progress import ProgressPrinter
from sparsearch.search.protocol import TrialReport
from sparsearch.search.results import best_values
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
        note = str(records.fail_reason(frozen) or "")[:120] if frozen.state == TrialState.FAIL else ""
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
        records.record_driver(storage, study_id(study), self.driver_id, self.identity)

    def _stale_reason(self, t: FrozenTrial, drivers: dict[str, Any], now: float) -> str | None:
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
                if _liveness.process_gone(other) and float(other.get("started", 0.0)) <= started + 1.0:
                    return records.Reason.STALE_NAMELESS.value
        beat = records.last_heartbeat(t, started)
        if now - beat > execution.stale_after:
            return records.stale_silent_reason(now - beat)
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
        drivers = records.driver_records(storage.get_study_system_attrs(study_id(study)))
        for t in running:
            reason = self._stale_reason(t, drivers, now)
            if reason is None:
                continue
            if not records.fail_stored_trial(storage, t, reason):
                continue
            stale += 1
            requeued += self.requeue(study, t)
            run_id = records.created_run(storage.get_study_system_attrs(study_id(study)), t.number)
            if self.trial_log is not None:
                self.trial_log.finish(t.number, state="FAIL", error=records.Reason.STALE_RUN.value, run_id=run_id)
        return stale, requeued

    def requeue(self, study: optuna.Study, t: FrozenTrial) -> bool:
        return records.requeue(study, t, self.spec.execution.max_retries)

    def tell(self, study: optuna.Study, trial: optuna.Trial, report: TrialReport,
             attrs: dict[str, Any] | None = None) -> FrozenTrial:
        """Store what ``report`` brings back (plus the driver's user ``attrs``), then tell the trial's state."""
        return records.store_and_tell(study, trial, report, attrs or {}, self.driver_id)
