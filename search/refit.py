"""Refit a finished trial on every training row: Ray Train data-parallel, rows streamed through Ray Data.

A study trains each trial on its training rows, held in memory, and selects on the validation rows.
:func:`refit` retrains a chosen trial (the best one by default, each Pareto trial of a multi-objective study)
from its parameters and seed on the training **and** validation rows of the study's data, or on a larger parquet
source (``data=``), and packages it as the study packages its best model:

1. the study's encoder and split are rebuilt (:func:`~sparsearch.search.data.fit_encoder`: the same rows, the
   same ranking, the encoder fitted on the same training rows; the split must match the one the study stored);
2. the rows come from parquet files through Ray Data and are encoded batch by batch (``map_batches``) by that
   encoder restricted to the trial's features (what the packaged model encodes): the study's own rows are first
   written to a temporary parquet folder (training and validation rows only, never the test rows); a ``data=``
   source is read as it is, and any of its rows identical to one of the study's test rows is dropped;
3. one streaming pass counts the rows and the classes, measures the numeric inputs' mean and spread (the
   network's input standardisation) and gathers a bounded sample of their numbers (:data:`NUMERIC_FIT_ROWS` rows
   of smallest row hash); neither the driver nor a worker ever holds the whole table. The driver builds the
   trial's model once with ``spaces.train.build_model`` (numeric encoding fitted on that sample, efficient
   ensemble, cross and FM blocks, the trial's seed) and every rank starts from it;
4. Ray Train's ``TorchTrainer`` runs the trial's training loop on ``workers`` ranks (DDP: ``gloo`` on CPUs,
   ``nccl`` on GPUs), each rank reading its own shard of the stream (``streaming_split``), with the trial's
   global batch size split over the ranks, its learning rate schedule, epochs, sparsity method, pruning
   schedule (in optimizer steps of the refit data) and seed; masks change on rank 0's decision (broadcast after
   every mask update, so they are identical on every rank: the run records each rank's mask digest); an
   ensemble trains on the mean of its members' losses (``spaces.train.TrainingForward``/``training_loss``); the
   model kept is the trial's best epoch's (the refit has no validation rows to choose one);
5. rank 0 checkpoints the state after every epoch (weights, masks, optimizer, schedule position) under
   ``RESULTS/refit/<study>-trial<N>``: ``resume=True`` continues an interrupted refit from there;
6. only when training has finished: the model is evaluated on the study's test rows, and an MLflow run
   ``refit-trial-<N>`` under the study's experiment gets the curves, the accounting and the packaged pyfunc model
   (registered as a new version with ``register_model``). An interrupted refit logs no model.
"""

from __future__ import annotations

import copy
import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict, overload

import numpy as np

from sparsearch.errors import DataError, SpecError, first_line

if TYPE_CHECKING:  # pragma: no cover
    import numpy.typing as npt
    import optuna
    import polars as pl
    import pyarrow as pa
    from optuna.trial import FrozenTrial
    from ray.data import Dataset
    from torch import nn

    from sparsearch._types import JSONValue
    from sparsearch.search.data import PreparedData
    from sparsearch.search.spec import StudySpec
    from sparsearch.spaces import TabularData, TabularEncoder, TrialConfig
    from sparsearch.spaces.models import SparseMLP

__all__ = ["RefitFailed", "RefitResult", "RefitRun", "refit"]

log = logging.getLogger("sparsearch")

STATE_FILE = "refit_state.pt"
"""The file of a Ray Train checkpoint that holds the refit's state."""
ENCODE_BATCH_ROWS = 16_384
"""Rows per Ray Data encoding batch: a few MB of codes, whatever the size of the source."""
PART_ROWS = 250_000
"""Rows per parquet file when the study's own rows are written out for streaming."""
LOCAL_OBJECT_STORE_BYTES = 1 << 30
"""Object store of the private Ray that a refit starts when it joins no cluster (1 GiB; Ray's default is 30% of the
machine's memory). A Ray Train worker maps the blocks it reads from the store without copying them, and the shared
pages it has touched count in its resident memory: with a store of 30% of memory they grow with the rows streamed
(measured with 2 workers: ~450 MB of them after 3M rows per worker, a peak of 2.2 GB
resident after 10M). A bounded store bounds them; Ray Data's
streaming executor sizes its buffers to the store it finds. A cluster (``ray_address``) keeps its own setting."""
NUMERIC_FIT_ROWS = 200_000
"""Rows of the bounded sample that the numeric encoding (``quantile`` quantiles, ``ple`` bins) is fitted on: the
labelled refit rows with the smallest row hashes, gathered during the streaming pass that measures the
standardisation (a few MB of numbers on the driver, whatever the size of the source; 1,000 quantiles and PLE's
bins need far fewer). The model is built from it once, on the driver, and shipped to every rank."""


class RefitFailed(RuntimeError):
    """Training stopped (a worker died, a rank failed): no model was logged; ``resume=True`` continues."""


class RefitRunJSON(TypedDict):
    """:meth:`RefitRun.to_json`: every field of :class:`RefitRun` but ``model``, as JSON has it."""

    trial: int
    trial_values: list[float]
    model_uri: str | None
    mlflow_run_id: str | None
    rows_seen: int
    rows_per_epoch: int
    rows_per_s: float
    train_seconds: float
    epochs: int
    workers: int
    test_metrics: dict[str, float] | None
    trial_test_metrics: dict[str, float] | None
    dropped_test_rows: int
    masks_identical: bool
    mask_digests: list[str]
    worker_peak_rss_mb: list[float]
    history: list[dict[str, float]]
    checkpoint_path: str
    resumed_from_epoch: int
    kept_epoch: int
    metrics: dict[str, float]
    model_encoder_columns: list[str]


class RefitResultJSON(TypedDict):
    """:meth:`RefitResult.to_json`: the document of ``sparsearch refit --json``."""

    study_name: str
    data: str
    elapsed_s: float
    runs: list[RefitRunJSON]


