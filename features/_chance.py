"""Chance baselines of plug-in mutual information and the information quantities computed from a count table.

- ``expected_mi``: the exact expectation of plug-in MI under independence with both margins fixed (the
  permutation model of Vinh, Epps & Bailey 2010, "Information theoretic measures for clusterings comparison",
  JMLR 11). Each cell count is hypergeometric; the sum over a row depends only on the row total, so the work is
  per *distinct* row total (shared by every feature with the same target margin), summed over a +-12 sd window.
  This is the mean that a single label permutation (the baseline OutRank approximates by a label shift)
  estimates with noise.
- ``asymptotic_mi``: the large-sample value (|X|-1)(|Y|-1)/(2n) (Miller 1955; DOMAIN.md section 4), which
  overstates chance MI for long-tail features whose cells hold a few rows.
- ``expected_mi_poisson``: a cheap approximation for two arbitrary margins (used for feature-feature
  redundancy): each cell ~ Poisson(a*b/n), with a finite-population factor.
"""

from __future__ import annotations

import sys
import threading
from functools import lru_cache

import numpy as np


def gammaln(x: np.ndarray | float) -> np.ndarray:
    """``scipy.special.gammaln``, imported on first use: importing scipy.special takes ~0.2 s (see :func:`preload`)."""
    from scipy.special import gammaln as _gammaln

    return _gammaln(x)


def preload() -> None:
    """Import scipy.special in a background thread (a ranking calls this while its first batch is being read)."""
    if "scipy.special" not in sys.modules:
        threading.Thread(target=_import_scipy_special, name="sparsearch-preload", daemon=True).start()


def _import_scipy_special() -> None:
    try:
        import scipy.special  # noqa: F401
    except ImportError:  # raised again, where it is used, by gammaln's own import
        pass


def xlogx_sum(c: np.ndarray) -> float:
    c = c[c > 0].astype(np.float64)
    return float(np.sum(c * np.log(c)))


def row_sums(table: np.ndarray) -> np.ndarray:
    """Row totals of a narrow (rows x few classes) table; numpy's ``sum(axis=1)`` is ~10x slower there."""
    out = table[:, 0].astype(np.int64, copy=True) if table.shape[1] else np.zeros(table.shape[0], dtype=np.int64)
    for j in range(1, table.shape[1]):
        out += table[:, j]
    return out


def col_sums(table: np.ndarray) -> np.ndarray:
    """Column totals of a narrow table (one strided pass per column; ``sum(axis=0)`` is slow there too)."""
    return np.array([int(table[:, j].sum()) for j in range(table.shape[1])], dtype=np.int64)


def entropy(counts: np.ndarray) -> float:
    """Plug-in entropy in nats of a vector of counts."""
    n = float(counts.sum())
    if n <= 0:
        return 0.0
    return float(np.log(n) - xlogx_sum(counts) / n)


def table_mi(table: np.ndarray) -> tuple[float, float, float, int]:
    """Plug-in MI (nats), H(X), H(Y) and n of a 2-D count table."""
    n = int(table.sum())
    if n == 0:
        return 0.0, 0.0, 0.0, 0
    hx = entropy(row_sums(table))
    hy = entropy(col_sums(table))
    hxy = entropy(table.ravel())
    return max(0.0, hx + hy - hxy), hx, hy, n


def _lnchoose(x: np.ndarray | float, y: np.ndarray) -> np.ndarray:
    return gammaln(np.asarray(x, dtype=np.float64) + 1) - gammaln(y + 1) - gammaln(np.asarray(x, dtype=np.float64) - y + 1)


class LnFactorials:
    """ln(i!) = gammaln(i + 1) over windows of consecutive integers, each computed once and grown on demand.

    Looking a value up gives the same float as calling ``gammaln`` on it (the window holds exactly those calls),
    so the expected MI is bit-identical with or without the windows. ``budget``: most values held in all.
    """

    def __init__(self, budget: int = 1 << 24):
        self.budget = budget
        self._windows: dict[object, tuple[int, np.ndarray]] = {}

    def window(self, key: object, lo: int, hi: int) -> tuple[int, np.ndarray] | None:
        """The window ``key`` grown to cover [lo, hi] (as (start, values)), or None when over the budget."""
        start, values = self._windows.get(key, (lo, np.zeros(0)))
        if not len(values):
            new_lo, new_hi = lo, hi
        else:
            end = start + len(values) - 1
            if start <= lo and hi <= end:
                return start, values
            # grow by at least the current length on the side that is short, so regrowing stays rare
            new_lo = max(0, min(lo, start - len(values))) if lo < start else start
            new_hi = max(hi, end + len(values)) if hi > end else end
        held = sum(len(v) for k, (_, v) in self._windows.items() if k != key)
        if held + new_hi - new_lo + 1 > self.budget:
            return None
        parts = [_ln_factorials(new_lo, start - 1), values, _ln_factorials(start + len(values), new_hi)] \
            if len(values) else [_ln_factorials(new_lo, new_hi)]
        self._windows[key] = (new_lo, np.concatenate(parts))
        return self._windows[key]


