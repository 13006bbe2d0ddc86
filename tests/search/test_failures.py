"""Failures are classified, not swallowed: dead drivers, a lost storage actor, task errors against worker deaths."""

from __future__ import annotations

import subprocess
import sys
import time

import optuna
import pytest
import ray.exceptions
from optuna.trial import TrialState

from sparsearch.errors import SpecError
from sparsearch.search import _liveness
from sparsearch.search.execution import Execution
from sparsearch.search.loop import worker_lost
from sparsearch.search.records import DRIVER_ATTR, DRIVER_PROC_PREFIX, HEARTBEAT_ATTR
from sparsearch.search.spec import load_study, parse_study
from sparsearch.search.storage import IDEMPOTENT, RayStorageProxy, StorageActorLost, open_storage

BASE = {"study": {"name": "f", "n_trials": 1}, "data": {"generator": "click_log"}}


# -- [execution] validation -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("beat", "stale"), [(5.0, 5.0), (10.0, 2.0)])
def test_stale_after_must_exceed_heartbeat_interval(beat, stale):
    with pytest.raises(SpecError, match=r"stale_after .* must be greater than heartbeat_interval"):
        parse_study({**BASE, "execution": {"heartbeat_interval": beat, "stale_after": stale}})


def test_gpus_per_trial_takes_fractions_and_rejects_negatives():
    spec = parse_study({**BASE, "execution": {"gpus_per_trial": 0.25, "mixed_precision": True}})
    assert spec.execution.gpus_per_trial == 0.25 and spec.execution.mixed_precision
    with pytest.raises(SpecError, match="gpus_per_trial"):
        parse_study({**BASE, "execution": {"gpus_per_trial": -1.0}})


def test_ray_client_addresses_are_refused_with_what_to_do_instead():
    with pytest.raises(SpecError, match=r"Ray Client \(ray://\) is not supported.*ray job submit"):
        load_study("quickstart", ray_address="ray://127.0.0.1:10001")


# -- is a driver alive? ---------------------------------------------------------------------------------------------
def test_a_process_that_exited_is_gone_and_a_live_one_is_not():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        record = {**_liveness.driver_identity(), "pid": child.pid,
                  "started": round(psutil.Process(child.pid).create_time(), 2)}
        assert not _liveness.process_gone(record)
        assert _liveness.process_gone({**record, "started": record["started"] - 50})  # a reused pid
        assert not _liveness.process_gone({**record, "host": "another-host"})  # cannot be told from here
    finally:
        child.kill()
        child.wait()
    assert _liveness.process_gone(record)


# -- stale trials ---------------------------------------------------------------------------------------------------
def _study_with_running_trial(tmp_path, *, owner: str, record: dict | None, beat_age: float | None):
    storage = open_storage(f"journal:{tmp_path / 'j.journal'}")
    study = optuna.create_study(study_name="f", storage=storage, direction="maximize")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.set_trial_system_attr(trial._trial_id, DRIVER_ATTR, owner)
    if beat_age is not None:
        storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - beat_age)
    if record is not None:
        storage.set_study_system_attr(study._study_id, f"{DRIVER_PROC_PREFIX}{owner}", record)
    return study, storage, trial


def _execution(tmp_path, stale_after=60.0):
    spec = parse_study({**BASE, "execution": {"heartbeat_interval": 0.5, "stale_after": stale_after},
                        "tracking": {"enabled": False}})
    return Execution(spec, tmp_path)


