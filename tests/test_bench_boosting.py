"""The pure helpers of bench/bench_boosting.py: the peers' frame (categorical levels from the training rows only),
the codes HistGradientBoosting and LightGBM's booster read, and the paired summary. Fast: nothing here runs a
study or fits a model."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_boosting as bb  # noqa: E402


def _spec() -> SimpleNamespace:
    return SimpleNamespace(data=SimpleNamespace(target="late", features=None, exclude=["year"]))


def test_peer_frame_takes_levels_from_training_rows_only() -> None:
    df = pl.DataFrame({"carrier": ["AA", "UA", "AA", "ZZ", None], "distance": [100, 200, 300, 400, 500],
                       "year": [2013] * 5, "late": [0, 1, 0, 1, 1]})
    x, y, cats, nums = bb.peer_frame(df, _spec(), train=np.array([0, 1, 2]))
    assert cats == ["carrier"] and nums == ["distance"] and list(x.columns) == ["carrier", "distance"]
    assert list(x["carrier"].cat.categories) == ["AA", "UA"]  # "ZZ" occurs only outside the training rows
    assert x["carrier"].isna().tolist() == [False, False, False, True, True]
    assert y.tolist() == [0, 1, 0, 1, 1]
    codes = bb.as_codes(x)
    assert codes[:3, 0].tolist() == [0.0, 1.0, 0.0] and np.isnan(codes[3:, 0]).all()
    assert codes[:, 1].tolist() == [100.0, 200.0, 300.0, 400.0, 500.0]  # numbers stay numbers


def _row(seed: int, ours: float, peer: float, sparsity: float = 0.9) -> dict:
    lat = {"ours_csr_encoded_b1": 0.1 * (seed + 1), "lightgbm_predict_proba_b1": 1.0}
    return {"seed": seed, "ours": {"test_auc": ours, "realized_sparsity": sparsity, "wall_s": 100.0},
            "hgb": {"test_auc": peer, "fit_s": 1.0}, "lightgbm": {"test_auc": peer, "fit_s": 1.0},
            "lightgbm_tuned": {"test_auc": peer + 0.1, "n_trials": 3}, "latency_ms_per_row": lat,
            "misses": [] if sparsity >= 0.8 else ["realised sparsity below 0.8"]}


def test_summary_is_paired_by_seed_and_keeps_misses() -> None:
    rows = [_row(s, 0.76 + s / 1000, 0.75 + s / 1000, sparsity=0.7 if s == 2 else 0.9) for s in range(5)]
    out = bb.summarise(rows)
    v = out["verdicts_test_auc"]
    assert v["hgb"]["outcome"] == "wins" and v["hgb"]["paired"] and v["hgb"]["p_value"] == pytest.approx(1 / 32)
    assert v["lightgbm_tuned"]["outcome"] == "loses"
    assert out["misses"] == {2: ["realised sparsity below 0.8"]}
    assert out["latency_ms_per_row_median_over_seeds"]["ours_csr_encoded_b1"] == pytest.approx(0.3)


def test_summary_of_one_seed_decides_nothing() -> None:
    out = bb.summarise([_row(0, 0.70, 0.75)])
    assert {v["outcome"] for v in out["verdicts_test_auc"].values()} == {"not decided"}
    assert "-0.0500" in out["verdicts_test_auc"]["hgb"]["text"]


def test_seeds_are_checked_when_parsed(capsys) -> None:
    with pytest.raises(SystemExit) as err:
        bb.main(["--seeds", "1", "1"])
    assert err.value.code == 2 and "each seed once" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        bb.main(["--seeds", "-1"])
    assert err.value.code == 2 and "a seed must be 0 or more" in capsys.readouterr().err
