"""The controller end to end on a real local Ray: states, resume, faults, budgets, MLflow child runs."""

from __future__ import annotations

import time

import optuna
import pytest
from _faults import assert_one_child_run_per_trial, assert_stored_once
from optuna.trial import TrialState

from sparsearch.errors import ConnectionProblem, SpecError
from sparsearch.search.controller import run_study
from sparsearch.search.records import HEARTBEAT_ATTR
from sparsearch.search.spec import load_study
from sparsearch.search.storage import open_storage

pytestmark = pytest.mark.usefixtures("ray_session")


def tiny(name: str, objective: str | None = None, **study) -> dict:
    raw = {
        "study": {"name": name, "n_trials": 3, "seed": 0, **study},
        "data": {"generator": "click_log", "params": {"n_rows": 3000, "n_noise": 6, "max_cardinality": 500},
                 "top_k": 6},
        "space": {"depth": [1, 2], "width": [8, 32]},
        "train": {"epochs": 1, "batch_size": 256},
        "execution": {"workers": 2, "heartbeat_interval": 0.5},
    }
    if objective:
        raw["study"]["objective"] = f"sparsearch_test_objectives:{objective}"
    return raw


def run(raw: dict, tmp_path, **overrides):
    return run_study(load_study(raw, **overrides), results_dir=tmp_path, progress=False)


def assert_no_loss_or_duplicate(tmp_path, result) -> None:
    """What the fault table of BENCHMARKS.md claims: each trial stored once, one MLflow child run per trial."""
    assert_stored_once(result.trials)
    assert_one_child_run_per_trial(f"sqlite:///{tmp_path / 'mlflow.db'}", result.study_name, result.trials)


def mlflow_runs(tmp_path, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_tiny_quickstart_trains_sparse_models_and_logs_everything(tmp_path):
    result = run(tiny("qs"), tmp_path)
    trials = result.trials
    assert len(trials) == 3
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert done
    for t in done:
        assert 0.0 <= t.values[0] <= 1.0
        attrs = t.user_attrs
        assert abs(attrs["realized_sparsity"] - attrs["target_sparsity"]) < 0.02
        assert any(p.startswith("arch.") for p in t.params)
    doc = result.to_json()
    assert doc["n_complete"] == len(done) and doc["best_values"] == [result.study.best_value]
    client, runs = mlflow_runs(tmp_path, "qs")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == result.mlflow_parent_run_id]
    assert len(parents) == 1 and parents[0].info.run_id == result.mlflow_parent_run_id
    assert len(children) == 3
    assert result.info["mlflow_logging"] == "process" and result.info["mlflow_failures"] == 0
    # budget-aware start-up: a fifth of 3 trials, at least 2 (search/startup.py): TPE guided the third trial
    assert result.info["startup"]["n_startup_trials"] == 2 and result.info["startup"]["source"] == "n_trials"
    assert result.info["notes"] == []
    history = client.get_metric_history(children[0].info.run_id, "val_auc")
    assert [m.step for m in history] == [1]
    assert "realized_sparsity" in children[0].data.metrics
    assert any(k.startswith("layer_sparsity.hidden") for k in children[0].data.metrics)
    assert {"flops_sparse", "latency_ms", "nnz_params"} <= set(children[0].data.metrics)
    assert children[0].data.tags["sampler"] == "tpe" and children[0].data.tags["seed"] == "0"
    assert children[0].data.tags["data_fingerprint"] == result.info["data_fingerprint"]
    models = client.search_logged_models([parents[0].info.experiment_id])
    assert [m.source_run_id for m in models] == [result.mlflow_parent_run_id]  # the best model (pyfunc)
    artifacts = {a.path for a in client.list_artifacts(result.mlflow_parent_run_id)}
    assert {"trials.csv", "optimization_history.html", "feature_ranking.csv"} <= artifacts


