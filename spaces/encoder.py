"""The encoding of a raw table into :class:`TabularData`, as an object that can encode new rows the same way.

:func:`~sparsearch.spaces.encode_tabular` is ``TabularEncoder.fit(df, target).encode(df)``. A fitted encoder keeps
what the encoding learnt from the rows it saw (each categorical column's vocabulary or hash buckets, each numeric
column's median and whether it had a missing-value indicator, the class labels), so :meth:`TabularEncoder.transform`
turns rows it never saw (a raw pandas or polars frame) into the exact inputs the model was trained on: an unseen
category gets the out-of-vocabulary code, a missing one the missing code, a missing number the training median.
A study fits it on its training rows only (``fit(..., rows=train)``): validation and test rows are encoded as the
packaged model encodes new rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, overload

import numpy as np

from sparsearch._frames import is_pandas_frame, to_polars
from sparsearch.errors import DataError

from ._registry import Registry
from .data import TabularData

__all__ = ["CODE_DTYPE", "CROSS_MIN_COUNT", "HASH_FUNCTIONS", "MISSING_CODE", "OOV_CODE", "SMALL_BATCH_ROWS",
           "STABLE_HASH", "ColumnEncoding", "Cross", "TabularEncoder", "encode_tabular", "fnv1a64"]

#: Code of a missing value in every categorical column.
MISSING_CODE = 0
#: Code reserved for values outside the vocabulary seen at encoding time.
OOV_CODE = 1
_FIRST_CODE = 2
#: dtype of the categorical codes the encoder writes: int32 halves the memory of int64 (2M rows x 300 columns:
#: 2.4 GB, not 4.8) and every embedding table is far smaller than 2**31 rows; int64 codes are accepted as well.
CODE_DTYPE = np.int32
SMALL_BATCH_ROWS = 2048
"""Rows up to which :meth:`TabularEncoder.transform` takes its small-batch path (a packaged model serving a few
rows): vocabulary codes from a Python dict built once per column, crossed values joined in Python, a pandas
frame's numpy columns handed to polars one by one. Each polars operation on a Series costs ~30-60 us whatever its
length (it runs as a one-column query) and ``replace_strict`` rebuilds its table on every call (0.4 ms for 5,000
values), so at batch 1 the vectorised path spent ~10 ms on ~100 such fixed costs; above this many rows it is the
faster one. Both paths give identical arrays (``tests/spaces/test_encoder_fast.py``)."""


@dataclass(frozen=True, eq=False)
class ColumnEncoding:
    """How one raw column becomes model inputs.

    Attributes:
        name: the raw column.
        kind: ``"categorical"`` (integer codes) or ``"numeric"`` (float32).
        raw_dtype: the column's polars dtype in the fitted data (new values are cast to it first).
        vocabulary: categorical: the known values in code order (code ``2 + i``), ``None`` when hashed.
        n_buckets: categorical: hash buckets of a high-cardinality column (codes ``2 .. 1 + n_buckets``).
        fill: numeric (or ordered): the value that replaces NaN, infinities and missing values (the fitted median).
        indicator: numeric (or ordered): a ``<name>_missing`` 0/1 input follows the column.
        ordered: categorical integer column that is also an ordered numeric input named like the column (its value,
            filled and flagged like a numeric column), so the network sees both its codes and its order.
        hash: categorical, hashed: the function that maps a value to its bucket (:data:`HASH_FUNCTIONS`);
            :data:`STABLE_HASH` unless given. An encoder pickled before this field existed (a model packaged
            then) unpickles with ``"polars"``, the hash it was trained with.
    """

    name: str
    kind: str
    raw_dtype: Any
    vocabulary: Any = None
    n_buckets: int | None = None
    fill: float = 0.0
    indicator: bool = False
    ordered: bool = False
    hash: str | None = None

    def __post_init__(self) -> None:
        if self.n_buckets is None:
            if self.hash is not None:
                raise ValueError(f"column {self.name!r}: hash={self.hash!r} needs n_buckets (a hashed column)")
            return
        object.__setattr__(self, "hash", HASH_FUNCTIONS.check(self.hash or STABLE_HASH))

    def __getstate__(self) -> dict[str, Any]:
        # the lookup cache is rebuilt on first use: never pickled, so packages stay as they were
        return {k: v for k, v in self.__dict__.items() if k != "_code_lookup"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a ColumnEncoding pickled before ``hash`` existed was hashed with polars' Series.hash: keep it
        if "hash" not in state:
            state = {**state, "hash": _LEGACY_HASH if state.get("n_buckets") is not None else None}
        self.__dict__.update(state)

    def code_lookup(self) -> dict[Any, int]:
        """Vocabulary column: ``{value: code}`` with ``None`` (missing) mapped to the missing code, built on first
        use and cached on the column (not pickled). Its keys are the vocabulary's Python values, the ones
        ``Series.to_list`` gives for a value of the same dtype, so a dict lookup equals polars' equality."""
        lookup = self.__dict__.get("_code_lookup")
        if lookup is None:
            values = self.vocabulary.to_list() if hasattr(self.vocabulary, "to_list") else list(self.vocabulary)
            lookup = {v: code for code, v in enumerate(values, _FIRST_CODE)}
            lookup[None] = MISSING_CODE
            object.__setattr__(self, "_code_lookup", lookup)
        return lookup

    @property
    def cardinality(self) -> int:
        if self.n_buckets is not None:
            return self.n_buckets + _FIRST_CODE
        return len(self.vocabulary) + _FIRST_CODE


