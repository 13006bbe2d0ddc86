"""The override table: each keyword of :func:`~sparsearch.search.spec.load_study` / ``run_study`` that sets one
study-file field, and the CLI flag generated from it (``n_trials`` -> ``--n-trials``, with its type, metavar and
help). Any other field is set by a dotted ``"section.key"`` (``--set section.key=value`` at the CLI).

This module imports nothing heavy: the CLI reads it to build its parser.

Example:
    >>> OVERRIDES["n_trials"].flag, OVERRIDES["n_trials"].help
    ('--n-trials', '[study] n_trials')
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OVERRIDES", "Override"]


class Override(NamedTuple):
    """One keyword override: the field it sets, and how the CLI flag of the same name reads and explains it.

    A named tuple, not a dataclass: ``dataclasses`` imports ``inspect``, ~40 ms more for every ``sparsearch`` call.
    """

    section: str
    key: str
    type: type = str
    metavar: str = "VALUE"
    hint: str = ""
    """Said after ``[section] key`` in the flag's help (its leading separator included)."""
    name: str = ""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def help(self) -> str:
        return f"[{self.section}] {self.key}{self.hint}"


def _table(**overrides: Override) -> dict[str, Override]:
    return {name: o._replace(name=name) for name, o in overrides.items()}


OVERRIDES: dict[str, Override] = _table(
    study_name=Override("study", "name", metavar="NAME"),
    n_trials=Override("study", "n_trials", int, "N"),
    timeout=Override("study", "timeout", float, "SECONDS"),
    sampler=Override("study", "sampler", metavar="NAME", hint=" (tpe, random, nsga2, ...)"),
    pruner=Override("study", "pruner", metavar="NAME", hint=" (none, median, hyperband, ...)"),
    seed=Override("study", "seed", int, "N"),
    warm_start=Override("study", "warm_start", metavar="WHAT", hint=" (portfolio, study:NAME, none)"),
    data=Override("data", "path", metavar="PATH", hint=": your parquet/CSV file, folder or glob"),  # or frame
    target=Override("data", "target", metavar="COL", hint=" column"),
    top_k=Override("data", "top_k", int, "K", hint=" features kept by the prefilter"),
    epochs=Override("train", "epochs", int, "N"),
    workers=Override("execution", "workers", int, "N", hint=" (trials in flight)"),
    ray_address=Override("execution", "ray_address", metavar="ADDR", hint=" (default: RAY_ADDRESS or local)"),
    storage=Override("storage", "url", metavar="URL", hint=" (journal:PATH, sqlite:///..., postgresql://...)"),
    tracking_uri=Override("tracking", "uri", metavar="URI", hint=" (default: MLFLOW_TRACKING_URI or local)"),
)
"""Keyword overrides accepted by :func:`~sparsearch.search.spec.load_study` and ``run_study``, in the order the
CLI lists their flags. ``data`` sets ``[data] path``, or ``[data] frame`` when it is a DataFrame."""
