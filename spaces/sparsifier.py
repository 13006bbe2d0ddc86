"""The sparsifier: applies a pattern, a layer-wise distribution and a criterion to the masked layers of a model."""

from __future__ import annotations

import torch
from torch import nn

from .criteria import Criterion, make_criterion
from .distributions import Distribution, LayerInfo, make_distribution
from .masked import MaskedMixin, masked_modules, reset_optimizer_state_at, zero_optimizer_state
from .patterns import Pattern, make_pattern


class Sparsifier:
    """Owns the masks of one model: ``prune_to(sparsity)`` and RigL/SET-style ``drop_and_grow``.

    Args:
        model: any module whose prunable layers are :mod:`sparsearch.spaces.masked` layers. The last masked layer is
            treated as the classifier head (the ``neuron`` pattern prunes its inputs, not its classes).
        seed: seed of the sparsifier's own generator (random criterion, SET regrowth).
    """

    def __init__(
        self, model: nn.Module, *, pattern: Pattern | str = "unstructured", distribution: Distribution | str = "erk",
        criterion: Criterion | str = "magnitude", optimizer: torch.optim.Optimizer | None = None,
        seed: int | None = 0, nm_keep: int = 2, nm_group: int = 4, erk_power: float = 1.0,
        scales: list[float] | None = None,
    ) -> None:
        self.model = model
        self.layers: list[tuple[str, MaskedMixin]] = list(masked_modules(model))
        self.pattern = make_pattern(pattern, nm_keep=nm_keep, nm_group=nm_group) if isinstance(pattern, str) else pattern
        self.distribution = (
            make_distribution(distribution, power=erk_power, scales=scales)
            if isinstance(distribution, str) else distribution
        )
        self.criterion = make_criterion(criterion) if isinstance(criterion, str) else criterion
        self.optimizer = optimizer
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else torch.seed())
        self.dense_grads: list[torch.Tensor | None] | None = None

    @property
    def infos(self) -> list[LayerInfo]:
        return [LayerInfo(name, tuple(m.weight.shape)) for name, m in self.layers]

    def _is_head(self, i: int) -> bool:
        return i == len(self.layers) - 1 and len(self.layers) > 1

    def _grad(self, i: int) -> torch.Tensor | None:
        if self.dense_grads is not None:
            return self.dense_grads[i]
        g = self.layers[i][1].weight.grad
        return None if g is None else g.detach()

    def capture_dense_grads(self) -> None:
        """Keep a copy of the (unmasked) gradients, before masked gradients are zeroed for the optimizer step."""
        self.dense_grads = [None if m.weight.grad is None else m.weight.grad.detach().clone() for _, m in self.layers]

    def layer_densities(self, sparsity: float, scores: list[torch.Tensor] | None = None) -> list[float]:
        if sparsity <= 0.0:
            return [1.0] * len(self.layers)
        if self.pattern.fixed_density is not None:
            return [1.0 - sparsity] * len(self.layers)
        return self.distribution.densities(self.infos, sparsity, scores=scores)

    @torch.no_grad()
    def prune_to(self, sparsity: float, *, criterion: Criterion | None = None, keep_pruned: bool = True) -> None:
        """Set masks so that the prunable weights reach ``sparsity`` (pruned weights stay pruned)."""
        crit = criterion or self.criterion
        scores = []
        for i, (_, m) in enumerate(self.layers):
            s = crit.score(m.weight, self._grad(i), self.generator).float()
            if keep_pruned:
                s = s.masked_fill(~m.mask, float("-inf"))
            scores.append(s)
        densities = self.layer_densities(sparsity, scores)
        # Coarse patterns cannot hit every layer's count exactly: visit dense layers first, then layers from the
        # coarsest unit to the finest, carrying each layer's rounding error into the next (error diffusion), so the
        # total stays on budget.
        order = sorted(
            range(len(self.layers)),
            key=lambda i: (densities[i] < 1.0, -self.pattern.granularity(
                tuple(self.layers[i][1].matrix_view(scores[i]).shape), head=self._is_head(i))),  # type: ignore[arg-type]  # 2-D
        )
        carry = 0.0
        for i in order:
            m = self.layers[i][1]
            want = densities[i] * m.weight.numel() + carry
            mask = self.pattern.mask(m.matrix_view(scores[i]), want, head=self._is_head(i)).reshape(m.weight.shape)
            carry = want - float(mask.sum())
            m.set_mask(mask)
        if self.optimizer is not None:
            zero_optimizer_state(self.optimizer, self.model)
        self.dense_grads = None

    @torch.no_grad()
    def drop_and_grow(self, drop_fraction: float, *, grow: str) -> int:
        """One dynamic-sparse-training update at constant per-layer density.

        Drop the ``drop_fraction`` lowest-magnitude active weights of each layer, then regrow as many where the
        dense gradient is largest (``grow="gradient"``, RigL) or at random (``grow="random"``, SET), both within the
        pattern. Newly grown weights start at zero with a zeroed optimizer state (a weight dropped and regrown in the
        same update keeps its value, as rigl's default ``reinit_when_same=False``). Returns the number of new
        connections.
        """
        regrown = 0
        for i, (_, m) in enumerate(self.layers):
            active = m.mask
            n_active = int(active.sum())
            if n_active == 0 or n_active == active.numel():
                continue
            head = self._is_head(i)
            mag = m.weight.detach().abs().masked_fill(~active, float("-inf"))
            survivors = self.pattern.mask(m.matrix_view(mag), n_active * (1.0 - drop_fraction), head=head)
            survivors = survivors.reshape(active.shape) & active
            if grow == "gradient":
                g = self._grad(i)
                gs = g.abs() if g is not None else torch.zeros_like(mag)
            else:
                # drawn on the CPU (the generator's device: the same masks on any device), used where the weights are
                gs = torch.rand(active.shape, generator=self.generator).to(mag.device)
            gs = gs / (gs.max() + 1e-12)
            combined = torch.where(survivors, 2.0 + m.weight.detach().abs(), gs)
            new_mask = self.pattern.mask(m.matrix_view(combined), n_active, head=head).reshape(active.shape)
            # only connections that were inactive are new; a dropped connection regrown in the same update keeps
            # its value and optimizer state (rigl's default ``reinit_when_same=False``)
            fresh = new_mask & ~active
            m.weight_mask.copy_(new_mask.to(m.weight_mask.dtype))
            m.weight.masked_fill_(fresh | ~new_mask, 0.0)
            if self.optimizer is not None:
                reset_optimizer_state_at(self.optimizer, m.weight, fresh | ~new_mask)
            regrown += int(fresh.sum())
        self.dense_grads = None
        return regrown

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero masked gradients (before the optimizer step); same as :func:`masked.mask_gradients`, cached."""
        for _, m in self.layers:
            if m.weight.grad is not None:
                m.weight.grad.mul_(m.weight_mask)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Re-apply masks (after the optimizer step); same as :func:`masked.apply_masks`, cached layer list."""
        for _, m in self.layers:
            m.weight.mul_(m.weight_mask)

    @torch.no_grad()
    def remove_masks(self) -> None:
        """Make every layer dense again (sparse-to-dense fine-tuning)."""
        for _, m in self.layers:
            m.weight_mask.fill_(1.0)

    def realized_sparsity(self) -> float:
        total = sum(m.weight.numel() for _, m in self.layers)
        zeros = sum(int((m.weight == 0).sum()) for _, m in self.layers)
        return zeros / total if total else 0.0

    def mask_sparsity(self) -> float:
        total = sum(m.weight_mask.numel() for _, m in self.layers)
        zeros = sum(int((~m.mask).sum()) for _, m in self.layers)
        return zeros / total if total else 0.0
