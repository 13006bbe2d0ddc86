"""``rank_features``: count once (streaming or on Ray), finalise the tables, score, and build the ranking table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ._counts import Counts, TargetSpec
from ._estimators import FeatureStats, get_method
from ._greedy import greedy_order
from ._io import Source
from ._tables import Finalized, RankOptions, count, feature_stats, finalize, order_by_score, prepare


@dataclass
class RankState:
    """What one ranking counted and computed, kept for the passes that reuse it (quality report, pairs)."""

    src: Source
    tspec: TargetSpec
    counts: Counts
    finals: list[Finalized]
    stats: FeatureStats
    table: pl.DataFrame
    options: RankOptions


def rank_counts(src: Source, feats: list[str], tspec: TargetSpec, opts: RankOptions) -> RankState:
    """Count once, finalise, score with ``opts.method`` and build the ranking table."""
    ranker = get_method(opts.method)
    counts = count(src, feats, tspec, opts, null_kind=ranker.null_kind)
    finals = [finalize(counts.features[f], f, counts.n_rows, opts.n_bins, opts.missing) for f in feats]
    st = feature_stats(finals, counts.null_features or None, opts.n_bins, opts.missing, counts.n_rows)
    score, chance = ranker.score(st)
    order = order_by_score(score)
    if ranker.greedy:
        order, score = greedy_order(src, finals, counts, tspec, relevance=score,
                                    relational=getattr(ranker, "relational", False), opts=opts)
    names = [st.names[i] for i in order]
    out = pl.DataFrame(
        {
            "feature": names,
            "score": score[order].astype(np.float64),
            "rank": np.arange(1, len(order) + 1, dtype=np.int64),
            "cardinality": np.array([finals[i].cardinality for i in order], dtype=np.int64),
            "missing_rate": np.array([finals[i].missing_rate for i in order], dtype=np.float64),
            "mi": st.mi[order],
            "chance_mi": chance[order],
            "adjusted_mi": (st.mi - st.expected)[order],
            "entropy": st.hx[order],
            "levels": st.levels[order].astype(np.int64),
            "kind": ["numeric" if finals[i].numeric else "categorical" for i in order],
            "binning": [finals[i].binning for i in order],
            "n_rows": st.n[order].astype(np.int64),
            "target_entropy": st.hy[order],
            "method": [opts.method] * len(order),
            "target_binning": [tspec.description] * len(order),
        }
    )
    return RankState(src, tspec, counts, finals, st, out, opts)


def rank_features(
    data: Any,
    target: str,
    method: str = "adjusted-mi",
    *,
    features: list[str] | None = None,
    n_bins: int = 16,
    missing: str = "category",
    seed: int | None = 0,
    batch_size: int = 1_000_000,
    ray_address: str | None = None,
    use_ray: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    feature_names: Sequence[str] | None = None,
    pool_size: int = 20,
) -> pl.DataFrame:
    """Rank features by (chance-corrected) mutual information with ``target``, using every row.

    Counts are merged exactly over batches (files are read lazily) or Ray shards, so the scores do not depend on
    how rows are split. The default ``adjusted-mi`` subtracts the exact expected MI under independence for each
    feature's own value distribution and the target's, so ID-like noise does not rise to the top.

    Args:
        data: polars/pandas DataFrame, 2-D numpy array (columns ``x0..``), scipy sparse matrix (with
            ``feature_names``), or a path, directory or glob of parquet/CSV/TSV files.
        target: target column name (binary, multi-class, or continuous: quantile-binned into ``n_bins``). For
            in-memory data an array of labels is accepted too.
        method: one of :func:`available_methods`.
        features: columns to rank (default: every column but the target).
        n_bins: quantile bins for float features and a continuous target. Float features are counted under
            their value rounded toward zero to 8 significant bits (at most 65,536 keys, whatever the number of
            distinct floats; ``cardinality`` counts those keys), then cut into ``n_bins`` equal-frequency bins.
        missing: ``"category"`` (missing is its own value) or ``"drop"`` (rows missing the feature are ignored).
        seed: seed of the label permutation used by ``adjusted-mi-permutation``.
        batch_size: rows per counted batch.
        ray_address, use_ray: count row shards as Ray tasks (``ray_address`` implies ``use_ray``).
        progress: called as ``progress(rows_done, rows_total_or_None)`` after each batch.
        feature_names: column names for numpy and scipy input.
        pool_size: how many of the most relevant features the greedy methods (``mrmr``, ``3mr``) re-order.

    Returns:
        polars DataFrame sorted by ``rank`` (1 = best): ``feature, score, rank, cardinality, missing_rate, mi,
        chance_mi, adjusted_mi, entropy, levels, kind, binning, n_rows, target_entropy, method, target_binning``.
        ``mi`` is plug-in MI in nats and ``chance_mi`` the baseline the method subtracts (the exact expected MI
        for methods that subtract none). For ``mrmr`` and ``3mr`` the rank is the greedy selection order and
        ``score`` the feature's greedy value when it was selected (features outside the pool follow by
        adjusted MI), so scores need not decrease with rank.

    Example:
        >>> import polars as pl
        >>> df = pl.DataFrame({"a": [0, 1] * 50, "b": [0] * 100, "y": [0, 1] * 50})
        >>> rank_features(df, "y")["feature"].to_list()
        ['a', 'b']
    """
    opts = RankOptions(method=method, n_bins=n_bins, missing=missing, seed=seed, batch_size=batch_size,
                       use_ray=use_ray, ray_address=ray_address, progress=progress, pool_size=pool_size)
    src, _, feats, tspec = prepare(data, target, features, n_bins, feature_names)
    return rank_counts(src, feats, tspec, opts).table
