"""Sparse training methods: when and how masks change during training.

A method is driven by the training loop through three hooks (all optional, no-ops by default):
``setup(sparsifier, total_steps)`` before the first step, ``wants_dense_grad(step)`` asked before each optimizer step
(step = the number of steps that will have been taken after it), and ``after_step(step)`` after each optimizer step.

- ``dense``: no pruning (baseline).
- ``static``: random sparsity at initialisation with the configured distribution, fixed for training
  ("The Unreasonable Effectiveness of Random Pruning", ICLR 2022).
- ``gmp``: gradual magnitude pruning (Zhu & Gupta 2017) following a schedule and the configured criterion.
- ``set``: SET (Mocanu et al. 2018): random static init, then every ``dst_interval`` steps until ``end_frac`` of
  training drop the ``dst_alpha`` fraction of smallest-magnitude active weights and regrow as many at random.
- ``rigl``: RigL (Evci et al. 2020): as SET but regrow where the dense gradient magnitude is largest, with the drop
  fraction cosine-decayed ``f(t) = alpha / 2 * (1 + cos(pi * t / T_end))``. Regrown weights start at zero and their
  optimizer state is reset (both methods).
"""

from __future__ import annotations

import math

from ._registry import Registry
from .criteria import Random
from .schedules import SparsitySchedule, make_schedule
from .sparsifier import Sparsifier

METHODS: Registry[type[Method]] = Registry("method")


class Method:
    """Base class. ``sparse`` is False only for the dense baseline; ``gradual`` is True for a method whose sparsity
    grows during training (its accuracy dips while it prunes), False for one that holds its sparsity from the start."""

    name = "base"
    sparse = True
    gradual = False

    def __init__(
        self, *, target_sparsity: float, schedule: str = "cubic", start_frac: float = 0.25, end_frac: float = 0.75,
        mask_updates: int = 10, dst_interval: int = 100, dst_alpha: float = 0.3,
    ) -> None:
        self.target_sparsity = target_sparsity
        self.schedule_name = schedule
        self.start_frac = start_frac
        self.end_frac = end_frac
        self.mask_updates = mask_updates
        self.dst_interval = dst_interval
        self.dst_alpha = dst_alpha
        self.sparsifier: Sparsifier | None = None
        self.total_steps = 0
        #: number of mask changes so far (accounting)
        self.n_updates = 0

    def setup(self, sparsifier: Sparsifier, total_steps: int) -> None:
        self.sparsifier = sparsifier
        self.total_steps = total_steps

    def wants_dense_grad(self, step: int) -> bool:
        return False

    def after_step(self, step: int) -> None:
        return None

    @property
    def final_step(self) -> int:
        """The optimizer step from which the model is at its final sparsity (0: from the start). Masks may still
        move after it (SET and RigL swap connections at constant sparsity), the sparsity no longer does."""
        return 0


@METHODS.register("dense")
class Dense(Method):
    name = "dense"
    sparse = False


@METHODS.register("static")
class Static(Method):
    name = "static"

    def setup(self, sparsifier: Sparsifier, total_steps: int) -> None:
        super().setup(sparsifier, total_steps)
        sparsifier.prune_to(self.target_sparsity, criterion=Random())
        self.n_updates += 1


@METHODS.register("gmp")
class GMP(Method):
    name = "gmp"
    gradual = True

    def setup(self, sparsifier: Sparsifier, total_steps: int) -> None:
        super().setup(sparsifier, total_steps)
        self.schedule: SparsitySchedule = make_schedule(
            self.schedule_name, final_sparsity=self.target_sparsity, total_steps=total_steps,
            start_frac=self.start_frac, end_frac=self.end_frac, mask_updates=self.mask_updates,
        )
        self._due = dict(self.schedule.updates())  # step -> sparsity (last one wins on repeats)
        self.after_step(0)

    def wants_dense_grad(self, step: int) -> bool:
        return self.sparsifier is not None and step in self._due and self.sparsifier.criterion.needs_grad

    @property
    def final_step(self) -> int:
        """The last scheduled mask update (``t1`` of the pruning window; ``t0`` for ``one_shot``)."""
        return max(self._due, default=0)

    def after_step(self, step: int) -> None:
        sparsity = self._due.get(step)
        if sparsity is not None and self.sparsifier is not None:
            self.sparsifier.prune_to(sparsity)
            self.n_updates += 1


class _DST(Method):
    grow = "random"

    def setup(self, sparsifier: Sparsifier, total_steps: int) -> None:
        super().setup(sparsifier, total_steps)
        sparsifier.prune_to(self.target_sparsity, criterion=Random())
        self.t_end = int(round(self.end_frac * total_steps))
        self.n_updates += 1

    def due(self, step: int) -> bool:
        return step > 0 and step % self.dst_interval == 0 and step < self.t_end

    def drop_fraction(self, step: int) -> float:
        return self.dst_alpha

    def after_step(self, step: int) -> None:
        if self.due(step) and self.sparsifier is not None:
            self.sparsifier.drop_and_grow(self.drop_fraction(step), grow=self.grow)
            self.n_updates += 1


@METHODS.register("set")
class SET(_DST):
    """Constant drop fraction ``dst_alpha`` (the original SET ``zeta``), random regrowth."""

    name = "set"
    grow = "random"


@METHODS.register("rigl")
class RigL(_DST):
    name = "rigl"
    grow = "gradient"

    @staticmethod
    def cosine_drop_fraction(step: int, t_end: int, alpha: float) -> float:
        """``alpha / 2 * (1 + cos(pi * step / t_end))`` (rigl's cosine decay)."""
        return alpha / 2.0 * (1.0 + math.cos(math.pi * min(step, t_end) / max(t_end, 1)))

    def drop_fraction(self, step: int) -> float:
        return self.cosine_drop_fraction(step, self.t_end, self.dst_alpha)

    def wants_dense_grad(self, step: int) -> bool:
        return self.due(step)


def make_method(name: str, **kwargs) -> Method:
    return METHODS.get(name)(**kwargs)
