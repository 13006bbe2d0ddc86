"""The docstring examples of sparsearch.spaces run (STYLE habit 13)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["_registry", "config", "models", "accounting", "distributions", "patterns", "schedules", "spec", "encoder",
           "data", "numeric", "ensemble", "masked", "portable"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"sparsearch.spaces.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
