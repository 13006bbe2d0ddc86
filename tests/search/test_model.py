"""The best model as an MLflow pyfunc that takes raw rows: it reproduces the trial's own predictions, handles unseen
categories and missing values, gives the same predictions in every network form, is registered on request, and
``sparsearch predict`` does the same from the command line."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import optuna
import pandas as pd
import polars as pl
import pytest
import torch
from mlflow import MlflowClient

from sparsearch.search.spec import DataSpec, StudySection, StudySpec, TrackingSpec
from sparsearch.spaces.encoder import MISSING_CODE, OOV_CODE

NAME = "pyfunc"


def raw_frame(n: int = 3000, seed: int = 5) -> pl.DataFrame:
    """Raw rows of mixed types whose label depends on every feature but `noise`."""
    rng = np.random.default_rng(seed)
    city = rng.choice([f"c{i}" for i in range(12)], n)
    shop = rng.integers(0, 30, n)
    promo = rng.random(n) < 0.4
    price = rng.normal(10.0, 3.0, n)
    # an interaction (shop parity with promo, price with promo) for the crosses to find
    logit = (np.isin(city, ["c1", "c3", "c5", "c8"]) * 1.5 + (shop % 3 == 0) * 1.2 - 0.3 * (price - 10.0)
             + 2.0 * (((shop % 2 == 0) == promo) - 0.5) + 1.5 * (promo * (price > 10.0) - 0.2) - 1.0)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame({"city": city, "shop": shop, "promo": promo, "price": price,
                          "noise": rng.integers(0, 5, n), "label": y})
    missing = lambda p: pl.Series(rng.random(n) < p)  # noqa: E731
    return frame.with_columns(shop=frame["shop"].set(missing(0.05), None), promo=frame["promo"].set(missing(0.05), None),
                              price=frame["price"].set(missing(0.05), None))


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    from sparsearch.search.controller import run_study

    results = tmp_path_factory.mktemp("model") / "res"
    frame = raw_frame()
    spec = StudySpec(
        study=StudySection(name=NAME, n_trials=3, sampler="random", seed=1),
        data=DataSpec(frame=frame, target="label", top_k=[3, 4], crosses=2),
        space={"depth": [1, 2], "width": [16, 32], "target_sparsity": 0.9, "methods": ["gmp"]},
        train={"epochs": 3}, tracking=TrackingSpec(register_model=True),
    )
    result = run_study(spec, results_dir=results, progress=False)
    return {"spec": spec, "result": result, "results": results, "frame": frame,
            "tracking": f"sqlite:///{results / 'mlflow.db'}"}


@pytest.fixture(scope="module")
def model(study):
    mlflow.set_tracking_uri(study["tracking"])
    try:
        return mlflow.pyfunc.load_model(study["result"].model_uri)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def evaluated(study):
    """The held-out test rows and the validation rows: encoded as the trials saw them, and raw."""
    from sparsearch.search.data import prepare_data

    prepared = prepare_data(study["spec"], study["results"])
    labelled = study["frame"].filter(pl.col("label").is_not_null())
    return {"encoded": prepared.test, "raw": labelled[prepared.indices["test"]],
            "val_encoded": prepared.val, "val_raw": labelled[prepared.indices["val"]], "encoder": prepared.encoder,
            "train_raw": labelled[prepared.indices["train"]]}


def network_proba(net, categorical, numeric) -> np.ndarray:
    with torch.no_grad():
        logits = net(torch.from_numpy(categorical), torch.from_numpy(numeric))
    return torch.sigmoid(logits[:, 0].double()).numpy()


def test_the_model_on_raw_rows_reproduces_the_trials_own_predictions(study, model, evaluated):
    from sparsearch.search.data import select_features
    from sparsearch.search.results import get_test_record
    from sparsearch.spaces import classification_metrics

    result = study["result"]
    best = result.best_trial
    assert result.study.user_attrs["model_trial"] == best.number
    package = model.unwrap_python_model()

    def metrics_of(raw: pl.DataFrame) -> dict[str, float]:
        proba = model.predict(raw.to_pandas())  # raw rows: pandas turns the int column with nulls into floats
        assert list(proba.columns) == ["0", "1"]
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
        logit = np.log(proba["1"] / proba["0"]).to_numpy()[:, None]
        return classification_metrics(raw["label"].to_numpy(), logit)

    # the study evaluated the best trial once on the held-out test rows, from the trial's network on the encoded
    # rows; the model on the same rows, raw, gives the same metrics
    record = get_test_record(result.study, best.number)
    assert record is not None and record["n_rows"] == evaluated["raw"].height
    on_test = metrics_of(evaluated["raw"])
    assert on_test["val_auc"] == pytest.approx(record["metrics"]["test_auc"], abs=1e-9)
    assert on_test["val_logloss"] == pytest.approx(record["metrics"]["test_logloss"], rel=1e-5)
    # and the trial's own validation metrics, computed in its worker during the search, on the validation rows
    # (the worker ran torch on one thread: last-bit differences in its sums reorder tied scores, which moves AUC
    # a little; the log-loss, a mean over rows, shows the predictions are the same)
    on_val = metrics_of(evaluated["val_raw"])
    assert on_val["val_auc"] == pytest.approx(best.user_attrs["metrics"]["val_auc"], abs=1e-3)
    assert on_val["val_logloss"] == pytest.approx(best.user_attrs["metrics"]["val_logloss"], rel=1e-5)
    # the network on the encoded test rows gives the same probabilities
    kept = select_features(evaluated["encoded"], package.encoder.features)
    direct = network_proba(package.network("dense"), kept.categorical, kept.numeric)
    np.testing.assert_allclose(model.predict(evaluated["raw"].to_pandas())["1"].to_numpy(), direct, atol=1e-6)
    # the features are the best trial's (top_k is searched) and the crosses, computed from their raw parts
    crosses = tuple(result.info["crosses"])
    assert crosses and package.encoder.features[-len(crosses):] == crosses
    assert [c.name for c in package.encoder.crosses] == list(crosses)
    kept = {*result.info["features"][:best.params["data.top_k"]], *crosses}
    assert set(package.encoder.features) == kept


def test_unseen_categories_and_missing_values(study, model, evaluated):
    from sparsearch.search.data import select_features

    package = model.unwrap_python_model()
    features = package.encoder.features
    raw = evaluated["raw"].to_pandas().reset_index(drop=True)
    kept = select_features(evaluated["encoded"], features)
    cat, num = kept.categorical.copy(), kept.numeric.copy()
    changes = 0
    rows = np.arange(0, 20)  # positions: pandas .loc slices include their end
    if "city" in features:
        raw.loc[rows, "city"] = "atlantis"  # never seen
        cat[rows, kept.categorical_names.index("city")] = OOV_CODE
        changes += 1
    rows = np.arange(20, 40)
    for column in ("shop", "promo"):
        if column in features:
            raw[column] = raw[column].astype(object)
            raw.loc[rows, column] = None
            cat[rows, kept.categorical_names.index(column)] = MISSING_CODE
            changes += 1
    if "price" in features:
        raw.loc[np.arange(40, 60), "price"] = np.nan
        # the training rows' median (the encoder sees no statistic of another row)
        num[40:60, kept.numeric_names.index("price")] = np.median(
            evaluated["train_raw"]["price"].drop_nulls().to_numpy())
        num[40:60, kept.numeric_names.index("price_missing")] = 1.0
        changes += 1
    assert changes >= 2, features
    # a cross with a missing part is missing; with an unseen part (and no missing one), unseen
    changed = {"city": ("unseen", np.arange(0, 20)), "shop": ("missing", np.arange(20, 40)),
               "promo": ("missing", np.arange(20, 40)), "price": ("missing", np.arange(40, 60))}
    assert package.encoder.crosses
    for cross in package.encoder.crosses:
        j = kept.categorical_names.index(cross.name)
        for part in cross.parts:
            if part in changed and part in raw.columns:
                kind, where = changed[part]
                if part not in features:  # a part the model reads only for the cross: change it here
                    raw[part] = raw[part].astype(object)
                    raw.loc[where, part] = None if kind == "missing" else "atlantis"
                if kind == "missing":
                    cat[where, j] = MISSING_CODE
                else:  # unseen, unless the other part was missing in that row already
                    other = evaluated["raw"][[p for p in cross.parts if p != part][0]]
                    was_missing = (other.is_null() | (other.is_nan() if other.dtype.is_float() else False))
                    cat[where, j] = np.where(was_missing.to_numpy()[where], MISSING_CODE, OOV_CODE)
    expected = network_proba(package.network("dense"), cat, num)
    np.testing.assert_allclose(model.predict(raw)["1"].to_numpy(), expected, atol=1e-6)
    labels = model.predict(raw, params={"output": "class"})["class"]
    assert set(labels) <= {0, 1} and (labels.to_numpy() == (expected > 0.5)).all()


def test_every_network_form_gives_the_same_predictions(model, evaluated):
    raw = evaluated["raw"].to_pandas()
    forms = {fmt: model.predict(raw, params={"format": fmt})["1"].to_numpy() for fmt in ("dense", "compact", "csr")}
    np.testing.assert_allclose(forms["compact"], forms["dense"], atol=1e-6)
    np.testing.assert_allclose(forms["csr"], forms["dense"], atol=1e-6)
    package = model.unwrap_python_model()
    size = {fmt: sum(t.numel() for t in package.network(fmt).state_dict().values()) for fmt in ("dense", "compact")}
    assert size["compact"] < size["dense"]  # 90% sparse: the compacted network really is smaller
    with pytest.raises(ValueError, match="format must be one of dense, compact, csr"):
        model.predict(raw, params={"format": "coo"})


def test_model_uri_signature_example_and_registry(study, model):
    result = study["result"]
    assert result.to_json()["model_uri"] == result.model_uri
    assert result.study.user_attrs["model_uri"] == result.model_uri
    package = model.unwrap_python_model()
    signature = model.metadata.signature
    assert signature.inputs.input_names() == list(package.encoder.raw_features)
    assert {p.name for p in signature.params.params} == {"format", "output"}
    assert model.metadata.saved_input_example_info is not None
    client = MlflowClient(tracking_uri=study["tracking"])
    versions = client.search_model_versions(f"name='{NAME}'")
    assert [(v.source, v.run_id) for v in versions] == [(result.model_uri, result.mlflow_parent_run_id)]
    params = client.get_run(result.mlflow_parent_run_id).data.params
    assert params["data.frame"] == "polars DataFrame, 3000 rows x 6 columns"  # the frame: described, not stored


def test_predict_command_matches_the_model(study, model, evaluated, tmp_path, capsys):
    from sparsearch.cli import main

    raw = evaluated["raw"]  # with the target and the unused column: ignored
    data = tmp_path / "new.parquet"
    raw.write_parquet(data)
    expected = model.predict(raw.to_pandas())
    outputs = {}
    for fmt in ("dense", "compact", "csr"):
        out = tmp_path / f"p-{fmt}.csv"
        rc = main(["predict", NAME, str(data), "--out", str(out), "--results", str(study["results"]),
                   "--format", fmt, "--json"])
        assert rc == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["model_uri"] == study["result"].model_uri and doc["n_rows"] == raw.height
        outputs[fmt] = pd.read_csv(out)
        np.testing.assert_allclose(outputs[fmt]["1"], expected["1"], atol=1e-6)
    assert main(["show", NAME, "--results", str(study["results"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_uri"] == study["result"].model_uri
    out = tmp_path / "classes.parquet"
    assert main(["predict", NAME, str(data), "--out", str(out), "--results", str(study["results"]),
                 "--output", "class"]) == 0
    assert pl.read_parquet(out)["class"].to_list() == (expected["1"] > 0.5).astype(int).tolist()


def test_predict_command_errors_are_one_line_exit_2(study, tmp_path, capsys):
    from sparsearch.cli import main
    from sparsearch.search.storage import open_storage

    data = tmp_path / "new.parquet"
    study["frame"].head(5).write_parquet(data)
    res = str(study["results"])
    assert main(["predict", NAME, str(data), "--out", str(tmp_path / "p.xlsx"), "--results", res]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["predict", "nope", str(data), "--out", str(tmp_path / "p.csv"), "--results", res]) == 2
    assert "unknown study" in capsys.readouterr().err
    optuna.create_study(study_name="no-model", storage=open_storage(f"journal:{study['results'] / 'optuna.journal'}"))
    assert main(["predict", "no-model", str(data), "--out", str(tmp_path / "p.csv"), "--results", res]) == 2
    assert "has no logged model" in capsys.readouterr().err
    first = study["result"].info["features"][0]  # the best-ranked feature: every trial reads it
    study["frame"].drop(first).head(5).write_parquet(data)
    assert main(["predict", NAME, str(data), "--out", str(tmp_path / "p.csv"), "--results", res]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"lacks column(s) {first}" in err, err


def test_a_multiclass_package_round_trips_and_names_its_columns_by_label():
    import cloudpickle

    from sparsearch.search.model import build_model_package
    from sparsearch.spaces import SparseMLP, TabularEncoder, compact

    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"kind": rng.choice(["x", "y", "z"], 200), "size": rng.normal(size=200),
                          "label": rng.choice(["cat", "dog", "eel"], 200)})
    enc = TabularEncoder.fit(frame, "label")
    torch.manual_seed(0)
    net = SparseMLP(enc.cardinalities, len(enc.numeric_names), [8], 3).eval()
    package = build_model_package(net, enc, None)
    package.network("compact")  # exported once: not stored, rebuilt after loading
    loaded = cloudpickle.loads(cloudpickle.dumps(package))
    assert set(loaded._forms) == {"dense"}
    proba = loaded.predict(None, frame.to_pandas())
    assert list(proba.columns) == ["cat", "dog", "eel"]
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    labels = loaded.predict(None, frame.to_pandas(), params={"output": "class"})["class"]
    assert (labels.to_numpy() == np.array(["cat", "dog", "eel"])[proba.to_numpy().argmax(axis=1)]).all()
    assert sum(p.numel() for p in loaded.network("compact").parameters()) == sum(
        p.numel() for p in compact(net).parameters())
    with pytest.raises(ValueError, match="output must be one of proba, class"):
        loaded.predict(None, frame.to_pandas(), params={"output": "logits"})
    with pytest.raises(ValueError, match="the network reads 2 categorical features"):
        build_model_package(SparseMLP([4, 4], 1, [8], 3), enc, None)


def _ranked_cross(df, a, b):
    """The definition of a cross on its fitted rows: a float part by its equal-frequency bin (16 bins by rank)."""
    def part(name):
        col = pl.col(name)
        if df.schema[name].is_float():
            col = col.fill_nan(None)
            col = (col.rank("min") * 16 // (col.count() + 1)).cast(pl.Int64)
        return col.cast(pl.String)

    return df.select(pl.concat_str([part(a), part(b)], separator="\x1f")).to_series()


def test_cross_recipes_reproduce_the_crossed_columns_on_new_rows():
    from sparsearch.search.data import add_crosses, cross_recipes

    rng = np.random.default_rng(3)
    n = 500
    frame = pl.DataFrame({
        "city": rng.choice(["a", "b", None], n).tolist(), "shop": pl.Series(rng.integers(0, 9, n)).set(
            pl.Series(rng.random(n) < 0.1), None),
        "promo": pl.Series(rng.random(n) < 0.5).set(pl.Series(rng.random(n) < 0.1), None),
        "price": np.r_[np.nan, np.inf, -np.inf, rng.normal(size=n - 3)],
        "day": pl.Series(rng.integers(1, 28, n)).cast(pl.String).str.zfill(2)})
    pairs = pl.DataFrame({"feature_a": ["city", "price", "promo", "day", "shop"],
                          "feature_b": ["shop", "promo", "price", "price", "day"], "score": [0.1, 0.2, 0.3, 0.1, 0.0]})
    recipes = cross_recipes(frame, pairs)
    crossed, names = add_crosses(frame, pairs)
    assert [r.name for r in recipes] == names == ["city*shop", "price*promo", "promo*price", "day*price"]
    for recipe in recipes:  # on the fitted rows, as polars or as pandas (ints with nulls arrive as floats)
        expected = _ranked_cross(frame, *recipe.parts).to_list()
        assert crossed[recipe.name].to_list() == expected, recipe.name
        for rows in (frame, pl.from_pandas(frame.to_pandas())):
            assert recipe.compute(rows).to_list() == expected, recipe.name
    # fitted on some rows: on those rows, the bins are their equal-frequency bins; other rows get bins by the edges
    fit_rows = np.arange(0, n, 3)
    price_promo = cross_recipes(frame, pairs, rows=fit_rows)[1]
    assert price_promo.compute(frame[fit_rows]).to_list() == _ranked_cross(frame[fit_rows], "price", "promo")\
        .to_list()
    assert add_crosses(frame, pairs, rows=fit_rows)[0]["price*promo"].to_list() == price_promo.compute(frame)\
        .to_list() != crossed["price*promo"].to_list()
    # new values: a price beyond the fitted range falls in the last bin, a missing part makes a missing cross
    price = recipes[1]
    new = price.compute(pl.DataFrame({"price": [1e9, -1e9, None], "promo": [True, True, True]})).to_list()
    assert new == ["15\x1ftrue", "0\x1ftrue", None]


_INGREDIENTS = {
    "quantile": dict(numeric_encoding="quantile"),
    "ple": dict(numeric_encoding="ple", numeric_bins=8),
    "plr": dict(numeric_encoding="plr", numeric_embedding_dim=4),
    "ensemble": dict(ensemble_size=4),
    "cross": dict(cross_layers=2, cross_rank=4),
    "fm": dict(fm_dim=4),
    "all": dict(numeric_encoding="plr", ensemble_size=3, cross_layers=1, fm_dim=4),
}


@pytest.mark.parametrize(("ingredient", "multiclass"),
                         [(name, False) for name in _INGREDIENTS] + [("ensemble", True), ("all", True)])
def test_the_package_carries_every_model_ingredient_in_every_format(ingredient, multiclass):
    """Issue 29 item 6: on raw test rows the pyfunc reproduces the trained model's probabilities, and so its test
    metrics, to 1e-6 in the dense, compact and CSR forms, whatever numeric encoding, ensemble or cross block."""
    from sparsearch.search.model import FORMATS, build_model_package
    from sparsearch.spaces import (
        TabularEncoder,
        TrialConfig,
        evaluate_model,
        split_indices,
        train_and_evaluate,
    )

    frame = raw_frame(1500)
    if multiclass:
        frame = frame.with_columns(label=pl.Series((frame["label"].to_numpy() + (frame["shop"].fill_null(0)
                                                                                   .to_numpy() % 3 == 0)) % 3))
    tr, va, te = split_indices(frame["label"].to_numpy(), 0.2, 0.2, seed=0)
    enc = TabularEncoder.fit(frame[tr], "label", features=["city", "shop", "promo", "price"])
    train, val, test = (enc.encode(frame[idx]) for idx in (tr, va, te))
    cfg = TrialConfig(widths=(32, 16), epochs=2, batch_size=128, target_sparsity=0.8, start_frac=0.0, end_frac=0.5,
                      **_INGREDIENTS[ingredient])
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    stored = evaluate_model(out.model, test)
    with torch.no_grad():
        logits = out.model.eval()(torch.from_numpy(test.categorical), torch.from_numpy(test.numeric)).double()
    want = (torch.softmax(logits, 1) if multiclass else torch.sigmoid(logits[:, 0])).numpy()
    package = build_model_package(out.model, enc, None)
    rows = frame[te].drop("label").to_pandas()
    y = test.y
    for fmt in FORMATS:
        proba = package.predict(None, rows, params={"format": fmt}).to_numpy()
        got = proba if multiclass else proba[:, 1]
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=fmt)
        p_true = proba[np.arange(len(y)), y]
        assert abs(float(-np.mean(np.log(p_true))) - stored["test_logloss"]) < 1e-6, fmt
        assert abs(float(np.mean(proba.argmax(axis=1) == y)) - stored["test_accuracy"]) < 1e-6, fmt
        if not multiclass:
            from sparsearch.spaces.metrics import binary_auc

            assert abs(binary_auc(y, proba[:, 1]) - stored["test_auc"]) < 1e-6, fmt
