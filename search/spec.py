"""Study files: TOML in, validated frozen objects out.

A study file has the sections ``[study]``, ``[data]``, ``[space]``, ``[train]``, ``[execution]``, ``[tracking]``
and ``[storage]``. ``[space]`` and ``[train]`` are owned by :mod:`sparsearch.spaces` (``SpaceSpec``,
``TrainSpec``); the others are defined here. Every section is strict: an unknown key is an error naming the key and
the closest valid one, a wrong type or an out-of-range value is an error naming the field. Errors are one line
(:class:`sparsearch.errors.SpecError`).

Example:
    >>> spec = load_study("quickstart", n_trials=3)
    >>> spec.study.n_trials
    3
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import tomllib
from pydantic import ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from sparsearch._spec import IntRange, StrictModel
from sparsearch.errors import SpecError, closest, unknown_choice
from sparsearch.search import registry

__all__ = [
    "DataSpec",
    "ExecutionSpec",
    "OVERRIDES",
    "StorageSpec",
    "StudySection",
    "StudySpec",
    "TrackingSpec",
    "bundled_studies",
    "load_study",
    "parse_study",
]


class _Section(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, validate_default=True)
    _section: ClassVar[str] = ""

    def __init__(self, **fields: Any) -> None:
        # built in Python (``DataSpec(path=...)``): the same one-line errors as a study file's section
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise _format_error(exc, "study", section=self._section) from None

    # pydantic calls an overridden __init__ from model_validate too (a study file's sections): marked as a base
    # init, it is called only when Python code builds a section (tests/search/test_python_api.py fails if that changes)
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]


def _safe_name(v: str | None) -> str | None:
    """A study or experiment name names folders under the results folder: it must not climb out of it."""
    if v and (len(v) > 200 or any(c in v for c in "/\\\0") or v.strip() in (".", "..")):
        raise ValueError("must be at most 200 characters without '/', '\\' or NUL, and not '.' or '..'")
    return v


class StudySection(_Section):
    """``[study]``: what is optimised, how, and for how long."""

    _section: ClassVar[str] = "study"

    name: str = Field("", description="Study name (Optuna study and MLflow experiment). Default: the file's stem.")
    objectives: list[str] = Field(
        ["val_auc"], min_length=1, description="Metrics to optimise, from `sparsearch.spaces.METRICS`."
    )
    directions: list[Literal["maximize", "minimize"]] | None = Field(
        None, description="One direction per objective. Default: each metric's natural direction."
    )
    n_trials: int = Field(20, ge=1, le=1_000_000, description="Trials to run in this execution.")
    timeout: float | None = Field(
        None, gt=0, description="Stop starting new trials after this many seconds (running trials finish)."
    )
    sampler: str = Field("tpe", description="tpe, random, nsga2, nsga3, qmc, cmaes, gp, or an Optuna sampler class.")
    sampler_params: dict[str, Any] = Field({}, description="Keyword arguments of the sampler (e.g. "
                                           "{ population_size = 20 } for nsga2, { n_startup_trials = 5 } for tpe).")
    seed: int | None = Field(0, description="Seed of the sampler and of every trial's training.")
    pruner: str = Field(
        "none", description="Trial pruner (early stopping of bad trials): none, median, successive_halving, "
        "hyperband, percentile, threshold, or an Optuna pruner class. Single-objective studies only. A run warns "
        "when the pruner compares trials inside GMP's pruning window while other trials show no such dip."
    )
    pruner_params: dict[str, Any] = Field({}, description="Keyword arguments of the trial pruner.")
    objective: str | Callable[..., Any] | None = Field(
        None, description="Advanced: a custom objective 'module:function' imported from the Python path (from "
        "Python, also the function itself). The only way a study file can run code; it is off unless set here."
    )

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        return _safe_name(v)

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
    def _objective_ok(cls, v: Any) -> Any:
        if isinstance(v, str) and (v.count(":") != 1 or not all(v.split(":"))):
            raise ValueError(f"must look like 'module:function', got {v!r}")
        return v

    @field_serializer("objective")
    def _objective_name(self, v: Any) -> str | None:
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
        None, description="A bundled data generator or loader (click_log; digits, fashion_mnist for images)."
    )
    params: dict[str, Any] = Field({}, description="Keyword arguments of the generator (e.g. n_rows).")
    path: str | None = Field(None, description="A parquet/CSV/TSV file, a directory or a glob (instead of generator).")
    frame: Any = Field(None, description="Python only (`run_study(..., data=frame)`): a polars or pandas DataFrame "
                       "or a polars LazyFrame (instead of path or generator); recorded by its shape and fingerprint.")
    target: str = Field("click", min_length=1, description="Target column.")
    features: list[str] | None = Field(None, description="Candidate feature columns. Default: all but the target.")
    exclude: list[str] = Field([], description="Columns never used as features (IDs, timestamps, leaks).")
    prefilter: str = Field(
        "adjusted-mi", description="Ranking method of the feature prefilter (see `sparsearch rank --help`), or none."
    )
    top_k: IntRange | None = Field(
        None, description="Keep the k best-ranked features: a number, or [low, high] to search k. Default: all."
    )
    crosses: IntRange | None = Field(
        None, description="Add the K best feature pairs by chance-corrected interaction information (ranked on "
        "the training rows, among all candidate columns) as crossed categorical features: a number, or [low, high] "
        "to search K. Default: none."
    )
    max_rows: int | None = Field(None, ge=10, description="Use at most this many rows (a seeded sample).")
    ordered_ints: int | None = Field(
        None, ge=2, description="Numbers as numbers: an integer column with at least this many distinct values "
        "keeps its categorical embedding and is also an ordered numeric input (its value, then the searched "
        "numeric_encoding), recorded per column in the encoder's notes. Default: integers are categorical only."
    )
    sql: str | None = Field(
        None, description="A polars SQL query over the table `data`, applied after loading: derive a target, filter "
        "rows, drop leaking columns (e.g. `SELECT *, CAST(arr_delay > 15 AS INT) AS late FROM data WHERE arr_delay "
        "IS NOT NULL`). SQL is data, not code: nothing is imported or executed."
    )

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
    def _frame_ok(cls, v: Any) -> Any:
        if v is not None and not is_frame(v):
            raise ValueError(f"must be a polars DataFrame or LazyFrame, or a pandas DataFrame, got {type(v).__name__}")
        return v

    @field_serializer("frame")
    def _frame_description(self, v: Any) -> str | None:
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

    workers: int = Field(0, ge=0, le=4096, description="Trials in flight at once. 0: one per CPU share.")
    cpus_per_trial: float = Field(1.0, gt=0, le=1024, description="CPUs each trial reserves; torch threads = this.")
    ray_address: str | None = Field(
        None, description="Ray cluster to join ('auto' or 'host:port'; the driver runs on a node of the cluster, "
        "Ray Client 'ray://' addresses are refused). Default: RAY_ADDRESS, else a local Ray started and stopped "
        "by the run."
    )
    gpus_per_trial: float = Field(0.0, ge=0, le=64, description="GPUs each trial reserves (Ray's num_gpus; "
                                  "fractions share a GPU). A trial trains on the GPU Ray assigned it.")
    mixed_precision: bool = Field(False, description="Train in bfloat16 autocast (float16 with loss scaling where "
                                  "the GPU lacks bfloat16) when a trial runs on CUDA; no effect on CPU.")
    max_retries: int = Field(1, ge=0, le=100, description="Re-runs of a trial whose worker died (crash, OOM, node).")
    trial_timeout: float | None = Field(None, gt=0, description="Seconds a trial may run before it is stopped (FAIL).")
    trial_memory_mb: int | None = Field(None, gt=0, description="Resident memory a trial may use before it is "
                                        "stopped (FAIL).")
    heartbeat_interval: float = Field(5.0, gt=0, description="Seconds between heartbeats of running trials.")
    stale_after: float = Field(60.0, gt=0, description="A RUNNING trial without a heartbeat for this long is failed "
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

    uri: str | None = Field(None, description="MLflow tracking URI. Default: MLFLOW_TRACKING_URI, else a SQLite "
                            "store in the results folder.")
    experiment: str | None = Field(None, description="MLflow experiment. Default: the study name.")
    enabled: bool = Field(True, description="Log to MLflow at all.")
    log_model: bool = Field(True, description="Log the best trial's model as an MLflow pyfunc that takes raw rows "
                            "(its preprocessing included; image studies: mlflow.pytorch).")
    register_model: bool = Field(False, description="Also register the logged model in the MLflow model "
                                 "registry under the study's name (a new version per execution).")
    writer: Literal["process", "thread"] = Field(
        "process", description="Where trial child runs are written: a writer process the driver starts (off the "
        "search loop's core), or a thread of the driver (one process fewer, ~200 MB less memory).")

    @field_validator("experiment")
    @classmethod
    def _experiment_ok(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return _safe_name(v)  # it names the artifact folder results/artifacts/<experiment>


class StorageSpec(_Section):
    """``[storage]``: where Optuna keeps the study."""

    _section: ClassVar[str] = "storage"

    url: str | None = Field(None, description="Optuna storage: postgresql://..., sqlite:///..., journal:PATH, or "
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
    space: Any = None
    train: Any = None
    execution: ExecutionSpec = ExecutionSpec()
    tracking: TrackingSpec = TrackingSpec()
    storage: StorageSpec = StorageSpec()

    def __init__(self, **sections: Any) -> None:
        # built in Python: exactly the validation of a study file (parse_study), typed sections or dicts
        if "data" not in sections:
            raise SpecError("study: missing section [data] (set generator=\"click_log\", path=\"file.parquet\" "
                            "or, from Python, frame=DataFrame)")
        spec = parse_study(_raw_sections(sections))
        super().__init__(**{name: getattr(spec, name) for name in SECTIONS})

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # see _Section.__init__

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, raw: Any) -> Any:
        from sparsearch.spaces import SpaceSpec, TrainSpec

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

    def pruner_params(self) -> dict[str, Any]:
        """``[study] pruner_params`` with the study's own budget filled in where the user left it out: Hyperband's
        ``max_resource`` is the number of validation reports a trial makes (``epochs * reports_per_epoch``)."""
        params = dict(self.study.pruner_params)
        if self.study.pruner in ("hyperband", "HyperbandPruner") and "max_resource" not in params:
            params["max_resource"] = self.train.epochs * self.train.reports_per_epoch
        return params

    def to_toml_dict(self) -> dict[str, Any]:
        """The spec as plain data (what a study file with every default spelled out would hold).

        An in-memory frame or a function objective appears by its description or name only; :meth:`to_raw` keeps
        them.
        """
        return self.model_dump(mode="json", exclude_none=True)

    def to_raw(self) -> dict[str, Any]:
        """The spec as a raw study dict for :func:`parse_study`, keeping an in-memory frame and a function
        objective as the objects themselves (what re-validating with overrides needs)."""
        raw = self.to_toml_dict()
        if self.data.frame is not None:
            raw["data"]["frame"] = self.data.frame
        if self.study.objective is not None and not isinstance(self.study.objective, str):
            raw["study"]["objective"] = self.study.objective
        return raw


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


def _raw_sections(sections: dict[str, Any]) -> dict[str, Any]:
    """Typed sections (or dicts) as a raw study dict; only the fields that were set, Python objects kept."""
    raw: dict[str, Any] = {}
    for name, value in sections.items():
        if isinstance(value, StrictModel):
            value = {key: getattr(value, key) for key in value.model_fields_set}
        raw[name] = value
    return raw


def is_frame(value: Any) -> bool:
    """A polars DataFrame or LazyFrame, or a pandas DataFrame (checked without importing pandas)."""
    kind = type(value)
    return (kind.__module__.split(".")[0], kind.__name__) in {
        ("polars", "DataFrame"), ("polars", "LazyFrame"), ("pandas", "DataFrame")}


def describe_frame(frame: Any) -> str:
    """``"polars DataFrame, 1000 rows x 12 columns"`` (a LazyFrame is not collected: columns only)."""
    kind = type(frame)
    lib = kind.__module__.split(".")[0]
    if kind.__name__ == "LazyFrame":
        return f"{lib} LazyFrame, {len(frame.collect_schema())} columns"
    rows, cols = frame.shape
    return f"{lib} DataFrame, {rows} rows x {cols} columns"


def callable_name(fn: Any) -> str:
    """``"module:qualname"`` of a function (how a function objective is recorded)."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}:{getattr(fn, '__qualname__', type(fn).__name__)}"


