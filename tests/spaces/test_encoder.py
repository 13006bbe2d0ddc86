"""TabularEncoder: the encoding of encode_tabular, kept, so new raw rows (pandas or polars) encode the same way."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sparsearch.errors import DataError
from sparsearch.spaces import TabularEncoder, encode_tabular
from sparsearch.spaces.encoder import MISSING_CODE, OOV_CODE


def mixed_frame(n: int = 400, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    mask = lambda p: pl.Series(rng.random(n) < p)  # noqa: E731
    return pl.DataFrame({
        "city": rng.choice(["rome", "oslo", "lima", None], n).tolist(),
        "shop": pl.Series(rng.integers(0, 20, n)).set(mask(0.1), None),
        "promo": pl.Series(rng.random(n) < 0.5).set(mask(0.1), None),
        "price": pl.Series(rng.normal(10, 2, n)).set(mask(0.1), None),
        "age": rng.normal(size=n),
        "day": [dt.date(2024, 1, 1 + int(k)) for k in rng.integers(0, 20, n)],
        "user": [f"u{k}" for k in rng.integers(0, 300, n)],
        "tier": pl.Series(rng.choice(["gold", "basic"], n)).cast(pl.Categorical),
        "y": pl.Series(rng.choice(["no", "yes", None], n, p=[0.5, 0.4, 0.1])),
    })


def test_small_frame_codes_are_the_documented_ones():
    df = pl.DataFrame({"city": ["b", "a", None, "b"], "n": [1.0, None, 3.0, 5.0], "flag": [True, False, None, True],
                       "y": [0, 1, 0, 1]})
    enc = TabularEncoder.fit(df, "y")
    data = enc.encode(df)
    # values numbered in sorted order from 2; 0 = missing; booleans as 0/1
    assert data.categorical_names == ("city", "flag")
    assert data.categorical[:, 0].tolist() == [3, 2, MISSING_CODE, 3]
    assert data.categorical[:, 1].tolist() == [3, 2, MISSING_CODE, 3]
    assert data.cardinalities == (4, 4)
    # a missing number is the median of the others (3.0), flagged in n_missing
    assert data.numeric_names == ("n", "n_missing")
    assert data.numeric.tolist() == [[1.0, 0.0], [3.0, 1.0], [3.0, 0.0], [5.0, 0.0]]
    cat, num = enc.transform(pd.DataFrame({"city": ["a", "zzz", None], "n": [np.nan, 2.0, np.inf],
                                           "flag": [None, True, False]}))
    assert cat.tolist() == [[2, MISSING_CODE], [OOV_CODE, 3], [MISSING_CODE, 2]]
    assert num.tolist() == [[3.0, 1.0], [2.0, 0.0], [3.0, 1.0]]


@pytest.mark.parametrize("max_cardinality", [100_000, 60])
def test_encoder_is_encode_tabular_and_pandas_rows_encode_the_same(max_cardinality):
    df = mixed_frame()
    ref = encode_tabular(df, "y", max_cardinality=max_cardinality)
    enc = TabularEncoder.fit(df, "y", max_cardinality=max_cardinality)
    assert any("hashed" in note for note in enc.notes) == (max_cardinality == 60)
    labelled = df.filter(pl.col("y").is_not_null())
    # pandas turns the integer column with nulls into floats, the boolean one into objects, dates into datetimes
    for rows in (labelled, labelled.to_pandas(), labelled.drop("y").to_pandas()):
        cat, num = enc.transform(rows)
        np.testing.assert_array_equal(cat, ref.categorical)
        np.testing.assert_array_equal(num, ref.numeric)
    assert enc.cardinalities == ref.cardinalities and enc.numeric_names == ref.numeric_names


def test_unseen_unreadable_and_missing_values():
    df = mixed_frame()
    enc = TabularEncoder.fit(df, "y")
    rows = pd.DataFrame({"city": ["mars", None], "shop": ["x7", 3.5], "promo": ["maybe", None],
                         "price": ["cheap", None], "age": [None, 1.0], "day": ["not a day", None],
                         "user": ["u-new", None], "tier": ["platinum", None]})
    cat, num = enc.transform(rows)
    names = enc.categorical_names
    # unseen or unreadable (text in an integer column, 3.5 as an integer code): out of vocabulary; missing: 0
    assert cat[0].tolist() == [OOV_CODE] * len(names)
    assert cat[1, names.index("shop")] == OOV_CODE
    assert [cat[1, i] for i, n in enumerate(names) if n != "shop"] == [MISSING_CODE] * (len(names) - 1)
    labelled = df.filter(pl.col("y").is_not_null())  # rows without a target are not encoded, nor fitted on
    price = labelled["price"].drop_nulls().median()
    assert num[:, enc.numeric_names.index("price")].tolist() == pytest.approx([price, price])
    assert num[:, enc.numeric_names.index("price_missing")].tolist() == [1.0, 1.0]
    assert num[0, enc.numeric_names.index("age")] == pytest.approx(float(np.median(labelled["age"].to_numpy())))


def test_select_keeps_the_named_columns_in_encoding_order():
    enc = TabularEncoder.fit(mixed_frame(), "y").select(["price", "city"])
    assert enc.features == ("city", "price")
    cat, num = enc.transform(pd.DataFrame({"price": [1.0], "city": ["oslo"], "other": ["ignored"]}))
    assert cat.shape == (1, 1) and num.shape == (1, 2)


def test_bad_input_is_one_clear_error():
    enc = TabularEncoder.fit(mixed_frame(), "y")
    with pytest.raises(DataError, match="lack feature column.*city"):
        enc.transform(pd.DataFrame({"price": [1.0]}))
    with pytest.raises(DataError, match="needs a polars or pandas DataFrame"):
        enc.transform([[1, 2]])
    with pytest.raises(DataError, match="classes .*'maybe'"):
        enc.encode(mixed_frame().with_columns(y=pl.lit("maybe")))
    for bad in (2, 2**31):  # codes are int32: an embedding table of 2**31 rows is not allowed
        with pytest.raises(DataError, match=r"max_cardinality must be in \[3, 2147483647\] \(codes are int32\)"):
            TabularEncoder.fit(mixed_frame(), "y", max_cardinality=bad)


@pytest.mark.parametrize("max_cardinality", [100_000, 50])  # vocabularies, and hashed high-cardinality columns
def test_encode_into_parts_is_encode_then_subset(max_cardinality):
    df = mixed_frame(n=500, seed=3)  # missing targets, numeric columns with missing-value indicators
    enc = TabularEncoder.fit(df, "y", max_cardinality=max_cardinality)
    full = enc.encode(df)
    rng = np.random.default_rng(0)
    order = rng.permutation(full.n_rows)
    parts = [order[:300], order[300:380], np.sort(order[380:]), np.array([], dtype=np.int64)]
    got = enc.encode(df, parts)
    assert len(got) == 4
    for part, rows in zip(got, parts, strict=True):
        want = full.subset(rows)
        np.testing.assert_array_equal(part.categorical, want.categorical)
        np.testing.assert_array_equal(part.numeric, want.numeric)
        np.testing.assert_array_equal(part.y, want.y)
        assert part.categorical.dtype == np.int32 and part.numeric.dtype == np.float32
        assert (part.cardinalities, part.categorical_names, part.numeric_names) == (
            full.cardinalities, full.categorical_names, full.numeric_names)
    with pytest.raises(DataError, match="row indices into the"):
        enc.encode(df, [np.array([0, full.n_rows])])


def test_encode_into_parts_keeps_no_full_copy_besides_the_parts():
    """The driver's peak when a study encodes its split: the parts plus one column, not a second full copy (which
    at 2M x 316 click-log columns was 5 GB each, and the cause of an out-of-memory kill)."""
    import tracemalloc

    n, width = 20_000, 60
    rng = np.random.default_rng(0)
    df = pl.DataFrame({f"c{j}": rng.integers(0, 50, n).astype(np.int32) for j in range(width)}
                      | {"y": rng.integers(0, 2, n)})
    enc = TabularEncoder.fit(df, "y")
    order = rng.permutation(n)
    parts = [order[:12_000], order[12_000:16_000], order[16_000:]]
    out_bytes = n * width * 4  # int32 codes
    tracemalloc.start()
    try:
        got = enc.encode(df, parts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(p.categorical.nbytes for p in got) == out_bytes
    assert peak < 1.3 * out_bytes, f"peak {peak / out_bytes:.2f}x the encoded size"  # a full copy first: 2x


def test_ordered_ints_keep_their_codes_and_add_their_value_as_a_number():
    rng = np.random.default_rng(0)
    n = 400
    distance = rng.integers(100, 3000, n).astype(float)
    distance[:5] = np.nan
    df = pl.DataFrame({"distance": pl.Series(distance).cast(pl.Int64, strict=False), "hour": rng.integers(5, 9, n),
                       "price": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    plain = TabularEncoder.fit(df, "y")
    enc = TabularEncoder.fit(df, "y", ordered_ints=50)
    assert plain.numeric_names == ("price",) and plain.categorical_names == ("distance", "hour")
    assert enc.categorical_names == ("distance", "hour")  # the embedding is kept
    assert enc.numeric_names == ("distance", "distance_missing", "price")  # hour has 4 values: codes only
    assert any(note.startswith("distance: ") and "ordered numeric input" in note for note in enc.notes)
    cat, num = enc.transform(pl.DataFrame({"distance": [150, None, 99_999], "hour": [5, 6, 7], "price": [0.0] * 3}))
    fitted_median = float(np.nanmedian(distance))
    assert num[:, 0].tolist() == [150.0, fitted_median, 99_999.0]  # an unseen distance keeps its order ...
    assert num[:, 1].tolist() == [0.0, 1.0, 0.0]
    assert cat[2, 0] == OOV_CODE and cat[1, 0] == MISSING_CODE  # ... where its code is out of vocabulary
    data = enc.encode(df)
    assert data.numeric.shape == (n, 3) and data.categorical.shape == (n, 2)
    with pytest.raises(DataError, match="ordered_ints must be an integer >= 2"):
        TabularEncoder.fit(df, "y", ordered_ints=1)


def _fnv1a64_reference(data: bytes) -> int:
    """64-bit FNV-1a, byte by byte (the published definition)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    return h


