"""Launching from Python: a study built from typed sections, data given as an in-memory frame, an objective given
as a function. (The same on a two-node Ray cluster: test_python_cluster.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from sparsearch.errors import SpecError
from sparsearch.search.spec import (
    DataSpec,
    ExecutionSpec,
    StudySection,
    StudySpec,
    TrackingSpec,
    load_study,
)

TOML = """
[study]
name = "py"
n_trials = 3
sampler = "random"
[data]
generator = "click_log"
params = { n_rows = 2000 }
top_k = 5
[train]
epochs = 1
"""


def test_a_study_built_from_typed_sections_equals_the_same_study_file(tmp_path):
    path = tmp_path / "py.toml"
    path.write_text(TOML)
    built = StudySpec(study=StudySection(name="py", n_trials=3, sampler="random"),
                      data=DataSpec(generator="click_log", params={"n_rows": 2000}, top_k=5), train={"epochs": 1})
    assert built.to_toml_dict() == load_study(path).to_toml_dict()
    # sections may be typed or dicts; the name defaults as for a dict study
    assert StudySpec(data={"generator": "click_log"}).study.name == "study"


@pytest.mark.parametrize(("section", "bad", "file_line"), [
    ("study", {"n_trials": 0}, "[study]\nn_trials = 0"),
    ("study", {"n_trial": 3}, "[study]\nn_trial = 3"),
    ("data", {"generator": "nope"}, "[data]\ngenerator = \"nope\""),
])
def test_python_sections_fail_with_the_errors_of_a_study_file(tmp_path, section, bad, file_line):
    path = tmp_path / "bad.toml"
    path.write_text(file_line + ("\n[data]\ngenerator = \"click_log\"" if section != "data" else ""))
    with pytest.raises(SpecError) as from_file:
        load_study(path)
    expected = str(from_file.value).removeprefix("study file 'bad.toml': ")
    model = {"study": StudySection, "data": DataSpec}[section]
    with pytest.raises(SpecError) as from_python:
        model(**bad)
    assert str(from_python.value) == f"study: {expected}"
    with pytest.raises(SpecError) as whole:  # as a dict section of a whole study: same error again
        StudySpec(**{section: bad, **({"data": {"generator": "click_log"}} if section != "data" else {})})
    assert str(whole.value) == f"study: {expected}"


def test_cross_section_rules_apply_to_python_studies():
    with pytest.raises(SpecError, match=r"image set; set \[space\] model"):
        StudySpec(data=DataSpec(generator="digits"))
    with pytest.raises(SpecError, match="missing section \\[data\\]"):
        StudySpec(study=StudySection(name="x"))
    with pytest.raises(SpecError, match="exactly one of 'generator' and 'path'"):
        DataSpec(path="x.parquet", frame=pl.DataFrame({"a": [1]}))
    with pytest.raises(SpecError, match="frame: must be a polars DataFrame or LazyFrame, or a pandas DataFrame"):
        DataSpec(frame=[[1, 2]])
    with pytest.raises(SpecError, match="must look like 'module:function'"):
        StudySection(objective="no_colon")


def test_frames_and_functions_are_recorded_by_description_and_name():
    frame = pd.DataFrame({"a": [1, 2, 3], "click": [0, 1, 0]})
    spec = load_study("quickstart", data=frame, objective=_objective)
    assert spec.data.frame is frame and spec.study.objective is _objective  # not copied
    assert spec.data.generator is None and spec.data.params == {}
    doc = spec.to_toml_dict()
    assert doc["data"]["frame"] == "pandas DataFrame, 3 rows x 2 columns"
    assert doc["study"]["objective"] == f"{__name__}:_objective"
    lazy = load_study("quickstart", data=pl.LazyFrame({"a": [1], "click": [1]}))
    assert lazy.to_toml_dict()["data"]["frame"] == "polars LazyFrame, 2 columns"
    # a path override replaces a frame (and the reverse)
    assert load_study("quickstart", data=frame, **{"data.max_rows": 10}).data.frame is frame
    again = StudySpec(data=DataSpec(frame=frame), study=StudySection(objective=_objective))
    assert again.study.objective is _objective
    from sparsearch.search.spec import apply_overrides, parse_study

    moved = parse_study(apply_overrides(again.to_raw(), {"data": "elsewhere.parquet"}))
    assert moved.data.frame is None and moved.data.path == "elsewhere.parquet"


def _objective(trial, config, train, val, report):
    x = trial.suggest_float("x", -1.0, 1.0)
    return {"val_auc": 1.0 - x * x, "train_rows": float(train.n_rows), "val_rows": float(val.n_rows),
            "n_features": float(len({*train.categorical_names,
                                     *(n.removesuffix("_missing") for n in train.numeric_names)}))}


def _spying_execute_trial(payload, storage_actor, data_refs):
    """What the Ray task gets per trial: the payload's pickled size and the kind of the data arguments."""
    import cloudpickle
    import ray

    from sparsearch.search.worker import execute_trial

    report = execute_trial(payload, storage_actor, data_refs)
    report.metrics["payload_bytes"] = float(len(cloudpickle.dumps(payload)))
    report.metrics["data_refs_are_refs"] = float(all(isinstance(r, ray.ObjectRef) for r in data_refs))
    return report


