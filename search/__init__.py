"""The search controller: Optuna ask/tell over sparse spaces, trials on Ray, every study and trial in MLflow.

Imports :mod:`sparsearch.features` and :mod:`sparsearch.spaces`; they never import this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["StudyResult", "StudySpec", "compare_samplers", "load_study", "run_study"]

_LAZY = {
    "StudyResult": "sparsearch.search.results",
    "run_study": "sparsearch.search.controller",
    "StudySpec": "sparsearch.search.spec",
    "load_study": "sparsearch.search.spec",
    "compare_samplers": "sparsearch.search.compare",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsearch.search' has no attribute {name!r}")
    return getattr(import_module(module), name)
