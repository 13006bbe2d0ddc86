"""What runs inside a Ray worker for one trial.

The worker trains the configuration the driver sampled and returns a
:class:`~sparsearch.search.protocol.TrialReport` (the wire protocol is :mod:`~sparsearch.search.protocol`). A custom objective
gets a :class:`WorkerTrial`: an ``optuna.trial.BaseTrial`` whose suggestions the driver has usually proposed already
(so a define-by-run parameter costs no round trip to the storage) and which goes to the study through the storage
actor only when it must (a parameter never seen before, a trial pruner, ``trial.study``). With a trial pruner, each
epoch's objective is reported to the study as it is computed, so pruners work across workers. It never raises for a failing trial: exceptions become a FAIL report with the traceback, so one
bad trial cannot bring down the study. A worker that dies (crash, OOM kill, node loss) is handled by the driver.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, SupportsFloat, TypeGuard, TypeVar, cast, overload

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.trial import BaseTrial

from sparsearch._types import JSONDict, JSONValue, Params, ParamValue
from sparsearch.search import records
from sparsearch.search._internals import trial_handle
from sparsearch.search.protocol import Objective, TrialPayload, TrialReport, trial_seed

if TYPE_CHECKING:
    import datetime

    from ray import ObjectRef
    from ray.actor import ActorHandle

    from sparsearch.spaces.data import ImageData, TabularData

_V = TypeVar("_V", bound=ParamValue)
"""A parameter's value, as one ``suggest_*`` call returns it."""

__all__ = ["WorkerTrial", "execute_trial"]


def _memory_watchdog(limit_mb: int, on_exceed: Callable[[float], None]) -> threading.Event:
    """Stop the worker process when its resident memory exceeds ``limit_mb``."""
    import psutil

    stop = threading.Event()
    proc = psutil.Process()

    def watch() -> None:
        while not stop.wait(0.1):
            rss_mb = proc.memory_info().rss / 2**20
            if rss_mb > limit_mb:
                on_exceed(rss_mb)
                os._exit(137)

    threading.Thread(target=watch, daemon=True, name="sparsearch-memory-watchdog").start()
    return stop


def _resolve_objective(spec: str) -> Objective:
    import importlib

    module, _, name = spec.partition(":")
    objective: Objective = getattr(importlib.import_module(module), name)
    return objective


_LOCAL_STORAGES: dict[str, tuple[BaseStorage, tuple[object, ...]]] = {}
"""Journal storages this worker process opened, by URL, with the file's identity (a Ray worker process runs many
trials, of many studies when Ray outlives them)."""


def _local_journal(url: str) -> BaseStorage:
    """The journal storage at ``url``, opened once per worker process and reopened if the file was replaced.

    A journal storage keeps byte offsets into its file: a results folder deleted and created again under the same
    path must not be read with the old file's offsets. The file's identity is its inode and its first line (the
    first log names its writer's random id; inodes are reused).
    """
    from sparsearch.search.storage import journal_path, open_storage

    path = journal_path(url)
    try:
        st = path.stat()
        with open(path, "rb") as fh:
            identity: tuple[object, ...] = (st.st_dev, st.st_ino, fh.readline(1 << 16))
    except OSError:
        identity = ()
    cached = _LOCAL_STORAGES.get(url)
    if cached is None or cached[1] != identity:
        cached = _LOCAL_STORAGES[url] = (open_storage(url), identity)
    return cached[0]


class _LazyStorage:
    """The study's storage as a worker reaches it, opened on first use.

    On the driver's node a journal file is opened directly (it takes a file lock per write, so many processes may
    append to it; in-process calls are ~100x cheaper than actor round trips); anywhere else, and for every other
    storage, calls go through the storage actor.
    """

    def __init__(self, payload: TrialPayload, actor: ActorHandle | None, node: str) -> None:
        self._payload, self._actor, self._node = payload, actor, node
        self._storage: BaseStorage | None = None

    def get(self) -> BaseStorage:
        if self._storage is None:
            url = self._payload.local_storage
            if url is not None and self._node == self._payload.driver_node and (
                    self._actor is None or _journal_visible(url)):
                self._storage = _local_journal(url)
            elif self._actor is None:
                from sparsearch.errors import ConnectionProblem

                raise ConnectionProblem(
                    f"trial {self._payload.number} ran on Ray node {self._node[:12]}, which cannot reach the study's "
                    "journal file on the driver's node; use a database storage (postgresql://...) on a cluster")
            else:
                from sparsearch.search.storage import RayStorageProxy

                self._storage = RayStorageProxy(self._actor, retries=self._payload.storage_retries)  # type: ignore[abstract]  # forwarded
        return self._storage


