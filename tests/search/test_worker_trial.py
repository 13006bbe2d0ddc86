"""WorkerTrial: what a custom objective's ``trial`` answers in the worker, and what it sends to the study."""

from __future__ import annotations

import dataclasses
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sparsearch.errors import ConnectionProblem
from sparsearch.search.protocol import Dispatch, TrialPayload, TrialReport, build_payload
from sparsearch.search.worker import WorkerTrial, _LazyStorage

X = FloatDistribution(-3.0, 3.0)


class CountingStorage:
    """A lazy storage over an in-memory Optuna storage that counts the calls made to it."""

    def __init__(self, storage: optuna.storages.BaseStorage) -> None:
        self.storage, self.calls = storage, 0

    def get(self) -> optuna.storages.BaseStorage:
        self.calls += 1
        return self.storage


@pytest.fixture()
def setup():
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    trial.suggest_int("model.width", 8, 64)

    def make(objectives=("val_auc",), pruning=False, **payload) -> tuple[WorkerTrial, CountingStorage]:
        p = TrialPayload(
            study_name="s", trial_id=trial._trial_id, number=trial.number, config=None, objectives=objectives,
            sampler="random", pruner="median" if pruning else "none", pruner_params={}, seed=0, cpus=1.0,
            objective="m:f", params={"model.width": (trial.params["model.width"], IntDistribution(8, 64))},
            **payload)
        counting = CountingStorage(storage)
        return WorkerTrial(p, counting, pruning=pruning, sampler_seed=0), counting

    return study, trial, make


def test_proposed_parameter_is_answered_in_the_worker(setup):
    study, trial, make = setup
    wt, counting = make(proposals={"extra.x": (0.25, X)})
    assert wt.suggest_float("extra.x", -3.0, 3.0) == 0.25
    assert wt.suggest_float("extra.x", -3.0, 3.0) == 0.25  # asking again gives the same value
    assert counting.calls == 0 and wt.remote_calls == 0
    assert wt.params == {"model.width": trial.params["model.width"], "extra.x": 0.25}
    report = wt.collect(TrialReport("COMPLETE"))
    assert report.params == {"extra.x": (0.25, X)}
    assert "extra.x" not in study._storage.get_trial(trial._trial_id).params  # the driver writes it


def test_unproposed_or_changed_parameter_goes_to_the_study(setup):
    study, trial, make = setup
    wt, counting = make(proposals={"extra.x": (0.25, X), "extra.k": (3, IntDistribution(1, 5))})
    wt.suggest_int("extra.k", 1, 5)  # local
    y = wt.suggest_float("extra.x", 0.0, 1.0)  # another range than proposed: sampled by the study's sampler
    assert 0.0 <= y <= 1.0 and counting.calls > 0 and wt.remote_calls == 1
    stored = study._storage.get_trial(trial._trial_id)
    assert stored.params["extra.x"] == y
    assert stored.params["extra.k"] == 3  # what the worker held was written before the real trial took over
    assert wt.collect(TrialReport("COMPLETE")).params == {}
    z = wt.suggest_float("extra.z", 0.0, 1.0)  # from now on every new parameter goes to the study
    assert study._storage.get_trial(trial._trial_id).params["extra.z"] == z


def test_driver_parameters_and_single_values_need_no_study(setup):
    _, trial, make = setup
    wt, counting = make()
    assert wt.suggest_int("model.width", 8, 64) == trial.params["model.width"]
    assert wt.suggest_float("extra.fixed", 2.0, 2.0) == 2.0
    assert wt.suggest_categorical("extra.one", ["only"]) == "only"
    assert counting.calls == 0
    with pytest.raises(ValueError):
        wt.suggest_categorical("model.width", ["a", "b"])  # another kind of distribution for the same name
    with pytest.warns(RuntimeWarning, match="Inconsistent"):
        assert wt.suggest_int("model.width", 8, 128) == trial.params["model.width"]


def test_a_proposal_that_is_never_suggested_is_never_stored(setup):
    _, _, make = setup
    wt, _ = make(proposals={"extra.unused": (1, IntDistribution(0, 3))})
    assert wt.collect(TrialReport("COMPLETE")).params == {}


def test_report_and_user_attrs_are_held_without_a_pruner(setup):
    _, _, make = setup
    wt, counting = make()
    wt.report(0.5, 1)
    wt.report(0.9, 1)  # the first report of a step wins, as in Optuna
    wt.report(0.7, 2)
    assert wt.should_prune() is False
    wt.set_user_attr("note", {"a": 1})
    assert wt.user_attrs["note"] == {"a": 1}
    assert counting.calls == 0
    report = wt.collect(TrialReport("COMPLETE"))
    assert report.intermediate == {1: 0.5, 2: 0.7} and report.user_attrs == {"note": {"a": 1}}
    with pytest.raises(TypeError, match="JSON"):
        wt.set_user_attr("bad", object())
    with pytest.raises(ValueError, match="non-negative"):
        wt.report(0.1, -1)
    with pytest.raises(TypeError):
        wt.report("high", 3)


def test_report_goes_to_the_study_under_a_trial_pruner(setup):
    study, trial, make = setup
    # five finished trials (the median pruner's default start-up) that reached 0.1 at step 1 and 0.01 at step 2;
    # the study minimises, and the median pruner compares a trial's best value so far with the others' median
    for _ in range(5):
        study.add_trial(optuna.trial.create_trial(
            params={"model.width": 16}, distributions={"model.width": IntDistribution(8, 64)}, value=0.01,
            intermediate_values={1: 0.1, 2: 0.01}))
    wt, counting = make(pruning=True)
    wt.report(0.05, 1)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.05}
    assert not wt.should_prune() and counting.calls > 0  # better than the other trials at step 1
    wt.report(0.5, 2)
    assert study._storage.get_trial(trial._trial_id).intermediate_values == {1: 0.05, 2: 0.5}
    assert wt.should_prune()  # its best (0.05) is worse than the stored trials' median at step 2 (0.01)


