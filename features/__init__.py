"""sparsearch.features: cardinality-aware mutual-information feature ranking for large categorical tables.

Plain mutual information ranks ID-like noise at the top, because its chance value grows with cardinality. The
default method here, ``adjusted-mi``, subtracts the exact expected MI under independence for each feature's own
value distribution. Counting is the whole cost and is mergeable, so ranking streams over files in batches and
shards over Ray with exactly the in-memory result.

Example:
    >>> from sparsearch.features import make_click_log, rank_features
    >>> df = make_click_log(5_000, n_noise=6, seed=0)
    >>> ranking = rank_features(df, "click")
    >>> ranking.columns[:7]
    ['feature', 'score', 'rank', 'cardinality', 'missing_rate', 'mi', 'chance_mi']
"""

from __future__ import annotations

from ._cache import RankingCache, cached_rank_features
from ._datasets import DATASETS, make_affinity_log, make_click_log
from ._estimators import METHODS, Ranker, available_methods
from ._greedy import pairwise_relevance
from ._io import data_fingerprint, iter_batches, read_table, validate_target
from ._plot import plot_ranking
from ._quality import quality_report
from ._rank import rank_features
from ._run import REPORTS, RankResult, rank, rank_interactions
from ._tables import RankOptions


def __getattr__(name: str):
    # the scikit-learn selector loads scikit-learn (seconds): only when asked for
    if name == "CardinalityAwareSelector":
        from ._selector import CardinalityAwareSelector

        return CardinalityAwareSelector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASETS",
    "METHODS",
    "REPORTS",
    "CardinalityAwareSelector",
    "RankOptions",
    "RankResult",
    "Ranker",
    "available_methods",
    "RankingCache",
    "cached_rank_features",
    "data_fingerprint",
    "iter_batches",
    "make_affinity_log",
    "make_click_log",
    "pairwise_relevance",
    "plot_ranking",
    "quality_report",
    "rank",
    "rank_features",
    "rank_interactions",
    "read_table",
    "validate_target",
]
