"""Low-rank interaction between two high-cardinality features: a permutation test on the pair's counts.

Why: a user x item affinity (a click logit ``u_user . v_item``) lives in a joint table with about one row per
cell or fewer. The plug-in MI of such a table is near its maximum for signal and noise alike, so the
chance-corrected interaction information of :mod:`._pairs` cannot tell the planted pair from pairs of noise
columns of similar size (measured on ``make_affinity_log``: the planted pair ranked first or second on 3 of 5
seeds). What distinguishes it is structure across cells: the residual matrix of the pair is low-rank. That is
what this test measures, pooling every row of a user and every row of an item.

From a pair's table ``T[a, b, class]`` (the merged counts of :class:`._pairs.PairCounts`: exact whether the rows
were streamed or counted on Ray shards), per class ``c`` (class 1 alone for a binary target, every class
otherwise):

1. ``R_c[a, b] = S_c[a, b] - N[a, b] * expit(mu_c + alpha_c[a] + beta_c[b])``: the sum over the cell's rows
   of the residual of the class indicator after a logistic model with additive main effects of ``a`` and ``b``
   (fitted on the table by Newton backfitting, a small ridge per level). Additive on the logit scale, not the
   probability scale: a pair of two features with strong separate effects is curved on the probability scale
   (rank-one residuals, z over 100 in a check with logit effects of scale 1.5), and that curvature is no
   interaction a model with a logistic output needs to learn.
2. The statistic is the largest singular value of ``[R_1 | R_2 | ...]`` (one column block per class). The shared
   "other" code of a capped feature (its rows are many levels pooled) is left out of the matrix.
3. The null: the labels permuted over the rows, keeping the pair's cells. A draw of the permuted table is a
   multivariate hypergeometric split of each class's total over the cells (``numpy.random.Generator.
   multivariate_hypergeometric``: exact, from the counts alone); the main effects are fitted again on the draw
   and its largest singular value taken, as for the data.
4. ``z = (statistic - mean of the draws) / their standard deviation``. The draws are seeded (the result is
   deterministic): :data:`SCREEN_DRAWS` for every pair, then :data:`DRAWS` in all for a pair whose screening
   ``z`` reaches :data:`SCREEN_Z` (most noise pairs stop at the screen).

On ``make_affinity_log`` (2,000 users x 1,500 items, 180,000 training rows, cap 848) the planted pair scored
z = 12-20 on three development seeds, every other pair of the table at most 6.1, most of them below 2; a pair
of small features (a few levels) has a noisy z, so only pairs whose two features both keep at least
:data:`MIN_LEVELS` codes are tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

MIN_LEVELS = 16  # codes (without the shared "other") each feature of a tested pair keeps at least
SCREEN_DRAWS = 4  # permutation draws every tested pair gets
DRAWS = 16  # permutation draws in all for a pair past the screen
SCREEN_Z = 3.0  # screening z from which a pair gets the remaining draws
Z_MIN = 6.0  # default z from which a pair counts as a low-rank interaction (ranked first, crossed)
_BACKFIT = 50  # at most this many sweeps fitting the additive main effects
_RIDGE = 1.0  # ridge on each level's logit effect (a level with one row, or only one class, stays finite)
_TOL = 1e-3  # sweeps stop when no effect moves more than this (logits)
_DENSE_SVD = 64  # smaller side up to which the singular value comes from a dense SVD


@dataclass(frozen=True)
class LowRank:
    """The test of one pair: ``statistic`` (largest singular value of the residual matrix), the permutation
    draws' ``null_mean`` and ``null_sd``, their number ``draws``, and ``z``."""

    statistic: float
    null_mean: float
    null_sd: float
    draws: int

    @property
    def z(self) -> float:
        if self.null_sd <= 0:
            return 0.0 if self.statistic <= self.null_mean else float("inf")
        return (self.statistic - self.null_mean) / self.null_sd


def tested(levels_a: int, levels_b: int) -> bool:
    """Whether a pair whose features keep these many codes (without "other") gets the test."""
    return min(levels_a, levels_b) >= MIN_LEVELS