@dataclass
class RefitRun:
    """One refitted trial: what the run JSON reports (see :meth:`to_json`)."""

    trial: int
    trial_values: list[float]
    model_uri: str | None
    mlflow_run_id: str | None
    rows_seen: int
    rows_per_epoch: int
    rows_per_s: float
    train_seconds: float
    epochs: int
    workers: int
    test_metrics: dict[str, float] | None
    trial_test_metrics: dict[str, float] | None
    dropped_test_rows: int
    masks_identical: bool
    mask_digests: list[str]
    worker_peak_rss_mb: list[float]
    history: list[dict[str, float]]
    checkpoint_path: str
    resumed_from_epoch: int = 0
    kept_epoch: int = 0
    """The epoch whose model is packaged: the trial's best epoch (the refit has no validation rows to choose one;
    the trial chose it among the epochs at the final sparsity), or the last one when the trial recorded none."""
    metrics: dict[str, float] = field(default_factory=dict)
    model_encoder_columns: list[str] = field(default_factory=list)
    """The raw columns the refitted model reads (those of the study's encoder the trial kept)."""
    model: nn.Module | None = None
    """The refitted network (CPU, eval mode); not part of the JSON."""

    def to_json(self) -> RefitRunJSON:
        doc = {k: v for k, v in dataclasses.asdict(self).items() if k != "model"}
        return json.loads(json.dumps(doc, default=_json_default))


def _json_default(v: object) -> JSONValue:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return str(v)


@dataclass
class RefitResult:
    """What :func:`refit` returns: one :class:`RefitRun` per refitted trial."""

    study_name: str
    data: str
    runs: list[RefitRun]
    elapsed_s: float = 0.0

    def to_json(self) -> RefitResultJSON:
        """The document of ``sparsearch refit --json`` (README, "Refit, export and serve")."""
        return {"study_name": self.study_name, "data": self.data, "elapsed_s": round(self.elapsed_s, 3),
                "runs": [r.to_json() for r in self.runs]}


# -- the public entry point -----------------------------------------------------------------------------------------
def refit(
    study: str | os.PathLike[str] | StudySpec,
    *,
    trial: int | None = None,
    data: str | os.PathLike[str] | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    ray_address: str | None = None,
    results_dir: str | os.PathLike[str] = "sparsearch-results",
    resume: bool = False,
    register_model: bool = False,
    progress: bool | Callable[[str], None] = True,
    _fail_after_epoch: int | None = None,
    **overrides: object,
) -> RefitResult:
    """Retrain a study's trial on all its training rows with Ray Train and Ray Data (see the module docstring).

    Args:
        study: the study file, bundled study name or :class:`StudySpec` the study ran from (its storage, MLflow
            store, data and split are read from it; ``overrides`` as in :func:`run_study`).
        trial: the trial number to refit; ``None``: the best trial, or every Pareto trial.
        data: a parquet file, folder or glob with the study's columns to train on instead of the study's
            training and validation rows (rows equal to one of the study's test rows are dropped).
        workers: Ray Train workers (data-parallel ranks).
        cpus_per_worker, gpus_per_worker: Ray resources of each worker; a GPU worker trains on its GPU with
            ``nccl``, else ``gloo`` on the CPU.
        ray_address: a Ray cluster to join (default: ``RAY_ADDRESS``, else a private local Ray).
        results_dir: the study's results folder (storage, MLflow store; refit checkpoints go to ``refit/``).
        resume: continue an interrupted refit of the same trial from its last checkpoint.
        register_model: register the refitted model as a new version of the model named after the study.
        progress: print progress lines to stderr (or pass them to a callable).
        _fail_after_epoch: fault injection for tests: the last rank's process dies (``os._exit``) once that
            epoch's checkpoint is written, as a killed worker would.

    Raises:
        SpecError: an unknown study or trial, ``workers < 1``, a GPU request the cluster cannot meet, nothing
            to resume (all before any training worker starts).
        DataError: ``data`` is missing columns the model reads (named), or has no rows.

    Example:
        >>> import sparsearch
        >>> result = sparsearch.refit("quickstart", workers=2)  # doctest: +SKIP
        >>> result.runs[0].model_uri, result.runs[0].test_metrics  # doctest: +SKIP
    """
    from sparsearch._ray import connect_ray, set_ray_env
    from sparsearch.search.data import fit_encoder, trial_feature_subset
    from sparsearch.search.results import load_result
    from sparsearch.search.spec import StudySpec, apply_overrides, load_study, parse_study

    say = _sayer(progress)
    _check_resources(workers, cpus_per_worker, gpus_per_worker)
    spec = study if isinstance(study, StudySpec) else load_study(study, **overrides)
    if isinstance(study, StudySpec) and overrides:
        spec = parse_study(apply_overrides(spec.to_raw(), overrides), default_name=spec.study.name)
    if spec.data.is_image:
        raise SpecError(f"study {spec.study.name!r} trains on images; refit streams tabular parquet rows only")
    if spec.study.objective is not None:
        raise SpecError(f"study {spec.study.name!r} uses a custom objective; refit retrains the built-in one only")
    results = Path(results_dir)
    storage_url, tracking_uri = _urls(spec, results)
    stored = load_result(spec.study.name, storage=storage_url, results_dir=results)  # unknown study: SpecError
    chosen = _pick_trials(stored.study, trial, len(stored.directions))
    if register_model and not spec.tracking.enabled:
        raise SpecError("register_model needs MLflow tracking; the study file sets [tracking] enabled = false")
    refit_root = (results / "refit").resolve()
    ckpt_dirs = {t.number: refit_root / f"{_safe(spec.study.name)}-trial{t.number}" for t in chosen}
    for t in chosen:
        if resume and not ckpt_dirs[t.number].exists():
            raise SpecError(f"nothing to resume for trial {t.number} of study {spec.study.name!r}: no "
                            f"checkpoints at {str(ckpt_dirs[t.number])!r} (run refit without --resume)")
    paths = _source_files(data) if data is not None else None
    start = time.perf_counter()

    say(f"refit of study {spec.study.name!r}, trial(s) {', '.join(str(t.number) for t in chosen)}: "
        "rebuilding the study's split and encoder")
    prepared, frame = fit_encoder(spec, results)
    study_encoder = prepared.encoder
    assert study_encoder is not None  # fit_encoder fits one (tabular data: images were refused above)
    want = (stored.study.user_attrs.get("split") or {}).get("digest")
    if want is not None and want != prepared.split.get("digest"):
        raise DataError(f"study {spec.study.name!r} was split differently (digest {want}, now "
                        f"{prepared.split.get('digest')}): its data, seed or fractions changed since it ran")
    features_of = {t.number: trial_feature_subset(spec, prepared, t.params) for t in chosen}
    if paths is not None:
        for t in chosen:  # columns before any worker starts
            _check_columns(paths, study_encoder.select(features_of[t.number]), data)

    set_ray_env()
    started_ray = connect_ray(ray_address or spec.execution.ray_address, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    tmp_dir: Path | None = None
    try:
        _check_cluster(workers, cpus_per_worker, gpus_per_worker)
        runs: list[RefitRun] = []
        for t in chosen:
            features = features_of[t.number]
            encoder = study_encoder.select(features)
            ckpt_dir = ckpt_dirs[t.number]
            test_hashes: np.ndarray | None
            if not resume and ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)  # a fresh refit: an earlier run's checkpoints must not be resumed
            if paths is None:
                if tmp_dir is None:
                    tmp_dir = refit_root / f"tmp-rows-{uuid.uuid4().hex[:8]}"
                    cols = sorted({*study_encoder.raw_features, spec.data.target})
                    _write_rows(frame, cols, _train_val_rows(prepared), tmp_dir)
                    say(f"wrote the {_n_train_val(prepared):,} training and validation rows to {tmp_dir}")
                source, test_hashes = sorted(glob.glob(str(tmp_dir / "*.parquet"))), None
            else:
                source, test_hashes = paths, _row_hashes(frame, encoder, spec.data.target, prepared)
            run = _refit_one(spec, stored.study, t, features, encoder, prepared, frame, source, test_hashes,
                             workers=workers, cpus=cpus_per_worker, gpus=gpus_per_worker, ckpt_dir=ckpt_dir,
                             tracking_uri=tracking_uri, results=results, register=register_model, say=say,
                             fail_after_epoch=_fail_after_epoch)
            runs.append(run)
    finally:
        if tmp_dir is not None:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if started_ray:
            import ray

            ray.shutdown()
    return RefitResult(study_name=spec.study.name, data=str(data) if data is not None else "study",
                       runs=runs, elapsed_s=time.perf_counter() - start)