CROSS_SEPARATOR = "\x1f"
"""Between the two parts of a crossed value (``search.data.add_crosses``)."""
CROSS_BINS = 16
"""Equal-frequency bins of a float part of a cross."""
CROSS_MIN_COUNT = 10
"""A crossed value seen fewer times among the fitted rows is out of vocabulary (``TabularEncoder.fit``'s
``min_count``): a cross of two 1,000-level IDs has up to a million values, most seen once, and an embedding row
per value seen once would memorise its label. The rare values share the out-of-vocabulary code, which is
therefore trained (on them) and is what unseen values of new rows get."""


@dataclass(frozen=True, eq=False)
class Cross:
    """The recipe of a crossed feature: the two raw columns' values joined (a float part by its equal-frequency
    bin on the fitted rows), so that new rows get the cross the model was trained on.

    A float part's bin is ``(rank_min * 16) // (n + 1)`` over the ``n`` fitted non-missing values; ``edges`` keeps
    the 15 values where it steps, so a new value gets the bin it would have had among the fitted rows (beyond
    the fitted range: the first or last bin).

    Attributes:
        name: the crossed column.
        parts: the two raw columns.
        dtypes: their fitted polars dtypes.
        edges: per part, the float bin edges, or ``None`` for a part used as text.
    """

    name: str
    parts: tuple[str, str]
    dtypes: tuple[Any, Any]
    edges: tuple[Any, Any]

    @classmethod
    def fit(cls, df: Any, name: str, a: str, b: str, *, rows: np.ndarray | None = None) -> Cross:
        """The recipe of ``a`` x ``b``, its float bins from ``rows`` of ``df`` only (``None``: every row)."""
        def part(c: str) -> Any:
            return df[c] if rows is None else df[c].gather(rows)

        return cls(name, (a, b), (df[a].dtype, df[b].dtype), (_bin_edges(part(a)), _bin_edges(part(b))))

    def compute(self, df: Any) -> Any:
        """The crossed column of ``df`` (a polars frame holding both parts); missing when either part is."""
        import polars as pl

        if df.height <= SMALL_BATCH_ROWS:
            return self._compute_small(df)
        texts = []
        for part, dtype, edges in zip(self.parts, self.dtypes, self.edges, strict=True):
            s = _cast(df[part], dtype)
            if edges is None:
                texts.append(s.cast(pl.String))
                continue
            v = s.cast(pl.Float64).fill_nan(None)
            bins = np.searchsorted(edges, v.fill_null(0.0).to_numpy(), side="left")
            texts.append(pl.Series(part, bins, dtype=pl.Int64).set(v.is_null(), None).cast(pl.String))
        return pl.DataFrame(texts).select(pl.concat_str(pl.all(), separator=CROSS_SEPARATOR)).to_series()\
            .rename(self.name)

    def _compute_small(self, df: Any) -> Any:
        """:meth:`compute` for a few rows, joined in Python: the same texts (a bin as its decimal integer, a text
        part as polars' ``String`` cast), missing when either part is."""
        import polars as pl

        texts = []
        for part, dtype, edges in zip(self.parts, self.dtypes, self.edges, strict=True):
            s = _cast(df[part], dtype)
            if edges is None:
                texts.append(s.cast(pl.String).to_list())
                continue
            v = s.cast(pl.Float64).to_numpy()  # a null reads as NaN: missing either way
            missing = np.isnan(v)
            bins = np.searchsorted(edges, np.where(missing, 0.0, v), side="left")
            texts.append([None if m else str(b) for b, m in zip(bins.tolist(), missing.tolist(), strict=True)])
        joined = [None if a is None or b is None else f"{a}{CROSS_SEPARATOR}{b}"
                  for a, b in zip(*texts, strict=True)]
        return pl.Series(self.name, joined, dtype=pl.String)


