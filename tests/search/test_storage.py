"""Storage URLs, credential redaction, and the controller against a real PostgreSQL server."""

from __future__ import annotations

import os

import optuna
import pytest
from optuna.trial import TrialState

from sparsearch._redact import redact
from sparsearch.errors import ConnectionProblem, SpecError
from sparsearch.search.storage import open_storage

POSTGRES = os.environ.get("SPARSEARCH_TEST_POSTGRES_URL")


def test_redact_hides_passwords_everywhere_in_a_text():
    text = "could not connect: postgresql://bob:pa55@db:5432/x and mysql+pymysql://a:b@h/d"
    out = redact(text)
    assert "pa55" not in out and ":b@" not in out
    assert "postgresql://bob:***@db:5432/x" in out and "mysql+pymysql://a:***@h/d" in out


@pytest.mark.parametrize("url", ["journal:{tmp}/o.journal", "{tmp}/o.journal", "sqlite:///{tmp}/o.db"])
def test_embedded_storages_open_and_keep_trials(url, tmp_path):
    url = url.format(tmp=tmp_path)
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    written = [(t.number, t.state, t.params["x"], t.value) for t in study.trials]
    assert len(written) == 3 and all(state == TrialState.COMPLETE for _, state, _, _ in written)
    # kept = readable by a fresh storage object opened from the same URL (what a resumed run does)
    reopened = optuna.load_study(study_name="s", storage=open_storage(url))
    assert [(t.number, t.state, t.params["x"], t.value) for t in reopened.trials] == written


def test_memory_storage_keeps_trials_only_in_its_own_object():
    study = optuna.create_study(storage=open_storage("memory"), study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    assert [t.value for t in study.trials] == [t.params["x"] for t in study.trials] and len(study.trials) == 3
    with pytest.raises(KeyError):  # nothing outlives the object: a fresh "memory" storage has no study "s"
        optuna.load_study(study_name="s", storage=open_storage("memory"))


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        ("ftp://host/x", SpecError, "not understood"),
        ("journal:/no/such/folder/o.journal", SpecError, "does not exist"),
        ("postgresql://user:hunter2@127.0.0.1:9/db", ConnectionProblem, "cannot open storage"),
    ],
)
def test_bad_storage_urls_fail_clearly_without_secrets(url, error, match):
    with pytest.raises(error, match=match) as info:
        open_storage(url)
    assert "hunter2" not in str(info.value) and "\n" not in str(info.value)


def _require_postgres():
    if POSTGRES:
        return POSTGRES
    if os.environ.get("CI"):
        pytest.fail("CI must provide SPARSEARCH_TEST_POSTGRES_URL (see .ci/run)")
    pytest.skip("no PostgreSQL server: set SPARSEARCH_TEST_POSTGRES_URL (bash .ci/postgres.sh start DIR PORT)")


@pytest.mark.postgres
@pytest.mark.usefixtures("ray_session")
def test_controller_on_postgresql_resumes_and_never_duplicates(tmp_path):
    url = _require_postgres()
    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import load_study

    name = f"pg-{os.getpid()}-{tmp_path.name}"
    raw = {
        "study": {"name": name, "n_trials": 4, "objective": "sparsearch_test_objectives:quadratic",
                  "pruner": "median", "pruner_params": {"n_startup_trials": 1}},
        "data": {"generator": "click_log", "params": {"n_rows": 2000, "n_noise": 4, "max_cardinality": 200}},
        "train": {"epochs": 1},
        "storage": {"url": url},
    }
    first = run_study(load_study(raw), results_dir=tmp_path, progress=False)
    assert len(first.trials) == 4
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert "***" in first.storage and f":{password}@" not in first.storage
    second = run_study(load_study(raw, n_trials=3), results_dir=tmp_path, progress=False)
    numbers = [t.number for t in second.trials]
    assert sorted(numbers) == list(range(7))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in second.trials)
    assert all("extra.x" in t.params for t in second.trials)


def test_batched_writes_append_a_journal_once(tmp_path, monkeypatch):
    from optuna.storages.journal import JournalFileBackend

    from sparsearch.search.storage import batched_writes

    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    calls = []
    real = JournalFileBackend.append_logs
    monkeypatch.setattr(JournalFileBackend, "append_logs", lambda self, logs: (calls.append(len(logs)),
                                                                                 real(self, logs))[1])
    with batched_writes(storage):
        storage.set_trial_user_attr(trial._trial_id, "a", 1)
        storage.set_trial_user_attr(trial._trial_id, "b", {"c": 2})
        storage.set_trial_system_attr(trial._trial_id, "d", "x")
        storage.set_trial_intermediate_value(trial._trial_id, 1, 0.5)
    assert calls == [4]  # one append (one lock, one fsync) for the four writes
    frozen = storage.get_trial(trial._trial_id)
    assert frozen.user_attrs == {"a": 1, "b": {"c": 2}} and frozen.system_attrs["d"] == "x"
    assert frozen.intermediate_values == {1: 0.5}
    reopened = open_storage(f"journal:{tmp_path / 'optuna.journal'}").get_trial(trial._trial_id)
    assert reopened.user_attrs == frozen.user_attrs  # really in the file
    storage.set_trial_user_attr(trial._trial_id, "e", 3)  # outside a block: written at once
    assert calls == [4, 1]


def test_batched_writes_hold_only_the_calling_threads_writes(tmp_path):
    """The driver batches a trial's result while its logging thread marks MLflow runs on the same storage."""
    import threading

    from sparsearch.search.storage import batched_writes

    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(storage=storage)
    trials = [study.ask() for _ in range(4)]

    def write(worker: int) -> None:
        for i in range(40):
            if i % 2:
                with batched_writes(storage):
                    storage.set_trial_user_attr(trials[worker]._trial_id, f"k{i}", i)
                    storage.set_trial_user_attr(trials[worker]._trial_id, f"j{i}", i)
            else:
                storage.set_trial_user_attr(trials[worker]._trial_id, f"k{i}", i)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    storage.set_trial_user_attr(trials[0]._trial_id, "after", True)  # writes still reach the file afterwards
    reopened = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    for trial in trials:
        attrs = reopened.get_trial(trial._trial_id).user_attrs
        assert {f"k{i}" for i in range(40)} <= set(attrs) and {f"j{i}" for i in range(1, 40, 2)} <= set(attrs)
    assert reopened.get_trial(trials[0]._trial_id).user_attrs["after"] is True


def test_batched_writes_leave_other_storages_alone():
    from sparsearch.search.storage import batched_writes

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    with batched_writes(storage):
        storage.set_trial_user_attr(trial._trial_id, "a", 1)
        assert storage.get_trial(trial._trial_id).user_attrs == {"a": 1}  # written at once
