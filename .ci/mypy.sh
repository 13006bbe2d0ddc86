#!/usr/bin/env bash
# Type-check sparsearch with mypy (configured in pyproject.toml [tool.mypy]).
# The distribution maps four top-level folders into one package (features/ -> sparsearch.features, ...: see
# [tool.setuptools] package-dir), which mypy cannot follow through the editable install's import hook. So this
# lays the package out as Python sees it, a tree of symbolic links under build/mypy/, and checks that tree;
# mypy reports paths as build/mypy/sparsearch/<folder>/<file>.py.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
tree=build/mypy/sparsearch
rm -rf build/mypy
mkdir -p "$tree"
for f in sparsearch/*.py; do ln -s "$root/$f" "$tree/$(basename "$f")"; done
for d in features spaces search studies; do ln -s "$root/$d" "$tree/$d"; done
exec python -m mypy "$@"
