"""The pair ranker on two high-cardinality IDs: the "auto" cap, its memory bound and its exact chance term."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsearch.errors import SpecError
from sparsearch.features import RankOptions, make_affinity_log, rank_features, rank_interactions
from sparsearch.features._pairs import count_pairs, pair_cap, plan_pairs
from sparsearch.features._rank import rank_counts
from sparsearch.features._tables import MAX_PAIR_LEVELS, PAIR_LEVELS, prepare


def _rank_of(pairs: pl.DataFrame, a: str, b: str) -> int | None:
    for row in pairs.iter_rows(named=True):
        if {row["feature_a"], row["feature_b"]} == {a, b}:
            return row["rank"]
    return None


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_user_item_pair_ranks_first_and_a_16_level_cap_misses_it(seed):
    df = make_affinity_log(seed=seed)  # 300,000 rows, 2,000 users x 1,500 items
    assert df["user_id"].n_unique() > 1_000 and df["item_id"].n_unique() > 1_000
    single = dict(zip(*rank_features(df, "click").select("feature", "score")))
    # the marginals are nearly uninformative: each ID alone carries under a tenth of a weak context feature
    assert max(abs(single["user_id"]), abs(single["item_id"])) < 0.1 * single["ctx_0_c3"]
    pairs = rank_interactions(df, "click", top=1_000)
    top = pairs.row(0, named=True)
    assert {top["feature_a"], top["feature_b"]} == {"user_id", "item_id"}
    assert top["score"] > 1.5 * pairs["score"][1]
    assert top["levels_a"] >= 1_000 and top["levels_b"] >= 1_000  # sqrt(300,000 / 0.25) = 1,095 codes each
    old = rank_interactions(df, "click", top=1_000, pair_levels=16)  # the cap of earlier versions
    assert old["levels_a"].max() == 16
    assert _rank_of(old, "user_id", "item_id") > 3


def test_affinity_log_is_seeded_documented_and_checked():
    a, p = make_affinity_log(3_000, seed=4, return_probability=True)
    assert a.equals(make_affinity_log(3_000, seed=4)) and not a.equals(make_affinity_log(3_000, seed=5))
    assert a.columns == ["user_id", "item_id", "ctx_0_c3", "ctx_1_c24", "noise_0_c4", "noise_1_c43",
                         "noise_2_c464", "noise_3_c5000", "click"]
    assert p.shape == (3_000,) and abs(float(p.mean()) - 0.2) < 0.01
    assert a["user_id"].max() < 2_000 and a["item_id"].max() < 1_500
    for bad, match in [({"n_users": 1}, "n_users must be an integer >= 2, got 1"),
                       ({"latent_dim": 0}, "latent_dim must be an integer >= 1, got 0"),
                       ({"affinity_scale": -1.0}, "affinity_scale must be a number >= 0, got -1.0"),
                       ({"id_skew": 0}, r"id_skew must be a number > 0 or None \(uniform\), got 0"),
                       ({"positive_rate": 1.0}, r"positive_rate must be in \(0, 1\), got 1.0")]:
        with pytest.raises(SpecError, match=match):
            make_affinity_log(100, **bad)
    from sparsearch.features import DATASETS

    assert DATASETS["affinity_log"] is make_affinity_log  # a study can name it: [data] generator = "affinity_log"


def test_chance_term_is_the_permutation_mean_of_the_capped_table():
    """The joint chance MI of a capped sparse pair equals the mean plug-in MI of that capped table over label
    permutations (Monte Carlo, within 4 standard errors): the correction is exact for the table actually used."""
    df = make_affinity_log(2_000, n_users=400, n_items=300, n_context=0, n_noise=0, seed=2)
    opts = RankOptions(interactions=1)
    src, _, feats, tspec = prepare(df, "click", None, opts.n_bins, None)
    state = rank_counts(src, feats, tspec, opts)
    plan = plan_pairs(state.finals, [0, 1], tspec, state.counts.classes, opts, state.counts.n_rows)
    assert [c.size for c in plan.coders] == [89, 89]  # sqrt(2,000 / 0.25) = 89 < 400 and 300 levels: capped
    table = plan.table(count_pairs(src, plan, batch_size=700, use_ray=False, ray_address=None), 0)
    from sparsearch.features._pairs import score_pairs

    chance = score_pairs(plan, count_pairs(src, plan, batch_size=10_000, use_ray=False, ray_address=None))[0]
    joint = plan.coders[0].codes(df["user_id"]) * plan.coders[1].size + plan.coders[1].codes(df["item_id"])
    y = df["click"].to_numpy().astype(np.int64)
    assert np.array_equal(np.bincount(joint * 2 + y, minlength=89 * 89 * 2).reshape(89, 89, 2), table)
    rng = np.random.default_rng(0)
    from sparsearch.features._chance import table_mi

    draws = np.array([table_mi(np.bincount(joint * 2 + rng.permutation(y), minlength=89 * 89 * 2)
                               .reshape(89 * 89, 2))[0] for _ in range(400)])
    se = draws.std() / np.sqrt(len(draws))
    assert abs(draws.mean() - chance.chance_joint) < 4 * se
    assert chance.chance_joint > 0.5 * chance.joint_mi  # sparse: chance is most of the plug-in MI


levels_st = st.lists(st.integers(1, 50_000), min_size=2, max_size=12)


@settings(max_examples=60, deadline=None)
@given(levels=levels_st, n_rows=st.integers(10, 5_000_000), k=st.integers(2, 8),
       max_cells=st.integers(1_024, 1 << 26), min_count=st.sampled_from([0.1, 0.25, 1.0, 4.0]))
def test_auto_cap_is_the_largest_that_fits(levels, n_rows, k, max_cells, min_count):
    finals = [SimpleNamespace(table=np.zeros((lv, k))) for lv in levels]
    chosen = list(range(len(levels)))
    pairs = [(a, b) for a in chosen for b in chosen if a < b]

    def cells(cap: int) -> int:
        size = [min(lv, cap) + 1 for lv in levels]
        return sum(size[a] * size[b] for a, b in pairs) * k

    try:
        cap = pair_cap(finals, chosen, k, n_rows, pairs, pair_levels="auto", min_count=min_count, max_cells=max_cells)
    except SpecError as exc:
        assert cells(2) > max_cells and "even at 2 codes per feature" in str(exc)
        return
    rows_cap = min(max(int(np.sqrt(n_rows / min_count)), PAIR_LEVELS), MAX_PAIR_LEVELS, max(levels))
    assert 2 <= cap <= max(rows_cap, 2) and cells(cap) <= max_cells
    assert cap == max(rows_cap, 2) or cells(cap + 1) > max_cells  # the largest that fits
    # a fixed cap is used as given when it fits, and refused when it does not
    fixed = pair_cap(finals, chosen, k, n_rows, pairs, pair_levels=cap, min_count=min_count, max_cells=max_cells)
    assert fixed == cap


def test_auto_cap_merges_exactly_across_batches_and_ray_shards(features_ray):
    df = make_affinity_log(12_000, n_noise=2, seed=3)
    ref = rank_interactions(df, "click", top=100)
    assert ref["levels_a"].max() == 219  # sqrt(12,000 / 0.25): the IDs are capped
    assert rank_interactions(df, "click", top=100, batch_size=2_500).equals(ref)
    assert rank_interactions(df, "click", top=100, batch_size=4_000, use_ray=True).equals(ref)