def test_multi_objective_trials_cannot_report(setup):
    _, _, make = setup
    wt, _ = make(objectives=("val_auc", "nnz_params"))
    with pytest.raises(NotImplementedError):
        wt.report(0.5, 1)
    with pytest.raises(NotImplementedError):
        wt.should_prune()


def test_trial_study_is_loaded_on_demand(setup):
    study, _, make = setup
    study.set_user_attr("marker", "here")
    wt, counting = make()
    assert counting.calls == 0
    assert wt.study.user_attrs["marker"] == "here"


def test_nan_proposal_is_rejected_like_optuna_does(setup):
    _, _, make = setup
    wt, _ = make(proposals={"extra.x": (math.nan, X)})
    with pytest.raises(ValueError):
        wt.suggest_float("extra.x", -3.0, 3.0)


def test_worker_on_another_node_without_the_storage_actor_says_why():
    payload = TrialPayload(study_name="s", trial_id=0, number=4, config=None, objectives=("val_auc",),
                           sampler="tpe", pruner="none", pruner_params={}, seed=0, cpus=1.0,
                           local_storage="journal:/tmp/x.journal", driver_node="node-a")
    with pytest.raises(ConnectionProblem, match="cannot reach the study's journal file"):
        _LazyStorage(payload, None, "node-b").get()


@pytest.mark.usefixtures("ray_session")
def test_worker_side_parameters_are_proposed_by_the_driver_after_the_first_trial(tmp_path):
    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import load_study

    raw = {
        "study": {"name": "proposals", "n_trials": 8, "seed": 0, "sampler": "tpe",
                  "objective": "sparsearch_test_objectives:conditional"},
        "data": {"generator": "click_log", "params": {"n_rows": 500, "n_noise": 2, "max_cardinality": 50},
                 "prefilter": "none"},
        "train": {"epochs": 1},
        "execution": {"workers": 1},
        "tracking": {"enabled": False},
    }
    result = run_study(load_study(raw), results_dir=tmp_path, progress=False)
    trials = result.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 8
    assert trials[0].user_attrs["remote_calls"] > 0  # nothing known yet: the worker asked the study
    # once the study knows the worker's parameters, the driver proposes them and the worker never asks
    assert [t.user_attrs["remote_calls"] for t in trials[1:]] == [0] * 7
    for t in trials:
        assert {"extra.x", "extra.kind"} <= set(t.params)
        assert ("extra.even_only" in t.params) == (t.number % 2 == 0)  # an unused proposal is not stored
        assert t.intermediate_values.keys() == {1, 2}
        assert t.values[0] == pytest.approx(1 - (t.params["extra.x"] - 1) ** 2)
        assert t.distributions["extra.x"] == X
        assert isinstance(t.distributions["extra.kind"], CategoricalDistribution)


def test_worker_reopens_a_journal_file_that_was_replaced(tmp_path):
    from sparsearch.search.storage import open_storage
    from sparsearch.search.worker import _local_journal

    url = f"journal:{tmp_path / 'optuna.journal'}"
    optuna.create_study(study_name="old", storage=open_storage(url))
    first = _local_journal(url)
    assert _local_journal(url) is first  # cached per worker process
    (tmp_path / "optuna.journal").unlink()  # the results folder is wiped and the study run again
    optuna.create_study(study_name="new", storage=open_storage(url))
    again = _local_journal(url)
    assert again is not first
    assert [s.study_name for s in again.get_all_studies()] == ["new"]


def test_one_builder_fills_the_payload_of_a_dispatched_trial_and_of_a_retraining():
    from sparsearch.search.spec import parse_study

    spec = parse_study({"study": {"name": "p", "n_trials": 1, "pruner": "median", "seed": 3},
                        "data": {"generator": "click_log"},
                        "execution": {"trial_memory_mb": 900, "cpus_per_trial": 2}})
    dist = FloatDistribution(0, 1)
    dispatch = Dispatch(params={"x": (0.5, dist)}, proposals={}, user_attrs={"target_sparsity": 0.9},
                        datetime_start=None, storage_url="journal:/tmp/s.journal", driver_node="n1", return_model=False)
    sent = build_payload(spec, trial_id=7, number=2, config="cfg", features=("a",), dispatch=dispatch)
    assert (sent.pruner, sent.memory_mb, sent.cpus, sent.seed, sent.return_model) == ("median", 900, 2, 3, False)
    assert sent.local_storage == "journal:/tmp/s.journal" and sent.storage_retries == 3 and sent.params["x"][0] == 0.5
    in_memory = build_payload(spec, trial_id=7, number=2, config="cfg", features=None,
                              dispatch=dataclasses.replace(dispatch, storage_url="inmemory"))
    assert in_memory.local_storage is None and in_memory.storage_retries == 0
    again = build_payload(spec, trial_id=7, number=2, config="cfg", features=("a",), dispatch=None)
    assert (again.pruner, again.pruner_params, again.return_model, again.memory_mb, again.params) == (
        "none", {}, True, None, {})
    assert again.objectives == sent.objectives == tuple(spec.study.objectives)
