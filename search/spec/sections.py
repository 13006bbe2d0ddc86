"""Study-file sections: the schema of a study, and :func:`parse_study`, which validates a raw study dict.

A study file has the sections ``[study]``, ``[data]``, ``[space]``, ``[train]``, ``[execution]``, ``[tracking]``
and ``[storage]``. ``[space]`` and ``[train]`` are owned by :mod:`sparsearch.spaces` (``SpaceSpec``,
``TrainSpec``); the others are defined here. Every section is strict: an unknown key is an error naming the key and
the closest valid one, a wrong type or an out-of-range value is an error naming the field. Errors are one line
(:class:`sparsearch.errors.SpecError`, worded by :mod:`sparsearch.search.spec.errors`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from sparsearch._frames import describe_frame, is_frame
from sparsearch._spec import IntRange, StrictModel
from sparsearch._types import JSONDict
from sparsearch.errors import SpecError, unknown_choice
from sparsearch.search import registry
from sparsearch.search.spec.errors import format_error
from sparsearch.spaces.spec import SpaceSpec, TrainSpec  # no extra cost: StudySpec's defaults import it

__all__ = ["SECTIONS", "DataSpec", "ExecutionSpec", "StorageSpec", "StudySection", "StudySpec", "TrackingSpec",
           "callable_name", "generator_names", "parse_study", "section_models"]

SECTIONS = ("study", "data", "space", "train", "execution", "tracking", "storage")
"""The sections of a study file, in the order a study file and an error list them."""


class _Section(StrictModel):
    # Defaults are given by the ``default=`` keyword: a type checker reads a field's default only from it
    # (pydantic's dataclass_transform); with a positional default, every field of ``DataSpec(...)`` looks required.
    # StrictModel's config (merged by pydantic), plus strict types
    model_config = ConfigDict(strict=True)
    _section: ClassVar[str] = ""

    def __init__(self, **fields: object) -> None:
        # built in Python (``DataSpec(path=...)``): the same one-line errors as a study file's section
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise format_error(exc, "study", models=section_models(), section=self._section) from None

    # pydantic calls an overridden __init__ from model_validate too (a study file's sections): marked as a base
    # init, it is called only when Python code builds a section (tests/search/test_python_api.py fails if that changes)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # a marker attribute on a function


def _check_safe_name(v: str | None) -> None:
    """A study or experiment name names folders under the results folder: it must not climb out of it."""
    if v and (len(v) > 200 or any(c in v for c in "/\\\0") or v.strip() in (".", "..")):
        raise ValueError("must be at most 200 characters without '/', '\\' or NUL, and not '.' or '..'")


class StudySection(_Section):
    """``[study]``: what is optimised, how, and for how long."""

    _section: ClassVar[str] = "study"

    name: str = Field(
        default="", description="Study name (Optuna study and MLflow experiment). Default: the file's stem."
    )
    objectives: list[str] = Field(
        default=["val_auc"],
        min_length=1, description="Metrics to optimise, from `sparsearch.spaces.METRICS`."
    )
    directions: list[Literal["maximize", "minimize"]] | None = Field(
        default=None, description="One direction per objective. Default: each metric's natural direction."
    )
    n_trials: int = Field(default=20, ge=1, le=1_000_000, description="Trials to run in this execution.")
    timeout: float | None = Field(
        default=None,
        gt=0, description="Stop starting new trials after this many seconds (running trials finish)."
    )
    sampler: str = Field(
        default="tpe", description="tpe, random, nsga2, nsga3, qmc, cmaes, gp, or an Optuna sampler class."
    )
    # keyword arguments passed on to the sampler, which checks them when the spec is loaded (_sampler_params_ok)
    sampler_params: dict[str, object] = Field(default={}, description="Keyword arguments of the sampler (e.g. "
                                           "{ population_size = 20 } for nsga2, { n_startup_trials = 5 } for tpe).")
    seed: int | None = Field(default=0, description="Seed of the sampler and of every trial's training.")
    warm_start: str = Field(
        default="none",
        description="Trials enqueued before the search: \"portfolio\" (a few strong configurations "
        "measured on the bundled studies, fitted to this space; the bundled studies set it), \"study:NAME\" (the "
        "best completed trials of an earlier study in the same storage) or \"none\".")
    pruner: str = Field(
        default="none",
        description="Trial pruner (early stopping of bad trials): none, median, successive_halving, "
        "hyperband, percentile, threshold, or an Optuna pruner class. Single-objective studies only. A run warns "
        "when the pruner compares trials inside GMP's pruning window while other trials show no such dip."
    )
    pruner_params: dict[str, object] = Field(default={}, description="Keyword arguments of the trial pruner.")
    objective: str | Callable[..., object] | None = Field(
        default=None,
        description="Advanced: a custom objective 'module:function' imported from the Python path (from "
        "Python, also the function itself). The only way a study file can run code; it is off unless set here."
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        _check_safe_name(v)
        return v

    @field_validator("warm_start")
    @classmethod
    def _warm_start_ok(cls, v: str) -> str:
        from sparsearch.search.warmstart import check_warm_start

        return check_warm_start(v)

    @field_validator("sampler")
    @classmethod
    def _sampler_ok(cls, v: str) -> str:
        return registry.check_sampler(v)

    @model_validator(mode="after")
    def _sampler_params_ok(self) -> StudySection:
        if self.sampler_params:
            try:
                registry.make_sampler(self.sampler, self.seed, **self.sampler_params)
            except TypeError as exc:
                raise ValueError(f"sampler_params for {self.sampler!r}: {exc}") from None
        return self

    @field_validator("pruner")
    @classmethod
    def _pruner_ok(cls, v: str) -> str:
        return registry.check_pruner(v)

    @field_validator("objective")
    @classmethod
    def _objective_ok(cls, v: str | Callable[..., object] | None) -> str | Callable[..., object] | None:
        if isinstance(v, str) and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError(f"must look like 'module:function', got {v!r}")
        return v

    @field_serializer("objective")
    def _objective_name(self, v: str | Callable[..., object] | None) -> str | None:
        """A function object is recorded (MLflow params, ``to_toml_dict``) by its name; Ray ships the object."""
        return v if v is None or isinstance(v, str) else callable_name(v)

    @model_validator(mode="after")
    def _consistent(self) -> StudySection:
        from sparsearch.spaces import METRICS

        for metric in self.objectives:
            if metric not in METRICS and self.objective is None:
                raise unknown_choice("objective metric", metric, METRICS)
        if len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"objectives must be distinct, got {self.objectives}")
        if self.directions is not None and len(self.directions) != len(self.objectives):
            raise ValueError(
                f"directions has {len(self.directions)} entries but objectives has {len(self.objectives)}"
            )
        if len(self.objectives) > 1 and self.pruner != "none":
            raise ValueError(
                f"trial pruner {self.pruner!r} needs a single-objective study (Optuna trial pruners do not support "
                f"{len(self.objectives)} objectives); set pruner = \"none\""
            )
        if len(self.objectives) > 1 and not registry.supports_multi_objective(self.sampler):
            raise ValueError(f"sampler {self.sampler!r} does not support multi-objective studies; use nsga2 or tpe")
        return self

    def resolved_directions(self) -> list[str]:
        """Directions, defaulting each objective to its metric's natural direction."""
        if self.directions is not None:
            return list(self.directions)
        from sparsearch.spaces import METRICS

        return [METRICS.get(m, "maximize") for m in self.objectives]


