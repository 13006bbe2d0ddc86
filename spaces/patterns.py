"""Sparsity patterns: which sets of weights are kept together.

A pattern turns a score matrix (rows = output units, columns = inputs; conv kernels flattened into the inputs) and a
density into a boolean mask. Scores of ``-inf`` mark weights that must not be kept unless forced.

Conventions:

- ``unstructured``: top-k single weights, ``k = round(density * n)`` (at least 1).
- ``block_1x4``: blocks of 4 consecutive inputs of one output unit; ``block_4x1``: 4 consecutive output units of one
  input. Blocks are ranked by their mean score; a ragged last block (dimension not a multiple of 4) is a smaller
  block.
- ``nm``: N:M with unambiguous names: keep ``nm_keep`` of every ``nm_group`` consecutive inputs (2:4 = keep 2 of 4 =
  50% sparsity). Its final density is fixed at ``nm_keep / nm_group``; at an intermediate density ``d`` of a gradual
  schedule it keeps ``clamp(round(d * nm_group), nm_keep, nm_group)`` per group.
- ``neuron``: whole output units (Linear rows, Conv2d output channels, Embedding rows); for the classifier head,
  whose outputs are the classes, whole input columns instead.
"""

from __future__ import annotations

import math

import torch

from ._registry import Registry

PATTERNS: Registry[type[Pattern]] = Registry("pattern")


def _k(density: float, n: int) -> int:
    return max(1, min(n, int(round(density * n))))


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

    def mask(self, scores: torch.Tensor, density: float, *, head: bool = False) -> torch.Tensor:
        """Return a bool mask of ``scores``' shape (2-D: units x inputs) keeping about ``density`` of it."""
        raise NotImplementedError

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return 1


@PATTERNS.register("unstructured")
class Unstructured(Pattern):
    name = "unstructured"

    def mask(self, scores: torch.Tensor, density: float, *, head: bool = False) -> torch.Tensor:
        return _topk_mask(scores, _k(density, scores.numel()))


def _block_mask(scores: torch.Tensor, density: float, size: int) -> torch.Tensor:
    """Blocks of ``size`` consecutive columns in each row."""
    rows, cols = scores.shape
    n_blocks = math.ceil(cols / size)
    pad = n_blocks * size - cols
    finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -1e30))
    padded = torch.nn.functional.pad(finite, (0, pad), value=0.0)
    counts = torch.full((n_blocks,), float(size))
    if pad:
        counts[-1] = size - pad
    block_scores = padded.reshape(rows, n_blocks, size).sum(-1) / counts
    k = max(1, min(rows * n_blocks, int(round(density * scores.numel() / size))))
    block_mask = _topk_mask(block_scores, k)
    return block_mask.repeat_interleave(size, dim=1)[:, :cols]


@PATTERNS.register("block_1x4")
class Block1x4(Pattern):
    name = "block_1x4"

    def mask(self, scores: torch.Tensor, density: float, *, head: bool = False) -> torch.Tensor:
        return _block_mask(scores, density, 4)

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return 4


@PATTERNS.register("block_4x1")
class Block4x1(Pattern):
    name = "block_4x1"

    def mask(self, scores: torch.Tensor, density: float, *, head: bool = False) -> torch.Tensor:
        return _block_mask(scores.t(), density, 4).t().contiguous()

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return 4


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

    def mask(self, scores: torch.Tensor, density: float, *, head: bool = False) -> torch.Tensor:
        rows, cols = scores.shape
        m = self.nm_group
        n_groups = math.ceil(cols / m)
        pad = n_groups * m - cols
        finite = torch.where(torch.isfinite(scores), scores, torch.full_like(scores, -1e30))
        # padded slots rank last so a ragged last group keeps its real entries first
        padded = torch.nn.functional.pad(finite, (0, pad), value=-3e38)
        grouped = padded.reshape(rows, n_groups, m)
        keep = self.keep_per_group(density)
        idx = torch.topk(grouped, keep, dim=-1, sorted=False).indices
        mask = torch.zeros_like(grouped, dtype=torch.bool).scatter_(-1, idx, True)
        return mask.reshape(rows, n_groups * m)[:, :cols]


@PATTERNS.register("neuron")
class Neuron(Pattern):
    name = "neuron"

    def mask(self, scores: torch.Tensor, density: float, *, head: bool = False) -> torch.Tensor:
        s = scores.t() if head else scores
        finite = torch.where(torch.isfinite(s), s, torch.full_like(s, -1e30))
        unit_scores = finite.mean(dim=1)
        keep = _topk_mask(unit_scores, _k(density, s.shape[0]))
        mask = keep[:, None].expand_as(s)
        return (mask.t() if head else mask).contiguous()

    def granularity(self, shape: tuple[int, int], *, head: bool = False) -> int:
        return shape[0] if head else shape[1]


def make_pattern(name: str, *, nm_keep: int = 2, nm_group: int = 4) -> Pattern:
    """Instantiate the registered pattern ``name``."""
    return PATTERNS.get(name)(nm_keep=nm_keep, nm_group=nm_group)
