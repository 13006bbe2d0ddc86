"""Layer-wise sparsity distributions: how a global sparsity budget is shared among layers.

Every distribution returns one density per layer such that ``sum(density_l * n_l) = (1 - S) * sum(n_l)`` (up to
rounding to whole weights), with ``0 < density_l <= 1``: no layer ever collapses to zero.

The ER/ERK rule follows google-research/rigl ``sparse_utils.get_sparsities_erdos_renyi``: ``density_l = eps * raw_l``
with layers whose density would exceed 1 made dense and ``eps`` solved again. We solve the same clamped equation by
bisection on ``eps`` (the fixed point is identical), which also handles lower bounds (``uniform_plus``'s last layer,
the global-magnitude guard) in one routine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._registry import Registry

DISTRIBUTIONS: Registry[type[Distribution]] = Registry("distribution")

#: Global magnitude keeps at least this fraction of the uniform density (1 - S) in every layer.
GLOBAL_MIN_DENSITY_FRACTION = 0.1
#: ``uniform_plus``: the last layer keeps at least this density (rigl's convention).
UNIFORM_PLUS_LAST_DENSITY = 0.2


@dataclass(frozen=True)
class LayerInfo:
    """Shape facts of one prunable layer (weight shape as stored by torch: out, in, *kernel)."""

    name: str
    shape: tuple[int, ...]

    @property
    def n(self) -> int:
        return int(np.prod(self.shape))

    @property
    def fan_out(self) -> int:
        return int(self.shape[0])

    @property
    def fan_in(self) -> int:
        return int(self.shape[1]) if len(self.shape) > 1 else 1


def solve_densities(
    raw: Sequence[float], n: Sequence[int], sparsity: float, *, low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> list[float]:
    """Find ``eps`` with ``sum(clip(eps * raw_l, low_l, high_l) * n_l) = (1 - sparsity) * sum(n_l)``.

    Lower bounds that cannot all be met within the budget are scaled down proportionally. Every density is kept at
    least one weight (``1 / n_l``).
    """
    raw_a = np.asarray(raw, dtype=np.float64)
    n_a = np.asarray(n, dtype=np.float64)
    budget = (1.0 - sparsity) * n_a.sum()
    floor = 1.0 / n_a
    lo = np.maximum(np.asarray(low, dtype=np.float64) if low is not None else floor, floor)
    hi = np.asarray(high, dtype=np.float64) if high is not None else np.ones_like(raw_a)
    hi = np.maximum(hi, lo)
    if (lo * n_a).sum() > budget:
        # relax the lower bounds above the one-weight floor proportionally so that they fit the budget exactly
        extra = ((lo - floor) * n_a).sum()
        room = max(budget - (floor * n_a).sum(), 0.0)
        lo = floor + (lo - floor) * (room / extra if extra > 0 else 0.0)
    if (hi * n_a).sum() <= budget:
        return hi.tolist()
    if (lo * n_a).sum() >= budget:
        return lo.tolist()
    raw_a = np.maximum(raw_a, 1e-300)

    def total(eps: float) -> float:
        return float((np.clip(eps * raw_a, lo, hi) * n_a).sum())

    a, b = 0.0, 1.0
    while total(b) < budget:
        b *= 2.0
    for _ in range(200):
        mid = 0.5 * (a + b)
        if total(mid) < budget:
            a = mid
        else:
            b = mid
    return np.clip(b * raw_a, lo, hi).tolist()


class Distribution:
    """Base class: implement :meth:`densities`."""

    name = "base"
    needs_scores = False

    def __init__(self, *, power: float = 1.0, scales: Sequence[float] | None = None) -> None:
        self.power = power
        self.scales = scales

    def densities(
        self, layers: Sequence[LayerInfo], sparsity: float, *, scores: Sequence[torch.Tensor] | None = None
    ) -> list[float]:
        raise NotImplementedError


@DISTRIBUTIONS.register("uniform")
class Uniform(Distribution):
    """Density ``1 - S`` in every layer."""

    name = "uniform"

    def densities(self, layers, sparsity, *, scores=None):
        return solve_densities([1.0] * len(layers), [la.n for la in layers], sparsity)


@DISTRIBUTIONS.register("uniform_plus")
class UniformPlus(Distribution):
    """Uniform, but the first layer dense and the last layer at density >= 0.2 (relaxed when infeasible)."""

    name = "uniform_plus"

    def densities(self, layers, sparsity, *, scores=None):
        k = len(layers)
        low = [0.0] * k
        if k > 1:
            low[-1] = UNIFORM_PLUS_LAST_DENSITY
        low[0] = 1.0
        return solve_densities([1.0] * k, [la.n for la in layers], sparsity, low=low)


@DISTRIBUTIONS.register("er")
class ER(Distribution):
    """Erdos-Renyi: ``raw_l = (n_in + n_out) / (n_in * n_out)`` (kernel dims ignored)."""

    name = "er"

    def densities(self, layers, sparsity, *, scores=None):
        raw = [(la.fan_in + la.fan_out) / (la.fan_in * la.fan_out) for la in layers]
        return solve_densities(raw, [la.n for la in layers], sparsity)


@DISTRIBUTIONS.register("erk")
class ERK(Distribution):
    """Erdos-Renyi-Kernel: ``raw_l = (sum of all dims / product of dims) ** power`` (power 0 = uniform)."""

    name = "erk"

    def densities(self, layers, sparsity, *, scores=None):
        raw = [(sum(la.shape) / la.n) ** self.power for la in layers]
        return solve_densities(raw, [la.n for la in layers], sparsity)


@DISTRIBUTIONS.register("searched")
class Searched(Distribution):
    """Per-layer scale factors (searched by Optuna) renormalised to the budget: ``raw_l = scale_l``."""

    name = "searched"

    def densities(self, layers, sparsity, *, scores=None):
        scales = list(self.scales) if self.scales is not None else [1.0] * len(layers)
        if len(scales) != len(layers):
            raise ValueError(f"searched distribution needs {len(layers)} scales, got {len(scales)}")
        return solve_densities(scales, [la.n for la in layers], sparsity)


@DISTRIBUTIONS.register("global_magnitude")
class GlobalMagnitude(Distribution):
    """One global threshold on the scores of all layers, with a minimum layer density guard.

    Plain global ranking can empty a whole layer (DOMAIN.md 2.7); here each layer keeps at least
    ``GLOBAL_MIN_DENSITY_FRACTION * (1 - S)`` (and one weight). Without scores it falls back to uniform.
    """

    name = "global_magnitude"
    needs_scores = True

    def densities(self, layers, sparsity, *, scores=None):
        n = np.array([la.n for la in layers], dtype=np.int64)
        if scores is None:
            return Uniform().densities(layers, sparsity)
        budget = int(round((1.0 - sparsity) * n.sum()))
        floor = np.maximum(1, np.ceil(GLOBAL_MIN_DENSITY_FRACTION * (1.0 - sparsity) * n)).astype(np.int64)
        sorted_scores = [torch.sort(s.detach().reshape(-1).double(), descending=True).values.cpu().numpy() for s in scores]
        fixed = np.zeros(len(layers), dtype=bool)
        counts = floor.copy()
        for _ in range(len(layers) + 1):
            free = ~fixed
            rest = budget - counts[fixed].sum()
            pool = np.concatenate([sorted_scores[i] for i in np.flatnonzero(free)]) if free.any() else np.array([])
            if rest <= 0 or pool.size == 0:
                counts[free] = floor[free]
                break
            rest = min(rest, pool.size)
            thr = np.partition(pool, pool.size - rest)[pool.size - rest]
            for i in np.flatnonzero(free):
                # count of scores >= thr (sorted descending: searchsorted on the negated array)
                counts[i] = int(np.searchsorted(-sorted_scores[i], -thr, side="right"))
            below = free & (counts < floor)
            if not below.any():
                break
            counts[below] = floor[below]
            fixed |= below
        return (np.minimum(counts, n) / n).tolist()


def make_distribution(name: str, *, power: float = 1.0, scales: Sequence[float] | None = None) -> Distribution:
    return DISTRIBUTIONS.get(name)(power=power, scales=scales)
