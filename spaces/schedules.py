"""Sparsity schedules, shaped like torch.ao.pruning's schedulers: ``step()``, ``get_last_sl()``, ``state_dict()``.

Semantics (explicit, tested; DOMAIN.md 2.8):

- ``total_steps`` is the number of optimizer steps of sparse training; ``step`` counts optimizer steps taken so far
  (0 = before the first step).
- The pruning window is ``t0 = round(start_frac * total_steps)`` .. ``t1 = round(end_frac * total_steps)``.
- With ``n = mask_updates``, update ``k = 1..n`` happens when ``step == t0 + round(k * (t1 - t0) / n)`` and sets
  sparsity ``s_k = s_i + (s_f - s_i) * y(k / n)``. So the first update already prunes (``x = 1/n``, never a wasted
  update at ``x = 0``) and the last update, at ``t1``, reaches exactly ``s_f``. Before the first update the sparsity is
  ``s_i``; after the last it stays ``s_f``.
- ``one_shot`` has a single update at ``t0`` to ``s_f`` (``t0 = 0``: prune before training).

The formulas ``y(x)`` are pure static functions (``compute``):

- linear: ``y = x``;
- cubic (Zhu & Gupta 2017): ``y = 1 - (1 - x)^3`` (prunes fast first; *not* the ``(k/K)^3`` curve of one older
  toolkit);
- exponential: the density decays geometrically, ``1 - s = (1 - s_i)^(1-x) * (1 - s_f)^x``, i.e. a constant fraction
  of the remaining weights is removed at each update.
"""

from __future__ import annotations

import math
from typing import Any

from ._registry import Registry

SCHEDULES: Registry[type[SparsitySchedule]] = Registry("schedule")


class SparsitySchedule:
    """Base class: implement :meth:`compute` (``x`` in [0, 1] -> sparsity)."""

    name = "base"

    def __init__(
        self, *, final_sparsity: float, total_steps: int, start_frac: float = 0.0, end_frac: float = 1.0,
        mask_updates: int = 10, initial_sparsity: float = 0.0,
    ) -> None:
        if not 0.0 <= start_frac <= end_frac <= 1.0:
            raise ValueError(f"need 0 <= start_frac <= end_frac <= 1, got start_frac={start_frac}, end_frac={end_frac}")
        if mask_updates < 1:
            raise ValueError(f"mask_updates must be >= 1, got {mask_updates}")
        if total_steps < 0:
            raise ValueError(f"total_steps must be >= 0, got {total_steps}")
        self.final_sparsity = float(final_sparsity)
        self.initial_sparsity = float(initial_sparsity)
        self.total_steps = int(total_steps)
        self.start_frac = start_frac
        self.end_frac = end_frac
        self.mask_updates = int(mask_updates)
        self.last_step = 0

    # -- the formula -------------------------------------------------------------------------------------------
    @staticmethod
    def compute(x: float, s_i: float, s_f: float) -> float:
        raise NotImplementedError

    # -- the grid ----------------------------------------------------------------------------------------------
    @property
    def t0(self) -> int:
        return int(round(self.start_frac * self.total_steps))

    @property
    def t1(self) -> int:
        return int(round(self.end_frac * self.total_steps))

    def updates(self) -> list[tuple[int, float]]:
        """All ``(step, sparsity)`` mask updates, in order (steps may repeat for a tiny window; last one wins)."""
        n, t0, t1 = self.mask_updates, self.t0, self.t1
        return [
            (t0 + int(round(k * (t1 - t0) / n)), self.compute(k / n, self.initial_sparsity, self.final_sparsity))
            for k in range(1, n + 1)
        ]

    def update_at(self, step: int) -> float | None:
        """Sparsity to prune to when ``step`` optimizer steps have been taken, or ``None`` if no update is due."""
        value = None
        for s, sp in self.updates():
            if s == step:
                value = sp
        return value

    def sparsity_at(self, step: int) -> float:
        """The scheduled sparsity after ``step`` optimizer steps."""
        value = self.initial_sparsity
        for s, sp in self.updates():
            if s <= step:
                value = sp
        return value

    # -- torch.ao-like stepping ------------------------------------------------------------------------------
    def step(self) -> float | None:
        """Advance one optimizer step; return the sparsity to prune to now, or ``None``."""
        self.last_step += 1
        return self.update_at(self.last_step)

    def get_last_sl(self) -> float:
        return self.sparsity_at(self.last_step)

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@SCHEDULES.register("one_shot")
class OneShot(SparsitySchedule):
    name = "one_shot"

    @staticmethod
    def compute(x: float, s_i: float, s_f: float) -> float:
        return s_f

    def updates(self) -> list[tuple[int, float]]:
        return [(self.t0, self.final_sparsity)]


@SCHEDULES.register("linear")
class Linear(SparsitySchedule):
    name = "linear"

    @staticmethod
    def compute(x: float, s_i: float, s_f: float) -> float:
        return s_i + (s_f - s_i) * min(max(x, 0.0), 1.0)


@SCHEDULES.register("cubic")
class Cubic(SparsitySchedule):
    name = "cubic"

    @staticmethod
    def compute(x: float, s_i: float, s_f: float) -> float:
        x = min(max(x, 0.0), 1.0)
        return s_f + (s_i - s_f) * (1.0 - x) ** 3


@SCHEDULES.register("exponential")
class Exponential(SparsitySchedule):
    name = "exponential"

    @staticmethod
    def compute(x: float, s_i: float, s_f: float) -> float:
        x = min(max(x, 0.0), 1.0)
        if s_f >= 1.0:
            return s_f if x >= 1.0 else 1.0 - (1.0 - s_i) ** (1.0 - x) * 1e-12**x
        return 1.0 - math.exp((1.0 - x) * math.log1p(-s_i) + x * math.log1p(-s_f))


def make_schedule(name: str, **kwargs: Any) -> SparsitySchedule:
    return SCHEDULES.get(name)(**kwargs)
