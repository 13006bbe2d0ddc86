"""Warm starts (``[study] warm_start``): trials enqueued before the search so that it starts from good models.

- ``"portfolio"``: :data:`PORTFOLIO`, a few strong, diverse configurations measured on the bundled studies and
  on generated data (best trial by *validation* value, never a test metric), each fitted to the user's space
  first: a number outside the space's range is clipped to it, an entry whose choice the space does not offer (or
  whose model is not the space's) is skipped; each clip and skip is a note (printed and in the run JSON's
  ``info.warm_start``).
- ``"study:NAME"``: the top :data:`TOP_K` completed trials of an earlier study in the same storage, best first;
  a trial whose parameter is not in this space, or whose value this space excludes, is skipped with a note saying
  which and why. A study that does not exist, or has none completed, is a one-line error naming the studies there.
- ``"none"``: no warm start.

A study with a custom ``[study] objective`` gets the portfolio too: the controller samples the study's space for
every trial and hands the objective that configuration (``config``), so a portfolio entry is a point of the space
whatever trains it. A parameter the objective suggests itself is not in the entries and is sampled as usual; a
note says the entries were measured with sparsearch's own training.

Every enqueued trial carries the trial user attribute ``warm_start`` (:func:`records.enqueue_warm`), which the run
JSON shows and the MLflow child run gets as a tag. A resumed study that holds a warm-start trial already (of any
state) is not warm-started again. At most ``n_trials`` are enqueued (the execution would leave the rest waiting in
the storage); a note names the ones left out. Enqueued trials count towards the sampler's start-up trials (Optuna's TPE counts
every finished trial; see :mod:`~sparsearch.search.startup`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict, TypeVar

from sparsearch._types import JSONDict, Params, ParamValue
from sparsearch.errors import SpecError
from sparsearch.search import records

if TYPE_CHECKING:
    import optuna
    from optuna.storages import BaseStorage

    from sparsearch.search.spec import StudySpec

_N = TypeVar("_N", int, float)

__all__ = ["PORTFOLIO", "TOP_K", "PortfolioEntry", "WarmStart", "check_warm_start", "fit_params", "source_study",
           "warm_start"]

TOP_K = 5
"""``study:NAME`` enqueues at most this many of the earlier study's completed trials."""

PortfolioEntry = TypedDict("PortfolioEntry", {"model": str, "from": str, "params": Params})
"""One portfolio entry: its model family, where it was measured (``from``, a keyword, hence this syntax) and its
parameters."""

