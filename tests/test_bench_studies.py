"""The pure helpers of bench/bench_studies.py: how a claim is worded, when a run counts as full size, the
multi-objective decision value. Fast: nothing here runs a study."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_studies as bs  # noqa: E402

from sparsearch.search.compare import verdict  # noqa: E402

FIVE_HIGH = [0.90, 0.91, 0.92, 0.93, 0.94]
FIVE_LOW = [0.80, 0.81, 0.82, 0.83, 0.84]
MIXED = [0.85, 0.95, 0.80, 0.92, 0.83]


def test_claim_shown_only_on_a_win_at_half_the_time() -> None:
    v = verdict(FIVE_HIGH, FIVE_LOW, maximize=True, names=("top 10", "all"))
    claim = bs.prefilter_claim("top 10", v, 0.4, "test_auc")
    assert claim["quality_outcome"] == "wins" and claim["wall_ratio_le_half"]
    assert claim["claim"] == "shown"
    slow = bs.prefilter_claim("top 10", v, 0.51, "test_auc")  # a win at more than half the time is not the claim
    assert slow["claim"] == "not held" and "0.51x" in slow["text"] and not slow["wall_ratio_le_half"]


def test_no_difference_is_not_called_the_same() -> None:
    v = verdict(MIXED, FIVE_LOW[::-1], maximize=True, names=("top 10", "all"))
    assert v["outcome"] == "no difference shown"
    claim = bs.prefilter_claim("top 10", v, 0.3, "test_auc")
    assert claim["claim"] == "not shown, not contradicted"
    assert "not proof of the same" in claim["text"]


def test_a_loss_is_not_held_whatever_the_time() -> None:
    v = verdict(FIVE_LOW, FIVE_HIGH, maximize=True, names=("top 10", "all"))
    assert v["outcome"] == "loses"
    claim = bs.prefilter_claim("top 10", v, 0.1, "test_auc")
    assert claim["claim"] == "not held" and "worse test metric" in claim["text"]


def test_three_seeds_cannot_win() -> None:
    # the old rule called this "held"; with 3 seeds a side the smallest one-sided p is 0.05, never < 0.05
    v = verdict([0.93, 0.94, 0.95], [0.80, 0.81, 0.82], maximize=True, names=("top 10", "all"))
    assert v["outcome"] == "no difference shown"
    assert bs.prefilter_claim("top 10", v, 0.36, "test_auc")["claim"] != "shown"


def test_arms_of_a_seed_are_paired_through_their_split_digest() -> None:
    from sparsearch.errors import DataError
    from sparsearch.search.compare import decide

    def runs(tests, arm, digest="c7c5"):
        return [{"seed": s, "study": f"flights-{arm}-s{s}", "test": t, "split": {"digest": digest}}
                for s, t in enumerate(tests)]

    top = bs.by_seed(runs(FIVE_HIGH, "top9"))
    assert top[2] == {"study_name": "flights-top9-s2", "test": 0.92, "split_digest": "c7c5"}
    v = decide(top, bs.by_seed(runs(FIVE_LOW, "all")), names=("top 9", "all"), maximize=True)
    assert v["paired"] and v["p_value"] == pytest.approx(1 / 32)
    missing = runs(FIVE_LOW, "all")
    missing[4]["test"] = None
    with pytest.raises(DataError, match="run 'flights-all-s4'"):
        decide(top, bs.by_seed(missing), names=("top 9", "all"), maximize=True)


def test_geometric_mean_of_ratios() -> None:
    assert bs.geo_mean([0.25, 1.0]) == pytest.approx(0.5)
    assert bs.geo_mean([2.0, 0.5]) == pytest.approx(1.0)  # symmetric: a ratio and its inverse cancel


def test_any_override_but_the_data_path_is_not_full_size() -> None:
    assert bs.is_full_size({})
    assert bs.is_full_size({"data.path": "/elsewhere/flights.parquet"})
    for shrink in ({"n_trials": 2}, {"data.params.n_rows": 5000}, {"train.epochs": 1}, {"pruner": "none"},
                   {"data.path": "x.parquet", "data.max_rows": 5000}):
        assert not bs.is_full_size(shrink), shrink


def test_parse_set() -> None:
    assert bs.parse_set(["n_trials=2", "data.params.n_rows=5_000", "space.methods=[\"dense\"]", "pruner=none"]) == {
        "n_trials": 2, "data.params.n_rows": 5000, "space.methods": ["dense"], "pruner": "none"}
    with pytest.raises(SystemExit, match="expected KEY=VALUE"):
        bs.parse_set(["n_trials"])


def test_summarize_arm_uses_the_test_value() -> None:
    runs = [{"seed": s, "test": t, "best_values": [v], "wall_s": w, "n_complete": 2, "n_pruned": 1, "n_failed": 0,
             "n_features": 10, "timings": {"rank_s": 1.0}}
            for s, t, v, w in ((0, 0.70, 0.90, 10.0), (1, 0.80, 0.95, 30.0))]
    s = bs.summarize_arm(runs)
    assert s["mean_test"] == pytest.approx(0.75) and s["mean_val"] == pytest.approx(0.925)
    assert s["min_test"] == 0.70 and s["max_wall_s"] == 30.0 and s["n_pruned"] == 2 and s["n_features"] == [10]


def test_test_hypervolume_rewards_a_better_test_front() -> None:
    directions = ["maximize", "minimize"]
    # both runs saw the same validation values (so the same reference point); run a's Pareto trials do better on
    # the test rows
    a = {"values": [[0.8, 100.0], [0.7, 10.0]], "test_vectors": [[0.8, 100.0], [0.7, 10.0]]}
    b = {"values": [[0.8, 100.0], [0.7, 10.0]], "test_vectors": [[0.75, 100.0], [0.65, 10.0]]}
    reference, (hv_a, hv_b) = bs.pareto_test_hypervolumes([a, b], directions)
    assert reference[0] == pytest.approx(-0.7 + 0.07 + 1e-9) and reference[1] == pytest.approx(110.0 + 1e-9)
    assert hv_a > hv_b > 0
    empty = {"values": [[0.8, 100.0]], "test_vectors": []}
    assert bs.pareto_test_hypervolumes([a, empty], directions)[1][1] == 0.0
