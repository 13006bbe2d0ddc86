"""Progress lines for long studies: trials done / pruned / failed, best value so far, elapsed time and ETA."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from optuna.trial import TrialState

__all__ = ["ProgressPrinter", "format_duration"]


def format_duration(seconds: float) -> str:
    """Format seconds as ``M:SS`` or ``H:MM:SS``.

    Example:
        >>> format_duration(75.2)
        '1:15'
    """
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class ProgressPrinter:
    """Prints one line per finished trial to ``stream`` (stderr by default)."""

    def __init__(self, total: int, objectives: list[str], stream: TextIO | None = None) -> None:
        self.total = total
        self.objectives = objectives
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
        self.best: list[float] | None = None

    def message(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def trial_done(self, number: int, state: TrialState, values: list[float] | None, best: list[float] | None,
                   duration_s: float, note: str = "") -> None:
        name = state.name
        self.counts[name] = self.counts.get(name, 0) + 1
        self.best = best
        done = sum(self.counts.values())
        elapsed = time.perf_counter() - self.start
        eta = elapsed / done * max(self.total - done, 0) if done else 0.0
        shown = ""
        if values:
            shown = " " + " ".join(f"{o}={v:.4g}" for o, v in zip(self.objectives, values))
        best_txt = "best " + (", ".join(f"{v:.4g}" for v in best) if best else "-")
        extra = f" ({note})" if note else ""
        self.message(
            f"trial {number:>4} {name:<8}{shown} [{duration_s:.1f}s]{extra} | {done}/{self.total} done: "
            f"{self.counts['COMPLETE']} complete, {self.counts['PRUNED']} pruned, {self.counts['FAIL']} failed | "
            f"{best_txt} | elapsed {format_duration(elapsed)}, ETA {format_duration(eta)}"
        )
