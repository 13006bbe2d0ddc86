"""Loop listeners and study records: what each listener does for each way a trial ends, and the record helpers."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sparsearch.search import records
from sparsearch.search.listeners import LoopOutcome, ProgressListener, TrackingListener, TrialEnd
from sparsearch.search.protocol import TrialReport
from sparsearch.search.results import RunInfo
from sparsearch.search.spec import parse_study


class _RecordingLog:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def attach(self, storage, sid) -> None:
        self.calls.append(("attach", sid))

    def start(self, number, params, tags) -> None:
        self.calls.append(("start", number, dict(params), dict(tags)))

    def finish(self, number, **kwargs) -> None:
        self.calls.append(("finish", number, kwargs))

    def close(self) -> None:
        self.calls.append(("close",))


def _trial(number: int, state: TrialState = TrialState.COMPLETE, values=(0.7,), attrs=None):
    t = create_trial(state=state, values=list(values) if state == TrialState.COMPLETE else None,
                     params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, user_attrs=attrs or {})
    t.number = number
    return t


@pytest.fixture
def tracking():
    spec = parse_study({"study": {"name": "l", "n_trials": 2, "seed": 4}, "data": {"generator": "click_log"}})
    study = optuna.create_study(study_name="l")
    log = _RecordingLog()
    return TrackingListener(SimpleNamespace(spec=spec, trial_log=log), study, study._storage, "fp"), study, log


def test_tracking_starts_child_runs_with_the_study_tags_and_names_the_retried_trial(tracking):
    listener, study, log = tracking
    study.enqueue_trial({"x": 0.1}, user_attrs={records.RETRY_OF: 3, records.ATTEMPT: 1})
    listener.on_trial_start(study.ask(), None)
    fresh = study.ask()
    fresh.suggest_float("x", 0, 1)
    listener.on_trial_start(fresh, None)
    (_, n0, _, tags0), (_, n1, params1, tags1) = log.calls[1], log.calls[2]
    assert log.calls[0][0] == "attach"
    assert (n0, tags0) == (0, {"study": "l", "sampler": "tpe", "seed": "4", "data_fingerprint": "fp", "retry_of": "3"})
    assert n1 == 1 and "retry_of" not in tags1 and set(params1) == {"x"}


def test_tracking_finishes_each_kind_of_trial_end_its_own_way(tracking):
    listener, _, log = tracking
    report = TrialReport("FAIL", error="boom", device="cpu", metrics={"val_auc": 0.5},
                         accounting={"layers": [{"name": "h0", "sparsity": 0.9, "prunable": True},
                                                {"name": "out", "sparsity": 0.0, "prunable": False}]})
    listener.on_trial_end(TrialEnd(_trial(0, TrialState.FAIL), "ran", report))
    listener.on_trial_end(TrialEnd(_trial(1, TrialState.FAIL), "invalid"))
    listener.on_trial_end(TrialEnd(_trial(2, TrialState.RUNNING), "stale", run_id="r2"))
    listener.on_trial_end(TrialEnd(_trial(3, TrialState.FAIL), "interrupted"))
    finished = {call[1]: call[2] for call in log.calls if call[0] == "finish"}
    assert sorted(finished) == [0, 2, 3]  # an invalid configuration never had a child run
    assert finished[0]["state"] == "FAIL" and finished[0]["error"] == "boom" and finished[0]["tags"] == {"device": "cpu"}
    assert finished[0]["metrics"] == {"val_auc": 0.5, "layer_sparsity.h0": 0.9}
    assert finished[2] == {"state": "FAIL", "error": "stale trial (its driver stopped)", "run_id": "r2"}
    assert finished[3] == {"state": "FAIL", "error": "interrupted"}
    ok = TrialReport("COMPLETE", values=[0.7], error="a note")
    listener.on_trial_end(TrialEnd(_trial(4), "ran", ok))
    assert log.calls[-1][2]["error"] is None  # only a failed trial's run gets the error


def test_tracking_on_finish_closes_the_log_and_syncs_only_when_not_interrupted(tracking, monkeypatch):
    listener, _, log = tracking
    synced = []
    monkeypatch.setattr("sparsearch.search.finish.sync_unlogged", lambda ex, study, storage: synced.append(study))
    listener.on_finish(LoopOutcome(n_run=2, interrupted=True))
    assert log.calls[-1] == ("close",) and synced == []
    listener.on_finish(LoopOutcome(n_run=2, interrupted=False))
    assert len(synced) == 1


def test_progress_prints_this_drivers_trials_only(capsys):
    study = optuna.create_study(direction="maximize")
    progress = ProgressListener(study, 3, ["val_auc"])
    progress.on_trial_end(TrialEnd(_trial(0), "ran", TrialReport("COMPLETE", duration_s=1.5)))
    progress.on_trial_end(TrialEnd(_trial(1, TrialState.FAIL, attrs={records.FAIL_REASON: "bad combo"}), "invalid"))
    progress.on_trial_end(TrialEnd(_trial(2, TrialState.RUNNING), "stale"))
    progress.on_trial_end(TrialEnd(_trial(3, TrialState.FAIL), "interrupted"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("trial    0 COMPLETE") and "[1.5s]" in lines[0]
    assert "trial    1 FAIL" in lines[1] and "(bad combo)" in lines[1] and "2/3 done" in lines[1]


def test_requeue_counts_attempts_up_to_max_retries():
    study = optuna.create_study()
    first = _trial(0, TrialState.FAIL)
    assert records.requeue(study, first, max_retries=1)
    retry = study.ask()
    assert (records.retry_of(retry), retry.user_attrs[records.ATTEMPT]) == (0, 1)
    study.tell(retry, state=TrialState.FAIL)
    assert not records.requeue(study, study.trials[0], max_retries=1)  # its work was re-queued once already
    assert not records.requeue(study, first, max_retries=0)


def test_a_trial_finished_first_is_not_failed_again():
    study = optuna.create_study()
    trial = study.ask()
    running = study._storage.get_trial(trial._trial_id)
    study.tell(trial, 1.0)
    assert not records.fail_stored_trial(study._storage, running, "stale: gone")
    assert records.fail_reason(study.trials[0]) is None and study.trials[0].state == TrialState.COMPLETE


def test_requeued_marks_the_first_line_only():
    assert records.requeued("worker died: X") == "worker died: X (re-queued)"
    assert records.requeued("storage outage: Y\ntraceback") == "storage outage: Y (re-queued)\ntraceback"


def test_run_info_serialises_in_the_documented_order():
    info = RunInfo(workers=2, cpus_per_trial=1.0, data_fingerprint="f", n_rows=10, split={"n_train": 6},
                   ranking_rows={}, features=["a"], crosses=[], timings={"load_s": 0.1}, ranking_cached=False,
                   mlflow_failures=0, mlflow_logging="process", notes=[])
    assert list(info.to_json()) == ["workers", "cpus_per_trial", "data_fingerprint", "n_rows", "split",
                                    "ranking_rows", "features", "crosses", "timings", "ranking_cached",
                                    "mlflow_failures", "mlflow_logging", "notes", "encoding_cached", "prepare_s",
                                    "warm_start", "startup"]
    assert info["warm_start"] == {"mode": "none", "enqueued": 0, "notes": []} and info["startup"] is None
    assert info["n_rows"] == 10 and info.get("nope", 3) == 3
    with pytest.raises(KeyError):
        info["nope"]