def _bin_edges(s: Any) -> Any:
    """The values after which a float column's equal-frequency bin steps up (``None`` for a non-float column)."""
    if not s.dtype.is_float():
        return None
    v = np.sort(s.cast(_float64()).fill_nan(None).drop_nulls().to_numpy())
    n = v.size
    edges = []
    for b in range(1, CROSS_BINS):
        t = -(-b * (n + 1) // CROSS_BINS) - 1  # bin >= b  <=>  at least t fitted values lie below
        edges.append(-np.inf if t <= 0 else v[min(t, n) - 1])
    return np.asarray(edges, dtype=np.float64)


def _categorical_view(s: Any) -> Any:
    """The series whose values are numbered: booleans as 0/1, dates, times and categoricals as strings."""
    import polars as pl

    if s.dtype == pl.Boolean:
        return s.cast(pl.Int8)
    if s.dtype.is_temporal() or s.dtype == pl.Categorical or s.dtype == pl.Enum:
        return s.cast(pl.String)
    return s


FNV64_OFFSET_BASIS = 0xCBF29CE484222325
"""The 64-bit FNV-1a offset basis (Fowler, Noll, Vo; IETF draft-eastlake-fnv)."""
FNV64_PRIME = 0x100000001B3
"""The 64-bit FNV prime."""


def fnv1a64(s: Any) -> np.ndarray:
    """The 64-bit FNV-1a hash of each value's text (``uint64``; a missing value gets the offset basis).

    The text is polars' ``String`` cast of the value (integers in decimal, dates as ISO text), as UTF-8 bytes;
    ``h = offset_basis``, then for each byte ``h = (h XOR byte) * prime mod 2**64``. Vectorised over the Arrow
    buffers of the text: one numpy pass per byte position, over the values at least that long (longest first),
    so the cost is the total number of bytes plus a fixed cost per position of the longest value.

    Example:
        >>> import polars as pl
        >>> [hex(h) for h in fnv1a64(pl.Series(["", "a", "foobar"]))]  # the FNV reference values
        ['0xcbf29ce484222325', '0xaf63dc4c8601ec8c', '0x85944171f73967e8']
    """
    import polars as pl
    import pyarrow as pa

    if s.len() <= _FNV_PYTHON_ROWS:  # the same arithmetic in Python: no Arrow buffers, no pass per byte position
        return np.array([_fnv1a64_text(v) for v in s.cast(pl.String).to_list()], dtype=np.uint64)
    arr = s.cast(pl.String).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())  # int64 offsets, one data buffer
    n = len(arr)
    _, offsets_buf, data_buf = arr.buffers()
    h = np.full(n, FNV64_OFFSET_BASIS, dtype=np.uint64)
    if n == 0 or data_buf is None:
        return h
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8)
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")  # longest first: the values still hashing are a prefix
    starts, lengths = offsets[:-1][order], lengths[order]
    longer = np.searchsorted(-lengths, -np.arange(int(lengths[0]) if n else 0), side="left")  # len > k
    hs = h[order]
    prime = np.uint64(FNV64_PRIME)
    for k, m in enumerate(longer.tolist()):
        part = hs[:m]  # a view: updated in place (uint64 arithmetic wraps modulo 2**64)
        part ^= data[starts[:m] + k]
        part *= prime
    h[order] = hs
    return h


_FNV_PYTHON_ROWS = 16
"""Values up to which :func:`fnv1a64` hashes in Python (~1 us a value of a few bytes; numpy's fixed cost: ~40 us)."""
_U64 = (1 << 64) - 1


def _fnv1a64_text(text: str | None) -> int:
    h = FNV64_OFFSET_BASIS
    for byte in (text or "").encode("utf-8"):
        h = ((h ^ byte) * FNV64_PRIME) & _U64
    return h


def _fnv1a64_codes(s: Any, n_buckets: int) -> np.ndarray:
    codes = (fnv1a64(s) % np.uint64(n_buckets)).astype(CODE_DTYPE) + CODE_DTYPE(_FIRST_CODE)
    if s.null_count():  # is_null is a one-column query (~30 us): only when there is a null
        codes[s.is_null().to_numpy()] = MISSING_CODE
    return codes


