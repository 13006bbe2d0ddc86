"""``sparsearch export``: a study's packaged model as files that run without Python.

:func:`export_study` reads the pyfunc model the study logged (:func:`~sparsearch.search.model.load_study_model`)
and writes into one folder:

- ``model.onnx`` (``--format onnx``) or ``model.pt`` (``--format torchscript``): the compact network (dead units
  removed), returning class probabilities and logits (:mod:`sparsearch.spaces.portable`);
- ``encoder.json``: the encoder of the model's raw columns (format ``sparsearch-encoder/2``, see the README), with
  a ``network`` section (file, format, ONNX opset, input and output names, the blocks the network holds) and a
  ``source`` section (study, model URI, trial, library versions).

Files are written under temporary names and renamed when complete, so an interrupted export leaves no
half-written model behind.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sparsearch.errors import SpecError, unknown_choice

if TYPE_CHECKING:
    from sparsearch._types import JSONDict, JSONValue
    from sparsearch.search.model import SparsearchModel

__all__ = ["EXPORT_FORMATS", "ExportResult", "export_study"]

EXPORT_FORMATS = {"onnx": "model.onnx", "torchscript": "model.pt"}
"""Network formats of :func:`export_study` and the file each writes."""
ENCODER_FILE = "encoder.json"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_study` wrote.

    Attributes:
        out: the folder.
        network: the network file.
        encoder: the encoder JSON file.
        document: the encoder JSON document, as written.
    """

    out: Path
    network: Path
    encoder: Path
    document: JSONDict

    def as_dict(self) -> JSONDict:
        """What ``sparsearch export --json`` prints: study, model URI, format, opset, the files written."""
        net, source = self.document["network"], self.document["source"]
        assert isinstance(net, dict) and isinstance(source, dict)  # the sections _write adds
        return {"study_name": source["study_name"], "model_uri": source["model_uri"],
                "format": net["format"], "opset": net.get("opset"), "out": str(self.out),
                "network": str(self.network), "encoder": str(self.encoder), "portable": self.document["portable"]}


def export_study(study_name: str, *, fmt: str = "onnx", out: str | os.PathLike[str],
                 results_dir: str | os.PathLike[str] = "sparsearch-results", storage: str | None = None,
                 tracking_uri: str | None = None) -> ExportResult:
    """Export the model study ``study_name`` logged (see the module docstring) into the folder ``out``.

    Args:
        study_name: a study in the storage (default: the results folder's journal).
        fmt: ``"onnx"`` or ``"torchscript"``.
        out: the folder to write (created if absent; files of the same names are replaced).
        results_dir, storage, tracking_uri: where the study and its MLflow store are, as for ``predict``.

    Raises:
        SpecError: unknown format, unknown study, a study without a packaged tabular model, ``out`` not a
            writable folder.
        ImportError: ``fmt="onnx"`` without the ``export`` extra (``pip install 'sparsearch[export]'``).
    """
    if fmt not in EXPORT_FORMATS:
        raise unknown_choice("export format", fmt, EXPORT_FORMATS)
    out = Path(out)
    _check_folder(out)
    if fmt == "onnx":  # fail before loading anything when the exporter is absent
        from sparsearch.spaces.portable import _require

        _require("onnx")
        _require("onnxscript")
    from sparsearch.search.model import SparsearchModel, load_study_model

    model, uri = load_study_model(study_name, results_dir=results_dir, storage=storage, tracking_uri=tracking_uri)
    try:
        package = model.unwrap_python_model()
    except Exception:  # noqa: BLE001 - MlflowException: a flavor's model (an image study's mlflow.pytorch one)
        package = None
    if not isinstance(package, SparsearchModel):
        raise SpecError(f"study {study_name!r} logged no packaged tabular model (only the pyfunc model of a "
                        f"tabular study, with its encoder, can be exported); its model is {uri!r}")
    return _write(package, fmt, out, {"study_name": study_name, "model_uri": uri})


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SpecError(f"--out {str(out)!r} is a file; give a folder")
    parent = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SpecError(f"--out {str(out)!r}: folder {str(parent)!r} is not writable")


def _write(package: SparsearchModel, fmt: str, out: Path, source: JSONDict) -> ExportResult:
    from importlib.metadata import version

    import torch

    from sparsearch import __version__
    from sparsearch.spaces.portable import encoder_document, export_onnx, export_torchscript

    network = package.network("compact")
    out.mkdir(parents=True, exist_ok=True)
    target = out / EXPORT_FORMATS[fmt]
    tmp_net = out / f".{target.name}.partial"
    tmp_doc = out / f".{ENCODER_FILE}.partial"
    try:
        info = export_onnx(network, tmp_net) if fmt == "onnx" else export_torchscript(network, tmp_net)
        info["file"] = target.name
        document: JSONDict = encoder_document(package.encoder, network)
        document["network"] = info
        versions: JSONDict = {"sparsearch": __version__, "torch": torch.__version__,
                              "polars": version("polars")}
        if fmt == "onnx":
            versions["onnx"] = version("onnx")
        document["source"] = {**source, "versions": versions}
        tmp_doc.write_text(json.dumps(document, indent=1, allow_nan=False, default=_json_value) + "\n")
        os.replace(tmp_net, target)
        os.replace(tmp_doc, out / ENCODER_FILE)
    finally:
        for tmp in (tmp_net, tmp_doc):
            tmp.unlink(missing_ok=True)
    return ExportResult(out, target, out / ENCODER_FILE, document)


def _json_value(value: object) -> JSONValue:
    """Vocabulary values JSON has no type for: dates and times (a temporal column's vocabulary is text already),
    numpy scalars."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
