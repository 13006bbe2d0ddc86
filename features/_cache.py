"""The one ranking cache: ``sparsearch rank --cache``, :func:`cached_rank_features` and the search's prefilter.

A ranking is stored as parquet under a key that hashes everything that changes it: the data's identity (its
:func:`data_fingerprint`, plus the rows used when a caller ranks a subset, such as the training rows of a split),
the target, the method and every option that changes the result. Options that only change how it is computed
(progress, Ray) are not part of the key. Writes are atomic (a temporary file, then a rename), so concurrent runs
never read half a file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from ._io import data_fingerprint
from ._rank import rank_features

__all__ = ["RankingCache", "cached_rank_features"]

NOT_IN_KEY = ("progress", "use_ray", "ray_address")
"""Options that change how a ranking is computed, not what it is."""


class RankingCache:
    """Rankings (and any tables that go with them) on disk, keyed by what determines them.

    Example:
        >>> import polars as pl, tempfile
        >>> cache = RankingCache(tempfile.mkdtemp())
        >>> key = cache.key("data-fingerprint", target="y", method="adjusted-mi", options={"seed": 0})
        >>> cache.load(key) is None
        True
        >>> cache.store(key, pl.DataFrame({"feature": ["a"], "rank": [1]}))
        >>> cache.load(key)["feature"].to_list()
        ['a']
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    @staticmethod
    def key(data: str, *, target: str, method: str, options: dict[str, Any] | None = None) -> str:
        """A 16-hex-character key of a ranking of ``data`` (a fingerprint, with the rows used if a subset)."""
        keyed = {k: v for k, v in (options or {}).items() if k not in NOT_IN_KEY}
        payload = json.dumps({"data": data, "target": target, "method": method, "options": keyed},
                             sort_keys=True, default=str)
        return hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()

    def path(self, key: str, part: str = "ranking") -> Path:
        return self.folder / f"{part}-{key}.parquet"

    def load(self, key: str, part: str = "ranking") -> pl.DataFrame | None:
        """The stored table, or ``None`` when there is none."""
        path = self.path(key, part)
        return pl.read_parquet(path) if path.exists() else None

    def store(self, key: str, table: pl.DataFrame, part: str = "ranking") -> None:
        """Write ``table`` atomically (readers see the old file or the whole new one)."""
        path = self.path(key, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        table.write_parquet(tmp)
        os.replace(tmp, path)


def cached_rank_features(
    data: Any, target: str, method: str = "adjusted-mi", *, cache_dir: str | os.PathLike, **options: Any
) -> tuple[pl.DataFrame, bool]:
    """:func:`rank_features` with an on-disk cache; returns ``(ranking, was_cached)``.

    The key is the :func:`data_fingerprint` of ``data`` plus the target, method and every option that changes
    the result (``progress``, ``use_ray`` and ``ray_address`` do not), so a repeated study does not recompute it.

    Example:
        >>> import polars as pl, tempfile
        >>> df = pl.DataFrame({"a": [0, 1] * 20, "y": [0, 1] * 20})
        >>> d = tempfile.mkdtemp()
        >>> cached_rank_features(df, "y", cache_dir=d)[1], cached_rank_features(df, "y", cache_dir=d)[1]
        (False, True)
    """
    cache = RankingCache(cache_dir)
    key = cache.key(data_fingerprint(data, feature_names=options.get("feature_names")), target=target,
                    method=method, options=options)
    ranking = cache.load(key)
    if ranking is not None:
        return ranking, True
    ranking = rank_features(data, target, method, **options)
    cache.store(key, ranking)
    return ranking, False
