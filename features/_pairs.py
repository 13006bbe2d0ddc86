"""Pairs of features: mergeable three-way counts (level of a, level of b, class) and chance-corrected interaction.

Every feature is first *capped* to at most ``L`` codes (:class:`PairCoder`): its ``L - 1`` most frequent levels
of the final table (ties broken by the level's class counts, so a re-coded copy gets the same codes as its
original) keep their own code and every other level shares one "other" code. A pair's joint variable therefore
has at most ``L**2`` values whatever the cardinalities of its two features. Missing values are a level like any
other (or, with ``missing="drop"``, a slot whose rows are left out of the pair).

The cap (:func:`pair_cap`): a fixed ``pair_levels``, or ``"auto"`` (the default), which grows with the rows,
``L * L <= n_rows / pair_min_count`` (16 <= L <= 16,384), so that a pair of two high-cardinality IDs keeps enough
of their levels to show a user x item affinity (a 16-level cap keeps 15 users and 15 items: a fraction of a
percent of the rows' pairs, and the signal is lost in "other"). The default ``pair_min_count = 0.25`` lets a
pair's table hold up to 4 joint values per row: the chance correction below is computed for the actual capped
table (its own margins, whatever its size), so a sparse table is no bias, and measured on ``make_affinity_log``
(2,000 users x 1,500 items, uniform, 300k rows, 6 seeds) the planted pair ranked first 6 of 6 times at 0.25 and
0.1 and 4 of 6 at 1.0 (``L`` 1,095, 1,417 and 547), never at ``L = 16``. Memory is bounded: ``L`` is lowered
until the counts of all pairs, ``sum (size_a + 1)(size_b + 1) n_classes`` int64 cells, fit in ``pair_max_cells``
(default 2**24 cells, 128 MiB; one such array per batch, and per Ray shard in flight, plus the codes of a batch,
``n_features x batch_size`` int16).

One pass counts, for every pair (i, j), the table ``T[code_i, code_j, class]`` into one flat int64 array
(:class:`PairCounts`); two passes over different rows merge by adding the arrays, so streamed batches and Ray
shards give exactly the unsplit counts.

From each table (Vinh, Epps & Bailey 2010 for the chance baseline, as in ``_chance``):

- ``score`` (chance-corrected interaction information) = AMI((a,b); Y) - AMI(a; Y) - AMI(b; Y), where each
  AMI = plug-in MI - its exact expected value under a permutation of the labels for that variable's own
  margin (the joint variable's for the first term). Positive for XOR-like pairs (signal only jointly), about 0
  for a pair of independent noise features of any cardinality, negative for redundant pairs.
- ``redundancy`` = (I(a;b) - E[I(a;b)]) / (min(H(a), H(b)) - E[I(a;b)]) in [0, 1] (the greedy methods use it),
  and ``mi_ab`` = I(a;b) - E[I(a;b)] in nats; here E is the cheap Poisson approximation (``_chance``).
- ``lowrank_z``, for a pair of two high-cardinality features: the low-rank interaction test of ``_lowrank`` (a
  user x item affinity, which the cell-by-cell MI above cannot see when the table has about a row per cell).
  Pairs whose ``z`` reaches ``RankOptions.lowrank_z`` (``low_rank``) rank first, by ``z``; the rest follow by
  ``score``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import polars as pl

from sparsearch.errors import DataError, SpecError

from ._chance import ExpectedMI, col_sums, entropy, expected_mi_poisson, row_sums, table_mi
from ._counts import Keys, TargetSpec, float_buckets
from ._io import Source
from ._lowrank import Z_MIN as LOWRANK_Z
from ._lowrank import LowRank, lowrank_interaction, tested
from ._tables import MAX_PAIR_LEVELS, PAIR_LEVELS, Finalized, RankOptions, class_codes, order_by_score


@dataclass
class PairCoder:
    """Maps a column of one feature to its capped codes in ``[0, size)``; ``size`` itself marks a dropped row."""

    name: str
    float_keys: np.ndarray | None  # float features: sorted counted keys (searchsorted)
    key_code: np.ndarray  # float features: code of each key; others: code of each kept key
    kept: list[Any]  # other features: the kept keys (their codes are key_code)
    null_code: int
    other: int
    size: int
    levels: int  # levels of the final table before capping
    lut_lo: int = 0  # integer features of a small value range: code of value v is lut[v - lut_lo]
    lut: np.ndarray | None = None

    @property
    def capped(self) -> bool:
        """Whether levels share the last code ("other")."""
        return self.levels > self.size

    @property
    def own_codes(self) -> int:
        """Codes that each hold one level (all but "other")."""
        return self.size - 1 if self.capped else self.size

    @classmethod
    def build(cls, fin: Finalized, pair_levels: int) -> PairCoder:
        table = fin.table
        totals = row_sums(table)
        n_levels = len(totals)
        if n_levels <= pair_levels:
            level_code = np.arange(n_levels, dtype=np.int64)
            size = max(n_levels, 1)
            other = size  # unused
        else:
            # most frequent first; equal totals by the class counts, so re-coded copies keep the same codes
            keys = [table[:, j] for j in range(table.shape[1] - 1, -1, -1)] + [-totals]
            by_freq = np.lexsort(keys)
            level_code = np.full(n_levels, pair_levels - 1, dtype=np.int64)
            level_code[by_freq[: pair_levels - 1]] = np.arange(pair_levels - 1)
            other, size = pair_levels - 1, pair_levels
        null_code = int(level_code[fin.null_level]) if fin.null_level >= 0 else size
        key_code = level_code[fin.key_level] if len(fin.key_level) else np.zeros(0, dtype=np.int64)
        if fin.numeric:
            return cls(fin.name, np.asarray(fin.keys, dtype=np.float64), key_code, [], null_code, other, size, n_levels)
        if isinstance(fin.keys, np.ndarray) and len(fin.keys):
            lo, hi = int(fin.keys[0]), int(fin.keys[-1])  # sorted integer keys
            if hi - lo < max(8 * len(fin.keys), 1 << 16):  # a lookup table of at most a few MB
                lut = np.full(hi - lo + 1, other, dtype=np.int16)
                lut[fin.keys - lo] = key_code
                return cls(fin.name, None, key_code, [], null_code, other, size, n_levels, lo, lut)
        keep = np.flatnonzero(key_code != other) if n_levels > pair_levels else np.arange(len(key_code))
        kept = fin.keys[keep].to_list() if isinstance(fin.keys, pl.Series) else fin.keys[keep].tolist()
        return cls(fin.name, None, key_code[keep], kept, null_code, other, size, n_levels)

    def codes(self, s: pl.Series) -> np.ndarray:
        if s.dtype.is_float():
            s = s.fill_nan(None)
        valid = s.is_not_null()
        out = np.full(s.len(), self.null_code, dtype=np.int64)
        if self.float_keys is not None:
            if not len(self.key_code):
                return out
            vals = s.filter(valid).cast(pl.Float64).to_numpy()
            pos = np.searchsorted(self.float_keys, float_buckets(vals))
            out[valid.to_numpy()] = self.key_code[np.minimum(pos, len(self.key_code) - 1)]
            return out
        if s.dtype == pl.Boolean:
            s = s.cast(pl.Int8)
        elif s.dtype.is_temporal():
            s = s.to_physical()
        elif isinstance(s.dtype, (pl.Categorical, pl.Enum)) or not (s.dtype.is_integer() or s.dtype == pl.String):
            s = s.cast(pl.String)
        if self.lut is not None and s.dtype.is_integer():
            idx = s.fill_null(self.lut_lo).to_numpy().astype(np.int64) - self.lut_lo
            inside = (idx >= 0) & (idx < len(self.lut))
            codes = np.where(inside, self.lut[np.clip(idx, 0, len(self.lut) - 1)], self.other)
        elif not self.kept:
            codes = np.full(s.len(), self.other, dtype=np.int64)
        else:
            kept = pl.Series(self.kept, dtype=pl.String if s.dtype == pl.String else pl.Int64)
            s = s.cast(kept.dtype)
            codes = s.replace_strict(kept, pl.Series(self.key_code), default=self.other, return_dtype=pl.Int64).to_numpy()
        mask = valid.to_numpy()
        out[mask] = codes[mask]
        return out


@dataclass
class PairCounts:
    """Flat int64 counts of every pair's (code_a, code_b, class) table; :meth:`merge` adds them (exact)."""

    flat: np.ndarray
    n_rows: int

    def merge(self, other: PairCounts) -> PairCounts:
        return PairCounts(self.flat + other.flat, self.n_rows + other.n_rows)


