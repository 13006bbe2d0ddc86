"""Listeners: what plugs into the search loop besides the study, as Ray Tune's and Optuna's callbacks do.

The loop (:class:`~sparsearch.search.loop.SearchLoop`) calls each :class:`LoopListener` hook, in the order the
listeners were given, and knows nothing of what they do:

- :meth:`~LoopListener.on_trial_start`: a trial was dispatched (its payload is about to go to a worker);
- :meth:`~LoopListener.on_report`: a trial's report came back, before it is stored and told;
- :meth:`~LoopListener.on_trial_end`: a trial ended (:class:`TrialEnd`: it ran here, its configuration was
  invalid, it was another driver's and went stale, or it was interrupted);
- :meth:`~LoopListener.on_finish`: the loop ended (:class:`LoopOutcome`), also when it stopped on an error.

Three listeners exist: :class:`TrackingListener` (MLflow child runs through the trial log, and the late ones at
the end), :class:`ModelKeeper` (the trained models the test rows and the packaged model may need) and
:class:`ProgressListener` (one progress line per trial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from optuna.trial import FrozenTrial, TrialState

from sparsearch.search import records
from sparsearch.search._internals import study_id
from sparsearch.search.progress import ProgressPrinter
from sparsearch.search.results import best_values

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from sparsearch._types import JSONDict
    from sparsearch.search.execution import Execution
    from sparsearch.search.protocol import TrialPayload, TrialReport

__all__ = ["KeptModel", "LoopListener", "LoopOutcome", "ModelKeeper", "ProgressListener", "TrackingListener",
           "TrialEnd", "TrialEndKind"]

TrialEndKind = Literal["ran", "invalid", "stale", "interrupted"]
"""How a trial ended for the loop: it ran on a worker (``ran``), its sampled configuration was invalid
(``invalid``: it never ran), it was another driver's and went stale (``stale``), or Ctrl-C stopped it."""


@dataclass(frozen=True)
class TrialEnd:
    """A trial the loop has finished (told the study, or failed in storage)."""

    trial: FrozenTrial
    kind: TrialEndKind
    report: TrialReport | None = None
    """What the worker (or the driver, for a lost task) reported; ``None`` unless the trial ran."""
    features: tuple[str, ...] | None = None
    """The trial's feature subset (``None``: every candidate)."""
    run_id: str | None = None
    """A stale trial's MLflow child run, when its driver had created one."""

    @property
    def duration_s(self) -> float:
        return self.report.duration_s if self.report is not None else 0.0


@dataclass(frozen=True)
class LoopOutcome:
    """What the search loop did: ``n_run`` trials dispatched by this execution; ``interrupted`` by Ctrl-C."""

    n_run: int
    interrupted: bool


class LoopListener:
    """A search-loop listener: override the hooks you need; each one does nothing by default."""

    def on_trial_start(self, trial: optuna.Trial, payload: TrialPayload) -> None:
        """``trial`` was sampled and is about to be sent to a worker with ``payload``; must not block."""

    def on_report(self, trial: optuna.Trial, report: TrialReport) -> None:
        """``trial``'s report came back (or the driver made one for a lost task), before it is stored."""

    def on_trial_end(self, end: TrialEnd) -> None:
        """A trial ended (see :class:`TrialEnd`)."""

    def on_finish(self, outcome: LoopOutcome) -> None:
        """The loop ended; also called when it stopped on an error or Ctrl-C."""


