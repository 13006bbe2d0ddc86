"""Trial child runs in MLflow, written off the search loop: in a logging process of its own, or on a thread.

MLflow's SQLAlchemy store costs ~30 ms of Python per trial (create the run, log parameters, log metrics, end it).
On the driver's logging thread that work shares the driver's GIL with the search loop, so a study of fast trials
ran at the speed of its logbook. :class:`TrialLog` therefore hands the child runs to a :class:`TrialRunLogger`
in a Ray actor pinned to the driver's node (its own process, so its own core), and falls back to the driver's
logging thread where an actor cannot be used (Ray Client, or the actor failed to start).

Either way the same :class:`TrialRunLogger` code runs, calls are handled in submission order, and each child
run is recorded in the Optuna study: ``sparsearch:mlflow-run:N`` when it is created (so a later execution
finishes that run instead of creating a second one) and ``sparsearch:mlflow:N`` once it is complete. Whatever it
could not write is written by the driver at the end of the execution (``_sync_unlogged`` in the controller).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sparsearch.search.tracking import Tracker

__all__ = ["LOGGED_PREFIX", "RUN_PREFIX", "TrialLog", "TrialRunLogger"]

log = logging.getLogger("sparsearch")

RUN_PREFIX = "sparsearch:mlflow-run:"
"""Study system attribute per trial number: its MLflow child run id, set when the run is created."""
LOGGED_PREFIX = "sparsearch:mlflow:"
"""Study system attribute per trial number: set once the trial's child run is complete."""


