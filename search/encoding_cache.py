"""The encoding cache: the encoded train / validation / test parts of a study's data, reused across executions
of a study and across the runs of ``compare`` when the data, its split and the fitted encoder are the same.

The key (``results/cache/encoded-<key>.npz``) is the SHA-256 of the data fingerprint, the split's digest (which
rows are training, validation and test rows) and the fitted encoder itself (its pickled bytes, hashed only: the
features, the crosses' recipes, the vocabularies and numeric statistics, and so every encoder option). The
encoder is still fitted on the training rows every time (it is small, and the packaged model needs it); only the
encoding of every row, the costly part, is skipped on a hit. A different split, data or encoder gives another
key. The file is a numpy ``.npz`` read with ``allow_pickle=False`` (arrays) and a JSON member (the rest): loading
it never runs code.

The cache is bounded: after each store, the least recently used files (a hit counts as a use) are deleted until
the folder's encoded files take at most ``SPARSEARCH_ENCODING_CACHE_GB`` gigabytes (default
:data:`DEFAULT_MAX_GB`; 0 keeps nothing after the run that wrote it). The file just written is always kept, so one
entry larger than the bound still serves the executions of its own study. A ``clicklog_large`` entry (2M rows x
316 columns) takes about 2.5 GB.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sparsearch.spaces.data import TabularData
    from sparsearch.spaces.encoder import TabularEncoder

__all__ = ["DEFAULT_MAX_GB", "encoded_key", "load_encoded", "max_bytes", "store_encoded"]

DEFAULT_MAX_GB = 20.0
"""The default bound of the encoded files in one results folder, in gigabytes (10**9 bytes)."""

ENV_MAX_GB = "SPARSEARCH_ENCODING_CACHE_GB"

_ARRAYS = ("categorical", "numeric", "y")
_PARTS = ("train", "val", "test")


def encoded_key(fingerprint: str, split_digest: str, encoder: TabularEncoder) -> str:
    """The cache key of the encoded parts of ``fingerprint``'s rows split as ``split_digest`` by ``encoder``."""
    h = hashlib.sha256()
    for part in (fingerprint.encode(), split_digest.encode(), pickle.dumps(encoder, protocol=4)):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"encoded-{key}.npz"


def max_bytes() -> int:
    """The bound of the encoded files in one cache folder (``SPARSEARCH_ENCODING_CACHE_GB``, else
    :data:`DEFAULT_MAX_GB`)."""
    from sparsearch.errors import SpecError

    raw = os.environ.get(ENV_MAX_GB)
    if raw is None or raw.strip() == "":
        return int(DEFAULT_MAX_GB * 1e9)
    try:
        gb = float(raw)
    except ValueError:
        gb = float("nan")
    if not gb >= 0 or gb == float("inf"):
        raise SpecError(f"{ENV_MAX_GB}={raw!r}: expected a finite number of gigabytes >= 0 (0: keep nothing)")
    return int(gb * 1e9)


def _evict(cache_dir: Path, keep: Path, limit: int) -> None:
    """Delete the least recently used encoded files until the rest (``keep`` included) take at most ``limit``
    bytes; ``keep`` itself is never deleted. A file another process deletes first is skipped."""
    entries = []
    for f in Path(cache_dir).glob("encoded-*.npz"):
        try:
            st = f.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in entries)
    for _, size, f in sorted(entries, key=lambda e: e[0]):  # oldest use first
        if total <= limit:
            break
        if f == keep:
            continue
        try:
            f.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        total -= size


def _plain(v: object) -> object:
    """JSON form of a field: tuples as lists, numpy scalars as Python ones."""
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v.item() if isinstance(v, np.generic) else v


def load_encoded(cache_dir: Path, key: str) -> tuple[TabularData, TabularData, TabularData] | None:
    """The cached ``(train, val, test)`` parts for ``key``, or ``None`` (absent or unreadable: encode again)."""
    from sparsearch.spaces.data import TabularData

    path = _path(cache_dir, key)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(bytes(z["meta"]).decode())
            out = []
            for name in _PARTS:
                # the other fields are whatever the JSON says (json.loads is untyped): TabularData checks each
                # value when constructed (TypeError, ValueError: the file is not used)
                fields = meta[name]
                for k, v in fields.items():
                    if isinstance(v, list):
                        fields[k] = tuple(v)
                arrays = {a: z[f"{name}.{a}"] for a in _ARRAYS}
                out.append(TabularData(categorical=arrays["categorical"], numeric=arrays["numeric"], y=arrays["y"],
                                       **fields))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None
    try:
        os.utime(path)  # a hit is a use: the least recently used files go first (_evict)
    except OSError:
        pass
    return out[0], out[1], out[2]


def store_encoded(cache_dir: Path, key: str, parts: tuple[TabularData, TabularData, TabularData]) -> None:
    """Write the parts for ``key`` atomically (a reader never sees half a file), then delete the least recently
    used other entries beyond :func:`max_bytes`; a full disk only skips caching."""
    limit = max_bytes()  # a bad bound is refused before anything is written
    path = _path(cache_dir, key)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.npz")
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, dict[str, object]] = {}
    for name, part in zip(_PARTS, parts, strict=True):
        fields = {f.name: getattr(part, f.name) for f in dataclasses.fields(part)}
        for a in _ARRAYS:
            arrays[f"{name}.{a}"] = np.asarray(fields.pop(a))
        meta[name] = {k: _plain(v) for k, v in fields.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub: a **dict could hold its allow_pickle
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return
    _evict(path.parent, path, limit)