# -- validation ---------------------------------------------------------------------------------------------------
def _sayer(progress: bool | Callable[[str], None]) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        import sys

        return lambda text: print(f"[refit] {text}", file=sys.stderr, flush=True)
    return lambda text: None


def _check_resources(workers: object, cpus: object, gpus: object) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpecError(f"workers must be an integer >= 1 (Ray Train ranks), got {workers!r}")
    if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or not cpus > 0:
        raise SpecError(f"cpus_per_worker must be a number > 0, got {cpus!r}")
    if not isinstance(gpus, (int, float)) or isinstance(gpus, bool) or gpus < 0:
        raise SpecError(f"gpus_per_worker must be a number >= 0 (0: train on CPUs), got {gpus!r}")


def _check_cluster(workers: int, cpus: float, gpus: float) -> None:
    """Fail before any worker starts when the Ray cluster cannot hold the workers."""
    import ray

    have = ray.cluster_resources()
    if gpus > 0 and have.get("GPU", 0.0) < workers * gpus:
        raise SpecError(f"gpus_per_worker {gpus:g} x {workers} worker(s) needs {workers * gpus:g} GPU(s); the Ray "
                        f"cluster has {have.get('GPU', 0.0):g} (use gpus_per_worker 0 to train on CPUs)")
    if have.get("CPU", 0.0) < workers * cpus + 1:  # Ray Data's reading and encoding tasks need a CPU too
        raise SpecError(f"{workers} worker(s) x {cpus:g} CPU(s) and 1 CPU for Ray Data's reading need "
                        f"{workers * cpus + 1:g} CPUs; the Ray cluster has {have.get('CPU', 0.0):g} (lower workers "
                        "or cpus_per_worker)")


def _urls(spec: StudySpec, results: Path) -> tuple[str, str]:
    from sparsearch.search.storage import absolute_storage_url, default_storage_url, env_storage_url
    from sparsearch.search.tracking import default_tracking_uri

    storage = absolute_storage_url(spec.storage.url or env_storage_url() or default_storage_url(results))
    return storage, spec.tracking.uri or default_tracking_uri(results)


def _pick_trials(study: optuna.Study, number: int | None, n_objectives: int) -> list[FrozenTrial]:
    from optuna.trial import TrialState

    from sparsearch.search.results import best_complete

    if number is None:
        best = best_complete(study, n_objectives)
        if not best:
            raise SpecError(f"study {study.study_name!r} has no complete trial to refit")
        return best
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if number not in trials:
        raise SpecError(f"study {study.study_name!r} has no trial {number}; its trials are 0 .. {len(trials) - 1}")
    t = trials[number]
    if t.state != TrialState.COMPLETE:
        raise SpecError(f"trial {number} of study {study.study_name!r} is {t.state.name}; only a COMPLETE trial "
                        "can be refitted")
    return [t]


def _source_files(data: str | os.PathLike[str]) -> list[str]:
    """The parquet files of a file, folder or glob (sorted); SpecError when there are none."""
    text = str(data)
    p = Path(text)
    if p.is_dir():
        files = sorted(str(f) for f in p.rglob("*.parquet"))
    elif any(ch in text for ch in "*?["):
        files = sorted(f for f in glob.glob(text, recursive=True) if f.endswith(".parquet"))
    else:
        files = [text] if p.is_file() else []
    if not files:
        raise SpecError(f"--data {text!r}: no parquet files there (give a .parquet file, a folder or a glob)")
    return [str(Path(f).resolve()) for f in files]


def _check_columns(paths: list[str], encoder: TabularEncoder, data: object) -> None:
    import pyarrow.parquet as pq

    names = set(pq.read_schema(paths[0]).names)
    needed = [*encoder.raw_features, encoder.target]
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"--data {str(data)!r} lacks column(s) {', '.join(missing)} that the study's encoder "
                        f"reads ({', '.join(needed)})")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


# -- the rows -----------------------------------------------------------------------------------------------------
def _train_val_rows(prepared: PreparedData) -> np.ndarray:
    return np.sort(np.concatenate([prepared.indices["train"], prepared.indices["val"]]))


def _n_train_val(prepared: PreparedData) -> int:
    return int(prepared.indices["train"].size + prepared.indices["val"].size)


def _write_rows(frame: pl.DataFrame, columns: list[str], rows: np.ndarray, out: Path) -> None:
    """Write ``rows`` of ``frame`` (raw columns) as a parquet folder, ``PART_ROWS`` rows per file."""
    out.mkdir(parents=True, exist_ok=True)
    sub = frame.select(columns)
    for i in range(0, rows.size, PART_ROWS):
        sub[rows[i:i + PART_ROWS]].write_parquet(out / f"part-{i // PART_ROWS:05d}.parquet")