class DataSpec(_Section):
    """``[data]``: where the rows come from and how features are prefiltered."""

    _section: ClassVar[str] = "data"

    generator: str | None = Field(
        default=None,
        description="A bundled data generator or loader (click_log, affinity_log: a planted user x item "
        "affinity; digits, fashion_mnist for images)."
    )
    params: dict[str, object] = Field(
        default={}, description="Keyword arguments of the generator (e.g. n_rows)."
    )
    path: str | None = Field(
        default=None, description="A parquet/CSV/TSV file, a directory or a glob (instead of generator)."
    )
    frame: object = Field(
        default=None, description="Python only (`run_study(..., data=frame)`): a polars or pandas DataFrame "
        "or a polars LazyFrame (instead of path or generator); recorded by its shape and fingerprint.")
    target: str = Field(default="click", min_length=1, description="Target column.")
    features: list[str] | None = Field(
        default=None, description="Candidate feature columns. Default: all but the target."
    )
    exclude: list[str] = Field(
        default=[], description="Columns never used as features (IDs, timestamps, leaks)."
    )
    prefilter: str = Field(
        default="adjusted-mi",
        description="Ranking method of the feature prefilter (see `sparsearch rank --help`), or none."
    )
    top_k: IntRange | None = Field(
        default=None,
        description="Keep the k best-ranked features: a number, or [low, high] to search k. Default: all."
    )
    crosses: IntRange | None = Field(
        default=None,
        description="Add the K best feature pairs by chance-corrected interaction information (ranked on "
        "the training rows, among all candidate columns) as crossed categorical features: a number, or [low, high] "
        "to search K. Default: none."
    )
    max_rows: int | None = Field(
        default=None, ge=10, description="Use at most this many rows (a seeded sample)."
    )
    ordered_ints: int | None = Field(
        default=None,
        ge=2, description="Numbers as numbers: an integer column with at least this many distinct values "
        "keeps its categorical embedding and is also an ordered numeric input (its value, then the searched "
        "numeric_encoding), recorded per column in the encoder's notes. Default: integers are categorical only."
    )
    sql: str | None = Field(
        default=None,
        description="A polars SQL query over the table `data`, applied after loading: derive a target, filter "
        "rows, drop leaking columns (e.g. `SELECT *, CAST(arr_delay > 15 AS INT) AS late FROM data WHERE arr_delay "
        "IS NOT NULL`). SQL is data, not code: nothing is imported or executed."
    )

    @field_validator("params")
    @classmethod
    def _params_finite(cls, v: dict[str, object]) -> dict[str, object]:
        # TOML allows inf and nan, but the generators take counts, sizes and rates: such a value is a mistake
        for key, value in v.items():
            if _non_finite(value):
                raise ValueError(f"{key} = {value!r}: a finite number is required (inf and nan are not allowed)")
        return v

    @field_validator("generator")
    @classmethod
    def _generator_ok(cls, v: str | None) -> str | None:
        if v is not None and v not in generator_names():
            raise unknown_choice("data generator", v, generator_names())
        return v

    @field_validator("prefilter")
    @classmethod
    def _prefilter_ok(cls, v: str) -> str:
        from sparsearch.features import available_methods

        if v != "none" and v not in available_methods():
            raise unknown_choice("prefilter method", v, ["none", *available_methods()])
        return v

    @field_validator("top_k")
    @classmethod
    def _top_k_ok(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and v[0] < 1:
            raise ValueError(f"must be >= 1, got {v[0]}")
        return v

    @field_validator("frame")
    @classmethod
    def _frame_ok(cls, v: object) -> object:
        if v is not None and not is_frame(v):
            raise ValueError(f"must be a polars DataFrame or LazyFrame, or a pandas DataFrame, got {type(v).__name__}")
        return v

    @field_serializer("frame")
    def _frame_description(self, v: object) -> str | None:
        """An in-memory frame cannot go into a study file or MLflow params: its description does."""
        return None if v is None else describe_frame(v)

    @field_validator("crosses")
    @classmethod
    def _crosses_ok(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and v[0] < 0:
            raise ValueError(f"must be >= 0, got {v[0]}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if sum(x is not None for x in (self.generator, self.path, self.frame)) != 1:
            raise ValueError("set exactly one of 'generator' and 'path' (or, from Python, 'frame')")
        return self

    @property
    def is_image(self) -> bool:
        from sparsearch.spaces import IMAGE_DATASETS

        return self.generator in IMAGE_DATASETS


class ExecutionSpec(_Section):
    """``[execution]``: where and how trials run (Ray)."""

    _section: ClassVar[str] = "execution"

    workers: int = Field(
        default=0, ge=0, le=4096, description="Trials in flight at once. 0: one per CPU share."
    )
    cpus_per_trial: float = Field(
        default=1.0, gt=0, le=1024, description="CPUs each trial reserves; torch threads = this."
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster to join ('auto' or 'host:port'; the driver runs on a node of the cluster, "
        "Ray Client 'ray://' addresses are refused). Default: RAY_ADDRESS, else a local Ray started and stopped "
        "by the run."
    )
    gpus_per_trial: float = Field(
        default=0.0, ge=0, le=64, description="GPUs each trial reserves (Ray's num_gpus; "
        "fractions share a GPU). A trial trains on the GPU Ray assigned it.")
    mixed_precision: bool = Field(
        default=False, description="Train in bfloat16 autocast (float16 with loss scaling where "
        "the GPU lacks bfloat16) when a trial runs on CUDA; no effect on CPU.")
    max_retries: int = Field(
        default=1, ge=0, le=100, description="Re-runs of a trial whose worker died (crash, OOM, node)."
    )
    trial_timeout: float | None = Field(
        default=None, gt=0, description="Seconds a trial may run before it is stopped (FAIL)."
    )
    trial_memory_mb: int | None = Field(
        default=None, gt=0, description="Resident memory a trial may use before it is "
        "stopped (FAIL).")
    heartbeat_interval: float = Field(
        default=5.0, gt=0, description="Seconds between heartbeats of running trials."
    )
    stale_after: float = Field(
        default=60.0, gt=0, description="A RUNNING trial without a heartbeat for this long is failed "
        "(its driver died) and re-queued; must be greater than heartbeat_interval. A driver "
        "on the dead driver's own host does not wait: it sees the process is gone.")

    @model_validator(mode="after")
    def _stale_after_heartbeat(self) -> ExecutionSpec:
        # a live driver's trials would be failed between two of its own heartbeats
        if self.stale_after <= self.heartbeat_interval:
            raise ValueError(f"stale_after ({self.stale_after:g}) must be greater than heartbeat_interval "
                             f"({self.heartbeat_interval:g})")
        return self

    @field_validator("ray_address")
    @classmethod
    def _ray_address_ok(cls, v: str | None) -> str | None:
        if v is not None:
            from sparsearch._ray import validate_ray_address

            validate_ray_address(v)
        return v


class TrackingSpec(_Section):
    """``[tracking]``: MLflow."""

    _section: ClassVar[str] = "tracking"

    uri: str | None = Field(
        default=None, description="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else a SQLite "
        "store in the results folder.")
    experiment: str | None = Field(default=None, description="MLflow experiment. Default: the study name.")
    enabled: bool = Field(default=True, description="Log to MLflow at all.")
    log_model: bool = Field(
        default=True, description="Log the best trial's model as an MLflow pyfunc that takes raw rows "
        "(its preprocessing included; image studies: mlflow.pytorch).")
    register_model: bool = Field(
        default=False, description="Also register the logged model in the MLflow model "
        "registry under the study's name (a new version per execution).")
    writer: Literal["process", "thread"] = Field(
        default="process",
        description="Where trial child runs are written: a writer process the driver starts (off the "
        "search loop's core), or a thread of the driver (one process fewer, ~200 MB less memory).")

    @field_validator("experiment")
    @classmethod
    def _experiment_ok(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        _check_safe_name(v)  # it names the artifact folder results/artifacts/<experiment>
        return v


class StorageSpec(_Section):
    """``[storage]``: where Optuna keeps the study."""

    _section: ClassVar[str] = "storage"

    url: str | None = Field(
        default=None, description="Optuna storage: postgresql://..., sqlite:///..., journal:PATH, or "
        "memory. Default: a journal file in the results folder (safe for concurrent writers).")


class StudySpec(StrictModel):
    """A whole study, validated: from a study file (:func:`load_study`) or built in Python from typed sections.

    Built in Python, it is validated exactly like a file (same one-line :class:`SpecError` messages, same
    cross-section rules, the study name defaults to ``"study"``); a section may be a typed object or a dict.

    Example:
        >>> spec = StudySpec(study=StudySection(name="demo", n_trials=2), data=DataSpec(generator="click_log"),
        ...                  train={"epochs": 1})
        >>> spec.study.n_trials, spec.train.epochs
        (2, 1)
    """

    study: StudySection = StudySection()
    data: DataSpec
    space: SpaceSpec = SpaceSpec()
    train: TrainSpec = TrainSpec()
    execution: ExecutionSpec = ExecutionSpec()
    tracking: TrackingSpec = TrackingSpec()
    storage: StorageSpec = StorageSpec()

    def __init__(self, **sections: object) -> None:
        # built in Python: exactly the validation of a study file (parse_study), typed sections or dicts
        if "data" not in sections:
            raise SpecError("study: missing section [data] (set generator=\"click_log\", path=\"file.parquet\" "
                            "or, from Python, frame=DataFrame)")
        spec = parse_study(_raw_sections(sections))
        super().__init__(**{name: getattr(spec, name) for name in SECTIONS})

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # see _Section.__init__

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: object) -> object:
        if isinstance(raw, dict):
            raw = dict(raw)
            for key, model in (("space", SpaceSpec), ("train", TrainSpec)):
                if not isinstance(raw.get(key), model):
                    raw[key] = model.model_validate(raw.get(key, {}))
        return raw

    @model_validator(mode="after")
    def _cross(self) -> StudySpec:
        if self.data.is_image and self.space.model != "cnn":
            raise ValueError(f"data generator {self.data.generator!r} is an image set; set [space] model = \"cnn\"")
        if not self.data.is_image and self.space.model == "cnn":
            raise ValueError("[space] model = \"cnn\" needs an image data set (generator digits or fashion_mnist)")
        return self

    def pruner_params(self) -> dict[str, object]:
        """``[study] pruner_params`` with the study's own budget filled in where the user left it out: Hyperband's
        ``max_resource`` is the number of validation reports a trial makes (``epochs * reports_per_epoch``)."""
        params = dict(self.study.pruner_params)
        if self.study.pruner in ("hyperband", "HyperbandPruner") and "max_resource" not in params:
            params["max_resource"] = self.train.epochs * self.train.reports_per_epoch
        return params

    def to_toml_dict(self) -> JSONDict:
        """The spec as plain data (what a study file with every default spelled out would hold).

        An in-memory frame or a function objective appears by its description or name only; :meth:`to_raw` keeps
        them.
        """
        return self.model_dump(mode="json", exclude_none=True)

    def to_raw(self) -> dict[str, dict[str, object]]:
        """The spec as a raw study dict for :func:`parse_study`, keeping an in-memory frame and a function
        objective as the objects themselves (what re-validating with overrides needs)."""
        # to_toml_dict's tables, typed as tables of any value: a frame and a function go in below
        raw: dict[str, dict[str, object]] = self.model_dump(mode="json", exclude_none=True)
        if self.data.frame is not None:
            raw["data"]["frame"] = self.data.frame
        if self.study.objective is not None and not isinstance(self.study.objective, str):
            raw["study"]["objective"] = self.study.objective
        return raw


def _raw_sections(sections: dict[str, object]) -> dict[str, object]:
    """Typed sections (or dicts) as a raw study dict; only the fields that were set, Python objects kept."""
    raw: dict[str, object] = {}
    for name, value in sections.items():
        if isinstance(value, StrictModel):
            value = {key: getattr(value, key) for key in value.model_fields_set}
        raw[name] = value
    return raw


def callable_name(fn: object) -> str:
    """``"module:qualname"`` of a function (how a function objective is recorded)."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', type(fn).__name__)}"


def generator_names() -> list[str]:
    from sparsearch.features import DATASETS
    from sparsearch.spaces import IMAGE_DATASETS

    return sorted({*DATASETS, *IMAGE_DATASETS})


def section_models() -> dict[str, type[StrictModel]]:
    """Each section's model, in :data:`SECTIONS` order."""
    return {"study": StudySection, "data": DataSpec, "space": SpaceSpec, "train": TrainSpec,
            "execution": ExecutionSpec, "tracking": TrackingSpec, "storage": StorageSpec}


def parse_study(raw: Mapping[str, object], *, origin: str = "study",
                default_name: str = "study") -> StudySpec:
    """Validate a raw study dict (as parsed from TOML) into a :class:`StudySpec`."""
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a study must be a table of sections, got {type(raw).__name__}")
    raw = dict(raw)
    for section, value in raw.items():
        if section in SECTIONS and not isinstance(value, dict):
            raise SpecError(f"{origin}: [{section}] must be a table, got {type(value).__name__} {value!r}")
    if "data" not in raw:
        raise SpecError(f"{origin}: missing section [data] (set generator = \"click_log\" or path = \"file.parquet\")")
    study = raw.get("study", {})
    assert isinstance(study, dict)  # every section present was checked to be a table above
    study = dict(study)
    if not study.get("name"):
        study["name"] = default_name
    raw["study"] = study

    for key, model in (("space", SpaceSpec), ("train", TrainSpec)):
        try:
            raw[key] = model.model_validate(raw.get(key, {}))
        except ValidationError as exc:
            raise format_error(exc, origin, models=section_models(), section=key) from None
        except SpecError as exc:
            raise SpecError(f"{origin}: [{key}] {exc}") from None
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise format_error(exc, origin, models=section_models()) from None
    except SpecError as exc:
        raise SpecError(f"{origin}: {exc}") from None


def _non_finite(value: object) -> bool:
    """Whether ``value`` is or holds (in a list or table) an infinite or NaN float."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list | tuple):
        return any(_non_finite(x) for x in value)
    if isinstance(value, Mapping):
        return any(_non_finite(x) for x in value.values())
    return False
