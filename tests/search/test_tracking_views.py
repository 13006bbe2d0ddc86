"""What MLflow and Optuna's tools show after a study: experiment kind, progress chart, trials table, trial links.

The browser tests (tests/browser) check that these render; these tests check the records themselves.
"""

from __future__ import annotations

import datetime

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from sparsearch.search.controller import run_study
from sparsearch.search.spec import load_study
from sparsearch.search.tracking import (
    EXPERIMENT_KIND,
    EXPERIMENT_KIND_TAG,
    best_so_far_points,
    experiment_ui_url,
)

pytestmark = pytest.mark.usefixtures("ray_session")


def tiny(name: str, **study) -> dict:
    return {
        "study": {"name": name, "n_trials": 5, "seed": 0, "objective": "sparsearch_test_objectives:quadratic",
                  **study},
        "data": {"generator": "click_log", "params": {"n_rows": 2000, "n_noise": 4, "max_cardinality": 200}},
        "train": {"epochs": 1},
        "execution": {"workers": 2, "heartbeat_interval": 0.5},
    }


def client_and_runs(tmp_path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, exp, client.search_runs([exp.experiment_id], max_results=1000)


def test_parent_run_shows_progress_table_and_best_trials_and_children_link_to_optuna(tmp_path, monkeypatch):
    result = run_study(load_study(tiny("views")), results_dir=tmp_path, progress=False)
    client, exp, runs = client_and_runs(tmp_path, "views")
    assert exp.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    parent_id = result.mlflow_parent_run_id
    parent = client.get_run(parent_id)
    trials = sorted(result.trials, key=lambda t: t.number)

    # best so far, step = trial number, one point per finished trial; and each trial's value
    history = sorted(client.get_metric_history(parent_id, "best_so_far_val_auc"), key=lambda m: m.step)
    assert [m.timestamp for m in history] == sorted(m.timestamp for m in history)  # never back in time
    assert [m.step for m in history] == [t.number for t in trials if t.state.is_finished()]
    running, expected = None, []
    for t in trials:
        if t.state == TrialState.COMPLETE:
            running = t.value if running is None else max(running, t.value)
        expected.append(running)
    assert [m.value for m in history] == pytest.approx(expected)
    values = {m.step: m.value for m in client.get_metric_history(parent_id, "trial_val_auc")}
    assert values == pytest.approx({t.number: t.value for t in trials if t.state == TrialState.COMPLETE})
    assert parent.data.metrics["best_val_auc"] == pytest.approx(result.study.best_value)  # kept as before

    # the trials as an MLflow table (columns readable by the UI), and still as CSV
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"trials.csv", "trials_table.json", "optimization_history.html"} <= artifacts
    assert '"path": "trials_table.json", "type": "table"' in parent.data.tags["mlflow.loggedArtifacts"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # load_table reads it
    table = client.load_table(exp.experiment_id, "trials_table.json", run_ids=[parent_id])
    assert sorted(table["number"]) == [t.number for t in trials]
    assert "params_extra/x" in table.columns and "value_val_auc" in table.columns
    assert not any(c.startswith("system_attrs_") for c in table.columns)
    csv = client.download_artifacts(parent_id, "trials.csv", str(tmp_path))
    assert open(csv).readline().startswith("number,value_val_auc,")

    # the best trial is listed on the parent and tagged on its child run
    best = result.study.best_trial
    assert parent.data.tags["best_trials"] == str(best.number)
    children = {int(r.data.tags["optuna.trial.number"]): r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent_id}
    assert sorted(children) == [t.number for t in trials]
    assert parent.data.tags["best_trial_runs"] == f"{best.number}: {children[best.number].info.run_id}"
    assert [n for n, r in children.items() if r.data.tags.get("best_trial") == "true"] == [best.number]
    for t in trials:
        tags = children[t.number].data.tags
        assert tags["optuna.study_name"] == "views" and tags["optuna.trial.state"] == t.state.name
        assert tags["trial_number"] == str(t.number) and tags["state"] == t.state.name  # kept as before
    assert parent.data.tags["optuna.study_name"] == "views"
    # Optuna's tools (optuna-dashboard, plots) name the objective; trials_dataframe names the column after it
    assert result.study.metric_names == ["val_auc"]
    assert "value_val_auc" in result.trials_dataframe().columns


@pytest.mark.slow
def test_a_study_made_before_metric_names_gets_them_when_resumed(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "old.j")))
    optuna.create_study(study_name="old", storage=storage, direction="maximize")
    resumed = run_study(load_study(tiny("old", n_trials=1)), results_dir=tmp_path, progress=False,
                        storage=f"journal:{tmp_path / 'old.j'}")
    assert resumed.study.metric_names == ["val_auc"]


@pytest.mark.slow
def test_multi_objective_progress_has_one_best_per_objective(tmp_path):
    result = run_study(load_study(tiny("mo-views", n_trials=4, objectives=["val_auc", "nnz_params"])),
                       results_dir=tmp_path, progress=False)
    assert result.study.metric_names == ["val_auc", "nnz_params"]
    client, _, _ = client_and_runs(tmp_path, "mo-views")
    parent_id = result.mlflow_parent_run_id
    done = [t for t in result.trials if t.state == TrialState.COMPLETE]
    assert client.get_metric_history(parent_id, "best_so_far_val_auc")[-1].value == max(t.values[0] for t in done)
    assert client.get_metric_history(parent_id, "best_so_far_nnz_params")[-1].value == min(t.values[1] for t in done)
    front = sorted(t.number for t in result.best_trials)
    assert sorted(int(n) for n in client.get_run(parent_id).data.tags["best_trials"].split(", ")) == front


@pytest.mark.slow
def test_a_kind_chosen_for_an_existing_experiment_is_kept(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_experiment("mine", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    plain = client.create_experiment("plain")
    run_study(load_study(tiny("mine", n_trials=1)), results_dir=tmp_path, progress=False)
    run_study(load_study(tiny("plain", n_trials=1)), results_dir=tmp_path, progress=False)
    assert client.get_experiment_by_name("mine").tags[EXPERIMENT_KIND_TAG] == "genai_development"
    assert client.get_experiment(plain).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND


def _trial(number: int, state: TrialState, values=None, minute: int = 0):
    t = create_trial(state=state, values=values) if state == TrialState.COMPLETE else create_trial(state=state)
    t.number = number
    t.datetime_complete = datetime.datetime(2026, 1, 1, 0, minute)
    return t


def test_best_so_far_points_follow_trial_numbers_and_skip_until_a_trial_completes():
    trials = [_trial(3, TrialState.COMPLETE, [0.2, 9.0], 3), _trial(0, TrialState.FAIL), _trial(1, TrialState.PRUNED),
              _trial(2, TrialState.COMPLETE, [0.5, 10.0], 2), _trial(4, TrialState.RUNNING),
              _trial(5, TrialState.COMPLETE, [0.1, 8.0], 5)]
    points = best_so_far_points(trials, ["maximize", "minimize"])
    assert [(n, b) for n, _, b in points] == [(2, [0.5, 10.0]), (3, [0.5, 9.0]), (5, [0.5, 8.0])]
    assert points[0][1] == int(datetime.datetime(2026, 1, 1, 0, 2).timestamp() * 1000)


def test_experiment_links_open_the_model_training_view():
    assert experiment_ui_url("http://127.0.0.1:5000/", "7") == \
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert experiment_ui_url("http://h:1", "7", "abc") == "http://h:1/#/experiments/7/runs/abc?workflowType=machine_learning"
    assert experiment_ui_url("http://h:1") == "http://h:1/#/experiments?workflowType=machine_learning"
