"""``sparsearch export``: the compact network as ONNX / TorchScript and the encoder as JSON reproduce the pyfunc.

The parity tests encode raw rows with :func:`reference_decode`, a small reader of ``encoder.json`` written from the
README's description of the format (plain Python, no polars, not the package's encoder), feed the codes to ONNX
Runtime or TorchScript, and compare with the pyfunc model's probabilities.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import optuna
import pandas as pd
import polars as pl
import pytest
import torch

from sparsearch.search.spec import DataSpec, StudySection, StudySpec, TrackingSpec

NAME = "exported"


# -- a reader of encoder.json, independent of the package ----------------------------------------------------------
def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _read(v, kind: str):
    """``(ok, value)``: the raw value converted to the column's kind; ``ok`` False when it cannot be."""
    if kind == "integer":
        if isinstance(v, bool):
            return True, int(v)
        if isinstance(v, (int, np.integer)):
            return True, int(v)
        if isinstance(v, (float, np.floating)):
            return (True, int(v)) if math.isfinite(v) and float(v).is_integer() else (False, None)
        try:
            return True, int(str(v))
        except ValueError:
            return False, None
    if kind == "boolean":
        if isinstance(v, (bool, np.bool_)):
            return True, bool(v)
        words = {"true": True, "1": True, "false": False, "0": False}
        return (True, words[str(v).lower()]) if str(v).lower() in words else (False, None)
    if kind == "float":
        try:
            return True, float(v)
        except (TypeError, ValueError):
            return False, None
    return True, str(v)


def _text(value, kind: str) -> str:
    return ("true" if value else "false") if kind == "boolean" else str(value)


def _edge(x) -> float:
    return float(x) if not isinstance(x, str) else {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}[x]


def _cross_value(col: dict, row: dict):
    """The crossed value's text, or None (missing) when a part is missing or unreadable."""
    cross, texts = col["cross"], []
    for part, kind, edges in zip(cross["parts"], cross["dtype_kinds"], cross["bin_edges"]):
        v = row[part]
        if _missing(v):
            return None
        ok, value = _read(v, kind)
        if not ok:
            return None
        if edges is not None:  # a float part: its bin is the number of edges below the value
            if math.isnan(value):
                return None
            texts.append(str(bisect.bisect_left([_edge(e) for e in edges], value)))
        else:
            texts.append(_text(value, kind))
    return cross["separator"].join(texts)


def _hash_code(col: dict, codes: dict, text: str) -> int:
    """A hashed column's code, from the ``hash`` entry: 64-bit FNV-1a of the UTF-8 text, modulo n_buckets."""
    spec = col["hash"]
    assert spec["function"] == "fnv1a64" and col["portable"], spec
    h, prime = int(spec["offset_basis"], 16), int(spec["prime"], 16)
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * prime) % 2**64
    return codes["first_known"] + h % col["n_buckets"]


def _number_input(col: dict, num: np.ndarray, r: int, j: int, v, kind: str) -> None:
    """A numeric input (and its indicator at ``j + 1``): the value as a float, else the fill."""
    ok, value = (False, None) if _missing(v) else _read(v, kind)
    value = float(value) if ok else None
    if col["dtype"] == "Float32" and ok:
        value = float(np.float32(value))
    bad = not ok or not math.isfinite(value)
    num[r, j] = _edge(col["fill"]) if bad else value
    if col["indicator"]:
        num[r, j + 1] = float(bad)


