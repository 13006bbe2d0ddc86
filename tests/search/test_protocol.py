"""The evaluation protocol: one deterministic stratified train/validation/test split, label-fitted steps on training
rows only, and the incumbent(s) evaluated once on the held-out test rows."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from sparsearch.errors import DataError, SpecError
from sparsearch.search.compare import to_test_metric, verdict
from sparsearch.search.controller import load_result, run_study
from sparsearch.search.data import prepare_data, rank_training_rows, select_features
from sparsearch.search.records import TEST_PREFIX, get_test_record
from sparsearch.search.spec import load_study
from sparsearch.spaces import (
    config_from_params,
    evaluate_model,
    split_indices,
    suggest_config,
    train_and_evaluate,
)


# -- the split ---------------------------------------------------------------------------------------------------
def test_split_is_deterministic_disjoint_complete_and_stratified():
    rng = np.random.default_rng(1)
    y = (rng.random(5000) < 0.1).astype(int)  # 10% positives
    a = split_indices(y, 0.2, 0.25, seed=7)
    b = split_indices(y.copy(), 0.2, 0.25, seed=7)
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x, z)
    tr, va, te = a
    assert not (set(tr) & set(va)) and not (set(tr) & set(te)) and not (set(va) & set(te))
    assert len(tr) + len(va) + len(te) == y.size
    assert abs(len(te) - 0.25 * y.size) <= 2 and abs(len(va) - 0.2 * y.size) <= 2
    for part in (tr, va, te):  # every side keeps the class balance
        assert abs(y[part].mean() - y.mean()) < 0.005
    other = split_indices(y, 0.2, 0.25, seed=8)
    assert not np.array_equal(other[2], te)


def test_split_rejects_fractions_that_leave_no_training_rows():
    with pytest.raises(DataError, match="val_fraction \\+ test_fraction < 1"):
        split_indices(np.array([0, 1] * 10), 0.5, 0.5, seed=0)
    with pytest.raises(SpecError, match="val_fraction \\+ test_fraction must be < 1"):
        load_study("quickstart", **{"train.val_fraction": 0.6, "train.test_fraction": 0.5})


def test_zero_test_fraction_gives_no_test_rows():
    tr, va, te = split_indices(np.array([0, 1] * 50), 0.2, 0.0, seed=0)
    assert te.size == 0 and tr.size == 80 and va.size == 20


# -- no label leakage into the prefilter ----------------------------------------------------------------------------
def _spec(path, **overrides):
    raw = {
        "study": {"name": "proto", "n_trials": 2, "seed": 3},
        "data": {"path": str(path), "target": "click", "top_k": 4},
        "space": {"depth": 1, "width": 8},
        "train": {"epochs": 1, "batch_size": 256, "val_fraction": 0.25, "test_fraction": 0.25},
        "execution": {"workers": 2},
    }
    return load_study(raw, **overrides)


def _write_click_log(tmp_path):
    from sparsearch.features import DATASETS

    df = DATASETS["click_log"](n_rows=4000, n_noise=6, max_cardinality=300, seed=0)
    path = tmp_path / "clicks.parquet"
    df.write_parquet(path)
    return df, path


def test_ranking_uses_training_rows_only_and_records_them(tmp_path):
    df, path = _write_click_log(tmp_path)
    prepared = prepare_data(_spec(path), tmp_path)
    tr, va, te = (prepared.indices[k] for k in ("train", "val", "test"))
    assert prepared.ranking_rows == {"rows": "train", "n_rows": tr.size, "split_digest": prepared.split["digest"]}
    assert prepared.split["n_test"] == te.size == prepared.test.n_rows
    assert prepared.train.n_rows == tr.size and prepared.val.n_rows == va.size
    columns = [c for c in df.columns if c != "click"]
    spec = _spec(path)
    # permuting the validation and test labels leaves the ranking unchanged (same split)...
    held = np.concatenate([va, te])
    y = df["click"].to_numpy().copy()
    y[held] = np.random.default_rng(0).permutation(y[held])
    shuffled = df.with_columns(pl.Series("click", y))
    assert (shuffled["click"].to_numpy()[held] != df["click"].to_numpy()[held]).any()
    again = rank_training_rows(shuffled, columns, "click", tr, spec)
    assert again.sort("feature")["score"].to_list() == prepared.ranking.sort("feature")["score"].to_list()
    # ...while permuting training labels changes it: the check above can fail
    y2 = df["click"].to_numpy().copy()
    y2[tr] = np.random.default_rng(0).permutation(y2[tr])
    moved = rank_training_rows(df.with_columns(pl.Series("click", y2)), columns, "click", tr, spec)
    assert moved.sort("feature")["score"].to_list() != prepared.ranking.sort("feature")["score"].to_list()


def test_input_example_shares_no_memory_with_the_loaded_frame(tmp_path):
    """The packaged model's 5-row input example is a copy: a polars slice would keep the whole frame alive for the
    whole study (2.6 GB at clicklog_large's size)."""
    from sparsearch.search.data import _detached

    df = pl.DataFrame({"a": np.arange(100_000, dtype=np.int32), "s": ["xyz"] * 100_000,
                       "c": pl.Series(["u", None] * 50_000).cast(pl.Categorical)})

    def address(s: pl.Series) -> int:
        return s.to_numpy().__array_interface__["data"][0]

    view = df.select(["a", "s", "c"]).head(5)
    assert address(view["a"]) == address(df["a"])  # a slice is a view of the frame: the check below can fail
    copy = _detached(view)
    assert copy.equals(view) and copy.schema == view.schema
    assert address(copy["a"]) != address(df["a"])
    _, path = _write_click_log(tmp_path)
    prepared = prepare_data(_spec(path), tmp_path)
    assert prepared.example.height == 5 and prepared.example.columns == [c for c in pl.read_parquet_schema(path)
                                                                         if c != "click"]


def test_image_set_with_its_own_test_set_uses_it(tmp_path, monkeypatch):
    from sparsearch.spaces import ImageData
    from sparsearch.spaces import images as sdata

    calls = []

    def fake(path=None, limit=None, *, part="train"):
        calls.append((part, limit))
        n = 60 if part == "train" else 20
        rng = np.random.default_rng(0 if part == "train" else 1)
        return ImageData(x=rng.random((n, 1, 4, 4), dtype=np.float32), y=np.arange(n) % 10, n_classes=10)

    monkeypatch.setitem(sdata.IMAGE_DATASETS, "fashion_mnist", fake)
    spec = load_study({"study": {"name": "img", "n_trials": 1, "objectives": ["val_accuracy"]},
                       "data": {"generator": "fashion_mnist", "params": {"limit": 60}},
                       "space": {"model": "cnn"}, "train": {"epochs": 1}})
    prepared = prepare_data(spec, tmp_path)
    assert ("test", None) in calls  # the whole test part, whatever the training limit
    assert prepared.test.n_rows == 20 and prepared.split["test_source"] == "t10k"
    assert prepared.train.n_rows + prepared.val.n_rows == 60


# -- test metrics at the end of an execution -----------------------------------------------------------------------
@pytest.mark.usefixtures("ray_session")
def test_best_trial_is_evaluated_once_on_test_rows_and_reported_everywhere(tmp_path):
    from mlflow.tracking import MlflowClient

    _, path = _write_click_log(tmp_path)
    spec = _spec(path)
    result = run_study(spec, results_dir=tmp_path, progress=False)
    best = result.best_trial
    doc = result.to_json()
    assert set(doc["test_metrics"]) == {"test_auc", "test_logloss", "test_accuracy"}
    assert doc["test"] == [{"number": best.number, "metrics": doc["test_metrics"]}]
    assert doc["split"]["n_test"] == 1000 and doc["best_values"] == [best.value]
    json.dumps(doc)
    rec = get_test_record(result.study, best.number)
    assert rec["n_rows"] == 1000 and rec["retrained"] is False

    # correct: the trial re-trained from its parameters with its own seed gives the same test metrics
    prepared = prepare_data(spec, tmp_path)
    config = config_from_params(best.params, spec.space, spec.train, n_features=len(prepared.candidates))
    outcome = train_and_evaluate(config, prepared.train, prepared.val, seed=spec.study.seed * 100_003 + best.number,
                                 threads=1, measure_latency=False)
    assert outcome.metrics["val_auc"] == pytest.approx(best.value, abs=1e-6)
    expected = evaluate_model(outcome.model, select_features(prepared.test, None))
    assert rec["metrics"] == pytest.approx(expected, abs=1e-6)

    # on the MLflow parent and on the best trial's child run
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("proto")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert parent.data.metrics["test_auc"] == pytest.approx(rec["metrics"]["test_auc"])
    child = next(r for r in runs if r.data.tags.get("test_evaluated") == "true")
    assert child.data.metrics["test_auc"] == pytest.approx(rec["metrics"]["test_auc"])
    assert sum(r.data.tags.get("test_evaluated") == "true" for r in runs) == 1

    # `show` reads them back from the storage
    shown = load_result("proto", results_dir=tmp_path).to_json()
    assert shown["test_metrics"] == doc["test_metrics"] and shown["split"]["digest"] == doc["split"]["digest"]

    # a resumed execution whose incumbent stays keeps the stored figures; one that never tested it re-trains it
    study = result.study
    study.set_user_attr(f"{TEST_PREFIX}{best.number}", None)  # as if the first execution died before testing
    again = run_study(spec, results_dir=tmp_path, progress=False, n_trials=1,
                      **{"execution.trial_timeout": 0.01})
    assert again.best_trial.number == best.number
    rec2 = get_test_record(again.study, best.number)
    assert rec2["retrained"] is True
    assert rec2["metrics"] == pytest.approx(rec["metrics"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_pareto_trials_are_each_evaluated_on_test_rows(tmp_path):
    _, path = _write_click_log(tmp_path)
    spec = _spec(path, **{"study.objectives": ["val_auc", "nnz_params"], "study.n_trials": 4,
                          "space.depth": [1, 2], "space.width": [8, 32], "study.name": "proto-mo"})
    result = run_study(spec, results_dir=tmp_path, progress=False)
    front = {t.number for t in result.best_trials}
    doc = result.to_json()
    assert {e["number"] for e in doc["test"]} == front
    for t in result.best_trials:
        assert get_test_record(result.study, t.number)["metrics"]["test_auc"] > 0.5


def test_no_test_fraction_means_no_test_metrics(tmp_path):
    _, path = _write_click_log(tmp_path)
    prepared = prepare_data(_spec(path, **{"train.test_fraction": 0.0}), tmp_path)
    assert prepared.test is None and prepared.split["n_test"] == 0


# -- compare decides on test metrics --------------------------------------------------------------------------------
def test_verdict_uses_one_rule_both_ways():
    assert to_test_metric("val_auc") == "test_auc" and to_test_metric("nnz_params") == "nnz_params"
    worse = verdict([0.1, 0.11, 0.12, 0.13, 0.14], [0.8, 0.81, 0.82, 0.83, 0.84], maximize=True, names=("a", "b"))
    assert worse["outcome"] == "loses" and worse["p_value"] < 0.05
    three = verdict([0.9, 0.91, 0.92], [0.1, 0.11, 0.12], maximize=True, names=("a", "b"))
    assert three["outcome"] == "no difference shown"  # three seeds a side cannot reach p < 0.05


# -- multi-fidelity inside an epoch ------------------------------------------------------------------------------
def test_reports_inside_an_epoch_are_evenly_spaced_and_use_a_fixed_subset(tmp_path):
    _, path = _write_click_log(tmp_path)
    spec = _spec(path, **{"train.reports_per_epoch": 4, "train.report_rows": 200, "train.epochs": 2,
                          "train.batch_size": 100})
    prepared = prepare_data(spec, tmp_path)
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    config = suggest_config(study.ask(), spec.space, spec.train)
    seen = []
    outcome = train_and_evaluate(config, prepared.train, prepared.val, seed=0, threads=1, measure_latency=False,
                                 callback=lambda step, m: seen.append((step, m["epoch"], m["val_auc"])))
    assert [s for s, _, _ in seen] == list(range(1, 9))
    assert [e for _, e, _ in seen] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], abs=0.02)
    # end-of-epoch reports are the epoch's full validation metrics
    assert seen[3][2] == pytest.approx(outcome.history[0]["val_auc"]) and seen[7][2] == outcome.metrics["val_auc"]


@pytest.mark.usefixtures("ray_session")
def test_a_trial_pruner_stops_a_trial_inside_its_first_epoch(tmp_path):
    _, path = _write_click_log(tmp_path)
    spec = _spec(path, **{"train.reports_per_epoch": 4, "study.pruner": "threshold",
                          "study.pruner_params": {"lower": 0.999}, "study.name": "proto-prune"})
    result = run_study(spec, results_dir=tmp_path, progress=False)
    assert len(result.trials) == 2  # the study's n_trials: the loop below must see every one of them
    for t in result.trials:
        assert t.state.name == "PRUNED"
        assert list(t.intermediate_values) == [1]  # stopped after the first quarter of epoch 1
        assert "epoch 0.25" in t.user_attrs["note"]


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_successive_halving_and_hyperband_run_with_asynchronous_workers(tmp_path, pruner):
    _, path = _write_click_log(tmp_path)
    spec = _spec(path, **{"train.reports_per_epoch": 3, "train.epochs": 2, "study.pruner": pruner,
                          "study.n_trials": 6, "study.name": f"proto-{pruner}", "space.width": [4, 64]})
    if pruner == "hyperband":
        assert spec.pruner_params()["max_resource"] == 6  # epochs x reports per epoch
    result = run_study(spec, results_dir=tmp_path, progress=False)
    from sparsearch.search.registry import make_pruner

    assert make_pruner(spec.study.pruner, **spec.pruner_params()).__class__.__name__ == {"successive_halving": "SuccessiveHalvingPruner",
                                                      "hyperband": "HyperbandPruner"}[pruner]
    assert len(result.trials) == 6
    complete = [t for t in result.trials if t.state.name == "COMPLETE"]
    pruned = [t for t in result.trials if t.state.name == "PRUNED"]
    # pruning must happen: at a rung with fewer than reduction_factor trials, Optuna promotes only the best so far,
    # so 6 trials all go on only if each beats every earlier trial at every rung (seed 3: 4 pruned by successive
    # halving, 3 by Hyperband)
    assert complete and all(sorted(t.intermediate_values) == list(range(1, 7)) for t in complete)
    assert pruned, f"{pruner} pruned no trial"
    assert all(max(t.intermediate_values) < 6 for t in pruned)  # stopped before the last report
