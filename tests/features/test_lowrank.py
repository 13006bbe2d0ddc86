"""The low-rank interaction test of a pair of high-cardinality features (features/_lowrank.py) and its place in
the pair ranking: a planted user x item affinity is found, noise and additive effects are not flagged."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from sparsearch.errors import SpecError
from sparsearch.features import RankOptions, make_affinity_log, rank_interactions
from sparsearch.features._lowrank import MIN_LEVELS, Z_MIN, lowrank_interaction


def _table(a: np.ndarray, b: np.ndarray, y: np.ndarray, la: int, lb: int, k: int = 2) -> np.ndarray:
    t = np.zeros((la, lb, k), dtype=np.int64)
    np.add.at(t, (a, b, y), 1)
    return t


def _pair(kind: str, seed: int = 0, n: int = 40_000, la: int = 60, lb: int = 50, k: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, la, n), rng.integers(0, lb, n)
    if kind == "affinity":  # logit = 1.5 * sqrt(2) * u_a . v_b, unit vectors: no marginal effect in expectation
        u = rng.normal(size=(la, 2))
        v = rng.normal(size=(lb, 2))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        v -= v.mean(axis=0)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        logit = 1.5 * np.sqrt(2) * np.sum(u[a] * v[b], axis=1) - 1.0
    elif kind == "additive":  # strong separate effects, no interaction on the logit scale
        logit = 1.5 * (rng.normal(size=la)[a] + rng.normal(size=lb)[b]) - 1.0
    else:
        logit = np.full(n, -1.0)
    if k == 2:
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    else:  # the logit moves class 0 against the others
        p0 = 1 / (1 + np.exp(-logit))
        y = np.where(rng.random(n) < p0, 0, rng.integers(1, k, n))
    return _table(a, b, y, la, lb, k)


def test_a_planted_affinity_is_flagged_and_noise_or_additive_effects_are_not():
    assert lowrank_interaction(_pair("affinity")).z >= Z_MIN
    assert lowrank_interaction(_pair("affinity", k=3)).z >= Z_MIN  # every class's block
    for seed in range(3):
        assert lowrank_interaction(_pair("noise", seed=seed)).z < Z_MIN
        # on the probability scale these effects are curved (rank-one residuals); a logistic model has none
        assert lowrank_interaction(_pair("additive", seed=seed)).z < Z_MIN


def test_the_test_is_deterministic_and_screens_before_drawing_more():
    t = _pair("affinity")
    one, two = lowrank_interaction(t, seed=3), lowrank_interaction(t, seed=3)
    assert one == two and one.draws == 16
    noise = lowrank_interaction(_pair("noise"))
    assert noise.draws == 4 and noise.z < 3.0


def test_the_shared_other_code_is_left_out():
    t = _pair("affinity")
    other = t.copy()
    other[-1] = 0
    other[-1, :, 1] = np.arange(t.shape[1]) * 40  # pooled levels: any structure at all in the last row
    assert lowrank_interaction(t, drop_other_a=True) == lowrank_interaction(other, drop_other_a=True)
    assert lowrank_interaction(t) != lowrank_interaction(other)


def test_rank_interactions_puts_the_planted_user_item_pair_first():
    df = make_affinity_log(60_000, n_users=300, n_items=200, seed=0)
    pairs = rank_interactions(df, "click", top=30)
    top = pairs.row(0, named=True)
    assert {top["feature_a"], top["feature_b"]} == {"user_id", "item_id"}
    assert top["low_rank"] and top["lowrank_z"] >= Z_MIN
    assert pairs.get_column("low_rank").sum() == 1  # no noise pair is flagged
    tested = pairs.filter(pl.col("lowrank_z").is_not_null())
    assert tested.height >= 3
    assert (tested.select(pl.min_horizontal("levels_a", "levels_b")).to_series() >= MIN_LEVELS).all()
    # switched off: no test, every pair ordered by its score
    plain = rank_interactions(df, "click", top=30, lowrank_z=float("inf"))
    assert plain.get_column("lowrank_z").null_count() == plain.height and not plain.get_column("low_rank").any()
    assert plain.get_column("score").to_list() == sorted(plain.get_column("score").to_list(), reverse=True)


def test_streamed_batches_give_the_same_test():
    df = make_affinity_log(40_000, n_users=200, n_items=150, n_noise=1, seed=1)
    whole = rank_interactions(df, "click", top=10)
    batched = rank_interactions(df, "click", top=10, batch_size=7_000)
    assert whole.get_column("lowrank_z").to_list() == batched.get_column("lowrank_z").to_list()
    assert whole.select("feature_a", "feature_b").rows() == batched.select("feature_a", "feature_b").rows()


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), True, "6"])
def test_a_bad_lowrank_z_is_one_clear_error(bad):
    with pytest.raises(SpecError, match="lowrank_z must be a number > 0"):
        RankOptions(lowrank_z=bad)


def test_a_low_rank_pair_is_crossed_even_with_a_negative_score():
    from sparsearch.search.data import cross_recipes

    df = pl.DataFrame({"u": [1, 2, 3, 1], "i": [5, 6, 5, 6], "n": [0, 1, 0, 1]})
    pairs = pl.DataFrame({"feature_a": ["u", "u"], "feature_b": ["i", "n"], "score": [-0.001, -0.002],
                          "low_rank": [True, False]})
    assert [c.name for c in cross_recipes(df, pairs)] == ["u*i"]


def test_cli_rank_prints_lowrank_z_and_refuses_a_bad_one(tmp_path, capsys):
    from sparsearch.cli import main

    path = tmp_path / "aff.parquet"
    make_affinity_log(30_000, n_users=150, n_items=100, n_noise=1, n_context=1, seed=2).write_parquet(path)
    assert main(["rank", str(path), "--target", "click", "--interactions", "3", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["pairs"][0]
    assert {first["feature_a"], first["feature_b"]} == {"user_id", "item_id"} and first["low_rank"]
    assert main(["rank", str(path), "--target", "click", "--interactions", "3", "--lowrank-z", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lowrank-z must be a number > 0" in err[0]