class TrackingListener(LoopListener):
    """Trial child runs in MLflow: created at dispatch, finished when the trial ends (off the loop, by the trial
    log), and the ones a failed MLflow write left out written at the end.

    Constructing it attaches the execution's trial log to the study (after the parent run started).
    """

    def __init__(self, ex: Execution, study: optuna.Study, storage: optuna.storages.BaseStorage,
                 data_fingerprint: str) -> None:
        self.ex, self.study, self.storage = ex, study, storage
        spec = ex.spec.study
        self.tags = {"study": spec.name, "sampler": spec.sampler, "seed": str(spec.seed),
                     "data_fingerprint": data_fingerprint}
        """The tags of every child run (a re-queued trial's also names the trial it runs again)."""
        ex.trial_log.attach(storage, study_id(study))

    def on_trial_start(self, trial: optuna.Trial, payload: TrialPayload) -> None:
        retry_of = records.retry_of(trial)
        tags = {**self.tags, **({"retry_of": str(retry_of)} if retry_of is not None else {})}
        warm = records.warm_source(trial)
        if warm is not None:
            tags[records.WARM_START] = warm  # the MLflow child run says where a warm-start trial came from
        self.ex.trial_log.start(trial.number, dict(trial.params), tags)  # never blocks the search loop

    def on_trial_end(self, end: TrialEnd) -> None:
        log, number = self.ex.trial_log, end.trial.number
        if end.kind == "stale":
            log.finish(number, state="FAIL", error=records.Reason.STALE_RUN.value, run_id=end.run_id)
        elif end.kind == "interrupted":
            log.finish(number, state="FAIL", error=records.Reason.INTERRUPTED_RUN.value)
        elif end.kind == "ran" and end.report is not None:
            report, state = end.report, end.trial.state
            layer_sparsity = _layer_sparsity(report.accounting)
            log.finish(number, state=records.finished_state(state), history=report.history,
                       metrics={**report.metrics, **layer_sparsity}, accounting=report.accounting,
                       error=report.error if state == TrialState.FAIL else None,
                       tags={"device": report.device} if report.device else None)

    def on_finish(self, outcome: LoopOutcome) -> None:
        """Wait for the child runs handed over; then write those still missing (never after Ctrl-C)."""
        from sparsearch.search.finish import sync_unlogged

        self.ex.trial_log.close()
        if not outcome.interrupted:
            sync_unlogged(self.ex, self.study, self.storage)

KeptModel = tuple[list[float], "nn.Module", tuple[str, ...] | None]
"""A kept model: (its trial's values signed to maximise, the model, the trial's features)."""


class ModelKeeper(LoopListener):
    """The trained models that may be evaluated on the test rows at the end: number -> :data:`KeptModel`.

    Only the best trial (single objective) or this execution's non-dominated trials are kept.
    """

    def __init__(self, directions: list[str]) -> None:
        self.directions = list(directions)
        self.models: dict[int, KeptModel] = {}

    def signed(self, values: list[float]) -> list[float]:
        """``values`` with every objective turned into one to maximise (the order ``models`` keeps)."""
        return [v if d == "maximize" else -v for d, v in zip(self.directions, values)]

    def best_kept(self) -> tuple[int, nn.Module, tuple[str, ...] | None] | None:
        """``(number, model, features)`` of the kept model that is best in the first objective (ties: the
        earlier trial), or ``None`` when no model is kept."""
        if not self.models:
            return None
        number = max(self.models, key=lambda n: (self.models[n][0][0], -n))
        _, model, features = self.models[number]
        return number, model, features

    def keep_model(self, frozen: FrozenTrial, model: nn.Module | None, features: tuple[str, ...] | None) -> None:
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

    def on_trial_end(self, end: TrialEnd) -> None:
        if end.kind == "ran" and end.report is not None:
            self.keep_model(end.trial, end.report.model, end.features)

    def keep_retrained(self, frozen: FrozenTrial, model: nn.Module, features: tuple[str, ...] | None) -> None:
        """Keep a model re-trained for the test rows (an earlier execution's incumbent), whatever the others."""
        self.models[frozen.number] = (self.signed(list(frozen.values)), model, features)


class ProgressListener(LoopListener):
    """One progress line per trial this driver finished (done / pruned / failed, best so far, elapsed, ETA), and
    the study's messages (:meth:`say`)."""

    def __init__(self, study: optuna.Study, n_trials: int, objectives: list[str]) -> None:
        self.study = study
        self.objectives = list(objectives)
        self.printer = ProgressPrinter(n_trials, self.objectives)

    def say(self, text: str) -> None:
        self.printer.message(text)

    def on_trial_end(self, end: TrialEnd) -> None:
        if end.kind in ("ran", "invalid"):
            self.trial_done(self.study, end.trial, end.duration_s)

    def trial_done(self, study: optuna.Study, frozen: FrozenTrial, duration: float) -> None:
        best = best_values(study, len(self.objectives))
        note = str(records.fail_reason(frozen) or "")[:120] if frozen.state == TrialState.FAIL else ""
        self.printer.trial_done(frozen.number, frozen.state, list(frozen.values) if frozen.values else None,
                                best, duration, note)


def _layer_sparsity(accounting: JSONDict) -> dict[str, float]:
    """``layer_sparsity.<name>`` of each prunable layer in a trial's accounting (``spaces.train.account_model``)."""
    layers = accounting.get("layers")
    out: dict[str, float] = {}
    for layer in layers if isinstance(layers, list) else []:
        if isinstance(layer, dict) and layer.get("prunable"):
            sparsity = layer["sparsity"]
            assert isinstance(sparsity, int | float), f"layer sparsity must be a number, got {sparsity!r}"
            out[f"layer_sparsity.{layer['name']}"] = float(sparsity)
    return out
