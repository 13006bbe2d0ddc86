"""Masked versions of ``nn.Linear``, ``nn.Conv2d`` and ``nn.Embedding``.

Design against the usual toolkit pain (DOMAIN.md section 2):

- the mask is a plain ``weight_mask`` buffer (no hooks, no closures), so ``state_dict`` save/load, ``copy.deepcopy``,
  ``pickle`` and Ray serialization round-trip exactly, with no ``weight_orig`` renaming;
- the weight itself is kept zero where the mask is zero, so the forward pass is the stock dense one (no per-step
  ``weight * mask`` product, hence almost no training overhead);
- :func:`mask_gradients` zeroes masked gradients before the optimizer step, :func:`apply_masks` re-applies masks after
  it, and :func:`zero_optimizer_state` zeroes masked entries of optimizer state (SGD momentum, Adam moments) whenever
  masks change, so momentum and weight decay can never revive a pruned weight.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


class MaskedMixin:
    """Adds a ``weight_mask`` buffer (same shape and dtype as ``weight``: 1.0 = kept, 0.0 = pruned) to a layer.

    The buffer has the weight's float dtype rather than ``bool`` because multiplying by a bool tensor makes torch
    convert it on every call (about 10x slower than a float multiply on CPU); :attr:`mask` is the boolean view.
    """

    weight: torch.Tensor
    weight_mask: torch.Tensor

    def _init_mask(self) -> None:
        self.register_buffer("weight_mask", torch.ones_like(self.weight.detach()))  # type: ignore[attr-defined]  # mixed into nn.Module

    @property
    def mask(self) -> torch.Tensor:
        """The mask as a bool tensor (True = kept)."""
        return self.weight_mask > 0

    @torch.no_grad()
    def set_mask(self, mask: torch.Tensor) -> None:
        """Replace the mask (bool or 0/1, weight-shaped) and zero the weights it removes."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(self.weight.shape)}")
        self.weight_mask.copy_((mask != 0).to(self.weight_mask.dtype))
        self.apply_mask()

    @torch.no_grad()
    def apply_mask(self) -> None:
        self.weight.mul_(self.weight_mask)

    @property
    def density(self) -> float:
        return float(self.weight_mask.mean())

    def matrix_view(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (weight-shaped) as a 2-D (units, inputs) matrix: rows = output units."""
        return t.reshape(t.shape[0], -1)


class MaskedLinear(MaskedMixin, nn.Linear):
    """``nn.Linear`` with a weight mask buffer."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self._init_mask()


class MaskedConv2d(MaskedMixin, nn.Conv2d):
    """``nn.Conv2d`` with a weight mask buffer (rows of the matrix view = output channels)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        self._init_mask()


class MaskedEmbedding(MaskedMixin, nn.Embedding):
    """``nn.Embedding`` with a weight mask buffer (rows = vocabulary entries, columns = embedding dims)."""

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self._init_mask()


class MaskedNLinear(MaskedMixin, nn.Module):
    """``n`` separate linear layers ``in_features -> out_features``, one per feature (a numeric embedding's
    per-feature layer), with a weight mask buffer.

    The weight is stored as one ``(n * out_features, in_features)`` matrix whose rows are the output units
    (feature ``f`` owns rows ``f * out_features ...``), so patterns, distributions and accounting treat it like a
    linear layer; MACs per sample equal its number of weights. Input ``(batch, n, in)``, output
    ``(batch, n * out)``.

    Example:
        >>> MaskedNLinear(3, 4, 2)(torch.zeros(5, 3, 4)).shape
        torch.Size([5, 6])
    """

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.n, self.in_features, self.out_features = int(n), int(in_features), int(out_features)
        bound = 1.0 / in_features**0.5  # nn.Linear's default initialisation, per feature
        self.weight = nn.Parameter(torch.empty(self.n * self.out_features, self.in_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(self.n * self.out_features).uniform_(-bound, bound))
        self._init_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.view(self.n, self.out_features, self.in_features)
        return torch.einsum("bfi,foi->bfo", x, w).flatten(1) + self.bias

    def block_diagonal(self) -> torch.Tensor:
        """The equivalent ``(n * out, n * in)`` weight of the flattened input (used by the CSR export)."""
        w = self.weight.detach().view(self.n, self.out_features, self.in_features)
        return torch.block_diag(*w.unbind(0)) if self.n else self.weight.detach().new_zeros(0, 0)


MASKED_TYPES = (MaskedLinear, MaskedConv2d, MaskedEmbedding, MaskedNLinear)


def masked_modules(model: nn.Module) -> Iterator[tuple[str, MaskedMixin]]:
    """Yield ``(name, module)`` for every masked layer of ``model``, in definition order."""
    for name, module in model.named_modules():
        if isinstance(module, MASKED_TYPES):
            yield name, module


@torch.no_grad()
def apply_masks(model: nn.Module) -> None:
    """Re-apply every mask to its weight (call after each optimizer step)."""
    for _, m in masked_modules(model):
        m.apply_mask()


@torch.no_grad()
def mask_gradients(model: nn.Module) -> None:
    """Zero the gradients of masked weights (call before each optimizer step)."""
    for _, m in masked_modules(model):
        if m.weight.grad is not None:
            m.weight.grad.mul_(m.weight_mask)


@torch.no_grad()
def zero_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module, *, where: str = "masked") -> None:
    """Zero the optimizer state of masked weights.

    Args:
        where: ``"masked"`` zeroes state where the mask is 0 (after pruning); ``"all"`` resets the state of every
            masked layer entry listed in ``model`` (used by tests).
    """
    for _, m in masked_modules(model):
        state = optimizer.state.get(m.weight)
        if not state:
            continue
        for value in state.values():
            if torch.is_tensor(value) and value.shape == m.weight.shape:
                if where == "all":
                    value.zero_()
                else:
                    value.mul_(m.weight_mask)


@torch.no_grad()
def reset_optimizer_state_at(optimizer: torch.optim.Optimizer, param: torch.Tensor, entries: torch.Tensor) -> None:
    """Zero optimizer state of ``param`` at the boolean ``entries`` (e.g. newly regrown weights)."""
    state = optimizer.state.get(param)
    if not state:
        return
    for value in state.values():
        if torch.is_tensor(value) and value.shape == param.shape:
            value.masked_fill_(entries, 0)


def prunable_count(model: nn.Module) -> tuple[int, int]:
    """Return ``(total, zeros)`` over the weights of all masked layers."""
    total = zeros = 0
    for _, m in masked_modules(model):
        total += m.weight.numel()
        zeros += int((m.weight == 0).sum())
    return total, zeros