def _ln_factorials(lo: int, hi: int) -> np.ndarray:
    return gammaln(np.arange(lo, hi + 1, dtype=np.float64) + 1)


def _row_contributions(a: np.ndarray, b: int, n: int, approx_above: float | None = None,
                       lnf: LnFactorials | None = None) -> np.ndarray:
    """E[(k/n) log(n k / (a b))] for k ~ Hypergeometric(n, b, a), for each row total in ``a``.

    With ``approx_above``, rows whose expected cell count a*b/n is at least that use the second-order expansion
    E[k log(k/mu)] ~ var / (2 mu) (relative error about 1/(6 mu)) instead of summing the window. With ``lnf``,
    the ln-factorials come from its windows (table lookups instead of gammaln calls; the same floats).
    """
    a = a.astype(np.int64)
    mean = a * (b / n)
    var = mean * (1 - b / n) * (n - a) / max(n - 1, 1)
    if approx_above is not None:
        big = mean >= approx_above
        if big.any():
            out = np.zeros(len(a), dtype=np.float64)
            out[big] = var[big] / (2.0 * mean[big] * n)
            if (~big).any():
                out[~big] = _row_contributions(a[~big], b, n, lnf=lnf)
            return out
    sd = np.sqrt(np.maximum(var, 0))
    lo = np.maximum(np.maximum(1, a + b - n), np.floor(mean - 12 * sd - 4)).astype(np.int64)
    hi = np.minimum(np.minimum(a, b), np.ceil(mean + 12 * sd + 4)).astype(np.int64)
    length = np.maximum(hi - lo + 1, 0)
    total = int(length.sum())
    out = np.zeros(len(a), dtype=np.float64)
    if total == 0:
        return out
    row = np.repeat(np.arange(len(a)), length)
    starts = np.cumsum(length) - length
    k = lo[row] + (np.arange(total) - starts[row])
    ar = a[row].astype(np.float64)
    kf = k.astype(np.float64)
    # log C(b, k) + log C(n - b, a - k) - log C(n, a), each C as in _lnchoose, with the gammaln of what is
    # constant per window (b, n - b) or per row (C(n, a)) evaluated once: the same floats, 4 gammaln per term not 9
    gb, gnb = gammaln(np.float64(b) + 1), gammaln(np.float64(n - b) + 1)
    nb = np.float64(n - b)
    amax, hmax = int(a.max()), int(hi.max())
    # windows: k and a - k in [0, amax]; b - k in [b - hmax, b]; n - b - (a - k) in [n - b - amax, n - b] (>= 0)
    wins = None if lnf is None else (lnf.window("k", 0, amax), lnf.window(("b", b), b - hmax, b),
                                     lnf.window(("nb", n - b), max(0, n - b - amax), n - b))
    if wins is not None and all(w is not None for w in wins):
        (s0, v0), (sb, vb), (snb, vnb) = wins  # type: ignore[misc]  # no None: checked above
        ak = a[row] - k
        lnc_b = gb - v0[k - s0] - vb[b - k - sb]
        lnc_nb = gnb - v0[ak - s0] - vnb[(n - b) - ak - snb]
    else:
        lnc_b = gb - gammaln(kf + 1) - gammaln(np.float64(b) - kf + 1)
        lnc_nb = gnb - gammaln(ar - kf + 1) - gammaln(nb - (ar - kf) + 1)
    logp = lnc_b + lnc_nb - _lnchoose(n, a.astype(np.float64))[row]
    term = np.exp(logp) * kf / n * (np.log(n * kf) - np.log(ar * b))
    return np.bincount(row, weights=term, minlength=len(a))


