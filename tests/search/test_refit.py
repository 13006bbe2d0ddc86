"""``sparsearch refit``: a trial retrained on 2 Ray Train workers over rows streamed by Ray Data ends with the same
masks on every rank, never trains on a test row, logs a working pyfunc model, resumes after a killed worker, and
refuses bad input with one line (exit 2) before any worker starts."""

from __future__ import annotations

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from sparsearch.search.spec import DataSpec, StudySection, StudySpec, TrackingSpec

NAME = "refitted"


def raw_frame(n: int = 1600, seed: int = 3) -> pl.DataFrame:
    """Raw rows of mixed types (text, integers with gaps, booleans, floats) whose label depends on them."""
    rng = np.random.default_rng(seed)
    city = rng.choice([f"c{i}" for i in range(10)], n)
    shop = rng.integers(0, 20, n)
    price = rng.normal(10.0, 3.0, n)
    promo = rng.random(n) < 0.4
    logit = np.isin(city, ["c1", "c3", "c5"]) * 1.5 + (shop % 3 == 0) * 1.0 - 0.4 * (price - 10.0) + promo - 1.0
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    frame = pl.DataFrame({"city": city, "shop": shop, "price": price, "promo": promo, "noise": rng.integers(0, 4, n),
                          "label": y})
    return frame.with_columns(price=frame["price"].set(pl.Series(rng.random(n) < 0.05), None))


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_session):
    from sparsearch.search.controller import run_study

    results = tmp_path_factory.mktemp("refit") / "res"
    frame = raw_frame()
    spec = StudySpec(
        study=StudySection(name=NAME, n_trials=2, sampler="random", seed=2),
        data=DataSpec(frame=frame, target="label", top_k=3),
        space={"depth": 1, "width": 16, "target_sparsity": 0.8, "methods": ["gmp"]},
        train={"epochs": 2, "batch_size": 256}, tracking=TrackingSpec(),
    )
    result = run_study(spec, results_dir=results, progress=False)
    return {"spec": spec, "result": result, "results": results, "frame": frame,
            "tracking": f"sqlite:///{results / 'mlflow.db'}"}


