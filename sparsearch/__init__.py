"""sparsearch: AutoML search for compact, accurate sparse neural networks on large sparse tabular data.

The heavy parts (torch, ray, mlflow) load lazily, so ``import sparsearch`` and ``sparsearch --version`` are fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "StudyResult",
    "StudySpec",
    "export_study",
    "load_study",
    "rank_features",
    "rank_interactions",
    "refit",
    "run_study",
]

_LAZY = {
    "run_study": "sparsearch.search.controller",
    "StudyResult": "sparsearch.search.results",
    "StudySpec": "sparsearch.search.spec",
    "export_study": "sparsearch.search.export",
    "load_study": "sparsearch.search.spec",
    "rank_features": "sparsearch.features",
    "rank_interactions": "sparsearch.features",
    "refit": "sparsearch.search.refit",
}

if TYPE_CHECKING:  # pragma: no cover
    from sparsearch.features import rank_features, rank_interactions
    from sparsearch.search.controller import run_study
    from sparsearch.search.export import export_study
    from sparsearch.search.refit import refit
    from sparsearch.search.results import StudyResult
    from sparsearch.search.spec import StudySpec, load_study


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsearch' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
