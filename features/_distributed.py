"""Counting row shards as Ray tasks and merging their counts on the driver (exact: integer sums of tables).

In-memory data is ``ray.put`` once and each task counts a ``batch_size`` slice; file sources are sharded by parquet
row groups (CSV/TSV: one shard per file). Workers never open the driver's files (on a cluster, their nodes cannot
see them): the driver reads each file shard's rows (only the needed columns) and sends them through the object
store, just before the shard's task is submitted, so at most the in-flight shards are held. Results are collected
in completion order with a bound on in-flight tasks. Ray is initialised only when it is not already
(``ray.init(address=ray_address)``, or a local instance) and shut down at the end only if this call started it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl

from sparsearch._ray import connect_ray
from sparsearch.errors import DataError

from ._counts import Counts, TargetSpec, count_batch
from ._io import EXTENSIONS, Source, iter_file, iter_parquet, open_parquet


class BatchCounter:
    """The single-feature count of one batch, as a picklable callable ``(df, offset) -> Counts``."""

    def __init__(self, feats: list[str], tspec: TargetSpec, null_kind: str | None, seed: int | None):
        self.feats, self.tspec, self.null_kind, self.seed = feats, tspec, null_kind, seed

    def __call__(self, df: pl.DataFrame, offset: int) -> Counts:
        return count_batch(df, self.feats, self.tspec, null_kind=self.null_kind, seed=self.seed, offset=offset)


def _count_frame_slice(frame: pl.DataFrame, start: int, length: int, counter: Callable[[pl.DataFrame, int], Any]) -> Any:
    return counter(frame.slice(start, length), start)


def _read_file_shard(path: str, row_groups: list[int] | None, offset: int, columns: list[str],
                     batch_size: int, dictionary: bool = False) -> list[tuple[int, pl.DataFrame]]:
    """The batches of one file shard, with their global row offsets (read on the driver).

    ``dictionary``: parquet string columns come as ``Enum`` (read dictionary-encoded, see ``iter_parquet``).
    """
    if row_groups is not None:
        pf, enc = open_parquet(path, columns, dictionary)
        batches: Iterator[pl.DataFrame] = iter_parquet(pf, columns, batch_size, row_groups, dictionary=enc)
    else:
        batches = iter_file(Path(path), columns, batch_size, dictionary)
    out = []
    for df in batches:
        out.append((offset, df))
        offset += df.height
    if not out:
        raise DataError(f"shard of {path!r} has no rows")
    return out


def _count_batches(batches: list[tuple[int, pl.DataFrame]], counter: Callable[[pl.DataFrame, int], Any]) -> Any:
    """Count a file shard's batches (sent by the driver through the object store) with their global offsets."""
    acc = None
    for offset, df in batches:
        part = counter(df, offset)
        acc = part if acc is None else acc.merge(part)
    if acc is None:
        raise DataError("a file shard has no rows")
    return acc


def _shards(src: Source, batch_size: int) -> list[tuple[str, list[int] | None, int, int]]:
    """(path, row groups or None, global offset, rows) for each file shard."""
    out = []
    offset = 0
    for f in src.files or []:
        if EXTENSIONS[f.suffix.lower()] == "parquet":
            import pyarrow.parquet as pq

            meta = pq.ParquetFile(f).metadata
            group: list[int] = []
            rows = 0
            for g in range(meta.num_row_groups):
                group.append(g)
                rows += meta.row_group(g).num_rows
                if rows >= batch_size:
                    out.append((str(f), group, offset, rows))
                    offset += rows
                    group, rows = [], 0
            if group:
                out.append((str(f), group, offset, rows))
                offset += rows
        else:
            out.append((str(f), None, offset, -1))
    return out


def count_with_ray(
    src: Source,
    feats: list[str],
    tspec: TargetSpec,
    *,
    null_kind: str | None,
    seed: int | None,
    batch_size: int,
    ray_address: str | None,
    progress: Callable[[int, int | None], None] | None,
    max_in_flight: int | None = None,
) -> Counts:
    """Single-feature counts of every shard, merged on the driver."""
    return map_shards(src, [*feats, tspec.name], BatchCounter(feats, tspec, null_kind, seed), batch_size=batch_size,
                      ray_address=ray_address, progress=progress, max_in_flight=max_in_flight, dictionary=True)


def map_shards(
    src: Source,
    columns: list[str],
    counter: Callable[[pl.DataFrame, int], Any],
    *,
    batch_size: int,
    ray_address: str | None,
    progress: Callable[[int, int | None], None] | None,
    max_in_flight: int | None = None,
    dictionary: bool = False,
) -> Any:
    """Run ``counter(batch, offset)`` on every shard as a Ray task and merge the results (``a.merge(b)``).

    The merge must be exact, associative and commutative (integer count tables): the result does not depend on
    the order in which shards finish. ``dictionary``: the counter takes parquet string columns as ``Enum``.
    """
    import ray

    started = connect_ray(ray_address or "local", num_cpus=os.cpu_count() or 2, object_store_memory=200_000_000)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 2))
        limit = max_in_flight or max(2, 2 * cpus)
        # each shard: its task, a function giving the task's arguments when it is submitted, its rows
        args: list[tuple[Any, Callable[[], tuple[Any, ...]], int]] = []
        if src.frame is not None:
            task = ray.remote(_count_frame_slice)
            ref = ray.put(src.frame.select(columns))
            for start in range(0, src.frame.height, batch_size):
                args.append((task, lambda start=start: (ref, start, batch_size, counter),
                             min(batch_size, src.frame.height - start)))
        else:
            task = ray.remote(_count_batches)
            for path, groups, offset, rows in _shards(src, batch_size):
                # read on the driver when submitted: the rows reach the worker through the object store
                args.append((task, lambda shard=(path, groups, offset): (
                    _read_file_shard(*shard, columns, batch_size, dictionary), counter), rows))
        pending: dict[Any, int] = {}
        acc: Any = None
        done = 0
        queue = list(args)
        while queue or pending:
            while queue and len(pending) < limit:
                fn, make_args, rows = queue.pop(0)
                pending[fn.remote(*make_args())] = rows
            ready, _ = ray.wait(list(pending), num_returns=1)
            for r in ready:
                rows = pending.pop(r)
                part = ray.get(r)
                acc = part if acc is None else acc.merge(part)
                done += part.n_rows + getattr(part, "n_null_target", 0) if rows < 0 else rows
                if progress is not None:
                    progress(done, src.n_rows)
        if acc is None:
            raise DataError("data has no rows")
        return acc
    finally:
        if started:
            ray.shutdown()
