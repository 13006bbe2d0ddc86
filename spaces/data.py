"""Data containers handed to :func:`train_and_evaluate`, and their builders.

Both containers are frozen dataclasses holding numpy arrays (picklable, cheap to ``ray.put``), with a stratified,
deterministic ``split(val_fraction, seed)``; :func:`split_indices` gives a three-way train/validation/test split.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparsearch.errors import DataError

#: Code of a missing value in every categorical column.
MISSING_CODE = 0
#: Code reserved for values outside the vocabulary seen at encoding time.
OOV_CODE = 1
_FIRST_CODE = 2
#: dtype of the categorical codes the encoder writes: int32 halves the memory of int64 (2M rows x 300 columns:
#: 2.4 GB, not 4.8) and every embedding table is far smaller than 2**31 rows; int64 codes are accepted as well.
CODE_DTYPE = np.int32


def _stratified_split(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    rng = np.random.default_rng(seed)
    val_parts, train_parts = [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        n_val = int(round(val_fraction * idx.size))
        if idx.size >= 2:
            n_val = min(max(n_val, 1), idx.size - 1)
        val_parts.append(idx[:n_val])
        train_parts.append(idx[n_val:])
    train_idx = np.sort(np.concatenate(train_parts))
    val_idx = np.sort(np.concatenate(val_parts))
    if train_idx.size == 0 or val_idx.size == 0:
        raise DataError(f"cannot split {y.size} rows with val_fraction={val_fraction}: one side would be empty")
    return train_idx, val_idx


def split_indices(y: np.ndarray, val_fraction: float, test_fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, deterministic ``(train, val, test)`` row indices (each sorted) for class labels ``y``.

    The split depends only on ``y``, the fractions and ``seed``: the same data and seed always give the same rows.
    Within each class the rows are shuffled once; the first ``test_fraction`` go to test, the next
    ``val_fraction`` to validation, the rest to training (each side keeps at least one row of a class that has
    three or more). ``test_fraction = 0`` gives an empty test set.

    Example:
        >>> tr, va, te = split_indices(np.array([0, 1] * 50), 0.2, 0.2, seed=0)
        >>> len(tr), len(va), len(te)
        (60, 20, 20)
        >>> sorted(set(tr) | set(va) | set(te)) == list(range(100))
        True
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if not 0.0 <= test_fraction < 1.0 or val_fraction + test_fraction >= 1.0:
        raise DataError(f"test_fraction must be in [0, 1) with val_fraction + test_fraction < 1, got "
                        f"val_fraction={val_fraction!r}, test_fraction={test_fraction!r}")
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(idx.size)]
        n_test = int(round(test_fraction * idx.size))
        n_val = int(round(val_fraction * idx.size))
        if idx.size >= 3:
            n_test = min(max(n_test, 1 if test_fraction > 0 else 0), idx.size - 2)
            n_val = min(max(n_val, 1), idx.size - n_test - 1)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test : n_test + n_val])
        parts[0].append(idx[n_test + n_val :])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    if train.size == 0 or val.size == 0 or (test_fraction > 0 and test.size == 0):
        raise DataError(f"cannot split {y.size} rows with val_fraction={val_fraction}, "
                        f"test_fraction={test_fraction}: a side would be empty")
    return train, val, test


@dataclass(frozen=True, eq=False)
class TabularData:
    """Encoded tabular data: integer codes for categorical features, float32 numeric features, a class target.

    Attributes:
        categorical: int32 (n, n_cat) codes (:data:`CODE_DTYPE`; int64 is accepted too); 0 = missing,
            1 = out-of-vocabulary, 2.. = values.
        cardinalities: number of codes of each categorical column (embedding table sizes).
        numeric: float32 (n, n_num), finite (missing/inf filled by the column median, see ``notes``).
        y: int64 (n,) class indices.
        task: ``"binary"`` or ``"multiclass"``.
        notes: human-readable remarks from encoding (hashed columns, filled values, dropped rows).
    """

    categorical: np.ndarray
    cardinalities: tuple[int, ...]
    numeric: np.ndarray
    y: np.ndarray
    categorical_names: tuple[str, ...] = ()
    numeric_names: tuple[str, ...] = ()
    task: str = "binary"
    n_classes: int = 2
    classes: tuple = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        n = self.y.shape[0]
        if self.categorical.shape != (n, len(self.cardinalities)):
            raise DataError(
                f"categorical must have shape ({n}, {len(self.cardinalities)}), got {self.categorical.shape}"
            )
        if self.categorical.dtype not in (np.int32, np.int64):
            raise DataError(f"categorical codes must be int32 or int64, got {self.categorical.dtype}")
        if self.numeric.ndim != 2 or self.numeric.shape[0] != n:
            raise DataError(f"numeric must have shape ({n}, n_num), got {self.numeric.shape}")

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    def subset(self, idx: np.ndarray) -> TabularData:
        return dataclasses.replace(self, categorical=self.categorical[idx], numeric=self.numeric[idx], y=self.y[idx])

    def split(self, val_fraction: float, seed: int) -> tuple[TabularData, TabularData]:
        """Stratified, deterministic ``(train, val)`` split."""
        tr, va = _stratified_split(self.y, val_fraction, seed)
        return self.subset(tr), self.subset(va)


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images as float32 (n, c, h, w) in [0, 1] with int64 class labels."""

    x: np.ndarray
    y: np.ndarray
    n_classes: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"x must have shape (n, c, h, w) with n = len(y) = {self.y.shape[0]}, got {self.x.shape}")

    @property
    def n_rows(self) -> int:
        return int(self.y.shape[0])

    @property
    def task(self) -> str:
        return "multiclass"

    def subset(self, idx: np.ndarray) -> ImageData:
        return dataclasses.replace(self, x=self.x[idx], y=self.y[idx])

    def split(self, val_fraction: float, seed: int) -> tuple[ImageData, ImageData]:
        """Stratified, deterministic ``(train, val)`` split."""
        tr, va = _stratified_split(self.y, val_fraction, seed)
        return self.subset(tr), self.subset(va)


