"""A trained tabular model in forms that run without Python: the network as ONNX or TorchScript, the encoder as JSON.

- :func:`export_onnx` / :func:`export_torchscript` write a tabular network (normally the :func:`~.export.compact`
  form: dead units removed, smaller dense layers) wrapped so that it returns class probabilities beside its logits.
  Inputs: ``categorical`` (int32 codes, ``(n, n_categorical)``) and ``numeric`` (float32, ``(n, n_numeric)``, not
  yet standardised: the network holds the standardisation); outputs: ``probabilities`` (float32, one column per
  class label) and ``logits``. The batch dimension is dynamic.
- :func:`encoder_document` describes a fitted :class:`~.encoder.TabularEncoder` as a JSON-ready dict (the format
  ``sparsearch-encoder/2``, documented in the README's "Refit, export and serve" section): for every raw column how
  its value becomes an input (vocabulary and codes, hash buckets and the hash function, numeric fill and
  missing-value indicator, an ordered integer column's numeric input), the recipes of crossed columns, the class
  labels, and the order of the network's inputs. What the network's own blocks need (quantiles, bins, PLR
  weights, cross layers, ensemble adapters) is in the network file, not in the JSON.

Every block of :class:`~.models.SparseMLP` exports. The ``quantile`` numeric encoding uses two operators ONNX
lacks (``searchsorted``, ``erfinv``): the ONNX file holds its portable form (:func:`onnx_form`), equal to float64
rounding.

The ONNX exporter (``onnx``, ``onnxscript``) is an optional dependency: ``pip install 'sparsearch[export]'``.
"""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .encoder import (
    _FIRST_CODE,
    CROSS_SEPARATOR,
    FNV64_OFFSET_BASIS,
    FNV64_PRIME,
    MISSING_CODE,
    OOV_CODE,
    STABLE_HASH,
    TabularEncoder,
)
from .models import PairwiseInteraction, SparseMLP
from .numeric import PortableQuantileEncoding, QuantileEncoding

if TYPE_CHECKING:
    from types import ModuleType

    import polars as pl

    from sparsearch._types import JSONDict, JSONValue

__all__ = ["ENCODER_FORMAT", "ONNX_OPSET", "ProbabilityModel", "encoder_document", "export_onnx",
           "export_torchscript", "network_blocks", "onnx_form"]

ENCODER_FORMAT = "sparsearch-encoder/2"
"""The ``format`` field of :func:`encoder_document`'s output; the number changes when a reader must change
(2: hashed columns hash with FNV-1a and say so in ``hash``; ordered integer columns feed a numeric input too)."""
ONNX_OPSET = 20
"""The ONNX opset the network is exported with (ONNX Runtime 1.17 and later run it)."""
INPUT_NAMES = ("categorical", "numeric")
OUTPUT_NAMES = ("probabilities", "logits")


class ProbabilityModel(nn.Module):
    """A tabular network that returns ``(probabilities, logits)``: a binary network's single logit ``z`` becomes
    the columns ``[1 - sigmoid(z), sigmoid(z)]``, a multiclass network's logits their softmax."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, categorical: torch.Tensor, numeric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.network(categorical, numeric)
        if logits.shape[1] == 1:
            p1 = torch.sigmoid(logits)
            return torch.cat([1.0 - p1, p1], dim=1), logits
        return torch.softmax(logits, dim=1), logits


def _example_inputs(network: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Two rows of valid inputs (two, not one: an exporter specialises a dimension of size 1)."""
    if not isinstance(network, SparseMLP):
        raise TypeError(f"only tabular networks (SparseMLP) can be exported, got {type(network).__name__}")
    n_cat, n_num = len(network.embeddings), int(network.n_numeric)
    return torch.full((2, n_cat), MISSING_CODE, dtype=torch.int32), torch.zeros((2, n_num), dtype=torch.float32)


