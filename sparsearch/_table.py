"""Plain-text tables for the CLI's human-readable output."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def fmt(value: Any) -> str:
    """Format one cell: floats with 4 significant digits, lists joined, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, max_width: int = 48) -> str:
    """Render rows as an aligned text table.

    Example:
        >>> print(table(["a", "b"], [[1, 0.5], [22, None]]))
        a   b
        --  ---
        1   0.5
        22  -
    """
    cells = [[fmt(c)[:max_width] for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)