@dataclass
class _Cells:
    """The non-empty cells of a pair's table: level of a, level of b, rows, and the class counts."""

    ia: np.ndarray
    ib: np.ndarray
    n: np.ndarray  # float64, rows per cell
    la: int
    lb: int

    def by_a(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(self.ia, weights=x, minlength=self.la)

    def by_b(self, x: np.ndarray) -> np.ndarray:
        return np.bincount(self.ib, weights=x, minlength=self.lb)


def _residuals(cells: _Cells, s: np.ndarray) -> np.ndarray:
    """Per class (columns of ``s``, the cells' class counts), the residual sums ``S - N * p`` after a logistic
    model with additive main effects of the two features (each class's indicator one-vs-rest)."""
    from scipy.special import expit, logit

    n = cells.n
    total = n.sum()
    out = np.zeros(s.shape, dtype=np.float64)
    for c in range(s.shape[1]):
        sc = s[:, c]
        sa, sb, st = cells.by_a(sc), cells.by_b(sc), sc.sum()
        if st <= 0 or st >= total:  # a class on no row or on every row: nothing to explain
            continue
        mu = float(logit(st / total))
        alpha = np.zeros(cells.la)
        beta = np.zeros(cells.lb)
        for _ in range(_BACKFIT):  # one Newton step per factor and sweep (a ridge keeps pure levels finite)
            p = expit(mu + alpha[cells.ia] + beta[cells.ib])
            step_a = (sa - cells.by_a(n * p) - _RIDGE * alpha) / (cells.by_a(n * p * (1.0 - p)) + _RIDGE)
            alpha += step_a
            p = expit(mu + alpha[cells.ia] + beta[cells.ib])
            step_b = (sb - cells.by_b(n * p) - _RIDGE * beta) / (cells.by_b(n * p * (1.0 - p)) + _RIDGE)
            beta += step_b
            p = expit(mu + alpha[cells.ia] + beta[cells.ib])
            mu += float((st - (n * p).sum()) / max(float((n * p * (1.0 - p)).sum()), 1e-12))
            if max(np.abs(step_a).max(initial=0.0), np.abs(step_b).max(initial=0.0)) < _TOL:
                break
        out[:, c] = sc - n * expit(mu + alpha[cells.ia] + beta[cells.ib])
    return out


def _top_singular_value(cells: _Cells, r: np.ndarray) -> float:
    """The largest singular value of ``[R_1 | R_2 | ...]`` (``la`` rows, ``lb`` columns per class)."""
    from scipy.sparse import csr_matrix

    kc = r.shape[1]
    rows = np.tile(cells.ia, kc)
    cols = (np.arange(kc)[:, None] * cells.lb + cells.ib[None, :]).ravel()
    m = csr_matrix((r.T.ravel(), (rows, cols)), shape=(cells.la, cells.lb * kc))
    if min(m.shape) <= _DENSE_SVD:
        return float(np.linalg.norm(m.toarray(), 2))
    from scipy.sparse.linalg import svds

    v0 = np.ones(min(m.shape)) / np.sqrt(min(m.shape))  # a fixed start (ARPACK's default is random)
    return float(svds(m, k=1, v0=v0, return_singular_vectors=False)[0])


def lowrank_interaction(table: np.ndarray, *, drop_other_a: bool = False, drop_other_b: bool = False,
                        seed: int = 0, screen_draws: int = SCREEN_DRAWS, draws: int = DRAWS,
                        screen_z: float = SCREEN_Z) -> LowRank:
    """The low-rank interaction test of one pair's count table ``[code_a, code_b, class]`` (see the module).

    ``drop_other_a`` / ``drop_other_b``: the feature is capped, and its last code is the shared "other" code,
    left out. ``seed`` seeds the permutation draws.
    """
    t = np.asarray(table[: table.shape[0] - int(drop_other_a), : table.shape[1] - int(drop_other_b), :],
                   dtype=np.int64)
    la, lb, k = t.shape
    n = t.sum(axis=2)
    if k < 2 or min(la, lb) < 2 or n.sum() == 0:
        return LowRank(0.0, 0.0, 0.0, 0)
    ia, ib = np.nonzero(n)
    cells = _Cells(ia, ib, n[ia, ib].astype(np.float64), la, lb)
    counts = t[ia, ib, :]  # [cell, class]
    classes = [1] if k == 2 else list(range(k))  # binary: class 0's residuals are class 1's negated
    stat = _top_singular_value(cells, _residuals(cells, counts[:, classes].astype(np.float64)))
    rng = np.random.default_rng(seed)
    totals = counts.sum(axis=0)
    rows = n[ia, ib]
    method: Literal["count", "marginals"] = "count" if int(rows.sum()) <= 1 << 26 else "marginals"

    def draw() -> float:
        left = rows.copy()
        s = np.empty(counts.shape, dtype=np.int64)
        for c in range(k - 1):  # class by class: exact, as permuting the labels over the rows
            s[:, c] = rng.multivariate_hypergeometric(left, int(totals[c]), method=method)
            left -= s[:, c]
        s[:, k - 1] = left
        return _top_singular_value(cells, _residuals(cells, s[:, classes].astype(np.float64)))

    null = [draw() for _ in range(max(2, screen_draws))]
    first = LowRank(stat, float(np.mean(null)), float(np.std(null, ddof=1)), len(null))
    if first.z >= screen_z and draws > len(null):
        null += [draw() for _ in range(draws - len(null))]
        return LowRank(stat, float(np.mean(null)), float(np.std(null, ddof=1)), len(null))
    return first
