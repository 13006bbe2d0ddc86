"""bench/_results.py, the one results writer of bench/: command results, per-run records that make a benchmark
resumable, and where the data sets are found. Fast: nothing here runs a benchmark."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import _results  # noqa: E402


def test_save_names_the_file_and_writes_the_header_first(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(_results.BENCH / "bench_crosses.py"), "--rows", "8000"])
    path = _results.save({"rows": 8000, "gain": 0.25}, key="crosses-8000x2seeds", results=tmp_path)
    assert path == tmp_path / "crosses-8000x2seeds.json"
    doc = json.loads(path.read_text())
    assert list(doc)[:3] == ["command", "finished_utc", "machine"]
    assert doc["command"] == "python bench/bench_crosses.py --rows 8000" and doc["gain"] == 0.25
    # without a key the command line names the file, as the committed files were named
    assert _results.save({"x": 1}, results=tmp_path).name == "crosses_--rows_8000.json"
    assert not list(tmp_path.glob("*.tmp"))


def test_a_document_keeps_its_own_command_and_passwords_are_hidden(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [str(_results.BENCH / "bench_load.py"), "--postgres", "postgresql://u:secret@127.0.0.1/db"])
    assert "secret" not in _results.command() and "u:***@" in _results.command()
    doc = json.loads(_results.save({"command": "mine"}, key="k", results=tmp_path).read_text())
    assert doc["command"] == "mine"


def test_big_results_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bytes; bench/results/ keeps files under"):
        _results.save({"data": "x" * (_results.MAX_BYTES + 1)}, key="big", results=tmp_path)
    assert not (tmp_path / "big.json").exists()


def test_a_finished_run_is_skipped_only_with_the_same_settings(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "ours-s0.json"
    assert _results.load_run(path) is None  # not run yet
    _results.save_run(path, {"config": {"seed": 0, "k": 3}, "test": 0.71})
    assert _results.load_run(path)["test"] == 0.71
    assert _results.load_run(path, {"seed": 0, "k": 3})["test"] == 0.71
    assert _results.load_run(path, {"seed": 0, "k": 4}) is None  # other settings: it runs again
    assert not list(path.parent.glob("*.tmp"))


def test_data_root_from_argument_then_environment_then_beside_the_repository(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(_results.DATA_ROOT_ENV, raising=False)
    assert _results.data_root() == _results.ROOT.parent / "shared" / "data"
    monkeypatch.setenv(_results.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert _results.data_root() == tmp_path / "env"
    assert _results.data_root(tmp_path / "arg") == tmp_path / "arg"


def test_a_missing_data_file_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "nycflights13").mkdir()
    (tmp_path / "nycflights13" / "flights.parquet").write_bytes(b"")
    assert _results.data_file(tmp_path, "nycflights13/flights.parquet").exists()
    with pytest.raises(SystemExit) as exc:
        _results.data_file(tmp_path / "nowhere", "nycflights13/flights.parquet")
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--data-root" in err and "nycflights13/flights.parquet" in err


def test_run_seeds_skips_saved_seeds_saves_each_new_one_at_once_and_sorts_by_seed(tmp_path: Path) -> None:
    runs = [(s, {"k": 2, "seed": s}, tmp_path / f"s{s}.json") for s in (2, 0, 1)]
    _results.save_run(runs[1][2], {"config": {"k": 2, "seed": 0}, "row": {"seed": 0, "v": "saved"}})
    _results.save_run(runs[2][2], {"config": {"k": 3, "seed": 1}, "row": {"seed": 1, "v": "stale"}})  # other settings
    ran = []

    def run_one(seed: int) -> dict:
        if ran:  # the seed run before this one is on disk already
            assert _results.load_run(tmp_path / f"s{ran[-1]}.json")["row"] == {"seed": ran[-1], "v": "new"}
        ran.append(seed)
        return {"seed": seed, "v": "new"}

    rows = _results.run_seeds("t", runs, run_one, local_ray=False)
    assert ran == [2, 1]  # seed 0 was done with the same settings; seed 1's record had others
    assert rows == [{"seed": 0, "v": "saved"}, {"seed": 1, "v": "new"}, {"seed": 2, "v": "new"}]
    assert _results.load_run(runs[2][2], {"k": 2, "seed": 1})["row"]["v"] == "new"


def test_run_seeds_with_force_runs_saved_seeds_again(tmp_path: Path) -> None:
    runs = [(s, {"seed": s}, tmp_path / f"s{s}.json") for s in (0, 1)]
    for seed, config, path in runs:
        _results.save_run(path, {"config": config, "row": {"seed": seed, "v": "saved"}})
    assert [r["v"] for r in _results.run_seeds("t", runs, lambda s: {"seed": s, "v": "new"}, local_ray=False)] == [
        "saved", "saved"]
    rows = _results.run_seeds("t", runs, lambda s: {"seed": s, "v": "new"}, local_ray=False, force=True)
    assert rows == [{"seed": 0, "v": "new"}, {"seed": 1, "v": "new"}]
    assert _results.load_run(runs[0][2], {"seed": 0})["row"]["v"] == "new"
