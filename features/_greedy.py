"""Pairwise statistics (a second counting pass) and the redundancy-aware greedy methods ``mrmr`` and ``3mr``.

For every pair (a, b) of pool features the pass counts the three-way table of (level of a, level of b, class),
merged exactly across batches like the marginal counts. From it:

- ``mi_pair`` = I((a, b); Y) with its exact chance baseline (the pair as one categorical variable), and the
  synergy ``gain`` = adjusted I((a,b);Y) - adjusted I(a;Y) - adjusted I(b;Y): positive for XOR-like pairs;
- ``redundancy`` = (I(a;b) - E) / (min(H(a), H(b)) - E) clipped to [0, 1], with E the Poisson chance MI of the
  two margins: 1 for a (re-coded) copy, about 0 for independent features of any cardinality.

Greedy selection, every term chance-corrected, on the pool's pairs counted with capped codes (``_pairs``):

- ``mrmr`` is Peng, Long & Ding's (2005) mRMR in its difference form (MID): the next feature maximises
  relevance - mean over the selected features s of I(f; s), all in nats (relevance = adjusted MI with the
  target, I(f; s) chance-adjusted). An exact copy of a selected feature X loses H(X) / |selected|, which exceeds
  its relevance, so it falls below independent informative features.
- ``3mr`` (our take on OutRank's 3MR) picks the feature maximising rel * (1 - max redundancy with the selected
  set) + the mean positive interaction information with them: an exact copy scores about 0 once its original is
  in, and a feature that only works jointly with a selected one (XOR) is lifted.

Negative relevance is kept as is. The pair pass of :func:`pair_stats` (uncapped levels) serves the quality
report's duplicate checks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import polars as pl

from sparsearch.errors import SpecError

from ._chance import ExpectedMI, col_sums, entropy, expected_mi_poisson, row_sums, table_mi
from ._counts import Counts, TargetSpec
from ._estimators import FeatureStats
from ._io import Source
from ._pairs import PairScore, count_pairs, plan_pairs, score_pairs
from ._tables import (
    PAIR_LEVELS,
    Finalized,
    RankOptions,
    count,
    feature_stats,
    finalize,
    iter_level_batches,
    order_by_score,
    prepare,
    tie_key,
)


@dataclass
class PairStat:
    mi_pair: float
    chance_pair: float
    mi_ab: float
    chance_ab: float
    redundancy: float
    ha: float = 0.0
    hb: float = 0.0

    @property
    def symmetric(self) -> float:
        """Chance-adjusted MI(a;b) over the larger entropy: 1 only when each feature determines the other."""
        den = max(self.ha, self.hb) - self.chance_ab
        if den <= 1e-12:
            return 0.0
        return float(np.clip((self.mi_ab - self.chance_ab) / den, 0.0, 1.0))


def _merge_sparse(acc: tuple[np.ndarray, np.ndarray] | None, keys: np.ndarray, cnt: np.ndarray):
    """Merge two sorted-unique sparse count vectors (a stable sort of two sorted runs is a linear merge)."""
    if acc is None:
        return keys, cnt
    allk = np.concatenate([acc[0], keys])
    order = np.argsort(allk, kind="stable")
    sk = allk[order]
    sc = np.concatenate([acc[1], cnt])[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    return sk[starts], np.add.reduceat(sc, starts)


def _group_sorted(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values and inverse of an already sorted array, in linear time."""
    flag = np.r_[True, z[1:] != z[:-1]]
    return z[flag], np.cumsum(flag) - 1


