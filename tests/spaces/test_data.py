from __future__ import annotations

import os
import pickle

import numpy as np
import polars as pl
import pytest

from sparsearch.errors import DataError
from sparsearch.spaces import (
    IMAGE_DATASETS,
    ImageData,
    TabularData,
    encode_tabular,
    load_digits_data,
    load_fashion_mnist,
)
from sparsearch.spaces.encoder import MISSING_CODE, OOV_CODE


def test_encode_types_missing_and_codes():
    df = pl.DataFrame({
        "s": ["b", "a", None, "b", "c", "a"],
        "i": [3, 1, 1, None, 3, 7],
        "flag": [True, False, True, None, False, True],
        "f": [1.0, float("nan"), 3.0, float("inf"), 5.0, 2.0],
        "y": ["no", "yes", "no", "yes", "no", "yes"],
    })
    d = encode_tabular(df, "y")
    assert d.categorical_names == ("s", "i", "flag") and d.numeric_names == ("f", "f_missing")
    assert d.categorical.dtype == np.int32 and d.numeric.dtype == np.float32
    s = d.categorical[:, 0]
    assert s[2] == MISSING_CODE and s[0] == s[3] and s[1] == s[5] and len(set(s)) == 4
    assert (s[[0, 1, 3, 4, 5]] >= 2).all() and OOV_CODE not in s
    assert d.cardinalities[0] == 3 + 2 and d.cardinalities[1] == 3 + 2 and d.cardinalities[2] == 2 + 2
    assert d.categorical[3, 1] == MISSING_CODE and d.categorical[3, 2] == MISSING_CODE
    assert np.isfinite(d.numeric).all() and d.numeric[1, 0] == pytest.approx(2.5) and d.numeric[3, 0] == 2.5
    assert d.numeric[:, 1].tolist() == [0, 1, 0, 1, 0, 0]
    assert d.task == "binary" and d.n_classes == 2 and d.y.tolist() == [0, 1, 0, 1, 0, 1]
    assert (d.categorical < np.array(d.cardinalities)).all()
    assert any("f: filled 2" in n for n in d.notes)


def test_high_cardinality_is_hashed_and_reported():
    n = 500
    df = pl.DataFrame({"id": [f"u{i}" for i in range(n)], "y": [i % 3 for i in range(n)]})
    d = encode_tabular(df, "y", max_cardinality=50)
    assert d.cardinalities == (50,) and d.categorical.max() < 50 and d.categorical.min() >= 2
    assert len(np.unique(d.categorical)) > 30
    assert any("hashed" in note for note in d.notes)
    assert d.task == "multiclass" and d.n_classes == 3


def test_encode_errors():
    df = pl.DataFrame({"a": [1, 2, 3], "y": [0, 0, 0]})
    with pytest.raises(DataError, match="single class"):
        encode_tabular(df, "y")
    with pytest.raises(DataError, match="target column 'z' not found"):
        encode_tabular(df, "z")
    with pytest.raises(DataError, match="not found: q"):
        encode_tabular(df.with_columns(pl.Series("y", [0, 1, 0])), "y", features=["q"])
    with pytest.raises(DataError, match="continuous"):
        encode_tabular(pl.DataFrame({"a": list(range(100)), "y": np.linspace(0, 1, 100)}), "y")
    with pytest.raises(DataError, match="unsupported type"):
        encode_tabular(pl.DataFrame({"a": [[1], [2]], "y": [0, 1]}), "y")


def test_missing_target_rows_dropped(frame):
    df = frame.with_columns(pl.when(pl.int_range(pl.len()) < 10).then(None).otherwise(pl.col("y")).alias("y"))
    d = encode_tabular(df, "y")
    assert d.n_rows == frame.height - 10 and any("dropped 10" in n for n in d.notes)