def _row_hashes(frame: pl.DataFrame, encoder: TabularEncoder, target: str,
                prepared: PreparedData) -> np.ndarray:
    """Sorted hashes of the study's test rows (the columns the model reads and the target), to drop them from a
    ``data=`` source: a test row is never trained on, even when the source holds the study's own rows."""
    te = prepared.indices["test"]
    if te.size == 0:
        return np.zeros(0, dtype=np.uint64)
    cols = [*encoder.raw_features, target]
    return np.unique(frame.select(cols)[te].hash_rows(seed=0).to_numpy())


@overload
def _encode(table: pa.Table, encoder: TabularEncoder, dtypes: dict[str, pl.DataType],
            test_hashes: np.ndarray | None, *,
            with_hashes: Literal[False] = False) -> tuple[TabularData | None, int]: ...
@overload
def _encode(table: pa.Table, encoder: TabularEncoder, dtypes: dict[str, pl.DataType],
            test_hashes: np.ndarray | None, *,
            with_hashes: Literal[True]) -> tuple[TabularData | None, int, np.ndarray]: ...
def _encode(table: pa.Table, encoder: TabularEncoder, dtypes: dict[str, pl.DataType],
            test_hashes: np.ndarray | None, *, with_hashes: bool = False
            ) -> tuple[TabularData | None, int] | tuple[TabularData | None, int, np.ndarray]:
    """Encode one Arrow batch of raw rows; drop rows equal to a test row. Returns (TabularData or None, dropped),
    and with ``with_hashes`` each encoded row's hash (of the columns the model reads and the target) as well."""
    import polars as pl

    df = pl.from_arrow(table)
    if not isinstance(df, pl.DataFrame):  # pragma: no cover - a batch is a table
        df = df.to_frame()
    dropped = 0
    if test_hashes is not None and test_hashes.size and df.height:
        keyed = df.select([pl.col(c).cast(dtypes[c], strict=False) for c in dtypes])
        hit = np.isin(keyed.hash_rows(seed=0).to_numpy(), test_hashes)
        dropped = int(hit.sum())
        if dropped:
            df = df.filter(pl.Series(~hit))
    df = df.filter(pl.col(encoder.target).is_not_null())
    data = encoder.encode(df) if df.height else None
    if not with_hashes:
        return data, dropped
    keyed = df.select([pl.col(c).cast(dtypes[c], strict=False) for c in dtypes])
    return data, dropped, keyed.hash_rows(seed=1).to_numpy().astype(np.uint64)


def _padded(a: np.ndarray, dtype: npt.DTypeLike) -> np.ndarray:
    """A 2-d block of one column at least (Ray Data's tensor columns need a non-empty row shape)."""
    return a if a.shape[1] else np.zeros((a.shape[0], 1), dtype=dtype)


def encode_batch(table: pa.Table, *, encoder: TabularEncoder, dtypes: dict[str, pl.DataType],
                 test_hashes: np.ndarray | None) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: raw Arrow rows -> ``cat`` (int32), ``num`` (float32), ``y`` (int64)."""
    data, _ = _encode(table, encoder, dtypes, test_hashes)
    if data is None:
        n_cat, n_num = max(len(encoder.categorical_names), 1), max(len(encoder.numeric_names), 1)
        return {"cat": np.zeros((0, n_cat), np.int32), "num": np.zeros((0, n_num), np.float32),
                "y": np.zeros(0, np.int64)}
    return {"cat": _padded(data.categorical.astype(np.int32, copy=False), np.int32),
            "num": _padded(data.numeric.astype(np.float32, copy=False), np.float32), "y": data.y}


def _batch_stats(table: pa.Table, *, encoder: TabularEncoder, dtypes: dict[str, pl.DataType],
                 test_hashes: np.ndarray | None, sample_below: int = 0) -> dict[str, np.ndarray]:
    """One statistics row per batch (``kind`` 0): rows, dropped test rows, class counts, the numeric inputs'
    mean and M2; then one row (``kind`` 1) per row of the numeric sample: the batch's labelled rows whose hash is
    below ``sample_below`` (out of 2**64), and its row of smallest hash (so a sample is never empty)."""
    data, dropped, hashes = _encode(table, encoder, dtypes, test_hashes, with_hashes=True)
    k = max(len(encoder.numeric_names), 1)
    n = 0 if data is None else data.n_rows
    mean, m2 = np.zeros(k), np.zeros(k)
    counts = np.zeros(len(encoder.classes), dtype=np.int64)
    pick = np.zeros(0, dtype=np.int64)
    if data is not None and n:
        num = _padded(data.numeric, np.float32).astype(np.float64)
        mean = num.mean(axis=0)
        m2 = ((num - mean) ** 2).sum(axis=0)
        counts = np.bincount(data.y, minlength=len(encoder.classes)).astype(np.int64)
        if sample_below > 0:
            below = hashes < np.uint64(min(sample_below, 2**64 - 1))
            below[int(np.argmin(hashes))] = True
            pick = np.flatnonzero(below)
    m = pick.size
    sample = num[pick] if m else np.zeros((0, k))
    return {"kind": np.array([0] + [1] * m, dtype=np.int8), "n": np.array([n] + [0] * m),
            "dropped": np.array([dropped] + [0] * m),
            "mean": np.vstack([mean[None, :], np.zeros((m, k))]), "m2": np.vstack([m2[None, :], np.zeros((m, k))]),
            "counts": np.vstack([counts[None, :], np.zeros((m, counts.size), dtype=np.int64)]),
            "sample": np.vstack([np.zeros((1, k)), sample]),
            "hash": np.concatenate([np.zeros(1, np.uint64), hashes[pick] if m else np.zeros(0, np.uint64)])}


@dataclass(frozen=True)
class _Scan:
    n_rows: int
    dropped: int
    class_counts: list[int]
    mean: np.ndarray
    std: np.ndarray
    sample: np.ndarray
    """Up to :data:`NUMERIC_FIT_ROWS` labelled rows' numbers (raw), ordered by row hash: the numeric fit sample."""


