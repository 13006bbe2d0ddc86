"""The ``[space]`` and ``[train]`` sections of a study file.

Ranges are ``IntRange``/``FloatRange``: a single number is a fixed value, ``[low, high]`` is searched. Lists of
choices are validated against the registries of :mod:`sparsearch.spaces`. Every field has a default, so an empty
section is valid; the defaults give a fast tabular search (MLP, gradual magnitude pruning with a cubic schedule,
magnitude criterion, unstructured pattern, ERK distribution).
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import Field, field_validator, model_validator

from sparsearch._spec import FloatRange, IntRange, StrictModel
from sparsearch.errors import unknown_choice

from .criteria import CRITERIA
from .distributions import DISTRIBUTIONS
from .methods import METHODS
from .numeric import NUMERIC_ENCODINGS
from .patterns import PATTERNS
from .schedules import SCHEDULES

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")
KEEP_EPOCHS = ("best", "last")


def _check_choices(kind: str, values: list[str], registry: Collection[str]) -> list[str]:
    if not values:
        raise ValueError(f"need at least one {kind}, got an empty list")
    for v in values:
        if v not in registry:
            raise unknown_choice(kind, v, list(registry))
    if len(set(values)) != len(values):
        raise ValueError(f"{kind} choices must be distinct, got {values}")
    return values


def _in(name: str, pair: tuple[float, float], lo: float, hi: float, *,
        lo_open: bool = False) -> tuple[float, float]:
    a, b = pair
    if (a <= lo if lo_open else a < lo) or b > hi:
        left = "(" if lo_open else "["
        raise ValueError(f"{name} must lie in {left}{lo}, {hi}], got [{a}, {b}]")
    return pair


class SpaceSpec(StrictModel):
    """``[space]``: the sparse architectures a study searches."""

    # Defaults are given by the ``default=`` keyword, and a fixed range as the pair it validates to: a type
    # checker reads a field's default only from that keyword (pydantic's dataclass_transform) and checks it
    # against the field's type (a bare ``1.0`` is not a ``tuple[float, float]``).

    model: str = Field(
        default="mlp", description="Model family: `mlp` (tabular data) or `cnn` (image data sets)."
    )
    depth: IntRange = Field(
        default=(1, 3),
        description="Hidden layers of the MLP (conv layers of the CNN); a number or a `[low, high]` range."
    )
    width: IntRange = Field(
        default=(32, 256),
        description="Width of each hidden layer (CNN: channels), searched per layer on a log scale."
    )
    embedding_dim: IntRange = Field(
        default=(4, 16),
        description="Cap of each categorical embedding width (a feature gets min(cap, 1.6*cardinality^0.56))."
    )
    dropout: FloatRange = Field(
        default=(0.0, 0.2), description="Dropout after each hidden layer, in [0, 0.9]."
    )
    target_sparsity: FloatRange = Field(
        default=(0.5, 0.95),
        description="Fraction of prunable weights set to zero at the end of sparse training, in [0, 0.99]."
    )
    distributions: list[str] = Field(
        default=["erk"],
        description="Layer-wise sparsity distributions to search: uniform, uniform_plus, er, erk, "
        "global_magnitude, searched (per-layer scale factors renormalised to the budget).",
    )
    erk_power: FloatRange = Field(
        default=(1.0, 1.0), description="Exponent of the ERK layer scores (0 = uniform), in [0, 3]."
    )
    layer_scale: FloatRange = Field(
        default=(0.25, 4.0),
        description="Range of the per-layer density scale factors of the `searched` distribution (log)."
    )
    methods: list[str] = Field(
        default=["gmp"],
        description="Sparse training methods to search: dense (baseline), static (random at init), gmp "
        "(gradual magnitude pruning), set, rigl.",
    )
    schedules: list[str] = Field(
        default=["cubic"],
        description="Pruning schedules for gmp: one_shot, linear, cubic (Zhu & Gupta), exponential."
    )
    criteria: list[str] = Field(
        default=["magnitude"],
        description="Pruning criteria for gmp: magnitude |w|, random, saliency |w * grad|."
    )
    patterns: list[str] = Field(
        default=["unstructured"],
        description="Sparsity patterns: unstructured, block_1x4, block_4x1, nm (keep `nm_keep` of "
        "every `nm_group` inputs; sparsity is then fixed at 1 - nm_keep/nm_group), neuron (whole units/channels).",
    )
    nm_keep: int = Field(
        default=2, ge=1, le=64, description="N:M pattern: weights kept in each group (2 in 2:4)."
    )
    nm_group: int = Field(
        default=4, ge=2, le=64, description="N:M pattern: consecutive inputs per group (4 in 2:4)."
    )
    prune_start_frac: FloatRange = Field(
        default=(0.25, 0.25),
        description="Start of the pruning window as a fraction of the sparse training steps, in [0, 1]."
    )
    prune_end_frac: FloatRange = Field(
        default=(0.75, 0.75),
        description="End of the pruning window (gmp) or of mask updates (set/rigl), fraction of steps."
    )
    mask_updates: IntRange = Field(
        default=(10, 10), description="Number of mask updates of a gradual schedule (>= 1)."
    )
    dst_interval: IntRange = Field(
        default=(50, 50), description="set/rigl: optimizer steps between drop-and-grow updates (>= 1)."
    )
    dst_alpha: FloatRange = Field(
        default=(0.3, 0.3),
        description="set/rigl: fraction of active weights dropped and regrown (rigl: initial, cosine-decayed)."
    )
    iso_flop: bool = Field(
        default=False,
        description="Widen hidden layers by sqrt(1/(1-s)) so a sparse model costs the FLOPs of the dense one."
    )
    prune_embeddings: bool = Field(
        default=False, description="Also prune the categorical embedding tables (MLP)."
    )
    dense_finetune_epochs: int = Field(
        default=0,
        ge=0, le=1000, description="Epochs of dense fine-tuning after sparse training (masks removed)."
    )
    numeric_encoding: list[str] = Field(
        default=["standard"],
        description="Numeric encodings to search (MLP), fitted on the training rows: standard "
        "(standardised scalar), quantile (scikit-learn QuantileTransformer, normal output), ple (piecewise-linear "
        "encoding, bins from training quantiles), plr (periodic embeddings with a masked per-feature layer).",
    )
    numeric_bins: IntRange = Field(
        default=(16, 16), description="ple: bins per numeric feature (log scale), in [2, 1024]."
    )
    numeric_embedding_dim: IntRange = Field(
        default=(8, 8), description="plr: embedding width per numeric feature (log scale), in [1, 256]."
    )
    plr_sigma: FloatRange = Field(
        default=(0.1, 0.1),
        description="plr: standard deviation of the initial frequencies (log scale), in (0, 100]."
    )
    cross_layers: IntRange = Field(
        default=(0, 0),
        description="Low-rank DCN-v2 cross layers before the hidden layers (MLP); 0 = none, in [0, 8]."
    )
    cross_rank: IntRange = Field(
        default=(16, 16), description="Rank of each cross layer (log scale), in [1, 1024]."
    )
    fm_dim: IntRange = Field(
        default=(0, 0),
        description="Factorization-machine pairwise products of the categorical embeddings (MLP): width of "
        "their masked projections, each pair's dot product an input of the MLP; 0 = none, in [0, 256]."
    )
    ensemble_size: IntRange = Field(
        default=(1, 1),
        description="Members of the efficient (BatchEnsemble/TabM) ensemble sharing the sparse weights (MLP); "
        "1 = a single network, in [1, 64].",
    )

    @field_validator("model")
    @classmethod
    def _model_ok(cls, v: str) -> str:
        if v not in MODELS:
            raise unknown_choice("model", v, MODELS)
        return v

    @field_validator("distributions")
    @classmethod
    def _dist_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("distribution", v, DISTRIBUTIONS)

    @field_validator("numeric_encoding")
    @classmethod
    def _numeric_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("numeric_encoding", v, NUMERIC_ENCODINGS)

    @field_validator("methods")
    @classmethod
    def _methods_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("method", v, METHODS)

    @field_validator("schedules")
    @classmethod
    def _schedules_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("schedule", v, SCHEDULES)

    @field_validator("criteria")
    @classmethod
    def _criteria_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("criterion", v, CRITERIA)

    @field_validator("patterns")
    @classmethod
    def _patterns_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("pattern", v, PATTERNS)

    @model_validator(mode="after")
    def _ranges_ok(self) -> SpaceSpec:
        _in("depth", self.depth, 0, 16)
        _in("width", self.width, 1, 16384)
        _in("embedding_dim", self.embedding_dim, 1, 1024)
        _in("dropout", self.dropout, 0.0, 0.9)
        _in("target_sparsity", self.target_sparsity, 0.0, 0.99)
        _in("erk_power", self.erk_power, 0.0, 3.0)
        _in("layer_scale", self.layer_scale, 0.0, 1000.0, lo_open=True)
        _in("prune_start_frac", self.prune_start_frac, 0.0, 1.0)
        _in("prune_end_frac", self.prune_end_frac, 0.0, 1.0)
        _in("mask_updates", self.mask_updates, 1, 100_000)
        _in("dst_interval", self.dst_interval, 1, 10_000_000)
        _in("dst_alpha", self.dst_alpha, 0.0, 1.0, lo_open=True)
        if self.prune_start_frac[1] > self.prune_end_frac[0]:
            raise ValueError(
                f"prune_start_frac must end before prune_end_frac starts, got {list(self.prune_start_frac)} and "
                f"{list(self.prune_end_frac)}"
            )
        if self.nm_keep >= self.nm_group:
            raise ValueError(f"nm_keep must be < nm_group, got nm_keep={self.nm_keep}, nm_group={self.nm_group}")
        _in("numeric_bins", self.numeric_bins, 2, 1024)
        _in("numeric_embedding_dim", self.numeric_embedding_dim, 1, 256)
        _in("plr_sigma", self.plr_sigma, 0.0, 100.0, lo_open=True)
        _in("cross_layers", self.cross_layers, 0, 8)
        _in("cross_rank", self.cross_rank, 1, 1024)
        _in("fm_dim", self.fm_dim, 0, 256)
        _in("ensemble_size", self.ensemble_size, 1, 64)
        if self.model == "cnn":
            tabular = {"numeric_encoding": self.numeric_encoding != ["standard"], "cross_layers": self.cross_layers
                       != (0, 0), "fm_dim": self.fm_dim != (0, 0), "ensemble_size": self.ensemble_size != (1, 1)}
            used = [k for k, v in tabular.items() if v]
            if used:
                raise ValueError(f"{', '.join(used)}: only for model = \"mlp\" (the cnn takes the defaults)")
        if self.model == "cnn" and self.depth[0] < 1:
            raise ValueError(f"the cnn needs depth >= 1 (conv layers), got {list(self.depth)}")
        return self


class TrainSpec(StrictModel):
    """``[train]``: how each trial trains."""

    epochs: int = Field(default=3, ge=1, le=10_000, description="Epochs of (sparse) training per trial.")
    batch_size: int = Field(default=512, ge=1, le=1_000_000, description="Mini-batch size.")
    lr: FloatRange = Field(
        default=(1e-3, 1e-2), description="Learning rate, searched on a log scale, in (0, 10]."
    )
    optimizer: list[str] = Field(
        default=["adam"], description="Optimizers to search: adam, sgd (momentum 0.9)."
    )
    lr_schedule: list[str] = Field(
        default=["constant"],
        description="Learning-rate schedules to search: constant, or cosine (decays the rate to 0 over "
        "every optimizer step of the trial, as sparse-training papers train; a pruner still compares trials at the "
        "same step). One choice is fixed, not a searched parameter."
    )
    weight_decay: FloatRange = Field(
        default=(0.0, 0.0),
        description="L2 weight decay (log scale when low > 0); masked weights stay zero regardless."
    )
    keep_epoch: str = Field(
        default="best",
        description="The epoch whose model a trial keeps, reports, tests and packages: best (its best validation "
        "epoch at the final sparsity, by the first validation objective) or last (its last epoch).",
    )
    val_fraction: float = Field(
        default=0.2,
        gt=0.0, lt=1.0, description="Fraction of rows held out (stratified) for validation metrics."
    )
    reports_per_epoch: int = Field(
        default=1,
        ge=1, le=10_000, description="Validation reports per epoch, evenly spaced in batches (the last at the "
        "epoch's end). Each is a step for the trial pruner, so more than 1 lets successive halving or Hyperband "
        "stop a bad trial inside its first epoch of a large data set."
    )
    report_rows: int | None = Field(
        default=None,
        ge=100, description="Validation rows used for the reports inside an epoch (a fixed random subset, the "
        "same for every trial); end-of-epoch metrics always use every validation row. Default: all rows."
    )
    test_fraction: float = Field(
        default=0.2,
        ge=0.0, lt=1.0, description="Fraction of rows held out (stratified) as the test set: never seen by "
        "training, the prefilter or the search; the best trial(s) are evaluated on it once, when the execution "
        "ends. Ignored for data with its own test set (Fashion-MNIST's t10k). 0 turns test metrics off."
    )

    @field_validator("optimizer")
    @classmethod
    def _opt_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("optimizer", v, OPTIMIZERS)

    @field_validator("lr_schedule")
    @classmethod
    def _lr_schedule_ok(cls, v: list[str]) -> list[str]:
        return _check_choices("lr_schedule", v, LR_SCHEDULES)

    @field_validator("keep_epoch")
    @classmethod
    def _keep_epoch_ok(cls, v: str) -> str:
        if v not in KEEP_EPOCHS:
            raise unknown_choice("keep_epoch", v, KEEP_EPOCHS)
        return v

    @model_validator(mode="after")
    def _ranges_ok(self) -> TrainSpec:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction + test_fraction must be < 1 (training needs rows), got "
                             f"{self.val_fraction} + {self.test_fraction}")
        _in("lr", self.lr, 0.0, 10.0, lo_open=True)
        _in("weight_decay", self.weight_decay, 0.0, 1.0)
        return self
