"""[data] crosses: the best interacting pairs, ranked on the training rows, become crossed categorical features."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sparsearch.search.data import add_crosses, prepare_data, rank_training_pairs, trial_features
from sparsearch.search.spec import load_study


def _spec(path, **data):
    raw = {
        "study": {"name": "crosses", "n_trials": 2, "seed": 1},
        "data": {"path": str(path), "target": "click", "top_k": 6, **data},
        "space": {"depth": 1, "width": 8},
        "train": {"epochs": 1, "batch_size": 256, "val_fraction": 0.25, "test_fraction": 0.25},
        "execution": {"workers": 1},
    }
    return load_study(raw)


@pytest.fixture()
def planted(tmp_path):
    from sparsearch.features import make_click_log

    df = make_click_log(12_000, n_noise=6, max_cardinality=300, n_interactions=1, interaction_scale=1.5, seed=0)
    path = tmp_path / "planted.parquet"
    df.write_parquet(path)
    return df, path


def test_crosses_add_the_planted_pair_ranked_on_training_rows_only(planted, tmp_path):
    df, path = planted
    prepared = prepare_data(_spec(path, crosses=2), tmp_path)
    assert prepared.crosses[0] == "pair_0a_c4*pair_0b_c6"
    names = prepared.train.categorical_names
    assert names[-len(prepared.crosses):] == prepared.crosses
    card = prepared.train.cardinalities[names.index("pair_0a_c4*pair_0b_c6")]
    assert 24 <= card <= 26  # 4 x 6 joint values (+ missing and out-of-vocabulary codes)
    # labels of validation and test rows never reach the pair ranking
    tr, va, te = (prepared.indices[k] for k in ("train", "val", "test"))
    held = np.concatenate([va, te])
    y = df["click"].to_numpy().copy()
    y[held] = np.random.default_rng(0).permutation(y[held])
    columns = [c for c in df.columns if c != "click"]
    again = rank_training_pairs(df.with_columns(pl.Series("click", y)), columns, "click", tr, 2)
    assert again.equals(prepared.pairs)
    y[tr] = np.random.default_rng(1).permutation(y[tr])
    moved = rank_training_pairs(df.with_columns(pl.Series("click", y)), columns, "click", tr, 2)
    assert not moved["score"].equals(prepared.pairs["score"])  # the check above can fail


def test_trial_features_and_crossing_rules(planted, tmp_path):
    _, path = planted
    prepared = prepare_data(_spec(path, crosses=[0, 2], top_k=[2, 6]), tmp_path)
    assert trial_features(prepared, None, None) is None
    assert trial_features(prepared, 3, 0) == prepared.candidates[:3]
    assert trial_features(prepared, None, 1) == (*prepared.candidates, prepared.crosses[0])
    df = pl.DataFrame({"a": [1, 2, None, 1], "b": ["x", "y", "y", None], "f": [0.1, 0.5, 0.9, float("nan")]})
    pairs = pl.DataFrame({"feature_a": ["a", "a", "b"], "feature_b": ["b", "f", "f"], "score": [0.5, 0.1, -0.2]})
    out, names = add_crosses(df, pairs)
    assert names == ["a*b", "a*f"]  # the pair with a negative score adds nothing and is not crossed
    assert out["a*b"].to_list() == ["1\x1fx", "2\x1fy", None, None]  # missing on either side: missing cross
    assert out["a*f"].null_count() == 2
    with pytest.raises(Exception, match="crosses"):
        load_study({"data": {"generator": "click_log", "crosses": -1}})


@pytest.mark.usefixtures("ray_session")
def test_a_study_searches_the_number_of_crosses(planted, tmp_path):
    from sparsearch.search.controller import run_study

    _, path = planted
    result = run_study(_spec(path, crosses=[0, 1]), results_dir=tmp_path, progress=False)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert done and all("data.crosses" in t.params for t in done)
    assert result.to_json()["test_metrics"]
