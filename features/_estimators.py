"""The ranking methods: one small class per estimator behind one registry.

Every method turns the per-feature information quantities (:class:`FeatureStats`, computed once from the merged
counts) into a score; higher is better. Greedy methods (``mrmr``, ``3mr``) additionally re-order a pool of the most
relevant features using feature-feature redundancy and pairwise relevance (see ``_greedy.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sparsearch.errors import unknown_choice


@dataclass
class FeatureStats:
    """Per-feature arrays (aligned with ``names``) computed from the final contingency tables."""

    names: list[str]
    mi: np.ndarray  # plug-in MI, nats
    expected: np.ndarray  # exact expected MI under independence (permutation model)
    asymptotic: np.ndarray  # (|X|-1)(|Y|-1)/(2n)
    null_mi: np.ndarray | None  # MI against a permuted / shifted target (when a method asked for it)
    hx: np.ndarray
    hy: np.ndarray
    n: np.ndarray
    levels: np.ndarray  # non-empty levels of X (bins for numeric features, + missing level)
    classes: np.ndarray  # non-empty target classes among the feature's counted rows


class Ranker:
    """Base class: ``score`` returns (score, chance baseline) arrays. ``null_kind`` asks for a null count pass."""

    name: str = ""
    null_kind: str | None = None
    greedy: bool = False
    description: str = ""

    def score(self, st: FeatureStats) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class PlugInMI(Ranker):
    name = "mi"
    description = "plug-in mutual information in nats (no chance correction; favours high cardinality)"

    def score(self, st):
        return st.mi.copy(), st.expected


class AdjustedMI(Ranker):
    """MI minus its chance baseline for the feature's margins and the target's.

    ``chance``: 'expected' (exact hypergeometric expectation, the default), 'asymptotic' ((|X|-1)(|Y|-1)/2n),
    'permutation' (MI against one seeded label permutation per batch) or 'shift' (OutRank-style: MI against the
    target shifted by one row).
    """

    def __init__(self, chance: str = "expected"):
        self.chance = chance
        self.name = "adjusted-mi" if chance == "expected" else f"adjusted-mi-{chance}"
        self.null_kind = chance if chance in ("permutation", "shift") else None
        self.description = f"MI minus its {chance} chance baseline"

    def score(self, st):
        if self.chance == "expected":
            base = st.expected
        elif self.chance == "asymptotic":
            base = st.asymptotic
        else:
            assert st.null_mi is not None  # internal: the null pass always runs for these methods
            base = st.null_mi
        return st.mi - base, base


class GTest(Ranker):
    name = "g-test"
    description = "-log10 p of the G-test (2n MI ~ chi-square with (|X|-1)(|Y|-1) dof): accounts for chance variance"

    def score(self, st):
        from scipy.stats import chi2  # scipy.stats takes seconds to import: only this method needs it

        dof = np.maximum(st.levels - 1, 0) * np.maximum(st.classes - 1, 0)
        stat = 2.0 * st.n * st.mi
        out = np.zeros(len(st.names))
        ok = dof > 0
        out[ok] = -chi2.logsf(stat[ok], dof[ok]) / np.log(10.0)
        return out, st.expected


class NormalizedMI(Ranker):
    name = "nmi"
    description = "MI / sqrt(H(X) H(Y))"

    def score(self, st):
        den = np.sqrt(st.hx * st.hy)
        return np.divide(st.mi, den, out=np.zeros_like(st.mi), where=den > 0), st.expected


class AdjustedNMI(Ranker):
    name = "adjusted-nmi"
    description = "(MI - E[MI]) / ((H(X) + H(Y))/2 - E[MI]), Vinh et al.'s adjusted mutual information"

    def score(self, st):
        den = 0.5 * (st.hx + st.hy) - st.expected
        num = st.mi - st.expected
        return np.divide(num, den, out=np.zeros_like(num), where=den > 1e-12), st.expected


class GreedyRanker(Ranker):
    """Redundancy-aware greedy selection over the ``pool_size`` most relevant features (adjusted MI)."""

    greedy = True
    relational = False

    def score(self, st):
        return AdjustedMI().score(st)


class MRMR(GreedyRanker):
    name = "mrmr"
    description = "greedy mRMR (difference form): relevance - mean MI shared with the selected features (nats)"


class ThreeMR(GreedyRanker):
    name = "3mr"
    relational = True
    description = "greedy: relevance x (1 - max redundancy) + mean positive interaction information (OutRank's 3MR idea)"


METHODS: dict[str, Ranker] = {
    r.name: r
    for r in [
        PlugInMI(),
        AdjustedMI("expected"),
        AdjustedMI("asymptotic"),
        AdjustedMI("permutation"),
        AdjustedMI("shift"),
        GTest(),
        NormalizedMI(),
        AdjustedNMI(),
        MRMR(),
        ThreeMR(),
    ]
}


def available_methods() -> list[str]:
    """Names of the ranking methods, sorted.

    Example:
        >>> "adjusted-mi" in available_methods()
        True
    """
    return sorted(METHODS)


def get_method(name: str) -> Ranker:
    if not isinstance(name, str) or name not in METHODS:
        raise unknown_choice("ranking method", name, available_methods())
    return METHODS[name]
