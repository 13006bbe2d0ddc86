"""The shared counting and table machinery of every ranking method, the quality report and the pair passes.

Open a source and resolve the target (:func:`prepare`), count once over batches or Ray shards (:func:`count`),
turn the merged counts into final per-feature tables (:func:`finalize`, numeric features quantile-binned),
compute the per-feature information quantities (:func:`feature_stats`), and, for a second pass, map each row's
value to its level in a final table (:func:`iter_level_batches`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from sparsearch.errors import DataError, SpecError, closest, unknown_choice

from ._chance import ExpectedMI, asymptotic_mi, col_sums, preload, row_sums, table_mi
from ._counts import Counts, FeatureCounts, Keys, TargetSpec, count_batch, float_buckets
from ._estimators import FeatureStats, get_method
from ._io import Source, check_batch_size, open_source, validate_target
from ._lowrank import Z_MIN as LOWRANK_Z

MISSING_CHOICES = ("category", "drop")
TARGET_COL = "__sparsearch_target__"
Progress = Callable[[int, int | None], None]
PAIR_LEVELS = 16  # the smallest cap of "auto", and the fixed cap of earlier versions (16 x 16 joint values)
MAX_PAIR_LEVELS = 16_384  # codes are int16 (a dropped row's slot is one more)
PAIR_MIN_COUNT = 0.25  # "auto": a pair keeps at most n_rows / PAIR_MIN_COUNT joint values (see _pairs.pair_cap)
PAIR_MAX_CELLS = 1 << 24  # counted cells of all pairs together (x 8 bytes: 128 MiB of int64 counts)
MAX_PAIR_FEATURES = 100  # all pairs of up to this many features; above, the candidates are the most relevant


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_pair_options(interactions: int, pair_levels: int | str, max_pair_features: int,
                       pair_min_count: float = PAIR_MIN_COUNT, pair_max_cells: int = PAIR_MAX_CELLS) -> None:
    if not _is_int(interactions) or interactions < 0:
        raise SpecError(f"interactions must be a non-negative integer (pairs to report), got {interactions!r}")
    if pair_levels != "auto" and (not _is_int(pair_levels) or not 2 <= pair_levels <= MAX_PAIR_LEVELS):
        raise SpecError(f"pair_levels must be 'auto' or an integer in [2, {MAX_PAIR_LEVELS}], got {pair_levels!r}")
    if not _is_int(max_pair_features) or max_pair_features < 2:
        raise SpecError(f"max_pair_features must be an integer >= 2, got {max_pair_features!r}")
    if isinstance(pair_min_count, bool) or not isinstance(pair_min_count, (int, float, np.integer, np.floating)) \
            or not np.isfinite(pair_min_count) or pair_min_count <= 0:
        raise SpecError(f"pair_min_count must be a number > 0 (rows per joint value), got {pair_min_count!r}")
    if not _is_int(pair_max_cells) or pair_max_cells < 1024:
        raise SpecError(f"pair_max_cells must be an integer >= 1024 (counted cells of all pairs), got {pair_max_cells!r}")


@dataclass(frozen=True)
class RankOptions:
    """Every option of a ranking, validated once when built (the CLI, the selector and the search build one).

    Attributes:
        method: ranking method, one of :func:`available_methods`.
        n_bins: quantile bins of numeric features and of a continuous target (>= 2).
        missing: ``"category"`` (missing is its own value) or ``"drop"`` (rows missing the feature are ignored).
        seed: seed of the label permutation of ``adjusted-mi-permutation``.
        batch_size: rows counted at once (and per Ray shard).
        use_ray: count row shards as Ray tasks (a local Ray unless ``ray_address``).
        ray_address: Ray cluster to join; implies ``use_ray``.
        progress: called with (rows counted, total rows or None) after each batch or shard.
        pool_size: features the greedy methods (``mrmr``, ``3mr``) re-order.
        interactions: rank pairs of features and keep the best this many (0: no pair pass).
        pair_levels: codes a feature keeps in a pair (its ``pair_levels - 1`` most frequent levels, the rest
            shared), so a pair has at most ``pair_levels**2`` joint values whatever its features'
            cardinalities; ``"auto"`` (the default) grows the cap with the rows: the largest cap ``L`` with
            ``L * L <= n_rows / pair_min_count`` (at least 16, at most 16,384), lowered until every pair's table
            fits in ``pair_max_cells`` (see ``_pairs.pair_cap``).
        pair_min_count: ``"auto"`` only: rows per joint value of a pair at the least, on average (below 1: a
            table with more joint values than rows, which the exact chance correction allows).
        pair_max_cells: the memory bound of the pair pass: counted cells of all pairs together (code of a, code
            of b, class; 8 bytes each), per batch or Ray shard in flight. A fixed ``pair_levels`` over it is an
            error; ``"auto"`` lowers its cap to fit.
        max_pair_features: all pairs of up to this many features; above, pairs of the this many features with
            the highest single-feature score.
        lowrank_z: pairs of two high-cardinality features whose low-rank interaction test (``_lowrank``: a
            permutation test of the pair's residual matrix, what a user x item affinity leaves) reaches this
            ``z`` rank first, by ``z``; ``float("inf")`` ranks every pair by ``score`` and skips the test.
    """

    method: str = "adjusted-mi"
    n_bins: int = 16
    missing: str = "category"
    seed: int | None = 0
    batch_size: int = 1_000_000
    use_ray: bool = False
    ray_address: str | None = None
    progress: Progress | None = field(default=None, compare=False)
    pool_size: int = 20
    interactions: int = 0
    pair_levels: int | str = "auto"
    max_pair_features: int = MAX_PAIR_FEATURES
    pair_min_count: float = PAIR_MIN_COUNT
    pair_max_cells: int = PAIR_MAX_CELLS
    lowrank_z: float = LOWRANK_Z

    def __post_init__(self) -> None:
        if isinstance(self.lowrank_z, bool) or not isinstance(self.lowrank_z, (int, float, np.integer, np.floating)) \
                or np.isnan(self.lowrank_z) or self.lowrank_z <= 0:
            raise SpecError(f"lowrank_z must be a number > 0 (inf: no low-rank test), got {self.lowrank_z!r}")
        check_pair_options(self.interactions, self.pair_levels, self.max_pair_features, self.pair_min_count,
                           self.pair_max_cells)
        check_options(self.n_bins, self.missing)
        check_batch_size(self.batch_size)
        get_method(self.method)
        if isinstance(self.pool_size, bool) or not isinstance(self.pool_size, (int, np.integer)) or self.pool_size < 1:
            raise SpecError(f"pool_size must be a positive integer, got {self.pool_size!r}")

    @property
    def ray(self) -> bool:
        return self.use_ray or self.ray_address is not None


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


def check_options(n_bins: int, missing: str) -> None:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise SpecError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    if missing not in MISSING_CHOICES:
        raise unknown_choice("missing-value policy", missing, MISSING_CHOICES)


def quantile_levels(weights: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-frequency bins over sorted distinct values; ties stay in one bin. Returns the bin of each value."""
    total = weights.sum()
    if total == 0:
        return np.zeros(len(weights), dtype=np.int64)
    before = np.cumsum(weights) - weights
    bins = np.minimum((before * n_bins) // total, n_bins - 1).astype(np.int64)
    _, dense = np.unique(bins, return_inverse=True)
    return dense.astype(np.int64)


def target_spec(y: pl.Series, name: str, n_bins: int) -> TargetSpec:
    frame = pl.DataFrame({name: y})
    validate_target(frame, name)
    col = y.fill_nan(None) if y.dtype.is_float() else y
    col = col.drop_nulls()
    n_unique = col.n_unique()
    numeric = col.dtype.is_float() or col.dtype.is_integer()
    if numeric and ((col.dtype.is_float() and n_unique > n_bins) or (col.dtype.is_integer() and n_unique > 64)):
        vc = col.cast(pl.Float64).value_counts(sort=False).sort(col.name)
        values = vc.get_column(col.name).to_numpy()
        levels = quantile_levels(vc.get_column("count").to_numpy(), n_bins)
        starts = np.flatnonzero(np.diff(levels)) + 1
        edges = values[starts]
        shown = ", ".join(f"{e:.4g}" for e in edges)
        return TargetSpec(name, "continuous", edges, f"quantile({len(edges) + 1}) edges=[{shown}]")
    kind = "binary" if n_unique == 2 else "multiclass"
    return TargetSpec(name, kind, None, f"{kind}({n_unique} classes)")


def resolve_features(src: Source, target: str, features: Sequence[str] | None) -> list[str]:
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


def prepare(data: Any, target: Any, features, n_bins: int, feature_names) -> tuple[Source, str, list[str], TargetSpec]:
    """Open the source; accept ``target`` as a column name or (for in-memory data) an array of labels."""
    if isinstance(target, str):
        src = open_source(data, feature_names=feature_names)
        feats = resolve_features(src, target, features)
        if src.frame is not None:
            ycol = src.frame.get_column(target)
        else:
            parts = [df.get_column(target) for _, df in src.batches([target], 1 << 24)]
            ycol = pl.concat(parts) if len(parts) > 1 else parts[0]
        return src, target, feats, target_spec(ycol, target, n_bins)
    src = open_source(data, feature_names=feature_names)
    if src.frame is None:
        raise DataError("an array target needs in-memory data; for files give the target column name")
    yarr = target.to_numpy() if hasattr(target, "to_numpy") else np.asarray(target)
    if yarr.ndim != 1 or len(yarr) != src.frame.height:
        raise DataError(f"target has shape {yarr.shape} but the data has {src.frame.height} rows; give one label per row")
    try:
        y = pl.Series(TARGET_COL, yarr.tolist() if yarr.dtype == object else yarr, strict=False)
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        y = None
    if y is None or y.dtype == pl.Object or y.dtype.is_nested():
        raise DataError(f"Unknown label type: target values of type {yarr.dtype} cannot be used as classes or numbers")
    frame = src.frame.with_columns(y)
    src = open_source(frame)
    feats = resolve_features(src, TARGET_COL, features)
    return src, TARGET_COL, feats, target_spec(y, TARGET_COL, n_bins)


def prefetch(items: Iterator[Any]) -> Iterator[Any]:
    """The items of an iterator, the next one produced by a worker thread while the caller uses the current one."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsearch-read") as pool:
        sentinel = object()
        future = pool.submit(next, items, sentinel)
        while True:
            item = future.result()
            if item is sentinel:
                return
            future = pool.submit(next, items, sentinel)
            yield item
            del item


def count(src: Source, feats: list[str], tspec: TargetSpec, opts: RankOptions, *, null_kind: str | None) -> Counts:
    """Count every feature against the target in one pass: streamed batches, or Ray shards when asked."""
    if opts.ray:
        from ._distributed import count_with_ray

        return count_with_ray(
            src, feats, tspec, null_kind=null_kind, seed=opts.seed, batch_size=opts.batch_size,
            ray_address=opts.ray_address, progress=opts.progress,
        )
    preload()  # scipy.special (the chance correction) loads while the first batch is read
    parts: list[Counts] = []
    done = 0
    # parquet string columns come dictionary-encoded (Enum): counted on their codes, never decoded per row
    for offset, df in prefetch(src.batches([*feats, tspec.name], opts.batch_size, dictionary=True)):
        parts.append(count_batch(df, feats, tspec, null_kind=null_kind, seed=opts.seed, offset=offset))
        done += df.height
        del df  # not held while the next batch is read: one batch in memory at a time
        if opts.progress is not None:
            opts.progress(done, src.n_rows)
    if not parts:
        raise DataError("data has no rows")
    return Counts.merge_all(parts)  # one union of keys per feature, not one per batch


def finalize(fc: FeatureCounts, name: str, n_rows: int, n_bins: int, missing: str) -> Finalized:
    table = fc.counts
    if fc.numeric and len(fc.keys) > n_bins:
        key_level = quantile_levels(row_sums(table), n_bins)
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


def feature_stats(finals: list[Finalized], nulls: dict[str, FeatureCounts] | None, n_bins: int, missing: str, n_rows: int) -> FeatureStats:
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
            fn = finalize(nulls[f.name], f.name, n_rows, n_bins, missing)
            null_mi[i] = table_mi(fn.table)[0]  # type: ignore[index]  # a tuple for a table
    return FeatureStats([f.name for f in finals], mi, exp_, asym, null_mi, hx, hy, n, lev, cls)


def order_by_score(score: np.ndarray) -> np.ndarray:
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
        elif vals.dtype.is_float():
            arr = float_buckets(vals.to_numpy())  # the keys a float feature was counted under
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
    src: Source, finals: list[Finalized], tspec: TargetSpec, classes: Keys, batch_size: int
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
