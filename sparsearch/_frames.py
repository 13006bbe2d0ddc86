"""In-memory data frames: the one converter to polars that features/, spaces/ and search/ share.

A polars ``DataFrame`` is used as it is, a ``LazyFrame`` is collected, a pandas ``DataFrame`` is converted (pandas
is never imported here for the check). The same input gives the same polars frame wherever it enters: ranking
(``rank_features(df)``), encoding (``TabularEncoder.fit/encode``, a packaged model's ``predict``) or a study
(``run_study(data=df)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sparsearch.errors import DataError, first_line

if TYPE_CHECKING:
    import polars as pl

__all__ = ["describe_frame", "is_frame", "is_pandas_frame", "to_polars"]


def is_pandas_frame(value: Any) -> bool:
    """A pandas DataFrame (checked without importing pandas)."""
    kind = type(value)
    return kind.__module__.split(".")[0] == "pandas" and kind.__name__ == "DataFrame"


def is_frame(value: Any) -> bool:
    """A polars DataFrame or LazyFrame, or a pandas DataFrame (checked without importing pandas).

    Example:
        >>> import polars as pl
        >>> is_frame(pl.DataFrame({"a": [1]})), is_frame(pl.LazyFrame({"a": [1]})), is_frame({"a": [1]})
        (True, True, False)
    """
    kind = type(value)
    return (kind.__module__.split(".")[0], kind.__name__) in {
        ("polars", "DataFrame"), ("polars", "LazyFrame"), ("pandas", "DataFrame")}


def describe_frame(frame: Any) -> str:
    """``"polars DataFrame, 1000 rows x 12 columns"`` (a LazyFrame is not collected: columns only).

    Example:
        >>> import polars as pl
        >>> describe_frame(pl.DataFrame({"a": [1, 2], "b": [3, 4]}))
        'polars DataFrame, 2 rows x 2 columns'
    """
    kind = type(frame)
    lib = kind.__module__.split(".")[0]
    if kind.__name__ == "LazyFrame":
        return f"{lib} LazyFrame, {len(frame.collect_schema())} columns"
    rows, cols = frame.shape
    return f"{lib} DataFrame, {rows} rows x {cols} columns"


def to_polars(data: Any, what: str, *, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """``data`` as a polars DataFrame.

    * polars ``DataFrame``: returned as it is; ``LazyFrame``: collected (a failing query is a :class:`DataError`
      naming ``what``);
    * pandas ``DataFrame``: column names become strings (duplicates after that are an error); a column of mixed
      Python objects, which pyarrow refuses, is read as text (missing values stay missing), as a packaged model
      reads raw rows; with ``columns``, only those of them that the frame has are converted (in that order);
    * anything else: a :class:`DataError` naming ``what`` and what is allowed (numpy and scipy input is
      :mod:`sparsearch.features`' own: it needs feature names).

    Example:
        >>> import pandas as pd
        >>> to_polars(pd.DataFrame({0: [1, 2], "city": ["a", 3]}), "data").rows()
        [(1, 'a'), (2, '3')]
    """
    import polars as pl

    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pl.LazyFrame):
        try:
            return data.collect()
        except Exception as exc:  # polars raises ColumnNotFoundError, ComputeError, ...
            raise DataError(f"{what}: the LazyFrame failed to collect: {first_line(exc, limit=300)}") from None
    if not is_pandas_frame(data):
        raise DataError(f"{what} needs a polars or pandas DataFrame (or a polars LazyFrame), got {type(data).__name__}")
    names = [str(c) for c in data.columns]
    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]  # set.add: None
    if dups:
        raise DataError(f"{what}: the pandas DataFrame has duplicate column names {dups}; column names must be unique")
    if names != list(data.columns):
        data = data.rename(columns=str)
    if columns is not None:
        data = data[[c for c in columns if c in data.columns]]
    try:
        return pl.from_pandas(data)
    except Exception:  # noqa: BLE001 - pyarrow rejects an object column of mixed types: convert column by column
        series = []
        for name in data.columns:
            try:
                series.append(pl.from_pandas(data[name]).rename(name))
            except Exception:  # noqa: BLE001
                values = [None if _is_missing(v) else str(v) for v in data[name].tolist()]
                series.append(pl.Series(name, values, dtype=pl.String))  # type: ignore[arg-type]  # as above: Series
        return pl.DataFrame(series)


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v) or type(v).__name__ in ("NAType", "NaTType")