# Each tabular entry is the best trial by *validation* value (never a test metric) measured on its data at the
# study's own seed 0, in issue 29's model family (numeric encodings, ensembles, cross layers, factorization-machine
# products) where that scored higher on the same split. Each carries ``data.top_k``, the number of best-ranked
# features it was measured with (clipped to a user's range like any number): the first portfolio (issue 30) left it
# to the sampler, and a drawn count made its entries weak (flights: 4-7 features score about 0.68 validation AUC;
# clicklog_large: 25 features instead of 10 cost 0.016).
PORTFOLIO: list[PortfolioEntry] = [
    # flights (real data, all 327,346 rows): bench/results/boosting/all-rows-s0.json (row.ours.best_params), trial
    # 23, val_auc 0.7603, the best of 13 completed trials by validation AUC (issue 29's comparison with boosting)
    {"model": "mlp", "from": "flights (issue 29) trial 23", "params": {
        "data.top_k": 9, "arch.depth": 2, "arch.width_l0": 147, "arch.width_l1": 112, "arch.embedding_dim": 8,
        "arch.dropout": 0.18162748639068063, "arch.numeric_encoding": "quantile", "arch.cross_layers": 2,
        "arch.fm_dim": 7, "arch.ensemble_size": 1, "sparsity.method": "gmp", "sparsity.pattern": "unstructured",
        "sparsity.target": 0.9062160498413693, "sparsity.distribution": "erk", "sparsity.erk_power": 1.0,
        "sparsity.criterion": "magnitude", "sched.schedule": "cubic", "sched.start_frac": 0.25,
        "sched.end_frac": 0.75, "sched.mask_updates": 10, "train.lr": 0.006069883655058285,
        "train.optimizer": "adam", "train.weight_decay": 0.0}},
    # clicklog_large (generated click log, 2M rows): bench/results/fullsize-clicklog.json, trial 6, val_auc 0.8149
    # (best by validation AUC; the same trial is best in fullsize-clicklog-pruner=none.json), measured before issue
    # 29, so today's model; on the same split (seed 0), the best of issue 29's family scored 0.8117
    # (fullsize-clicklog-seed=0.json, trial 16), so this entry stays. Its 10 features matter: the same parameters
    # with 25 drawn features scored 0.7993 there (trial 1)
    {"model": "mlp", "from": "clicklog_large trial 6", "params": {
        "data.top_k": 10, "arch.depth": 2, "arch.width_l0": 42, "arch.width_l1": 48, "arch.embedding_dim": 6,
        "arch.dropout": 0.16419864596958703, "arch.numeric_encoding": "standard", "arch.cross_layers": 0,
        "arch.fm_dim": 0, "arch.ensemble_size": 1, "sparsity.method": "gmp", "sparsity.pattern": "unstructured",
        "sparsity.target": 0.5436955741068775, "sparsity.distribution": "uniform", "sparsity.criterion": "magnitude",
        "sched.schedule": "cubic", "sched.start_frac": 0.25, "sched.end_frac": 0.75, "sched.mask_updates": 10,
        "train.lr": 0.018638160768249964, "train.optimizer": "adam", "train.weight_decay": 0.0}},
    # generated click log with a planted user x item affinity (300,000 rows, the `table` study with 2 proposed
    # crosses): bench/results/affinity-300000x5seeds.json (runs[0].best_params, seed 0), val_auc 0.5873, the best
    # of 20 trials by validation AUC; a small model that learns the affinity through products of embeddings
    {"model": "mlp", "from": "planted affinity (issue 29) seed 0", "params": {
        "data.top_k": 5, "data.crosses": 1, "arch.depth": 1, "arch.width_l0": 37, "arch.embedding_dim": 4,
        "arch.dropout": 0.18046713340081025, "arch.numeric_encoding": "plr", "arch.cross_layers": 1,
        "arch.fm_dim": 2, "arch.ensemble_size": 1, "sparsity.method": "gmp", "sparsity.pattern": "unstructured",
        "sparsity.target": 0.9439193706019832, "sparsity.distribution": "erk", "sparsity.erk_power": 1.0,
        "sparsity.criterion": "magnitude", "sched.schedule": "cubic", "sched.start_frac": 0.25,
        "sched.end_frac": 0.75, "sched.mask_updates": 10, "train.lr": 0.006100415613279737,
        "train.optimizer": "adam", "train.weight_decay": 0.0}},
    # fashion_cnn (Fashion-MNIST): bench/results/fullsize-fashion.json, trial 15, val_accuracy 0.91125 (best by
    # validation accuracy of 7 completed trials)
    {"model": "cnn", "from": "fashion_cnn trial 15", "params": {
        "arch.depth": 3, "arch.width_l0": 55, "arch.width_l1": 49, "arch.width_l2": 64,
        "arch.dropout": 0.007861396954057562, "sparsity.method": "gmp", "sparsity.pattern": "unstructured",
        "sparsity.target": 0.928103126373228, "sparsity.distribution": "erk", "sparsity.erk_power": 1.0,
        "sparsity.criterion": "magnitude", "sched.schedule": "cubic", "sched.start_frac": 0.1, "sched.end_frac": 0.5,
        "sched.mask_updates": 10, "train.lr": 0.0059928916800189615, "train.optimizer": "adam",
        "train.weight_decay": 0.0}},
]
"""The portfolio: one entry per measured data set, with its model family, its source and its parameters."""