def test_hashed_columns_use_a_documented_stable_hash():
    """64-bit FNV-1a of the value's UTF-8 text, modulo n_buckets, plus 2 (a missing value: the missing code):
    the same codes as a byte-by-byte implementation, whatever polars' own hash does."""
    from sparsearch.spaces.encoder import STABLE_HASH, fnv1a64

    assert [_fnv1a64_reference(b) for b in (b"", b"a", b"foobar")] == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C,
                                                                       0x85944171F73967E8]  # FNV test vectors
    rng = np.random.default_rng(4)
    users = [f"user-{k}" for k in rng.integers(0, 5000, 3000)] + ["é", "日本語", "x" * 300, ""]
    ids = rng.integers(-10**12, 10**12, len(users))
    frame = pl.DataFrame({"user": users, "id": ids, "y": rng.integers(0, 2, len(users))})
    enc = TabularEncoder.fit(frame, "y", max_cardinality=1000)
    assert [(c.name, c.n_buckets, c.hash) for c in enc.columns] == [("user", 998, STABLE_HASH),
                                                                    ("id", 998, STABLE_HASH)]
    rows = pl.DataFrame({"user": users[:50] + ["never seen", None], "id": [*ids[:50].tolist(), 7, None]})
    cat, _ = enc.transform(rows)
    for j, column in enumerate(("user", "id")):
        texts = [None if v is None else str(v) for v in rows[column].to_list()]
        expected = [0 if t is None else 2 + _fnv1a64_reference(t.encode()) % 998 for t in texts]
        assert cat[:, j].tolist() == expected
    assert len(np.unique(cat[:50, 0])) > 40  # the buckets spread
    chunked = pl.concat([pl.Series(users[:7]), pl.Series(users[7:20])], rechunk=False)  # two Arrow chunks
    assert fnv1a64(chunked).tolist() == [_fnv1a64_reference(u.encode()) for u in users[:20]]
    assert fnv1a64(pl.Series(users[:20]).slice(5, 9)).tolist() == [_fnv1a64_reference(u.encode())
                                                                     for u in users[5:14]]


