"""Building blocks for the typed study-file sections.

Every section of a study file is a :class:`StrictModel`: frozen, unknown keys rejected. Ranges are written in
TOML as ``[low, high]`` or as a single number (a fixed value) and validated to ``low <= high``. Each wing defines
the sections it owns (``spaces`` owns ``[space]`` and ``[train]``, ``features`` the ranker options); the study
loader in ``sparsearch.search.spec`` composes them and turns pydantic errors into one-line messages.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict


class StrictModel(BaseModel):
    """A frozen pydantic model that rejects unknown keys and keeps strict numeric types."""

    # ser_json_inf_nan: an infinite or NaN float (TOML allows them, e.g. a threshold pruner's ``upper = inf``) stays
    # a float in model_dump(mode="json"), so a spec's TOML form (what an override or a refit re-validates, what
    # MLflow records) holds what the file said; pydantic's default writes None, which changed the spec on a round trip
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, ser_json_inf_nan="constants")


def _to_pair(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number or a [low, high] pair, got {value!r}")
    if isinstance(value, (int, float)):
        return (value, value)
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError(f"expected a [low, high] pair, got {len(value)} values")
        if any(isinstance(v, bool) for v in value):
            raise ValueError(f"expected numbers in [low, high], got {list(value)!r}")
        return tuple(value)
    return value


def _ordered(pair: tuple) -> tuple:
    low, high = pair
    if low > high:
        raise ValueError(f"low must be <= high, got [{low}, {high}]")
    return pair


IntRange = Annotated[tuple[int, int], BeforeValidator(_to_pair), AfterValidator(_ordered)]
"""An inclusive integer range ``(low, high)``; a single integer means a fixed value."""

FloatRange = Annotated[tuple[float, float], BeforeValidator(_to_pair), AfterValidator(_ordered)]
"""An inclusive float range ``(low, high)``; a single number means a fixed value."""
