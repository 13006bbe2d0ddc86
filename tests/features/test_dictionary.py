"""Parquet string columns counted dictionary-encoded (polars Enum) give exactly the counts of the decoded strings."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from sparsearch.features import _io, iter_batches, rank_features
from sparsearch.features._counts import Counts, count_feature, merge_features
from sparsearch.features._tables import RankOptions, count, prepare


def _frame(n: int = 6_000, seed: int = 0) -> pl.DataFrame:
    """String features whose categories differ between row groups, with missing values and an empty string."""
    rng = np.random.default_rng(seed)
    half = n // 2
    early = rng.choice(["a", "b", "", "zz"], half)  # "a" and "zz" only in the first half
    late = rng.choice(["b", "c", "", "é"], n - half)  # "c" and "é" only in the second half
    mixed = np.concatenate([early, late])
    y = (rng.random(n) < np.where(np.isin(mixed, ["a", "c"]), 0.7, 0.3)).astype(np.int8)
    wide = np.array([f"id{v}" for v in rng.integers(0, 2_000, n)])  # many levels, most in one row group only
    miss = rng.random(n) < 0.1
    frame = pl.DataFrame({"mixed": mixed, "wide": wide, "num": rng.integers(0, 9, n), "y": y})
    return frame.with_columns(
        pl.when(pl.Series(miss)).then(None).otherwise(pl.col("mixed")).alias("mixed"),
        pl.when(pl.Series(rng.random(n) < 0.05)).then(None).otherwise(pl.col("wide")).alias("wide"),
        pl.Series("all_null", [None] * n, dtype=pl.String),
    )


@pytest.fixture()
def strings_parquet(tmp_path):
    frame = _frame()
    path = tmp_path / "s.parquet"
    frame.write_parquet(path, row_group_size=700)  # 9 row groups, each with its own dictionary
    return frame, path


def _assert_same_counts(a: Counts, b: Counts) -> None:
    assert a.n_rows == b.n_rows and a.n_null_target == b.n_null_target
    for name, fa in a.features.items():
        fb = b.features[name]
        assert list(fa.keys) == list(fb.keys), name
        np.testing.assert_array_equal(fa.counts, fb.counts)
        np.testing.assert_array_equal(fa.nulls, fb.nulls)


def test_file_batches_come_as_enum_only_when_asked(strings_parquet):
    frame, path = strings_parquet
    src = _io.open_source(path)
    plain = pl.concat([df for _, df in src.batches(None, 1_000)])
    enc = [df for _, df in src.batches(None, 1_000, dictionary=True)]
    assert plain.schema["mixed"] == pl.String and isinstance(enc[0].schema["mixed"], pl.Enum)
    assert enc[0].schema["num"] == frame.schema["num"]
    decoded = pl.concat([df.with_columns(pl.col("mixed", "wide", "all_null").cast(pl.String)) for df in enc])
    assert decoded.equals(frame)
    assert plain.equals(frame)
    assert next(iter_batches(path)).schema["mixed"] == pl.String  # the public reader keeps strings


@pytest.mark.parametrize("batch_size", [500, 2_100, 1_000_000])
def test_dictionary_counts_equal_string_counts(strings_parquet, batch_size):
    frame, path = strings_parquet
    opts = RankOptions(batch_size=batch_size)
    src, _, feats, tspec = prepare(path, "y", None, 16, None)
    from_file = count(src, feats, tspec, opts, null_kind=None)
    src_mem, _, _, _ = prepare(frame, "y", None, 16, None)
    in_memory = count(src_mem, feats, tspec, opts, null_kind=None)
    _assert_same_counts(from_file, in_memory)
    assert from_file.features["mixed"].keys.to_list() == ["", "a", "b", "c", "zz", "é"]
    assert int(from_file.features["mixed"].nulls.sum()) == frame["mixed"].null_count()
    assert len(from_file.features["all_null"].keys) == 0
    ranked = rank_features(path, "y", batch_size=batch_size)
    assert ranked.equals(rank_features(frame, "y", batch_size=batch_size))
    assert ranked["feature"][0] == "mixed"


def test_batches_capped_by_bytes_give_the_same_ranking(strings_parquet, monkeypatch):
    frame, path = strings_parquet
    ref = rank_features(path, "y")
    monkeypatch.setattr(_io, "BATCH_BYTES", 700 * 8)  # about one row group of this file per batch
    src = _io.open_source(path)
    assert max(df.height for _, df in src.batches(None, 1_000_000, dictionary=True)) <= 1_400
    assert rank_features(path, "y").equals(ref)


def test_enum_from_dictionary_with_repeated_and_null_dictionary_values():
    idx = pa.array([0, 1, 2, None, 1, 0], pa.int32())
    repeated = pa.DictionaryArray.from_arrays(idx, pa.array(["x", "x", "y"]))  # "x" listed twice
    s = _io.enum_from_dictionary("r", pa.chunked_array([repeated, pa.DictionaryArray.from_arrays(
        pa.array([1, 0], pa.int32()), pa.array(["z", "x"]))]))
    assert isinstance(s.dtype, pl.Enum) and s.dtype.categories.to_list() == ["x", "y", "z"]
    assert s.cast(pl.String).to_list() == ["x", "x", "y", None, "x", "x", "x", "z"]
    with_null = pa.DictionaryArray.from_arrays(pa.array([0, 1, 1], pa.int32()), pa.array(["p", None]))
    assert _io.enum_from_dictionary("n", with_null).to_list() == ["p", None, None]  # decoded instead


@pytest.mark.parametrize("n_cats", [5, 5_000])  # bincount over the codes, and np.unique when codes outnumber rows
def test_enum_counts_equal_string_counts_for_unsorted_categories(n_cats):
    rng = np.random.default_rng(1)
    cats = [f"c{v}" for v in rng.permutation(n_cats)]  # categories not in sorted order
    values = rng.choice(cats[: max(2, n_cats // 3)], 300).tolist()
    values[::7] = [None] * len(values[::7])
    y = rng.integers(0, 3, 300)
    s = pl.Series("f", values, dtype=pl.Enum(cats))
    got, want = count_feature(s, y, 3), count_feature(s.cast(pl.String), y, 3)
    assert got.keys.to_list() == want.keys.to_list()
    np.testing.assert_array_equal(got.counts, want.counts)
    np.testing.assert_array_equal(got.nulls, want.nulls)


def test_merge_all_equals_pairwise_merges():
    frame = _frame(3_000, seed=4)
    src, _, feats, tspec = prepare(frame, "y", None, 16, None)
    from sparsearch.features._counts import count_batch

    parts = [count_batch(df, feats, tspec, offset=o) for o, df in src.batches(None, 700)]
    pairwise = parts[0]
    for p in parts[1:]:
        pairwise = pairwise.merge(p)
    _assert_same_counts(Counts.merge_all(parts), pairwise)
    a, b = parts[0].features["wide"], parts[1].features["wide"]
    assert merge_features(a, b).counts.sum() == a.counts.sum() + b.counts.sum()


def test_ray_shards_of_a_string_parquet_equal_single_process(features_ray, strings_parquet):
    frame, path = strings_parquet
    ref = rank_features(frame, "y", batch_size=1_400)
    assert rank_features(path, "y", batch_size=1_400, use_ray=True).equals(ref)


def _reference_counts(s: pl.Series, y: np.ndarray, k: int) -> tuple[list, np.ndarray, np.ndarray]:
    """Counts by a plain group-by of the non-null rows (the definition), for comparison."""
    valid = s.is_not_null().to_numpy()
    nulls = np.bincount(y[~valid], minlength=k)
    grouped = pl.DataFrame({"x": s.filter(pl.Series(valid)), "y": y[valid]}).group_by("x", "y").len().sort("x")
    keys = grouped["x"].unique().sort()
    table = np.zeros((len(keys), k), dtype=np.int64)
    pos = {v: i for i, v in enumerate(keys.to_list())}
    for x, c, n in grouped.iter_rows():
        table[pos[x], c] = n
    return keys.to_list(), table, nulls


@pytest.mark.parametrize("kind", ["small", "wide", "huge", "bool", "date", "all_null", "negative"])
def test_integer_counts_with_missing_values_equal_the_definition(kind):
    rng = np.random.default_rng(7)
    n = 4_000
    values = {
        "small": pl.Series(rng.integers(3, 40, n)),  # bincount over the span
        "wide": pl.Series(rng.integers(0, 10**7, n)),  # np.unique on 4-byte offsets
        "huge": pl.Series(rng.integers(-(2**60), 2**60, n)),  # np.unique on int64
        "bool": pl.Series(rng.random(n) < 0.3),
        "date": pl.Series(rng.integers(0, 50, n)).cast(pl.Date),
        "all_null": pl.Series([None] * n, dtype=pl.Int32),
        "negative": pl.Series(rng.integers(-20, -5, n), dtype=pl.Int16),
    }[kind]
    s = values.scatter(np.flatnonzero(rng.random(n) < 0.15), None)
    y = rng.integers(0, 3, n)
    got = count_feature(s, y, 3)
    phys = s.cast(pl.Int8) if kind == "bool" else s.to_physical()
    keys, table, nulls = _reference_counts(phys, y, 3)
    assert got.keys.tolist() == keys
    np.testing.assert_array_equal(got.counts, table)
    np.testing.assert_array_equal(got.nulls, nulls)


@pytest.mark.parametrize("dtype", [np.int64, np.int8, np.uint32, np.float64])
def test_union_keys_of_narrow_integer_keys_equals_sorting(dtype):
    from sparsearch.features._counts import union_keys

    rng = np.random.default_rng(3)
    lo, hi = {np.int8: (-128, 128), np.uint32: (0, 60)}.get(dtype, (-30, 60))
    for _ in range(200):
        sets = [np.unique(rng.integers(lo, hi, rng.integers(0, 30))).astype(dtype) for _ in range(rng.integers(1, 5))]
        union, positions = union_keys(sets)
        want = np.unique(np.concatenate(sets))
        assert union.dtype == want.dtype and np.array_equal(union, want)
        for keys, pos in zip(sets, positions):
            assert np.array_equal(union[pos], keys)


def test_polars_categorical_columns_and_a_string_target_in_parquet(tmp_path):
    frame = _frame(3_000, seed=9).with_columns(
        pl.col("mixed").cast(pl.Categorical).alias("cat"),
        pl.when(pl.col("y") == 1).then(pl.lit("yes")).otherwise(pl.lit("no")).alias("label"),
    ).drop("y")
    path = tmp_path / "c.parquet"
    frame.write_parquet(path, row_group_size=500)  # polars stores Categorical as a dictionary of strings
    src = _io.open_source(path)
    first = next(src.batches(None, 1_000_000, dictionary=True))[1]
    assert isinstance(first.schema["cat"], pl.Enum) and isinstance(first.schema["label"], pl.Enum)
    ranked = rank_features(path, "label")
    assert ranked.equals(rank_features(frame.with_columns(pl.col("cat").cast(pl.String)), "label"))
    assert ranked.filter(pl.col("feature") == "cat")["score"][0] == ranked.filter(pl.col("feature") == "mixed")["score"][0]


def test_large_row_group_streamed_in_record_batches_counts_the_same(tmp_path):
    frame = _frame(2_000, seed=11)
    path = tmp_path / "one_group.parquet"
    frame.write_parquet(path, row_group_size=2_000)  # one row group, over 4 x batch_size: iter_batches path
    src = _io.open_source(path)
    heights = [df.height for _, df in src.batches(None, 300, dictionary=True)]
    assert max(heights) <= 300 and sum(heights) == 2_000
    assert rank_features(path, "y", batch_size=300).equals(rank_features(frame, "y", batch_size=300))


def test_empty_dictionary_column_reads_as_empty_strings():
    empty = pa.chunked_array([], type=pa.dictionary(pa.int32(), pa.string()))
    s = _io.enum_from_dictionary("e", empty)
    assert s.len() == 0 and s.dtype == pl.String
