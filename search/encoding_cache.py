"""The encoding cache: the encoded train / validation / test parts of a study's data, reused across executions
of a study and across the seeds of ``compare`` when the data, its split and the fitted encoder are the same.

The key (``results/cache/encoded-<key>.pkl``) is the SHA-256 of the data fingerprint, the split's digest (which
rows are training, validation and test rows) and the fitted encoder itself (its pickled bytes: the features, the
crosses' recipes, the vocabularies and numeric statistics, and so every encoder option). The encoder is still
fitted on the training rows every time (it is small, and the packaged model needs it); only the encoding of
every row, the costly part, is skipped on a hit. A different split, data or encoder option gives another key.
The files are pickles this process wrote itself under the results folder (not for files from elsewhere).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import uuid
from pathlib import Path
from typing import Any

__all__ = ["encoded_key", "load_encoded", "store_encoded"]


def encoded_key(fingerprint: str, split_digest: str, encoder: Any) -> str:
    """The cache key of the encoded parts of ``fingerprint``'s rows split as ``split_digest`` by ``encoder``."""
    h = hashlib.sha256()
    for part in (fingerprint.encode(), split_digest.encode(), pickle.dumps(encoder, protocol=4)):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:32]


def _path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"encoded-{key}.pkl"


def load_encoded(cache_dir: Path, key: str) -> tuple[Any, Any, Any] | None:
    """The cached ``(train, val, test)`` parts for ``key``, or ``None`` (absent or unreadable: encode again)."""
    path = _path(cache_dir, key)
    try:
        with path.open("rb") as f:
            parts = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        return None
    return parts if isinstance(parts, tuple) and len(parts) == 3 else None


def store_encoded(cache_dir: Path, key: str, parts: tuple[Any, Any, Any]) -> None:
    """Write the parts for ``key`` atomically (a reader never sees half a file); a full disk only skips caching."""
    path = _path(cache_dir, key)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            pickle.dump(parts, f, protocol=4)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
