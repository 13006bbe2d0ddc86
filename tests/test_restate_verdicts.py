"""bench/restate_verdicts.py re-decides the committed raw results (bench/results/) under the paired rule: the
figures BENCHMARKS.md quotes for issue 30. Fast: it reads JSON only."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import restate_verdicts as rv  # noqa: E402


def test_restated_verdicts_follow_the_design_of_each_benchmark() -> None:
    rows = {(r["file"], r["a"], r["b"]): r for r in rv.comparisons()}
    assert len(rows) == 14
    fashion = rows[("studies-samplers-fashion_cnn-single.json", "tpe", "random")]
    # the hand-computed value: differences 0, +.0089, +.0046, +.0011, 0 -> 4 of 32 sign flips
    assert fashion["old"]["outcome"] == "wins" and fashion["new"]["outcome"] == "no difference shown"
    assert fashion["new"]["p_value"] == pytest.approx(4 / 32) and fashion["new"]["paired"]
    same = rows[("peers-fashion_cnn.json", "ours", "random")]["new"]  # the same trials on every seed
    assert same["ci95"] == [0.0, 0.0] and same["outcome"] == "no difference shown"
    optuna = rows[("peers-fashion_cnn.json", "ours", "optuna")]["new"]
    assert not optuna["paired"] and "252 arrangements" in optuna["test"]
    assert all(r["new"]["outcome"] != "loses" for r in rows.values() if r["a"] == "ours")


def test_the_markdown_table_marks_changed_verdicts(capsys) -> None:
    assert rv.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("| **yes** |") == 3 and "was (issue 11 rule)" in out