def test_study_warnings_reach_the_caller_and_the_result(tmp_path):
    # gmp against dense trials, compared by the median pruner inside gmp's window (reports 2-3 of 4): warned before
    # the first trial; 2 TPE trials never leave the start-up phase: warned at the end. Both point at this file.
    raw = tiny("notes", pruner="median", n_trials=2)
    raw["space"]["methods"] = ["gmp", "dense"]
    raw["train"]["reports_per_epoch"] = 4
    with pytest.warns(UserWarning) as caught:
        result = run(raw, tmp_path)
    notes = result.info["notes"]
    assert len(notes) == 2 and "inside GMP's pruning window" in notes[0] and "ran as random search" in notes[1]
    ours = [w for w in caught if str(w.message) in notes]
    assert [str(w.message) for w in ours] == notes and {w.filename for w in ours} == {__file__}


def test_a_callers_stricter_optuna_log_level_is_kept(tmp_path):
    # the CLI sets Optuna's logger to ERROR unless --verbose; the controller quiets INFO but must not lower that
    # back to WARNING (CI saw Optuna's multi-line storage warning beside the CLI's one-line storage error)
    before = optuna.logging.get_verbosity()
    try:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        run(tiny("loglevel", n_trials=1), tmp_path)
        assert optuna.logging.get_verbosity() == optuna.logging.ERROR
        optuna.logging.set_verbosity(optuna.logging.INFO)
        run(tiny("loglevel", n_trials=2), tmp_path)
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    finally:
        optuna.logging.set_verbosity(before)


def test_startup_note_flags_a_model_based_sampler_that_never_left_its_random_start():
    from sparsearch.search.spec import startup_note

    def study(sampler, n):
        s = optuna.create_study(sampler=sampler)
        s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
        return s

    note = startup_note(study(optuna.samplers.TPESampler(seed=0), 10))
    assert note is not None and "first 10 trials at random" in note and "has 10" in note
    assert startup_note(study(optuna.samplers.TPESampler(seed=0), 11)) is None
    assert startup_note(study(optuna.samplers.TPESampler(seed=0, n_startup_trials=3), 4)) is None
    assert startup_note(study(optuna.samplers.RandomSampler(seed=0), 2)) is None


def test_resume_continues_numbering_without_duplicates(tmp_path):
    raw = tiny("resume", objective="quadratic")
    first = run(raw, tmp_path)
    assert len(first.trials) == 3
    second = run(raw, tmp_path, n_trials=2)
    assert second.info["ranking_cached"] and not first.info["ranking_cached"]  # prefilter computed once
    numbers = [t.number for t in second.trials]
    assert len(second.trials) == 5
    assert sorted(numbers) == list(range(5))
    assert second.n_trials_run == 2
    _, runs = mlflow_runs(tmp_path, "resume")
    assert sum("mlflow.parentRunId" not in r.data.tags for r in runs) == 2
    assert sum("mlflow.parentRunId" in r.data.tags for r in runs) == 5


def test_worker_suggestions_and_trial_pruning_reach_the_study(tmp_path):
    raw = tiny("prune", objective="quadratic", n_trials=10, pruner="median",
               pruner_params={"n_startup_trials": 2, "n_warmup_steps": 0})
    result = run(raw, tmp_path)
    states = [t.state for t in result.trials]
    assert TrialState.PRUNED in states and TrialState.COMPLETE in states
    for t in result.trials:
        assert "extra.x" in t.params  # suggested inside the Ray worker
        assert t.intermediate_values  # reported while the trial ran
        if t.state == TrialState.PRUNED:  # stopped at a report; Optuna keeps the last reported value
            # at any of the 3 reports, the last included: trials run asynchronously, so the completed trials the
            # pruner needs (n_startup_trials = 2) can arrive just before a trial's last report (seen in CI)
            assert 1 <= len(t.intermediate_values) <= 3
            assert t.values == [t.intermediate_values[max(t.intermediate_values)]]
    best = result.best_trial
    assert best.values[0] == pytest.approx(1 - (best.params["extra.x"] - 1) ** 2)


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["process", "thread"])
def test_exception_fails_only_that_trial_and_is_recorded(tmp_path, writer):
    raw = tiny("errors", objective="bad_even", n_trials=4)
    raw["tracking"] = {"writer": writer}
    result = run(raw, tmp_path)
    assert result.info["mlflow_logging"] == writer
    by_number = {t.number: t for t in result.trials}
    for n, t in by_number.items():
        if n % 2 == 0:
            assert t.state == TrialState.FAIL
            assert "boom in trial" in t.user_attrs["fail_reason"]
        else:
            assert t.state == TrialState.COMPLETE
    _, runs = mlflow_runs(tmp_path, "errors")
    failed = [r for r in runs if r.data.tags.get("state") == "FAIL"]
    assert len(failed) == 2 and all(r.info.status == "FAILED" for r in failed)
    assert all("boom" in r.data.tags["error"] for r in failed)
    assert_no_loss_or_duplicate(tmp_path, result)