class PairPlan:
    """Which pairs to count and how: a picklable ``(batch, offset) -> PairCounts`` for streams and Ray tasks."""

    def __init__(self, coders: list[PairCoder], pairs: list[tuple[int, int]], tspec: TargetSpec, classes: Keys):
        self.coders, self.pairs, self.tspec, self.classes = coders, pairs, tspec, classes
        self.k = len(classes)
        self.shapes = [(coders[i].size + 1, coders[j].size + 1, self.k) for i, j in pairs]
        sizes = [a * b * c for a, b, c in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.columns = [c.name for c in coders]

    def __call__(self, df: pl.DataFrame, offset: int = 0) -> PairCounts:
        y = df.get_column(self.tspec.name)
        if y.dtype.is_float():
            y = y.fill_nan(None)
        if y.null_count():
            keep = y.is_not_null()
            df, y = df.filter(keep), y.filter(keep)
        yc = class_codes(y, self.tspec, self.classes)
        # int16 codes (at most 257 values): a batch of a million rows x 100 features holds 200 MB
        codes = np.stack([c.codes(df.get_column(c.name)).astype(np.int16) for c in self.coders]) if self.coders \
            else np.zeros((0, len(yc)), dtype=np.int16)
        flat = np.zeros(int(self.offsets[-1]), dtype=np.int64)
        by_first: dict[int, list[int]] = {}
        for p, (i, _) in enumerate(self.pairs):
            by_first.setdefault(i, []).append(p)
        n = len(yc)
        y32 = yc.astype(np.int32)
        for i, ps in by_first.items():
            js = np.array([self.pairs[p][1] for p in ps], dtype=np.int64)
            lo = int(self.offsets[ps].min())
            hi = int(max(self.offsets[p + 1] for p in ps))
            dt = np.int32 if hi - lo < 2**31 else np.int64  # int32 when the group's cells fit (they nearly always do)
            rel = (self.offsets[ps] - lo)[:, None].astype(dt)
            stride_b = (self.coders[i].size + 1) * self.k
            # every pair (i, j) of this first feature in one bincount per chunk of rows, laid out per pair as
            # [code_b, code_a, class]; chunks bound the int64 temporaries to a few tens of MB
            chunk = max(1, (1 << 22) // max(len(ps), 1))
            for start in range(0, n, chunk):
                stop = min(n, start + chunk)
                base = codes[i, start:stop].astype(dt) * self.k + y32[start:stop]  # (code_a, class)
                z = codes[js, start:stop].astype(dt)
                z *= stride_b  # in place, and int32: fewer passes over memory than int64 temporaries
                z += base
                z += rel
                flat[lo:hi] += np.bincount(z.ravel(), minlength=hi - lo)
        return PairCounts(flat, len(yc))

    def table(self, counts: PairCounts, p: int) -> np.ndarray:
        """Pair ``p``'s table ``[code_a, code_b, class]`` without the dropped-row slots."""
        a, b, k = self.shapes[p]
        t = counts.flat[self.offsets[p] : self.offsets[p + 1]].reshape(b, a, k).transpose(1, 0, 2)
        return t[: a - 1, : b - 1, :]


def count_pairs(src: Source, plan: PairPlan, *, batch_size: int, use_ray: bool, ray_address: str | None,
                progress: Callable[[int, int | None], None] | None = None) -> PairCounts:
    """One pass over the rows (streamed, or Ray shards) counting every pair of ``plan``."""
    cols = [*plan.columns, plan.tspec.name]
    if use_ray or ray_address is not None:
        from ._distributed import map_shards

        return map_shards(src, cols, plan, batch_size=batch_size, ray_address=ray_address, progress=progress)
    acc: PairCounts | None = None
    done = 0
    for offset, df in src.batches(cols, batch_size):
        part = plan(df, offset)
        acc = part if acc is None else acc.merge(part)
        done += df.height
        if progress is not None:
            progress(done, src.n_rows)
    if acc is None:
        raise DataError("data has no rows")
    return acc


@dataclass
class PairScore:
    joint_mi: float
    chance_joint: float
    mi_a: float
    chance_a: float
    mi_b: float
    chance_b: float
    mi_ab: float
    chance_ab: float
    ha: float
    hb: float
    lowrank: LowRank | None = None  # the low-rank interaction test (``_lowrank``), for two high-cardinality features

    @property
    def score(self) -> float:
        return (self.joint_mi - self.chance_joint) - (self.mi_a - self.chance_a) - (self.mi_b - self.chance_b)

    @property
    def redundancy(self) -> float:
        """Chance-adjusted I(a;b) over the smaller entropy, in [0, 1]: 1 for a (re-coded) copy."""
        den = min(self.ha, self.hb) - self.chance_ab
        if den <= 1e-12:
            return 1.0 if min(self.ha, self.hb) > 0 and self.mi_ab >= min(self.ha, self.hb) - 1e-12 else 0.0
        return float(np.clip((self.mi_ab - self.chance_ab) / den, 0.0, 1.0))

    @property
    def shared(self) -> float:
        """Chance-adjusted I(a;b) in nats (mRMR's redundancy term)."""
        return max(0.0, self.mi_ab - self.chance_ab)


APPROX_ABOVE = 50.0  # expected cell counts from which the chance MI uses its second-order expansion


class _Chance:
    """Exact expected MI under label permutation, cached per column margin and distinct row total.

    Rows whose expected cell counts reach :data:`APPROX_ABOVE` use the second-order expansion (relative error
    about 0.3%): the exact window sum per distinct row total is too slow for thousands of pairs on millions of
    rows, and it is the small cells, where the expansion fails, that carry the cardinality bias.
    """

    def __init__(self) -> None:
        self.cache: dict[tuple[int, ...], ExpectedMI] = {}

    def __call__(self, table: np.ndarray) -> float:
        colsum = col_sums(table)
        key = tuple(colsum.tolist())
        if key not in self.cache:
            self.cache[key] = ExpectedMI(colsum, approx_above=APPROX_ABOVE)
        return self.cache[key](row_sums(table))


def score_pairs(plan: PairPlan, counts: PairCounts, *, interaction: bool = True,
                lowrank: bool = True) -> list[PairScore]:
    """Information quantities of every pair; ``interaction=False`` skips the joint term's chance baseline (then
    only ``redundancy`` and ``shared`` are meaningful: what ``mrmr`` uses). ``lowrank`` (with ``interaction``) also
    runs the low-rank interaction test (:mod:`._lowrank`) on each pair of two features that both keep at least
    ``_lowrank.MIN_LEVELS`` codes of their own, seeded by the pair's position (deterministic)."""
    chance = _Chance()
    out = []
    for p, (i, j) in enumerate(plan.pairs):
        t = plan.table(counts, p)
        la, lb, k = t.shape
        joint = np.ascontiguousarray(t.reshape(la * lb, k))
        ta = t.sum(axis=1)
        tb = t.sum(axis=0)
        tab = np.ascontiguousarray(t.sum(axis=2))
        joint_mi = table_mi(joint)[0]
        mi_a = table_mi(ta)[0]
        mi_b = table_mi(tb)[0]
        mi_ab = table_mi(tab)[0]
        ra, cb = row_sums(tab), col_sums(tab)
        test = None
        coder_a, coder_b = plan.coders[i], plan.coders[j]
        if interaction and lowrank and tested(coder_a.own_codes, coder_b.own_codes):
            test = lowrank_interaction(t, drop_other_a=coder_a.capped, drop_other_b=coder_b.capped, seed=p)
        out.append(PairScore(
            joint_mi, chance(joint) if interaction else 0.0, mi_a, chance(ta), mi_b, chance(tb), mi_ab, expected_mi_poisson(ra, cb),
            entropy(ra), entropy(cb), test,
        ))
    return out


def candidate_features(finals: list[Finalized], relevance: np.ndarray, max_pair_features: int) -> list[int]:
    """All features when there are at most ``max_pair_features``, else the ``max_pair_features`` most relevant.

    The rule: descending single-feature score (adjusted MI), ties in column order; the chosen keep column order.
    A pair whose features both carry no marginal signal (a pure XOR) is found only among the candidates, so
    with more features than that, name the candidates with ``features``.
    """
    if len(finals) <= max_pair_features:
        return list(range(len(finals)))
    return sorted(int(i) for i in order_by_score(relevance)[:max_pair_features])


def pair_order(scores: list[PairScore], lowrank_z: float) -> np.ndarray:
    """Best first: the pairs whose low-rank test reaches ``lowrank_z`` (by ``z``), then the others by their
    chance-corrected interaction information (``score``); ties in pair order."""
    if not scores:
        return np.zeros(0, dtype=np.int64)
    z = np.array([s.lowrank.z if s.lowrank is not None else -np.inf for s in scores], dtype=np.float64)
    flagged = z >= lowrank_z
    first = np.flatnonzero(flagged)[order_by_score(z[flagged])] if flagged.any() else np.zeros(0, dtype=np.int64)
    rest_idx = np.flatnonzero(~flagged)
    sc = np.array([scores[p].score for p in rest_idx], dtype=np.float64)
    rest = rest_idx[order_by_score(sc)] if len(rest_idx) else np.zeros(0, dtype=np.int64)
    return np.concatenate([first, rest]).astype(np.int64)


def pair_table(names: Sequence[str], coders: list[PairCoder], plan: PairPlan, scores: list[PairScore],
               top: int | None, lowrank_z: float = LOWRANK_Z) -> pl.DataFrame:
    """The ranked pairs (:func:`pair_order`; ``top`` rows, or all)."""
    order = pair_order(scores, lowrank_z)
    if top is not None:
        order = order[:top]
    rows = []
    for r, p in enumerate(order.tolist()):
        i, j = plan.pairs[p]
        s = scores[p]
        z = s.lowrank.z if s.lowrank is not None else None
        rows.append({
            "feature_a": names[i], "feature_b": names[j], "score": s.score, "rank": r + 1,
            "joint_mi": s.joint_mi, "chance_joint_mi": s.chance_joint,
            "adjusted_joint_mi": s.joint_mi - s.chance_joint,
            "adjusted_mi_a": s.mi_a - s.chance_a, "adjusted_mi_b": s.mi_b - s.chance_b,
            "levels_a": coders[i].size, "levels_b": coders[j].size,
            "redundancy": s.redundancy, "lowrank_z": z, "low_rank": z is not None and z >= lowrank_z,
        })
    return pl.DataFrame(rows, schema=PAIR_SCHEMA)


PAIR_SCHEMA = {
    "feature_a": pl.String, "feature_b": pl.String, "score": pl.Float64, "rank": pl.Int64, "joint_mi": pl.Float64,
    "chance_joint_mi": pl.Float64, "adjusted_joint_mi": pl.Float64, "adjusted_mi_a": pl.Float64,
    "adjusted_mi_b": pl.Float64, "levels_a": pl.Int64, "levels_b": pl.Int64, "redundancy": pl.Float64,
    "lowrank_z": pl.Float64, "low_rank": pl.Boolean,
}


def pair_cap(finals: list[Finalized], chosen: list[int], n_classes: int, n_rows: int, pairs: list[tuple[int, int]],
             *, pair_levels: int | str, min_count: float, max_cells: int) -> int:
    """The cap of every chosen feature's codes in a pair (see :class:`~sparsearch.features.RankOptions`).

    ``"auto"``: the largest ``L`` with ``L * L <= n_rows / min_count`` (so a pair of two capped features keeps at
    least ``min_count`` rows per joint value on average), at least :data:`PAIR_LEVELS` and at most
    :data:`MAX_PAIR_LEVELS`, then lowered (bisection) until the pass's counted cells, the sum over pairs of
    ``(size_a + 1) * (size_b + 1) * n_classes`` with ``size = min(levels, L)``, fit in ``max_cells``. A fixed
    ``pair_levels`` is used as given, or refused when its cells do not fit. The chance correction is computed on
    the capped tables themselves, so it is exact for whatever cap this returns.

    Raises:
        SpecError: the cells do not fit ``max_cells`` (a fixed cap, or ``"auto"`` even at 2 codes per feature).
    """
    levels = np.array([max(finals[i].table.shape[0], 1) for i in chosen], dtype=np.int64)
    pa = np.array([a for a, _ in pairs], dtype=np.int64)
    pb = np.array([b for _, b in pairs], dtype=np.int64)

    def cells(cap: int) -> int:
        size = np.minimum(levels, cap) + 1
        return int(np.sum(size[pa] * size[pb])) * n_classes

    if pair_levels != "auto":
        cap = int(pair_levels)
        if cells(cap) > max_cells:
            raise SpecError(f"pair_levels={cap} needs {cells(cap):,} counted cells for {len(pairs)} pairs, over "
                            f"pair_max_cells={max_cells:,}; lower pair_levels, use 'auto', or raise pair_max_cells")
        return cap
    hi = int(np.sqrt(n_rows / min_count))
    hi = min(max(hi, PAIR_LEVELS), MAX_PAIR_LEVELS, int(levels.max()) if len(levels) else PAIR_LEVELS)
    hi = max(hi, 2)
    if cells(hi) <= max_cells:
        return hi
    if cells(2) > max_cells:
        raise SpecError(f"{len(pairs)} pairs of {len(chosen)} features and {n_classes} classes need "
                        f"{cells(2):,} counted cells even at 2 codes per feature, over pair_max_cells={max_cells:,}; "
                        "raise pair_max_cells or lower max_pair_features")
    lo = 2  # cells(lo) fits, cells(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cells(mid) <= max_cells else (lo, mid)
    return lo


def plan_pairs(finals: list[Finalized], chosen: list[int], tspec: TargetSpec, classes: Keys, opts: RankOptions,
               n_rows: int, pairs: list[tuple[int, int]] | None = None) -> PairPlan:
    """A plan over the features ``chosen`` (indices into ``finals``): all their pairs, or the given ones, each
    feature capped by :func:`pair_cap` of the options."""
    pairs = list(combinations(range(len(chosen)), 2)) if pairs is None else pairs
    cap = pair_cap(finals, chosen, len(classes), n_rows, pairs, pair_levels=opts.pair_levels,
                   min_count=opts.pair_min_count, max_cells=opts.pair_max_cells)
    coders = [PairCoder.build(finals[i], cap) for i in chosen]
    return PairPlan(coders, pairs, tspec, classes)
