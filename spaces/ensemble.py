"""Efficient ensembles (BatchEnsemble, Wen et al. 2020; TabM, Gorishniy et al. 2025) over masked layers.

``k`` members share one (masked, prunable) weight matrix per layer; member ``i`` owns rank-1 adapters ``r_i`` (one
per input) and ``s_i`` (one per output) and a bias offset ``c_i``:
``y_i = s_i * (W (r_i * x_i) + b) + c_i``. That is BatchEnsemble's layer (TabM's ``LinearBatchEnsemble``) with the
per-member bias written as the shared bias ``b`` scaled by ``s_i`` plus ``c_i``; the two forms express the same
functions, and this one lets the shared part stay an ordinary (masked) ``nn.Linear``. Like TabM, the first layer's
``r_i`` start as random signs (so members differ from the first step) and every other adapter starts at 1 (``c_i``
at 0). Departure from TabM: its head is ``k`` separate linear heads; here the head is a shared masked layer with
adapters too, so that it is pruned and counted like every other layer.

Written here rather than taken from ``tabm`` because the shared weight must be a masked layer (pruned, counted once,
compacted and exported to CSR with the adapters following it).

The members' prediction is the mean of their probabilities. :func:`mean_probability_logits` turns the members'
logits into logits of that mean (binary: ``logit(mean sigmoid)``; multiclass: ``log(mean softmax)``), so everything
that reads a model's logits (metrics, the packaged model's ``sigmoid``/``softmax``) sees the ensemble's mean
probability. Training averages the members' losses (TabM), see :func:`member_losses`.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .masked import MaskedLinear


class _Adapters:
    """Per-member ``r`` (k, in), ``s`` (k, out), ``c`` (k, out) parameters and the ensemble forward pass."""

    ensemble_size: int
    in_features: int
    out_features: int

    def _init_adapters(self, k: int, *, random_signs: bool) -> None:
        self.ensemble_size = int(k)
        r = torch.ones(k, self.in_features)
        if random_signs:
            r = torch.where(torch.rand(k, self.in_features) < 0.5, -r, r)
        self.r = nn.Parameter(r)
        self.s = nn.Parameter(torch.ones(k, self.out_features))
        self.c = nn.Parameter(torch.zeros(k, self.out_features))

    def adapter_params(self) -> int:
        """Parameters the members own (not shared)."""
        return int(self.r.numel() + self.s.numel() + self.c.numel())


class EnsembleLinear(_Adapters, nn.Linear):
    """A linear layer shared by ``k`` members with rank-1 adapters; input and output ``(batch, k, features)``.

    Example:
        >>> layer = EnsembleLinear(3, 2, 4)
        >>> layer(torch.zeros(5, 4, 3)).shape
        torch.Size([5, 4, 2])
    """

    def __init__(self, in_features: int, out_features: int, k: int, *, random_signs: bool = False) -> None:
        nn.Linear.__init__(self, in_features, out_features)
        self._init_adapters(k, random_signs=random_signs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.r, self.weight, self.bias) * self.s + self.c


class MaskedEnsembleLinear(_Adapters, MaskedLinear):
    """:class:`EnsembleLinear` whose shared weight is masked (prunable, counted once)."""

    def __init__(self, in_features: int, out_features: int, k: int, *, random_signs: bool = False) -> None:
        MaskedLinear.__init__(self, in_features, out_features)
        self._init_adapters(k, random_signs=random_signs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x * self.r, self.weight, self.bias) * self.s + self.c


def mean_probability_logits(member_logits: torch.Tensor) -> torch.Tensor:
    """Logits of the members' mean probability: ``(batch, k, n_out) -> (batch, n_out)``.

    Binary (``n_out == 1``): ``logit(mean_i sigmoid(z_i))``; multiclass: ``log(mean_i softmax(z_i))``. Computed
    in log space (``logsumexp``), so it is exact and stable for large logits.

    Example:
        >>> z = torch.tensor([[[2.0], [-1.0]]])
        >>> p = mean_probability_logits(z).sigmoid().item()
        >>> round(p, 6) == round((torch.sigmoid(torch.tensor(2.0)) + torch.sigmoid(torch.tensor(-1.0))).item() / 2, 6)
        True
    """
    k = member_logits.shape[1]
    if member_logits.shape[2] == 1:
        z = member_logits[..., 0]
        log_p = torch.logsumexp(F.logsigmoid(z), dim=1) - math.log(k)
        log_q = torch.logsumexp(F.logsigmoid(-z), dim=1) - math.log(k)
        return (log_p - log_q)[:, None]
    return torch.logsumexp(torch.log_softmax(member_logits, dim=2), dim=1) - math.log(k)


def member_losses(loss_fn, member_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The mean over members of each member's mean loss (TabM's training objective): ``(batch, k, n_out)``."""
    k = member_logits.shape[1]
    return loss_fn(member_logits.flatten(0, 1), y.repeat_interleave(k))