class _Sample:
    """The rows of smallest hash seen so far, at most ``size`` of them: order-independent, so the sample is the
    same whatever order Ray Data delivers the batches in."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.hashes: list[np.ndarray] = []
        self.rows: list[np.ndarray] = []
        self.held = 0

    def add(self, hashes: np.ndarray, rows: np.ndarray) -> None:
        self.hashes.append(hashes)
        self.rows.append(rows)
        self.held += hashes.size
        if self.held > 2 * self.size:
            self._trim()

    def _trim(self) -> None:
        h, r = np.concatenate(self.hashes), np.concatenate(self.rows)
        keep = np.lexsort((*r.T[::-1], h))[: self.size]  # by hash, ties (equal hashes) by the values
        self.hashes, self.rows, self.held = [h[keep]], [r[keep]], keep.size

    def result(self, width: int) -> np.ndarray:
        if not self.held:
            return np.zeros((0, width))
        self._trim()
        return self.rows[0][:, :width]


def _scan(ds: Dataset, width: int, sample_rows: int = NUMERIC_FIT_ROWS) -> _Scan:
    """Merge the per-batch statistics (Chan et al.'s parallel variance) and the numeric sample: one streaming
    pass, no table. ``width``: the numeric columns."""
    n, dropped = 0, 0
    merged: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # mean, M2, class counts of the n rows
    sample = _Sample(sample_rows)
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        rows = batch["kind"] == 1
        if rows.any():
            sample.add(batch["hash"][rows], batch["sample"][rows])
        for i in np.flatnonzero(~rows):
            nb, db = int(batch["n"][i]), int(batch["dropped"][i])
            dropped += db
            if nb == 0:
                continue
            mb, qb, cb = batch["mean"][i], batch["m2"][i], batch["counts"][i]
            if merged is None:
                n, merged = nb, (mb.copy(), qb.copy(), cb.copy())
                continue
            mean, m2, counts = merged
            delta = mb - mean
            total = n + nb
            merged = (mean + delta * nb / total, m2 + qb + delta ** 2 * n * nb / total, counts + cb)
            n = total
    if merged is None:
        return _Scan(0, dropped, [], np.zeros(0), np.zeros(0), np.zeros((0, width)))
    mean, m2, counts = merged
    std = np.sqrt(m2 / n)
    return _Scan(n, dropped, [int(c) for c in counts], mean, np.where(std > 1e-12, std, 1.0),
                 sample.result(width))


def _sample_below(source: list[str], sample_rows: int = NUMERIC_FIT_ROWS) -> int:
    """The hash bound (of 2**64) below which a row joins the numeric sample: about twice ``sample_rows`` of the
    source's rows (counted from the parquet footers), so that the sample fills without shipping every row."""
    import pyarrow.parquet as pq

    total = sum(pq.read_metadata(f).num_rows for f in source)
    return 2**64 if total <= 2 * sample_rows else int(2**64 * (2 * sample_rows / total))


def _dataset(source: list[str], encoder: TabularEncoder, dtypes: dict[str, pl.DataType],
             test_hashes: np.ndarray | None, fn: Callable[..., dict[str, np.ndarray]],
             **kwargs: object) -> Dataset:
    import functools

    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # progress is ours (one line per stage), not a bar per operator
    context.print_on_execution_start = False
    cols = list(dict.fromkeys([*encoder.raw_features, encoder.target]))
    ds = ray.data.read_parquet(source).select_columns(cols)  # pushed down: only these columns are read
    return ds.map_batches(functools.partial(fn, encoder=encoder, dtypes=dtypes, test_hashes=test_hashes, **kwargs),
                          batch_format="pyarrow", batch_size=ENCODE_BATCH_ROWS, zero_copy_batch=True)


def _first_error_line(exc: BaseException) -> BaseException | None:
    """The sparsearch error a Ray task raised, when one is in the chain."""
    from sparsearch.errors import SparsearchError

    seen = exc
    for _ in range(10):
        if isinstance(seen, SparsearchError):
            return seen
        nxt = seen.__cause__ or seen.__context__
        if nxt is None:
            break
        seen = nxt
    text = str(exc)
    for cls in (DataError, SpecError):
        marker = f"{cls.__name__}: "
        if marker in text:
            return cls(text.split(marker, 1)[1].strip().splitlines()[0])
    return None


# -- one trial ----------------------------------------------------------------------------------------------------
def _refit_one(spec: StudySpec, study: optuna.Study, t: FrozenTrial, features: tuple[str, ...] | None,
               encoder: TabularEncoder, prepared: PreparedData, frame: pl.DataFrame, source: list[str],
               test_hashes: np.ndarray | None, *, workers: int, cpus: float, gpus: float, ckpt_dir: Path,
               tracking_uri: str, results: Path, register: bool,
               say: Callable[[str], None], fail_after_epoch: int | None = None) -> RefitRun:
    import ray.train
    import torch
    from ray.train.torch import TorchConfig, TorchTrainer

    from sparsearch.search.protocol import trial_seed
    from sparsearch.search.records import stored_test_metrics, trial_metrics
    from sparsearch.search.results import get_test_record
    from sparsearch.spaces import config_from_params

    config = config_from_params(t.params, spec.space, spec.train, n_features=len(prepared.candidates) or None)
    if config.model != "mlp":
        raise SpecError(f"trial {t.number} trains a {config.model!r}; refit streams tabular rows to an mlp only")
    dtypes = {c: frame.schema[c] for c in [*encoder.raw_features, encoder.target]}
    n_num = len(encoder.numeric_names)
    fitted = n_num > 0 and config.numeric_encoding in ("quantile", "ple")  # encodings with statistics to fit
    stats_ds = _dataset(source, encoder, dtypes, test_hashes, _batch_stats,
                        sample_below=_sample_below(source) if fitted else 0)
    try:
        scan = _scan(stats_ds, n_num)
    except Exception as exc:
        err = _first_error_line(exc)
        if err is not None:
            raise type(err)(str(err)) from None
        raise
    if scan.n_rows < workers:
        raise DataError(f"the refit rows hold {scan.n_rows} labelled row(s); {workers} worker(s) need at least one "
                        "each")
    say(f"trial {t.number}: {scan.n_rows:,} rows to train on ({scan.dropped:,} equal to test rows dropped), "
        f"classes {scan.class_counts}; {workers} worker(s)")
    world = workers
    per_rank = scan.n_rows // world
    batch = max(1, math.ceil(config.batch_size / world))
    steps_per_epoch = max(1, math.ceil(per_rank / batch))
    shape: _Shape = {"cardinalities": list(encoder.cardinalities), "n_cat": len(encoder.categorical_names),
                     "n_num": len(encoder.numeric_names), "n_classes": len(encoder.classes)}
    seed = trial_seed(spec.study.seed, t.number)  # the seed the trial trained with
    total_epochs = config.epochs + (config.dense_finetune_epochs if config.is_sparse else 0)
    best_epoch = int(trial_metrics(t).get("best_epoch", 0))
    keep_epoch = best_epoch if 1 <= best_epoch <= total_epochs else None
    # built once, here: the numeric encoding fitted on the scan's sample, the standardisation on every row; every
    # rank starts from this same model (weights, bins, quantiles), as the trial started from build_model's
    initial = _build_model(config, shape, scan, seed)
    if fitted:
        say(f"trial {t.number}: {config.numeric_encoding} encoding fitted on {scan.sample.shape[0]:,} sampled rows")
    train_ds = _dataset(source, encoder, dtypes, test_hashes, encode_batch).randomize_block_order(seed=seed)
    ckpt_dir.parent.mkdir(parents=True, exist_ok=True)
    resume_from = _latest_state(ckpt_dir)
    loop_config = _LoopConfig(config=config, seed=seed, shape=shape, model=initial, keep_epoch=keep_epoch,
                              batch=batch, steps_per_epoch=steps_per_epoch, threads=max(1, int(cpus)),
                              shuffle_rows=min(max(4 * batch, 1024), 200_000),
                              resume_from=str(resume_from) if resume_from is not None else None,
                              fail_after_epoch=fail_after_epoch)
    if resume_from is not None:
        say(f"trial {t.number}: resuming from {resume_from.parent.name}")
    trainer = TorchTrainer(
        _train_loop, train_loop_config={"loop": loop_config},
        torch_config=TorchConfig(backend="nccl" if gpus > 0 else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=workers, use_gpu=gpus > 0,
                                               resources_per_worker={"CPU": cpus, **({"GPU": gpus} if gpus else {})}),
        run_config=ray.train.RunConfig(name=ckpt_dir.name, storage_path=str(ckpt_dir.parent),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
                                       failure_config=ray.train.FailureConfig(max_failures=0)),
        datasets={"train": train_ds},
    )
    say(f"trial {t.number}: training {config.epochs + (config.dense_finetune_epochs if config.is_sparse else 0)} "
        f"epoch(s) of {steps_per_epoch} step(s) per rank, batch {batch} per rank")
    try:
        result = trainer.fit()
    except Exception as exc:
        err = _first_error_line(exc)
        if err is not None:
            raise type(err)(str(err)) from None
        first = first_line(exc)
        raise RefitFailed(f"refit of trial {t.number} failed: {first[:300]}; no model was logged, re-run with "
                          "--resume to continue from the last checkpoint") from None
    final_state = _latest_state(ckpt_dir)  # the last epoch's, whether this run or the one it resumed wrote it
    if final_state is None:
        raise RefitFailed(f"refit of trial {t.number} ended without a checkpoint; no model was logged")
    state = torch.load(final_state, weights_only=True, map_location="cpu")
    final = result.metrics or {}
    model = copy.deepcopy(initial)
    model.load_state_dict(state["kept"] if state.get("kept") is not None else state["model"])
    model.eval()

    test_metrics, metrics, accounting = _evaluate(model, config, encoder, frame, prepared)
    rec = get_test_record(study, t.number)
    trial_test = stored_test_metrics(rec) if rec else None
    history = list(state["history"])
    rows_seen = int(sum(h["rows"] for h in history))
    seconds = float(sum(h["seconds"] for h in history))
    run = RefitRun(
        trial=t.number, trial_values=list(t.values), model_uri=None, mlflow_run_id=None, rows_seen=rows_seen,
        rows_per_epoch=int(history[-1]["rows"]) if history else 0,
        rows_per_s=rows_seen / seconds if seconds > 0 else 0.0, train_seconds=seconds, epochs=len(history),
        workers=workers, test_metrics=test_metrics, trial_test_metrics=trial_test,
        dropped_test_rows=scan.dropped, masks_identical=len(set(final.get("mask_digests", []))) == 1,
        mask_digests=list(final.get("mask_digests", [])),
        worker_peak_rss_mb=[float(x) for x in final.get("peak_rss_mb", [])], history=history,
        checkpoint_path=str(ckpt_dir), resumed_from_epoch=int(state.get("resumed_from_epoch", 0)),
        kept_epoch=int(state.get("kept_epoch", len(history))),
        metrics=metrics, model_encoder_columns=list(encoder.raw_features), model=model)
    if not run.masks_identical:
        raise RefitFailed(f"refit of trial {t.number}: the ranks ended with different masks "
                           f"({run.mask_digests}); no model was logged")
    if spec.tracking.enabled:
        _log_mlflow(spec, run, model, encoder, prepared, config, accounting, tracking_uri, results, register)
    say(f"trial {t.number}: {rows_seen:,} rows in {seconds:.1f}s ({run.rows_per_s:,.0f} rows/s); test "
        + ", ".join(f"{k} {v:.4f}" for k, v in (test_metrics or {}).items())
        + (f" (trial: {', '.join(f'{k} {v:.4f}' for k, v in trial_test.items())})" if trial_test else ""))
    return run


def _latest_state(ckpt_dir: Path) -> Path | None:
    """The state file of the latest complete epoch checkpointed under ``ckpt_dir`` (``None``: none).

    Read from the files rather than from Ray Train's own record of reported checkpoints: a rank killed right after
    rank 0 persisted a checkpoint can stop the run before Ray Train records it. A file that does not load (a copy
    cut short) is skipped.
    """
    import torch

    best: tuple[int, Path] | None = None
    for path in ckpt_dir.glob(f"*/{STATE_FILE}") if ckpt_dir.exists() else ():
        try:
            epoch = int(torch.load(path, weights_only=True, map_location="cpu")["epoch"])
        except Exception:  # noqa: BLE001 - a partial or foreign file is no checkpoint
            continue
        if best is None or epoch > best[0]:
            best = (epoch, path)
    return best[1] if best is not None else None


def _evaluate(model: nn.Module, config: TrialConfig, encoder: TabularEncoder, frame: pl.DataFrame,
              prepared: PreparedData) -> tuple[dict[str, float] | None, dict[str, float], dict[str, object]]:
    """Test metrics on the study's test rows, and the model's sparsity, size, FLOP and latency accounting."""
    import dataclasses as dc

    from sparsearch.spaces import accounting as acc
    from sparsearch.spaces import evaluate_model
    from sparsearch.spaces.train import account_model, model_inputs  # the accounting every trial gets

    te = prepared.indices["test"]
    plain = dc.replace(encoder, crosses=())  # the frame holds the crossed columns already
    if te.size:
        test = plain.encode(frame, [te])[0]
    else:  # no test rows: the accounting's latency sample comes from the first rows
        test = plain.encode(frame, [np.arange(min(64, frame.height))])[0]
    inputs = model_inputs(test)
    positions = acc.output_positions(model, tuple(x[:64] for x in inputs))
    metrics, accounting = account_model(model, config, inputs, positions, measure=True)
    return (evaluate_model(model, test) if te.size else None), metrics, accounting


def _log_mlflow(spec: StudySpec, run: RefitRun, model: nn.Module, encoder: TabularEncoder,
                prepared: PreparedData, config: TrialConfig, accounting: dict[str, object], tracking_uri: str,
                results: Path, register: bool) -> None:
    """The ``refit-trial-<N>`` run: curves, accounting, the packaged pyfunc model; written after training only."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from sparsearch.search.model import SparsearchModel
    from sparsearch.search.tracking import Tracker

    tracker = Tracker(tracking_uri, spec.tracking.experiment or spec.study.name, results / "artifacts",
                      study_name=spec.study.name)
    tracker.connect()
    params = {"trial": run.trial, "workers": run.workers, "epochs": run.epochs, **config.to_dict()}
    tags = {"sparsearch.kind": "refit", "refit_of_trial": str(run.trial), "optuna.study_name": spec.study.name}
    run_id = tracker.start_parent(f"refit-trial-{run.trial}", params, tags)
    if run_id is None:
        raise RefitFailed(f"cannot create the MLflow refit run: {'; '.join(tracker.failures)[:300]}")
    status = "FAILED"
    try:
        now = int(time.time() * 1000)
        client = MlflowClient(tracking_uri)
        curves = [Metric(f"refit_{k}", float(v), now, int(h["epoch"])) for h in run.history
                  for k, v in h.items() if k != "epoch" and math.isfinite(float(v))]
        for i in range(0, len(curves), 1000):
            client.log_batch(run_id, metrics=curves[i:i + 1000])
        summary = {"rows_seen": run.rows_seen, "rows_per_s": run.rows_per_s, "train_seconds": run.train_seconds,
                   **run.metrics, **(run.test_metrics or {}),
                   **{f"trial_{k}": v for k, v in (run.trial_test_metrics or {}).items()}}
        tracker.log_run(run_id, summary)
        tracker.log_artifact_text(run_id, "accounting.json", json.dumps(accounting, indent=2, default=str))
        package = SparsearchModel(encoder, model)
        assert prepared.example is not None  # fit_encoder keeps a few raw rows as the example
        example = prepared.example.select(list(encoder.raw_features))
        registered = spec.study.name if register else None
        run.model_uri = tracker.log_pyfunc_model(run_id, package, example, registered_name=registered)
        if run.model_uri is None:
            raise RefitFailed(f"cannot log the refitted model: {'; '.join(tracker.failures)[:300]}")
        tracker.log_artifact_text(run_id, "refit.json", json.dumps(run.to_json(), indent=2))
        run.mlflow_run_id = run_id
        status = "FINISHED"
    finally:
        tracker.finish_parent(status, {}, {"status": status})
        tracker.flush()


# -- the training loop of each Ray Train worker ---------------------------------------------------------------------
class _Shape(TypedDict):
    """The refit rows' encoded shape (the encoder's, restricted to the trial's features)."""

    cardinalities: list[int]
    n_cat: int
    n_num: int
    n_classes: int


@dataclass(frozen=True)
class _LoopConfig:
    """What every Ray Train rank's :func:`_train_loop` gets from the driver, as ``train_loop_config={"loop":
    ...}``: one typed object, not a dict of loose keys."""

    config: TrialConfig
    seed: int | None
    shape: _Shape
    model: SparseMLP
    """The driver's initial model: every rank starts from a copy (the same weights, bins and quantiles)."""
    keep_epoch: int | None
    """The epoch whose model is kept (the trial's best epoch); ``None``: the last one."""
    batch: int
    """Rows per batch on each rank (the trial's global batch size split over the ranks)."""
    steps_per_epoch: int
    threads: int
    shuffle_rows: int
    resume_from: str | None
    """The state file of the checkpoint to continue from (:func:`_latest_state`), or ``None``."""
    fail_after_epoch: int | None
    """Fault injection (tests): the last rank dies once this epoch's checkpoint is written."""


def _build_model(config: TrialConfig, shape: _Shape, scan: _Scan, seed: int | None) -> SparseMLP:
    """The trial's network as ``spaces.train.build_model`` builds it (numeric encoding, ensemble, cross and FM
    blocks), for the refit rows' shapes: its numeric encoding fitted on the scan's bounded sample of the refit
    rows, its standardisation measured on all of them, its initial weights from the trial's seed."""
    import torch

    from sparsearch.spaces import TabularData
    from sparsearch.spaces.models import SparseMLP
    from sparsearch.spaces.train import build_model

    n_num = shape["n_num"]
    sample = scan.sample[:, :n_num] if scan.sample.shape[0] else np.zeros((1, n_num))
    m = sample.shape[0]
    rows = TabularData(categorical=np.zeros((m, shape["n_cat"]), np.int32),
                       cardinalities=tuple(shape["cardinalities"]), numeric=sample.astype(np.float32),
                       y=np.zeros(m, np.int64), task="binary" if shape["n_classes"] == 2 else "multiclass",
                       n_classes=shape["n_classes"])
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)  # the trial's initial weights
        model = build_model(config, rows, numeric_mean=scan.mean[:n_num], numeric_std=scan.std[:n_num])
    assert isinstance(model, SparseMLP)  # tabular rows and an mlp config (_refit_one checks config.model)
    return model


