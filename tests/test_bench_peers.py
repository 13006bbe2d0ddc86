"""The pure helpers of bench/bench_peers.py: the anytime curve, time to reach a peer's final, the budget rule and how
the side-by-side target is judged. Fast: nothing here runs a search."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_peers as bp  # noqa: E402


def test_anytime_follows_the_validation_incumbent_not_the_test_metric() -> None:
    rows = [{"t": 1.0, "val": 0.70, "test": 0.69}, {"t": 2.0, "val": 0.65, "test": 0.99},  # better test, worse val
            {"t": 3.0, "val": 0.75, "test": 0.72}, {"t": 4.0, "val": None, "test": 0.80}]
    assert bp.anytime(rows, maximize=True) == [[1.0, 0.70, 0.69], [3.0, 0.75, 0.72]]
    assert bp.time_to_reach(bp.anytime(rows, True), 0.70, maximize=True) == 3.0
    assert bp.time_to_reach(bp.anytime(rows, True), 0.73, maximize=True) is None


def _run(folder: Path, contender: str, seed: int, trials: list[tuple[float, float, float]], budget: float = 100.0):
    doc = {"contender": contender, "seed": seed, "budget_s": budget, "direction": "maximize", "wall_s": budget,
           "trials": [{"t": t, "val": v, "test": te} for t, v, te in trials]}
    (folder / f"{contender}-s{seed}.json").write_text(json.dumps(doc))


def test_summary_judges_the_target_beside_the_verdict(tmp_path: Path) -> None:
    for s in range(5):
        # ours: a better incumbent by t=20 on every seed; the peer reaches a lower one only at t=90
        _run(tmp_path, "ours", s, [(10.0, 0.80, 0.80 + s / 1000), (20.0, 0.90, 0.90 + s / 1000)])
        # a trial that completes after the budget counts for no one
        _run(tmp_path, "tune", s, [(90.0, 0.85, 0.85 + s / 1000), (150.0, 0.99, 0.99)])
    doc = bp.summary("toy", tmp_path, results=tmp_path / "results", plot=False)
    assert doc["final_verdicts"]["tune"]["outcome"] == "wins"
    assert doc["targets"]["tune"]["target"] == "met"
    row = {r["contender"]: r for r in doc["table"]}
    assert row["ours"]["time_to_tune_final_over_its_budget"] == 0.2  # 20 s of tune's 100 s
    assert row["tune"]["late_trials_total"] == 5 and row["tune"]["final_test_max"] < 0.9
    assert (tmp_path / "results" / "peers-toy.json").exists()


def test_final_verdict_pairs_contenders_seeded_alike_and_names_a_run_without_a_final() -> None:
    finals = {"ours": {s: 0.90 + s / 1000 for s in range(5)}, "tune": {s: 0.85 + s / 1000 for s in range(5)},
              "optuna": {s: 0.85 + s / 1000 for s in range(5)}}
    tune = bp.final_verdict(finals, "tune", maximize=True)  # Tune's OptunaSearch takes the run's seed: paired
    assert tune["paired"] and tune["p_value"] == pytest.approx(1 / 32) and "sign-flip" in tune["text"]
    optuna = bp.final_verdict(finals, "optuna", maximize=True)  # its workers draw with 10 * seed + k: unpaired
    assert not optuna["paired"] and optuna["p_value"] == pytest.approx(1 / 252) and "10 * seed" in optuna["design"]
    finals["tune"][3] = None
    with pytest.raises(SystemExit, match="run tune-s3 has no final test metric"):
        bp.final_verdict(finals, "tune", maximize=True)


def test_a_time_ratio_on_indistinguishable_finals_is_flagged() -> None:
    same = {"outcome": "no difference shown"}
    assert bp.judge(0.2, "5/5", same, "tune")["target"] == "met"
    assert "seed spread" in bp.judge(0.2, "5/5", same, "tune")["text"]
    slow = bp.judge(0.7, "5/5", {"outcome": "wins"}, "optuna")
    assert slow["target"] == "missed" and "0.70x" in slow["text"]
    never = bp.judge(None, "3/5", {"outcome": "loses"}, "optuna")
    assert never["target"] == "missed" and "3/5" in never["text"] and "worse" in never["text"]


def test_the_run_deadline_stops_a_trial_after_its_report(monkeypatch) -> None:
    import optuna
    import peers_objective as po

    seen = []

    def report(step, metrics):
        seen.append(step)

    monkeypatch.delenv("SPARSEARCH_PEERS_DEADLINE", raising=False)
    assert po.until_deadline(report) is report  # no deadline: the contender's own report, unchanged
    monkeypatch.setenv("SPARSEARCH_PEERS_DEADLINE", str(time.time() + 3600))
    po.until_deadline(report)(1, {"val_auc": 0.7})
    monkeypatch.setenv("SPARSEARCH_PEERS_DEADLINE", str(time.time() - 1))
    with pytest.raises(optuna.TrialPruned, match="budget ended at step 2"):
        po.until_deadline(report)(2, {"val_auc": 0.7})
    assert seen == [1, 2]  # the last report still reached the contender before the trial stopped
