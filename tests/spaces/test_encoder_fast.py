"""TabularEncoder.transform's small-batch path gives the arrays of the vectorised path, bit for bit.

The oracle is the encoder as it was before the small-batch path (``reference_transform``: its casts, codes and
crosses copied here verbatim, through polars queries only). Every input runs through the reference, through
``transform`` (the small-batch path at up to ``SMALL_BATCH_ROWS`` rows) and through ``transform`` with the
small-batch path turned off; the three must agree in values and dtypes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle

import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from sparsearch._frames import to_polars
from sparsearch.spaces import encoder as encoder_module
from sparsearch.spaces.encoder import (
    _FIRST_CODE,
    CODE_DTYPE,
    CROSS_SEPARATOR,
    MISSING_CODE,
    OOV_CODE,
    SMALL_BATCH_ROWS,
    Cross,
    TabularEncoder,
    _categorical_view,
    _hashed,
    _small_pandas_to_polars,
    fnv1a64,
)

# -- the reference: the encoder's transform before the small-batch path ---------------------------------------------


def _ref_cast(s, dtype):
    if s.dtype == dtype:
        return s
    if s.dtype.is_float() and dtype.is_integer():
        whole = s.is_finite() & (s == s.floor())
        s = pl.select(pl.when(whole).then(s)).to_series().rename(s.name)
    if s.dtype == pl.Null:
        return s.cast(dtype)
    try:
        return s.cast(dtype, strict=False)
    except Exception:  # noqa: BLE001
        text = s.cast(pl.String, strict=False)
        if dtype == pl.Boolean:
            words = {"true": True, "1": True, "false": False, "0": False}
            return text.str.to_lowercase().replace_strict(words, default=None, return_dtype=pl.Boolean)
        try:
            return text.cast(dtype, strict=False)
        except Exception:  # noqa: BLE001
            return pl.Series(s.name, [None] * s.len(), dtype=dtype)


def _ref_cross(cross, df):
    texts = []
    for part, dtype, edges in zip(cross.parts, cross.dtypes, cross.edges, strict=True):
        s = _ref_cast(df[part], dtype)
        if edges is None:
            texts.append(s.cast(pl.String))
            continue
        v = s.cast(pl.Float64).fill_nan(None)
        bins = np.searchsorted(edges, v.fill_null(0.0).to_numpy(), side="left")
        texts.append(pl.Series(part, bins, dtype=pl.Int64).set(v.is_null(), None).cast(pl.String))
    return pl.DataFrame(texts).select(pl.concat_str(pl.all(), separator=CROSS_SEPARATOR)).to_series()\
        .rename(cross.name)


def _ref_codes(col, s):
    typed = _ref_cast(s, col.raw_dtype)
    unreadable = (s.is_not_null() & typed.is_null()).to_numpy()
    view = _categorical_view(typed)
    if col.n_buckets is not None:
        codes = _hashed(view, col.n_buckets, col.hash)
    else:
        known = view.replace_strict(col.vocabulary, np.arange(_FIRST_CODE, _FIRST_CODE + len(col.vocabulary)),
                                    default=OOV_CODE, return_dtype=pl.Int32)
        codes = known.fill_null(MISSING_CODE).to_numpy().astype(CODE_DTYPE)
        codes[view.is_null().to_numpy()] = MISSING_CODE
    codes[unreadable] = OOV_CODE
    return codes


def reference_transform(enc, rows):
    df = to_polars(rows, "reference", columns=enc.raw_features)
    if enc.crosses:
        df = df.with_columns([_ref_cross(c, df) for c in enc.crosses])
    cat, num = [], []
    for col in enc.columns:
        s = df[col.name]
        if col.kind != "numeric":
            cat.append(_ref_codes(col, s))
        if col.kind == "numeric" or col.ordered:
            v = _ref_cast(s, col.raw_dtype).cast(pl.Float64).to_numpy().astype(np.float64, copy=True)
            bad = ~np.isfinite(v)
            v[bad] = col.fill
            num.append(v)
            if col.indicator:
                num.append(bad)
    n = df.height
    return (np.column_stack(cat).astype(CODE_DTYPE) if cat else np.empty((n, 0), CODE_DTYPE),
            np.column_stack(num).astype(np.float32) if num else np.empty((n, 0), np.float32))


# -- the encoder under test -------------------------------------------------------------------------------------------


def training_frame(n: int = 600, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    mask = lambda p: pl.Series(rng.random(n) < p)  # noqa: E731
    x = rng.normal(size=n)
    x[rng.random(n) < 0.05] = np.nan
    x[:3] = [np.inf, -np.inf, np.nan]
    return pl.DataFrame({
        "city": rng.choice(["rome", "oslo", "lima", "é", None], n).tolist(),
        "shop": pl.Series(rng.integers(0, 20, n)).set(mask(0.1), None),  # vocabulary of integers
        "user": pl.Series(rng.integers(0, 400, n)),  # hashed: more values than max_cardinality
        "dist": pl.Series(rng.integers(0, 30, n)).set(mask(0.1), None),  # ordered integers, with an indicator
        "x": x,  # NaN and inf filled by the median, flagged
        "promo": pl.Series(rng.random(n) < 0.5).set(mask(0.1), None),
        "day": [dt.date(2024, 1, 1 + int(k)) for k in rng.integers(0, 20, n)],
        "tier": pl.Series(rng.choice(["gold", "basic"], n)).cast(pl.Categorical),
        "y": rng.integers(0, 2, n),
    })


@pytest.fixture(scope="module")
def encoder() -> TabularEncoder:
    frame = training_frame()
    crosses = [Cross.fit(frame, "city_x_x", "city", "x"), Cross.fit(frame, "city_x_shop", "city", "shop")]
    crossed = frame.with_columns([c.compute(frame) for c in crosses])
    enc = TabularEncoder.fit(crossed, "y", max_cardinality=100, ordered_ints=25,
                             min_count={"city_x_x": 2, "city_x_shop": 2}).with_crosses(crosses)
    kinds = {c.name: c for c in enc.columns}
    assert kinds["user"].n_buckets is not None and kinds["dist"].ordered and kinds["dist"].indicator
    assert kinds["x"].indicator and kinds["shop"].vocabulary is not None and len(enc.crosses) == 2
    return enc


def new_rows(n: int, seed: int = 1) -> pl.DataFrame:
    """Raw rows as a client sends them: unseen and missing values, a text in an integer column, integers as
    floats (a pandas integer column with a missing value), NaN and infinities."""
    rng = np.random.default_rng(seed)
    pick = lambda values: [values[int(k)] for k in rng.integers(0, len(values), n)]  # noqa: E731
    return pl.DataFrame({
        "city": pick(["rome", "oslo", "é", "zzz", None]),
        "shop": pick(["3", "7", "99", "abc", None, "4.0"]),  # text: "abc" fails the cast, "99" is unseen
        "user": pick([1, 17, 399, 12345, None]),
        "dist": pick([3.0, 2.5, np.nan, np.inf, 29.0, 1e30, None]),  # floats into an integer column
        "x": pick([0.25, np.nan, np.inf, -np.inf, None, -3.0]),
        "promo": pick([True, False, None]),
        "day": pick([dt.date(2024, 1, 3), dt.date(1999, 1, 1), None]),
        "tier": pl.Series(pick(["gold", "basic", "new"])).cast(pl.Categorical),
        "ignored": pick(["a", "b"]),
    }, schema_overrides={"dist": pl.Float64, "x": pl.Float64}, strict=False)


def assert_same(got, want):
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w), np.argwhere(g != w)[:5]


def encode_three_ways(enc, rows, monkeypatch):
    want = reference_transform(enc, rows)
    fast = enc.transform(rows)
    with monkeypatch.context() as m:
        m.setattr(encoder_module, "SMALL_BATCH_ROWS", -1)  # the vectorised path at any size
        vectorised = enc.transform(rows)
    assert_same(fast, want)
    assert_same(vectorised, want)
    return fast


@pytest.mark.parametrize("n", [0, 1, 7, 256])
@pytest.mark.parametrize("form", ["polars", "pandas", "pandas_numpy"])
def test_the_small_batch_path_equals_the_reference(encoder, n, form, monkeypatch):
    rows = new_rows(n, seed=n)
    if form == "pandas":
        rows = rows.to_pandas()  # polars' own conversion (pandas nullable dtypes)
    elif form == "pandas_numpy":  # what MLflow serving builds from JSON: numpy and object columns
        rows = pd.DataFrame({c: rows[c].to_list() for c in rows.columns})
    cat, num = encode_three_ways(encoder, rows, monkeypatch)
    assert cat.shape == (n, len(encoder.categorical_names)) and num.shape == (n, len(encoder.numeric_names))
    if n >= 256:  # the rows hit every case: known, unseen, missing, unreadable, filled
        assert {MISSING_CODE, OOV_CODE} <= set(np.unique(cat).tolist()) and (cat >= _FIRST_CODE).any()
        i = encoder.categorical_names.index("shop")
        assert {MISSING_CODE, OOV_CODE} <= set(cat[:, i].tolist())
        j = encoder.numeric_names.index("x_missing")
        assert set(num[:, j].tolist()) == {0.0, 1.0}
        k = encoder.categorical_names.index("city_x_x")
        assert {MISSING_CODE, OOV_CODE} <= set(cat[:, k].tolist()) and (cat[:, k] >= _FIRST_CODE).any()


def test_the_vectorised_path_above_the_threshold_equals_the_reference(encoder, monkeypatch):
    rows = new_rows(SMALL_BATCH_ROWS + 5, seed=3)
    encode_three_ways(encoder, rows, monkeypatch)
    encode_three_ways(encoder, rows.to_pandas(), monkeypatch)


def test_pandas_nullable_integers_and_floats_for_integer_columns(encoder, monkeypatch):
    base = new_rows(5, seed=4).to_pandas()
    for shop in (pd.array([3, None, 7, 99, 4], dtype="Int64"), pd.array([3, 5, 7, 99, 4], dtype="Int64"),
                 np.array([3.0, np.nan, 7.5, 99.0, 4.0]), np.array([3, 5, 7, 99, 4], dtype=np.uint8)):
        rows = base.assign(shop=shop, user=pd.array([1, None, 399, 12345, 17], dtype="Int32"),
                           dist=np.array([3.0, np.nan, 2.5, np.inf, 29.0], dtype=np.float32))
        encode_three_ways(encoder, rows, monkeypatch)


def test_the_legacy_polars_hash_takes_the_same_codes(encoder, monkeypatch):
    legacy = dataclasses.replace(encoder, columns=tuple(
        dataclasses.replace(c, hash="polars") if c.n_buckets is not None else c for c in encoder.columns))
    encode_three_ways(legacy, new_rows(9, seed=5), monkeypatch)


def test_the_lookup_cache_is_not_pickled_and_a_reloaded_encoder_encodes_the_same(encoder, monkeypatch):
    rows = new_rows(12, seed=6)
    before = encoder.transform(rows)
    assert any("_code_lookup" in c.__dict__ for c in encoder.columns)  # built by the call above
    state = pickle.dumps(encoder)
    assert b"_code_lookup" not in state
    again = pickle.loads(state)
    assert not any("_code_lookup" in c.__dict__ for c in again.columns)
    assert_same(again.transform(rows), before)


@pytest.mark.parametrize("frame", [
    pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan], "c": ["x", None], "d": [True, False],
                  "e": pd.array([1, None], dtype="Int64"), "f": pd.array([True, None], dtype="boolean"),
                  "g": pd.to_datetime(["2024-01-01", None]), "h": pd.Categorical(["u", "v"]),
                  "i": [1, "mixed"], "j": np.array([1.5, np.inf], dtype=np.float32), "k": [None, None]}),
    pd.DataFrame({"a": pd.Series([], dtype="int64"), "c": pd.Series([], dtype=object)}),
])
def test_the_small_pandas_conversion_equals_to_polars(frame):
    columns = ["k", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "absent"]
    assert_frame_equal(_small_pandas_to_polars(frame, "rows", columns), to_polars(frame, "rows", columns=columns))


def test_column_labels_to_polars_refuses_are_still_refused(encoder):
    rows = new_rows(2).to_pandas()
    rows.columns = ["city", "city", *rows.columns[2:]]
    with pytest.raises(Exception, match="duplicate column names"):
        encoder.transform(rows)
    with pytest.raises(Exception, match="lack feature column"):
        encoder.transform(new_rows(2).to_pandas().drop(columns=["dist"]))


def test_fnv1a64_in_python_equals_the_vectorised_hash(monkeypatch):
    values = pl.Series(["", "a", "foobar", None, "é日本", "x" * 40, "12345"])
    small = fnv1a64(values)
    with monkeypatch.context() as m:
        m.setattr(encoder_module, "_FNV_PYTHON_ROWS", -1)
        vectorised = fnv1a64(values)
    assert small.dtype == vectorised.dtype == np.uint64
    assert np.array_equal(small, vectorised)
    assert hex(int(small[2])) == "0x85944171f73967e8"  # the FNV reference value of "foobar"
