"""``rank_features``: count once (streaming or on Ray), finalise the tables, score, and build the ranking table."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from sparsearch.errors import DataError, SpecError, closest, unknown_choice

from ._chance import ExpectedMI, asymptotic_mi, col_sums, row_sums, table_mi
from ._counts import Counts, FeatureCounts, Keys, TargetSpec, count_batch
from ._estimators import FeatureStats, get_method
from ._io import _check_batch_size, _open_source, _Source, validate_target

MISSING_CHOICES = ("category", "drop")
_TARGET_COL = "__sparsearch_target__"
Progress = Callable[[int, int | None], None]


@dataclass
class Finalized:
    """One feature's final table (levels x classes) and how raw keys map to levels."""

    name: str
    table: np.ndarray
    keys: Keys
    key_level: np.ndarray  # level of each key (bins for numeric features)
    null_level: int  # level of missing values, -1 when they are dropped
    numeric: bool
    cardinality: int
    missing_rate: float
    binning: str


def _check_options(n_bins: int, missing: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise SpecError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if missing not in MISSING_CHOICES:
        raise unknown_choice("missing-value policy", missing, MISSING_CHOICES)


def _quantile_levels(weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-frequency bins over sorted distinct values; ties stay in one bin. Returns the bin of each value."""
    total = weights.sum()
    if total == 0:
        return np.zeros(len(weights), dtype=np.int64)
    before = np.cumsum(weights) - weights
    bins = np.minimum((before * n_bins) // total, n_bins - 1).astype(np.int64)
    _, dense = np.unique(bins, return_inverse=True)
    return dense.astype(np.int64)


def _target_spec(y: pl.Series, name: str, n_bins: int) -> TargetSpec:
    frame = pl.DataFrame({name: y})
    validate_target(frame, name)
    col = y.fill_nan(None) if y.dtype.is_float() else y
    col = col.drop_nulls()
    n_unique = col.n_unique()
    numeric = col.dtype.is_float() or col.dtype.is_integer()
    if numeric and ((col.dtype.is_float() and n_unique > n_bins) or (col.dtype.is_integer() and n_unique > 64)):
        vc = col.cast(pl.Float64).value_counts(sort=False).sort(col.name)
        values = vc.get_column(col.name).to_numpy()
        levels = _quantile_levels(vc.get_column("count").to_numpy(), n_bins)
        starts = np.flatnonzero(np.diff(levels)) + 1
        edges = values[starts]
        shown = ", ".join(f"{e:.4g}" for e in edges)
        return TargetSpec(name, "continuous", edges, f"quantile({len(edges) + 1}) edges=[{shown}]")
    kind = "binary" if n_unique == 2 else "multiclass"
    return TargetSpec(name, kind, None, f"{kind}({n_unique} classes)")


def _resolve_features(src: _Source, target: str, features: Sequence[str] | None) -> list[str]:
    if target not in src.columns:
        hint = closest(target, src.columns)
        did = f" (did you mean {hint!r}?)" if hint else ""
        raise DataError(f"target column {target!r} not found{did}; the data has columns {src.columns[:8]}")
    if features is None:
        feats = [c for c in src.columns if c != target]
    else:
        if isinstance(features, str):
            raise SpecError(f"features must be a list of column names, got the string {features!r}")
        feats = list(features)
        for f in feats:
            if f not in src.columns:
                hint = closest(f, src.columns)
                did = f" (did you mean {hint!r}?)" if hint else ""
                raise DataError(f"feature column {f!r} not found{did}; the data has {len(src.columns)} columns")
            if f == target:
                raise DataError(f"feature {f!r} is the target column; remove it from features")
        if len(set(feats)) != len(feats):
            raise DataError("features lists a column more than once")
    if not feats:
        raise DataError("no feature columns to rank: the data holds only the target column")
    return feats


def _prepare(data: Any, target: Any, features, n_bins: int, feature_names) -> tuple[_Source, str, list[str], TargetSpec]:
    """Open the source; accept ``target`` as a column name or (for in-memory data) an array of labels."""
    if isinstance(target, str):
        src = _open_source(data, feature_names=feature_names)
        feats = _resolve_features(src, target, features)
        if src.frame is not None:
            ycol = src.frame.get_column(target)
        else:
            parts = [df.get_column(target) for _, df in src.batches([target], 1 << 24)]
            ycol = pl.concat(parts) if len(parts) > 1 else parts[0]
        return src, target, feats, _target_spec(ycol, target, n_bins)
    src = _open_source(data, feature_names=feature_names)
    if src.frame is None:
        raise DataError("an array target needs in-memory data; for files give the target column name")
    yarr = target.to_numpy() if hasattr(target, "to_numpy") else np.asarray(target)
    if yarr.ndim != 1 or len(yarr) != src.frame.height:
        raise DataError(f"target has shape {yarr.shape} but the data has {src.frame.height} rows; give one label per row")
    try:
        y = pl.Series(_TARGET_COL, yarr.tolist() if yarr.dtype == object else yarr, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        y = None
    if y is None or y.dtype == pl.Object or y.dtype.is_nested():
        raise DataError(f"Unknown label type: target values of type {yarr.dtype} cannot be used as classes or numbers")
    frame = src.frame.with_columns(y)
    src = _open_source(frame)
    feats = _resolve_features(src, _TARGET_COL, features)
    return src, _TARGET_COL, feats, _target_spec(y, _TARGET_COL, n_bins)


def _count(
    src: _Source,
    feats: list[str],
    tspec: TargetSpec,
    *,
    null_kind: str | None,
    seed: int | None,
    batch_size: int,
    use_ray: bool,
    ray_address: str | None,
    progress: Progress | None,
) -> Counts:
    if use_ray or ray_address is not None:
        from ._distributed import count_with_ray

        return count_with_ray(
            src, feats, tspec, null_kind=null_kind, seed=seed, batch_size=batch_size, ray_address=ray_address, progress=progress
        )
    acc: Counts | None = None
    done = 0
    for offset, df in src.batches([*feats, tspec.name], batch_size):
        part = count_batch(df, feats, tspec, null_kind=null_kind, seed=seed, offset=offset)
        acc = part if acc is None else acc.merge(part)
        done += df.height
        if progress is not None:
            progress(done, src.n_rows)
    if acc is None:
        raise DataError("data has no rows")
    return acc


def _finalize(fc: FeatureCounts, name: str, n_rows: int, n_bins: int, missing: str) -> Finalized:
    table = fc.counts
    if fc.numeric and len(fc.keys) > n_bins:
        key_level = _quantile_levels(row_sums(table), n_bins)
        n_levels = int(key_level.max()) + 1 if len(key_level) else 0
        binned = np.zeros((n_levels, table.shape[1]), dtype=np.int64)
        np.add.at(binned, key_level, table)
        table = binned
        binning = f"quantile({n_levels})"
    else:
        key_level = np.arange(len(fc.keys), dtype=np.int64)
        binning = "numeric-distinct" if fc.numeric else "categorical"
    null_level = -1
    n_null = int(fc.nulls.sum())
    if missing == "category" and n_null > 0:
        null_level = table.shape[0]
        table = np.vstack([table, fc.nulls[None, :]])
    return Finalized(
        name=name,
        table=table,
        keys=fc.keys,
        key_level=key_level,
        null_level=null_level,
        numeric=fc.numeric,
        cardinality=len(fc.keys),
        missing_rate=n_null / n_rows if n_rows else 0.0,
        binning=binning,
    )


def _stats(finals: list[Finalized], nulls: dict[str, FeatureCounts] | None, n_bins: int, missing: str, n_rows: int) -> FeatureStats:
    m = len(finals)
    mi, exp_, asym, hx, hy, n, lev, cls = (np.zeros(m) for _ in range(8))
    null_mi = np.zeros(m) if nulls else None
    emis: dict[tuple[int, ...], ExpectedMI] = {}
    for i, f in enumerate(finals):
        t = f.table
        mi[i], hx[i], hy[i], n[i] = table_mi(t)
        rows = row_sums(t)
        colsum = col_sums(t)
        lev[i] = int(np.count_nonzero(rows))
        cls[i] = int(np.count_nonzero(colsum))
        key = tuple(colsum.tolist())
        if key not in emis:
            emis[key] = ExpectedMI(colsum)
        exp_[i] = emis[key](rows)
        asym[i] = asymptotic_mi(int(lev[i]), int(cls[i]), int(n[i]))
        if nulls:
            fn = _finalize(nulls[f.name], f.name, n_rows, n_bins, missing)
            null_mi[i] = table_mi(fn.table)[0]  # type: ignore[index]
    return FeatureStats([f.name for f in finals], mi, exp_, asym, null_mi, hx, hy, n, lev, cls)


def _order(score: np.ndarray) -> np.ndarray:
    """Indices by descending score; ties (equal to 10 significant digits) keep the input column order."""
    return np.argsort(-tie_key(score), kind="stable")


def tie_key(score: np.ndarray) -> np.ndarray:
    """Scores rounded relative to the largest, so float noise from summation order never breaks a tie."""
    s = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf, posinf=np.finfo(np.float64).max)
    finite = np.isfinite(s)
    scale = float(np.max(np.abs(s[finite]))) if finite.any() else 0.0
    if scale == 0.0:
        return s
    out = s.copy()
    out[finite] = np.round(s[finite] / scale, 10)
    return out


def _rank_counts(
    src: _Source,
    feats: list[str],
    tspec: TargetSpec,
    *,
    method: str,
    n_bins: int,
    missing: str,
    seed: int | None,
    batch_size: int,
    use_ray: bool,
    ray_address: str | None,
    progress: Progress | None,
    pool_size: int,
) -> tuple[pl.DataFrame, list[Finalized], Counts]:
    ranker = get_method(method)
    counts = _count(
        src, feats, tspec, null_kind=ranker.null_kind, seed=seed, batch_size=batch_size,
        use_ray=use_ray, ray_address=ray_address, progress=progress,
    )
    finals = [_finalize(counts.features[f], f, counts.n_rows, n_bins, missing) for f in feats]
    st = _stats(finals, counts.null_features or None, n_bins, missing, counts.n_rows)
    score, chance = ranker.score(st)
    order = _order(score)
    if ranker.greedy:
        from ._greedy import greedy_order

        order, score = greedy_order(
            src, finals, counts, tspec, st, relevance=score, relational=getattr(ranker, "relational", False),
            pool_size=pool_size, batch_size=batch_size, redundancy_mean=not getattr(ranker, "relational", False),
        )
    names = [st.names[i] for i in order]
    out = pl.DataFrame(
        {
            "feature": names,
            "score": score[order].astype(np.float64),
            "rank": np.arange(1, len(order) + 1, dtype=np.int64),
            "cardinality": np.array([finals[i].cardinality for i in order], dtype=np.int64),
            "missing_rate": np.array([finals[i].missing_rate for i in order], dtype=np.float64),
            "mi": st.mi[order],
            "chance_mi": chance[order],
            "adjusted_mi": (st.mi - st.expected)[order],
            "entropy": st.hx[order],
            "levels": st.levels[order].astype(np.int64),
            "kind": ["numeric" if finals[i].numeric else "categorical" for i in order],
            "binning": [finals[i].binning for i in order],
            "n_rows": st.n[order].astype(np.int64),
            "target_entropy": st.hy[order],
            "method": [method] * len(order),
            "target_binning": [tspec.description] * len(order),
        }
    )
    return out, finals, counts


def rank_features(
    data: Any,
    target: str,
    method: str = "adjusted-mi",
    *,
    features: list[str] | None = None,
    n_bins: int = 16,
    missing: str = "category",
    seed: int | None = 0,
    batch_size: int = 1_000_000,
    ray_address: str | None = None,
    use_ray: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    feature_names: Sequence[str] | None = None,
    pool_size: int = 20,
) -> pl.DataFrame:
    """Rank features by (chance-corrected) mutual information with ``target``, using every row.

    Counts are merged exactly over batches (files are read lazily) or Ray shards, so the scores do not depend on
    how rows are split. The default ``adjusted-mi`` subtracts the exact expected MI under independence for each
    feature's own value distribution and the target's, so ID-like noise does not rise to the top.

    Args:
        data: polars/pandas DataFrame, 2-D numpy array (columns ``x0..``), scipy sparse matrix (with
            ``feature_names``), or a path, directory or glob of parquet/CSV/TSV files.
        target: target column name (binary, multi-class, or continuous: quantile-binned into ``n_bins``). For
            in-memory data an array of labels is accepted too.
        method: one of :func:`available_methods`.
        features: columns to rank (default: every column but the target).
        n_bins: quantile bins for float features and a continuous target.
        missing: ``"category"`` (missing is its own value) or ``"drop"`` (rows missing the feature are ignored).
        seed: seed of the label permutation used by ``adjusted-mi-permutation``.
        batch_size: rows per counted batch.
        ray_address, use_ray: count row shards as Ray tasks (``ray_address`` implies ``use_ray``).
        progress: called as ``progress(rows_done, rows_total_or_None)`` after each batch.
        feature_names: column names for numpy and scipy input.
        pool_size: how many of the most relevant features the greedy methods (``mrmr``, ``3mr``) re-order.

    Returns:
        polars DataFrame sorted by ``rank`` (1 = best): ``feature, score, rank, cardinality, missing_rate, mi,
        chance_mi, adjusted_mi, entropy, levels, kind, binning, n_rows, target_entropy, method, target_binning``.
        ``mi`` is plug-in MI in nats and ``chance_mi`` the baseline the method subtracts (the exact expected MI
        for methods that subtract none). For ``mrmr`` and ``3mr`` the rank is the greedy selection order and
        ``score`` the feature's greedy value when it was selected (features outside the pool follow by
        adjusted MI), so scores need not decrease with rank.

    Example:
        >>> import polars as pl
        >>> df = pl.DataFrame({"a": [0, 1] * 50, "b": [0] * 100, "y": [0, 1] * 50})
        >>> rank_features(df, "y")["feature"].to_list()
        ['a', 'b']
    """
    _check_options(n_bins, missing)
    _check_batch_size(batch_size)
    get_method(method)
    if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 1:
        raise SpecError(f"pool_size must be a positive integer, got {pool_size!r}")
    src, tname, feats, tspec = _prepare(data, target, features, n_bins, feature_names)
    out, _, _ = _rank_counts(
        src, feats, tspec, method=method, n_bins=n_bins, missing=missing, seed=seed, batch_size=batch_size,
        use_ray=use_ray, ray_address=ray_address, progress=progress, pool_size=pool_size,
    )
    return out


def lookup_levels(s: pl.Series, fin: Finalized) -> np.ndarray:
    """Level of each row's value in a finalised table (-1 for a dropped missing value)."""
    if s.dtype.is_float():
        s = s.fill_nan(None)
    valid = s.is_not_null().to_numpy()
    out = np.full(s.len(), fin.null_level, dtype=np.int64)
    if not valid.any():
        return out
    vals = s.filter(pl.Series(valid))
    if isinstance(fin.keys, np.ndarray):
        if vals.dtype == pl.Boolean:
            arr = vals.cast(pl.Int8).to_numpy()
        elif vals.dtype.is_temporal():
            arr = vals.to_physical().to_numpy()
        else:
            arr = vals.to_numpy()
        pos = np.searchsorted(fin.keys, arr)
    else:
        key_df = pl.DataFrame({"k": fin.keys}).with_row_index("pos")
        joined = pl.DataFrame({"k": vals.cast(fin.keys.dtype)}).join(key_df, on="k", how="left", maintain_order="left")
        pos = joined.get_column("pos").to_numpy().astype(np.int64)
    out[valid] = fin.key_level[pos]
    return out


def class_codes(y: pl.Series, tspec: TargetSpec, classes: Keys) -> np.ndarray:
    """Global class code of each non-null target value."""
    if tspec.edges is not None:
        y = pl.Series(np.searchsorted(tspec.edges, y.cast(pl.Float64).to_numpy(), side="right"))
    if isinstance(classes, np.ndarray):
        arr = y.cast(pl.Int8).to_numpy() if y.dtype == pl.Boolean else y.to_physical().to_numpy()
        return np.searchsorted(classes, arr).astype(np.int64)
    key_df = pl.DataFrame({"k": classes}).with_row_index("pos")
    joined = pl.DataFrame({"k": y.cast(pl.String)}).join(key_df, on="k", how="left", maintain_order="left")
    return joined.get_column("pos").to_numpy().astype(np.int64)


def iter_level_batches(
    src: _Source, finals: list[Finalized], tspec: TargetSpec, classes: Keys, batch_size: int
) -> Iterator[tuple[list[np.ndarray], np.ndarray]]:
    """Second pass: per batch, the level codes of the given features and the class codes (null targets dropped)."""
    cols = [f.name for f in finals]
    for _, df in src.batches([*cols, tspec.name], batch_size):
        y = df.get_column(tspec.name)
        if y.dtype.is_float():
            y = y.fill_nan(None)
        if y.null_count():
            keep = y.is_not_null()
            df, y = df.filter(keep), y.filter(keep)
        yield [lookup_levels(df.get_column(f.name), f) for f in finals], class_codes(y, tspec, classes)