def _polars_codes(s: Any, n_buckets: int) -> np.ndarray:
    """The codes of models packaged before :data:`STABLE_HASH`, exactly: polars' ``Series.hash(seed=0)`` of the
    text (not stable across polars versions), under which a missing value got the bucket of polars' hash of
    null rather than the missing code."""
    import polars as pl

    codes = ((s.cast(pl.String).hash(seed=0) % n_buckets).cast(pl.Int32) + _FIRST_CODE).fill_null(MISSING_CODE)
    return codes.to_numpy().astype(CODE_DTYPE)


HASH_FUNCTIONS: Registry[Callable[[Any, int], np.ndarray]] = Registry("hash function")
"""How a hashed column's values become codes: ``2 + bucket`` with ``bucket`` in ``0 .. n_buckets - 1``."""
HASH_FUNCTIONS.register("fnv1a64")(_fnv1a64_codes)
HASH_FUNCTIONS.register("polars")(_polars_codes)
STABLE_HASH = "fnv1a64"
"""The hash new encoders use: 64-bit FNV-1a of the value's UTF-8 text, modulo ``n_buckets`` (:func:`fnv1a64`);
documented, stable across versions and languages, so a hashed column can be encoded outside Python. Measured on
a loaded 2-core VM: 0.15 s for 2M 12-byte strings, 0.17 s for 2M int64 ids (polars' own hash: 0.01 s, 0.05 s)."""
_LEGACY_HASH = "polars"


def _hashed(s: Any, n_buckets: int, function: str) -> np.ndarray:
    """Codes of a hashed column (writable ``CODE_DTYPE``): ``2 + bucket``; a missing value the missing code."""
    return HASH_FUNCTIONS.get(function)(s, n_buckets)


