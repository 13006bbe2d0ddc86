"""One ranking run: single features, pairs and the data-quality report, all from one count of the rows."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from sparsearch.errors import SpecError, unknown_choice

from ._pairs import PAIR_SCHEMA, candidate_features, count_pairs, pair_table, plan_pairs, score_pairs
from ._quality import findings
from ._rank import RankState, rank_counts
from ._tables import LOWRANK_Z, MAX_PAIR_FEATURES, PAIR_MAX_CELLS, PAIR_MIN_COUNT, RankOptions, prepare

REPORTS = ("none", "basic", "full")


@dataclass
class RankResult:
    """What :func:`rank` returns.

    Attributes:
        features: the ranking table of :func:`rank_features`.
        pairs: the ``options.interactions`` best pairs (columns of :func:`rank_interactions`), or None.
        quality: the data-quality findings (``report="basic"`` or ``"full"``), or None.
        seconds: wall time of each stage (``count``, ``pairs``, ``report``).
    """

    features: pl.DataFrame
    pairs: pl.DataFrame | None = None
    quality: pl.DataFrame | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def interaction_pairs(state: RankState) -> pl.DataFrame:
    """Rank the pairs of the candidate features of a finished ranking (one more pass over the rows)."""
    opts = state.options
    relevance = state.stats.mi - state.stats.expected
    chosen = candidate_features(state.finals, relevance, opts.max_pair_features)
    if len(chosen) < 2:
        return pl.DataFrame(schema=PAIR_SCHEMA)
    plan = plan_pairs(state.finals, chosen, state.tspec, state.counts.classes, opts, state.counts.n_rows)
    counts = count_pairs(state.src, plan, batch_size=opts.batch_size, use_ray=opts.ray, ray_address=opts.ray_address,
                         progress=opts.progress)
    scores = score_pairs(plan, counts, lowrank=bool(np.isfinite(opts.lowrank_z)))
    return pair_table([state.finals[i].name for i in chosen], plan.coders, plan, scores, opts.interactions,
                      opts.lowrank_z)


def rank(
    data: Any,
    target: Any,
    options: RankOptions | None = None,
    *,
    features: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    report: str = "none",
) -> RankResult:
    """Rank features (and, with ``options.interactions``, pairs) and report data quality, counting the rows once.

    ``report``: ``"none"``; ``"basic"`` (every finding that the counts give: constant, near-constant,
    mostly-missing, id-like, rare-dominated, leakage-suspect; no extra pass); ``"full"`` (adds the duplicate and
    near-duplicate checks, one more pass over the rows).

    Example:
        >>> import numpy as np, polars as pl
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.integers(0, 2, 2000), rng.integers(0, 2, 2000)
        >>> df = pl.DataFrame({"a": a, "b": b, "n": rng.integers(0, 9, 2000), "y": a ^ b})
        >>> res = rank(df, "y", RankOptions(interactions=2), report="basic")
        >>> res.pairs.row(0)[:2], res.quality.height
        (('a', 'b'), 0)
    """
    if report not in REPORTS:
        raise unknown_choice("quality report", report, REPORTS)
    opts = options or RankOptions()
    t0 = time.perf_counter()
    src, _, feats, tspec = prepare(data, target, features, opts.n_bins, feature_names)
    state = rank_counts(src, feats, tspec, opts)
    out = RankResult(state.table, seconds={"count": time.perf_counter() - t0})
    if opts.interactions:
        t0 = time.perf_counter()
        out.pairs = interaction_pairs(state)
        out.seconds["pairs"] = time.perf_counter() - t0
    if report != "none":
        t0 = time.perf_counter()
        out.quality = findings(state, max_pairs=50 if report == "full" else 0)
        out.seconds["report"] = time.perf_counter() - t0
    return out


def rank_interactions(
    data: Any,
    target: Any,
    top: int = 20,
    *,
    features: Sequence[str] | None = None,
    pair_levels: int | str = "auto",
    max_pair_features: int = MAX_PAIR_FEATURES,
    pair_min_count: float = PAIR_MIN_COUNT,
    pair_max_cells: int = PAIR_MAX_CELLS,
    lowrank_z: float = LOWRANK_Z,
    n_bins: int = 16,
    missing: str = "category",
    batch_size: int = 1_000_000,
    use_ray: bool = False,
    ray_address: str | None = None,
    feature_names: Sequence[str] | None = None,
) -> pl.DataFrame:
    """The ``top`` pairs of features by chance-corrected interaction information with ``target``, after the pairs
    of two high-cardinality features that show a low-rank interaction.

    A pair's score is AMI((a,b); Y) - AMI(a; Y) - AMI(b; Y), every AMI being plug-in MI minus its exact expected
    value under label permutation for that variable's margin (computed on the capped tables themselves, so the
    cap never biases the score). Each feature keeps at most ``pair_levels`` codes (its most frequent levels, the
    rest shared). ``"auto"`` grows that cap with the rows, so that a pair of two high-cardinality IDs (user x
    item) keeps enough of their levels to show its interaction: the largest ``L`` with ``L * L <= n_rows /
    pair_min_count`` (between 16 and 16,384), lowered until the counts of all pairs fit in ``pair_max_cells``
    cells (8 bytes each: the memory bound of the pass, per batch or Ray shard in flight). All pairs of up to
    ``max_pair_features`` features; above, pairs of the ``max_pair_features`` features with the highest adjusted
    MI. Counts merge exactly across batches and Ray shards.

    Cell by cell, that score cannot see a user x item affinity (a logit ``u_user . v_item``) when the joint
    table holds about one row per cell: signal and noise pairs of that size score alike. So each pair of two
    features that both keep at least 16 codes of their own also gets a low-rank interaction test
    (``features/_lowrank.py``): the largest singular value of the pair's residual matrix after a logistic model
    with additive effects of the two features, against label permutations of the same counts, as a ``z``. Pairs
    whose ``z`` reaches ``lowrank_z`` (``low_rank``) come first, by ``z``; ``lowrank_z=float("inf")`` skips the
    test.

    Returns:
        polars DataFrame, best first: ``feature_a, feature_b, score, rank, joint_mi, chance_joint_mi,
        adjusted_joint_mi, adjusted_mi_a, adjusted_mi_b, levels_a, levels_b, redundancy, lowrank_z, low_rank``
        (MI in nats; ``levels_*`` after capping; ``redundancy`` in [0, 1], 1 for a re-coded copy; ``lowrank_z``
        null for a pair not tested).

    Example:
        >>> import numpy as np, polars as pl
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.integers(0, 2, 2000), rng.integers(0, 2, 2000)
        >>> df = pl.DataFrame({"a": a, "b": b, "n": rng.integers(0, 9, 2000), "y": a ^ b})
        >>> top = rank_interactions(df, "y", top=1).row(0, named=True)
        >>> (top["feature_a"], top["feature_b"]), round(top["score"], 2)
        (('a', 'b'), 0.69)
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise SpecError(f"top must be a positive integer, got {top!r}")
    opts = RankOptions(n_bins=n_bins, missing=missing, batch_size=batch_size, use_ray=use_ray, ray_address=ray_address,
                       interactions=int(top), pair_levels=pair_levels, max_pair_features=max_pair_features,
                       pair_min_count=pair_min_count, pair_max_cells=pair_max_cells, lowrank_z=lowrank_z)
    pairs = rank(data, target, opts, features=features, feature_names=feature_names).pairs
    return pairs if pairs is not None else pl.DataFrame(schema=PAIR_SCHEMA)
