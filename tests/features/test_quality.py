"""Ranking quality on generated click logs with known roles, and the data-quality report."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from sparsearch.errors import SpecError
from sparsearch.features import DATASETS, make_click_log, quality_report, rank_features


@pytest.fixture(scope="module")
def click60k():
    return make_click_log(60_000, n_noise=40, n_numeric=0, max_cardinality=20_000, seed=11)


def test_generator_roles_and_registry():
    df = make_click_log(3_000, n_informative=4, n_redundant=2, n_noise=5, n_numeric=2, seed=2)
    assert DATASETS["click_log"] is make_click_log
    names = df.columns
    assert [c for c in names if c.startswith("inf_")] == ["inf_0", "inf_1", "inf_2", "inf_3"]
    assert [c for c in names if c.startswith("red_")] == ["red_0_of_inf_3", "red_1_of_inf_2"]
    noise = [c for c in names if c.startswith("noise_")]
    assert len(noise) == 5 and noise[-1].endswith("_c20000")
    assert df["click"].dtype == pl.Int8 and 0.05 < df["click"].mean() < 0.15
    assert df["num_0"].null_count() > 0
    # the exact copy is a bijective re-coding of its original
    pairs = df.select("inf_3", "red_0_of_inf_3").unique()
    assert pairs.height == df["inf_3"].n_unique() == df["red_0_of_inf_3"].n_unique()
    assert make_click_log(500, seed=5).equals(make_click_log(500, seed=5))
    assert not make_click_log(500, seed=5).equals(make_click_log(500, seed=6))
    with pytest.raises(SpecError, match="positive_rate must be in"):
        make_click_log(100, positive_rate=1.5)


def test_default_method_finds_informative_and_ignores_noise_cardinality(click60k):
    r = rank_features(click60k, "click")
    top6 = r["feature"].head(6).to_list()
    assert sum(f.startswith("inf_") for f in top6) >= 5, top6
    noise = r.filter(pl.col("feature").str.starts_with("noise_"))
    assert noise["rank"].min() > 6
    card = noise["feature"].str.extract(r"_c(\d+)$").cast(pl.Int64).to_numpy()
    rho, p = spearmanr(noise["rank"].to_numpy(), card)
    assert p > 0.01, (rho, p)
    # plain MI does show the bias this method removes
    plain = rank_features(click60k, "click", method="mi").filter(pl.col("feature").str.starts_with("noise_"))
    rho_plain, _ = spearmanr(plain["rank"].to_numpy(), plain["feature"].str.extract(r"_c(\d+)$").cast(pl.Int64).to_numpy())
    assert rho_plain < -0.8
    assert sum(f.startswith("inf_") for f in rank_features(click60k, "click", method="mi")["feature"].head(6)) <= 3


def test_informative_features_are_learnable(click60k):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    top = rank_features(click60k, "click")["feature"].head(6).to_list()
    # target-encode each top feature on the first half, fit on it, score on the second half
    half = click60k.height // 2
    train, test = click60k.head(half), click60k.tail(half)
    cols_tr, cols_te = [], []
    prior = train["click"].mean()
    for f in top:
        stats = train.group_by(f).agg(pl.col("click").sum().alias("s"), pl.len().alias("n"))
        enc = stats.with_columns(((pl.col("s") + 20 * prior) / (pl.col("n") + 20)).alias("e")).select(f, "e")
        cols_tr.append(train.select(f).join(enc, on=f, how="left")["e"].fill_null(prior).to_numpy())
        cols_te.append(test.select(f).join(enc, on=f, how="left")["e"].fill_null(prior).to_numpy())
    model = LogisticRegression().fit(np.log(np.column_stack(cols_tr)), train["click"].to_numpy())
    auc = roc_auc_score(test["click"].to_numpy(), model.predict_proba(np.log(np.column_stack(cols_te)))[:, 1])
    assert auc > 0.7, auc


def test_quality_report_findings():
    rng = np.random.default_rng(0)
    n = 5_000
    y = (rng.random(n) < 0.2).astype(int)
    a = rng.integers(0, 20, n)
    df = pl.DataFrame(
        {
            "const": np.ones(n, dtype=int),
            "almost": np.where(rng.random(n) < 0.995, 0, 1),
            "holes": pl.Series(np.where(rng.random(n) < 0.7, np.nan, rng.normal(size=n))),
            "row_id": rng.permutation(n),
            "rare": np.where(rng.random(n) < 0.6, rng.integers(0, 2_000, n), -1),
            "a": a,
            "a_copy": (a * 7 + 3) % 101,
            "leak": y * 3 + 1,
            "fine": rng.integers(0, 5, n),
            "y": y,
        }
    )
    rep = quality_report(df, "y")
    found = {(f, i) for f, i in rep.select("feature", "issue").iter_rows()}
    assert ("const", "constant") in found
    assert ("almost", "near-constant") in found
    assert ("holes", "mostly-missing") in found
    assert ("row_id", "id-like") in found
    assert ("rare", "rare-dominated") in found
    assert ("leak", "leakage-suspect") in found
    assert ("a", "duplicate") in found or ("a_copy", "duplicate") in found
    assert not any(f == "fine" for f, _ in found)
    assert rep.columns == ["feature", "issue", "detail", "value"]
    assert all("\n" not in d for d in rep["detail"])
