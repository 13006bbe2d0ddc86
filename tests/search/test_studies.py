"""The bundled studies: each loads, says how to run itself, and fails or derives its data as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from sparsearch.errors import DataError, SpecError
from sparsearch.search.data import prepare_data
from sparsearch.search.spec import bundled_studies, load_study

ROOT = Path(__file__).resolve().parents[2]
LEAKS = ("dep_time", "dep_delay", "arr_time", "arr_delay", "air_time")


def test_the_four_studies_are_bundled() -> None:
    assert {"quickstart", "clicklog_large", "fashion_cnn", "flights"} <= set(bundled_studies())


@pytest.mark.parametrize("name", sorted(bundled_studies()))
def test_every_bundled_study_loads_and_names_its_command(name: str) -> None:
    # the study for your own table has no data source of its own: it takes --data and --target
    spec = load_study(name, **({"data": "table.parquet", "target": "y"} if name == "table" else {}))
    assert spec.study.name == name
    header = bundled_studies()[name].read_text(encoding="utf-8").split("\n[")[0]
    assert f"sparsearch run {name}" in header


@pytest.mark.parametrize("name", ["quickstart", "flights", "clicklog_large", "table"])
def test_bundled_tabular_studies_search_the_new_model_space(name: str) -> None:
    space = load_study(name, **({"data": "table.parquet", "target": "y"} if name == "table" else {})).space
    assert set(space.numeric_encoding) == {"standard", "quantile", "ple", "plr"}
    assert space.ensemble_size[0] == 1 and space.ensemble_size[1] > 1  # a single network stays a choice
    assert space.cross_layers[0] == 0 and space.cross_layers[1] > 0
    assert space.fm_dim[0] == 0 and space.fm_dim[1] > 0


def test_large_click_log_is_large_and_mostly_noise() -> None:
    params = load_study("clicklog_large").data.params
    assert params["n_rows"] >= 1_000_000
    assert params["n_noise"] >= 100 and params["n_noise"] > 10 * (params["n_informative"] + params["n_redundant"])
    assert params["max_cardinality"] >= 100_000


def test_fashion_study_fails_with_the_install_hint_when_files_are_missing(tmp_path: Path) -> None:
    spec = load_study("fashion_cnn", **{"data.params.path": str(tmp_path / "nowhere")})
    assert spec.space.model == "cnn"
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        prepare_data(spec, tmp_path)


def _fake_flights(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    arr_delay = rng.normal(5, 30, n).round()
    arr_delay_list = [None if i % 10 == 0 else float(v) for i, v in enumerate(arr_delay)]  # cancelled flights
    return pl.DataFrame({
        "year": [2013] * n, "month": rng.integers(1, 13, n), "day": rng.integers(1, 29, n),
        "dep_time": rng.integers(500, 2300, n), "sched_dep_time": rng.integers(500, 2300, n),
        "dep_delay": rng.normal(0, 20, n), "arr_time": rng.integers(0, 2400, n),
        "sched_arr_time": rng.integers(0, 2400, n), "arr_delay": arr_delay_list,
        "carrier": rng.choice(["UA", "AA", "B6", "DL"], n), "flight": rng.integers(1, 500, n),
        "tailnum": rng.choice([f"N{i}" for i in range(300)], n), "origin": rng.choice(["EWR", "JFK", "LGA"], n),
        "dest": rng.choice(["ATL", "ORD", "LAX", "BOS", "MIA"], n), "air_time": rng.normal(150, 40, n),
        "distance": rng.integers(100, 2500, n), "hour": rng.integers(5, 23, n), "minute": rng.integers(0, 60, n),
        "time_hour": [f"2013-01-01 {h:02d}:00:00" for h in rng.integers(5, 23, n)],
    })


def test_flights_sql_derives_the_target_and_drops_leaks(tmp_path: Path) -> None:
    raw = _fake_flights(2_000)
    path = tmp_path / "flights.parquet"
    raw.write_parquet(path)
    spec = load_study("flights", data=str(path), **{"data.prefilter": "none", "data.top_k": 100})
    prepared = prepare_data(spec, tmp_path / "results")
    known = raw.filter(pl.col("arr_delay").is_not_null())
    assert prepared.n_rows == known.height == 1_800
    features = set(prepared.candidates)
    assert not features & set(LEAKS), "columns known only after departure leak the target"
    assert {"time_hour", "year", "late"}.isdisjoint(features)
    assert {"carrier", "dest", "tailnum", "hour"} <= features
    late = np.concatenate([prepared.train.y, prepared.val.y, prepared.test.y])
    assert set(np.unique(late)) == {0, 1}
    assert late.sum() == (known["arr_delay"] > 15).sum()


def test_flights_default_path_is_the_shared_copy_from_the_repository_root() -> None:
    spec = load_study("flights")
    assert spec.data.path == "../shared/data/nycflights13/flights.parquet"
    shared = ROOT / spec.data.path
    if not shared.exists():
        pytest.skip("the shared NYC flights copy is not present on this machine")
    names = pl.read_parquet_schema(shared)
    assert {"arr_delay", "tailnum", "dest"} <= set(names)


def test_the_own_table_study_needs_a_data_source() -> None:
    with pytest.raises(SpecError, match="exactly one of 'generator' and 'path'"):
        load_study("table")