@pytest.mark.usefixtures("ray_session")
def test_run_study_on_a_frame_with_a_function_objective(tmp_path, monkeypatch):
    from sparsearch.features import data_fingerprint, make_click_log
    from sparsearch.search import controller

    df = make_click_log(3000, n_noise=4, seed=3)
    big_column = pl.Series("payload", np.arange(df.height, dtype=np.float64))  # a 24 kB column never shipped
    frame = df.with_columns(big_column)
    monkeypatch.setattr(controller, "execute_trial", _spying_execute_trial)
    spec = StudySpec(study=StudySection(name="frame", n_trials=3, sampler="random", objective=_objective),
                     data=DataSpec(frame=frame.lazy(), exclude=["payload"]), train={"epochs": 1},
                     execution=ExecutionSpec(workers=2), tracking=TrackingSpec(enabled=False))
    result = controller.run_study(spec, results_dir=tmp_path / "res", progress=False)
    assert [t.state.name for t in result.trials] == ["COMPLETE"] * 3
    assert result.info["data_fingerprint"] == data_fingerprint(frame)  # as for a file holding these rows
    path = tmp_path / "frame.parquet"
    frame.write_parquet(path)
    assert data_fingerprint(pl.read_parquet(path)) == result.info["data_fingerprint"]
    for t in result.trials:
        metrics = t.user_attrs["metrics"]
        split = result.info["split"]  # the held-out test rows never reach a trial
        assert (metrics["train_rows"], metrics["val_rows"]) == (split["n_train"], split["n_val"])
        assert split["n_train"] + split["n_val"] + split["n_test"] == df.height
        assert metrics["data_refs_are_refs"] == 1.0
        # the rows travel once, through the object store: a trial's own arguments stay small
        assert metrics["payload_bytes"] < 20_000, metrics["payload_bytes"]


@pytest.mark.usefixtures("ray_session")
def test_run_study_keyword_data_and_objective(tmp_path):
    from sparsearch.features import make_click_log
    from sparsearch.search.controller import run_study

    df = make_click_log(2000, n_noise=2, seed=4).to_pandas()
    result = run_study("quickstart", data=df, objective=_objective, n_trials=2, results_dir=tmp_path / "res",
                       progress=False, **{"tracking.enabled": False, "data.top_k": 4})
    assert [t.state.name for t in result.trials] == ["COMPLETE"] * 2
    assert all(t.user_attrs["metrics"]["n_features"] == 4 for t in result.trials)
    assert result.info["n_rows"] == 2000


@pytest.mark.usefixtures("ray_session")
def test_run_study_with_data_and_no_study_runs_the_bundled_table_study_and_says_so(tmp_path):
    from sparsearch.features import make_click_log
    from sparsearch.search.controller import OWN_TABLE_STUDY, run_study

    df = make_click_log(3000, n_noise=2, seed=5).rename({"click": "clicked"})
    said: list[str] = []
    result = run_study(data=df, target="clicked", n_trials=2, results_dir=tmp_path / "res", progress=said.append,
                       **{"tracking.enabled": False, "train.epochs": 1, "study.warm_start": "none"})
    assert result.study.study_name == OWN_TABLE_STUDY == "table"
    assert any("running the bundled study 'table'" in line for line in said), said
    assert [t.state.name for t in result.trials] == ["COMPLETE"] * 2
    assert result.test_metrics()  # scored once on the held-out rows of the user's table


@pytest.mark.parametrize(("kwargs", "missing"), [({}, "--data (data=) and --target (target=)"),
                                                  ({"data": "x.parquet"}, "--target (target=)")])
def test_run_study_with_no_study_needs_data_and_target(tmp_path, kwargs, missing):
    from sparsearch.search.controller import run_study

    with pytest.raises(SpecError, match=r"^no study given: .*missing " + missing.replace("(", r"\(").replace(")", r"\)")):
        run_study(results_dir=tmp_path, progress=False, **kwargs)
