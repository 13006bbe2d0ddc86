"""Study files: TOML in, validated frozen objects out.

One module per job: :mod:`~sparsearch.search.spec.sections` (the schema of each section, and
:func:`parse_study`), :mod:`~sparsearch.search.spec.load` (files, bundled studies, overrides, :func:`load_study`),
:mod:`~sparsearch.search.spec.overrides` (the override table the CLI flags are generated from),
:mod:`~sparsearch.search.spec.errors` (one-line errors) and :mod:`~sparsearch.search.spec.notes` (warnings about
a study's settings). Every public name is importable from here, as ``from sparsearch.search.spec import
load_study``; they load on first use, so the CLI reads the override table without importing the schema.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparsearch.search.spec.load import apply_overrides, bundled_studies, load_study
    from sparsearch.search.spec.notes import pruner_comparison_steps, pruning_window_note, startup_note
    from sparsearch.search.spec.overrides import OVERRIDES, Override
    from sparsearch.search.spec.sections import (
        SECTIONS,
        DataSpec,
        ExecutionSpec,
        StorageSpec,
        StudySection,
        StudySpec,
        TrackingSpec,
        callable_name,
        generator_names,
        parse_study,
    )

__all__ = [
    "OVERRIDES",
    "SECTIONS",
    "DataSpec",
    "ExecutionSpec",
    "Override",
    "StorageSpec",
    "StudySection",
    "StudySpec",
    "TrackingSpec",
    "apply_overrides",
    "bundled_studies",
    "callable_name",
    "generator_names",
    "load_study",
    "parse_study",
    "pruner_comparison_steps",
    "pruning_window_note",
    "startup_note",
]

_WHERE = {
    **dict.fromkeys(["apply_overrides", "bundled_studies", "load_study"], "load"),
    **dict.fromkeys(["pruner_comparison_steps", "pruning_window_note", "startup_note"], "notes"),
    **dict.fromkeys(["OVERRIDES", "Override"], "overrides"),
    **dict.fromkeys(["SECTIONS", "DataSpec", "ExecutionSpec", "StorageSpec", "StudySection", "StudySpec",
                     "TrackingSpec", "callable_name", "generator_names", "parse_study"], "sections"),
}


def __getattr__(name: str) -> object:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsearch.search.spec' has no attribute {name!r}")
    return getattr(import_module(f"sparsearch.search.spec.{module}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