def _journal_visible(url: str) -> bool:
    """Whether this process sees the driver's journal file (a container on the driver's node may not)."""
    from sparsearch.search.storage import journal_path

    return journal_path(url).is_file()


def _single_value(distribution: BaseDistribution) -> ParamValue:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return distribution.choices[0]
    assert isinstance(distribution, FloatDistribution | IntDistribution)  # Optuna's only other distributions
    return distribution.low


def _json_serialisable(value: object, key: str) -> TypeGuard[JSONValue]:
    """True when ``json.dumps`` writes ``value`` (a JSON value, a tuple written as an array); else a
    ``TypeError`` naming the user attribute ``key``."""
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"user attribute {key!r} must be JSON-serialisable: {exc}") from None
    return True


class WorkerTrial(BaseTrial):
    """The ``trial`` a custom objective gets inside a Ray worker: an ``optuna.trial.BaseTrial``.

    ``suggest_*`` is answered in the worker, with no round trip to the study, when the parameter is already set
    (the driver samples the configuration), has a single possible value, or was proposed by the driver's sampler
    for exactly this distribution (the driver proposes every parameter earlier trials suggested in their workers,
    from the study's history as ``study.ask`` would). Anything else (a parameter never seen before, a changed
    range, ``set_constraint``, ``trial.study``, ``report``/``should_prune`` under a trial pruner) goes to the
    study through a real ``optuna.Trial`` over the storage actor, created on first need; from then on every
    suggestion goes that way. Parameters, reported values and user attributes held in the worker travel back in
    the :class:`TrialReport` and the driver stores them before it tells the trial's state: the stored trial is
    the same on either path, and a proposal that is never suggested is never stored (as with Optuna's relative
    sampling).
    """

    def __init__(self, payload: TrialPayload, storage: _LazyStorage, *, pruning: bool,
                 sampler_seed: int | None) -> None:
        self._payload = payload
        self._storage = storage
        self._pruning = pruning
        self._sampler_seed = sampler_seed
        self._params: Params = {name: value for name, (value, _) in payload.params.items()}
        self._distributions: dict[str, BaseDistribution] = {name: dist for name, (_, dist) in payload.params.items()}
        self._user_attrs: JSONDict = dict(payload.user_attrs)
        self._study: optuna.Study | None = None
        self._remote: optuna.Trial | None = None
        self.new_params: dict[str, tuple[float, BaseDistribution]] = {}
        self.new_intermediate: dict[int, float] = {}
        self.new_user_attrs: JSONDict = {}
        self.remote_calls = 0
        """How many times this trial had to go to the study (diagnostics and tests)."""

    # -- what the objective reads ------------------------------------------------------------------------------
    @property
    def number(self) -> int:
        return self._payload.number

    @property
    def params(self) -> Params:
        return dict(self._params)

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return dict(self._distributions)

    @property
    def user_attrs(self) -> JSONDict:
        return dict(self._user_attrs)

    @property
    def datetime_start(self) -> datetime.datetime | None:
        return self._payload.datetime_start

    @property
    def study(self) -> optuna.Study:
        """The study, loaded over the storage actor on first use."""
        if self._study is None:
            from sparsearch.search.registry import make_pruner, make_sampler

            self._study = optuna.load_study(
                study_name=self._payload.study_name, storage=self._storage.get(),
                sampler=make_sampler(self._payload.sampler, self._sampler_seed),
                pruner=make_pruner(self._payload.pruner, **self._payload.pruner_params),
            )
        return self._study

    def _trial(self) -> optuna.Trial:
        """The real trial over the storage actor; what the worker holds is written to the study first."""
        self.remote_calls += 1
        if self._remote is None:
            study = self.study
            self._flush_params()
            self._remote = trial_handle(study, self._payload.trial_id)
        return self._remote

    def _flush_params(self) -> None:
        for name, (internal, dist) in self.new_params.items():
            self._storage.get().set_trial_param(self._payload.trial_id, name, internal, dist)
        self.new_params.clear()

    # -- suggestions -----------------------------------------------------------------------------------------------
    def _local(self, name: str, distribution: BaseDistribution) -> tuple[bool, ParamValue]:
        if name in self._distributions:
            old = self._distributions[name]
            optuna.distributions.check_distribution_compatibility(old, distribution)
            if old != distribution:
                import warnings

                warnings.warn(f"Inconsistent parameter values for distribution with name {name!r}: optuna uses "
                              f"the values of the first call and ignores the following ones ({old})",
                              RuntimeWarning, stacklevel=3)
            return True, self._params[name]
        if self._remote is not None:
            return False, None
        if distribution.single():
            value = _single_value(distribution)
        elif name in self._payload.proposals and self._payload.proposals[name][1] == distribution:
            value = self._payload.proposals[name][0]
        else:
            return False, None
        internal = distribution.to_internal_repr(value)  # validates, as Trial._suggest does
        value = distribution.to_external_repr(internal)
        self.new_params[name] = (internal, distribution)
        self._params[name], self._distributions[name] = value, distribution
        return True, value

    def _remember(self, name: str, value: _V, distribution: BaseDistribution) -> _V:
        self._params.setdefault(name, value)
        self._distributions.setdefault(name, distribution)
        return value

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        dist = optuna.distributions.FloatDistribution(low, high, log=log, step=step)
        found, value = self._local(name, dist)
        if found:  # a FloatDistribution's value (an earlier one of the name has the same class: checked)
            return float(cast(float, value))
        return self._remember(name, self._trial().suggest_float(name, low, high, step=step, log=log), dist)

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        dist = optuna.distributions.IntDistribution(low, high, log=log, step=step)
        found, value = self._local(name, dist)
        if found:  # an IntDistribution's value, as above
            return int(cast(int, value))
        return self._remember(name, self._trial().suggest_int(name, low, high, step=step, log=log), dist)

    @overload
    def suggest_categorical(self, name: str, choices: Sequence[None]) -> None: ...

    @overload
    def suggest_categorical(self, name: str, choices: Sequence[bool]) -> bool: ...

    @overload
    def suggest_categorical(self, name: str, choices: Sequence[int]) -> int: ...

    @overload
    def suggest_categorical(self, name: str, choices: Sequence[float]) -> float: ...

    @overload
    def suggest_categorical(self, name: str, choices: Sequence[str]) -> str: ...

    @overload
    def suggest_categorical(self, name: str, choices: Sequence[ParamValue]) -> ParamValue: ...

    def suggest_categorical(self, name: str, choices: Sequence[ParamValue]) -> ParamValue:
        dist = optuna.distributions.CategoricalDistribution(choices)
        found, value = self._local(name, dist)
        if found:
            return value
        return self._remember(name, self._trial().suggest_categorical(name, choices), dist)

    def suggest_uniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high)

    def suggest_loguniform(self, name: str, low: float, high: float) -> float:
        return self.suggest_float(name, low, high, log=True)

    def suggest_discrete_uniform(self, name: str, low: float, high: float, q: float) -> float:
        return self.suggest_float(name, low, high, step=q)

    # -- reporting -------------------------------------------------------------------------------------------------
    def _single_objective(self, what: str) -> None:
        if len(self._payload.objectives) > 1:
            raise NotImplementedError(f"Trial.{what} is not supported for multi-objective optimization.")

    def report(self, value: float, step: int) -> None:
        self._single_objective("report")
        if self._pruning:  # the pruner of every other trial reads it now
            self._trial().report(value, step)
            return
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"The `value` argument is of type '{type(value)}' but supposed to be a float.") from None
        try:
            step = int(step)
        except (TypeError, ValueError):
            raise TypeError(f"The `step` argument is of type '{type(step)}' but supposed to be an int.") from None
        if step < 0:
            raise ValueError(f"`{step=}` must be non-negative.")
        self.new_intermediate.setdefault(step, value)  # the first report of a step wins, as in Optuna

    def should_prune(self) -> bool:
        self._single_objective("should_prune")
        return self._trial().should_prune() if self._pruning else False

    def set_user_attr(self, key: str, value: object) -> None:
        if _json_serialisable(value, key):  # narrows value (a TypeGuard of its first argument)
            self._user_attrs[key] = value
            self.new_user_attrs[key] = value

    def set_constraint(self, key: str, value: float) -> None:
        self._trial().set_constraint(key, value)

    def collect(self, report: TrialReport) -> TrialReport:
        """Attach what the worker holds and the study does not have yet to ``report``."""
        report.params = dict(self.new_params)
        report.intermediate = dict(self.new_intermediate)
        report.user_attrs = dict(self.new_user_attrs)
        return report


