"""The search space as a define-by-run function of ``optuna.Trial`` (STYLE habit 3), and the trial config it returns.

Parameter names have stable prefixes: ``arch.`` (model shape), ``sparsity.`` (method, target, pattern,
distribution, criterion), ``sched.`` (gmp schedule), ``dst.`` (set/rigl), ``train.`` (optimiser). Parameters are
conditional: per-layer ones exist only for existing layers, DST ones only for set/rigl, schedule ones only for gmp,
and a dense trial has no sparsity parameters beyond ``sparsity.method``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from sparsearch.errors import SpecError

from .spec import SpaceSpec, TrainSpec

_DST = ("set", "rigl")


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial needs to build and train a model; frozen, picklable, JSON-friendly via ``to_dict``."""

    model: str = "mlp"
    depth: int = 2
    widths: tuple[int, ...] = (128, 64)
    embedding_dim: int = 8
    dropout: float = 0.0
    iso_flop: bool = False
    prune_embeddings: bool = False
    numeric_encoding: str = "standard"
    numeric_bins: int = 16
    numeric_embedding_dim: int = 8
    plr_sigma: float = 0.1
    cross_layers: int = 0
    cross_rank: int = 16
    fm_dim: int = 0
    ensemble_size: int = 1
    method: str = "gmp"
    target_sparsity: float = 0.9
    pattern: str = "unstructured"
    nm_keep: int = 2
    nm_group: int = 4
    distribution: str = "erk"
    erk_power: float = 1.0
    layer_scales: tuple[float, ...] = ()
    criterion: str = "magnitude"
    schedule: str = "cubic"
    start_frac: float = 0.25
    end_frac: float = 0.75
    mask_updates: int = 10
    dst_interval: int = 50
    dst_alpha: float = 0.3
    dense_finetune_epochs: int = 0
    epochs: int = 3
    batch_size: int = 512
    lr: float = 3e-3
    optimizer: str = "adam"
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    val_fraction: float = 0.2
    n_features: int | None = None
    reports_per_epoch: int = 1
    report_rows: int | None = None
    keep_epoch: str = "best"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise SpecError(f"unknown TrialConfig keys {unknown}; allowed: {', '.join(sorted(names))}")
        kwargs: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kwargs)

    @property
    def is_sparse(self) -> bool:
        return self.method != "dense" and self.target_sparsity > 0.0


def _int(trial, name: str, rng: tuple[int, int], *, log: bool = False) -> int:
    lo, hi = int(rng[0]), int(rng[1])
    return int(trial.suggest_int(name, lo, hi, log=log and lo > 0))


def _float(trial, name: str, rng: tuple[float, float], *, log: bool = False) -> float:
    lo, hi = float(rng[0]), float(rng[1])
    return float(trial.suggest_float(name, lo, hi, log=log and lo > 0))


def _cat(trial, name: str, choices: list[str]) -> str:
    return str(trial.suggest_categorical(name, list(choices)))


def _maybe_int(trial, name: str, rng: tuple[int, int], *, log: bool = False) -> int:
    """A searched int, or the fixed value without a trial parameter (so trials stored before the option replay)."""
    return int(rng[0]) if rng[0] == rng[1] else _int(trial, name, rng, log=log)


def _maybe_float(trial, name: str, rng: tuple[float, float], *, log: bool = False) -> float:
    return float(rng[0]) if rng[0] == rng[1] else _float(trial, name, rng, log=log)


def _maybe_cat(trial, name: str, choices: list[str]) -> str:
    return str(choices[0]) if len(choices) == 1 else _cat(trial, name, choices)


def n_prunable_layers(model: str, depth: int) -> int:
    """Masked layers of a model (embeddings excluded): MLP ``depth`` hidden + head; CNN ``depth`` convs + 2."""
    return depth + 1 if model == "mlp" else depth + 2


