"""The pure helpers of bench/bench_peers.py: the anytime curve, time to reach a peer's final, the budget rule and how
the side-by-side target is judged. Fast: nothing here runs a search."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _results  # noqa: E402
import bench_peers as bp  # noqa: E402


def test_anytime_follows_the_validation_incumbent_not_the_test_metric() -> None:
    rows = [{"t": 1.0, "val": 0.70, "test": 0.69}, {"t": 2.0, "val": 0.65, "test": 0.99},  # better test, worse val
            {"t": 3.0, "val": 0.75, "test": 0.72}, {"t": 4.0, "val": None, "test": 0.80}]
    assert bp.anytime(rows, maximize=True) == [[1.0, 0.70, 0.69], [3.0, 0.75, 0.72]]
    assert bp.time_to_reach(bp.anytime(rows, True), 0.70, maximize=True) == 3.0
    assert bp.time_to_reach(bp.anytime(rows, True), 0.73, maximize=True) is None


def _run(folder: Path, contender: str, seed: int, trials: list[tuple[float, float, float]], budget: float = 100.0,
         fp: str = "spec"):
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"contender": contender, "seed": seed, "budget_s": budget, "direction": "maximize", "wall_s": budget,
           "config": {"spec_fingerprint": fp},
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
    assert bp.judge({0: 0.2, 1: 0.1}, same, "tune")["target"] == "met"
    assert "seed spread" in bp.judge({0: 0.2}, same, "tune")["text"]
    slow = bp.judge({0: 0.7, 1: 0.3}, {"outcome": "wins"}, "optuna")
    assert slow["target"] == "missed" and "0.70x" in slow["text"] and slow["final_target"] == "met"
    never = bp.judge({0: 0.1, 1: None, 2: 0.2}, {"outcome": "loses"}, "optuna")
    assert never["target"] == "missed" and "2/3" in never["text"] and "worse" in never["text"]
    assert never["final_target"] == "missed" and never["worst_ratio"] is None


def test_the_target_is_the_worst_seed_not_the_median_over_seeds() -> None:
    # ours' incumbent curves ([t, val, test]) on five seeds; the peer's median final test metric is 0.80, its
    # budget 100 s. Four seeds reach 0.80 by 10..40 s, seed 3 only at 70 s: median 0.3x, worst 0.7x
    reach = {0: 10.0, 1: 20.0, 2: 30.0, 3: 70.0, 4: 40.0}
    docs = [{"seed": s, "curve": [[1.0, 0.5, 0.70], [t, 0.9, 0.81]]} for s, t in reach.items()]
    ratios = bp.seed_ratios(docs, target=0.80, peer_budget=100.0, maximize=True)
    assert ratios == {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.7, 4: 0.4}
    assert bp.worst_ratio(ratios) == 0.7
    verdict = bp.judge(ratios, {"outcome": "wins"}, "tune")
    assert verdict["target"] == "missed" and verdict["worst_ratio"] == 0.7  # the median (0.3) would have met it
    assert verdict["ratios"]["3"] == 0.7 and "s3: 0.70x" in verdict["text"]
    # without the slow seed every seed is within 0.5x: met
    del ratios[3]
    assert bp.judge(ratios, {"outcome": "wins"}, "tune")["target"] == "met"
    # minimising (a loss): reaching means at or below the target
    low = [{"seed": 0, "curve": [[5.0, 0.5, 0.40], [50.0, 0.3, 0.29]]}]
    assert bp.seed_ratios(low, target=0.30, peer_budget=100.0, maximize=False) == {0: 0.5}
    assert bp.seed_ratios(low, target=0.20, peer_budget=100.0, maximize=False) == {0: None}


def test_summary_reports_per_seed_ratios_of_a_round(tmp_path: Path) -> None:
    for s in range(3):
        _run(tmp_path, "ours", s, [(10.0 + 30 * s, 0.90, 0.90)])  # reaches tune's final at 10, 40, 70 s
        _run(tmp_path, "tune", s, [(90.0, 0.85, 0.85)])
    doc = bp.summary("toy", tmp_path, results=tmp_path / "results", plot=False, round_name="r1")
    ours = next(r for r in doc["table"] if r["contender"] == "ours")
    assert ours["time_to_tune_final_over_its_budget_per_seed"] == {"0": 0.1, "1": 0.4, "2": 0.7}
    assert ours["time_to_tune_final_over_its_budget"] == 0.7
    assert doc["targets"]["tune"]["target"] == "missed" and doc["round"] == "r1"
    assert (tmp_path / "results" / "peers-toy-r1.json").exists()


def test_a_round_is_judged_against_another_rounds_peers_of_the_same_spec_and_budget(tmp_path: Path) -> None:
    # ours run again in round r2; the peers it lacks come from round r1 (same spec, same budget); r1's own "ours"
    # records are never mixed in
    r1, r2 = tmp_path / "r1", tmp_path / "r2"
    for s in range(5):
        _run(r1, "ours", s, [(10.0, 0.99, 0.99)])
        _run(r1, "tune", s, [(50.0, 0.85, 0.85 + s / 1000)])
        _run(r2, "ours", s, [(20.0, 0.90, 0.90 + s / 1000)])
    doc = bp.summary("toy", r2, results=tmp_path / "results", plot=False, round_name="r2", peers_from=("r1", r1))
    assert doc["peers_from"] == "r1" and doc["final_verdicts"]["tune"]["outcome"] == "wins"
    assert [r["final"][2] for r in doc["runs"]["ours"]] == [0.9 + s / 1000 for s in range(5)]
    assert (tmp_path / "results" / "peers-toy-r2-vs-r1.json").exists()
    _run(r1, "optuna", 0, [(50.0, 0.85, 0.85)], budget=200.0)  # another budget: refused, naming the record
    with pytest.raises(SystemExit, match="optuna-s0.json ran another study spec or budget"):
        bp.summary("toy", r2, results=tmp_path / "results", plot=False, round_name="r2", peers_from=("r1", r1))
    with pytest.raises(SystemExit, match="no records of optuna, random, tune"):
        bp.summary("toy", r2, results=tmp_path / "results", plot=False, round_name="r2",
                   peers_from=("r3", tmp_path / "r3"))


def test_a_round_and_a_spec_change_are_never_reused(tmp_path: Path) -> None:
    records, results, work = bp._places("flights", "issue30", shrunk=False)
    assert records.parts[-4:] == ("results", "peers", "flights", "issue30") and work.parts[-3:] == (
        "peers", "flights", "issue30")
    legacy = bp._places("flights", "issue11", shrunk=False)[0]
    assert legacy.parts[-3:] == ("results", "peers", "flights")  # issue 11's records, where BENCHMARKS.md cites them
    with pytest.raises(SystemExit) as exc:  # never run into them
        bp.main(["quickstart", "--round", "issue11", "--budget-s", "5"])
    assert exc.value.code == 2
    shrunk = bp._places("quickstart", "r", shrunk=True)
    assert all("shrunk" in p.parts for p in shrunk)
    base = bp._spec("quickstart", {})
    assert bp.fingerprint(base) == bp.fingerprint(bp._spec("quickstart", {}))
    assert bp.fingerprint(base) != bp.fingerprint(bp._spec("quickstart", {"train.epochs": 1}))
    # a field added after a round began counts only away from the value that behaves as before it existed
    assert base.train.keep_epoch == "best" and "keep_epoch" in base.to_toml_dict()["train"]
    before = base.to_toml_dict()
    before["train"].pop("keep_epoch")
    import hashlib
    import json

    assert bp.fingerprint(base) == hashlib.sha256(json.dumps(before, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert bp.fingerprint(base) != bp.fingerprint(bp._spec("quickstart", {"train.keep_epoch": "last"}))
    config = bp.run_config("ours", 0, 60.0, {}, bp.fingerprint(base))
    path = tmp_path / "ours-s0.json"
    _results.save_run(path, {"config": config})
    assert _results.load_run(path, config) is not None
    assert _results.load_run(path, {**config, "spec_fingerprint": "other"}) is None
    assert _results.load_run(path, {**config, "budget_s": 600.0}) is None


def test_all_rows_lifts_max_rows_and_a_bad_round_is_refused() -> None:
    assert bp.data_overrides("quickstart", all_rows=True, data_root=None) == {"data.max_rows": bp.ALL_ROWS}
    assert bp.data_overrides("quickstart", all_rows=False, data_root=None) == {}
    with pytest.raises(SystemExit) as exc:
        bp.main(["quickstart", "--round", "../x", "--summary"])
    assert exc.value.code == 2


def test_the_flights_file_is_read_from_the_data_root(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:  # no such file under the root: exit 2, naming it
        bp.data_overrides("flights", all_rows=True, data_root=str(tmp_path))
    assert exc.value.code == 2
    (tmp_path / "nycflights13").mkdir()
    (tmp_path / "nycflights13" / "flights.parquet").write_bytes(b"")
    out = bp.data_overrides("flights", all_rows=True, data_root=str(tmp_path))
    assert out == {"data": str((tmp_path / "nycflights13" / "flights.parquet").resolve()),
                   "data.max_rows": bp.ALL_ROWS}


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


def test_new_rounds_seed_a_trial_from_the_run_seed_and_old_rounds_keep_their_configs(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    import peers_objective as po

    # the rounds measured with trial n seeded n keep that rule, and their saved configs still match
    assert bp.trial_seed_rule("issue30-r2") == "number" and bp.trial_seed_rule("issue30") == "number"
    assert bp.trial_seed_rule("issue30-p2") == "run"
    old = bp.run_config("ours", 1, 900.0, {}, "fp")
    assert old == {"contender": "ours", "seed": 1, "budget_s": 900.0, "overrides": {}, "spec_fingerprint": "fp"}
    new = bp.run_config("ours", 1, 900.0, {}, "fp", "run")
    assert new == {**old, "trial_seed": "run"}
    path = tmp_path / "ours-s1.json"
    _results.save_run(path, {"config": old})
    assert _results.load_run(path, new) is None  # a record of the old rule is not reused by a new round

    # the run's process sets the rule for the training function (its workers inherit the environment)
    monkeypatch.setenv("SPARSEARCH_PEERS_RUN_SEED", "")  # restored (unset) after the test, even if it fails
    bp.use_trial_seed_rule(new, 3)
    on_seed_3 = po.trial_seed(0)
    assert po.trial_seed(7) == 3 * 100_003 + 7
    bp.use_trial_seed_rule(new, 4)
    assert po.trial_seed(0) == 4 * 100_003 != on_seed_3  # trial 0 of another seed trains from other weights
    bp.use_trial_seed_rule(old, 4)
    assert "SPARSEARCH_PEERS_RUN_SEED" not in os.environ and po.trial_seed(7) == 7


def test_a_record_counts_the_trials_started_and_pruned_not_only_the_completed() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()

    def objective(trial: optuna.Trial) -> float:
        if trial.number % 3 == 0:
            raise optuna.TrialPruned()
        return float(trial.number)

    study.optimize(objective, n_trials=7)
    assert bp._trial_counts(study.trials) == {"started": 7, "completed": 4, "pruned": 3}
    assert bp._trial_counts([]) == {"started": 0, "completed": 0, "pruned": 0}
