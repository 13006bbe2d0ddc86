"""The user's inputs of bench/bench_userlevel.py: built from the raw rows, fitted on the training rows only. Fast:
nothing here runs a search."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_userlevel as bu  # noqa: E402


def test_user_inputs_are_fitted_on_training_rows_only() -> None:
    n = 20
    df = pl.DataFrame({"city": ["a"] * 10 + ["b"] * 6 + ["rare"] + ["a", "b", "unseen"],
                       "x": [float(i) for i in range(n)], "y": [i % 2 for i in range(n)]})
    rows = {"train": np.arange(17), "val": np.array([17, 18]), "test": np.array([19])}
    data = bu.UserData(df, "y", ["city", "x"], rows)
    assert data.cardinalities == [3]  # a and b (>= MIN_FREQUENCY on training rows) plus the unknown code
    train_codes = data.parts["train"]["cat"][:, 0]
    assert set(train_codes[:16]) == {1, 2} and train_codes[16] == 0  # "rare" (once) shares the unknown code
    assert data.parts["test"]["cat"][0, 0] == 0  # a category never seen in training: unknown
    assert data.parts["val"]["cat"][:, 0].tolist() == [train_codes[0], train_codes[10]]
    x_train = data.parts["train"]["num"][:, 0]
    assert abs(float(x_train.mean())) < 1e-6  # scaled with the training rows' mean, not all rows'
    assert data.parts["test"]["num"][0, 0] > x_train.max()


def test_the_user_mlp_trains_and_scores() -> None:
    rng = np.random.default_rng(0)
    n = 400
    city = rng.choice(["a", "b", "c"], n)
    df = pl.DataFrame({"city": city, "x": rng.normal(size=n), "y": (city == "a").astype(int)})
    rows = {"train": np.arange(300), "val": np.arange(300, 350), "test": np.arange(350, 400)}
    data = bu.UserData(df, "y", ["city", "x"], rows)
    params = {"layers": [16], "dropout": 0.2, "optimizer": "Adam", "lr": 0.05, "emb_dim": 4, "batch_size": 64}
    seen = []
    model, val = bu.train_user_mlp(data, params, 3, seed=0, metric="auc", report=lambda e, v: seen.append(e))
    assert seen == [0, 1, 2] and val > 0.95  # the label is the category: learnable
    assert bu.score(model, data, "test", "auc") > 0.95


def test_integer_columns_are_categories_and_float_columns_numbers() -> None:
    # a click log's IDs are integers: scaled as numbers they would mean nothing, so the user embeds them
    ids = [7] * 8 + [123_456] * 8 + [7, 123_456]
    df = pl.DataFrame({"user_id": pl.Series(ids, dtype=pl.Int32), "price": [float(i) for i in range(18)],
                       "flag": [True, False] * 9, "y": [i % 2 for i in range(18)]})
    rows = {"train": np.arange(16), "val": np.array([16]), "test": np.array([17])}
    data = bu.UserData(df, "y", ["user_id", "price", "flag"], rows)
    assert bu.USER_INPUTS == "floats-numeric"
    assert data.cardinalities == [3, 3]  # user_id and flag: two categories each plus the unknown code
    assert data.n_numeric == 1 and data.parts["train"]["num"].shape == (16, 1)  # price only
    codes = data.parts["train"]["cat"][:, 0]
    assert len(set(codes[:8].tolist())) == 1 and codes[0] != codes[8]  # one code per ID, not a scaled number


def test_a_peer_run_before_any_sparsearch_run_ends_without_a_summary(monkeypatch, tmp_path, capsys) -> None:
    """A round's first finished run may be a peer's: its record is kept and the script ends well (exit 0), saying
    the verdicts wait for a sparsearch run. ``--summary`` alone on such a round still refuses."""
    ran: list[list[str]] = []

    def fake_run_seeds(tag, script, args, contenders, work, records, *rest, **kw):
        ran.append(contenders)
        records.mkdir(parents=True)
        (records / "optuna-s0.json").write_text('{"contender": "optuna", "seed": 0, "test": 0.7, "maximize": true}')

    monkeypatch.setattr(bu.bench_peers, "run_seeds", fake_run_seeds)
    monkeypatch.setattr(bu, "OUT", tmp_path)
    assert bu.main(["--smoke", "--contenders", "optuna"]) == 0
    assert ran == [["optuna"]]
    assert "summary waits for one" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no finished sparsearch runs"):
        bu.main(["--smoke", "--summary"])
