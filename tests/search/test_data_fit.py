"""prepare_data fits its encoder on the training rows only: no statistic of a validation or test row enters the fit,
and validation and test rows are encoded exactly as the packaged model encodes new rows."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sparsearch.search.data import cross_recipes, prepare_data
from sparsearch.search.spec import load_study
from sparsearch.spaces import split_indices
from sparsearch.spaces.encoder import Cross, TabularEncoder

N = 3000
VAL, TEST, SEED = 0.2, 0.2, 3


def _frame() -> tuple[pl.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """A table whose validation and test rows hold values the training rows never show: a category, extreme
    prices, NaNs in a column that has none among the training rows, many more distinct ids."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=N)
    g = rng.choice(["u", "v"], N)
    y = ((f > 0) ^ (g == "u")).astype(np.int64)  # an interaction: the pair ranker crosses f with g
    flip = rng.random(N) < 0.1
    y[flip] = 1 - y[flip]
    tr, va, te = split_indices(y, VAL, TEST, SEED)  # the split depends on y, the fractions and the seed only
    held = np.concatenate([va, te])
    city = rng.choice(["a", "b", "c"], N).astype(object)
    city[te[:40]] = "only_in_test"
    city[va[:30]] = "only_in_val"
    price = rng.gamma(2.0, 10.0, N)
    price[held[::3]] = 1e6 + rng.random(held[::3].size)  # would move the median if held rows entered it
    price[va[5:25]] = np.nan
    clean = rng.normal(size=N)  # no NaN among the training rows: no missing-value indicator
    clean[held[:50]] = np.nan
    qty = rng.normal(loc=5.0, size=N)
    qty[tr[:60]] = np.nan  # NaN in training rows: an indicator
    f_held = f.copy()
    f_held[te[:200]] = 50.0 + np.arange(200)  # beyond the training range: the last bin of the cross
    frame = pl.DataFrame({"city": city.tolist(), "price": price, "clean": clean, "qty": qty, "f": f_held, "g": g,
                          "y": y})
    return frame, tr, va, te


def _spec(path, **data):
    return load_study({
        "study": {"name": "fit-rows", "n_trials": 1, "seed": SEED},
        "data": {"path": str(path), "target": "y", "prefilter": "none", **data},
        "space": {"depth": 1, "width": 8},
        "train": {"epochs": 1, "val_fraction": VAL, "test_fraction": TEST},
        "execution": {"workers": 1},
    })


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    frame, tr, va, te = _frame()
    path = tmp_path_factory.mktemp("fit") / "t.parquet"
    frame.write_parquet(path)
    return frame, (tr, va, te), prepare_data(_spec(path, crosses=1), path.parent)


def test_the_split_is_the_one_the_test_planted_its_values_in(prepared):
    _, (tr, va, te), p = prepared
    assert all(np.array_equal(p.indices[k], rows) for k, rows in zip(("train", "val", "test"), (tr, va, te)))


def test_a_category_seen_only_in_validation_or_test_rows_gets_the_out_of_vocabulary_code(prepared):
    frame, (tr, va, te), p = prepared
    city = {c.name: c for c in p.encoder.columns}["city"]
    assert sorted(city.vocabulary.to_list()) == ["a", "b", "c"]
    j = p.test.categorical_names.index("city")
    for part, rows, value in ((p.test, te, "only_in_test"), (p.val, va, "only_in_val")):
        planted = np.isin(rows, np.flatnonzero(frame["city"].to_numpy() == value))
        assert planted.sum() > 0
        assert (part.categorical[planted, j] == 1).all()  # OOV_CODE
        assert (part.categorical[~planted, j] >= 2).all()
    assert p.train.cardinalities[j] == 3 + 2  # 3 training values + missing + out of vocabulary


def test_medians_and_missing_indicators_come_from_the_training_rows(prepared):
    frame, (tr, va, te), p = prepared
    cols = {c.name: c for c in p.encoder.columns}
    price = frame["price"].to_numpy()
    assert cols["price"].fill == float(np.median(price[tr][np.isfinite(price[tr])]))
    assert cols["price"].fill < 1000  # all rows' median would be pulled up by the held rows' 1e6 prices
    # NaN only in held rows: no indicator, and those rows get the training median (as new rows would)
    assert not cols["clean"].indicator and "clean_missing" not in p.val.numeric_names
    clean = frame["clean"].to_numpy()
    j = p.val.numeric_names.index("clean")
    nan_val = np.isnan(clean[va])
    assert nan_val.any() and (p.val.numeric[nan_val, j] == np.float32(np.median(clean[tr]))).all()
    # NaN in training rows: an indicator, and the median of the training rows' finite values
    assert cols["qty"].indicator and "qty_missing" in p.train.numeric_names
    qty = frame["qty"].to_numpy()[tr]
    assert cols["qty"].fill == float(np.median(qty[np.isfinite(qty)]))


