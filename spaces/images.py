"""Image data sets: scikit-learn's digits and Fashion-MNIST, loaded as :class:`~sparsearch.spaces.ImageData`.

:data:`IMAGE_DATASETS` names them for ``[data] generator`` in image studies.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sparsearch.errors import DataError

from .data import ImageData

__all__ = ["FASHION_MNIST_DIR", "IMAGE_DATASETS", "load_digits_data", "load_fashion_mnist"]


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