@pytest.mark.slow
def test_killed_worker_is_failed_then_retried(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(study_name="crash", storage=storage, direction="maximize")
    study.set_user_attr("objectives", ["val_auc"])
    study.set_user_attr("marker", str(tmp_path / "marker"))
    raw = tiny("crash", objective="crash_once", n_trials=1)
    raw["execution"]["max_retries"] = 1
    result = run(raw, tmp_path)
    states = sorted((t.number, t.state) for t in result.trials)
    assert states == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    assert "worker died" in result.trials[0].user_attrs["fail_reason"]
    assert result.trials[1].user_attrs["retry_of"] == 0
    assert not [t for t in result.trials if t.state == TrialState.RUNNING]
    assert_no_loss_or_duplicate(tmp_path, result)


@pytest.mark.slow
def test_trial_time_budget_fails_the_trial_not_the_study(tmp_path):
    raw = tiny("timeout", objective="sleepy", n_trials=1)
    raw["execution"]["trial_timeout"] = 2
    start = time.monotonic()
    result = run(raw, tmp_path)
    assert time.monotonic() - start < 60
    (trial,) = result.trials
    assert trial.state == TrialState.FAIL
    assert "time budget exceeded" in trial.user_attrs["fail_reason"]
    assert_no_loss_or_duplicate(tmp_path, result)


@pytest.mark.slow
def test_trial_memory_budget_fails_the_trial(tmp_path):
    raw = tiny("memory", objective="hungry", n_trials=1)
    raw["execution"]["trial_memory_mb"] = 900
    result = run(raw, tmp_path)
    (trial,) = result.trials
    assert trial.state == TrialState.FAIL
    assert "memory budget exceeded" in trial.user_attrs["fail_reason"]
    assert_no_loss_or_duplicate(tmp_path, result)


@pytest.mark.slow
def test_stale_running_trial_of_a_dead_driver_is_failed_and_requeued(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(study_name="stale", storage=storage, direction="maximize")
    study.set_user_attr("objectives", ["val_auc"])
    orphan = study.ask()
    orphan.suggest_float("extra.x", -3, 3)
    storage.set_trial_system_attr(orphan._trial_id, HEARTBEAT_ATTR, time.time() - 3600)
    raw = tiny("stale", objective="quadratic", n_trials=1)
    result = run(raw, tmp_path)
    states = {t.number: t for t in result.trials}
    assert states[0].state == TrialState.FAIL and "stale" in states[0].user_attrs["fail_reason"]
    retry = [t for t in result.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
    assert retry[0].params["extra.x"] == states[0].params["extra.x"]
    assert_no_loss_or_duplicate(tmp_path, result)


@pytest.mark.slow
def test_a_dead_drivers_unrecorded_child_run_is_finished_not_duplicated(tmp_path):
    """A driver killed after its MLflow writer created a trial's child run, before the run was recorded in the
    study: the next execution finishes that run instead of writing a second one for the same trial number."""
    from mlflow.tracking import MlflowClient

    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(study_name="unrecorded", storage=storage, direction="maximize")
    study.set_user_attr("objectives", ["val_auc"])
    orphan = study.ask()
    orphan.suggest_float("extra.x", -3, 3)
    storage.set_trial_system_attr(orphan._trial_id, HEARTBEAT_ATTR, time.time() - 3600)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("unrecorded", artifact_location=(tmp_path / "artifacts").as_uri())
    dead_parent = client.create_run(exp, run_name="dead-driver").info.run_id
    left = client.create_run(exp, run_name="trial-0", tags={"mlflow.parentRunId": dead_parent, "study": "unrecorded",
                                                             "trial_number": "0"}).info.run_id
    result = run(tiny("unrecorded", objective="quadratic", n_trials=1), tmp_path)
    assert result.trials[0].state == TrialState.FAIL and "stale" in result.trials[0].user_attrs["fail_reason"]
    assert_no_loss_or_duplicate(tmp_path, result)
    finished = client.get_run(left)
    assert finished.info.status == "FAILED" and finished.data.tags["state"] == "FAIL"


@pytest.mark.slow
def test_multi_objective_study_returns_a_pareto_front(tmp_path):
    raw = tiny("mo", n_trials=4, sampler="nsga2", objectives=["val_auc", "nnz_params"])
    result = run(raw, tmp_path)
    assert result.directions == ["maximize", "minimize"]
    assert result.to_json()["pareto_front"]
    assert all(len(t.values) == 2 for t in result.best_trials)


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path):
    raw = tiny("notrack", objective="quadratic")
    raw["tracking"] = {"uri": "http://127.0.0.1:9"}
    with pytest.raises(ConnectionProblem, match="cannot reach MLflow"):
        run(raw, tmp_path)
    assert not (tmp_path / "optuna.journal").exists() or "notrack" not in (tmp_path / "optuna.journal").read_text()


def test_existing_study_with_other_directions_is_refused(tmp_path):
    run(tiny("dirs", objective="quadratic", n_trials=1), tmp_path)
    raw = tiny("dirs", objective="quadratic", n_trials=1, directions=["minimize"])
    with pytest.raises(SpecError, match="already exists"):
        run(raw, tmp_path)


def test_searched_top_k_keeps_that_many_ranked_features(tmp_path):
    raw = tiny("topk", n_trials=2)
    raw["data"]["top_k"] = [2, 5]
    result = run(raw, tmp_path)
    assert len(result.info["features"]) == 5  # encoded once for the largest k
    for t in result.trials:
        assert 2 <= t.params["data.top_k"] <= 5


def test_driver_keeps_only_refs_to_the_training_and_validation_rows(tmp_path, monkeypatch):
    """The rows live once, in the object store: the driver drops its own copy before the search (at 2M x 316
    click-log columns that copy is 4 GB of the driver's memory)."""
    import gc
    import weakref

    import ray

    from sparsearch.search import controller, data

    made: list = []
    prepare = data.prepare_data

    def watched(*args, **kwargs):
        prepared = prepare(*args, **kwargs)
        made.append((weakref.ref(prepared.train.categorical), prepared.split))
        return prepared

    seen: dict = {}
    drive = controller._drive

    def spy(ex, prepared, data_refs, actor, start, **kwargs):
        gc.collect()
        seen.update(train=prepared.train, val=prepared.val, alive=made[0][0]() is not None,
                    n=[ray.get(r).n_rows for r in data_refs])
        return drive(ex, prepared, data_refs, actor, start, **kwargs)

    monkeypatch.setattr(controller, "prepare_data", watched)
    monkeypatch.setattr(controller, "_drive", spy)
    result = run(tiny("slim", objective="quadratic", n_trials=2), tmp_path)
    split = made[0][1]
    assert seen["train"] is None and seen["val"] is None and not seen["alive"]
    assert seen["n"] == [split["n_train"], split["n_val"]]
    assert len(result.trials) == 2


def test_ray_already_running_in_process_with_another_address_is_refused(tmp_path):
    import ray

    current = ray.get_runtime_context().gcs_address
    port = int(current.rpartition(":")[2])
    raw = tiny("other-ray", objective="quadratic", n_trials=1)
    raw["execution"]["ray_address"] = f"127.0.0.1:{port + 1}"
    with pytest.raises(SpecError, match="already initialised in this process"):
        run(raw, tmp_path)
    raw["execution"]["ray_address"] = f"localhost:{port}"  # the same cluster, spelled otherwise: used
    assert len(run(raw, tmp_path).trials) == 1
