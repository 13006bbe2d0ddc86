from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import mutual_info_score
from sklearn.metrics.cluster import adjusted_mutual_info_score
from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information

from sparsearch.errors import DataError, SpecError
from sparsearch.features import METHODS, available_methods, pairwise_relevance, rank_features
from sparsearch.features._chance import expected_mi
from sparsearch.features._counts import TargetSpec, count_batch

COLUMNS = ["feature", "score", "rank", "cardinality", "missing_rate", "mi", "chance_mi"]


def _small(n=3_000, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 3, n)
    y = ((a == 2) ^ (rng.random(n) < 0.2)).astype(np.int64)
    return pl.DataFrame(
        {
            "sig": a,
            "sig_str": pl.Series([f"v{v}" for v in a]),
            "idlike": rng.permutation(n),
            "noise": rng.integers(0, 50, n),
            "flag": rng.random(n) < 0.5,
            "num": rng.normal(size=n) + y,
            "y": y,
        }
    )


def test_contract_columns_and_types():
    r = rank_features(_small(), "y")
    assert r.columns[: len(COLUMNS)] == COLUMNS
    assert r["rank"].to_list() == list(range(1, r.height + 1))
    assert r.schema["rank"] == pl.Int64 and r.schema["cardinality"] == pl.Int64
    assert r.height == 6
    assert set(r["feature"].head(3)) == {"sig", "sig_str", "num"}
    assert r.filter(pl.col("feature") == "idlike")["rank"][0] >= 4
    assert (r["score"].diff().drop_nulls() <= 1e-15).all()


def test_registry_and_unknown_method():
    for name in ["mi", "adjusted-mi", "g-test", "nmi", "adjusted-nmi", "3mr", "mrmr"]:
        assert name in METHODS and name in available_methods()
    with pytest.raises(SpecError, match=r"unknown ranking method 'adjusted_mi' \(did you mean 'adjusted-mi'\?\)"):
        rank_features(_small(), "y", method="adjusted_mi")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_ranks_signal_above_id_noise(method):
    df = _small(2_000, seed=1).drop("idlike" if method in ("mi", "nmi") else [])
    r = rank_features(df, "y", method=method)
    top = r["feature"].head(2).to_list()
    assert "sig" in top or "sig_str" in top, (method, r)
    assert r.filter(pl.col("feature") == "noise")["rank"][0] > 2


def test_plain_mi_matches_sklearn_and_emi_matches_ami():
    df = _small(1_500, seed=2)
    r = rank_features(df, "y", method="mi")
    row = r.filter(pl.col("feature") == "noise")
    assert row["mi"][0] == pytest.approx(mutual_info_score(df["noise"], df["y"]), rel=1e-9)
    table = np.zeros((50, 2), dtype=np.int64)
    np.add.at(table, (df["noise"].to_numpy(), df["y"].to_numpy()), 1)
    table = table[table.sum(1) > 0]
    assert expected_mi(table) == pytest.approx(expected_mutual_information(sp.csr_matrix(table), 1_500), rel=1e-9)
    adj = rank_features(df, "y", method="adjusted-nmi").filter(pl.col("feature") == "noise")["score"][0]
    assert adj == pytest.approx(adjusted_mutual_info_score(df["noise"], df["y"]), abs=1e-9)


def test_id_like_noise_plain_mi_top_but_adjusted_not():
    df = _small(3_000, seed=4)
    assert rank_features(df, "y", method="mi")["feature"][0] == "idlike"
    adj = rank_features(df, "y").filter(pl.col("feature") == "idlike")
    assert abs(adj["score"][0]) < 0.01  # an all-distinct column carries no information beyond chance
    assert adj["chance_mi"][0] == pytest.approx(adj["mi"][0], rel=1e-6)


def test_input_types_agree(tmp_path):
    df = _small(1_000, seed=5).select("sig", "noise", "num", "y")
    ref = rank_features(df, "y")
    pdf = df.to_pandas()
    arr = df.to_numpy()
    assert rank_features(pdf, "y").equals(ref)
    r_np = rank_features(arr.astype(np.float64), "x3")
    assert r_np["feature"].to_list()[0] in ("x0", "x2")
    ints = df.select("sig", "noise", "y").to_numpy()
    r_sparse = rank_features(sp.csr_matrix(ints), "t", feature_names=["sig", "noise", "t"])
    r_dense = rank_features(df.select("sig", "noise", pl.col("y").alias("t")), "t")
    assert r_sparse.select("feature", "score").equals(r_dense.select("feature", "score"))
    df.write_parquet(tmp_path / "d.parquet")
    df.write_csv(tmp_path / "d.csv")
    assert rank_features(tmp_path / "d.parquet", "y").equals(ref)
    assert rank_features(tmp_path / "d.csv", "y", batch_size=77).select("feature", "score").equals(ref.select("feature", "score"))


