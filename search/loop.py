"""The search loop of one execution: at most ``workers`` trials in flight on Ray, results in completion order.

One trial, followed by reading :class:`SearchLoop` top to bottom:

1. :meth:`SearchLoop.dispatch` asks the study for a trial, records this driver as its owner, samples its config in
   the driver and submits it as a Ray task; an :class:`InFlight` record keeps what the driver needs of it;
2. :meth:`SearchLoop.collect` gets its :class:`~sparsearch.search.worker.TrialReport` (or the task's error),
   re-queues it when its worker or node was lost, stores the report and tells the study
   (:meth:`~sparsearch.search.execution.Execution.tell`);
3. between results, :meth:`SearchLoop.heartbeat` refreshes the heartbeats of the trials in flight and fails the
   trials of stopped drivers, and :meth:`SearchLoop.enforce_timeouts` cancels trials over ``trial_timeout``;
4. :meth:`SearchLoop.run` repeats until the budget (``n_trials``, ``timeout``, pending retries) is used and nothing
   is in flight, and returns a :class:`~sparsearch.search.listeners.LoopOutcome`; on Ctrl-C,
   :meth:`SearchLoop.interrupt` fails and re-queues what was in flight.

Everything else a trial brings about (its MLflow child run, the progress line, the model kept for the test rows)
is done by the :class:`~sparsearch.search.listeners.LoopListener` s the loop is given: at each trial's start, its
report, its end, and the loop's end. The loop never calls MLflow.

Random search is this same loop with ``sampler = "random"``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import optuna
from optuna.distributions import BaseDistribution
from optuna.exceptions import UpdateFinishedTrialError

from sparsearch._types import JSONDict, ParamValue
from sparsearch.search import records
from sparsearch.search._internals import relative_sample, study_storage, trial_id
from sparsearch.search.data import PreparedData, trial_feature_subset
from sparsearch.search.execution import Execution
from sparsearch.search.listeners import LoopListener, LoopOutcome, TrialEnd
from sparsearch.search.protocol import Dispatch, TrialReport, build_payload
from sparsearch.search.storage import is_backend_failure

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle
    from ray.remote_function import RemoteFunction

__all__ = ["InFlight", "SearchLoop", "propose", "worker_lost"]

log = logging.getLogger("sparsearch")


@dataclass
class InFlight:
    """What the driver keeps of a trial while its Ray task runs."""

    trial: optuna.Trial
    started: float
    """``time.monotonic()`` at dispatch (for ``trial_timeout`` and a lost task's duration)."""
    attrs: JSONDict
    """User attributes the driver stores with the result (``target_sparsity``)."""
    driver_params: frozenset[str]
    """Parameters sampled in the driver; any other parameter of the result was suggested in the worker."""
    features: tuple[str, ...] | None
    """The trial's feature subset (searched ``top_k`` or ``crosses``), ``None`` for all candidates."""
    reason: str | None = None
    """Why the driver cancelled the task (time budget), which then becomes its failure reason."""


@dataclass
class SearchLoop:
    """Ask, dispatch, collect and tell until the study's budget is used (see the module docstring).

    Args:
        ex: this execution (spec, driver id, storage URL).
        study: the study, over ``storage``.
        storage: the driver's own handle on the study's storage.
        prepared: the prepared data (candidates, crosses, fingerprint).
        task: the Ray remote function that runs one trial (:func:`~sparsearch.search.worker.execute_trial`).
        actor: the storage actor workers reach the study through, or ``None``.
        data_refs: object refs of the training and validation data (put once).
        driver_node: the driver's Ray node id (workers there open a journal file directly).
        workers: at most this many trials in flight.
        listeners: called at each trial's start, report and end, and at the loop's end, in this order.
        pending_retries: re-queued trials this execution runs on top of its ``n_trials``.
    """

    ex: Execution
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    prepared: PreparedData
    task: RemoteFunction
    actor: ActorHandle | None
    data_refs: list[ObjectRef]
    driver_node: str
    workers: int
    listeners: list[LoopListener] = field(default_factory=list)
    pending_retries: int = 0
    in_flight: dict[ObjectRef, InFlight] = field(default_factory=dict)
    """Object ref of each running task -> its record."""
    worker_space: dict[str, BaseDistribution] = field(default_factory=dict)
    """Parameters that objectives suggest inside workers (name -> latest distribution), learned from results."""
    budget_used: int = 0
    n_run: int = 0
    """Trials this execution dispatched."""
    interrupted: bool = False

    def __post_init__(self) -> None:
        spec = self.ex.spec
        self.deadline = None if spec.study.timeout is None else time.monotonic() + spec.study.timeout
        self.last_beat = time.monotonic()
        top_k, crosses = spec.data.top_k, spec.data.crosses
        self.searched_k = top_k is not None and top_k[0] < top_k[1]
        # a searched number of crosses; fewer pairs than asked may have a positive score, so the range is capped
        self.searched_c = crosses is not None and crosses[0] < crosses[1] and len(self.prepared.crosses) > crosses[0]

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self) -> LoopOutcome:
        """Run trials until the budget is used and none is in flight; the listeners' ``on_finish`` follows, also
        after an error or Ctrl-C."""
        import ray

        interval = self.ex.spec.execution.heartbeat_interval
        try:
            while True:
                self.fill(time.monotonic())
                if not self.in_flight:
                    break
                ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=interval)
                for ref in ready:
                    self.collect(ref)
                now = time.monotonic()
                if now - self.last_beat >= interval:
                    self.heartbeat(now)
                self.enforce_timeouts(now)
        except KeyboardInterrupt:
            self.interrupted = True
            self.interrupt()
            raise
        finally:
            outcome = LoopOutcome(n_run=self.n_run, interrupted=self.interrupted)
            for listener in self.listeners:
                listener.on_finish(outcome)
        return outcome

    def notify(self, end: TrialEnd) -> None:
        for listener in self.listeners:
            listener.on_trial_end(end)

    def can_start_new(self, now: float) -> bool:
        """Whether the budget allows a fresh trial (``n_trials`` not reached, ``timeout`` not passed)."""
        return self.budget_used < self.ex.spec.study.n_trials and (self.deadline is None or now < self.deadline)

    def fill(self, now: float) -> None:
        """Dispatch trials until ``workers`` are in flight or the budget (and pending retries) is used."""
        while len(self.in_flight) < self.workers and (self.can_start_new(now) or self.pending_retries > 0):
            self.dispatch()

    # -- one trial --------------------------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Ask the study for a trial, sample its config and submit it as a Ray task."""
        from sparsearch.spaces import suggest_config

        ex, spec, study, storage, prepared = self.ex, self.ex.spec, self.study, self.storage, self.prepared
        trial = study.ask()
        retry_of = records.retry_of(trial)
        is_retry = retry_of is not None
        # A fresh trial uses the budget; a re-queued one uses a pending retry. Another driver on the same study
        # may pop "our" re-queued trials first: whatever we get then still uses up a slot, so the loop ends.
        if not is_retry and self.budget_used < spec.study.n_trials:
            self.budget_used += 1
        elif self.pending_retries > 0:
            self.pending_retries -= 1
        else:
            self.budget_used += 1
        # the trial's owner, at once: a later driver on this host fails it as soon as this process is gone (see
        # Execution.fail_stale); until the first heartbeat, the trial's start time stands for one
        try:
            records.record_owner(storage, trial_id(trial), ex.driver_id)
        except UpdateFinishedTrialError:  # this driver stalled and another one failed the trial as stale
            log.warning("trial %d was failed as stale by another driver before it started here", trial.number)
            return
        top_k, crosses = spec.data.top_k, spec.data.crosses
        try:
            if self.searched_k:
                trial.suggest_int("data.top_k", top_k[0], top_k[1])  # type: ignore[index]  # searched_k: not None
            if self.searched_c:
                trial.suggest_int("data.crosses", crosses[0], min(crosses[1], len(prepared.crosses)))  # type: ignore[index]  # searched_c
            features = trial_feature_subset(spec, prepared, trial.params)
            config = suggest_config(trial, spec.space, spec.train, n_features=len(prepared.candidates) or None)
        except Exception as exc:  # an invalid combination of parameters fails this trial only
            frozen = records.fail_trial(study, trial, records.invalid_config_reason(exc), ex.driver_id)
            self.notify(TrialEnd(frozen, "invalid"))
            return
        target = getattr(config, "target_sparsity", None)
        attrs = records.driver_attrs(target)  # stored with the result
        distributions = trial.distributions  # a copy on each access
        dispatch = Dispatch(
            params={name: (value, distributions[name]) for name, value in trial.params.items()},
            proposals=propose(study, trial, self.worker_space) if self.worker_space else {},
            user_attrs={**trial.user_attrs, **attrs}, datetime_start=trial.datetime_start,
            storage_url=ex.storage_url, driver_node=self.driver_node,
            return_model=spec.tracking.log_model or prepared.test is not None)
        payload = build_payload(spec, trial_id=trial_id(trial), number=trial.number, config=config,
                                features=features, dispatch=dispatch)
        for listener in self.listeners:
            listener.on_trial_start(trial, payload)
        ref = self.task.remote(payload, self.actor, self.data_refs)
        self.in_flight[ref] = InFlight(trial=trial, started=time.monotonic(), attrs=attrs,
                                       driver_params=frozenset(payload.params), features=features)
        self.n_run += 1

    def collect(self, ref: ObjectRef) -> None:
        """Store the finished task's report (or its error) and tell the study; re-queue a lost worker's trial."""
        import ray

        ex, study, storage = self.ex, self.study, self.storage
        info = self.in_flight.pop(ref)
        trial = info.trial
        try:
            report: TrialReport = ray.get(ref)
        except Exception as exc:
            reason = info.reason or records.stored_fail_reason(storage, trial_id(trial))
            lost = worker_lost(exc)
            retryable = reason is None and lost
            reason = reason or records.task_error_reason(exc, lost=lost)
            report = TrialReport("FAIL", error=reason, duration_s=time.monotonic() - info.started)
            if retryable and ex.requeue(study, storage.get_trial(trial_id(trial))):
                self.pending_retries += 1
                report.error = records.requeued(reason)
        else:
            if report.retryable and ex.requeue(study, storage.get_trial(trial_id(trial))):
                self.pending_retries += 1
                report.error = records.requeued(report.error or records.Reason.STORAGE_OUTAGE.value)
        for listener in self.listeners:
            listener.on_report(trial, report)
        frozen = ex.tell(study, trial, report, info.attrs)
        for name, dist in frozen.distributions.items():  # learn the parameters objectives suggest in workers
            if name not in info.driver_params:
                self.worker_space[name] = dist
        self.notify(TrialEnd(frozen, "ran", report, info.features))

    # -- between results --------------------------------------------------------------------------------------------
    def heartbeat(self, now: float) -> None:
        """Refresh this driver's record and its trials' heartbeats; fail (and run) the trials of stopped drivers."""
        self.last_beat = now
        self.ex.record_driver(self.study, self.storage)
        for info in self.in_flight.values():
            records.record_heartbeat(self.storage, trial_id(info.trial))
        self.fail_stale()

    def fail_stale(self) -> tuple[int, int]:
        """Fail the RUNNING trials of stopped drivers (not those in flight here) and re-queue them: this driver
        runs them on top of its budget. Returns ``(failed, requeued)``."""
        ids = {trial_id(info.trial) for info in self.in_flight.values()}

        def failed(t: optuna.trial.FrozenTrial, run_id: str | None) -> None:
            self.notify(TrialEnd(t, "stale", run_id=run_id))

        stale, requeued = self.ex.fail_stale(self.study, self.storage, ids, failed)
        self.pending_retries += requeued
        return stale, requeued

    def enforce_timeouts(self, now: float) -> None:
        """Cancel the tasks that ran over ``trial_timeout``; :meth:`collect` then fails them with that reason."""
        import ray

        timeout = self.ex.spec.execution.trial_timeout
        if timeout is None:
            return
        for ref, info in list(self.in_flight.items()):
            if info.reason is None and now - info.started > timeout:
                info.reason = records.timeout_reason(timeout)
                ray.cancel(ref, force=True)

    def interrupt(self) -> None:
        """Ctrl-C: cancel every task in flight, fail its trial and re-queue it for the next run."""
        import ray

        for ref, info in list(self.in_flight.items()):
            ray.cancel(ref, force=True)
            trial = info.trial
            frozen = records.fail_trial(self.study, trial, records.Reason.INTERRUPTED.value, self.ex.driver_id)
            self.ex.requeue(self.study, frozen)
            self.notify(TrialEnd(frozen, "interrupted"))