SECTIONS = ("study", "data", "space", "train", "execution", "tracking", "storage")

OVERRIDES: dict[str, tuple[str, str]] = {
    "study_name": ("study", "name"),
    "n_trials": ("study", "n_trials"),
    "timeout": ("study", "timeout"),
    "sampler": ("study", "sampler"),
    "seed": ("study", "seed"),
    "pruner": ("study", "pruner"),
    "data": ("data", "path"),  # or ("data", "frame") for a DataFrame
    "target": ("data", "target"),
    "top_k": ("data", "top_k"),
    "workers": ("execution", "workers"),
    "ray_address": ("execution", "ray_address"),
    "storage": ("storage", "url"),
    "tracking_uri": ("tracking", "uri"),
    "epochs": ("train", "epochs"),
}
"""Keyword overrides accepted by :func:`load_study` (and the CLI flags of the same names)."""


def generator_names() -> list[str]:
    from sparsearch.features import DATASETS
    from sparsearch.spaces import IMAGE_DATASETS

    return sorted({*DATASETS, *IMAGE_DATASETS})


def bundled_studies() -> dict[str, Path]:
    """Study files shipped with sparsearch, by name."""
    root = resources.files("sparsearch.studies")
    return {Path(p.name).stem: Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")}


def _resolve_source(source: str | os.PathLike[str]) -> tuple[Path, dict[str, Any]]:
    path = Path(source)
    if not path.suffix and not path.exists():
        studies = bundled_studies()
        if str(source) not in studies:
            raise unknown_choice("study (not a file, nor a bundled study)", str(source), studies)
        path = studies[str(source)]
    if not path.is_file():
        raise SpecError(f"study file {str(path)!r} does not exist (give a .toml path or a bundled study name)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"study file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"study file {str(path)!r} is not valid TOML: {exc}") from None
    return path, raw


def _set(raw: dict[str, Any], section: str, key: str, value: Any) -> None:
    """Set ``raw[section][key] = value``; a dotted key (``params.n_rows``) walks into nested tables."""
    target = raw.setdefault(section, {})
    path = key.split(".")
    for i, part in enumerate([section, *path[:-1]]):
        if not isinstance(target, dict):
            raise SpecError(f"[{'.'.join([section, *path[:i]])}] must be a table, got {type(target).__name__}")
        if i > 0:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise SpecError(f"{'.'.join([section, *path[:i]])} must be a table to set {key!r}")
    target[path[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Apply keyword overrides (``n_trials=5``) and dotted ones (``{"train.epochs": 1}``) to a raw study dict."""
    import copy

    # an in-memory frame or a function objective is shared, never copied (a pandas frame would be)
    memo = {id(v): v for section in raw.values() if isinstance(section, dict) for v in section.values()
            if is_frame(v) or callable(v)}
    raw = copy.deepcopy(raw, memo)
    _drop_options_of_a_replaced_choice(raw, overrides)
    for name, value in overrides.items():
        if value is None:
            continue
        if name == "objective":  # run_study(objective=fn or "module:function")
            _set(raw, "study", "objective", value)
            continue
        if "." in name:
            section, _, key = name.partition(".")
            if section not in SECTIONS:
                raise unknown_choice("section", section, SECTIONS)
            _set(raw, section, key, value)
        elif name in OVERRIDES:
            section, key = OVERRIDES[name]
            if name == "data":
                raw.setdefault("data", {}).pop("generator", None)
                for other in ("params", "path", "frame"):
                    raw["data"].pop(other, None)
                if is_frame(value):
                    key = "frame"
                elif isinstance(value, os.PathLike):
                    value = os.fspath(value)
            _set(raw, section, key, value)
        else:
            raise unknown_choice("override", name, list(OVERRIDES) + ["objective", "<section>.<key>"])
    return raw


def _drop_options_of_a_replaced_choice(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """``sampler_params`` / ``pruner_params`` belong to the sampler / pruner the file names: an override that
    names another one (``--sampler random`` on a study that tunes TPE) runs it with its defaults, unless the
    overrides give its options too."""
    study = raw.get("study")
    if not isinstance(study, dict):
        return
    for choice in ("sampler", "pruner"):
        new = overrides.get(choice, overrides.get(f"study.{choice}"))
        given = f"study.{choice}_params" in overrides
        if new is not None and not given and new != study.get(choice, StudySection.model_fields[choice].default):
            study.pop(f"{choice}_params", None)


def _format_error(exc: ValidationError, origin: str, section: str | None = None) -> SpecError:
    err = exc.errors(include_url=False)[0]
    # keys come from the user's file: escape what would break the one-line error (a key may be "\n")
    loc = [str(p) if str(p).isprintable() else repr(str(p))[1:-1]
           for p in err["loc"] if not str(p).startswith(("function-", "tagged-"))]
    if section is not None:
        loc = [section, *loc]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if err["type"] == "extra_forbidden":
        key = loc[-1]
        section = loc[0] if len(loc) > 1 else None
        if section is None:
            hint = closest(key, SECTIONS)
            did = f" (did you mean [{hint}]?)" if hint else ""
            return SpecError(f"{origin}: unknown section [{key}]{did}; allowed: {', '.join(SECTIONS)}{more}")
        allowed = _section_fields(section)
        hint = closest(key, allowed)
        did = f" (did you mean '{hint}'?)" if hint else ""
        return SpecError(f"{origin}: unknown key '{key}' in [{section}]{did}; allowed: {', '.join(allowed)}{more}")
    where = (f"[{loc[0]}] " + ".".join(loc[1:])) if len(loc) > 1 else (f"[{loc[0]}]" if loc else "study")
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    shown = "" if isinstance(given, dict) or err["type"] == "missing" else f" (got {given!r})"
    return SpecError(f"{origin}: {where}: {msg}{shown}{more}")


def _section_fields(section: str) -> list[str]:
    from sparsearch.spaces import SpaceSpec, TrainSpec

    models = {"study": StudySection, "data": DataSpec, "space": SpaceSpec, "train": TrainSpec,
              "execution": ExecutionSpec, "tracking": TrackingSpec, "storage": StorageSpec}
    model = models.get(section)
    return list(model.model_fields) if model is not None else []


def parse_study(raw: dict[str, Any], *, origin: str = "study", default_name: str = "study") -> StudySpec:
    """Validate a raw study dict (as parsed from TOML) into a :class:`StudySpec`."""
    if not isinstance(raw, dict):
        raise SpecError(f"{origin}: a study must be a table of sections, got {type(raw).__name__}")
    raw = dict(raw)
    for section, value in raw.items():
        if section in SECTIONS and not isinstance(value, dict):
            raise SpecError(f"{origin}: [{section}] must be a table, got {type(value).__name__} {value!r}")
    if "data" not in raw:
        raise SpecError(f"{origin}: missing section [data] (set generator = \"click_log\" or path = \"file.parquet\")")
    study = dict(raw.get("study", {}))
    if not study.get("name"):
        study["name"] = default_name
    raw["study"] = study
    from sparsearch.spaces import SpaceSpec, TrainSpec

    for key, model in (("space", SpaceSpec), ("train", TrainSpec)):
        try:
            raw[key] = model.model_validate(raw.get(key, {}))
        except ValidationError as exc:
            raise _format_error(exc, origin, section=key) from None
        except SpecError as exc:
            raise SpecError(f"{origin}: [{key}] {exc}") from None
    try:
        return StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise _format_error(exc, origin) from None
    except SpecError as exc:
        raise SpecError(f"{origin}: {exc}") from None


def load_study(source: str | os.PathLike[str] | dict[str, Any], **overrides: Any) -> StudySpec:
    """Load and validate a study from a TOML path, a bundled study name, or a raw dict.

    Args:
        source: a ``.toml`` path, the name of a bundled study (``"quickstart"``), or a dict of sections.
        **overrides: any key of :data:`OVERRIDES` (``n_trials=5``, ``sampler="random"``, ``data="x.parquet"``),
            or a dotted ``"section.key"`` passed through ``**{"train.epochs": 1}``. ``data`` may also be a polars
            or pandas DataFrame (or a polars LazyFrame), and ``objective`` a function or ``"module:function"``.

    Raises:
        SpecError: one line naming the file, the section, the key and what is allowed.
    """
    if isinstance(source, dict):
        raw, origin, stem = source, "study", "study"
    else:
        path, raw = _resolve_source(source)
        origin, stem = f"study file {path.name!r}", path.stem
    raw = apply_overrides(raw, overrides)
    return parse_study(raw, origin=origin, default_name=stem)
