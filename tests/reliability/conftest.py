"""Fixtures of the reliability suite: a corpus of bad data files, built once per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

N_ROWS = 200


def _base(rng: np.random.Generator, n: int = N_ROWS) -> pl.DataFrame:
    return pl.DataFrame({"a": rng.integers(0, 5, n), "b": rng.normal(size=n), "y": rng.integers(0, 2, n)})


@pytest.fixture(scope="session")
def bad_data(tmp_path_factory) -> Path:
    """A folder of messy data files; each name says what is wrong with it."""
    d = tmp_path_factory.mktemp("bad-data")
    rng = np.random.default_rng(0)
    base = _base(rng)
    base.write_parquet(d / "good.parquet")
    base.write_csv(d / "good.csv")
    (d / "empty.csv").write_bytes(b"")
    (d / "empty.parquet").write_bytes(b"")
    (d / "header_only.csv").write_text("a,b,y\n")
    base.head(0).write_parquet(d / "header_only.parquet")
    base.drop("y").write_csv(d / "no_target.csv")
    base.with_columns(y=pl.lit(1)).write_csv(d / "single_class.csv")
    base.with_columns(y=pl.lit(1)).write_parquet(d / "single_class.parquet")
    base.with_columns(y=pl.lit(None, dtype=pl.Int64)).write_csv(d / "null_target.csv")
    base.with_columns(y=pl.lit(float("nan"))).write_parquet(d / "nan_target.parquet")
    rows = "\n".join(f"caf\xe9{i % 3},{i},{i % 2}" for i in range(N_ROWS))
    (d / "latin1_values.csv").write_bytes(("a,b,y\n" + rows).encode("latin-1"))
    (d / "latin1_header.csv").write_bytes(("\xe9t\xe9,b,y\n" + rows).encode("latin-1"))
    (d / "duplicate_columns.csv").write_text("a,a,y\n" + "\n".join(f"{i % 3},{i},{i % 2}" for i in range(N_ROWS)))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table([pa.array([1, 2] * 50), pa.array([3, 4] * 50), pa.array([0, 1] * 50)],
                            names=["a", "a", "y"]), d / "duplicate_columns.parquet")
    raw = (d / "good.parquet").read_bytes()
    (d / "truncated.parquet").write_bytes(raw[: len(raw) // 2])
    (d / "not_parquet.parquet").write_text("a,b,y\n1,2,0\n")
    # a column whose type changes after polars' 10,000-row schema inference window
    late = [str(i % 7) for i in range(12_000)] + ["seven"] * 100
    pl.DataFrame({"a": late, "y": [i % 2 for i in range(len(late))]}).write_csv(d / "mixed_types_late.csv")
    # data that must work (or fail clearly): all-null feature, mixed types, NaN/inf numerics
    base.with_columns(a=pl.lit(None, dtype=pl.Int64)).write_csv(d / "null_feature.csv")
    (d / "mixed_types.csv").write_text(
        "a,b,y\n" + "\n".join(f"{i if i < 150 else 'x' + str(i)},{i},{i % 2}" for i in range(N_ROWS)))
    specials = [float("nan"), float("inf"), -float("inf"), 1.5]
    base.with_columns(b=pl.Series([specials[i % 4] for i in range(N_ROWS)])).write_parquet(d / "nan_inf.parquet")
    (d / "nan_inf.csv").write_text(
        "a,b,y\n" + "\n".join(f"{i % 3},{['nan', 'inf', '-inf', '2.5'][i % 4]},{i % 2}" for i in range(N_ROWS)))
    return d


@pytest.fixture(scope="session")
def million_distinct(tmp_path_factory) -> Path:
    """1,000,000 rows whose ``id`` column has 1,000,000 distinct strings (plus a weak real signal)."""
    d = tmp_path_factory.mktemp("million")
    n = 1_000_000
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, n)
    y = (rng.random(n) < 0.2 + 0.1 * a).astype(np.int8)
    ids = pl.int_range(0, n, eager=True).cast(pl.String)
    pl.DataFrame({"id": "u" + ids, "a": a, "y": y}).write_parquet(d / "million.parquet")
    return d / "million.parquet"