@dataclass
class WarmStart:
    """What a warm start did (``info.warm_start`` of the run JSON)."""

    mode: str
    enqueued: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> JSONDict:
        return {"mode": self.mode, "enqueued": self.enqueued, "notes": list(self.notes)}


class _Skip(Exception):
    """An entry (or trial) that cannot run in this space; the message says why."""


class _Fitter:
    """A stand-in trial for ``suggest_config``: answers each suggestion from ``wanted``, within the space.

    It walks exactly the parameters the space asks for given the wanted values (conditional ones included);
    numbers outside the space's range are clipped (``clip``) or refused, a choice the space does not offer is
    refused. Parameters the entry lacks are left to the sampler (the walk goes on with the range's low end).
    """

    def __init__(self, wanted: Params, *, clip: bool) -> None:
        self.wanted, self.clip = wanted, clip
        self.params: Params = {}
        self.visited: set[str] = set()
        self.clipped: list[str] = []

    def _number(self, name: str, low: float, high: float, cast: type[_N]) -> _N:
        self.visited.add(name)
        if name not in self.wanted:
            return cast(low)
        value = self.wanted[name]
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            raise _Skip(f"{name}={value!r} is not a number")
        fitted = cast(min(max(value, low), high))
        if cast is int:
            fitted = int(min(max(round(value), low), high))
        if fitted != value:
            if not self.clip:
                raise _Skip(f"{name}={value!r} is outside this space's range [{low:g}, {high:g}]")
            self.clipped.append(f"{name} {value:g} -> {fitted:g}")
        self.params[name] = fitted
        return fitted

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        return self._number(name, low, high, int)

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None,
                      log: bool = False) -> float:
        return self._number(name, low, high, float)

    def suggest_categorical(self, name: str, choices: Sequence[ParamValue]) -> ParamValue:
        self.visited.add(name)
        if name not in self.wanted:
            return choices[0]
        value = self.wanted[name]
        if value not in choices:
            raise _Skip(f"{name}={value!r} is not offered (this space offers {list(choices)})")
        self.params[name] = value
        return value


def fit_params(wanted: Params, spec: StudySpec, *, clip: bool,
               strict_names: bool) -> tuple[Params, list[str]]:
    """Fit ``wanted`` parameters to ``spec``'s space: ``(params, clipped)``; raises ``_Skip`` with the reason.

    ``strict_names``: a wanted parameter this space never asks for (given the other values) is refused.
    """
    from sparsearch.spaces.config import suggest_config

    params: Params = {}
    data_ranges = {"data.top_k": spec.data.top_k, "data.crosses": spec.data.crosses}
    fitter = _Fitter(wanted, clip=clip)
    for name, rng in data_ranges.items():  # the loop suggests these before the space (search/loop.py)
        if rng is not None and rng[0] < rng[1]:
            fitter._number(name, rng[0], rng[1], int)
    try:
        suggest_config(fitter, spec.space, spec.train)
    except _Skip:
        raise
    except (ValueError, SpecError) as exc:
        raise _Skip(f"its configuration is invalid in this space: {exc}") from None
    params.update(fitter.params)
    unknown = sorted(set(wanted) - fitter.visited)
    if strict_names and unknown:
        raise _Skip(f"parameter(s) {unknown} are not in this space")
    return params, fitter.clipped


def check_warm_start(value: str) -> str:
    """Return ``value`` if it is a valid ``[study] warm_start``, else raise ``ValueError`` saying what is allowed."""
    if value in ("portfolio", "none") or (value.startswith("study:") and value[len("study:"):].strip()):
        return value
    raise ValueError(f"warm_start must be \"portfolio\", \"none\" or \"study:NAME\", got {value!r}")