def reference_decode(doc: dict, rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(int32 categorical codes, float32 numeric inputs) for raw rows (dicts), from ``encoder.json`` alone."""
    codes = doc["codes"]
    n_cat, n_num = len(doc["inputs"]["categorical"]["columns"]), len(doc["inputs"]["numeric"]["columns"])
    cat = np.zeros((len(rows), n_cat), dtype=np.int32)
    num = np.zeros((len(rows), n_num), dtype=np.float32)
    for col in doc["columns"]:
        lookup = {json.dumps(v): codes["first_known"] + i for i, v in enumerate(col.get("vocabulary") or [])}
        j = col["input_index"]
        for r, row in enumerate(rows):
            if col["kind"] == "numeric":
                _number_input(col, num, r, j, row[col["name"]], "float")
                continue
            if col["ordered"]:  # an ordered integer column: also its value as a number
                _number_input(col, num, r, col["numeric_index"], row[col["name"]], col["dtype_kind"])
            if "cross" in col:
                value = _cross_value(col, row)
                cat[r, j] = codes["missing"] if value is None else lookup.get(json.dumps(value),
                                                                              codes["out_of_vocabulary"])
                continue
            v = row[col["name"]]
            if _missing(v):
                cat[r, j] = codes["missing"]
                continue
            ok, value = _read(v, col["dtype_kind"])
            if not ok:
                cat[r, j] = codes["out_of_vocabulary"]
            elif col["encoding"] == "hash":
                cat[r, j] = _hash_code(col, codes, _text(value, col["dtype_kind"]))
            else:
                cat[r, j] = lookup.get(json.dumps(value), codes["out_of_vocabulary"])
    return cat, num


# -- a study with a packaged model --------------------------------------------------------------------------------
def raw_frame(n: int = 2400, seed: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    city = rng.choice([f"c{i}" for i in range(12)], n)
    shop = rng.integers(0, 30, n)
    promo = rng.random(n) < 0.4
    price = rng.normal(10.0, 3.0, n)
    logit = (np.isin(city, ["c1", "c3", "c5", "c8"]) * 1.5 + (shop % 3 == 0) * 1.2 - 0.3 * (price - 10.0)
             + 2.0 * (((shop % 2 == 0) == promo) - 0.5) + 1.5 * (promo * (price > 10.0) - 0.2) - 1.0)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame({"city": city, "shop": shop, "promo": promo, "price": price, "label": y})
    missing = lambda p: pl.Series(rng.random(n) < p)  # noqa: E731
    return frame.with_columns(shop=frame["shop"].set(missing(0.05), None), promo=frame["promo"].set(missing(0.05), None),
                              price=frame["price"].set(missing(0.05), None))


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    from sparsearch.search.controller import run_study

    results = tmp_path_factory.mktemp("export") / "res"
    frame = raw_frame()
    spec = StudySpec(
        study=StudySection(name=NAME, n_trials=2, sampler="random", seed=2),
        data=DataSpec(frame=frame, target="label", top_k=[4, 4], crosses=3, ordered_ints=20),
        # the new model family end to end: a quantile encoding (portable form in ONNX), a cross layer, pairwise
        # products, a 2-member ensemble, shop (30 integers) also an ordered number
        space={"depth": [1, 2], "width": [16, 32], "target_sparsity": 0.8, "methods": ["gmp"],
               "numeric_encoding": ["quantile"], "cross_layers": 1, "cross_rank": 4, "fm_dim": 4, "ensemble_size": 2},
        train={"epochs": 2}, tracking=TrackingSpec(),
    )
    result = run_study(spec, results_dir=results, progress=False)
    assert result.model_uri
    return {"spec": spec, "result": result, "results": results, "frame": frame}


@pytest.fixture(scope="module")
def model(study):
    from sparsearch.search.model import load_study_model

    return load_study_model(NAME, results_dir=study["results"])[0]


@pytest.fixture(scope="module")
def test_rows(study, model) -> pd.DataFrame:
    """The study's held-out test rows, raw, with unseen categories, missing values and unreadable numbers."""
    from sparsearch.search.data import prepare_data

    prepared = prepare_data(study["spec"], study["results"])
    labelled = study["frame"].filter(pl.col("label").is_not_null())
    raw = labelled[prepared.indices["test"]].drop("label").to_pandas().reset_index(drop=True)
    for column in ("city", "shop", "promo"):
        raw[column] = raw[column].astype(object)
    raw.loc[0:9, "city"] = "atlantis"  # unseen
    raw.loc[10:19, "shop"] = 999  # unseen
    raw.loc[20:24, "shop"] = 3.5  # not an integer: out of vocabulary
    raw.loc[25:34, "promo"] = None
    raw.loc[35:44, "city"] = None
    raw.loc[45:49, "price"] = np.nan
    raw.loc[50:52, "price"] = np.inf
    raw.loc[53:55, "price"] = 1e6  # beyond every bin edge: the last bin
    raw.loc[56:58, "price"] = -1e6
    return raw


def _export(study, fmt, out):
    from sparsearch.search.export import export_study

    return export_study(NAME, fmt=fmt, out=out, results_dir=study["results"])


def _run_network(fmt: str, path, cat: np.ndarray, num: np.ndarray) -> np.ndarray:
    if fmt == "onnx":
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["probabilities"], {"categorical": cat, "numeric": num})[0]
    net = torch.jit.load(str(path))
    with torch.no_grad():
        return net(torch.from_numpy(cat), torch.from_numpy(num))[0].numpy()


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_network_fed_by_the_json_encoder_reproduces_the_pyfunc(study, model, test_rows, fmt, tmp_path):
    result = _export(study, fmt, tmp_path / "out")
    doc = json.loads(result.encoder.read_text())
    assert doc == result.document and doc["format"] == "sparsearch-encoder/2" and doc["portable"]
    assert doc["network"]["format"] == fmt and result.network.exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([result.network.name, "encoder.json"])
    package = model.unwrap_python_model()
    assert doc["raw_columns"] == list(package.encoder.raw_features)
    crosses = [c for c in doc["columns"] if "cross" in c]
    assert crosses, "the study should have crossed features for the recipes to be exercised"
    assert any(e is not None for c in crosses for e in c["cross"]["bin_edges"]), "no cross with a binned float"
    assert any(c.get("ordered") for c in doc["columns"]), "the study should have an ordered integer column"
    assert doc["network"]["blocks"] == {"numeric_encoding": "quantile", "cross_layers": 1, "fm_dim": 4,
                                        "ensemble_size": 2}

    cat, num = reference_decode(doc, test_rows.to_dict("records"))
    # the reader of the JSON gives exactly the package encoder's codes ...
    want_cat, want_num = package.encoder.transform(test_rows)
    np.testing.assert_array_equal(cat, want_cat)
    np.testing.assert_array_equal(num, want_num)
    assert (cat == doc["codes"]["out_of_vocabulary"]).any() and (cat == doc["codes"]["missing"]).any()
    # ... and the exported network on them the pyfunc's probabilities
    expected = model.predict(test_rows)
    got = _run_network(fmt, result.network, cat, num)
    assert got.shape == expected.shape and doc["outputs"]["probabilities"]["columns"] == list(expected.columns)
    np.testing.assert_allclose(got, expected.to_numpy(), atol=1e-5, rtol=0)
    one = _run_network(fmt, result.network, cat[:1], num[:1])  # the batch dimension is dynamic
    np.testing.assert_allclose(one, expected.to_numpy()[:1], atol=1e-5, rtol=0)


