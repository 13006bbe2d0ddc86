"""A ranking cache keyed by the data fingerprint and the ranking options (the search's prefilter uses it)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import polars as pl

from ._io import data_fingerprint
from ._rank import rank_features


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
    keyed = {k: v for k, v in options.items() if k not in ("progress", "use_ray", "ray_address")}
    payload = json.dumps({"data": data_fingerprint(data, feature_names=options.get("feature_names")),
                          "target": target, "method": method, "options": keyed}, sort_keys=True, default=str)
    key = hashlib.blake2b(payload.encode(), digest_size=8).hexdigest()
    path = Path(cache_dir) / f"ranking-{key}.parquet"
    if path.exists():
        return pl.read_parquet(path), True
    ranking = rank_features(data, target, method, **options)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    ranking.write_parquet(tmp)
    os.replace(tmp, path)
    return ranking, False
