"""The ln-factorial windows of the exact expected MI give the same floats as calling gammaln term by term."""

from __future__ import annotations

import numpy as np
import pytest

from sparsearch.features._chance import ExpectedMI, LnFactorials, _row_contributions


@pytest.mark.parametrize(("n", "b"), [(1_000, 300), (50, 7), (2_000_000, 400_000), (3_000_000, 2_999_000)])
def test_windows_are_bit_identical_to_gammaln(n, b):
    rng = np.random.default_rng(n)
    lnf = LnFactorials()
    # small row totals first, then larger ones and the reverse: the windows grow on both sides between calls
    for a in (np.unique(rng.integers(1, max(2, n // 50), 200)), np.unique(rng.integers(1, n, 300)),
              np.unique(rng.integers(n // 2, n, 50))[::-1].copy()):
        direct = _row_contributions(a, b, n)
        np.testing.assert_array_equal(_row_contributions(a, b, n, lnf=lnf), direct)
        np.testing.assert_array_equal(_row_contributions(a, b, n, 30.0, lnf), _row_contributions(a, b, n, 30.0))
        assert np.all(np.isfinite(direct))


def test_windows_over_budget_fall_back_to_gammaln():
    a = np.array([5, 40, 900])
    tiny = LnFactorials(budget=100)  # too small for any window here
    np.testing.assert_array_equal(_row_contributions(a, 400, 2_000, lnf=tiny), _row_contributions(a, 400, 2_000))
    assert tiny.window("k", 0, 1_000) is None
    start, values = LnFactorials().window("x", 10, 20)
    assert start == 10 and len(values) == 11


def test_expected_mi_shared_windows_across_features():
    emi = ExpectedMI(np.array([600_000, 300_000, 100_000]))
    rng = np.random.default_rng(0)
    tables = [rng.multinomial(1_000_000, rng.dirichlet(np.ones(k))) for k in (2, 50, 3_000, 7)]
    first = [emi(t) for t in tables]
    fresh = [ExpectedMI(np.array([600_000, 300_000, 100_000]))(t) for t in tables]
    assert first == fresh and all(v > 0 for v in first)