def worker_lost(exc: BaseException) -> bool:
    """Whether a trial's task failed because its worker process or node was lost (so running it again may work),
    not because of the task itself (an exception, a value that cannot be deserialised, a cancelled task)."""
    import ray

    lost = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError,
            ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError)
    return isinstance(exc, lost)


def propose(study: optuna.Study, trial: optuna.Trial,
            worker_space: dict[str, BaseDistribution]) -> dict[str, tuple[ParamValue, BaseDistribution]]:
    """Values the study's sampler proposes for the parameters a worker is expected to suggest.

    Taken, as ``Trial._suggest`` would, from the trial's relative sample when the parameter is in the sampler's
    relative search space with the same distribution, and otherwise from ``sample_independent`` on the study as
    it stands now. The worker uses a proposal only if its objective suggests that name with that distribution
    (see :class:`~sparsearch.search.worker.WorkerTrial`); proposing is an optimisation and never fails a trial.
    """
    names = [name for name in worker_space if name not in trial.params]
    if not names:
        return {}
    out: dict[str, tuple[ParamValue, BaseDistribution]] = {}
    try:
        relative, space = relative_sample(trial)
        frozen = None
        for name in names:
            dist = worker_space[name]
            if name in relative and space.get(name) == dist:
                out[name] = (relative[name], dist)
                continue
            if frozen is None:
                frozen = study_storage(study).get_trial(trial_id(trial))
            out[name] = (study.sampler.sample_independent(study, frozen, name, dist), dist)
    except Exception as exc:  # the worker then asks the study itself
        if is_backend_failure(exc):  # an outage, not a sampler's limit: never hidden
            raise
        log.debug("no proposals for trial %d: %s", trial.number, exc)
    return out
