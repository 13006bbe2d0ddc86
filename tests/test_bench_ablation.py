"""The arms of bench/bench_ablation.py each turn exactly one ingredient off, and the summary pairs them with `all`
by seed. Fast: nothing here runs a search."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_ablation as ba  # noqa: E402

from sparsearch import load_study  # noqa: E402


def _spec(arm: str):
    return load_study(ba.study_source(arm), **ba.arm_overrides(arm))


@pytest.mark.parametrize("arm", [a for a in ba.ARMS if a not in ("all", "encoder-all-rows")])
def test_each_arm_changes_only_its_own_ingredient(arm: str) -> None:
    base, off = _spec("all").to_raw(), _spec(arm).to_raw()
    changed = {(section, key) for section in base for key in set(base[section]) | set(off.get(section, {}))
               if base[section].get(key) != off.get(section, {}).get(key)}
    expected = {"ordered-ints-off": {("data", "ordered_ints")}, "last-epoch": {("train", "keep_epoch")},
                "no-ensembles": {("space", "ensemble_size")}, "no-cross-layers": {("space", "cross_layers")},
                "no-fm": {("space", "fm_dim")}}.get(arm, {("space", "numeric_encoding")})
    assert changed == expected
    if arm.startswith("no-") and expected == {("space", "numeric_encoding")}:
        assert arm[3:] in base["space"]["numeric_encoding"] and arm[3:] not in off["space"]["numeric_encoding"]
    assert _spec("all").data.ordered_ints == 32 and _spec("ordered-ints-off").data.ordered_ints is None


def test_encoder_arm_fits_on_every_row_and_restores_the_encoder() -> None:
    from sparsearch.spaces.encoder import OOV_CODE, TabularEncoder

    df = pl.DataFrame({"city": ["a", "a", "b", "test-only"], "y": [0, 1, 0, 1]})
    train = np.array([0, 1, 2])
    seen: list[int] = []
    with ba._encoder_on_every_row(seen):
        leaky = TabularEncoder.fit(df, "y", rows=train)
    honest = TabularEncoder.fit(df, "y", rows=train)
    assert seen == [4]
    assert leaky.cardinalities[0] == honest.cardinalities[0] + 1  # "test-only" got its own code in the arm only
    assert honest.transform(df.tail(1))[0][0, 0] == OOV_CODE  # out of vocabulary once the wrapper is gone
    assert leaky.transform(df.tail(1))[0][0, 0] != OOV_CODE


def test_summary_pairs_each_arm_with_all_by_seed() -> None:
    rows = [{"arm": "all", "seed": s, "test_auc": 0.76 + s / 1000} for s in range(3)]
    rows += [{"arm": "no-fm", "seed": s, "test_auc": 0.75 + s / 1000} for s in (0, 2)]  # seed 1 not run yet
    out = ba.summarise(rows, ["all", "no-fm"])
    assert "verdict" not in out["all"]
    fm = out["no-fm"]
    assert fm["paired_seeds"] == [0, 2] and fm["verdict"]["paired"] is True and fm["verdict"]["n_a"] == 2
    assert fm["effect_all_minus_off"] == pytest.approx([0.01, 0.01])
    assert fm["verdict"]["outcome"] == "no difference shown"  # 2 pairs: the smallest one-sided p is 1/4


def test_unknown_arm_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        ba.main(["--arms", "all,no-such", "--data-root", "/nonexistent"])
    assert exc.value.code == 2
    assert "unknown arm 'no-such'; allowed: all, encoder-all-rows" in capsys.readouterr().err