class ExpectedMI:
    """Exact expected plug-in MI under the permutation model, cached per (target margin, distinct row total).

    Example:
        >>> import numpy as np
        >>> emi = ExpectedMI(np.array([90, 10]))
        >>> round(emi(np.array([50, 50])), 5) > 0
        True
    """

    def __init__(self, class_totals: np.ndarray, approx_above: float | None = None):
        self.approx_above = approx_above  # see _row_contributions
        self.b = np.asarray(class_totals, dtype=np.int64)
        self.n = int(self.b.sum())
        self._cache: dict[int, float] = {}
        self._lnf = LnFactorials()  # shared by every feature this margin scores

    def prepare(self, row_totals: np.ndarray) -> None:
        """Compute (vectorised) the per-row contributions of every row total not yet cached."""
        cache = self._cache
        need = np.array([v for v in np.unique(row_totals.astype(np.int64)).tolist() if v > 0 and v not in cache],
                        dtype=np.int64)
        if len(need) == 0:
            return
        total = np.zeros(len(need))
        for bj in self.b:
            if bj > 0:
                total += _row_contributions(need, int(bj), self.n, self.approx_above, self._lnf)
        self._cache.update(zip(need.tolist(), total.tolist()))

    def __call__(self, row_totals: np.ndarray) -> float:
        rows = row_totals[row_totals > 0].astype(np.int64)
        if len(rows) <= 1:
            return 0.0
        self.prepare(rows)
        vals, mult = np.unique(rows, return_counts=True)
        cache = self._cache
        per_row = np.fromiter((cache[v] for v in vals.tolist()), dtype=np.float64, count=len(vals))
        return max(0.0, float(np.dot(per_row, mult)))


def expected_mi(table: np.ndarray) -> float:
    """Exact expected plug-in MI (nats) of a table's margins under independence."""
    return ExpectedMI(col_sums(table))(row_sums(table))


def asymptotic_mi(n_rows_levels: int, n_class_levels: int, n: int) -> float:
    """(|X|-1)(|Y|-1)/(2n): the large-sample chance MI in nats."""
    if n <= 0:
        return 0.0
    return max(0, n_rows_levels - 1) * max(0, n_class_levels - 1) / (2.0 * n)


@lru_cache(maxsize=1)
def _poisson_g_table() -> tuple[np.ndarray, np.ndarray]:
    """g(mu) = E[k log(k / mu)] for k ~ Poisson(mu) on a log grid (tends to 1/2 for large mu)."""
    mus = np.logspace(-8, 5, 1301)
    g = np.empty_like(mus)
    for i, mu in enumerate(mus):
        kmin = max(1, int(mu - 12 * np.sqrt(mu) - 30))  # the mass outside +-12 sd is below 1e-30
        kmax = int(mu + 12 * np.sqrt(mu) + 30)
        k = np.arange(kmin, kmax + 1, dtype=np.float64)
        pmf = np.exp(k * np.log(mu) - mu - gammaln(k + 1))  # Poisson(mu) pmf, without importing scipy.stats
        g[i] = float(np.sum(pmf * k * np.log(k / mu)))
    return np.log(mus), g


def expected_mi_poisson(a: np.ndarray, b: np.ndarray) -> float:
    """Approximate chance MI (nats) of a table with row totals ``a`` and column totals ``b``.

    Sums g(a_i b_j / n) (1 - a_i/n)(1 - b_j/n) / n over distinct pairs of totals, weighted by multiplicity;
    g is the Poisson expectation above. Exact in the limit of many rows; used only for redundancy.
    """
    a = a[a > 0]
    b = b[b > 0]
    n = float(a.sum())
    if len(a) <= 1 or len(b) <= 1 or n <= 0:
        return 0.0
    va, ma = np.unique(a, return_counts=True)
    vb, mb = np.unique(b, return_counts=True)
    logmus, g = _poisson_g_table()
    mu = np.outer(va, vb) / n
    gv = np.interp(np.log(np.clip(mu, 1e-8, None)), logmus, g, right=0.5)
    small = mu < 1e-8
    if small.any():
        gv[small] = -mu[small] * np.log(mu[small])
    fac = np.outer(1 - va / n, 1 - vb / n)
    return max(0.0, float(np.sum(gv * fac * np.outer(ma, mb))) / n)