def warm_start(study: optuna.Study, spec: StudySpec, storage: str | BaseStorage) -> WarmStart:
    """Enqueue the warm-start trials ``spec`` asks for into ``study`` (nothing on a resumed, warm-started study)."""
    mode = spec.study.warm_start
    result = WarmStart(mode)
    if mode == "none":
        return result
    if records.warm_started(study):
        result.notes.append(f"warm start {mode}: this study was warm-started before; nothing enqueued again")
        return result
    if mode == "portfolio" and spec.study.objective is not None:
        # the objective receives the space's sampled configuration: an entry is a point of that space
        result.notes.append("warm start portfolio: the entries set the study space's parameters that the custom "
                            "[study] objective receives as `config` (they were measured with sparsearch's own "
                            "training); warm_start = \"none\" leaves them out")
    if mode == "portfolio":
        candidates = _portfolio(spec, result.notes)
        clip = True
    else:
        candidates = _from_study(spec, storage)
        clip = False
    for i, (label, wanted) in enumerate(candidates):
        if result.enqueued == spec.study.n_trials:
            # more entries than the execution runs trials: the rest would wait in the storage, never run
            rest = ", ".join(lab for lab, _ in candidates[i:])
            result.notes.append(f"warm start {mode}: not enqueued (n_trials = {spec.study.n_trials} runs only the "
                                f"first {spec.study.n_trials}): {rest}")
            break
        try:
            params, clipped = fit_params(wanted, spec, clip=clip, strict_names=mode != "portfolio")
        except _Skip as exc:
            result.notes.append(f"warm start {mode}: {label} skipped: {exc}")
            continue
        if clipped:
            result.notes.append(f"warm start {mode}: {label} clipped to this space: {', '.join(clipped)}")
        records.enqueue_warm(study, params, mode)
        result.enqueued += 1
    return result


def _portfolio(spec: StudySpec, notes: list[str]) -> list[tuple[str, Params]]:
    out = []
    for entry in PORTFOLIO:
        if entry["model"] != spec.space.model:
            continue  # the portfolio of another model family: not a note, it never could apply
        out.append((f"portfolio entry {entry['from']!r}", entry["params"]))
    if not out:
        notes.append(f"warm start portfolio: no portfolio entry for model {spec.space.model!r}")
    return out


def source_study(spec: StudySpec, storage: str | BaseStorage) -> optuna.Study | None:
    """The earlier study ``[study] warm_start = "study:NAME"`` names (``None`` for another warm start).

    Raises a one-line :class:`SpecError` naming the studies in the storage when it does not exist (or is this
    study) or has no completed trial; the controller calls it before any data is prepared.
    """
    import optuna
    from optuna.trial import TrialState

    mode, own = spec.study.warm_start, spec.study.name
    if not mode.startswith("study:"):
        return None
    name = mode[len("study:"):]
    present = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
    shown = ", ".join(repr(s) for s in present if s != own) or "none"
    if name == own or name not in present:
        raise SpecError(f"[study] warm_start = \"study:{name}\": no such earlier study in this storage "
                        f"(studies there: {shown})")
    earlier = optuna.load_study(study_name=name, storage=storage)
    if not earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SpecError(f"[study] warm_start = \"study:{name}\": that study has no completed trial "
                        f"(studies there: {shown})")
    return earlier


def _from_study(spec: StudySpec, storage: str | BaseStorage) -> list[tuple[str, Params]]:
    import optuna
    from optuna.trial import TrialState

    earlier = source_study(spec, storage)
    assert earlier is not None  # only called for "study:NAME"
    name = earlier.study_name
    done = earlier.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(earlier.directions) == 1:
        sign = -1.0 if earlier.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        top = sorted(done, key=lambda t: (sign * t.values[0], t.number))[:TOP_K]
    else:
        top = sorted(earlier.best_trials, key=lambda t: t.number)[:TOP_K]
    return [(f"trial {t.number} of study {name!r}", dict(t.params)) for t in top]