@pytest.mark.slow  # two Ray workers refit a network end to end (about 40 s each on 2 cores)
def test_refit_on_two_workers_streams_rows_and_keeps_masks_identical(study, tmp_path):
    """Two ranks, a parquet source holding every row of the study (test rows too): the test rows are dropped,
    masks agree on both ranks and with the model, and the logged pyfunc is the refitted network."""
    from sparsearch.search.model import SparsearchModel
    from sparsearch.search.refit import _mask_digest, refit

    frame, result = study["frame"], study["result"]
    source = tmp_path / "rows"
    source.mkdir()
    for i, part in enumerate(frame.iter_slices(500)):  # a folder of parquet files, as a click log arrives
        part.write_parquet(source / f"part-{i}.parquet")
    split = result.study.user_attrs["split"]
    out = refit(study["spec"], data=source, workers=2, cpus_per_worker=0.5, results_dir=study["results"],
                progress=False, register_model=True)
    assert len(out.runs) == 1
    run = out.runs[0]
    best = result.best_trial
    assert run.trial == best.number and run.workers == 2
    # every test row of the study is in the source, and none is trained on: a source row equal to a test row on
    # the columns the model reads and the label is dropped (the test rows, and any duplicate of one)
    from sparsearch.search.data import fit_encoder

    prepared, full = fit_encoder(study["spec"], study["results"])
    cols = [*run.model_encoder_columns, "label"]
    test_keys = full.select(cols)[prepared.indices["test"]].unique()
    expected_drop = frame.select(cols).join(test_keys, on=cols, how="semi", nulls_equal=True).height
    assert expected_drop >= split["n_test"] > 0
    assert run.dropped_test_rows == expected_drop
    n_kept = frame.height - expected_drop
    assert run.epochs == 2
    assert 2 * (n_kept - 1) <= run.rows_seen <= 2 * n_kept  # an equal split over 2 ranks may drop one row
    assert run.rows_per_s > 0
    # the masks of both ranks, the model's, and the trial's target sparsity after the pruning schedule
    assert run.masks_identical and len(run.mask_digests) == 2 and len(set(run.mask_digests)) == 1
    assert _mask_digest(run.model) == run.mask_digests[0]
    assert run.metrics["realized_sparsity"] == pytest.approx(0.8, abs=0.05)
    assert run.history[-1]["mask_updates"] >= 1
    assert len(run.worker_peak_rss_mb) == 2 and min(run.worker_peak_rss_mb) > 0
    # test metrics of the refit beside the trial's, on the same held-out rows
    assert set(run.test_metrics) == {"test_auc", "test_logloss", "test_accuracy"}
    assert run.trial_test_metrics is not None and set(run.trial_test_metrics) == set(run.test_metrics)
    assert 0.5 < run.test_metrics["test_auc"] <= 1.0
    # MLflow: a refit run under the study's experiment with curves and the packaged model
    client = MlflowClient(study["tracking"])
    mlrun = client.get_run(run.mlflow_run_id)
    assert mlrun.info.status == "FINISHED" and mlrun.data.tags["sparsearch.kind"] == "refit"
    assert client.get_experiment(mlrun.info.experiment_id).name == NAME
    losses = client.get_metric_history(run.mlflow_run_id, "refit_train_loss")
    assert sorted(m.step for m in losses) == [1, 2]
    assert mlrun.data.metrics["rows_seen"] == run.rows_seen
    versions = client.search_model_versions(f"name = '{NAME}'")  # register_model: a new registry version
    assert [v.run_id for v in versions] == [run.mlflow_run_id]
    mlflow.set_tracking_uri(study["tracking"])
    try:
        model = mlflow.pyfunc.load_model(run.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    package = model.unwrap_python_model()
    assert isinstance(package, SparsearchModel)
    test_rows = frame[:40]
    proba = model.predict(test_rows.drop("label").to_pandas())
    assert proba.shape == (40, 2)
    np.testing.assert_allclose(proba.to_numpy(), package.probabilities(test_rows, "dense"), atol=1e-6)
    # the run JSON
    doc = out.to_json()["runs"][0]
    for key in ("model_uri", "rows_seen", "rows_per_s", "test_metrics", "trial_test_metrics", "mask_digests"):
        assert doc[key] not in (None, [], {})


FAMILY = "refit-family"


@pytest.fixture(scope="module")
def family_study(study):
    """A study of the new model family (issue #29): piecewise-linear numbers, a 2-member efficient ensemble, a
    DCN-v2 cross layer and FM products, sharing the results folder of ``study``."""
    from sparsearch.search.controller import run_study

    spec = StudySpec(
        study=StudySection(name=FAMILY, n_trials=1, sampler="random", seed=5),
        data=DataSpec(frame=study["frame"], target="label", top_k=3),
        space={"depth": 1, "width": 16, "target_sparsity": 0.8, "methods": ["gmp"], "numeric_encoding": ["ple"],
               "numeric_bins": 8, "ensemble_size": 2, "cross_layers": 1, "cross_rank": 4, "fm_dim": 4},
        train={"epochs": 2, "batch_size": 256}, tracking=TrackingSpec(),
    )
    return {"spec": spec, "result": run_study(spec, results_dir=study["results"], progress=False)}


@pytest.mark.slow  # two Ray workers refit a network end to end (about 40 s each on 2 cores)
def test_refit_reproduces_the_trials_model_family(study, family_study):
    """ple + ensemble_size 2 + cross_layers 1 on 2 workers: the refitted network has the trial's blocks, its
    PLE bins are fitted on the refit's training rows (never a test row), the masks agree across the ranks, and
    the packaged pyfunc scores the raw test rows exactly as the reported test metrics say."""
    from sklearn.metrics import roc_auc_score

    from sparsearch.search.data import fit_encoder
    from sparsearch.search.refit import _mask_digest, refit
    from sparsearch.spaces.ensemble import MaskedEnsembleLinear
    from sparsearch.spaces.numeric import PiecewiseLinear, ple_bins

    spec = family_study["spec"]
    out = refit(spec, workers=2, cpus_per_worker=0.5, results_dir=study["results"], progress=False)
    run = out.runs[0]
    model = run.model
    assert run.workers == 2 and run.masks_identical and len(set(run.mask_digests)) == 1
    assert len(run.mask_digests) == 2 and _mask_digest(model) == run.mask_digests[0]
    # the trial's model family, as spaces.train.build_model builds it for the trial's config
    assert isinstance(model.numeric_encoder, PiecewiseLinear) and model.ensemble_size == 2
    assert len(model.cross) == 1 and isinstance(model.head, MaskedEnsembleLinear)
    assert run.metrics["params_members"] > 0 and 1 <= run.kept_epoch <= 2
    assert run.metrics["realized_sparsity"] == pytest.approx(0.8, abs=0.05)
    # PLE bins: those of the refit's rows (the study's training and validation rows), not of all rows
    prepared, full = fit_encoder(spec, study["results"])
    enc = prepared.encoder.select(run.model_encoder_columns)
    assert enc.numeric_names, "the study must have a numeric column for this test to mean anything"
    rows = np.sort(np.concatenate([prepared.indices["train"], prepared.indices["val"]]))
    refit_rows = enc.encode(full[rows]).numeric
    want = PiecewiseLinear(ple_bins(refit_rows, 8)).state_dict()
    everything = PiecewiseLinear(ple_bins(enc.encode(full).numeric, 8)).state_dict()
    got = model.numeric_encoder.state_dict()
    assert got.keys() == want.keys() and model.numeric_encoder.out_features > 0
    for k in want:
        np.testing.assert_allclose(got[k].numpy(), want[k].numpy(), rtol=1e-6)
    assert any(v.shape != everything[k].shape or not np.allclose(v.numpy(), everything[k].numpy())
               for k, v in want.items()), "the test rows must change the bins for this check to mean anything"
    # the packaged model predicts raw rows and reproduces the reported test metrics
    assert set(run.test_metrics) == {"test_auc", "test_logloss", "test_accuracy"}
    mlflow.set_tracking_uri(study["tracking"])
    try:
        pyfunc = mlflow.pyfunc.load_model(run.model_uri)
    finally:
        mlflow.set_tracking_uri(None)
    te = prepared.indices["test"]
    raw = full[te].select(run.model_encoder_columns)
    proba = pyfunc.predict(raw.to_pandas()).to_numpy()
    assert proba.shape == (te.size, 2)
    y = enc.encode(full[te]).y
    assert roc_auc_score(y, proba[:, 1]) == pytest.approx(run.test_metrics["test_auc"], abs=1e-6)


@pytest.mark.slow
def test_refit_resumes_after_a_killed_worker(study):
    """The worker dies after epoch 1's checkpoint: no model is logged; ``resume`` continues from epoch 2 on the
    study's own training and validation rows and ends like a refit that was never interrupted."""
    from sparsearch.search.refit import RefitFailed, refit

    client = MlflowClient(study["tracking"])
    exp = client.get_experiment_by_name(NAME)

    def refit_runs() -> int:
        return len(client.search_runs([exp.experiment_id], "tags.`sparsearch.kind` = 'refit'"))

    before = refit_runs()
    with pytest.raises(RefitFailed, match="--resume"):
        refit(study["spec"], workers=1, cpus_per_worker=0.5, results_dir=study["results"], progress=False,
              _fail_after_epoch=1)
    assert refit_runs() == before  # nothing half-written: no run, no model
    out = refit(study["spec"], workers=1, cpus_per_worker=0.5, results_dir=study["results"], progress=False,
                resume=True)
    run = out.runs[0]
    assert run.resumed_from_epoch == 2
    assert [h["epoch"] for h in run.history] == [1.0, 2.0]
    split = study["result"].study.user_attrs["split"]
    assert run.rows_seen == 2 * (split["n_train"] + split["n_val"])  # the study's rows: never its test rows
    assert run.dropped_test_rows == 0 and run.model_uri is not None
    assert refit_runs() == before + 1


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "workers must be an integer >= 1"),
    (["--trial", "99"], "has no trial 99"),
    (["--gpus-per-worker", "1"], "needs 1 GPU(s); the Ray cluster has 0"),
    (["--trial", "OTHER", "--resume"], "nothing to resume for trial OTHER"),
])
def test_refit_bad_input_exits_2_with_one_line(study, tmp_path, capsys, extra, message):
    from sparsearch.cli import main

    # OTHER: a complete trial that no test refits (the others refit the best one)
    other = next(t.number for t in study["result"].trials
                 if t.state.name == "COMPLETE" and t.number != study["result"].best_trial.number)
    extra = [str(other) if a == "OTHER" else a for a in extra]
    message = message.replace("OTHER", str(other))
    toml = _study_file(study, tmp_path)
    code = main(["refit", str(toml), "--results", str(study["results"]), "--quiet", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_refit_data_with_missing_columns_names_them(study, tmp_path, capsys):
    from sparsearch.cli import main

    bad = tmp_path / "bad.parquet"
    study["frame"].drop("city", "label").write_parquet(bad)
    code = main(["refit", str(_study_file(study, tmp_path)), "--results", str(study["results"]), "--quiet",
                 "--data", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "lacks column(s)" in err and "city" in err and "label" in err


def test_refit_unknown_study_exits_2(study, tmp_path, capsys):
    from sparsearch.cli import main

    toml = _study_file(study, tmp_path, name="never-ran")
    code = main(["refit", str(toml), "--results", str(study["results"]), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "never-ran" in err and len(err.splitlines()) == 1


def _study_file(study, tmp_path, name: str = NAME):
    """The study as a TOML file over a parquet copy of its frame (what a CLI user runs refit with)."""
    data = tmp_path / "study.parquet"
    study["frame"].write_parquet(data)
    toml = tmp_path / "study.toml"
    toml.write_text(f"""
[study]
name = "{name}"
n_trials = 2
sampler = "random"
seed = 2
[data]
path = "{data}"
target = "label"
top_k = 3
[space]
depth = 1
width = 16
target_sparsity = 0.8
methods = ["gmp"]
[train]
epochs = 2
batch_size = 256
""")
    return toml


def test_numeric_fit_sample_is_bounded_and_independent_of_batch_order():
    """The sample the numeric encoding is fitted on: the rows of smallest hash, at most ``size`` of them, the same
    whichever order and grouping the batches arrive in (so a refit rebuilds the same bins on resume)."""
    from sparsearch.search.refit import _Sample

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 5000, dtype=np.uint64)
    rows = rng.normal(size=(5000, 3))

    def sample(order: np.ndarray, chunk: int) -> np.ndarray:
        s = _Sample(300)
        for i in range(0, order.size, chunk):
            part = order[i:i + chunk]
            s.add(hashes[part], rows[part])
        return s.result(2)

    a = sample(np.arange(5000), 250)
    b = sample(rng.permutation(5000), 97)
    smallest = np.argsort(hashes)[:300]
    assert a.shape == (300, 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, rows[smallest, :2])
    assert _Sample(10).result(2).shape == (0, 2)


def test_scan_merges_batch_statistics_into_the_whole_tables():
    """The streaming pass's merge (Chan et al.): the mean, spread and class counts of all rows, whatever the
    batches; a batch without labelled rows adds only its dropped test rows."""
    from sparsearch.search.refit import _scan

    rng = np.random.default_rng(1)
    parts = [rng.normal(loc=i, size=(n, 2)) for i, n in enumerate((7, 1, 30))]
    labels = [rng.integers(0, 3, len(p)) for p in parts]

    def stats(num: np.ndarray, y: np.ndarray, dropped: int) -> dict[str, np.ndarray]:
        mean = num.mean(axis=0) if len(num) else np.zeros(2)
        return {"kind": np.array([0], np.int8), "n": np.array([len(num)]), "dropped": np.array([dropped]),
                "mean": mean[None, :], "m2": ((num - mean) ** 2).sum(axis=0)[None, :],
                "counts": np.bincount(y, minlength=3)[None, :], "sample": np.zeros((1, 2)),
                "hash": np.zeros(1, np.uint64)}

    batches = [stats(p, y, d) for p, y, d in zip(parts, labels, (1, 0, 2))]
    batches.insert(1, stats(np.zeros((0, 2)), np.zeros(0, np.int64), 4))

    class Stream:  # what _scan reads of a Ray Dataset
        def __init__(self, items: list[dict[str, np.ndarray]]) -> None:
            self.items = items

        def iter_batches(self, **kwargs):
            return iter(self.items)

    scan = _scan(Stream(batches), 2)
    everything = np.vstack(parts)
    assert scan.n_rows == 38 and scan.dropped == 7
    assert scan.class_counts == np.bincount(np.concatenate(labels), minlength=3).tolist()
    np.testing.assert_allclose(scan.mean, everything.mean(axis=0))
    np.testing.assert_allclose(scan.std, everything.std(axis=0))
    empty = _scan(Stream([]), 2)
    assert empty.n_rows == 0 and empty.sample.shape == (0, 2)


def test_refit_run_json_has_every_field_but_the_model():
    """``RefitRunJSON`` (the typed run document) names exactly the fields ``RefitRun.to_json`` writes."""
    import dataclasses

    from sparsearch.search.refit import RefitResult, RefitRun, RefitRunJSON

    fields = [f.name for f in dataclasses.fields(RefitRun) if f.name != "model"]
    assert sorted(RefitRunJSON.__annotations__) == sorted(fields)
    run = RefitRun(trial=3, trial_values=[0.9], model_uri=None, mlflow_run_id=None, rows_seen=10,
                   rows_per_epoch=5, rows_per_s=np.float64(2.5), train_seconds=4.0, epochs=2, workers=1,
                   test_metrics=None, trial_test_metrics={"test_auc": 0.8}, dropped_test_rows=0,
                   masks_identical=True, mask_digests=["ab"], worker_peak_rss_mb=[1.0], history=[],
                   checkpoint_path="c", model=object())
    doc = run.to_json()
    assert sorted(doc) == sorted(fields) and doc["rows_per_s"] == 2.5 and type(doc["rows_per_s"]) is float
    assert RefitResult("s", "study", [run]).to_json()["runs"] == [doc]
