"""Data preparation for a study: load or generate, rank features once per fingerprint (cached), encode, split.

The ranking is the prefilter: only the ``top_k`` best-ranked features reach the search. When ``top_k`` is a
searched range, the data is encoded once for its largest value and each trial keeps its own first ``k`` columns.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sparsearch.errors import DataError
from sparsearch.search.spec import StudySpec

__all__ = ["PreparedData", "prepare_data", "select_features"]

log = logging.getLogger("sparsearch")


@dataclass(frozen=True)
class PreparedData:
    """What the controller puts in the object store, plus what it logs."""

    train: Any
    val: Any
    fingerprint: str
    n_rows: int
    candidates: tuple[str, ...] = ()
    """Features after the prefilter, best first (empty for image data)."""
    ranking: Any = None
    """The full ranking (polars DataFrame) or ``None``."""
    ranking_cached: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    encoder: Any = None
    """The fitted :class:`~sparsearch.spaces.encoder.TabularEncoder` (driver only: it packages the best model)."""
    example: Any = None
    """A few raw rows of the candidate features (polars; the packaged model's input example)."""


def _ranking_cache_path(cache_dir: Path, fingerprint: str, spec: StudySpec, columns: list[str]) -> Path:
    key = json.dumps({"fp": fingerprint, "target": spec.data.target, "method": spec.data.prefilter,
                      "columns": columns}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir / f"ranking-{spec.data.prefilter}-{digest}.parquet"


def _load_frame(spec: StudySpec) -> Any:
    from sparsearch.features import DATASETS, read_table

    data = spec.data
    if data.frame is not None:
        df = _as_polars(data.frame)
    elif data.path is not None:
        df = read_table(data.path)
    else:
        params = dict(data.params)
        params.setdefault("seed", spec.study.seed)
        try:
            df = DATASETS[data.generator](**params)
        except TypeError as exc:
            raise DataError(f"[data] params for generator {data.generator!r}: {exc}") from None
    if data.sql is not None:
        import polars as pl

        try:
            df = pl.SQLContext(data=df, eager=True).execute(data.sql)
        except Exception as exc:  # polars raises SQLInterfaceError, ColumnNotFoundError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"[data] sql failed: {first[:300]}") from None
        if df.height == 0:
            raise DataError("[data] sql returned no rows")
    if data.max_rows is not None and df.height > data.max_rows:
        df = df.sample(n=data.max_rows, seed=spec.study.seed or 0, shuffle=False)
    return df


def _as_polars(frame: Any) -> Any:
    """An in-memory frame (``[data] frame``) as a polars DataFrame: a LazyFrame is collected, pandas converted."""
    import polars as pl

    if isinstance(frame, pl.LazyFrame):
        try:
            return frame.collect()
        except Exception as exc:  # polars raises ColumnNotFoundError, ComputeError, ...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"[data] frame: the LazyFrame failed to collect: {first[:300]}") from None
    if isinstance(frame, pl.DataFrame):
        return frame
    try:
        return pl.from_pandas(frame)
    except Exception as exc:  # pyarrow's ArrowInvalid/ArrowTypeError for mixed-type object columns
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"[data] frame: cannot convert the pandas DataFrame: {first[:300]}") from None


def prepare_data(spec: StudySpec, results_dir: Path) -> PreparedData:
    """Load, rank (cached per data fingerprint), prefilter, encode and split the study's data."""
    timings: dict[str, float] = {}
    seed = spec.study.seed or 0
    if spec.data.is_image:
        from sparsearch.spaces import IMAGE_DATASETS

        t0 = time.perf_counter()
        images = IMAGE_DATASETS[spec.data.generator](**spec.data.params)
        train, val = images.split(spec.train.val_fraction, seed)
        digest = hashlib.sha256(np.ascontiguousarray(images.x).tobytes()[:50_000_000]).hexdigest()[:16]
        timings["load_s"] = time.perf_counter() - t0
        return PreparedData(train=train, val=val, fingerprint=digest, n_rows=images.n_rows, timings=timings)

    from sparsearch.features import data_fingerprint, rank_features, validate_target
    from sparsearch.spaces.encoder import TabularEncoder

    t0 = time.perf_counter()
    df = _load_frame(spec)
    target = spec.data.target
    validate_target(df, target)
    timings["load_s"] = time.perf_counter() - t0
    columns = [c for c in (spec.data.features or df.columns) if c != target and c not in spec.data.exclude]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"[data] features: column {missing[0]!r} is not in the data; columns: "
                        f"{', '.join(df.columns[:20])}{' ...' if df.width > 20 else ''}")
    if not columns:
        raise DataError(f"[data]: no feature columns left besides target {target!r}")
    fingerprint = data_fingerprint(df)

    ranking = None
    cached = False
    candidates = columns
    if spec.data.prefilter != "none":
        import polars as pl

        cache = _ranking_cache_path(results_dir / "cache", fingerprint, spec, columns)
        t0 = time.perf_counter()
        if cache.exists():
            ranking = pl.read_parquet(cache)
            cached = True
        else:
            ranking = rank_features(df.select([*columns, target]), target, method=spec.data.prefilter,
                                    seed=spec.study.seed)
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            ranking.write_parquet(tmp)
            tmp.replace(cache)
        timings["rank_s"] = time.perf_counter() - t0
        candidates = ranking.sort("rank")["feature"].to_list()
    if spec.data.top_k is not None:
        candidates = candidates[: spec.data.top_k[1]]

    t0 = time.perf_counter()
    encoder = TabularEncoder.fit(df, target, features=list(candidates))  # what encode_tabular does, kept
    encoded = encoder.encode(df)
    train, val = encoded.split(spec.train.val_fraction, seed)
    timings["encode_s"] = time.perf_counter() - t0
    return PreparedData(train=train, val=val, fingerprint=fingerprint, n_rows=df.height,
                        candidates=tuple(candidates), ranking=ranking, ranking_cached=cached, timings=timings,
                        encoder=encoder, example=df.select(candidates).head(5))


def select_features(data: Any, keep: list[str] | tuple[str, ...] | None) -> Any:
    """Keep only the named features of an encoded tabular data set (``None``: keep all)."""
    if keep is None or not hasattr(data, "categorical_names"):
        return data
    keep_set = set(keep)
    cat = [i for i, n in enumerate(data.categorical_names) if n in keep_set]
    # a kept numeric feature keeps its missing-value indicator (encode_tabular's "<name>_missing" column)
    num = [i for i, n in enumerate(data.numeric_names)
           if n in keep_set or (n.endswith("_missing") and n.removesuffix("_missing") in keep_set)]
    return dataclasses.replace(
        data,
        categorical=data.categorical[:, cat],
        cardinalities=tuple(data.cardinalities[i] for i in cat),
        categorical_names=tuple(data.categorical_names[i] for i in cat),
        numeric=data.numeric[:, num],
        numeric_names=tuple(data.numeric_names[i] for i in num),
    )
