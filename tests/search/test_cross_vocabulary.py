"""Crossed features have a bounded vocabulary: a crossed value seen fewer than CROSS_MIN_COUNT times among the
training rows is out of vocabulary, so a cross of two 1,000+-level IDs (up to millions of values) cannot get an
embedding row per value seen once."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sparsearch.errors import DataError
from sparsearch.search.data import prepare_data
from sparsearch.search.spec import load_study
from sparsearch.spaces.encoder import CROSS_MIN_COUNT, OOV_CODE, TabularEncoder


def test_min_count_sends_rare_values_out_of_vocabulary_in_fitted_and_new_rows():
    rng = np.random.default_rng(0)
    values = np.concatenate([np.repeat(["a", "b", "c"], [40, 12, 9]), rng.choice(list("defghijk"), 30)])
    df = pl.DataFrame({"x": values, "y": rng.integers(0, 2, values.size)})
    counts = dict(zip(*np.unique(values, return_counts=True)))
    frequent = sorted(v for v, n in counts.items() if n >= 10)
    assert "a" in frequent and "b" in frequent and "c" not in frequent  # the rule below can fail both ways
    enc = TabularEncoder.fit(df, "y", min_count={"x": 10})
    assert enc.columns[0].vocabulary.to_list() == frequent and enc.cardinalities == (len(frequent) + 2,)
    codes = enc.transform(df)[0][:, 0]
    rare = ~np.isin(values, frequent)
    assert (codes[rare] == OOV_CODE).all() and (codes[~rare] >= 2).all()  # in the fitted rows too: OOV is trained
    new = enc.transform(pl.DataFrame({"x": ["a", "c", "never", None]}))[0][:, 0]
    assert new.tolist() == [2 + frequent.index("a"), OOV_CODE, OOV_CODE, 0]
    # at most max_cardinality - 2 values: the most frequent ones
    capped = TabularEncoder.fit(df, "y", min_count={"x": 1}, max_cardinality=4)
    assert capped.columns[0].vocabulary.to_list() == ["a", "b"]
    assert TabularEncoder.fit(df, "y").columns[0].vocabulary.len() == len(counts)  # without min_count: every value


def test_bad_min_count():
    df = pl.DataFrame({"x": ["a", "b"], "y": [0, 1]})
    with pytest.raises(DataError, match="min_count names column 'z', which is not among the features"):
        TabularEncoder.fit(df, "y", min_count={"z": 3})
    with pytest.raises(DataError, match="min_count of column 'x' must be an integer >= 1, got 0"):
        TabularEncoder.fit(df, "y", min_count={"x": 0})


def test_a_cross_of_two_high_cardinality_ids_has_a_bounded_vocabulary(tmp_path):
    raw = {
        "study": {"name": "ids", "n_trials": 1, "seed": 0},
        "data": {"generator": "affinity_log", "target": "click", "crosses": 1,
                 "params": {"n_rows": 30_000, "n_noise": 0, "id_skew": 1.1}},
        "train": {"epochs": 1, "val_fraction": 0.2, "test_fraction": 0.2},
    }
    p = prepare_data(load_study(raw), tmp_path)
    assert p.crosses == ("user_id*item_id",)  # the pair ranker proposes the planted pair
    (cross,) = p.encoder.crosses
    from sparsearch.features import make_affinity_log

    df = make_affinity_log(30_000, n_noise=0, id_skew=1.1, seed=0)
    crossed = cross.compute(df)
    tr = p.indices["train"]
    seen = crossed.gather(tr).value_counts(name="n")
    frequent = set(seen.filter(pl.col("n") >= CROSS_MIN_COUNT)["user_id*item_id"].to_list())
    assert 0 < len(frequent) < seen.height // 10  # most of the 3 million possible values are rare
    j = p.train.categorical_names.index("user_id*item_id")
    assert p.train.cardinalities[j] == len(frequent) + 2 <= tr.size // CROSS_MIN_COUNT + 2
    codes = p.train.categorical[:, j]
    rare = ~crossed.gather(tr).is_in(list(frequent)).to_numpy()
    assert (codes[rare] == OOV_CODE).all() and (codes[~rare] >= 2).all()
    assert rare.mean() > 0.5  # most training rows hold a rare pair (72% here): they share the trained OOV row
