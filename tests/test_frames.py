"""The one frame converter (sparsearch._frames.to_polars) and the three places data enters through it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sparsearch._frames import describe_frame, is_frame, to_polars
from sparsearch.errors import DataError

MIXED = pd.DataFrame({"city": ["a", 3, None, 2.5], 7: [1, 2, 3, 4], "y": [0, 1, 0, 1]})


def test_polars_frames_pass_through_and_lazy_frames_are_collected():
    df = pl.DataFrame({"a": [1, 2]})
    assert to_polars(df, "data") is df
    assert to_polars(df.lazy().with_columns(b=pl.col("a") * 2), "data").rows() == [(1, 2), (2, 4)]


def test_a_failing_lazy_frame_is_one_line_naming_the_input():
    lazy = pl.LazyFrame({"a": [1]}).select(pl.col("missing"))
    with pytest.raises(DataError, match=r"^\[data\] frame: the LazyFrame failed to collect: .*missing") as err:
        to_polars(lazy, "[data] frame")
    assert "\n" not in str(err.value)


def test_pandas_names_become_strings_and_mixed_object_columns_text():
    out = to_polars(MIXED, "data")
    assert out.columns == ["city", "7", "y"]
    assert out["city"].to_list() == ["a", "3", None, "2.5"]  # missing stays missing
    assert out["7"].dtype == pl.Int64 and out["y"].to_list() == [0, 1, 0, 1]


def test_pandas_columns_subset_keeps_the_asked_order_and_skips_absent_ones():
    assert to_polars(MIXED, "data", columns=("y", "nope", "city")).columns == ["y", "city"]


@pytest.mark.parametrize("columns", [["a", "a"], [1, "1"]])
def test_duplicate_pandas_column_names_are_an_error(columns):
    frame = pd.DataFrame([[1, 2]], columns=columns)
    with pytest.raises(DataError, match=r"^TabularEncoder.fit: the pandas DataFrame has duplicate column names "
                                        r"\['(a|1)'\]"):
        to_polars(frame, "TabularEncoder.fit")


@pytest.mark.parametrize("value", [np.zeros((2, 2)), {"a": [1]}, pd.Series([1, 2]), [[1, 2]]])
def test_anything_else_is_refused_naming_what_is_allowed(value):
    with pytest.raises(DataError, match=r"^TabularEncoder.encode needs a polars or pandas DataFrame \(or a "
                                        rf"polars LazyFrame\), got {type(value).__name__}$"):
        to_polars(value, "TabularEncoder.encode")


def test_is_frame_and_describe_frame():
    assert is_frame(MIXED) and is_frame(pl.LazyFrame({"a": [1]})) and not is_frame(pd.Series([1]))
    assert describe_frame(MIXED) == "pandas DataFrame, 4 rows x 3 columns"
    assert describe_frame(pl.LazyFrame({"a": [1], "b": [2]})) == "polars LazyFrame, 2 columns"


def test_features_spaces_and_search_read_a_pandas_frame_alike():
    """The behaviour the three converters used to differ on: a mixed object column (features raised pyarrow's
    TypeError, search a DataError, spaces read it as text) is now text everywhere."""
    from sparsearch.features._io import _to_polars
    from sparsearch.search.data import _load_frame
    from sparsearch.search.spec import load_study
    from sparsearch.spaces import TabularEncoder

    expected = to_polars(MIXED, "data")
    assert _to_polars(MIXED).equals(expected)
    spec = load_study({"data": {"target": "y"}}, data=MIXED)
    assert _load_frame(spec).equals(expected)
    encoder = TabularEncoder.fit(MIXED, "y")
    assert encoder.encode(MIXED).categorical.shape[0] == 4
    # numpy stays features' own input (it needs feature names)
    assert _to_polars(np.array([[1.0, 2.0]])).columns == ["x0", "x1"]