def pair_stats(
    src: Source,
    finals: list[Finalized],
    tspec: TargetSpec,
    counts: Counts,
    batch_size: int,
    pairs: list[tuple[int, int]] | None = None,
) -> dict[tuple[int, int], PairStat]:
    """Count pairs of ``finals`` (all, or the given index pairs with i < j) against the target in one pass."""
    k = len(counts.classes)
    levels = [f.table.shape[0] for f in finals]
    pairs = list(combinations(range(len(finals)), 2)) if pairs is None else pairs
    acc: dict[tuple[int, int], tuple[np.ndarray, np.ndarray] | None] = dict.fromkeys(pairs)
    for codes, y in iter_level_batches(src, finals, tspec, counts.classes, batch_size):
        valid = [c >= 0 for c in codes]
        all_valid = [bool(v.all()) for v in valid]
        for i, j in pairs:
            ci, cj, yy = codes[i], codes[j], y
            if not (all_valid[i] and all_valid[j]):
                m = valid[i] & valid[j]
                ci, cj, yy = ci[m], cj[m], y[m]
            z = (ci * levels[j] + cj) * k + yy
            size = levels[i] * levels[j] * k
            if size <= max(len(z), 1 << 20):  # dense counting wins only for small tables
                c = np.bincount(z, minlength=size)
                nz = np.flatnonzero(c)
                keys, cnt = nz, c[nz]
            elif size < 1 << 32:  # numpy's unique is several times faster on 4-byte keys
                keys, cnt = np.unique(z.astype(np.uint32), return_counts=True)
            else:
                keys, cnt = np.unique(z, return_counts=True)
            key_type = np.uint32 if size < 1 << 32 else np.int64
            acc[(i, j)] = _merge_sparse(acc[(i, j)], keys.astype(key_type), cnt.astype(np.int64))
    out: dict[tuple[int, int], PairStat] = {}
    emis: dict[tuple[int, ...], ExpectedMI] = {}
    for (i, j), sparse in acc.items():
        if sparse is None or len(sparse[0]) == 0:
            out[(i, j)] = PairStat(0.0, 0.0, 0.0, 0.0, 0.0)
            continue
        keys, cnt = sparse
        keys = keys.astype(np.int64)
        z, yy = keys // k, keys % k
        zu, zinv = _group_sorted(z)  # keys are sorted, so z = keys // k is sorted too
        table = np.zeros((len(zu), k), dtype=np.int64)
        table[zinv, yy] = cnt
        mi_pair = table_mi(table)[0]
        colsum = col_sums(table)
        key = tuple(colsum.tolist())
        if key not in emis:
            emis[key] = ExpectedMI(colsum)
        joint = row_sums(table)
        chance_pair = emis[key](joint)
        a = np.bincount(zu // levels[j], weights=joint).astype(np.int64)
        b = np.bincount(zu % levels[j], weights=joint).astype(np.int64)
        ha, hb = entropy(a), entropy(b)
        mi_ab = max(0.0, ha + hb - entropy(joint))
        chance_ab = expected_mi_poisson(a, b)
        den = min(ha, hb) - chance_ab
        red = float(np.clip((mi_ab - chance_ab) / den, 0.0, 1.0)) if den > 1e-12 else (1.0 if min(ha, hb) > 0 and mi_ab >= min(ha, hb) - 1e-12 else 0.0)
        out[(i, j)] = PairStat(mi_pair, chance_pair, mi_ab, chance_ab, red, ha, hb)
    return out


def greedy_order(
    src: Source,
    finals: list[Finalized],
    counts: Counts,
    tspec: TargetSpec,
    *,
    relevance: np.ndarray,
    relational: bool,
    opts: RankOptions,
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy order of the pool, then the remaining features by relevance. Returns (order, score).

    The pool's pairs are counted in one pass of capped codes (``_pairs``: streamed or on Ray like the
    single-feature counts), so the pass costs about one more count of ``pool_size`` columns.
    """
    by_rel = order_by_score(relevance)
    pool = [int(i) for i in by_rel[: opts.pool_size]]
    # redundancy's chance term is the Poisson approximation, good only for tables with several rows per cell:
    # "auto" (which grows the cap past the rows for interactions) means the fixed 16-level cap here
    if opts.pair_levels == "auto":
        opts = dataclasses.replace(opts, pair_levels=PAIR_LEVELS)
    plan = plan_pairs(finals, pool, tspec, counts.classes, opts, counts.n_rows)
    pair_counts = count_pairs(src, plan, batch_size=opts.batch_size, use_ray=opts.ray, ray_address=opts.ray_address)
    stats = dict(zip(plan.pairs, score_pairs(plan, pair_counts, interaction=relational, lowrank=False)))

    def pair(a: int, b: int) -> PairScore:
        return stats[(a, b)] if a < b else stats[(b, a)]

    selected: list[int] = []
    score = relevance.astype(np.float64).copy()
    remaining = list(range(len(pool)))
    while remaining:
        best, best_val = -1, -np.inf
        for p in remaining:
            rel = float(relevance[pool[p]])
            if not relational:  # mRMR (MID): relevance minus the mean information shared with the selected
                val = rel - (float(np.mean([pair(p, s).shared for s in selected])) if selected else 0.0)
            else:
                pen = max((pair(p, s).redundancy for s in selected), default=0.0)
                val = max(rel, 0.0) * (1.0 - pen) + min(rel, 0.0)
                if selected:
                    val += float(np.mean([max(0.0, pair(p, s).score) for s in selected]))
            if best < 0 or val > best_val + 1e-12 * max(1.0, abs(best_val)):
                best, best_val = p, val
        selected.append(best)
        remaining.remove(best)
        score[pool[best]] = best_val
    order = [pool[p] for p in selected] + [int(i) for i in by_rel[opts.pool_size :]]
    return np.asarray(order, dtype=np.int64), score


def pairwise_table(
    src: Source, finals: list[Finalized], counts: Counts, tspec: TargetSpec, st: FeatureStats, batch_size: int
) -> pl.DataFrame:
    stats = pair_stats(src, finals, tspec, counts, batch_size)
    rows = []
    for (i, j), ps in stats.items():
        a, b = finals[i].name, finals[j].name
        ia, ib = st.names.index(a), st.names.index(b)
        adj_a = st.mi[ia] - st.expected[ia]
        adj_b = st.mi[ib] - st.expected[ib]
        adj_pair = ps.mi_pair - ps.chance_pair
        rows.append(
            {
                "feature_a": a,
                "feature_b": b,
                "mi_pair": ps.mi_pair,
                "chance_mi_pair": ps.chance_pair,
                "adjusted_mi_pair": adj_pair,
                "adjusted_mi_a": adj_a,
                "adjusted_mi_b": adj_b,
                "gain": adj_pair - adj_a - adj_b,
                "mi_ab": ps.mi_ab,
                "redundancy": ps.redundancy,
            }
        )
    schema = {
        "feature_a": pl.String, "feature_b": pl.String, "mi_pair": pl.Float64, "chance_mi_pair": pl.Float64,
        "adjusted_mi_pair": pl.Float64, "adjusted_mi_a": pl.Float64, "adjusted_mi_b": pl.Float64,
        "gain": pl.Float64, "mi_ab": pl.Float64, "redundancy": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema).sort("gain", descending=True, maintain_order=True)


def pairwise_relevance(
    data,
    target: str,
    features: list[str] | None = None,
    top: int = 20,
    *,
    n_bins: int = 16,
    missing: str = "category",
    batch_size: int = 1_000_000,
    feature_names=None,
) -> pl.DataFrame:
    """Relevance of feature pairs: MI of each pair (as one variable) with the target, and its gain over the parts.

    Pairs are formed among ``features`` or, by default, the ``top`` features by adjusted MI. An XOR-like pair
    (no marginal signal, full joint signal) has a large positive ``gain``.

    Returns:
        polars DataFrame sorted by ``gain``: ``feature_a, feature_b, mi_pair, chance_mi_pair, adjusted_mi_pair,
        adjusted_mi_a, adjusted_mi_b, gain, mi_ab, redundancy``.

    Example:
        >>> import numpy as np, polars as pl
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.integers(0, 2, 400), rng.integers(0, 2, 400)
        >>> df = pl.DataFrame({"a": a, "b": b, "y": a ^ b})
        >>> pairwise_relevance(df, "y")["gain"][0] > 0.5
        True
    """
    opts = RankOptions(n_bins=n_bins, missing=missing, batch_size=batch_size)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 2:
        raise SpecError(f"top must be an integer >= 2, got {top!r}")
    src, _, feats, tspec = prepare(data, target, features, n_bins, feature_names)
    counts = count(src, feats, tspec, opts, null_kind=None)
    finals = [finalize(counts.features[f], f, counts.n_rows, n_bins, missing) for f in feats]
    st = feature_stats(finals, None, n_bins, missing, counts.n_rows)
    if features is None:
        order = np.argsort(-tie_key(st.mi - st.expected), kind="stable")[:top]
        chosen = [finals[i] for i in sorted(order.tolist())]
    else:
        chosen = finals
    if len(chosen) < 2:
        raise SpecError(f"pairwise relevance needs at least 2 features, got {len(chosen)}")
    return pairwise_table(src, chosen, counts, tspec, st, batch_size)