def encode_tabular(
    df, target: str, *, features: list[str] | None = None, max_cardinality: int = 100_000
) -> TabularData:
    """Encode a polars DataFrame for :class:`SparseMLP`.

    Strings, integers, booleans (and any other non-float scalar type) become categorical codes with ``0`` for
    missing and ``1`` reserved for out-of-vocabulary values; values are numbered in sorted order from 2. A column
    with more than ``max_cardinality - 2`` distinct values is hashed down to ``max_cardinality`` codes (reported in
    ``notes``). Floats become numeric: NaN and +-inf are filled with the median of the finite values and a
    ``<name>_missing`` 0/1 numeric column is added. Rows with a missing target are dropped (reported).

    Args:
        df: a ``polars.DataFrame`` (a pandas DataFrame is converted).
        target: the class column (binary or multiclass; floats are accepted only if they hold few distinct values).
        features: the columns to use (default: all but the target).
        max_cardinality: the largest embedding table per feature.

    The encoding is :class:`~sparsearch.spaces.encoder.TabularEncoder`'s: fit one to encode new rows the same way.

    Raises:
        DataError: missing column, empty table, a one-class target, a nested/unsupported column type.
    """
    from .encoder import TabularEncoder

    return TabularEncoder.fit(df, target, features=features, max_cardinality=max_cardinality).encode(df)


def load_digits_data(limit: int | None = None) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes), scaled to [0, 1].

    Args:
        limit: keep only the first ``limit`` images.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    return ImageData(x=np.ascontiguousarray(x), y=y, n_classes=10, name="digits")


FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_HINT = "install it with: apt-get install dataset-fashion-mnist (Debian package; files in " + FASHION_MNIST_DIR + ")"


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".gz", ""):
        p = directory / (stem + suffix)
        if p.exists():
            return p
    return None


def load_fashion_mnist(path: str | None = None, limit: int | None = None, *, part: str = "train") -> ImageData:
    """Fashion-MNIST (28x28 grey, 10 classes) from the IDX files of Debian's ``dataset-fashion-mnist``.

    Args:
        path: directory holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`` (default: the package's).
        limit: keep only the first ``limit`` images.
        part: ``"train"`` (60,000 images) or ``"test"`` (10,000).

    Raises:
        DataError: files missing (with the ``apt-get install`` hint) or malformed.
    """
    if part not in ("train", "test"):
        raise DataError(f"part must be 'train' or 'test', got {part!r}")
    directory = Path(path if path is not None else os.environ.get("SPARSEARCH_FASHION_MNIST", FASHION_MNIST_DIR))
    prefix = "train" if part == "train" else "t10k"
    images = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        raise DataError(f"Fashion-MNIST {part} files not found in {directory}; {_FASHION_HINT}")
    x = _read_idx(images)
    y = _read_idx(labels)
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be >= 1, got {limit}")
        x, y = x[:limit], y[:limit]
    x = (x.astype(np.float32) / 255.0)[:, None, :, :]
    return ImageData(x=np.ascontiguousarray(x), y=y.astype(np.int64), n_classes=10, name="fashion_mnist")


#: Image data sets by name (the ``[data] generator`` names of image studies).
IMAGE_DATASETS: dict[str, Callable[..., ImageData]] = {
    "digits": load_digits_data,
    "fashion_mnist": load_fashion_mnist,
}