def test_split_is_stratified_deterministic_and_disjoint(tabular):
    tr1, va1 = tabular.split(0.25, seed=3)
    tr2, va2 = tabular.split(0.25, seed=3)
    _, va3 = tabular.split(0.25, seed=4)
    assert np.array_equal(va1.y, va2.y) and np.array_equal(va1.categorical, va2.categorical)
    assert not np.array_equal(va1.categorical, va3.categorical)
    assert tr1.n_rows + va1.n_rows == tabular.n_rows
    assert va1.n_rows == pytest.approx(0.25 * tabular.n_rows, abs=2)
    assert va1.y.mean() == pytest.approx(tabular.y.mean(), abs=0.005)
    assert isinstance(tr1, TabularData) and tr1.cardinalities == tabular.cardinalities
    with pytest.raises(DataError, match="val_fraction"):
        tabular.split(1.0, seed=0)


def test_containers_pickle(tabular, digits):
    for obj in (tabular, digits):
        back = pickle.loads(pickle.dumps(obj))
        assert back.n_rows == obj.n_rows and np.array_equal(back.y, obj.y)


def test_digits_loader(digits):
    assert isinstance(digits, ImageData) and digits.x.shape == (1797, 1, 8, 8) and digits.x.dtype == np.float32
    assert 0.0 <= digits.x.min() and digits.x.max() == 1.0 and digits.n_classes == 10
    tr, va = digits.split(0.2, seed=0)
    assert sorted(np.unique(va.y)) == list(range(10)) and tr.n_rows + va.n_rows == 1797
    assert load_digits_data(limit=100).n_rows == 100
    assert set(IMAGE_DATASETS) == {"digits", "fashion_mnist"}


def test_fashion_mnist_missing_dir_gives_install_hint(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(str(tmp_path))


def test_fashion_mnist_reads_idx_files():
    """The real files of Debian's dataset-fashion-mnist (.ci/run installs it; elsewhere the test says how)."""
    try:
        data = load_fashion_mnist(limit=200)
    except DataError:
        if os.environ.get("CI"):
            pytest.fail("CI must install Fashion-MNIST (bash .ci/fashion_mnist.sh, see .ci/run)")
        pytest.skip("Fashion-MNIST not found: apt-get install dataset-fashion-mnist (or bash .ci/fashion_mnist.sh)")
    assert data.x.shape == (200, 1, 28, 28) and data.x.dtype == np.float32 and data.x.max() <= 1.0
    assert data.y.min() >= 0 and data.y.max() <= 9 and len(np.unique(data.y)) > 5
    test = load_fashion_mnist(part="test")
    assert test.x.shape == (10_000, 1, 28, 28) and test.n_classes == 10
    assert np.bincount(test.y).tolist() == [1000] * 10  # t10k holds 1,000 images of each class
    assert 0.2 < float(test.x.mean()) < 0.4  # grey images scaled to [0, 1] (mean pixel ~0.29), not raw bytes


def test_fashion_mnist_reads_synthetic_idx(tmp_path):
    import gzip
    import struct

    imgs = np.arange(3 * 28 * 28, dtype=np.uint32).reshape(3, 28, 28) % 256
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x03" + struct.pack(">III", 3, 28, 28) + imgs.astype(np.uint8).tobytes())
    with gzip.open(tmp_path / "t10k-labels-idx1-ubyte.gz", "wb") as fh:
        fh.write(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([4, 0, 9]))
    data = load_fashion_mnist(str(tmp_path), part="test")
    assert data.y.tolist() == [4, 0, 9] and data.x[0, 0, 0, 1] == pytest.approx(1 / 255)


def test_no_import_circle_between_data_encoder_and_images():
    """Containers (data.py) import neither the encoder nor the image loaders; both of those import data.py."""
    import ast
    from pathlib import Path

    import sparsearch.spaces as spaces

    root = Path(spaces.__file__).parent

    def local_imports(name: str) -> set[str]:
        tree = ast.parse((root / f"{name}.py").read_text())
        found = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}
        return {m for m in found if m}

    assert local_imports("data") == set()
    assert "data" in local_imports("encoder") and "encoder" not in local_imports("images")
    assert "data" in local_imports("images")
    # the public names stay where they were
    from sparsearch.spaces import encoder, images

    assert spaces.encode_tabular is encoder.encode_tabular and spaces.IMAGE_DATASETS is images.IMAGE_DATASETS
    assert spaces.load_fashion_mnist is images.load_fashion_mnist
