"""Pairwise interactions: chance-corrected interaction information of capped feature pairs."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from scipy.stats import spearmanr

from sparsearch.errors import SpecError
from sparsearch.features import RankOptions, rank, rank_features, rank_interactions
from sparsearch.features._tables import PAIR_MAX_CELLS


def _xor_with_noise(n: int, seed: int) -> tuple[pl.DataFrame, dict[str, int]]:
    """A pure-interaction pair (xa has 4 levels, xb 2; the label depends on (xa % 2) XOR xb only) among noise
    features of cardinalities 2 to 20,000, half uniform and half Zipf-skewed."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    cards: dict[str, int] = {}
    for i, c in enumerate(np.unique(np.geomspace(2, 20_000, 22).astype(int))):
        name = f"noise_{i}"
        if i % 2:
            p = 1.0 / np.arange(1, c + 1) ** 1.1
            cols[name] = rng.choice(c, n, p=p / p.sum())
        else:
            cols[name] = rng.integers(0, c, n)
        cards[name] = int(c)
    a, b = rng.integers(0, 4, n), rng.integers(0, 2, n)
    cols["xa"], cols["xb"] = a, b
    logit = 1.2 * np.where((a % 2) ^ b, 1.0, -1.0)
    cols["y"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(cols), cards


def test_pure_interaction_pair_ranks_first_and_noise_pairs_are_not_ordered_by_cardinality():
    df, cards = _xor_with_noise(40_000, seed=5)
    single = rank_features(df, "y")
    marg = dict(zip(single["feature"], single["adjusted_mi"]))
    assert abs(marg["xa"]) < 2e-4 and abs(marg["xb"]) < 2e-4  # no marginal signal at all
    pairs = rank_interactions(df, "y", top=10_000)
    assert pairs.height == 24 * 23 // 2
    assert (pairs["feature_a"][0], pairs["feature_b"][0]) == ("xa", "xb")
    noise = pairs.filter(pl.col("feature_a").str.starts_with("noise") & pl.col("feature_b").str.starts_with("noise"))
    assert pairs["score"][0] > 20 * noise["score"].max()
    log_card = [np.log(cards[a] * cards[b]) for a, b in zip(noise["feature_a"], noise["feature_b"])]
    rho = spearmanr(log_card, noise["score"]).statistic
    assert abs(rho) < 0.2, rho
    assert abs(float(noise["score"].mean())) < 0.2 * float(noise["score"].std())  # chance-corrected: centred on 0
    # capping ("auto"): at most sqrt(n_rows / 0.25) = 400 codes per feature, lowered until all 276 pairs' counts
    # fit in pair_max_cells (a 20,000-level feature keeps 353), and no feature keeps more codes than it has levels
    assert pairs["levels_a"].max() == pairs["levels_b"].max() == 353
    sizes = dict(zip(pairs["feature_a"], pairs["levels_a"])) | dict(zip(pairs["feature_b"], pairs["levels_b"]))
    assert sizes["xa"] == 4 and sizes["noise_0"] == 2
    cells = sum((sizes[a] + 1) * (sizes[b] + 1) * 2 for a, b in zip(pairs["feature_a"], pairs["feature_b"]))
    assert PAIR_MAX_CELLS * 0.95 < cells <= PAIR_MAX_CELLS
    assert set(pairs.columns) >= {"feature_a", "feature_b", "score", "rank", "redundancy"}


def test_pair_counts_merge_exactly_across_batches_and_ray_shards(features_ray, tmp_path):
    df, _ = _xor_with_noise(12_000, seed=1)
    df = df.select("noise_3", "noise_10", "noise_17", "xa", "xb", "y").with_columns(
        pl.when(pl.col("noise_10") % 7 == 0).then(None).otherwise(pl.col("noise_10")).alias("noise_10"),
        pl.col("xa").cast(pl.String).alias("xa"),
        (pl.col("noise_3").cast(pl.Float64) * 0.37).alias("noise_3"),
    )
    ref = rank_interactions(df, "y", top=100, batch_size=50_000)
    assert rank_interactions(df, "y", top=100, batch_size=977).equals(ref)
    assert rank_interactions(df, "y", top=100, batch_size=2_000, use_ray=True).equals(ref)
    path = tmp_path / "d.parquet"
    df.write_parquet(path, row_group_size=1_500)
    assert rank_interactions(path, "y", top=100, batch_size=3_000, use_ray=True).equals(ref)
    dropped = rank_interactions(df, "y", top=100, missing="drop", batch_size=977)
    assert dropped.equals(rank_interactions(df, "y", top=100, missing="drop"))
    assert (dropped["feature_a"][0], dropped["feature_b"][0]) == ("xa", "xb")


def test_copies_are_redundant_and_candidates_follow_the_stated_rule():
    rng = np.random.default_rng(2)
    n = 20_000
    a = rng.integers(0, 300, n)
    y = (rng.random(n) < np.where(a % 3 == 0, 0.6, 0.2)).astype(int)
    relabel = rng.permutation(300)
    df = pl.DataFrame({"a": a, "copy": relabel[a], "w": rng.integers(0, 4, n) + (y * (rng.random(n) < 0.3)),
                       "n1": rng.integers(0, 50, n), "n2": rng.integers(0, 5, n), "y": y})
    pairs = rank_interactions(df, "y", top=100)
    row = pairs.filter((pl.col("feature_a") == "a") & (pl.col("feature_b") == "copy")).row(0, named=True)
    assert row["redundancy"] > 0.99 and row["score"] < 0  # a copy adds nothing: negative interaction
    # above max_pair_features, the candidates are the most relevant features (adjusted MI), in column order
    top3 = rank_interactions(df, "y", top=100, max_pair_features=3)
    best = rank_features(df, "y")["feature"].to_list()[:3]
    assert top3.height == 3 and set(top3["feature_a"]) | set(top3["feature_b"]) == set(best)
    small = rank_interactions(df, "y", top=2, pair_levels=4)
    assert small.height == 2 and small["levels_a"].max() <= 4


def test_rank_returns_pairs_and_report_from_one_count():
    df, _ = _xor_with_noise(5_000, seed=3)
    res = rank(df, "y", RankOptions(interactions=3), report="basic")
    assert res.pairs is not None and res.pairs.height == 3 and res.pairs["rank"].to_list() == [1, 2, 3]
    assert res.quality is not None and res.features.equals(rank_features(df, "y"))
    assert set(res.seconds) == {"count", "pairs", "report"}
    assert rank(df, "y").pairs is None


def test_bad_pair_options():
    df, _ = _xor_with_noise(500, seed=0)
    with pytest.raises(SpecError, match=r"pair_levels must be 'auto' or an integer in \[2, 16384\], got 1"):
        rank_interactions(df, "y", pair_levels=1)
    with pytest.raises(SpecError, match=r"pair_levels must be 'auto' or an integer in \[2, 16384\], got 'max'"):
        RankOptions(pair_levels="max")
    with pytest.raises(SpecError, match=r"pair_min_count must be a number > 0 \(rows per joint value\), got 0"):
        rank_interactions(df, "y", pair_min_count=0)
    with pytest.raises(SpecError, match="pair_min_count must be a number > 0"):
        RankOptions(pair_min_count=float("nan"))
    with pytest.raises(SpecError, match=r"pair_max_cells must be an integer >= 1024 .*got 100"):
        rank_interactions(df, "y", pair_max_cells=100)
    # a fixed cap whose counts do not fit is refused, naming what to change
    with pytest.raises(SpecError, match=r"pair_levels=2000 needs .* counted cells for 276 pairs, over "
                       r"pair_max_cells=1,024; lower pair_levels, use 'auto', or raise pair_max_cells"):
        rank_interactions(df, "y", pair_levels=2000, pair_max_cells=1024)
    with pytest.raises(SpecError, match="max_pair_features must be an integer >= 2"):
        rank_interactions(df, "y", max_pair_features=1)
    with pytest.raises(SpecError, match="top must be a positive integer, got 0"):
        rank_interactions(df, "y", top=0)
    with pytest.raises(SpecError, match="interactions must be a non-negative integer"):
        RankOptions(interactions=-1)
    with pytest.raises(SpecError, match="unknown quality report 'all'"):
        rank(df, "y", report="all")


def _copies_data(n: int, seed: int) -> pl.DataFrame:
    """Six independent informative features (4 to 3,000 levels), an exact relabelled copy of the 4-level one, a
    near copy (15% of rows re-drawn) of the 200-level one, and noise of cardinalities 2 to 20,000."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    logit = np.full(n, -1.5)
    for card in [4, 12, 50, 200, 800, 3000]:
        x = rng.integers(0, card, n)
        logit += rng.normal(0.0, 0.5, card)[x]
        cols[f"inf_c{card}"] = x
    cols["copy_of_inf_c4"] = rng.permutation(4)[cols["inf_c4"]]
    redraw = rng.random(n) < 0.15
    cols["near_copy_of_inf_c200"] = np.where(redraw, rng.integers(0, 200, n), rng.permutation(200)[cols["inf_c200"]])
    for i, card in enumerate(np.geomspace(2, 20_000, 10).astype(int)):
        cols[f"noise_{i}_c{card}"] = rng.integers(0, card, n)
    cols["y"] = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame(cols)


@pytest.mark.parametrize("method", ["mrmr", "3mr"])
def test_redundancy_aware_methods_demote_copies(method, tmp_path, capsys):
    import json

    from sparsearch.cli import main
    from sparsearch.features import make_click_log

    for seed in (0, 1):
        path = tmp_path / f"copies{seed}.parquet"
        _copies_data(60_000, seed).write_parquet(path)
        # as a new user runs it
        assert main(["rank", str(path), "--target", "y", "--method", method, "--json"]) == 0
        order = [r["feature"] for r in json.loads(capsys.readouterr().out)["features"]]
        informative = [order.index(f) for f in order if f.startswith("inf_")]
        assert max(informative) < order.index("copy_of_inf_c4"), (seed, order[:10])
        assert order.index("copy_of_inf_c4") >= 6  # the exact copy of the 4-level feature is out of the top 6
        assert order.index("near_copy_of_inf_c200") > order.index("inf_c200")
        if method == "mrmr":  # 3mr keeps (1 - redundancy) of a near copy's relevance: see BENCHMARKS.md
            assert max(informative) < order.index("near_copy_of_inf_c200"), (seed, order[:10])
        # the benchmark's data: both copies below every independent informative feature
        bench = make_click_log(40_000, n_noise=20, n_numeric=0, max_cardinality=100_000, seed=seed)
        order = rank_features(bench, "click", method=method)["feature"].to_list()
        assert max(order.index(f) for f in order if f.startswith("inf_")) < min(
            order.index(f) for f in order if f.startswith("red_")), (seed, order[:10])
    # plain adjusted MI cannot see redundancy: the exact copy ties its original
    plain = rank_features(_copies_data(60_000, 0), "y")["feature"].to_list()
    assert abs(plain.index("copy_of_inf_c4") - plain.index("inf_c4")) == 1