def test_streaming_equals_in_memory_exactly(tmp_path, click20k):
    path = tmp_path / "c.parquet"
    click20k.write_parquet(path, row_group_size=3_000)
    ref = rank_features(click20k, "click")
    seen = []
    streamed = rank_features(path, "click", batch_size=2_500, progress=lambda d, t: seen.append((d, t)))
    assert streamed.equals(ref)
    assert seen[-1] == (20_000, 20_000) and len(seen) >= 8
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def _counts_equal(a, b):
    assert list(np.asarray(a.classes)) == list(np.asarray(b.classes))
    for name, fa in a.features.items():
        fb = b.features[name]
        assert list(np.asarray(fa.keys)) == list(np.asarray(fb.keys)), name
        assert np.array_equal(fa.counts, fb.counts) and np.array_equal(fa.nulls, fb.nulls)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(20, 300),
    cuts=st.lists(st.floats(0.01, 0.99), min_size=1, max_size=4),
    seed=st.integers(0, 10_000),
)
def test_merged_counts_from_any_split_equal_unsplit(n, cuts, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 12, n)
    df = pl.DataFrame(
        {
            "i": pl.Series([None if m else int(v) * 1000 - 5000 for m, v in zip(rng.random(n) < 0.1, x)], dtype=pl.Int64),
            "s": [f"k{v}" if v % 5 else None for v in x],
            "f": np.where(rng.random(n) < 0.05, np.nan, rng.normal(size=n).round(1)),
            "y": rng.choice(["a", "b", "c"], n, p=[0.6, 0.3, 0.1]),
        }
    )
    spec = TargetSpec("y", "multiclass")
    whole = count_batch(df, ["i", "s", "f"], spec)
    bounds = sorted({0, n, *[int(c * n) for c in cuts]})
    parts = [count_batch(df.slice(lo, hi - lo), ["i", "s", "f"], spec) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
    order = rng.permutation(len(parts))
    merged = parts[order[0]]
    for k in order[1:]:
        merged = merged.merge(parts[k])
    _counts_equal(merged, whole)
    assert merged.n_rows == whole.n_rows


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 1_000))
def test_permuting_rows_or_renaming_columns_keeps_ranking(seed):
    df = _small(800, seed=seed % 7).drop("idlike", "sig_str")  # no exact ties: they follow column order
    ref = rank_features(df, "y")
    perm = np.random.default_rng(seed).permutation(df.height)
    shuffled = rank_features(df[perm], "y")
    assert shuffled.select("feature", "rank").equals(ref.select("feature", "rank"))
    assert np.allclose(shuffled["score"], ref["score"], rtol=1e-9, atol=1e-12)
    renamed = rank_features(df.rename({c: f"z_{c}" for c in df.columns}), "z_y")
    assert renamed["feature"].to_list() == [f"z_{f}" for f in ref["feature"]]
    reordered = rank_features(df.select(list(reversed(df.columns))), "y")
    assert reordered.select("feature", "rank").equals(ref.select("feature", "rank"))


def test_target_types():
    rng = np.random.default_rng(0)
    n = 3_000
    a = rng.integers(0, 4, n)
    b = rng.integers(0, 4, n)
    cont = a * 1.5 + rng.normal(size=n)
    r = rank_features(pl.DataFrame({"a": a, "b": b, "t": cont}), "t", n_bins=8)
    assert r["feature"][0] == "a"
    assert r["target_binning"][0].startswith("quantile(8)")
    multi = np.where(rng.random(n) < 0.7, b, rng.integers(0, 4, n))
    r = rank_features(pl.DataFrame({"a": a, "b": b, "t": [f"c{v}" for v in multi]}), "t")
    assert r["feature"][0] == "b" and r["target_binning"][0] == "multiclass(4 classes)"
    r = rank_features(pl.DataFrame({"a": a, "b": b, "t": a > 1}), "t")
    assert r["feature"][0] == "a" and r["target_binning"][0] == "binary(2 classes)"


