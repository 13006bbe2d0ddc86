"""Data containers handed to :func:`train_and_evaluate`, and the train/validation/test split.

Both containers are frozen dataclasses holding numpy arrays (picklable, cheap to ``ray.put``), with a stratified,
deterministic ``split(val_fraction, seed)``; :func:`split_indices` gives a three-way train/validation/test split.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from sparsearch.errors import DataError


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
        categorical: int32 (n, n_cat) codes (:data:`~sparsearch.spaces.encoder.CODE_DTYPE`; int64 is accepted too); 0 = missing,
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
