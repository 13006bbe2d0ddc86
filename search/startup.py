"""Budget-aware start-up: how many random trials a model-based sampler (TPE, GP) draws before it guides.

Optuna's default is 10 start-up trials whatever the budget: a study of ~10 trials (long trials, or a time limit)
is then random search. When ``[study] sampler_params`` sets no ``n_startup_trials``, sparsearch sets it from the
budget instead:

- ``n_trials`` only: ``max(MINIMUM, round(FRACTION * n_trials))`` (a fifth: 6 for 30 trials, 2 for 5);
- with ``timeout``: the same from ``n_trials`` to begin with; once the first ``min(workers, 3)`` trials have run,
  a fifth of the expected number of trials, ``min(n_trials, timeout * trials ended / time elapsed)``, set on the
  sampler (:func:`sparsearch.search._internals.set_startup_trials`: Optuna has no public setter) and estimated again
  at every trial's end. It only ever lowers. The estimate follows the study's measured throughput, not the first
  trials' durations: those are often the warm-start entries or trials a pruner stopped early, and later trials of a
  space are often longer (wider, more features, more epochs). A fifth of the trials expected at the throughput so far
  is, once a fifth of the timeout has passed, the number of trials already ended, so the sampler guides from about
  the first fifth of the time however the trials' durations drift.

Warm-start (enqueued) trials count towards the start-up trials: Optuna's TPE counts every finished trial, and
they are start-up exploration too (from measured configurations rather than at random); so TPE guides from
about the first fifth of the budget whether or not the study was warm-started.

The choice is printed and kept in the run JSON (``info.startup``); the warning for a study that never left its
start-up (:func:`sparsearch.search.spec.startup_note`) stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparsearch._types import JSONDict
from sparsearch.search._internals import set_startup_trials, startup_trials
from sparsearch.search.listeners import LoopListener, TrialEnd

if TYPE_CHECKING:
    import optuna

    from sparsearch.search.spec import StudySpec

__all__ = ["ESTIMATE", "FRACTION", "MINIMUM", "StartupListener", "StartupPlan", "budget_startup", "plan_startup"]

FRACTION = 0.2
"""The share of the budget sampled at random before the sampler guides."""
MINIMUM = 2
"""Never fewer start-up trials than this (TPE needs a few observations to split into good and bad)."""
ESTIMATE = "throughput"
"""How a timeout's expected trial count is estimated (``info.startup.timeout_estimate``): ``throughput``, trials
ended per second so far, at every trial's end. Runs before it (no such key) used the first trials' mean duration."""
_SAMPLERS = ("tpe", "gp", "TPESampler", "GPSampler")


def budget_startup(n_trials: float) -> int:
    """The start-up trials for a budget of ``n_trials`` trials.

    Example:
        >>> budget_startup(30), budget_startup(5), budget_startup(100)
        (6, 2, 20)
    """
    return max(MINIMUM, int(round(FRACTION * n_trials)))


@dataclass
class StartupPlan:
    """The start-up choice of one execution (``info.startup`` of the run JSON)."""

    n_startup_trials: int
    source: str
    """``user`` (set in sampler_params), ``n_trials`` (a fifth of it), ``timeout`` (a fifth of the expected
    trials, once estimated) or ``provisional`` (with a timeout, before the first trials ended)."""
    estimated_trials: float | None = None

    def to_json(self) -> JSONDict:
        return {"n_startup_trials": self.n_startup_trials, "source": self.source, "fraction": FRACTION,
                "estimated_trials": self.estimated_trials, "timeout_estimate": ESTIMATE,
                "warm_start_trials_count": True}

    def describe(self) -> str:
        why = {"user": "set in sampler_params", "n_trials": "about a fifth of n_trials",
               "provisional": "a fifth of n_trials until the first trials give the expected count in timeout",
               "timeout": f"a fifth of the ~{self.estimated_trials or 0:.0f} trials expected in timeout at the "
                          "throughput so far; estimated again as trials end, never raised"}
        return (f"start-up: the sampler draws {self.n_startup_trials} trial(s) (warm-start ones included) "
                f"before it guides ({why[self.source]})")


def plan_startup(spec: StudySpec) -> StartupPlan | None:
    """The start-up plan of ``spec``, or ``None`` for a sampler without start-up trials."""
    study = spec.study
    if study.sampler not in _SAMPLERS:
        return None
    given = study.sampler_params.get("n_startup_trials")
    if given is not None:
        if not isinstance(given, int | float | str):  # the sampler accepted it when the spec was loaded
            raise TypeError(f"sampler_params.n_startup_trials must be an integer, got {given!r}")
        return StartupPlan(int(given), "user")
    return StartupPlan(budget_startup(study.n_trials), "provisional" if study.timeout else "n_trials")


def sampler_params(spec: StudySpec, plan: StartupPlan | None) -> dict[str, object]:
    """``[study] sampler_params`` with the planned ``n_startup_trials`` added when the user set none."""
    params = dict(spec.study.sampler_params)
    if plan is not None and plan.source != "user":
        params["n_startup_trials"] = plan.n_startup_trials
    return params


class StartupListener(LoopListener):
    """With a timeout: once the first trials ran, set the start-up count from the expected number of trials, and
    lower it as the measured throughput falls (see the module docstring)."""

    def __init__(self, sampler: optuna.samplers.BaseSampler, plan: StartupPlan, *, timeout: float,
                 n_trials: int, workers: int, say: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sampler, self.plan, self.timeout, self.n_trials = sampler, plan, timeout, n_trials
        self.say, self.clock = say, clock
        self.started = clock()
        self.ended = 0
        self.wanted = min(max(1, workers), 3)

    def on_trial_end(self, end: TrialEnd) -> None:
        if self.plan.source not in ("provisional", "timeout") or end.kind != "ran":
            return
        self.ended += 1
        elapsed = self.clock() - self.started
        if self.ended < self.wanted or elapsed <= 0:
            return
        expected = min(float(self.n_trials), self.timeout * self.ended / elapsed)
        n = min(self.plan.n_startup_trials, budget_startup(expected))
        first = self.plan.source == "provisional"
        if not first and n == self.plan.n_startup_trials:
            return  # the plan keeps the estimate that set its count
        if startup_trials(self.sampler) is not None:
            set_startup_trials(self.sampler, n)
        self.plan.n_startup_trials, self.plan.source, self.plan.estimated_trials = n, "timeout", round(expected, 1)
        if first and self.say is not None:
            self.say(self.plan.describe())