def suggest_config(trial, space: SpaceSpec, train: TrainSpec, *, n_features: int | None = None) -> TrialConfig:
    """Sample one trial's config from ``space`` and ``train`` (never trains).

    Args:
        trial: an ``optuna.Trial`` (or ``FixedTrial`` to rebuild a config).
        space, train: the study's ``[space]`` and ``[train]`` sections.
        n_features: number of input features, recorded in the config for reference.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        >>> cfg = suggest_config(study.ask(), SpaceSpec(), TrainSpec())
        >>> cfg.method, len(cfg.widths) == cfg.depth
        ('gmp', True)
    """
    p: dict[str, Any] = {"model": space.model, "n_features": n_features, "iso_flop": space.iso_flop,
                         "prune_embeddings": space.prune_embeddings and space.model == "mlp",
                         "dense_finetune_epochs": space.dense_finetune_epochs,
                         "nm_keep": space.nm_keep, "nm_group": space.nm_group}
    # --- architecture
    depth = _int(trial, "arch.depth", space.depth)
    p["depth"] = depth
    p["widths"] = tuple(_int(trial, f"arch.width_l{i}", space.width, log=True) for i in range(depth))
    if space.model == "mlp":
        p["embedding_dim"] = _int(trial, "arch.embedding_dim", space.embedding_dim, log=True)
    p["dropout"] = _float(trial, "arch.dropout", space.dropout)
    if space.model == "mlp":
        # numeric encoding, cross block, FM block, ensemble: a single choice is fixed, not a parameter (see _maybe_int)
        enc = _maybe_cat(trial, "arch.numeric_encoding", space.numeric_encoding)
        p["numeric_encoding"] = enc
        if enc == "ple":
            p["numeric_bins"] = _maybe_int(trial, "arch.numeric_bins", space.numeric_bins, log=True)
        elif enc == "plr":
            p["numeric_embedding_dim"] = _maybe_int(trial, "arch.numeric_embedding_dim",
                                                    space.numeric_embedding_dim, log=True)
            p["plr_sigma"] = _maybe_float(trial, "arch.plr_sigma", space.plr_sigma, log=True)
        p["cross_layers"] = _maybe_int(trial, "arch.cross_layers", space.cross_layers)
        if p["cross_layers"]:
            p["cross_rank"] = _maybe_int(trial, "arch.cross_rank", space.cross_rank, log=True)
        p["fm_dim"] = _maybe_int(trial, "arch.fm_dim", space.fm_dim)
        p["ensemble_size"] = _maybe_int(trial, "arch.ensemble_size", space.ensemble_size)
    # --- sparsity
    method = _cat(trial, "sparsity.method", space.methods)
    p["method"] = method
    if method == "dense":
        p["target_sparsity"] = 0.0
    else:
        pattern = _cat(trial, "sparsity.pattern", space.patterns)
        p["pattern"] = pattern
        if pattern == "nm":
            p["target_sparsity"] = 1.0 - space.nm_keep / space.nm_group
            p["distribution"] = "uniform"
        else:
            p["target_sparsity"] = _float(trial, "sparsity.target", space.target_sparsity)
            dist = _cat(trial, "sparsity.distribution", space.distributions)
            p["distribution"] = dist
            if dist == "erk":
                p["erk_power"] = _float(trial, "sparsity.erk_power", space.erk_power)
            elif dist == "searched":
                p["layer_scales"] = tuple(
                    _float(trial, f"sparsity.scale_l{i}", space.layer_scale, log=True)
                    for i in range(n_prunable_layers(space.model, depth))
                )
        if method == "gmp":
            p["criterion"] = _cat(trial, "sparsity.criterion", space.criteria)
            schedule = _cat(trial, "sched.schedule", space.schedules)
            p["schedule"] = schedule
            p["start_frac"] = _float(trial, "sched.start_frac", space.prune_start_frac)
            if schedule != "one_shot":
                p["end_frac"] = _float(trial, "sched.end_frac", space.prune_end_frac)
                p["mask_updates"] = _int(trial, "sched.mask_updates", space.mask_updates, log=True)
            else:
                p["end_frac"] = p["start_frac"]
                p["mask_updates"] = 1
        elif method in _DST:
            p["dst_interval"] = _int(trial, "dst.interval", space.dst_interval, log=True)
            p["dst_alpha"] = _float(trial, "dst.alpha", space.dst_alpha)
            p["end_frac"] = _float(trial, "dst.end_frac", space.prune_end_frac)
    # --- training
    p["epochs"] = train.epochs
    p["batch_size"] = train.batch_size
    p["val_fraction"] = train.val_fraction
    p["reports_per_epoch"] = train.reports_per_epoch
    p["report_rows"] = train.report_rows
    p["keep_epoch"] = train.keep_epoch
    p["lr"] = _float(trial, "train.lr", train.lr, log=True)
    p["optimizer"] = _cat(trial, "train.optimizer", train.optimizer)
    # a single schedule is fixed, not a parameter (trials stored before the option existed replay unchanged)
    p["lr_schedule"] = (_cat(trial, "train.lr_schedule", train.lr_schedule) if len(train.lr_schedule) > 1
                        else train.lr_schedule[0])
    p["weight_decay"] = _float(trial, "train.weight_decay", train.weight_decay, log=True)
    return TrialConfig(**p)


def config_from_params(params: dict[str, Any], space: SpaceSpec, train: TrainSpec, *,
                       n_features: int | None = None) -> TrialConfig:
    """Rebuild the config of a finished trial from its ``params`` (``optuna.trial.FixedTrial`` replay)."""
    import optuna

    try:
        return suggest_config(optuna.trial.FixedTrial(dict(params)), space, train, n_features=n_features)
    except ValueError as exc:
        if isinstance(exc, SpecError):
            raise
        raise SpecError(f"cannot rebuild a trial config from params {sorted(params)}: {exc}") from None