@dataclass(frozen=True, eq=False)
class TabularEncoder:
    """A fitted encoding of raw tabular rows (see the module docstring).

    Example:
        >>> import polars as pl
        >>> df = pl.DataFrame({"city": ["a", "b", "a", None], "age": [1.0, None, 3.0, 4.0], "y": [0, 1, 0, 1]})
        >>> enc = TabularEncoder.fit(df, "y")
        >>> cat, num = enc.transform(pl.DataFrame({"city": ["b", "zzz", None], "age": [2.0, None, 5.0]}))
        >>> cat[:, 0].tolist()  # known, unseen (out of vocabulary), missing
        [3, 1, 0]
        >>> num.tolist()  # a missing age is the fitted median 3.0, flagged in age_missing
        [[2.0, 0.0], [3.0, 1.0], [5.0, 0.0]]
    """

    target: str
    columns: tuple[ColumnEncoding, ...]
    classes: tuple = ()
    notes: tuple[str, ...] = field(default=())
    crosses: tuple[Cross, ...] = ()
    """Recipes of the crossed columns among :attr:`columns` (computed from their raw parts before encoding)."""

    @property
    def raw_features(self) -> tuple[str, ...]:
        """The raw columns new rows must hold: the features, a cross replaced by its two parts."""
        made = {c.name: c for c in self.crosses}
        out: list[str] = []
        for name in self.features:
            for raw in (made[name].parts if name in made else (name,)):
                if raw not in out:
                    out.append(raw)
        return tuple(out)

    def with_crosses(self, crosses: list[Cross] | tuple[Cross, ...]) -> TabularEncoder:
        """This encoder, computing the given crossed columns from their raw parts in :meth:`transform`."""
        return TabularEncoder(self.target, self.columns, self.classes, self.notes, tuple(crosses))

    @property
    def features(self) -> tuple[str, ...]:
        """The raw columns the encoding reads, in input order."""
        return tuple(c.name for c in self.columns)

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == "categorical")

    @property
    def numeric_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for c in self.columns:
            if c.kind == "numeric" or c.ordered:
                names += [c.name, f"{c.name}_missing"] if c.indicator else [c.name]
        return tuple(names)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return tuple(c.cardinality for c in self.columns if c.kind == "categorical")

    def select(self, features: list[str] | tuple[str, ...] | None) -> TabularEncoder:
        """The encoder of only the named raw columns (``None``: all), as :func:`select_features` keeps them."""
        if features is None:
            return self
        keep = set(features)
        return TabularEncoder(self.target, tuple(c for c in self.columns if c.name in keep), self.classes,
                              self.notes, tuple(c for c in self.crosses if c.name in keep))

    # -- fitting ---------------------------------------------------------------------------------------------------
    @classmethod
    def fit(cls, df: Any, target: str, *, features: list[str] | None = None,
            max_cardinality: int = 100_000, rows: np.ndarray | None = None,
            min_count: dict[str, int] | None = None, ordered_ints: int | None = None) -> TabularEncoder:
        """Learn the encoding of ``df`` (see :func:`~sparsearch.spaces.encode_tabular` for the rules).

        Args:
            rows: fit on these rows only (indices into the rows that carry a target, as :meth:`encode`'s
                ``parts``; ``None``: all of them). Every statistic of a feature comes from them: vocabularies,
                the hashing decision (distinct values among these rows), medians and the missing-value
                indicators; other rows are encoded as :meth:`transform` encodes new rows (a value seen only there
                is out of vocabulary). The class labels come from every labelled row, so that each one can be
                encoded with its label. The rows are gathered one column at a time: no copy of the frame.
            min_count: per categorical column (the crosses of a study, :data:`CROSS_MIN_COUNT`), the fewest
                fitted rows a value needs to get its own code; rarer values are out of vocabulary, in the fitted
                rows too. Such a column is never hashed: it keeps at most ``max_cardinality - 2`` values, the most
                frequent (ties by value), so its cardinality is at most ``min(fitted rows / min_count,
                max_cardinality - 2) + 2``.
            ordered_ints: an integer column with at least this many distinct values keeps its categorical codes
                and is also an ordered numeric input (numbers as numbers: a distance or a minute of the day keeps
                its order; the network's numeric encoding applies to it). Recorded per column in :attr:`notes`.
                ``None`` (the default): integers are categorical only.

        Raises:
            DataError: missing column, empty table, a one-class target, a nested/unsupported column type, or
                ``rows`` that are not 1-d indices into the labelled rows or select none.
        """
        import polars as pl

        df = to_polars(df, "TabularEncoder.fit")
        if ordered_ints is not None and (isinstance(ordered_ints, bool) or not isinstance(ordered_ints, int)
                                         or ordered_ints < 2):
            raise DataError(f"ordered_ints must be an integer >= 2 (distinct values) or None, got {ordered_ints!r}")
        if not 3 <= max_cardinality <= np.iinfo(CODE_DTYPE).max:
            raise DataError(f"max_cardinality must be in [3, {np.iinfo(CODE_DTYPE).max}] (codes are "
                            f"{np.dtype(CODE_DTYPE).name}), got {max_cardinality}")
        if target not in df.columns:
            raise DataError(f"target column {target!r} not found; columns: {', '.join(df.columns)}")
        features = [c for c in df.columns if c != target] if features is None else list(features)
        missing = [c for c in features if c not in df.columns]
        if missing:
            raise DataError(f"feature columns not found: {', '.join(missing)}; columns: {', '.join(df.columns)}")
        if target in features:
            raise DataError(f"target column {target!r} is also listed in features")
        floors = dict(min_count or {})
        for name, floor in floors.items():
            if name not in features:
                raise DataError(f"min_count names column {name!r}, which is not among the features")
            if isinstance(floor, bool) or not isinstance(floor, (int, np.integer)) or floor < 1:
                raise DataError(f"min_count of column {name!r} must be an integer >= 1, got {floor!r}")
        notes: list[str] = []
        n_missing = df[target].null_count()
        if n_missing:  # a filter copies the whole frame: only when there is something to drop
            df = df.filter(pl.col(target).is_not_null())
            notes.append(f"dropped {n_missing} rows with a missing target {target!r}")
        if df.height == 0:
            raise DataError(f"no rows with a known target {target!r}")
        if rows is not None:
            rows = np.asarray(rows)
            if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer) or (
                    rows.min() < 0 or rows.max() >= df.height):
                raise DataError(f"TabularEncoder.fit: rows must be a non-empty 1-d array of row indices into the "
                                f"{df.height} labelled rows, got shape {rows.shape} of {rows.dtype}")
            rows = rows.astype(np.int64, copy=False)
        ys = df[target]
        if ys.dtype.is_float() and ys.n_unique() > 50:
            raise DataError(f"target {target!r} is continuous ({ys.n_unique()} distinct floats); only classification")
        classes = ys.unique().sort()
        if classes.len() < 2:
            raise DataError(f"target {target!r} has a single class {classes.to_list()!r}; need at least 2")

        columns: list[ColumnEncoding] = []
        for name in features:
            s = df[name] if rows is None else df[name].gather(rows)  # one column of the fitted rows at a time
            if s.dtype.is_nested() or s.dtype == pl.Object:
                raise DataError(f"column {name!r} has unsupported type {s.dtype}; use scalar columns")
            if s.dtype.is_float():
                v = s.cast(pl.Float64).to_numpy()
                bad = ~np.isfinite(v)
                fill = float(np.median(v[~bad])) if (~bad).any() else 0.0
                if bad.any():
                    notes.append(f"{name}: filled {int(bad.sum())} NaN/inf with median {fill:g}")
                columns.append(ColumnEncoding(name, "numeric", s.dtype, fill=fill, indicator=bool(bad.any())))
                continue
            view = _categorical_view(s)
            if name in floors:
                counts = view.drop_nulls().rename("v").value_counts(name="n")
                kept = counts.filter(pl.col("n") >= floors[name]).sort(["n", "v"], descending=[True, False])
                values = kept["v"].head(max_cardinality - _FIRST_CODE).sort()
                notes.append(f"{name}: {values.len()} of {counts.height} values seen >= {floors[name]} times keep "
                             "their own code; the rest are out of vocabulary")
                columns.append(ColumnEncoding(name, "categorical", s.dtype, vocabulary=values))
                continue
            values = view.drop_nulls().unique().sort()
            order: dict[str, Any] = {}
            if ordered_ints is not None and s.dtype.is_integer() and values.len() >= ordered_ints:
                v = s.cast(pl.Float64).to_numpy()
                known = ~np.isnan(v)
                fill = float(np.median(v[known])) if known.any() else 0.0
                order = {"ordered": True, "fill": fill, "indicator": bool((~known).any())}
                notes.append(f"{name}: {values.len()} distinct integers: also an ordered numeric input")
            if values.len() + _FIRST_CODE > max_cardinality:
                n_buckets = max_cardinality - _FIRST_CODE
                notes.append(f"{name}: {values.len()} distinct values hashed into {n_buckets} buckets")
                columns.append(ColumnEncoding(name, "categorical", s.dtype, n_buckets=n_buckets, **order))
            else:
                columns.append(ColumnEncoding(name, "categorical", s.dtype, vocabulary=values, **order))
        if not columns:
            raise DataError("no feature columns to encode")
        return cls(target, tuple(columns), tuple(classes.to_list()), tuple(notes))

    # -- encoding --------------------------------------------------------------------------------------------------
    def transform(self, df: Any) -> tuple[np.ndarray, np.ndarray]:
        """Model inputs ``(categorical int32 (n, n_cat), numeric float32 (n, n_num))`` for raw rows.

        ``df`` is a polars or pandas frame holding (at least) :attr:`features`; other columns are ignored. Values
        are cast to the fitted column types first (a pandas integer column with missing values arrives as floats);
        a value that cannot be cast, or was never seen, is out of vocabulary.

        Raises:
            DataError: a feature column is absent.
        """
        if is_pandas_frame(df) and len(df) <= SMALL_BATCH_ROWS:
            df = _small_pandas_to_polars(df, "TabularEncoder.transform", self.raw_features)
        else:
            df = to_polars(df, "TabularEncoder.transform", columns=self.raw_features)
        return self._fill(self._with_crosses(df), [None])[0]

    def _with_crosses(self, df: Any) -> Any:
        absent = [c for c in self.raw_features if c not in df.columns]
        if absent:
            raise DataError(f"the rows lack feature column(s) {', '.join(absent)}; the model reads "
                            f"{', '.join(self.raw_features)}")
        if self.crosses:
            df = df.with_columns([cross.compute(df) for cross in self.crosses])
        return df

    def _fill(self, df: Any, parts: list[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Encode ``df`` column by column straight into one preallocated pair of arrays per part (``None``: every
        row), so that memory peaks at the frame + the outputs + one column, never at a second full copy."""
        n = df.height
        n_cat = sum(c.kind == "categorical" for c in self.columns)
        n_num = sum(1 + c.indicator for c in self.columns if c.kind == "numeric" or c.ordered)
        sizes = [n if rows is None else len(rows) for rows in parts]
        out = [(np.empty((m, n_cat), dtype=CODE_DTYPE), np.empty((m, n_num), dtype=np.float32)) for m in sizes]

        def put(which: int, j: int, values: np.ndarray) -> None:
            for (cat_num, rows) in zip(out, parts, strict=True):
                cat_num[which][:, j] = values if rows is None else values[rows]

        i_cat = i_num = 0
        for col in self.columns:
            s = df[col.name]
            if col.kind != "numeric":
                put(0, i_cat, self._codes(col, s))
                i_cat += 1
            if col.kind == "numeric" or col.ordered:
                v = _cast(s, col.raw_dtype).cast(_float64()).to_numpy().astype(np.float64, copy=True)
                bad = ~np.isfinite(v)
                v[bad] = col.fill
                put(1, i_num, v)
                i_num += 1
                if col.indicator:
                    put(1, i_num, bad)
                    i_num += 1
        return out

    @staticmethod
    def _codes(col: ColumnEncoding, s: Any) -> np.ndarray:
        import polars as pl

        typed = _cast(s, col.raw_dtype)
        view = _categorical_view(typed)
        if col.n_buckets is not None:
            codes = _hashed(view, col.n_buckets, col.hash or _LEGACY_HASH)
        elif view.len() <= SMALL_BATCH_ROWS:  # a dict lookup per value: no per-call table, no query per step
            get = col.code_lookup().get
            codes = np.fromiter((get(v, OOV_CODE) for v in view.to_list()), dtype=CODE_DTYPE, count=view.len())
        else:
            known = view.replace_strict(col.vocabulary, np.arange(_FIRST_CODE, _FIRST_CODE + len(col.vocabulary)),
                                        default=OOV_CODE, return_dtype=pl.Int32)
            codes = known.fill_null(MISSING_CODE).to_numpy().astype(CODE_DTYPE)  # writable (a view may not be)
            codes[view.is_null().to_numpy()] = MISSING_CODE
        # a cast keeps every null and may add some: the values it could not read (e.g. "abc" in an integer column)
        if typed.null_count() != s.null_count():
            codes[(s.is_not_null() & typed.is_null()).to_numpy()] = OOV_CODE
        return codes

    @overload
    def encode(self, df: Any) -> TabularData: ...

    @overload
    def encode(self, df: Any, parts: Sequence[np.ndarray]) -> list[TabularData]: ...

    def encode(self, df: Any, parts: Sequence[np.ndarray] | None = None) -> TabularData | list[TabularData]:
        """Encode rows that carry the target (the fitted rows, or new labelled ones) as :class:`TabularData`.

        With ``parts`` (row indices into the rows that carry a target, e.g. a train / validation / test split),
        return one :class:`TabularData` per part, in order, each written straight from the frame: the same result
        as ``[encode(df).subset(rows) for rows in parts]`` without the full encoded copy in between (at 2M rows x
        300 columns that copy is 2.4 GB of int32 codes).

        Raises:
            DataError: the target column is absent, holds a class the encoder was not fitted on, or a part holds
                a row index outside the frame.
        """
        import polars as pl

        df = to_polars(df, "TabularEncoder.encode")
        if self.target not in df.columns:
            raise DataError(f"target column {self.target!r} not found; columns: {', '.join(df.columns)}")
        if df[self.target].null_count():  # a filter copies the whole frame: only when there is something to drop
            df = df.filter(pl.col(self.target).is_not_null())
        index = {c: i for i, c in enumerate(self.classes)}
        labels = df[self.target].to_list()
        unknown = [v for v in set(labels) if v not in index]
        if unknown:
            raise DataError(f"target {self.target!r} has classes {unknown[:5]!r} the encoder was not fitted on")
        y = np.array([index[v] for v in labels], dtype=np.int64)
        del labels
        rows: list[np.ndarray | None] = [None]  # None: all the rows, one TabularData
        if parts is not None:
            indices = [np.asarray(p, dtype=np.int64) for p in parts]
            for p in indices:
                if p.ndim != 1 or (p.size and (p.min() < 0 or p.max() >= df.height)):
                    raise DataError(f"encode: parts must be 1-d row indices into the {df.height} labelled rows")
            rows = [*indices]
        encoded = self._fill(self._with_crosses(df), rows)
        n_classes = len(self.classes)
        out = [TabularData(
            categorical=categorical, cardinalities=self.cardinalities, numeric=numeric,
            y=y if p is None else y[p], categorical_names=self.categorical_names, numeric_names=self.numeric_names,
            task="binary" if n_classes == 2 else "multiclass", n_classes=n_classes, classes=self.classes,
            notes=self.notes,
        ) for (categorical, numeric), p in zip(encoded, rows, strict=True)]
        return out if parts is not None else out[0]


def _float64() -> Any:
    import polars as pl

    return pl.Float64


def _cast(s: Any, dtype: Any) -> Any:
    """``s`` as ``dtype``; values that cannot be represented (3.5 as an integer, "x" as a date) become null."""
    import polars as pl

    if s.dtype == dtype:
        return s
    if s.dtype.is_float() and dtype.is_integer():  # NaN, inf and 3.5 are not integers: null (in numpy: no query)
        v = s.to_numpy()  # a null reads as NaN
        whole = np.isfinite(v) & (v == np.floor(v))
        if not whole.all():
            s = pl.Series(s.name, np.where(whole, v, np.nan), nan_to_null=True)
    if s.dtype == pl.Null:
        return s.cast(dtype)
    try:
        return s.cast(dtype, strict=False)
    except Exception:  # noqa: BLE001 - a cast polars does not define (text to boolean): through text, or none
        text = s.cast(pl.String, strict=False)
        if dtype == pl.Boolean:
            words = {"true": True, "1": True, "false": False, "0": False}
            return text.str.to_lowercase().replace_strict(words, default=None, return_dtype=pl.Boolean)
        try:
            return text.cast(dtype, strict=False)
        except Exception:  # noqa: BLE001 - nothing can be read: every value is unknown
            return pl.Series(s.name, [None] * s.len(), dtype=dtype)


def encode_tabular(
    df: Any, target: str, *, features: list[str] | None = None, max_cardinality: int = 100_000
) -> TabularData:
    """Encode a polars DataFrame for :class:`SparseMLP`.

    Strings, integers, booleans (and any other non-float scalar type) become categorical codes with ``0`` for
    missing and ``1`` reserved for out-of-vocabulary values; values are numbered in sorted order from 2. A column
    with more than ``max_cardinality - 2`` distinct values is hashed down to ``max_cardinality`` codes (reported in
    ``notes``). Floats become numeric: NaN and +-inf are filled with the median of the finite values and a
    ``<name>_missing`` 0/1 numeric column is added. Rows with a missing target are dropped (reported).

    Args:
        df: a ``polars.DataFrame`` (a pandas DataFrame is converted).
        target: the class column (binary or multiclass; floats are accepted only if they hold few distinct values).
        features: the columns to use (default: all but the target).
        max_cardinality: the largest embedding table per feature.

    The encoding is :class:`TabularEncoder`'s: fit one to encode new rows the same way.

    Raises:
        DataError: missing column, empty table, a one-class target, a nested/unsupported column type.
    """
    return TabularEncoder.fit(df, target, features=features, max_cardinality=max_cardinality).encode(df)


def _small_pandas_to_polars(data: Any, what: str, columns: Sequence[str]) -> Any:
    """``to_polars(data, what, columns=columns)`` for a few rows, column by column: a numpy integer, boolean or
    float column (NaN as missing, as ``pl.from_pandas`` reads it) or a pandas nullable one without a missing value
    is handed over as its numpy array; any other column goes through ``pl.from_pandas`` on its own (the
    conversion ``to_polars`` applies to it), or ``to_polars`` itself when that fails. Column labels that are not
    unique strings are ``to_polars``' to handle (or refuse). Converting a whole pandas frame costs ~1 ms whatever
    its length, a numpy column ~15 us."""
    import polars as pl

    labels = list(data.columns)
    if not all(isinstance(c, str) for c in labels) or len(set(labels)) != len(labels):
        return to_polars(data, what, columns=columns)
    present = set(labels)
    series = []
    for name in columns:
        if name not in present:
            continue
        col = data[name]
        dtype = col.dtype
        if isinstance(dtype, np.dtype):
            if dtype.kind in "iub" or dtype in (np.float32, np.float64):
                series.append(pl.Series(name, col.to_numpy(), nan_to_null=dtype.kind == "f"))
                continue
        elif getattr(dtype, "kind", None) in ("i", "u", "b") and isinstance(getattr(dtype, "numpy_dtype", None),
                                                                          np.dtype) and not col.hasnans:
            series.append(pl.Series(name, col.to_numpy(dtype=dtype.numpy_dtype)))
            continue
        try:
            series.append(cast("pl.Series", pl.from_pandas(col)).rename(name))  # a pandas Series in: a Series
        except Exception:  # noqa: BLE001 - mixed Python objects: to_polars reads them as text
            series.append(to_polars(data[[name]], what)[name])
    return pl.DataFrame(series)
