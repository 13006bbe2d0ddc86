from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from sparsearch.errors import SpecError
from sparsearch.features import CardinalityAwareSelector


@parametrize_with_checks([CardinalityAwareSelector(k=2)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _data(n=1_500, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, n)
    y = ((a >= 2) ^ (rng.random(n) < 0.15)).astype(int)
    X = pl.DataFrame({"noise": rng.integers(0, 300, n), "a": [f"v{v}" for v in a], "flag": rng.random(n) < 0.5,
                      "num": rng.normal(size=n) + y})
    return X, y


def test_keeps_names_for_polars_and_pandas():
    X, y = _data()
    sel = CardinalityAwareSelector(k=2).fit(X, y)
    assert list(sel.get_feature_names_out()) == ["a", "num"]
    out = sel.transform(X)
    assert isinstance(out, pl.DataFrame) and out.columns == ["a", "num"]
    pdf = X.to_pandas()
    sel_pd = CardinalityAwareSelector(k=2).fit(pdf, y)
    out_pd = sel_pd.transform(pdf)
    assert isinstance(out_pd, pd.DataFrame) and list(out_pd.columns) == ["a", "num"]
    assert list(sel_pd.feature_names_in_) == X.columns
    assert sel.scores_.shape == (4,) and sel.scores_[1] > sel.scores_[0]


def test_in_pipeline_numeric():
    rng = np.random.default_rng(1)
    X = rng.integers(0, 5, size=(800, 6)).astype(float)
    y = (X[:, 4] > 2).astype(int)
    pipe = make_pipeline(CardinalityAwareSelector(k=1), LogisticRegression()).fit(X, y)
    assert pipe[0].get_support().tolist() == [False] * 4 + [True, False]
    assert pipe.score(X, y) > 0.95


def test_invalid_k():
    X, y = _data(200)
    with pytest.raises(SpecError, match="k must be"):
        CardinalityAwareSelector(k=-1).fit(X, y)
    with pytest.raises(SpecError, match="unknown ranking method"):
        CardinalityAwareSelector(method="nope").fit(X, y)
