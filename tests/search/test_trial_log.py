"""TrialLog: trial child runs written by a logging process (or the driver's thread), marked in the study."""

from __future__ import annotations

import time

import optuna
import pytest

from sparsearch.search.records import LOGGED_PREFIX, RUN_PREFIX
from sparsearch.search.storage import open_storage
from sparsearch.search.tracking import Tracker
from sparsearch.search.trial_log import TrialLog


@pytest.mark.parametrize("use_process", [True, False], ids=["process", "thread"])
def test_child_runs_are_written_and_marked_in_the_study(tmp_path, use_process):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    url = f"journal:{tmp_path / 'optuna.journal'}"
    study = optuna.create_study(study_name="log", storage=open_storage(url))
    tracker = Tracker(uri, "log", tmp_path / "artifacts")
    tracker.connect()
    parent = tracker.start_parent("parent", {"a": 1}, {})
    trial_log = TrialLog(tracker, use_process=use_process, log_file=tmp_path / "logs" / "writer.log")
    trial_log.attach(study._storage, study._study_id)
    assert trial_log.mode == ("process" if use_process else "thread")
    for n in range(4):
        trial_log.start(n, {"x": n / 10}, {"sampler": "tpe"})
    for n in range(4):
        trial_log.finish(n, state="COMPLETE" if n else "FAIL", history=[{"epoch": 1, "val_auc": 0.5 + n / 10}],
                         metrics={"val_auc": 0.5 + n / 10}, error=None if n else "boom")
    trial_log.close()

    attrs = study._storage.get_study_system_attrs(study._study_id)
    runs = {n: attrs[f"{RUN_PREFIX}{n}"] for n in range(4)}
    assert all(attrs[f"{LOGGED_PREFIX}{n}"] == runs[n] for n in range(4))
    client = tracker._client
    for n, run_id in runs.items():
        run = client.get_run(run_id)
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert run.data.params["x"] == str(n / 10)
        assert run.info.status == ("FINISHED" if n else "FAILED")
        assert [m.step for m in client.get_metric_history(run_id, "val_auc")] == [1]
    assert tracker.failures == []


def test_disabled_tracking_makes_trial_log_a_no_op(tmp_path):
    tracker = Tracker("sqlite:///unused.db", "x", tmp_path, enabled=False)
    trial_log = TrialLog(tracker)
    trial_log.attach(None, 0)
    trial_log.start(0, {}, {})
    trial_log.finish(0, state="COMPLETE")
    trial_log.close()
    assert not trial_log.enabled and trial_log.mode == "off"


@pytest.mark.slow
def test_a_dead_writer_process_loses_no_trial_and_blocks_nothing(tmp_path):
    url = f"journal:{tmp_path / 'optuna.journal'}"
    study = optuna.create_study(study_name="dead", storage=open_storage(url))
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "dead", tmp_path / "artifacts")
    tracker.connect()
    trial_log = TrialLog(tracker)  # started before the parent run exists, as in run_study
    tracker.start_parent("parent", {}, {})
    trial_log.attach(study._storage, study._study_id)
    trial_log.start(0, {"x": 1}, {})
    trial_log._process.proc.kill()  # the writer process dies (OOM killer, a crash)
    trial_log._process.proc.wait()
    for n in range(1, 50):  # the search loop goes on: nothing blocks
        trial_log.start(n, {"x": n}, {})
        trial_log.finish(n, state="COMPLETE", metrics={"val_auc": 0.5})
        if n == 1:
            time.sleep(0.5)  # the reader has seen the end of the writer's output
    trial_log.close(timeout=30)
    assert trial_log.mode == "thread"  # the driver's logging thread took over
    assert any("writer process ended" in f for f in tracker.failures)
    marks = study._storage.get_study_system_attrs(study._study_id)
    logged = {int(k.removeprefix(LOGGED_PREFIX)) for k in marks if k.startswith(LOGGED_PREFIX)}
    assert set(range(2, 50)) <= logged  # after the takeover every run is written and marked
    assert 0 not in logged  # trial 0's run was in flight when the writer died: synced by the controller at the end