def test_an_encoder_pickled_before_the_stable_hash_keeps_polars_hash():
    """A model packaged before ``ColumnEncoding.hash`` existed unpickles with the hash it was trained with."""
    import pickle

    from sparsearch.errors import SpecError
    from sparsearch.spaces.encoder import ColumnEncoding

    frame = pl.DataFrame({"user": [f"u{i}" for i in range(40)], "kind": ["a", "b"] * 20, "y": [0, 1] * 20})
    enc = TabularEncoder.fit(frame, "y", max_cardinality=10)
    for col in enc.columns:  # what an old pickle holds: no ``hash`` attribute
        col.__dict__.pop("hash")
    old = pickle.loads(pickle.dumps(enc))
    assert [c.hash for c in old.columns] == ["polars", None]
    users = pl.Series(["u1", None, "zz", "u7"])
    cat, _ = old.transform(pl.DataFrame({"user": users, "kind": ["a"] * 4}))
    legacy = ((users.hash(seed=0) % 8).cast(pl.Int32) + 2).to_list()  # the encoder's code before: null hashed too
    assert cat[:, 0].tolist() == legacy
    assert TabularEncoder.fit(frame, "y", max_cardinality=10).transform(
        pl.DataFrame({"user": users, "kind": ["a"] * 4}))[0][1, 0] == MISSING_CODE
    with pytest.raises(SpecError, match="unknown hash function 'md5'.*fnv1a64, polars"):
        ColumnEncoding("user", "categorical", pl.String, n_buckets=8, hash="md5")
    with pytest.raises(ValueError, match="hash='fnv1a64' needs n_buckets"):
        ColumnEncoding("user", "categorical", pl.String, vocabulary=pl.Series(["a"]), hash="fnv1a64")