def _mask_digest(model: nn.Module) -> str:
    from sparsearch.spaces.masked import masked_modules

    h = hashlib.sha256()
    for name, m in masked_modules(model):
        h.update(name.encode())
        h.update(m.mask.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _train_loop(train_loop_config: dict[str, _LoopConfig]) -> None:
    """One Ray Train rank: the trial's training loop (``spaces.train``) over this rank's shard of the stream."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    from sparsearch.spaces.masked import masked_modules
    from sparsearch.spaces.methods import make_method
    from sparsearch.spaces.sparsifier import Sparsifier
    from sparsearch.spaces.train import (
        TrainingForward,
        loss_function,
        lr_at,
        make_optimizer,
        sparsifier_scales,
        training_loss,
    )

    cfg = train_loop_config["loop"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    distributed = world > 1 and dist.is_available() and dist.is_initialized()
    torch.set_num_threads(cfg.threads)
    config, seed, shape = cfg.config, cfg.seed, cfg.shape
    device = ray.train.torch.get_device()
    model = copy.deepcopy(cfg.model)  # the driver's model: the same weights, bins and quantiles on every rank
    loss_fn = loss_function(model.head.out_features)
    # masks change only through the sparsifier (then broadcast below): DDP need not re-send buffers every step;
    # DDP wraps the training forward pass (an ensemble's member logits) so that every gradient is averaged
    net = ray.train.torch.prepare_model(TrainingForward(model), parallel_strategy_kwargs={"broadcast_buffers": False})
    optimizer = make_optimizer(config.optimizer, model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sparse = config.is_sparse
    sparsifier = Sparsifier(model, pattern=config.pattern, distribution=config.distribution,
                            criterion=config.criterion, optimizer=optimizer, seed=seed, nm_keep=config.nm_keep,
                            nm_group=config.nm_group, erk_power=config.erk_power, scales=sparsifier_scales(config, model))
    method = make_method(config.method if sparse else "dense", target_sparsity=config.target_sparsity,
                         schedule=config.schedule, start_frac=config.start_frac, end_frac=config.end_frac,
                         mask_updates=config.mask_updates, dst_interval=config.dst_interval,
                         dst_alpha=config.dst_alpha)
    steps_per_epoch = cfg.steps_per_epoch
    total_epochs = config.epochs + (config.dense_finetune_epochs if sparse else 0)
    all_steps = steps_per_epoch * total_epochs
    method.setup(sparsifier, steps_per_epoch * config.epochs)

    def sync_masks() -> None:
        if distributed:  # rank 0's masks on every rank: identical whatever each rank computed
            for _, m in masked_modules(model):
                dist.broadcast(m.weight_mask, src=0)
                m.apply_mask()

    sync_masks()
    step, start_epoch, history = 0, 1, []
    keep_epoch, kept = cfg.keep_epoch, None
    resumed_from = 0
    if cfg.resume_from is not None:  # the driver picked the latest complete checkpoint (_latest_state)
        state = torch.load(cfg.resume_from, weights_only=True, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sparsifier.generator.set_state(state["generator"])
        method.n_updates, step, history = state["n_updates"], state["step"], list(state["history"])
        kept = state.get("kept")
        start_epoch = resumed_from = state["epoch"] + 1
    updates_seen = method.n_updates
    shard = ray.train.get_dataset_shard("train")
    n_cat, n_num = shape["n_cat"], shape["n_num"]
    model.train()
    for epoch in range(start_epoch, total_epochs + 1):
        finetune = epoch > config.epochs
        if finetune and epoch == config.epochs + 1:
            sparsifier.remove_masks()
        t0 = time.perf_counter()
        rows, loss_sum, done = 0, 0.0, 0
        batches = iter(shard.iter_torch_batches(batch_size=cfg.batch,
                                                local_shuffle_buffer_size=cfg.shuffle_rows,
                                                local_shuffle_seed=None if seed is None else seed + epoch,
                                                device=device))
        while done < steps_per_epoch:
            b = next(batches, None)
            if distributed:  # every rank steps together: stop when any rank's shard is exhausted
                flag = torch.tensor([0 if b is None else 1], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MIN)
                if int(flag.item()) == 0:
                    break
            if b is None:  # (never after the distributed check above: this rank's flag was 1)
                break
            cat, num, y = b["cat"][:, :n_cat], b["num"][:, :n_num], b["y"]
            loss = training_loss(loss_fn, net(cat, num), y)  # an ensemble: the mean of its members' losses
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.lr_schedule != "constant":
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(config, step, all_steps)
            if sparse and not finetune:
                if method.wants_dense_grad(step + 1):
                    sparsifier.capture_dense_grads()
                sparsifier.mask_gradients()
                optimizer.step()
                sparsifier.apply_masks()
                step += 1
                method.after_step(step)
                if method.n_updates != updates_seen:
                    updates_seen = method.n_updates
                    sync_masks()
            else:
                optimizer.step()
                step += 1
            done += 1
            rows += int(y.shape[0])
            loss_sum += float(loss.detach()) * int(y.shape[0])
        if done < steps_per_epoch and sparse and not finetune:
            # fewer rows than counted reached this rank: run the schedule's remaining mask updates of the epoch
            for s in range(step + 1, epoch * steps_per_epoch + 1):
                method.after_step(s)
            step = epoch * steps_per_epoch
            if method.n_updates != updates_seen:
                updates_seen = method.n_updates
                sync_masks()
        totals = torch.tensor([rows, loss_sum], dtype=torch.float64)
        if distributed:
            dist.all_reduce(totals)
        seconds = time.perf_counter() - t0
        if distributed:
            t = torch.tensor([seconds], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            seconds = float(t.item())
        n_rows = int(totals[0].item())
        history.append({"epoch": float(epoch), "rows": float(n_rows), "seconds": seconds,
                        "train_loss": float(totals[1].item()) / max(n_rows, 1),
                        "rows_per_s": n_rows / seconds if seconds > 0 else 0.0,
                        "mask_sparsity": sparsifier.mask_sparsity(), "mask_updates": float(method.n_updates)})
        last = epoch == total_epochs
        digests = [_mask_digest(model)]
        rss = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0]  # KiB on Linux
        if distributed:
            gathered: list[tuple[str, float]] = [("", 0.0)] * world  # each rank's (digest, rss), filled in
            dist.all_gather_object(gathered, (digests[0], rss[0]))
            digests, rss = [g[0] for g in gathered], [g[1] for g in gathered]
        metrics = {"epoch": epoch, "rows": n_rows, "train_loss": history[-1]["train_loss"],
                   "mask_digests": digests, "peak_rss_mb": rss}
        if rank == 0 and epoch == keep_epoch and not last:  # the last epoch's model is the one in the state
            kept = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if rank == 0:
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({"model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                            "optimizer": optimizer.state_dict(), "generator": sparsifier.generator.get_state(),
                            "n_updates": method.n_updates, "step": step, "epoch": epoch, "history": history,
                            "resumed_from_epoch": resumed_from, "last": last, "kept": kept,
                            "kept_epoch": keep_epoch if kept is not None else epoch}, Path(tmp) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(metrics)
        if cfg.fail_after_epoch == epoch and rank == world - 1:
            os._exit(1)  # fault injection (tests): this rank dies as a killed worker would
