"""In a study, a trial's value is its best epoch's, the pruner saw every epoch, and the model that scores the test
rows and is packaged is that epoch's: the pyfunc on the raw test rows reproduces the stored test metrics."""

from __future__ import annotations

import mlflow
import numpy as np
import polars as pl
import pytest

from sparsearch.search.spec import DataSpec, StudySection, StudySpec

EPOCHS = 6


def _frame(n: int = 3000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 20, n)
    b = rng.integers(0, 5, n)
    x = rng.normal(size=n)
    logit = np.linspace(-2, 2, 20)[a] + (b == 3) * 1.5 + 0.8 * x - 0.5
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pl.DataFrame({"a": [f"a{v}" for v in a], "b": b, "noise": rng.integers(0, 50, n), "x": x, "y": y})


@pytest.mark.usefixtures("ray_session")
def test_the_kept_tested_and_packaged_model_is_the_best_epochs(tmp_path):
    from sparsearch.search.controller import run_study
    from sparsearch.search.results import get_test_record
    from sparsearch.spaces import classification_metrics

    frame = _frame()
    spec = StudySpec(
        study=StudySection(name="best-epoch", n_trials=2, sampler="random", seed=0, objectives=["val_logloss"],
                           pruner="median", pruner_params={"n_startup_trials": 10}),
        data=DataSpec(frame=frame, target="y", prefilter="none"),
        # a dense net that overfits these 1,800 training rows: its validation log-loss gets worse after epoch 2
        space={"depth": 2, "width": 128, "embedding_dim": 16, "dropout": 0.0, "methods": ["dense"]},
        train={"epochs": EPOCHS, "batch_size": 64, "lr": 0.03},
    )
    result = run_study(spec, results_dir=tmp_path / "res", progress=False)
    done = [t for t in result.study.trials if t.state.name == "COMPLETE"]
    assert len(done) == 2
    for t in done:
        k = int(t.user_attrs["metrics"]["best_epoch"])
        reported = t.intermediate_values
        assert sorted(reported) == list(range(1, EPOCHS + 1))  # the pruner saw every epoch
        assert t.value == reported[k] == min(reported.values())  # the value is the best epoch's
    best = result.best_trial
    assert int(best.user_attrs["metrics"]["best_epoch"]) < EPOCHS  # the check below can fail: not the last epoch
    assert best.intermediate_values[EPOCHS] > best.value

    from sparsearch.search.data import prepare_data

    prepared = prepare_data(spec, tmp_path / "res")
    raw_test = frame[prepared.indices["test"]]
    raw_val = frame[prepared.indices["val"]]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'res' / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model(result.model_uri)
    finally:
        mlflow.set_tracking_uri(None)

    def metrics_of(raw: pl.DataFrame) -> dict[str, float]:
        proba = model.predict(raw.drop("y").to_pandas())
        return classification_metrics(raw["y"].to_numpy(), np.log(proba["1"] / proba["0"]).to_numpy()[:, None])

    record = get_test_record(result.study, best.number)
    on_test = metrics_of(raw_test)
    assert on_test["val_logloss"] == pytest.approx(record["metrics"]["test_logloss"], rel=1e-6)
    assert on_test["val_auc"] == pytest.approx(record["metrics"]["test_auc"], abs=1e-6)
    # the packaged model is the best epoch's: on the validation rows it gives the trial's value, not the last
    # epoch's (which differs by more than the tolerance)
    assert metrics_of(raw_val)["val_logloss"] == pytest.approx(best.value, rel=1e-5)
    assert abs(best.intermediate_values[EPOCHS] - best.value) > 1e-3