_DATA: dict[str, TabularData | ImageData] = {}
"""The study's data in this worker process, by object id: fetched and deserialised once, not once per trial."""


def _study_data(refs: list[ObjectRef]) -> list[TabularData | ImageData]:
    import ray

    keys = [ref.hex() for ref in refs]
    if not all(key in _DATA for key in keys):
        values = ray.get(list(refs))
        _DATA.clear()  # only the latest study's data stays pinned in this process
        _DATA.update(zip(keys, values, strict=True))
    return [_DATA[key] for key in keys]


def _trial_device(gpus: float) -> tuple[str, str]:
    """The torch device a trial trains on, and how it is described in the trial's records.

    Ray gives a task that reserves GPUs a fresh worker process (``max_calls=1``) whose ``CUDA_VISIBLE_DEVICES``
    lists only the GPUs it assigned, so the first visible one, ``cuda:0``, is the trial's. Where torch cannot use
    CUDA (a CPU build of torch, logical GPUs), the trial trains on the CPU and the record says why.
    """
    if gpus <= 0:
        return "cpu", "cpu"
    import ray
    import torch

    ids = ",".join(str(i) for i in ray.get_gpu_ids()) or "-"
    if not torch.cuda.is_available():
        print(f"sparsearch: Ray assigned GPU {ids} but torch cannot use CUDA here "
              f"(torch {torch.__version__}); training on the CPU", file=sys.stderr, flush=True)
        return "cpu", f"cpu (Ray assigned GPU {ids}; torch has no CUDA here)"
    torch.cuda.set_device(0)
    return "cuda:0", f"cuda:0 (Ray GPU {ids}: {torch.cuda.get_device_name(0)})"