def test_cross_bins_are_fitted_on_the_training_rows(prepared):
    frame, (tr, va, te), p = prepared
    assert p.crosses == ("f*g",)
    (cross,) = p.encoder.crosses
    ref = Cross.fit(frame[tr], "f*g", "f", "g")
    np.testing.assert_array_equal(cross.edges[0], ref.edges[0])
    everywhere = Cross.fit(frame, "f*g", "f", "g")
    assert not np.array_equal(cross.edges[0], everywhere.edges[0])  # the check above can fail
    # the test rows beyond the training range share the last bin with the training rows' top values
    j = p.test.categorical_names.index("f*g")
    far = np.isin(te, te[:200])
    assert len(np.unique(p.test.categorical[far, j])) == 2  # one code per value of g
    assert (p.test.categorical[far, j] >= 2).all()


def test_held_rows_encode_as_the_packaged_model_encodes_new_rows(prepared):
    frame, (tr, va, te), p = prepared
    for part, rows in ((p.val, va), (p.test, te)):
        cat, num = p.encoder.transform(frame[rows].drop("y").to_pandas())
        np.testing.assert_array_equal(cat, part.categorical)
        np.testing.assert_array_equal(num, part.numeric)
    # and the encoder is the one fitted on the training rows alone
    ref = cross_recipes(frame[tr], p.pairs)
    crossed = frame.with_columns([r.compute(frame) for r in ref])
    alone = TabularEncoder.fit(crossed[tr], "y", features=list(p.encoder.features)).with_crosses(ref)
    for part, rows in ((p.train, tr), (p.val, va), (p.test, te)):
        cat, num = alone.transform(frame[rows])
        np.testing.assert_array_equal(cat, part.categorical)
        np.testing.assert_array_equal(num, part.numeric)


def test_the_hashing_decision_counts_the_training_rows_only():
    rng = np.random.default_rng(1)
    ids = np.arange(400)
    df = pl.DataFrame({"id": ids, "y": rng.integers(0, 2, 400)})
    tr = np.arange(0, 400, 4)  # 100 distinct ids among the training rows, 400 in all
    enc = TabularEncoder.fit(df, "y", max_cardinality=150, rows=tr)
    (col,) = enc.columns
    assert col.n_buckets is None and col.vocabulary.to_list() == tr.tolist()
    assert TabularEncoder.fit(df, "y", max_cardinality=150).columns[0].n_buckets == 148  # all rows: hashed
    cat, _ = enc.transform(df)
    assert (cat[tr, 0] >= 2).all() and (np.delete(cat[:, 0], tr) == 1).all()
    assert TabularEncoder.fit(df, "y", max_cardinality=50, rows=tr).columns[0].n_buckets == 48


@pytest.mark.parametrize("rows", [np.array([], dtype=np.int64), np.array([0, 400]), np.array([[0, 1]]),
                                  np.array([0.0, 1.0]), np.array([-1, 2])])
def test_bad_fit_rows_are_one_line_errors(rows):
    from sparsearch.errors import DataError

    df = pl.DataFrame({"id": np.arange(400), "y": np.arange(400) % 2})
    with pytest.raises(DataError, match="rows must be a non-empty 1-d array of row indices into the 400") as err:
        TabularEncoder.fit(df, "y", rows=rows)
    assert "\n" not in str(err.value)


def test_a_trial_keeps_its_searched_top_k_and_crosses_and_a_missing_value_is_a_one_line_error():
    from sparsearch.search.data import PreparedData, trial_feature_subset

    spec = load_study("quickstart", **{"data.top_k": [1, 3]})
    prepared = PreparedData(train=None, val=None, fingerprint="f", n_rows=0, candidates=("a", "b", "c"),
                            crosses=("a*b", "a*c"))
    assert trial_feature_subset(spec, prepared, {"data.top_k": 2, "data.crosses": 1}) == ("a", "b", "a*b")
    assert trial_feature_subset(spec, prepared, {"data.top_k": 3}) == ("a", "b", "c", "a*b", "a*c")
    assert trial_feature_subset(spec, prepared, {}) is None
    with pytest.raises(TypeError, match=r"^trial parameter 'data.top_k' is None; it must be an integer"):
        trial_feature_subset(spec, prepared, {"data.top_k": None})