def test_numeric_binning_and_missing_policy():
    rng = np.random.default_rng(1)
    n = 4_000
    x = rng.normal(size=n)
    y = (x + rng.normal(size=n) > 0).astype(int)
    miss = np.where(y == 1, np.nan, 1.0)  # informative missingness (NaN counts as missing)
    df = pl.DataFrame({"x": x, "m": miss, "y": y})
    r = rank_features(df, "y", n_bins=10)
    rx = r.filter(pl.col("feature") == "x")
    assert rx["binning"][0] == "quantile(10)" and rx["levels"][0] == 10 and 1000 < rx["cardinality"][0] < n
    rm = r.filter(pl.col("feature") == "m")
    assert rm["missing_rate"][0] == pytest.approx(y.mean())
    assert rm["mi"][0] > 0.3  # missingness as a category carries the target
    dropped = rank_features(df, "y", missing="drop").filter(pl.col("feature") == "m")
    assert dropped["mi"][0] == 0.0
    with pytest.raises(SpecError, match="unknown missing-value policy 'ignore'"):
        rank_features(df, "y", missing="ignore")
    with pytest.raises(SpecError, match="n_bins must be an integer >= 2"):
        rank_features(df, "y", n_bins=1)


def test_float_features_are_counted_in_bounded_buckets():
    """Floats are counted under 8-significant-bit keys: the table never grows with the number of distinct floats."""
    from sparsearch.features._counts import count_batch, float_buckets

    rng = np.random.default_rng(3)
    n = 300_000
    x = rng.lognormal(0.0, 3.0, size=n) * rng.choice([-1.0, 1.0], size=n)  # ~n distinct values over many octaves
    y = (x > np.median(x)).astype(np.int64)
    spec = TargetSpec("y", "binary")
    counts = count_batch(pl.DataFrame({"x": x, "y": y}), ["x"], spec)
    keys = counts.features["x"].keys
    assert len(np.unique(x)) == n and len(keys) < 20_000  # 256 keys per octave at most
    assert np.array_equal(keys, np.unique(float_buckets(x)))
    assert np.all(np.abs(float_buckets(x) - x) <= np.abs(x) * 2.0**-7)  # relative error of 8 significant bits
    r = rank_features(pl.DataFrame({"x": x, "y": y}), "y", n_bins=8).row(0, named=True)
    assert r["binning"] == "quantile(8)" and r["mi"] == pytest.approx(np.log(2), rel=0.01)


def test_bad_inputs():
    df = _small(100)
    with pytest.raises(DataError, match="target column 'yy' not found"):
        rank_features(df, "yy")
    with pytest.raises(DataError, match="feature column 'nois' not found .*did you mean 'noise'"):
        rank_features(df, "y", features=["nois"])
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        rank_features(df, "y", batch_size=0)
    with pytest.raises(DataError, match="unsupported data type"):
        rank_features({"a": [1]}, "a")
    with pytest.raises(DataError, match="one class"):
        rank_features(df.with_columns(pl.lit(0).alias("y")), "y")


def test_pairwise_relevance_finds_xor():
    rng = np.random.default_rng(0)
    n = 4_000
    a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    y = (a ^ b) ^ (rng.random(n) < 0.05)
    df = pl.DataFrame({"a": a, "b": b, "c": rng.integers(0, 30, n), "d": rng.integers(0, 2, n), "y": y})
    marg = rank_features(df, "y")
    assert marg["score"].max() < 0.01  # no marginal signal at all
    pairs = pairwise_relevance(df, "y")
    assert {pairs["feature_a"][0], pairs["feature_b"][0]} == {"a", "b"}
    assert pairs["gain"][0] > 0.4 and pairs["gain"][1] < 0.05
    assert set(pairs.columns) >= {"feature_a", "feature_b", "mi_pair", "gain"}


def test_3mr_and_mrmr_rank_copies_below_originals(click20k):
    for method in ["3mr", "mrmr"]:
        r = rank_features(click20k, "click", method=method)
        rank = dict(zip(r["feature"], r["rank"]))
        for f in rank:
            if f.startswith("red_"):
                orig = f.split("_of_")[1]
                assert rank[f] > rank[orig], (method, f, rank[f], rank[orig])
        exact = [f for f in rank if f.startswith("red_0_")][0]
        assert rank[exact] > 8  # an exact copy adds nothing once its original is selected
