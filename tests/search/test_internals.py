"""The private Optuna and MLflow internals sparsearch relies on (all wrapped in ``search/_internals.py``).

Each test fails when a library release changes what the wrapper relies on, so an upgrade breaks here, by name.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sparsearch.search import _internals as internals


@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize"])


def test_study_storage_and_ids_address_the_storage(study):
    storage = internals.study_storage(study)
    assert isinstance(storage, optuna.storages.BaseStorage)
    sid = internals.study_id(study)
    storage.set_study_system_attr(sid, "k", 1)
    assert storage.get_study_system_attrs(sid)["k"] == 1
    trial = study.ask()
    tid = internals.trial_id(trial)
    assert storage.get_trial(tid).number == trial.number
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert internals.trial_id(frozen) == tid


def test_trial_handle_reports_and_prunes_an_existing_trial(study):
    study.pruner = optuna.pruners.ThresholdPruner(lower=0.5)
    asked = study.ask()
    handle = internals.trial_handle(study, internals.trial_id(asked))
    assert handle.number == asked.number
    handle.report(0.1, step=0)
    assert handle.should_prune()
    assert study.trials[0].intermediate_values == {0: 0.1}


def test_journal_parts_batch_appends_and_replay(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    parts = internals.journal_parts(storage)
    assert parts is not None, "JournalStorage no longer has _thread_lock/_backend/_sync_with_backend"
    lock, backend = parts
    assert hasattr(lock, "__enter__") and callable(backend.append_logs) and callable(backend.read_logs)
    appended = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def append_logs(self, logs):
            appended.extend(logs)
            self.inner.append_logs(logs)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    with lock:
        internals.set_journal_backend(storage, Spy(backend))
    study = optuna.create_study(storage=storage, study_name="s")
    assert appended, "the journal storage stopped writing through its _backend"
    with lock:
        internals.sync_journal(storage)
    assert study.study_name == "s"
    assert internals.journal_parts(optuna.storages.InMemoryStorage()) is None


def test_journal_lock_base_is_optunas():
    assert issubclass(optuna.storages.journal.JournalFileOpenLock, internals.BaseJournalFileLock)
    assert {"acquire", "release"} <= set(vars(internals.BaseJournalFileLock))


def test_hypervolume_and_pareto_mask():
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    assert internals.hypervolume(points, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert internals.pareto_mask(points).tolist() == [True, True, True, False]


def test_fluent_tracking_uri_round_trip(tmp_path):
    import os

    import mlflow

    saved, saved_env = internals.get_fluent_tracking_uri(), os.environ.pop("MLFLOW_TRACKING_URI", None)
    uri = (tmp_path / "mlruns").as_uri()
    try:
        mlflow.set_tracking_uri(uri)
        assert internals.get_fluent_tracking_uri() == uri
        internals.restore_fluent_tracking_uri(None)
        assert internals.get_fluent_tracking_uri() is None
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # set_tracking_uri also sets the variable
        assert mlflow.get_tracking_uri() != uri  # "never set": MLflow falls back to its default again
    finally:
        internals.restore_fluent_tracking_uri(saved)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if saved_env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


def test_startup_trials_are_read_and_set_on_tpe_and_gp_samplers():
    from sparsearch.search._internals import set_startup_trials, startup_trials

    def xs(sampler):
        study = optuna.create_study(sampler=sampler)
        study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2, n_trials=6)
        return [t.params["x"] for t in study.trials]

    random_start = xs(optuna.samplers.TPESampler(n_startup_trials=10, seed=0))  # 6 trials, all at random
    tpe = optuna.samplers.TPESampler(n_startup_trials=10, seed=0)
    assert startup_trials(tpe) == 10
    set_startup_trials(tpe, 2)
    guided = xs(tpe)
    # the same seeded random start-up, then TPE guides from the third trial on: the draws part
    assert guided[:2] == random_start[:2] and guided[2:] != random_start[2:]
    assert startup_trials(optuna.samplers.GPSampler(n_startup_trials=4, seed=0)) == 4
    assert startup_trials(optuna.samplers.RandomSampler(seed=0)) is None
    with pytest.raises(TypeError, match="RandomSampler has no n_startup_trials"):
        set_startup_trials(optuna.samplers.RandomSampler(seed=0), 2)


def test_relative_sample_is_the_samplers_relative_draw():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=1, multivariate=True, seed=0))
    dist = optuna.distributions.FloatDistribution(0.0, 1.0)
    for _ in range(3):
        t = study.ask({"x": dist, "y": dist})
        study.tell(t, t.params["x"] + t.params["y"])
    values, space = internals.relative_sample(study.ask())
    assert space == {"x": dist, "y": dist}
    assert set(values) == {"x", "y"} and all(0.0 <= v <= 1.0 for v in values.values())


def test_relative_sample_of_an_independent_sampler_is_empty(study):
    assert internals.relative_sample(study.ask()) == ({}, {})


@pytest.mark.parametrize("make", [lambda: optuna.samplers.TPESampler(n_startup_trials=7),
                                  lambda: optuna.samplers.GPSampler(n_startup_trials=7)])
def test_startup_trials_of_model_based_samplers(make):
    assert internals.startup_trials(make()) == 7


def test_startup_trials_of_other_samplers_is_none():
    assert internals.startup_trials(optuna.samplers.RandomSampler()) is None