def execute_trial(payload: TrialPayload, storage_actor: ActorHandle | None,
                  data_refs: list[ObjectRef]) -> TrialReport:
    """Train and evaluate one trial; report epochs to the study; never raise for a trial's own failure.

    ``data_refs`` are the object refs of the train and validation sets, in a list so that Ray does not resolve
    them for every task: the worker process keeps them deserialised across the trials it runs. The steps:
    set up the process (:func:`_set_up`), watch its memory (:func:`_watch_memory`), run the objective or the
    built-in training (:func:`_run_trial`), and turn its outcome or exception into a report (:func:`_failed`),
    with what the worker's trial holds attached (:class:`_TrialRun`).
    """
    started = time.perf_counter()
    run = _TrialRun(payload, storage_actor, started)
    watchdog = _watch_memory(payload, run.storage)
    try:
        return run.done(_run_trial(payload, run, data_refs))
    except optuna.TrialPruned as exc:
        return run.done(TrialReport("PRUNED", history=run.history, error=str(exc)))
    except Exception as exc:
        return run.done(_failed(exc, run.history))
    finally:
        if watchdog is not None:
            watchdog.set()


class _TrialRun:
    """One trial in this worker: its node, device, storage access, trial object and epoch history."""

    def __init__(self, payload: TrialPayload, storage_actor: ActorHandle | None, started: float) -> None:
        import ray
        import torch

        self.payload, self.started = payload, started
        self.node = ray.get_runtime_context().get_node_id()
        self.threads = max(1, int(payload.cpus))
        torch.set_num_threads(self.threads)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = _LazyStorage(payload, storage_actor, self.node)
        self.device, self.device_note = _trial_device(payload.gpus)
        self.history: list[dict[str, float]] = []
        self.seed = trial_seed(payload.seed, payload.number)
        self.prune = payload.pruner != "none" and len(payload.objectives) == 1
        self.trial: WorkerTrial | None = None
        if self.prune or payload.objective is not None:
            self.trial = WorkerTrial(payload, self.storage, pruning=self.prune, sampler_seed=self.seed)

    def on_epoch(self, step: int, metrics: dict[str, float]) -> None:
        """One call per validation report (step from 1; the epoch itself with one report per epoch)."""
        self.history.append({"epoch": step, **metrics, "step": step})
        objective = self.payload.objectives[0]
        if self.prune and self.trial is not None and objective in metrics:
            self.trial.report(float(metrics[objective]), step)
            if self.trial.should_prune():
                epoch = metrics.get("epoch", step)
                raise optuna.TrialPruned(f"trial pruner stopped the trial at report {step} (epoch {epoch:g})")

    def done(self, report: TrialReport) -> TrialReport:
        """``report`` with the trial's duration, node and device, and what the worker's trial holds."""
        report.duration_s = time.perf_counter() - self.started
        report.node = self.node
        report.device = self.device_note
        return self.trial.collect(report) if self.trial is not None else report