def test_onnx_file_states_its_opset(study, tmp_path):
    import onnx

    from sparsearch.spaces.portable import ONNX_OPSET

    result = _export(study, "onnx", tmp_path)
    assert result.document["network"]["opset"] == ONNX_OPSET
    props = {p.key: p.value for p in onnx.load(str(result.network)).metadata_props}
    assert props["sparsearch.opset"] == str(ONNX_OPSET)
    source = result.document["source"]
    assert source["model_uri"] == study["result"].model_uri and source["versions"]["onnx"] == onnx.__version__


def test_export_command_and_its_errors(study, tmp_path, capsys, monkeypatch):
    from sparsearch.cli import main
    from sparsearch.search.storage import open_storage

    res = str(study["results"])
    out = tmp_path / "cli"
    assert main(["export", NAME, "--format", "onnx", "--out", str(out), "--results", res, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "onnx" and doc["network"] == str(out / "model.onnx") and (out / "encoder.json").exists()
    assert main(["export", NAME, "--format", "torchscript", "--out", str(out), "--results", res]) == 0
    assert "wrote" in capsys.readouterr().out and (out / "model.pt").exists()

    def one_line_exit_2(argv: list[str], needle: str) -> None:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err

    one_line_exit_2(["export", "nope", "--format", "onnx", "--out", str(out), "--results", res], "unknown study")
    one_line_exit_2(["export", NAME, "--format", "pmml", "--out", str(out), "--results", res],
                    "invalid choice: 'pmml'")
    optuna.create_study(study_name="no-model", storage=open_storage(f"journal:{study['results'] / 'optuna.journal'}"))
    one_line_exit_2(["export", "no-model", "--format", "onnx", "--out", str(out), "--results", res],
                    "has no logged model")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # the export extra absent: import fails
    one_line_exit_2(["export", NAME, "--format", "onnx", "--out", str(out), "--results", res],
                    "pip install 'sparsearch[export]'")
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    one_line_exit_2(["export", NAME, "--format", "onnx", "--out", str(tmp_path / "file"), "--results", res],
                    "is a file; give a folder")


def test_export_function_validates_the_format():
    from sparsearch import export_study
    from sparsearch.errors import SpecError

    with pytest.raises(SpecError, match="unknown export format 'onx' .*allowed: onnx, torchscript"):
        export_study(NAME, fmt="onx", out="unused")


def test_an_image_network_is_refused(tmp_path):
    from sparsearch.spaces import SparseCNN
    from sparsearch.spaces.portable import export_torchscript

    with pytest.raises(TypeError, match="only tabular networks"):
        export_torchscript(SparseCNN(1, 8, 3), tmp_path / "m.pt")


def test_a_hashed_column_is_portable_and_the_json_reader_reproduces_its_codes():
    """Hashed string and integer columns: the reader, from the document's ``hash`` entry alone, gives the
    encoder's codes for known, unseen, missing, unreadable and non-ASCII values; an ordered integer column's
    number and indicator land where ``numeric_index`` says."""
    from sparsearch.spaces import TabularEncoder
    from sparsearch.spaces.portable import encoder_document

    rng = np.random.default_rng(5)
    n = 600
    frame = pl.DataFrame({"user": [f"u{k}" for k in rng.integers(0, 400, n)], "kind": rng.choice(["a", "b"], n),
                          "item": pl.Series(rng.integers(-500, 500, n)).set(pl.Series(rng.random(n) < 0.1), None),
                          "price": rng.normal(size=n), "y": rng.integers(0, 2, n)})
    enc = TabularEncoder.fit(frame, "y", max_cardinality=60, ordered_ints=30)
    doc = json.loads(json.dumps(encoder_document(enc), allow_nan=False))
    user, kind, item, price = doc["columns"]
    assert user["encoding"] == "hash" and user["n_buckets"] == 58 and user["portable"] and "vocabulary" not in user
    assert user["hash"]["function"] == "fnv1a64" and user["hash"]["offset_basis"] == "0xcbf29ce484222325"
    assert item["encoding"] == "hash" and item["ordered"] and item["indicator"] and item["numeric_index"] == 0
    assert kind["encoding"] == "vocabulary" and kind["vocabulary"] == ["a", "b"] and not kind["ordered"]
    assert price["input_index"] == 2 and doc["inputs"]["numeric"]["columns"] == ["item", "item_missing", "price"]
    assert doc["portable"] is True
    rows = frame.drop("y").to_pandas()
    rows["user"] = rows["user"].astype(object)
    rows["item"] = rows["item"].astype(object)
    rows.loc[0:4, "user"] = ["nobody", "日本", "", None, "é"]
    rows.loc[5:9, "item"] = [10**6, None, 3.5, 7.0, -3]  # unseen, missing, unreadable, a whole float
    cat, num = reference_decode(doc, rows.to_dict("records"))
    want_cat, want_num = enc.transform(rows)
    np.testing.assert_array_equal(cat, want_cat)
    np.testing.assert_array_equal(num, want_num)
    assert len(np.unique(cat[:, 0])) > 40 and cat[3, 0] == 0 and cat[7, 2] == 1 and num[7, 1] == 1.0


def test_a_model_packaged_with_polars_hash_is_described_as_not_portable():
    from sparsearch.spaces import TabularEncoder
    from sparsearch.spaces.portable import encoder_document

    frame = pl.DataFrame({"user": [f"u{i}" for i in range(40)], "kind": ["a", "b"] * 20, "y": [0, 1] * 20})
    enc = TabularEncoder.fit(frame, "y", max_cardinality=10)
    object.__setattr__(enc.columns[0], "hash", "polars")  # as an encoder pickled before the stable hash loads
    doc = encoder_document(enc)
    assert doc["columns"][0]["hash"]["function"] == "polars" and doc["columns"][0]["portable"] is False
    assert doc["portable"] is False


def test_a_multiclass_model_with_a_boolean_column_round_trips_through_the_json(tmp_path):
    """Softmax outputs, a boolean vocabulary written as JSON booleans, a Float32 column, no study needed."""
    from sparsearch.search.model import build_model_package
    from sparsearch.spaces import SparseMLP, TabularEncoder
    from sparsearch.spaces.portable import encoder_document, export_onnx

    rng = np.random.default_rng(1)
    n = 300
    frame = pl.DataFrame({"kind": rng.choice(["x", "y", "z"], n), "flag": rng.random(n) < 0.5,
                          "size": pl.Series(rng.normal(size=n), dtype=pl.Float32),
                          "label": rng.choice(["a", "b", "c"], n)})
    frame = frame.with_columns(size=frame["size"].set(pl.Series(rng.random(n) < 0.1), None))
    enc = TabularEncoder.fit(frame, "label")
    torch.manual_seed(0)
    net = SparseMLP(enc.cardinalities, len(enc.numeric_names), [8], 3,
                    numeric_mean=torch.tensor([0.1, 0.0]), numeric_std=torch.tensor([1.5, 1.0])).eval()
    package = build_model_package(net, enc, None)
    doc = json.loads(json.dumps(encoder_document(enc, package.network("compact")), allow_nan=False))
    assert doc["classes"] == ["a", "b", "c"]
    assert next(c for c in doc["columns"] if c["name"] == "flag")["vocabulary"] == [False, True]
    size = next(c for c in doc["columns"] if c["name"] == "size")
    assert size["indicator"] and size["standardise"] == {"mean": [pytest.approx(0.1), 0.0], "std": [1.5, 1.0],
                                                         "applied_by": "network"}
    export_onnx(package.network("compact"), tmp_path / "m.onnx")
    rows = frame.drop("label").to_pandas()
    rows["flag"] = rows["flag"].astype(object)
    rows.loc[0:4, "flag"] = None
    rows.loc[5:9, "kind"] = "w"
    cat, num = reference_decode(doc, rows.to_dict("records"))
    got = _run_network("onnx", tmp_path / "m.onnx", cat, num)
    np.testing.assert_allclose(got, package.predict(None, rows).to_numpy(), atol=1e-5, rtol=0)


# -- every ingredient of the model family, without a study ----------------------------------------------------------
INGREDIENTS = {  # name: (encoder options, TrialConfig options)
    "standard": ({}, {}),
    "quantile": ({}, {"numeric_encoding": "quantile"}),
    "ple": ({}, {"numeric_encoding": "ple", "numeric_bins": 6}),
    "plr": ({}, {"numeric_encoding": "plr", "numeric_embedding_dim": 4}),
    "cross_layers": ({}, {"cross_layers": 2, "cross_rank": 4}),
    "fm": ({}, {"fm_dim": 4}),
    "ensemble": ({}, {"ensemble_size": 3}),
    "ordered_ints": ({"ordered_ints": 20}, {}),
    "hashed": ({"max_cardinality": 64}, {}),
}
ALL = ({"ordered_ints": 20, "max_cardinality": 64},
       {"numeric_encoding": "quantile", "cross_layers": 1, "cross_rank": 4, "fm_dim": 4, "ensemble_size": 3})


def ingredient_frame(n_classes: int, n: int = 1800, seed: int = 8) -> pl.DataFrame:
    """Strings (one with 300 values: hashed under max_cardinality 64), an integer with 30 values (ordered under
    ordered_ints 20), a boolean, a Float64 and a Float32 number, missing values in each."""
    rng = np.random.default_rng(seed)
    city, user = rng.choice([f"c{i}" for i in range(12)], n), rng.integers(0, 300, n)
    shop, promo = rng.integers(0, 30, n), rng.random(n) < 0.4
    price, size = rng.lognormal(2.0, 0.5, n), rng.normal(size=n)
    score = (np.isin(city, ["c1", "c3", "c5"]) * 1.5 + 0.08 * shop + (user % 7 == 0) - 0.2 * price
             + promo * (size > 0) + size)
    cuts = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    label = np.searchsorted(cuts, score + rng.normal(scale=0.7, size=n))
    miss = lambda p: pl.Series(rng.random(n) < p)  # noqa: E731
    return pl.DataFrame({
        "city": city, "user": [f"user-{u}" for u in user], "shop": pl.Series(shop).set(miss(0.05), None),
        "promo": pl.Series(promo).set(miss(0.05), None), "price": pl.Series(price).set(miss(0.05), None),
        "size": pl.Series(size, dtype=pl.Float32), "label": [f"k{v}" for v in label],
    })


def ingredient_rows(frame: pl.DataFrame) -> pd.DataFrame:
    """Raw held-out rows with unseen, missing and unreadable values."""
    raw = frame.drop("label").to_pandas()
    for column in ("city", "user", "shop", "promo"):
        raw[column] = raw[column].astype(object)
    raw.loc[0:4, "city"] = "atlantis"
    raw.loc[5:9, "user"] = ["nobody", "日本", "", "user-301", "user-0 "]
    raw.loc[10:14, "shop"] = [999, -5, 3.5, None, 7.0]  # unseen (an ordered number still), unreadable, missing
    raw.loc[15:19, "promo"] = None
    raw.loc[20:24, "user"] = None
    raw.loc[25:29, "price"] = [np.nan, np.inf, -np.inf, 1e6, -1e6]
    raw.loc[30:34, "size"] = [np.nan, 1e3, -1e3, 0.0, 1e-9]
    return raw


def _parity(encoder_options: dict, config_options: dict, n_classes: int, tmp_path) -> None:
    from sparsearch.search.model import build_model_package
    from sparsearch.spaces import TabularEncoder, TrialConfig, train_and_evaluate
    from sparsearch.spaces.portable import encoder_document, export_onnx, export_torchscript

    frame = ingredient_frame(n_classes)
    train_rows, val_rows, test_rows = np.arange(0, 1200), np.arange(1200, 1500), np.arange(1500, 1800)
    enc = TabularEncoder.fit(frame, "label", rows=train_rows, **encoder_options)
    train, val = enc.encode(frame, [train_rows, val_rows])
    config = TrialConfig(widths=(32, 16), depth=2, epochs=2, batch_size=128, lr=1e-2, target_sparsity=0.7, start_frac=0.0,
                         end_frac=0.5, **config_options)
    network = train_and_evaluate(config, train, val, seed=0, measure_latency=False).model.eval()
    package = build_model_package(network, enc, None)
    compact = package.network("compact")
    if config_options.get("numeric_encoding") not in (None, "standard"):
        assert hasattr(compact, "numeric_encoder")
    doc = json.loads(json.dumps(encoder_document(enc, compact), allow_nan=False))
    assert doc["portable"] is True and doc["classes"] == [f"k{i}" for i in range(n_classes)]
    rows = ingredient_rows(frame[test_rows])
    cat, num = reference_decode(doc, rows.to_dict("records"))
    expected = package.predict(None, rows).to_numpy()
    assert expected.std(axis=0).max() > 0.02  # a model whose outputs vary: parity means something
    export_onnx(compact, tmp_path / "m.onnx")
    export_torchscript(compact, tmp_path / "m.pt")
    for fmt, path in (("onnx", tmp_path / "m.onnx"), ("torchscript", tmp_path / "m.pt")):
        got = _run_network(fmt, path, cat, num)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=fmt)
    # exporting leaves the pyfunc as it was, bit for bit (the ONNX export swaps blocks in a copy)
    np.testing.assert_array_equal(package.predict(None, rows).to_numpy(), expected)
    if config_options.get("numeric_encoding") == "quantile":
        from sparsearch.spaces.numeric import QuantileEncoding

        assert type(compact.numeric_encoder) is QuantileEncoding


@pytest.mark.parametrize("ingredient", list(INGREDIENTS))
def test_each_ingredient_exports_and_reproduces_the_pyfunc(ingredient, tmp_path):
    """Per ingredient of the model family (numeric encodings, cross layers, FM block, efficient ensemble,
    ordered integer columns, hashed columns): the JSON reader + ONNX Runtime and TorchScript give the pyfunc's
    probabilities to 1e-5 on raw rows with unseen, missing and unreadable values."""
    _parity(*INGREDIENTS[ingredient], n_classes=2, tmp_path=tmp_path)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_all_ingredients_together_export_and_reproduce_the_pyfunc(n_classes, tmp_path):
    _parity(*ALL, n_classes=n_classes, tmp_path=tmp_path)


# -- the logged model's requirements, and MLflow's model server ----------------------------------------------------
def _tracking(study) -> str:
    return f"sqlite:///{study['results'] / 'mlflow.db'}"


@pytest.fixture(scope="module")
def model_dir(study, tmp_path_factory):
    """The logged model's folder (MLmodel, requirements.txt, code/), downloaded from the study's MLflow store."""
    import mlflow

    from sparsearch.search.tracking import fluent_tracking_uri

    with fluent_tracking_uri(_tracking(study)):  # a models:/ URI resolves against the fluent store
        return Path(mlflow.artifacts.download_artifacts(study["result"].model_uri,
                                                        dst_path=str(tmp_path_factory.mktemp("model_dir"))))


def test_the_carried_wheel_holds_every_package_and_file_of_the_distribution(tmp_path):
    import zipfile

    import tomllib

    from sparsearch.search.requirements import build_wheel

    root = Path(__file__).resolve().parents[2]
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    mapped = setuptools["package-dir"]

    def folder_of(package: str) -> Path:  # the folder of the nearest mapped ancestor, then the rest of the name
        parts = package.split(".")
        head = next(i for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mapped)
        return root / mapped[".".join(parts[:head])] / Path(*parts[head:])

    for package in setuptools["packages"]:  # each package's modules, from the folder pyproject maps it to
        folder = folder_of(package)
        modules = sorted(folder.glob("*.py"))
        assert modules, folder
        for source in modules:
            assert f"{package.replace('.', '/')}/{source.name}" in names, source
    assert {f"sparsearch/studies/{p.name}" for p in (root / "studies").glob("*.toml")} <= names
    assert {"sparsearch-0.1.0.dist-info/METADATA", "sparsearch-0.1.0.dist-info/RECORD",
            "sparsearch-0.1.0.dist-info/entry_points.txt"} <= names
    assert not any("__pycache__" in n for n in names)


def test_logged_model_names_its_requirements_and_carries_sparsearch(study, model_dir):
    from importlib.metadata import version

    from packaging.version import Version

    from sparsearch.search.requirements import from_index

    reqs = (model_dir / "requirements.txt").read_text().split()
    for name in ("torch", "polars", "pandas", "numpy"):
        assert f"{name}=={Version(version(name)).public}" in reqs, reqs
    assert any(r.startswith("mlflow==") for r in reqs), reqs  # MLflow adds itself
    assert not from_index()  # this checkout is an editable install: the model carries the wheel
    wheel = "code/sparsearch-0.1.0-py3-none-any.whl"
    assert wheel in reqs and (model_dir / wheel).is_file()
    assert "code" in (model_dir / "MLmodel").read_text()  # MLflow knows the code path


def test_the_carried_wheel_loads_and_runs_the_model_without_this_checkout(study, model, model_dir, test_rows, tmp_path):
    """pip installs the carried wheel (offline, no dependencies) into an empty folder; a fresh interpreter whose
    sparsearch comes from there loads the model folder and predicts as the pyfunc does. Then every distribution
    the prediction imported is a requirement or a dependency of one (read from the installed metadata)."""
    import subprocess
    import sys

    target = tmp_path / "site"
    wheel = model_dir / "code" / "sparsearch-0.1.0-py3-none-any.whl"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target),
                    str(wheel)], check=True, timeout=300)
    rows = test_rows.drop(index=range(50, 53))  # parquet holds no object column of mixed ints and floats: as text
    rows.astype({"shop": "float64"}).to_parquet(tmp_path / "rows.parquet")
    script = f"""
import json, sys
from importlib import metadata
import mlflow.pyfunc, pandas as pd, sparsearch
assert sparsearch.__file__.startswith({str(target)!r}), sparsearch.__file__
before = set(sys.modules)
model = mlflow.pyfunc.load_model({str(model_dir)!r})
proba = model.predict(pd.read_parquet({str(tmp_path / 'rows.parquet')!r}))
owners = metadata.packages_distributions()
used = sorted({{d for m in set(sys.modules) - before for d in owners.get(m.split('.')[0], [])}})
json.dump({{"proba": proba.to_numpy().tolist(), "used": used}}, open({str(tmp_path / 'out.json')!r}, "w"))
"""
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)  # cwd: not the checkout, whose sparsearch/ folder would be imported
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    expected = model.predict(rows.astype({"shop": "float64"}))
    np.testing.assert_allclose(np.asarray(out["proba"]), expected.to_numpy(), atol=1e-9)
    # every distribution imported is reachable from requirements.txt through the installed Requires-Dist
    reqs = (model_dir / "requirements.txt").read_text().split()
    closure = _dependency_closure(["sparsearch" if r.startswith("code/") else r.split("==")[0] for r in reqs])
    missing = [d for d in out["used"] if _canon(d) not in closure]
    assert not missing, f"imported but not required: {missing}"


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _dependency_closure(roots: list[str]) -> set[str]:
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [_canon(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(_canon(req.name))
    return seen


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_model_server_answers_raw_rows_like_the_pyfunc(study, model, test_rows, tmp_path):
    """``mlflow models serve --env-manager local`` on 127.0.0.1: /invocations with raw rows (unseen categories,
    missing values) returns the pyfunc's probabilities."""
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    # MLflow starts the server as `uvicorn` from PATH: make it this interpreter's, as an activated environment
    # would (a virtual environment that borrows the system's site-packages has no uvicorn script of its own)
    shim = tmp_path / "bin" / "uvicorn"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uvicorn "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "MLFLOW_TRACKING_URI": _tracking(study),
           "PATH": f"{shim.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", study["result"].model_uri,
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # cwd: not the checkout, whose sparsearch/ would be imported
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the model server did not answer /ping in 240 s"
            time.sleep(1)
        rows = test_rows.drop(index=range(50, 53))  # JSON has no infinity
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.loads(r.read())["predictions"]
        got = pd.DataFrame(answer)
        expected = model.predict(rows)
        assert list(got.columns) == list(expected.columns) and len(got) == len(rows)
        np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), atol=1e-9)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its workers: the group this test started
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