class TrialRunLogger:
    """Creates and finishes trial child runs and records them in the Optuna study."""

    def __init__(self, tracker: Tracker, storage: Any, study_id: int) -> None:
        self.tracker = tracker
        self.storage = storage
        self.study_id = study_id
        self.runs: dict[int, str] = {}

    def start(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> str | None:
        run_id = self.tracker.start_trial(number, params, tags)
        if run_id is not None:
            self.runs[number] = run_id
            self._mark(f"{RUN_PREFIX}{number}", run_id)
        return run_id

    def finish(self, number: int, *, state: str, history: Sequence[Mapping[str, float]] = (),
               metrics: Mapping[str, Any] | None = None, accounting: Mapping[str, Any] | None = None,
               error: str | None = None, run_id: str | None = None) -> tuple[bool, str | None]:
        """End trial ``number``'s run (``run_id`` when another execution created it); ``(logged, failure)``."""
        run_id = run_id or self.runs.pop(number, None)
        seen = len(self.tracker.failures)
        ok = self.tracker.finish_trial(run_id, state=state, history=history, metrics=metrics, accounting=accounting,
                                       error=error)
        if ok:
            ok = self._mark(f"{LOGGED_PREFIX}{number}", run_id)
        failure = self.tracker.failures[-1] if len(self.tracker.failures) > seen else None
        return ok, failure

    def _mark(self, key: str, run_id: str) -> bool:
        try:
            self.storage.set_study_system_attr(self.study_id, key, run_id)
            return True
        except Exception as exc:  # the study's storage is down: the run exists, the next execution finishes it
            self.tracker.failures.append(f"mark {key} in the study: {type(exc).__name__}")
            return False

    def failures(self) -> list[str]:
        return list(self.tracker.failures)


class _RemoteTrialRunLogger(TrialRunLogger):
    """The logger as a Ray actor: opens its own MLflow client and its own connection to the study's storage."""

    def __init__(self, uri: str, experiment: str, artifact_root: str, parent_run_id: str, storage_url: str,
                 storage_actor: Any, study_id: int) -> None:
        from sparsearch.search.storage import RayStorageProxy, open_storage

        tracker = Tracker(uri, experiment, Path(artifact_root))
        tracker.connect()  # quick: the driver created the store and the experiment
        tracker.parent_run_id = parent_run_id
        storage = RayStorageProxy(storage_actor) if storage_actor is not None else open_storage(storage_url)
        super().__init__(tracker, storage, study_id)

    def ready(self) -> bool:
        return True


class TrialLog:
    """The driver's handle on trial child runs (see the module docstring). Safe to use when tracking is off."""

    def __init__(self, tracker: Tracker, storage: Any, study_id: int, *, storage_url: str,
                 storage_actor: Any = None, use_process: bool = True) -> None:
        self._tracker = tracker
        self._local = TrialRunLogger(tracker, storage, study_id)
        self._actor: Any = None
        self._pending: list[Any] = []
        self._warned = False
        self.enabled = tracker.enabled and tracker.parent_run_id is not None
        if self.enabled and use_process:
            self._actor = self._start_actor(storage_url, storage_actor, study_id)
        self.mode = "off" if not self.enabled else "process" if self._actor is not None else "thread"
        """Where child runs are written: ``process``, ``thread`` (the driver's logging thread) or ``off``."""

    def _start_actor(self, storage_url: str, storage_actor: Any, study_id: int) -> Any:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        try:
            if ray.util.client.ray.is_connected():  # Ray Client: "this node" is the cluster's, not this machine
                return None
            node = ray.get_runtime_context().get_node_id()
            cls = ray.remote(num_cpus=0, max_restarts=0)(_RemoteTrialRunLogger)
            t = self._tracker
            return cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node, soft=False)).remote(
                t.uri, t.experiment, str(t.artifact_root), t.parent_run_id, storage_url, storage_actor, study_id)
        except Exception as exc:  # pragma: no cover - then the driver's logging thread does it
            log.debug("no logging process (%s); logging on the driver's thread", exc)
            return None

    @property
    def in_process(self) -> bool:
        """Whether child runs are written by a logging process (``False``: the driver's logging thread)."""
        return self._actor is not None

    def start(self, number: int, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        if not self.enabled:
            return
        if self._actor is not None:
            self._actor.start.remote(number, dict(params), dict(tags))
        else:
            self._tracker.submit(lambda: self._local.start(number, params, tags))

    def finish(self, number: int, **kwargs: Any) -> None:
        """End trial ``number``'s child run; keywords as :meth:`TrialRunLogger.finish`."""
        if not self.enabled:
            return
        if self._actor is not None:
            self._pending.append(self._actor.finish.remote(number, **kwargs))
            self.poll()
        else:
            self._tracker.submit(lambda: self._local.finish(number, **kwargs))

    def poll(self) -> None:
        """Look at finished logging calls without waiting; warn once when one failed."""
        if not self._pending:
            return
        import ray

        done, self._pending = ray.wait(self._pending, num_returns=len(self._pending), timeout=0)
        for ref in done:
            self._check(ref)

    def _check(self, ref: Any) -> None:
        import ray

        try:
            ok, failure = ray.get(ref)
        except Exception as exc:  # the logging process died: what it did not write is synced at the end
            ok, failure = False, f"logging process: {type(exc).__name__}"
        if not ok and failure and not self._warned:
            log.warning("MLflow logging failed (%s); trials go on and are kept in Optuna storage", failure[:200])
            self._warned = True

    def close(self, timeout: float = 300.0) -> None:
        """Wait until every child run handed over is written (or has failed); stop the logging process."""
        self._tracker.flush()
        if self._actor is None:
            return
        import ray

        try:
            done, rest = ray.wait(self._pending, num_returns=len(self._pending), timeout=timeout)
            for ref in done:
                self._check(ref)
            if rest:
                log.warning("MLflow logging did not finish within %.0f s; the rest is synced now", timeout)
            self._tracker.failures.extend(ray.get(self._actor.failures.remote(), timeout=30))
        except Exception as exc:
            self._tracker.failures.append(f"logging process: {type(exc).__name__}")
        finally:
            self._pending = []
            ray.kill(self._actor)
            self._actor = None
