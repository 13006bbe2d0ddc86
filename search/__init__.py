"""The search controller: Optuna ask/tell over sparse spaces, trials on Ray, every study and trial in MLflow.

Imports :mod:`sparsearch.features` and :mod:`sparsearch.spaces`; they never import this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names are, for type checkers (importing them here would load everything)
    from sparsearch.search.compare import compare_samplers
    from sparsearch.search.controller import run_study
    from sparsearch.search.results import StudyResult
    from sparsearch.search.spec import StudySpec, load_study

__all__ = ["StudyResult", "StudySpec", "compare_samplers", "load_study", "run_study"]

_LAZY = {
    "StudyResult": "sparsearch.search.results",
    "run_study": "sparsearch.search.controller",
    "StudySpec": "sparsearch.search.spec",
    "load_study": "sparsearch.search.spec",
    "compare_samplers": "sparsearch.search.compare",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsearch.search' has no attribute {name!r}")
    return getattr(import_module(module), name)
