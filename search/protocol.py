"""The wire protocol between the driver and a trial's Ray worker: what goes out, what comes back.

:class:`TrialPayload` is everything a worker needs besides the data (built by :func:`build_payload`, the one
place that fills it, for a dispatched trial and for a re-training for the test rows); :class:`TrialReport` is
what the worker returns (it never raises for a trial's own failure). Both are pickled by Ray.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from sparsearch._types import JSONDict, ParamValue

if TYPE_CHECKING:
    import datetime

    from optuna.distributions import BaseDistribution
    from optuna.trial import BaseTrial
    from torch import nn

    from sparsearch.search.spec import StudySpec
    from sparsearch.spaces.config import TrialConfig
    from sparsearch.spaces.data import ImageData, TabularData

__all__ = ["Dispatch", "Objective", "ReportState", "TrialPayload", "TrialReport", "build_payload", "trial_seed"]

ReportState = Literal["COMPLETE", "PRUNED", "FAIL"]
"""How a trial ended, as the worker reports it (the names of the matching ``optuna.trial.TrialState``)."""


class Objective(Protocol):
    """A custom objective, ``f(trial, config, train, val, report)`` (``[study] objective``): it trains and
    evaluates one trial and returns its metrics by name (a dict), or the value of the study's only objective
    (anything ``float()`` takes; the worker fails the trial otherwise). The return type is ``object`` as in
    ``[study] objective`` (``StudySection.objective``), which accepts any such function.

    ``trial`` is the worker's :class:`~sparsearch.search.worker.WorkerTrial`; ``report(step, metrics)`` records
    one validation report (the trial pruner reads it).
    """

    def __call__(self, trial: BaseTrial, config: TrialConfig, train: TabularData | ImageData,
                 val: TabularData | ImageData, report: Callable[[int, dict[str, float]], None], /,
                 ) -> object: ...


@dataclass(frozen=True)
class TrialPayload:
    """Everything a worker needs besides the data."""

    study_name: str
    trial_id: int
    number: int
    config: TrialConfig
    objectives: tuple[str, ...]
    sampler: str
    pruner: str
    pruner_params: dict[str, object]
    """Keyword arguments of the trial pruner (``[study] pruner_params`` with the study's budget filled in)."""
    seed: int | None
    cpus: float
    features: tuple[str, ...] | None = None
    memory_mb: int | None = None
    objective: str | Objective | None = None
    """A ``"module:function"`` imported in the worker, or the function itself (serialised by Ray)."""
    return_model: bool = True
    params: dict[str, tuple[ParamValue, BaseDistribution]] = field(default_factory=dict)
    """Parameters the driver already set on the trial: name -> (value, distribution)."""
    proposals: dict[str, tuple[ParamValue, BaseDistribution]] = field(default_factory=dict)
    """Values the driver's sampler proposes for parameters the objective suggests itself: name -> (value,
    distribution). Used (and then stored) only when the objective suggests that name with that distribution."""
    user_attrs: JSONDict = field(default_factory=dict)
    """The trial's user attributes so far."""
    datetime_start: datetime.datetime | None = None
    local_storage: str | None = None
    """A journal-file storage URL that workers on ``driver_node`` open themselves instead of using the actor."""
    driver_node: str | None = None
    gpus: float = 0.0
    """GPUs Ray reserved for the trial (``[execution] gpus_per_trial``)."""
    mixed_precision: bool = False
    storage_retries: int = 3
    """How often a call safe to repeat is sent again when the storage actor restarts (0: in-memory study)."""


@dataclass
class TrialReport:
    """The outcome of one trial as the driver sees it."""

    state: ReportState
    values: list[float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    accounting: JSONDict = field(default_factory=dict)
    model: nn.Module | None = None
    error: str | None = None
    duration_s: float = 0.0
    node: str | None = None
    """The Ray node that ran the trial."""
    params: dict[str, tuple[float, BaseDistribution]] = field(default_factory=dict)
    """Parameters suggested in the worker and not yet in storage: name -> (internal value, distribution)."""
    intermediate: dict[int, float] = field(default_factory=dict)
    """Values reported with ``trial.report`` and not yet in storage (no trial pruner): step -> value."""
    user_attrs: JSONDict = field(default_factory=dict)
    """``trial.set_user_attr`` calls not yet in storage (``set_user_attr`` checks each value)."""
    retryable: bool = False
    """A FAIL that is not the trial's own (the study's storage was unreachable from the worker): re-queued."""
    device: str | None = None
    """Where the trial trained: ``cpu`` or ``cuda:N (name)``, with the GPU ids Ray assigned."""


@dataclass(frozen=True)
class Dispatch:
    """What a trial the search loop dispatches carries besides its configuration (a re-training has none)."""

    params: dict[str, tuple[ParamValue, BaseDistribution]]
    """Parameters the driver set on the trial: name -> (value, distribution)."""
    proposals: dict[str, tuple[ParamValue, BaseDistribution]]
    user_attrs: JSONDict
    datetime_start: datetime.datetime | None
    storage_url: str
    """The study's storage URL (a journal file is opened directly by workers on ``driver_node``)."""
    driver_node: str
    return_model: bool


def trial_seed(seed: int | None, number: int) -> int | None:
    """The torch (and per-trial sampler) seed of trial ``number`` in a study seeded with ``seed``:
    ``seed * 100_003 + number``, so that a configuration that recurs across studies of other seeds (a warm-start
    portfolio entry) trains from other initial weights on each; ``None`` for an unseeded study."""
    return None if seed is None else seed * 100_003 + number


def build_payload(spec: StudySpec, *, trial_id: int, number: int, config: TrialConfig,
                  features: tuple[str, ...] | None, dispatch: Dispatch | None) -> TrialPayload:
    """The payload of trial ``number``: dispatched by the search loop (``dispatch``), or, with ``dispatch``
    ``None``, re-trained from its parameters for the test rows (no pruner, no study access, its model returned)."""
    study = spec.study
    retraining = TrialPayload(
        study_name=study.name, trial_id=trial_id, number=number, config=config,
        objectives=tuple(study.objectives), sampler=study.sampler, seed=study.seed,
        cpus=spec.execution.cpus_per_trial, features=features, pruner="none", pruner_params={}, return_model=True,
    )
    if dispatch is None:
        return retraining
    from sparsearch.search.storage import is_journal, is_memory_url

    execution, url = spec.execution, dispatch.storage_url
    return dataclasses.replace(
        retraining, pruner=study.pruner, pruner_params=spec.pruner_params(), memory_mb=execution.trial_memory_mb,
        objective=study.objective, return_model=dispatch.return_model, params=dispatch.params,
        proposals=dispatch.proposals, user_attrs=dispatch.user_attrs, datetime_start=dispatch.datetime_start,
        local_storage=url if is_journal(url) else None, driver_node=dispatch.driver_node,
        gpus=execution.gpus_per_trial, mixed_precision=execution.mixed_precision,
        storage_retries=0 if is_memory_url(url) else 3,
    )
