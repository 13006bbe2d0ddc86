"""What a logged model needs to be loaded elsewhere: its pip requirements, and sparsearch itself as a wheel.

A packaged model (:class:`~sparsearch.search.model.SparsearchModel`) is sparsearch's own object: loading it needs
sparsearch, and the torch, polars, pandas and numpy it was trained with. :func:`model_requirements` names them
all. Where sparsearch was installed from a package index, the requirement is ``sparsearch==<version>``. Where it
was not (an editable or local install: pip records a ``direct_url.json`` for those, PEP 610), no environment that
MLflow builds for the model (``--env-manager virtualenv``, ``mlflow models build-docker``) could install it: the
model then carries a wheel of the installed sparsearch, logged through MLflow's ``code_paths`` (so it lands in the
model's ``code/`` folder) and required as ``code/<wheel>``, a path pip resolves in the model folder, where MLflow
runs its ``pip install -r requirements.txt``.

The wheel is built from the installed package's own files (every subpackage's ``*.py`` and the bundled study
files) and its installed metadata (dependencies, entry points), so that it needs no build backend and no network.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.version import Version

__all__ = ["PINNED", "SUBPACKAGES", "build_wheel", "model_requirements"]

PINNED = ("torch", "polars", "pandas", "numpy")
"""Libraries a packaged model runs, pinned to the versions it was trained with."""
SUBPACKAGES = ("sparsearch", "sparsearch.features", "sparsearch.spaces", "sparsearch.search", "sparsearch.studies")
"""The distribution's package folders (pyproject.toml's ``package-dir``); packages nested in them are found."""
_DATA = {"sparsearch.studies": ("*.toml",)}
_WHEEL = "Wheel-Version: 1.0\nGenerator: sparsearch.search.requirements\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def from_index() -> bool:
    """Whether the installed sparsearch came from a package index: an installer recorded it (``INSTALLER``) and
    pip wrote no ``direct_url.json`` (a source tree's ``sparsearch.egg-info`` has neither file: not an index)."""
    dist = metadata.distribution("sparsearch")
    return dist.read_text("INSTALLER") is not None and dist.read_text("direct_url.json") is None


def model_requirements(scratch: Path) -> tuple[list[str], list[str]]:
    """``(pip_requirements, code_paths)`` for ``mlflow.pyfunc.log_model``; a wheel, when one is carried, is
    written into ``scratch`` (MLflow copies it into the model)."""
    # the public version: ``torch==2.13.0`` also matches the installed ``2.13.0+cpu`` (PEP 440), and a package
    # index can serve it (the CPU or CUDA build is the deployer's choice: PyPI has no ``+cpu`` label)
    pins = [f"{name}=={Version(metadata.version(name)).public}" for name in PINNED]
    if from_index():
        return [f"sparsearch=={metadata.version('sparsearch')}", *pins], []
    wheel = build_wheel(scratch)
    return [f"code/{wheel.name}", *pins], [str(wheel)]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _parents(inner: Path) -> list[Path]:
    """The folders between a package folder and a file in it (each must be a package for the file to ship)."""
    return list(reversed(inner.parents))[1:]  # "x/y/a.py": x, x/y (not ".")


def build_wheel(out: Path) -> Path:
    """A pure-Python wheel of the installed sparsearch in folder ``out`` (see the module docstring)."""
    dist = metadata.distribution("sparsearch")
    version = dist.version
    info = f"sparsearch-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in SUBPACKAGES:  # each folder with the packages nested in it (search/spec/, ...)
        module_file = importlib.import_module(package).__file__
        assert module_file is not None, package  # a regular package (an __init__.py), never a namespace one
        folder = Path(module_file).parent
        prefix = package.replace(".", "/")
        for pattern in ("*.py", *_DATA.get(package, ())):
            for source in sorted(folder.rglob(pattern)):
                inner = source.relative_to(folder)
                if "__pycache__" not in inner.parts and all((folder / d / "__init__.py").exists()
                                                            for d in _parents(inner)):
                    files[f"{prefix}/{inner.as_posix()}"] = source.read_bytes()
    meta = dist.read_text("METADATA") or dist.read_text("PKG-INFO")  # a .dist-info or a source tree's .egg-info
    if not meta:
        raise RuntimeError("the installed sparsearch has no METADATA: reinstall it (pip install -e .)")
    files[f"{info}/METADATA"] = meta.encode()
    files[f"{info}/WHEEL"] = _WHEEL.encode()
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        files[f"{info}/entry_points.txt"] = entry_points.encode()
    files[f"{info}/top_level.txt"] = b"sparsearch\n"
    record = [f"{name},{_record_hash(data)},{len(data)}" for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"sparsearch-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data,
                        compress_type=zipfile.ZIP_DEFLATED)
    return path

