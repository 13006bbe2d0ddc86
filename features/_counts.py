"""Mergeable contingency counts: the whole cost of mutual information, summed exactly over batches and shards.

For each feature a :class:`FeatureCounts` holds the sorted distinct non-null values (``keys``), a
``[len(keys), n_classes]`` int64 table of counts against the target classes, and the counts of null feature values
per class. Two tables merge by the union of their keys (and of their target classes), so any split of the rows
(batches of a file, Ray shards) merges to exactly the unsplit table, in canonical (sorted) order. Integer, boolean
and temporal columns are counted with one ``numpy.bincount`` over ``(x - min) * n_classes + y`` when their value
range is small, with ``numpy.unique`` otherwise; strings with a polars hash group-by, and ``Enum`` columns (how
parquet string columns arrive, read dictionary-encoded) with one ``bincount`` over their codes.

Float features are not counted by exact value: each value is first rounded toward zero to 8 significant bits
(:func:`float_buckets`, the bfloat16 grid: relative spacing 2^-8, at most 65,536 keys per feature whatever the
number of distinct floats), and the final table quantile-bins those keys into ``n_bins`` (see ``_tables``).
The rounding is fixed and monotone, so it merges exactly across batches and shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from sparsearch.errors import DataError

Keys = np.ndarray | pl.Series


@dataclass
class FeatureCounts:
    """Counts of one feature against the target: ``counts[i, j]`` rows with value ``keys[i]`` and class ``j``."""

    keys: Keys
    counts: np.ndarray
    nulls: np.ndarray
    numeric: bool = False

    def remap_classes(self, col_map: np.ndarray, n_classes: int) -> FeatureCounts:
        counts = np.zeros((self.counts.shape[0], n_classes), dtype=np.int64)
        counts[:, col_map] = self.counts
        nulls = np.zeros(n_classes, dtype=np.int64)
        nulls[col_map] = self.nulls
        return FeatureCounts(self.keys, counts, nulls, self.numeric)


@dataclass
class Counts:
    """Everything one pass over (part of) the data counted; :meth:`merge` is exact, associative and commutative."""

    classes: Keys
    features: dict[str, FeatureCounts]
    n_rows: int
    n_null_target: int
    null_features: dict[str, FeatureCounts] = field(default_factory=dict)

    def merge(self, other: Counts) -> Counts:
        classes, (ma, mb) = union_keys([self.classes, other.classes])
        k = len(classes)
        feats = {}
        for name, fa in self.features.items():
            feats[name] = merge_features(fa.remap_classes(ma, k), other.features[name].remap_classes(mb, k))
        nulls = {}
        for name, fa in self.null_features.items():
            nulls[name] = merge_features(fa.remap_classes(ma, k), other.null_features[name].remap_classes(mb, k))
        return Counts(classes, feats, self.n_rows + other.n_rows, self.n_null_target + other.n_null_target, nulls)

    @staticmethod
    def merge_all(parts: list[Counts]) -> Counts:
        """The merge of several counts at once: one union of keys per feature instead of one per pair of parts."""
        if len(parts) == 1:
            return parts[0]
        classes, maps = union_keys([p.classes for p in parts])
        k = len(classes)

        def merged(name: str, attr: str) -> FeatureCounts:
            return merge_features_all([getattr(p, attr)[name].remap_classes(m, k) for p, m in zip(parts, maps)])

        return Counts(classes, {name: merged(name, "features") for name in parts[0].features},
                      sum(p.n_rows for p in parts), sum(p.n_null_target for p in parts),
                      {name: merged(name, "null_features") for name in parts[0].null_features})


def union_keys(key_sets: list[Keys]) -> tuple[Keys, list[np.ndarray]]:
    """Sorted union of several sorted-unique key sets and, for each, the positions of its keys in the union."""
    sizes = [len(k) for k in key_sets]
    if all(isinstance(k, np.ndarray) for k in key_sets):
        allk = np.concatenate(key_sets)
        span = int(allk.max()) - int(allk.min()) + 1 if len(allk) and allk.dtype.kind in "iu" else 0
        if 0 < span <= 4 * len(allk):  # integer keys in a narrow range: mark them instead of sorting
            off = allk.astype(np.int64) - np.int64(allk.min())
            mark = np.zeros(span, dtype=bool)
            mark[off] = True
            union = (np.flatnonzero(mark) + np.int64(allk.min())).astype(allk.dtype)
            inv = (np.cumsum(mark) - 1)[off]
        else:
            union, inv = np.unique(allk, return_inverse=True)
    else:
        series = [k if isinstance(k, pl.Series) else pl.Series(k) for k in key_sets]
        try:
            allk = pl.concat([s.rename("k") for s in series])
        except (pl.exceptions.SchemaError, pl.exceptions.InvalidOperationError):
            allk = pl.concat([s.rename("k").cast(pl.String) for s in series])
        inv = allk.rank("dense").to_numpy().astype(np.int64) - 1
        union = allk.unique().sort()
    out, start = [], 0
    for s in sizes:
        out.append(inv[start : start + s])
        start += s
    return union, out


def merge_features(a: FeatureCounts, b: FeatureCounts) -> FeatureCounts:
    return merge_features_all([a, b])


def merge_features_all(parts: list[FeatureCounts]) -> FeatureCounts:
    """Sum of several tables of one feature (same classes) over the union of their keys."""
    keys, idx = union_keys([p.keys for p in parts])
    counts = np.zeros((len(keys), parts[0].counts.shape[1]), dtype=np.int64)
    for p, ix in zip(parts, idx):
        counts[ix] += p.counts  # keys of one part are distinct: no repeated index within one add
    return FeatureCounts(keys, counts, sum(p.nulls for p in parts[1:]) + parts[0].nulls,
                         any(p.numeric for p in parts))


FLOAT_BITS = 8  # significant bits a float feature keeps when counted (sign + exponent + 7 stored mantissa bits)


def float_buckets(x: np.ndarray) -> np.ndarray:
    """Round floats toward zero to 8 significant bits: the key a float feature is counted under.

    Values beyond the float32 range become +-inf (their own keys). Monotone (a <= b gives key(a) <= key(b)), so
    quantile bins over the keys are quantile bins over the values up to a relative 0.4%.

    Example:
        >>> float_buckets(np.array([1.0, 1.001, 1.01, -3.3])).tolist()
        [1.0, 1.0, 1.0078125, -3.296875]
    """
    with np.errstate(over="ignore"):
        f = np.asarray(x, dtype=np.float64).astype(np.float32)
    mask = np.uint32((0xFFFFFFFF << (32 - 1 - 8 - (FLOAT_BITS - 1))) & 0xFFFFFFFF)
    return (f.view(np.uint32) & mask).view(np.float32).astype(np.float64)


def _is_intlike(dtype: pl.DataType) -> bool:
    return dtype.is_integer() or dtype == pl.Boolean or dtype.is_temporal()


def count_enum(s: pl.Series, y: np.ndarray, n_classes: int) -> FeatureCounts:
    """Count an ``Enum`` column on its codes: one ``bincount`` (nulls as one extra code), keys the present categories.

    The result is exactly what counting the decoded strings gives (same sorted keys, same table).
    """
    cats = s.dtype.categories  # type: ignore[attr-defined]  # an Enum column (the caller checks)
    n_cat = len(cats)
    codes = s.to_physical().cast(pl.Int64)
    x = codes.fill_null(n_cat).to_numpy() if codes.null_count() else codes.to_numpy()
    if (n_cat + 1) * n_classes <= max(4 * len(x), 1 << 16):
        table = np.bincount(x * n_classes + y, minlength=(n_cat + 1) * n_classes).reshape(n_cat + 1, n_classes)
        nulls = table[n_cat].astype(np.int64)
        table = table[:n_cat]
        present = np.flatnonzero(table.any(axis=1))
        table = table[present]
    else:  # many more categories than rows: count the codes present only
        present, inv = np.unique(x, return_inverse=True)
        table = np.bincount(inv * n_classes + y, minlength=len(present) * n_classes).reshape(len(present), n_classes)
        if len(present) and present[-1] == n_cat:
            nulls, table, present = table[-1].astype(np.int64), table[:-1], present[:-1]
        else:
            nulls = np.zeros(n_classes, dtype=np.int64)
    keys = cats.gather(present).rename("k")
    if not keys.is_sorted():  # categories of a user's Enum need not be in sorted order
        order = keys.arg_sort().to_numpy()
        keys, table = keys.gather(order), table[order]
    return FeatureCounts(keys, table.astype(np.int64), nulls, False)


def count_ints(s: pl.Series, y: np.ndarray, n_classes: int) -> FeatureCounts:
    """Count an integer, boolean or temporal column (on its physical integers).

    Missing values are filled with the smallest value and their per-class counts taken back from that value's
    row afterwards (the smallest value is present, so its row stays), so the column is copied once, not filtered.
    """
    if s.dtype == pl.Boolean:
        s = s.cast(pl.Int8)
    elif s.dtype.is_temporal():
        s = s.to_physical()
    nulls = np.zeros(n_classes, dtype=np.int64)
    n_null = s.null_count()
    if n_null == s.len():
        return FeatureCounts(np.zeros(0, dtype=np.int64), np.zeros((0, n_classes), dtype=np.int64),
                             np.bincount(y, minlength=n_classes).astype(np.int64), False)
    if n_null:
        nulls = np.bincount(y[s.is_null().to_numpy()], minlength=n_classes).astype(np.int64)
        s = s.fill_null(s.min())
    x = s.to_numpy()
    lo, hi = int(x.min()), int(x.max())
    span = hi - lo + 1
    if span * n_classes <= max(4 * len(x), 1 << 16):
        idx = x.astype(np.int64)  # a fresh copy: the index is built in place
        if lo:
            idx -= lo
        idx *= n_classes
        idx += y
        table = np.bincount(idx, minlength=span * n_classes).reshape(span, n_classes)
        table[0] -= nulls
        present = table.any(axis=1)
        keys = (np.flatnonzero(present) + lo).astype(np.int64)
        return FeatureCounts(keys, table[present].astype(np.int64), nulls, False)
    if span < 1 << 32:  # numpy's unique is several times faster on 4-byte keys
        offs, inv = np.unique((x.astype(np.int64) - lo).astype(np.uint32), return_inverse=True)
        keys = offs.astype(np.int64) + lo
    else:
        keys, inv = np.unique(x.astype(np.int64), return_inverse=True)
    table = np.bincount(inv * n_classes + y, minlength=len(keys) * n_classes).reshape(len(keys), n_classes)
    table[0] -= nulls
    return FeatureCounts(keys, table.astype(np.int64), nulls, False)


def count_feature(s: pl.Series, y: np.ndarray, n_classes: int) -> FeatureCounts:
    """Count one feature column against integer target codes ``y`` in ``[0, n_classes)``."""
    dtype = s.dtype
    if isinstance(dtype, pl.Enum):
        return count_enum(s, y, n_classes)
    if _is_intlike(dtype):
        return count_ints(s, y, n_classes)
    if dtype.is_float():
        s = s.fill_nan(None)
    if s.null_count():
        valid = s.is_not_null().to_numpy()
        nulls = np.bincount(y[~valid], minlength=n_classes).astype(np.int64)
        s = s.filter(pl.Series(valid))
        y = y[valid]
    else:
        nulls = np.zeros(n_classes, dtype=np.int64)
    if s.len() == 0:
        keys: Keys = np.zeros(0, dtype=np.int64) if dtype.is_float() else pl.Series("k", [], dtype=pl.String)
        return FeatureCounts(keys, np.zeros((0, n_classes), dtype=np.int64), nulls, dtype.is_float())
    if dtype.is_float():
        keys, inv = np.unique(float_buckets(s.to_numpy()), return_inverse=True)
        table = np.bincount(inv * n_classes + y, minlength=len(keys) * n_classes).reshape(len(keys), n_classes)
        return FeatureCounts(keys, table.astype(np.int64), nulls, True)
    if dtype in (pl.Categorical, pl.Enum) or isinstance(dtype, (pl.Categorical, pl.Enum)):
        s = s.cast(pl.String)
    elif dtype != pl.String:
        if dtype.is_nested() or dtype == pl.Object:
            raise DataError(f"feature {s.name!r} has unsupported type {dtype}; allowed: numbers, booleans, strings, dates")
        s = s.cast(pl.String)
    grouped = pl.DataFrame({"k": s, "y": y}).group_by(["k", "y"]).len()
    rank = grouped.get_column("k").rank("dense").to_numpy().astype(np.int64) - 1
    keys = grouped.get_column("k").unique().sort()
    table = np.zeros((len(keys), n_classes), dtype=np.int64)
    table[rank, grouped.get_column("y").to_numpy()] = grouped.get_column("len").to_numpy()
    return FeatureCounts(keys, table, nulls, False)


def target_codes(y: pl.Series) -> tuple[Keys, np.ndarray]:
    """Sorted distinct target values (no nulls) and the code of each row."""
    if _is_intlike(y.dtype) or y.dtype.is_float():
        arr = y.cast(pl.Int8).to_numpy() if y.dtype == pl.Boolean else y.to_physical().to_numpy()
        keys, inv = np.unique(arr, return_inverse=True)
        return keys, inv.astype(np.int64)
    s = y.cast(pl.String)
    return s.unique().sort(), s.rank("dense").to_numpy().astype(np.int64) - 1


@dataclass(frozen=True)
class TargetSpec:
    """How the target becomes classes: ``edges`` (bin starts after the first) for a binned continuous target."""

    name: str
    kind: str  # "binary", "multiclass" or "continuous"
    edges: np.ndarray | None = None
    description: str = ""


def count_batch(
    df: pl.DataFrame,
    features: list[str],
    target: TargetSpec,
    *,
    null_kind: str | None = None,
    seed: int | None = 0,
    offset: int = 0,
) -> Counts:
    """Count one batch. ``null_kind`` ('permutation' or 'shift') also counts against a label-shuffled copy."""
    y = df.get_column(target.name)
    if y.dtype.is_float():
        y = y.fill_nan(None)
    n_null = y.null_count()
    if n_null:
        keep = y.is_not_null()
        df = df.filter(keep)
        y = y.filter(keep)
    if target.edges is not None:
        y = pl.Series(target.name, np.searchsorted(target.edges, y.cast(pl.Float64).to_numpy(), side="right"))
    classes, codes = target_codes(y)
    k = len(classes)
    feats = {name: count_feature(df.get_column(name), codes, k) for name in features}
    nulls: dict[str, FeatureCounts] = {}
    if null_kind is not None:
        if null_kind == "permutation":
            rng = np.random.default_rng(None if seed is None else [seed, offset])
            shuffled = rng.permutation(codes)
        else:  # shift: each row gets the previous row's label (OutRank's label-shift baseline)
            shuffled = np.roll(codes, 1)
        nulls = {name: count_feature(df.get_column(name), shuffled, k) for name in features}
    return Counts(classes, feats, df.height, n_null, nulls)
