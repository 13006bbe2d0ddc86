"""The docstring examples of sparsearch, sparsearch.features and sparsearch.search run (STYLE habit 13).

Every module of those packages is found by walking them, so a new module's examples run without being listed
here. ``sparsearch.spaces`` has its own (tests/spaces/test_doctests.py; this file needs another basename). An example that needs a cluster or minutes
is marked ``# doctest: +SKIP`` where it is written (today: ``run_study``'s, which starts Ray and trains).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

PACKAGES = ["sparsearch", "sparsearch.features", "sparsearch.search"]
SUBPACKAGES = {"sparsearch.features", "sparsearch.spaces", "sparsearch.search", "sparsearch.studies"}
NOT_IMPORTABLE = {"sparsearch.__main__"}  # runs the CLI when imported


def _modules(package: str) -> list[str]:
    pkg = importlib.import_module(package)
    names = [package]
    for info in pkgutil.iter_modules(pkg.__path__):
        name = f"{package}.{info.name}"
        if name in SUBPACKAGES or name in NOT_IMPORTABLE:
            continue
        names += _modules(name) if info.ispkg else [name]  # a package split by job (search.spec): its modules too
    return names


MODULES = [name for package in PACKAGES for name in _modules(package)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_has_running_examples(package):
    """Each package documents itself with examples that run (a walk that finds nothing would pass vacuously)."""
    finder = doctest.DocTestFinder()
    examples = sum(len(t.examples) for name in _modules(package)
                   for t in finder.find(importlib.import_module(name)))
    assert examples > 0, f"{package} has no docstring examples"