def export_onnx(network: nn.Module, path: str | Path, *, opset: int = ONNX_OPSET) -> JSONDict:
    """Write ``network`` (wrapped in :class:`ProbabilityModel`) to ``path`` as ONNX through ``torch.onnx.export``.

    Returns what a reader needs: the file, the opset, the input and output names. The opset is also written in
    the model's metadata (``metadata_props``: ``sparsearch.opset``).

    Raises:
        ImportError: the ``export`` extra (onnx, onnxscript) is not installed.
    """
    onnx = _require("onnx")
    _require("onnxscript")
    example = _example_inputs(network)
    wrapped = ProbabilityModel(onnx_form(network)).eval()
    batch = torch.export.Dim("batch")
    quiet = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in quiet]
    # the exporter may write the weights beside the graph (``<file>.data``): export in a scratch folder, then
    # save one self-contained file (a compact network is far below ONNX's 2 GB limit for a single file)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            for lg in quiet:  # the exporter logs each step (and the torchvision ops it skips) at INFO/WARNING
                lg.setLevel(logging.ERROR)
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(wrapped, example, str(Path(scratch) / "model.onnx"), dynamo=True,
                                  opset_version=opset, input_names=list(INPUT_NAMES),
                                  output_names=list(OUTPUT_NAMES), dynamic_shapes=({0: batch}, {0: batch}),
                                  verbose=False)
        finally:
            for lg, level in zip(quiet, levels, strict=True):
                lg.setLevel(level)
        model = onnx.load(str(Path(scratch) / "model.onnx"))  # with the weights, wherever they were written
    written = max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx"))
    onnx.helper.set_model_props(model, {"sparsearch.opset": str(written), "sparsearch.inputs": ",".join(INPUT_NAMES),
                                        "sparsearch.outputs": ",".join(OUTPUT_NAMES)})
    onnx.save(model, str(path))
    return {"file": Path(path).name, "format": "onnx", "opset": written, "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES), "blocks": network_blocks(network)}


def export_torchscript(network: nn.Module, path: str | Path) -> JSONDict:
    """Write ``network`` (wrapped in :class:`ProbabilityModel`) to ``path`` as TorchScript (``torch.jit.trace``);
    ``torch.jit.load`` in Python or ``torch::jit::load`` in C++ reads it. Returns the file and the names."""
    wrapped = ProbabilityModel(network).eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notice
        traced = torch.jit.trace(wrapped, _example_inputs(network))
        torch.jit.save(traced, str(path))
    return {"file": Path(path).name, "format": "torchscript", "inputs": list(INPUT_NAMES),
            "outputs": list(OUTPUT_NAMES), "torch": torch.__version__, "blocks": network_blocks(network)}


def network_blocks(network: nn.Module) -> JSONDict:
    """The optional blocks a tabular network holds, for the reader's information (the network file applies
    them; nothing of them is needed to encode rows): its numeric encoding, cross layers, pairwise-product
    width and ensemble size.

    Example:
        >>> from sparsearch.spaces import SparseMLP
        >>> network_blocks(SparseMLP([4, 5], 2, [8], 1, fm_dim=3, ensemble_size=2))
        {'numeric_encoding': 'standard', 'cross_layers': 0, 'fm_dim': 3, 'ensemble_size': 2}
    """
    from .numeric import PeriodicEncoding, PiecewiseLinear

    names = {QuantileEncoding: "quantile", PortableQuantileEncoding: "quantile", PiecewiseLinear: "ple",
             PeriodicEncoding: "plr"}
    encoder = getattr(network, "numeric_encoder", None)
    cross, fm = getattr(network, "cross", None), getattr(network, "fm", None)  # both optional blocks of SparseMLP
    return {"numeric_encoding": "standard" if encoder is None else names.get(type(encoder), type(encoder).__name__),
            "cross_layers": len(cross) if isinstance(cross, nn.ModuleList) else 0,
            "fm_dim": int(fm.dim) if isinstance(fm, PairwiseInteraction) else 0,
            "ensemble_size": int(getattr(network, "ensemble_size", 1))}


def onnx_form(network: nn.Module) -> nn.Module:
    """``network`` with every block that uses an operator ONNX lacks replaced by its portable form, which
    computes the same function (a copy when something is replaced; ``network`` itself otherwise).

    The one such block is the ``quantile`` numeric encoding (``torch.searchsorted`` and ``torch.erfinv``):
    it becomes :class:`~.numeric.PortableQuantileEncoding` (a binary search of gathers and comparisons, the
    normal quantile function by Wichura's AS 241), equal to it to float64 rounding. Every other block (PLE, PLR,
    cross layers, pairwise products, ensembles) exports as it is. TorchScript runs every operator, so
    :func:`export_torchscript` keeps the network as trained.
    """
    encoder = getattr(network, "numeric_encoder", None)
    if type(encoder) is not QuantileEncoding:
        return network
    portable = copy.deepcopy(network)
    portable.numeric_encoder = PortableQuantileEncoding.of(encoder)
    return portable.eval()


def _require(module: str) -> ModuleType:
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as exc:
        raise ImportError(f"exporting to ONNX needs the package {module!r}: pip install 'sparsearch[export]' "
                          f"({exc})") from None


# -- the encoder as JSON ------------------------------------------------------------------------------------------
def _number(x: float) -> float | str:
    """A float for strict JSON: infinities and NaN as the strings ``"inf"``, ``"-inf"``, ``"nan"``."""
    x = float(x)
    if math.isfinite(x):
        return x
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")


def _dtype_kind(dtype: pl.DataType) -> str:
    """How a reader converts a raw value before looking it up (see the README's encoder format)."""
    import polars as pl

    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float():
        return "float"
    if dtype.is_temporal():
        return "temporal"
    return "string"


def _vocabulary(values: pl.Series, dtype: pl.DataType) -> list[JSONValue]:
    import polars as pl

    out = values.to_list()
    if dtype == pl.Boolean:  # the encoder numbers booleans through their 0/1 view
        return [bool(v) for v in out]
    return out


def _hash_entry(function: str | None) -> JSONDict:
    """The ``hash`` entry of a hashed column: the function, stated precisely enough to implement it."""
    if function == STABLE_HASH:
        return {"function": STABLE_HASH, "input": "the value's text as UTF-8 bytes (as a vocabulary would hold it: "
                                                  "integers in decimal, dates as ISO text)",
                "offset_basis": f"0x{FNV64_OFFSET_BASIS:016x}", "prime": f"0x{FNV64_PRIME:x}",
                "step": "for each byte: h = (h XOR byte) * prime modulo 2**64, from h = offset_basis",
                "code": "first_known + h modulo n_buckets (h as an unsigned 64-bit integer); missing: missing"}
    # polars' hash is not a documented, stable function: a reader outside Python cannot compute it
    return {"function": "polars", "code": "first_known + polars.Series.hash(seed=0) of the value's text modulo "
                                          "n_buckets (a missing value: its hash of null, too)"}


# dict[str, Any], not JSONDict: search/export.py adds entries to the document whose types it infers narrower
# (dict[str, str]), which a dict[str, JSONValue] does not accept (dict is invariant)
def encoder_document(encoder: TabularEncoder, network: nn.Module | None = None) -> dict[str, Any]:
    """The JSON-ready description of ``encoder`` (format :data:`ENCODER_FORMAT`); with ``network``, also the
    standardisation the network applies to each numeric input (for reference: the network applies it itself).

    Example:
        >>> import polars as pl
        >>> df = pl.DataFrame({"city": ["a", "b", "a", None], "age": [1.0, None, 3.0, 4.0], "y": [0, 1, 0, 1]})
        >>> doc = encoder_document(TabularEncoder.fit(df, "y"))
        >>> doc["columns"][0]["vocabulary"], doc["inputs"]["numeric"]["columns"]
        (['a', 'b'], ['age', 'age_missing'])
    """
    mean: list[JSONValue] | None = None
    std: list[JSONValue] | None = None
    if isinstance(network, SparseMLP) and network.n_numeric:  # the standardisation is a SparseMLP's buffers
        mean = [float(v) for v in network.numeric_mean.detach().cpu().tolist()]
        std = [float(v) for v in network.numeric_std.detach().cpu().tolist()]
    crosses = {c.name: c for c in encoder.crosses}
    columns: list[JSONValue] = []
    portable: list[bool] = []  # per hashed column: can a reader outside Python compute its hash
    i_cat = i_num = 0
    for col in encoder.columns:
        entry: JSONDict = {"name": col.name, "kind": col.kind, "dtype": str(col.raw_dtype),
                           "dtype_kind": _dtype_kind(col.raw_dtype)}
        if col.name in crosses:
            cross = crosses[col.name]
            entry["cross"] = {
                "parts": list(cross.parts),
                "dtypes": [str(d) for d in cross.dtypes],
                "dtype_kinds": [_dtype_kind(d) for d in cross.dtypes],
                "bin_edges": [None if e is None else [_number(x) for x in e] for e in cross.edges],
                "separator": CROSS_SEPARATOR,
            }
        numeric: JSONDict = {}
        if col.kind == "numeric" or col.ordered:  # a number input (and its indicator), in column order
            inputs = 1 + int(col.indicator)
            numeric = {"fill": _number(col.fill), "indicator": bool(col.indicator)}
            if mean is not None and std is not None:
                numeric["standardise"] = {"mean": mean[i_num:i_num + inputs], "std": std[i_num:i_num + inputs],
                                          "applied_by": "network"}
        if col.kind == "numeric":
            entry.update(numeric)
            entry["input_index"] = i_num
            i_num += 1 + int(col.indicator)
        else:
            entry["input_index"] = i_cat
            i_cat += 1
            entry["ordered"] = bool(col.ordered)
            if col.ordered:  # also its value as a number: read as the column's dtype, else fill (and flag)
                entry.update(numeric)
                entry["numeric_index"] = i_num
                i_num += 1 + int(col.indicator)
            if col.n_buckets is not None:
                entry["encoding"] = "hash"
                entry["n_buckets"] = int(col.n_buckets)
                hashing = _hash_entry(col.hash)
                entry["hash"] = hashing
                computable = hashing["function"] == STABLE_HASH
                entry["portable"] = computable
                portable.append(computable)
            else:
                entry["encoding"] = "vocabulary"
                entry["vocabulary"] = _vocabulary(col.vocabulary, col.raw_dtype)
        columns.append(entry)
    import polars as pl

    return {
        "format": ENCODER_FORMAT,
        "target": encoder.target,
        "classes": list(encoder.classes),
        "raw_columns": list(encoder.raw_features),
        "codes": {"missing": MISSING_CODE, "out_of_vocabulary": OOV_CODE, "first_known": _FIRST_CODE},
        "inputs": {
            "categorical": {"name": INPUT_NAMES[0], "dtype": "int32", "columns": list(encoder.categorical_names)},
            "numeric": {"name": INPUT_NAMES[1], "dtype": "float32", "columns": list(encoder.numeric_names)},
        },
        "outputs": {"probabilities": {"name": OUTPUT_NAMES[0], "columns": [str(c) for c in encoder.classes]},
                    "logits": {"name": OUTPUT_NAMES[1]}},
        "portable": all(portable),
        "columns": columns,
        "polars": pl.__version__,
    }
