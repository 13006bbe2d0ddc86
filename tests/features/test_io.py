from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from sparsearch.errors import DataError
from sparsearch.features import data_fingerprint, iter_batches, read_table, validate_target


@pytest.fixture()
def frame():
    rng = np.random.default_rng(0)
    return pl.DataFrame({"a": rng.integers(0, 5, 100), "b": [f"s{i % 7}" for i in range(100)], "y": rng.integers(0, 2, 100)})


def test_read_table_formats_and_batches(tmp_path, frame):
    frame.write_parquet(tmp_path / "d.parquet")
    frame.write_csv(tmp_path / "d.csv")
    frame.write_csv(tmp_path / "d.tsv", separator="\t")
    for name in ["d.parquet", "d.csv", "d.tsv"]:
        back = read_table(tmp_path / name)
        assert back.shape == frame.shape
        assert back["a"].to_list() == frame["a"].to_list()
        assert back["b"].to_list() == frame["b"].to_list()
    sizes = [b.height for b in iter_batches(tmp_path / "d.parquet", batch_size=30)]
    assert sizes == [30, 30, 30, 10]
    assert read_table(tmp_path / "d.csv", columns=["b"]).columns == ["b"]


def test_directory_and_glob(tmp_path, frame):
    (tmp_path / "parts").mkdir()
    frame.head(40).write_parquet(tmp_path / "parts" / "p0.parquet")
    frame.tail(60).write_parquet(tmp_path / "parts" / "p1.parquet")
    assert read_table(tmp_path / "parts").height == 100
    assert read_table(str(tmp_path / "parts" / "*.parquet")).height == 100
    assert read_table(tmp_path / "parts")["a"].to_list() == frame["a"].to_list()


def _w(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda p: p / "nope.parquet", "does not exist"),
        (lambda p: str(p / "*.nothing"), "matched no files"),
        (lambda p: _w(p / "e.csv", b""), "empty"),
        (lambda p: _w(p / "h.csv", "a,b,y\n"), "header but no rows"),
        (lambda p: _w(p / "x.xlsx", "a"), "unsupported file extension"),
        (lambda p: _w(p / "d.csv", "a,a,y\n1,2,3\n"), "duplicate column names"),
        (lambda p: _w(p / "u.csv", b"a,y\n\xff\xfe,1\n"), "UTF-8"),
        (lambda p: _w(p / "u8.csv", b"\xffa,y\n1,1\n"), "UTF-8"),
    ],
)
def test_read_errors_are_one_line(tmp_path, make, pattern):
    path = make(tmp_path)
    with pytest.raises(DataError, match=pattern) as info:
        read_table(path)
    assert "\n" not in str(info.value)


def test_truncated_parquet(tmp_path, frame):
    frame.write_parquet(tmp_path / "ok.parquet")
    raw = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "bad.parquet").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_table(tmp_path / "bad.parquet")


def test_unknown_column(frame):
    with pytest.raises(DataError, match="did you mean 'b'"):
        list(iter_batches(frame, columns=["bb"]))


def test_validate_target(frame):
    validate_target(frame, "y")
    with pytest.raises(DataError, match="did you mean 'yy'"):
        validate_target(frame.rename({"y": "yy"}), "y")
    with pytest.raises(DataError, match="entirely null"):
        validate_target(frame.with_columns(pl.lit(None, dtype=pl.Int64).alias("y")), "y")
    with pytest.raises(DataError, match="one class"):
        validate_target(frame.with_columns(pl.lit(1).alias("y")), "y")


def test_fingerprint(tmp_path, frame):
    fp = data_fingerprint(frame)
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert fp == data_fingerprint(frame.clone())
    assert fp == data_fingerprint(frame.to_pandas())
    changed = frame.with_columns(pl.when(pl.int_range(100) == 57).then(4).otherwise(pl.col("a")).alias("a"))
    assert changed["a"].to_list() != frame["a"].to_list()
    assert fp != data_fingerprint(changed)
    assert fp != data_fingerprint(frame.rename({"a": "a2"}))
    frame.write_parquet(tmp_path / "f.parquet")
    f1 = data_fingerprint(tmp_path / "f.parquet")
    assert f1 == data_fingerprint(tmp_path / "f.parquet")
    (tmp_path / "g").mkdir()
    frame.write_parquet(tmp_path / "g" / "f.parquet")
    assert data_fingerprint(tmp_path / "g" / "f.parquet") == f1  # same content, other place
    changed.write_parquet(tmp_path / "g" / "f.parquet")
    assert data_fingerprint(tmp_path / "g" / "f.parquet") != f1
    arr = np.arange(12).reshape(4, 3)
    assert data_fingerprint(arr) != data_fingerprint(arr + 1)


def test_prefetch_keeps_order_and_raises_where_the_source_fails():
    from sparsearch.features._tables import prefetch

    assert list(prefetch(iter(range(7)))) == list(range(7))
    assert list(prefetch(iter([]))) == []

    def failing():
        yield 1
        yield 2
        raise DataError("parquet file 'x' is truncated or corrupt")

    got = []
    with pytest.raises(DataError, match="truncated"):
        for item in prefetch(failing()):
            got.append(item)
    assert got == [1, 2]
