"""Study notes: warnings about a study's settings: the pruner advice (before any trial runs) and the sampler that
never left its random start-up phase (after the trials).

The controller shows each note on the progress lines (or as a Python warning) and keeps it in the result's info.
"""

from __future__ import annotations

import optuna

from sparsearch.search import registry
from sparsearch.search._internals import startup_trials
from sparsearch.search.spec.sections import StudySpec

__all__ = ["pruner_comparison_steps", "pruning_window_note", "startup_note"]


def pruner_comparison_steps(spec: StudySpec) -> list[int] | None:
    """The report steps (1-based, as trials report them) at which the study's trial pruner compares a trial with
    the others, or ``None`` for no pruner or a pruner whose steps are not known here.

    Successive halving and Hyperband compare at their rungs, ``min_resource * reduction_factor**k`` reports
    (Hyperband: the union over its brackets); the median, percentile and threshold pruners at every
    ``interval_steps``-th report from ``n_warmup_steps`` on. Steps past a trial's last report are left out.
    """
    import inspect

    given = spec.pruner_params()
    kind = type(registry.make_pruner(spec.study.pruner, **given))  # the registry resolves names
    name = kind.__name__
    if name not in ("MedianPruner", "PercentilePruner", "ThresholdPruner", "SuccessiveHalvingPruner",
                    "HyperbandPruner"):
        return None
    signature = inspect.signature(kind)
    params = {key: p.default for key, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
    params.update(given)
    last = (spec.train.epochs + spec.space.dense_finetune_epochs) * spec.train.reports_per_epoch
    if name in ("MedianPruner", "PercentilePruner", "ThresholdPruner"):
        first, every = max(1, int(params["n_warmup_steps"])), max(1, int(params["interval_steps"]))
        return list(range(first, last + 1, every))
    rf = int(params["reduction_factor"])
    low = params["min_resource"]
    if low == "auto":  # Optuna: ceil(1% of the first finished trial's steps)
        low = max(1, -(-last // 100))
    low = int(low)
    if name == "SuccessiveHalvingPruner":
        low *= rf ** int(params["min_early_stopping_rate"])
    steps = []
    while low <= last and rf > 1:
        steps.append(low)
        low *= rf
    return steps


def pruning_window_note(spec: StudySpec) -> str | None:
    """A warning when the trial pruner compares trials inside gradual magnitude pruning's window, else ``None``.

    While GMP prunes, a trial's accuracy dips and recovers only after the window ends; a trial of a method that
    holds its sparsity from the start (dense, static, set, rigl), or a GMP trial whose window ends sooner, shows no
    such dip at the same step. A pruner that compares them there stops GMP trials for their dip, not for their
    result (BENCHMARKS.md, ``fashion_cnn`` study v2: every GMP trial that reached the 9-epoch rung, at the end of
    its window, was stopped). Nothing to warn about when every trial prunes in the same window, or none prunes.
    """
    from sparsearch.spaces import METHODS

    space, train = spec.space, spec.train
    if spec.study.objective is not None or "gmp" not in space.methods:
        return None
    others = [m for m in space.methods if not METHODS.get(m).gradual]  # fixed sparsity from the start: no dip
    searched_window = space.prune_start_frac[0] < space.prune_start_frac[1] or (
        space.prune_end_frac[0] < space.prune_end_frac[1])
    if not others and not searched_window:
        return None
    steps = pruner_comparison_steps(spec)
    if not steps:
        return None
    per_epoch = train.reports_per_epoch
    sparse_reports = train.epochs * per_epoch
    start, end = space.prune_start_frac[0] * sparse_reports, space.prune_end_frac[1] * sparse_reports
    inside = [s for s in steps if start < s <= end]
    if not inside:
        return None
    rival = f"{', '.join(others)} trials" if others else "GMP trials with another pruning window"
    shown = ", ".join(f"{s / per_epoch:g}" for s in inside[:5]) + (", ..." if len(inside) > 5 else "")
    return (f"the {spec.study.pruner} pruner compares trials at epoch(s) {shown}, inside GMP's pruning window "
            f"(epochs {start / per_epoch:g}-{end / per_epoch:g}), where a GMP trial's accuracy dips and {rival} "
            f"show no such dip: it may stop GMP trials for the dip; end the window before the pruner's first "
            f"comparison ([space] prune_end_frac) or start comparing after it ([study] pruner_params)")


def startup_note(study: optuna.Study) -> str | None:
    """A warning when a model-based sampler never left its random start-up phase, else ``None``.

    TPE samples at random until ``n_startup_trials`` trials (default 10) have finished; a study with no more
    trials than that (e.g. ~8 long CNN trials within a time limit) is random search, whatever its sampler says,
    and a comparison of it against random search compares random with random.
    """
    sampler = study.sampler
    n_startup = startup_trials(sampler)
    if n_startup is None:
        return None
    n = len(study.get_trials(deepcopy=False))
    if n > n_startup:
        return None
    return (f"{type(sampler).__name__} samples its first {n_startup} trials at random (n_startup_trials) and "
            f"this study has {n}: it ran as random search; give it more trials or time, or a smaller "
            f"n_startup_trials in [study] sampler_params")
