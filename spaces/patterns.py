"""Sparsity patterns: which sets of weights are kept together.

A pattern turns a score matrix (rows = output units, columns = inputs; conv kernels flattened into the inputs) and a
wanted number of kept weights ``k`` into a boolean mask, choosing whole units of the pattern so that the kept count
is as close to ``k`` as the pattern allows (at least one unit). Scores of ``-inf`` mark weights to drop first.

Conventions:

- ``unstructured``: top-k single weights.
- ``block_1x4``: blocks of 4 consecutive inputs of one output unit; ``block_4x1``: 4 consecutive output units of one
  input. Blocks are ranked by their mean score; a ragged last block (dimension not a multiple of 4) is a smaller
  block and counts its real size.
- ``nm``: N:M with unambiguous names: keep ``nm_keep`` of every ``nm_group`` consecutive inputs (2:4 = keep 2 of 4 =
  50% sparsity). Its final density is fixed at ``nm_keep / nm_group``; at an intermediate density ``d = k / n`` of a
  gradual schedule it keeps ``clamp(round(d * nm_group), nm_keep, nm_group)`` per group. A ragged last group of
  ``r < nm_group`` inputs keeps what is left of the wanted count, at most ``min(r, keep)`` (never more than N
  non-zeros in any group).
- ``neuron``: whole output units (Linear rows, Conv2d output channels, Embedding rows); for the classifier head,
  whose outputs are the classes, whole input columns instead.
"""

from __future__ import annotations

import math

import torch

from ._registry import Registry

PATTERNS: Registry[type[Pattern]] = Registry("pattern")


def _units(k: float, unit: int, n_units: int) -> int:
    """Number of equal-size units (``unit`` weights each) whose total is closest to ``k``; at least 1."""
    return max(1, min(n_units, int(round(k / unit))))


def _topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    flat = scores.reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    # stable tie-breaking: torch.topk on CPU is deterministic for a given input
    mask[torch.topk(flat, k, sorted=False).indices] = True
    return mask.reshape(scores.shape)


class Pattern:
    """Base class: implement :meth:`mask`. ``granularity`` is the number of weights in one unit of choice."""

    name = "base"
    #: True when the final density is fixed by the pattern (N:M) rather than by the distribution.
    fixed_density: float | None = None

    def __init__(self, *, nm_keep: int = 2, nm_group: int = 4) -> None:
        self.nm_keep = nm_keep
        self.nm_group = nm_group

    def mask(self, scores: torch.Tensor, k: float, *, head: bool = False) -> torch.Tensor:
        """Return a bool mask of ``scores``' shape (2-D: units x inputs) keeping about ``k`` weights."""
        raise NotImplementedError

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return 1


@PATTERNS.register("unstructured")
class Unstructured(Pattern):
    name = "unstructured"

    def mask(self, scores: torch.Tensor, k: float, *, head: bool = False) -> torch.Tensor:
        return _topk_mask(scores, _units(k, 1, scores.numel()))


def _block_mask(scores: torch.Tensor, k: float, size: int) -> torch.Tensor:
    """Blocks of ``size`` consecutive columns in each row; the number of blocks is chosen by real block sizes."""
    rows, cols = scores.shape
    n_blocks = math.ceil(cols / size)
    pad = n_blocks * size - cols
    finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -1e30))
    padded = torch.nn.functional.pad(finite, (0, pad), value=0.0)
    counts = torch.full((n_blocks,), float(size), device=scores.device)
    if pad:
        counts[-1] = size - pad
    block_scores = (padded.reshape(rows, n_blocks, size).sum(-1) / counts).reshape(-1)
    sizes = counts.repeat(rows)
    order = torch.sort(block_scores, descending=True, stable=True).indices
    cum = torch.cumsum(sizes[order].double(), 0)
    g = int(torch.argmin((cum - float(k)).abs())) + 1
    block_mask = torch.zeros(rows * n_blocks, dtype=torch.bool, device=scores.device)
    block_mask[order[:g]] = True
    return block_mask.reshape(rows, n_blocks).repeat_interleave(size, dim=1)[:, :cols]


@PATTERNS.register("block_1x4")
class Block1x4(Pattern):
    name = "block_1x4"

    def mask(self, scores: torch.Tensor, k: float, *, head: bool = False) -> torch.Tensor:
        return _block_mask(scores, k, 4)

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return min(4, shape[1])


@PATTERNS.register("block_4x1")
class Block4x1(Pattern):
    name = "block_4x1"

    def mask(self, scores: torch.Tensor, k: float, *, head: bool = False) -> torch.Tensor:
        return _block_mask(scores.t(), k, 4).t().contiguous()

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return min(4, shape[0])


@PATTERNS.register("nm")
class NM(Pattern):
    name = "nm"

    def __init__(self, *, nm_keep: int = 2, nm_group: int = 4) -> None:
        super().__init__(nm_keep=nm_keep, nm_group=nm_group)
        if not 1 <= nm_keep < nm_group:
            raise ValueError(f"nm_keep must be in [1, nm_group), got nm_keep={nm_keep}, nm_group={nm_group}")
        self.fixed_density = nm_keep / nm_group

    def keep_per_group(self, density: float) -> int:
        return max(self.nm_keep, min(self.nm_group, int(round(density * self.nm_group))))

    def mask(self, scores: torch.Tensor, k: float, *, head: bool = False) -> torch.Tensor:
        rows, cols = scores.shape
        m = self.nm_group
        keep = self.keep_per_group(float(k) / scores.numel())
        n_full, tail = divmod(cols, m)
        finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -1e30))
        mask = torch.zeros_like(scores, dtype=torch.bool)
        if n_full:
            grouped = finite[:, : n_full * m].reshape(rows, n_full, m)
            idx = torch.topk(grouped, keep, dim=-1, sorted=False).indices
            mask[:, : n_full * m] = torch.zeros_like(grouped, dtype=torch.bool).scatter_(-1, idx, True).reshape(
                rows, n_full * m
            )
        if tail:
            # a ragged last group keeps what is left of the wanted count, never more than min(tail, keep)
            t = int(round((float(k) - rows * n_full * keep) / rows))
            t = max(0 if n_full else 1, min(tail, keep, t))
            if t:
                idx = torch.topk(finite[:, n_full * m :], t, dim=-1, sorted=False).indices
                mask[:, n_full * m :] = torch.zeros(rows, tail, dtype=torch.bool, device=mask.device).scatter_(-1, idx, True)
        return mask


@PATTERNS.register("neuron")
class Neuron(Pattern):
    name = "neuron"

    def mask(self, scores: torch.Tensor, k: float, *, head: bool = False) -> torch.Tensor:
        s = scores.t() if head else scores
        finite = torch.where(torch.isfinite(s), s, torch.full_like(s, -1e30))
        unit_scores = finite.mean(dim=1)
        keep = _topk_mask(unit_scores, _units(k, s.shape[1], s.shape[0]))
        mask = keep[:, None].expand_as(s)
        return (mask.t() if head else mask).contiguous()

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return shape[0] if head else shape[1]


def make_pattern(name: str, *, nm_keep: int = 2, nm_group: int = 4) -> Pattern:
    """Instantiate the registered pattern ``name``."""
    return PATTERNS.get(name)(nm_keep=nm_keep, nm_group=nm_group)
