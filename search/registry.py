"""Registries of Optuna samplers and trial pruners by name.

One registry per kind (STYLE habit 9): the study-file validation, the CLI help and the README read these. A name
that is not a short name may be any Optuna sampler or pruner class name (``"CmaEsSampler"``, ``"WilcoxonPruner"``).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from types import ModuleType

import optuna

from sparsearch.errors import unknown_choice

# "Trial pruning" stops a bad trial early; it is unrelated to the weight pruning in sparsearch.spaces.

SAMPLERS: dict[str, Callable[..., optuna.samplers.BaseSampler]] = {
    # multivariate TPE models parameter interactions; constant_liar keeps parallel workers from piling onto
    # the same region while earlier trials are still running.
    "tpe": lambda seed, **kw: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, group=True, constant_liar=True, **kw
    ),
    "random": lambda seed, **kw: optuna.samplers.RandomSampler(seed=seed, **kw),
    "nsga2": lambda seed, **kw: optuna.samplers.NSGAIISampler(seed=seed, **kw),
    "nsga3": lambda seed, **kw: optuna.samplers.NSGAIIISampler(seed=seed, **kw),
    "qmc": lambda seed, **kw: optuna.samplers.QMCSampler(seed=seed, **kw),
    "cmaes": lambda seed, **kw: optuna.samplers.CmaEsSampler(seed=seed, **kw),
    "gp": lambda seed, **kw: optuna.samplers.GPSampler(seed=seed, **kw),
}
"""Short sampler names. Any other ``optuna.samplers`` class name is accepted too."""

PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "none": lambda **kw: optuna.pruners.NopPruner(),
    "median": lambda **kw: optuna.pruners.MedianPruner(**kw),
    "percentile": lambda **kw: optuna.pruners.PercentilePruner(**kw),
    "successive_halving": lambda **kw: optuna.pruners.SuccessiveHalvingPruner(**kw),
    "hyperband": lambda **kw: optuna.pruners.HyperbandPruner(**kw),
    "threshold": lambda **kw: optuna.pruners.ThresholdPruner(**kw),
}
"""Short trial-pruner names. Any other ``optuna.pruners`` class name is accepted too."""

_MULTI_OBJECTIVE_SAMPLERS = {"nsga2", "nsga3", "random", "qmc", "tpe", "gp", "NSGAIISampler", "NSGAIIISampler",
                             "RandomSampler", "QMCSampler", "TPESampler", "GPSampler", "BruteForceSampler"}


def _optuna_classes(module: ModuleType, base: type) -> dict[str, type]:
    return {
        name: cls
        for name, cls in vars(module).items()
        if inspect.isclass(cls) and issubclass(cls, base) and not name.startswith("Base")
        and cls not in (optuna.samplers.PartialFixedSampler, optuna.samplers.GridSampler)
    }


def sampler_names() -> list[str]:
    """Every accepted sampler name: short names first, then Optuna class names."""
    return list(SAMPLERS) + sorted(_optuna_classes(optuna.samplers, optuna.samplers.BaseSampler))


def pruner_names() -> list[str]:
    """Every accepted trial-pruner name: short names first, then Optuna class names."""
    return list(PRUNERS) + sorted(
        n for n in _optuna_classes(optuna.pruners, optuna.pruners.BasePruner) if n != "PatientPruner"
    )


def check_sampler(name: str) -> str:
    """Return ``name`` if it names a sampler, else raise a ``SpecError`` listing the valid names."""
    if name not in sampler_names():
        raise unknown_choice("sampler", name, sampler_names())
    return name


def check_pruner(name: str) -> str:
    """Return ``name`` if it names a trial pruner, else raise a ``SpecError`` listing the valid names."""
    if name not in pruner_names():
        raise unknown_choice("trial pruner", name, pruner_names())
    return name


def supports_multi_objective(name: str) -> bool:
    """Whether the sampler can drive a study with several objectives."""
    return name in _MULTI_OBJECTIVE_SAMPLERS


def make_sampler(name: str, seed: int | None, **kwargs: object) -> optuna.samplers.BaseSampler:
    """Build a sampler by name, seeded with ``seed`` (when the sampler takes a seed)."""
    check_sampler(name)
    if name in SAMPLERS:
        with warnings.catch_warnings():  # TPE's `group` option is marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return SAMPLERS[name](seed, **kwargs)
    cls = _optuna_classes(optuna.samplers, optuna.samplers.BaseSampler)[name]
    if "seed" in inspect.signature(cls).parameters:
        kwargs.setdefault("seed", seed)
    return cls(**kwargs)


def make_pruner(name: str, **kwargs: object) -> optuna.pruners.BasePruner:
    """Build a trial pruner by name."""
    check_pruner(name)
    if name in PRUNERS:
        return PRUNERS[name](**kwargs)
    return _optuna_classes(optuna.pruners, optuna.pruners.BasePruner)[name](**kwargs)