def test_a_dead_driver_on_this_host_is_failed_at_once_and_requeued(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    import psutil

    started = round(psutil.Process(child.pid).create_time(), 2)
    child.wait()
    record = {**_liveness.driver_identity(), "pid": child.pid, "started": started, "beat": time.time()}
    study, storage, trial = _study_with_running_trial(tmp_path, owner="dead", record=record, beat_age=0.0)
    ex = _execution(tmp_path)
    assert ex.fail_stale(study, storage, set()) == (1, 1)
    frozen = storage.get_trial(trial._trial_id)
    assert frozen.state == TrialState.FAIL and "is gone" in frozen.user_attrs["fail_reason"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.user_attrs["retry_of"] for t in waiting] == [trial.number]


def test_a_driver_on_another_host_keeps_its_trials_until_its_heartbeats_are_stale(tmp_path):
    record = {"host": "elsewhere", "pid": 1, "started": 0.0, "beat": time.time()}
    study, storage, trial = _study_with_running_trial(tmp_path, owner="remote", record=record, beat_age=1.0)
    ex = _execution(tmp_path, stale_after=5.0)
    assert ex.fail_stale(study, storage, set()) == (0, 0)
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING
    storage.set_trial_system_attr(trial._trial_id, HEARTBEAT_ATTR, time.time() - 10.0)
    assert ex.fail_stale(study, storage, set())[0] == 1
    assert "no heartbeat for 10s" in storage.get_trial(trial._trial_id).user_attrs["fail_reason"]


def test_a_live_driver_on_this_host_keeps_its_trials(tmp_path):
    record = {**_liveness.driver_identity(), "beat": time.time()}  # this very process
    study, storage, trial = _study_with_running_trial(tmp_path, owner="alive", record=record, beat_age=0.0)
    assert _execution(tmp_path).fail_stale(study, storage, set()) == (0, 0)
    assert storage.get_trial(trial._trial_id).state == TrialState.RUNNING


def test_a_storage_outage_in_the_stale_trial_loop_is_not_swallowed(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    import psutil

    started = round(psutil.Process(child.pid).create_time(), 2)
    child.wait()
    record = {**_liveness.driver_identity(), "pid": child.pid, "started": started}
    study, storage, _ = _study_with_running_trial(tmp_path, owner="dead", record=record, beat_age=0.0)

    class Down(RuntimeError):
        pass

    def down(*args, **kwargs):
        raise Down("storage is down")

    storage.set_trial_state_values = down
    with pytest.raises(Down):
        _execution(tmp_path).fail_stale(study, storage, set())


# -- the storage actor ----------------------------------------------------------------------------------------------
class _FakeActor:
    """An actor handle whose calls die ``deaths`` times (as when its process is killed), then answer."""

    def __init__(self, deaths: int) -> None:
        self.deaths, self.calls = deaths, []
        self.call = self

    def remote(self, method, args, kwargs):
        self.calls.append(method)
        return method


@pytest.fixture
def fake_ray_get(monkeypatch):
    def install(actor: _FakeActor):
        def get(method):
            if actor.deaths > 0:
                actor.deaths -= 1
                raise ray.exceptions.ActorDiedError()
            return True, f"answer to {method}"

        monkeypatch.setattr(ray, "get", get)

    return install


def test_proxy_repeats_only_calls_that_are_safe_to_repeat(fake_ray_get, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    actor = _FakeActor(deaths=1)
    fake_ray_get(actor)
    proxy = RayStorageProxy(actor, retries=3)
    assert proxy.get_all_studies() == "answer to get_all_studies"
    assert actor.calls == ["get_all_studies", "get_all_studies"]
    actor.deaths = 1
    with pytest.raises(StorageActorLost, match="create_new_trial: the call was not repeated"):
        proxy.create_new_trial(0)
    assert actor.calls[-1] == "create_new_trial" and actor.calls.count("create_new_trial") == 1
    assert "create_new_trial" not in IDEMPOTENT and "set_trial_state_values" not in IDEMPOTENT


def test_proxy_of_an_in_memory_study_never_retries(fake_ray_get, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    actor = _FakeActor(deaths=1)
    fake_ray_get(actor)
    with pytest.raises(StorageActorLost, match="the in-memory study was lost"):
        RayStorageProxy(actor, retries=0).get_all_studies()
    assert actor.calls == ["get_all_studies"]


@pytest.mark.usefixtures("ray_session")
def test_an_in_memory_storage_actor_is_not_restarted_and_a_file_one_is(tmp_path):
    import ray

    from sparsearch.search.storage import start_storage_server

    memory = start_storage_server("memory")
    proxy = RayStorageProxy(memory, retries=0)
    optuna.create_study(study_name="m", storage=proxy)
    ray.kill(memory, no_restart=False)  # as if its process died: Ray would restart it empty
    time.sleep(1.0)
    with pytest.raises(StorageActorLost, match="in-memory study was lost"):
        proxy.get_all_studies()

    journal = start_storage_server(f"journal:{tmp_path / 'a.journal'}")
    proxy = RayStorageProxy(journal, retries=5)
    optuna.create_study(study_name="j", storage=proxy)
    ray.kill(journal, no_restart=False)
    assert [s.study_name for s in proxy.get_all_studies()] == ["j"]  # restarted over the same file
    ray.kill(journal)


# -- task errors against worker deaths ------------------------------------------------------------------------------
def test_only_a_lost_worker_or_node_counts_as_a_worker_death():
    assert worker_lost(ray.exceptions.WorkerCrashedError())
    assert worker_lost(ray.exceptions.NodeDiedError("n"))
    assert not worker_lost(ray.exceptions.RayTaskError("execute_trial", "tb", ValueError("x")))
    assert not worker_lost(ray.exceptions.TaskCancelledError())
    assert not worker_lost(TypeError("cannot unpickle"))


# -- a storage outage inside a trial ----------------------------------------------------------------------------------
@pytest.mark.usefixtures("ray_session")
def test_a_storage_outage_in_a_worker_is_recorded_as_such_and_the_trial_is_requeued(tmp_path):
    from sparsearch.search.controller import run_study

    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(study_name="outage", storage=storage, direction="maximize")
    study.set_user_attr("objectives", ["val_auc"])
    study.set_user_attr("marker", str(tmp_path / "marker"))
    raw = {"study": {"name": "outage", "n_trials": 1, "objective": "sparsearch_test_objectives:storage_down_once"},
           "data": {"generator": "click_log", "params": {"n_rows": 1000, "n_noise": 2, "max_cardinality": 50},
                    "prefilter": "none"},
           "execution": {"workers": 1, "max_retries": 1, "heartbeat_interval": 0.5},
           "tracking": {"enabled": False}}
    result = run_study(parse_study(raw), results_dir=tmp_path, progress=False)
    states = sorted((t.number, t.state) for t in result.trials)
    assert states == [(0, TrialState.FAIL), (1, TrialState.COMPLETE)]
    reason = result.trials[0].user_attrs["fail_reason"]
    assert reason.startswith("storage outage in the worker: StorageActorLost") and reason.endswith("(re-queued)")
    assert result.trials[1].user_attrs["retry_of"] == 0


def test_relative_file_storages_are_made_absolute_on_the_driver(tmp_path, monkeypatch):
    from sparsearch.search.storage import absolute_storage_url

    monkeypatch.chdir(tmp_path)
    assert absolute_storage_url("journal:res/optuna.journal") == f"journal:{tmp_path}/res/optuna.journal"
    assert absolute_storage_url("res/optuna.journal") == f"journal:{tmp_path}/res/optuna.journal"
    assert absolute_storage_url("sqlite:///res/o.db") == f"sqlite:///{tmp_path}/res/o.db"
    assert absolute_storage_url("sqlite:////abs/o.db") == "sqlite:////abs/o.db"
    assert absolute_storage_url("memory") == "memory"
    assert absolute_storage_url("postgresql://u:p@h/db") == "postgresql://u:p@h/db"