def _watch_memory(payload: TrialPayload, storage: _LazyStorage) -> threading.Event | None:
    """Start the memory watchdog of a trial with ``trial_memory_mb``: over budget, the reason is stored on the
    trial (the driver fails it without retrying it) and the process exits."""
    limit = payload.memory_mb
    if limit is None:
        return None

    def exceeded(rss_mb: float) -> None:
        reason = records.memory_reason(rss_mb, limit)
        try:  # the driver reads it when the worker is gone, and fails the trial without retrying it
            records.set_fail_reason(storage.get(), payload.trial_id, reason)
        except Exception as exc:  # the process exits next: say so in the worker's log, never silently
            print(f"sparsearch: trial {payload.number}: {reason}; the reason could not be stored "
                  f"({type(exc).__name__}: {exc}), so the driver sees a worker death", file=sys.stderr,
                  flush=True)

    return _memory_watchdog(limit, exceeded)


def _run_trial(payload: TrialPayload, run: _TrialRun, data_refs: list[ObjectRef]) -> TrialReport:
    """Run the custom objective or the built-in training on the trial's features; a COMPLETE report."""
    from sparsearch.search.data import select_features

    train, val = _study_data(data_refs)
    train_k = select_features(train, payload.features)
    val_k = select_features(val, payload.features)
    accounting: JSONDict = {}
    model = None
    if payload.objective is not None:
        fn = payload.objective if callable(payload.objective) else _resolve_objective(payload.objective)
        assert run.trial is not None  # _TrialRun makes one for a custom objective
        result = fn(run.trial, payload.config, train_k, val_k, run.on_epoch)
        # one value: float() takes it or raises (the trial fails), as Objective says
        metrics = dict(result) if isinstance(result, dict) else {
            payload.objectives[0]: float(cast(SupportsFloat, result))}
    else:
        from sparsearch.spaces import selection_metric, train_and_evaluate

        outcome = train_and_evaluate(  # keeps the best epoch by the first validation objective
            payload.config, train_k, val_k, seed=run.seed, threads=run.threads, callback=run.on_epoch,
            return_model=payload.return_model, device=run.device, mixed_precision=payload.mixed_precision,
            select=selection_metric(payload.objectives),
        )
        metrics, accounting, model = dict(outcome.metrics), dict(outcome.accounting), outcome.model
        if not run.history:
            run.history = [dict(h) for h in outcome.history]
    missing = [o for o in payload.objectives if o not in metrics]
    if missing:
        raise KeyError(f"the trial did not report objective {missing[0]!r}; it reported {sorted(metrics)}")
    values = [float(metrics[o]) for o in payload.objectives]
    return TrialReport("COMPLETE", values=values, metrics=metrics, history=run.history, accounting=accounting,
                       model=model)


def _failed(exc: Exception, history: list[dict[str, float]]) -> TrialReport:
    """The FAIL report of a trial that raised ``exc``; a storage outage is not the trial's fault (re-queued)."""
    from sparsearch.search.storage import is_storage_outage

    tb = traceback.format_exc(limit=8)
    if is_storage_outage(exc):  # the driver re-queues it, as for a lost worker
        return TrialReport("FAIL", history=history, retryable=True, error=records.outage_reason(exc, tb))
    return TrialReport("FAIL", history=history, error=f"{type(exc).__name__}: {exc}\n{tb}")
