"""The best trial's model, packaged for raw rows: an MLflow pyfunc model that carries its own preprocessing.

A trained :class:`~sparsearch.spaces.SparseMLP` expects integer codes and standardised numbers for the features the
prefilter kept. :class:`SparsearchModel` holds that module together with the study's fitted
:class:`~sparsearch.spaces.encoder.TabularEncoder` restricted to the trial's features (the recipes of its crossed
features, vocabularies, hash buckets, medians, missing-value indicators, class labels), so that::

    mlflow.pyfunc.load_model(model_uri).predict(raw_pandas_frame)

returns class probabilities (one column per class label) for new rows in the raw format of the study's data:
unseen categories get the out-of-vocabulary code, missing values the missing code or the training median, columns
the model does not read are ignored. Parameters of ``predict`` choose the output (``"proba"`` or ``"class"``) and
the form of the network (``"dense"``: the trained masked layers; ``"compact"``: dead units removed, smaller dense
layers; ``"csr"``: linear layers in compressed sparse row form). All three forms compute the same function.

The network carries its own numeric encoding (quantiles or bins fitted on the training rows, PLR weights), cross
layers and ensemble adapters in its state; an efficient ensemble's logits are those of its members' mean
probability, so the probabilities returned here are that mean.

Loading needs sparsearch (and torch, polars) installed: the package holds sparsearch's own classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from sparsearch.errors import DataError, first_line

if TYPE_CHECKING:
    import polars as pl
    from mlflow.models import ModelSignature
    from mlflow.pyfunc import PyFuncModel
    from torch import nn

    from sparsearch.spaces.encoder import TabularEncoder

__all__ = ["FORMATS", "OUTPUTS", "SparsearchModel", "build_model_package", "load_study_model", "model_signature"]

FORMATS = ("dense", "compact", "csr")
"""Forms of the network a packaged model can run (``predict(..., params={"format": ...})``)."""
OUTPUTS = ("proba", "class")
"""What ``predict`` returns: class probabilities, or the most probable class label."""
DEFAULT_FORMAT = "compact"


def _check(kind: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise DataError(f"{kind} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)


class SparsearchModel(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]  # mypy misses the re-export
    """Raw rows in, class probabilities (or labels) out: the encoder, the trained network and its exports.

    Args:
        encoder: the study's fitted encoder, restricted to the features the network reads.
        network: the trained (masked) network, in eval mode.
        default_format: the form used when ``predict`` is not given one.
    """

    def __init__(self, encoder: TabularEncoder, network: nn.Module, *, default_format: str = DEFAULT_FORMAT) -> None:
        self.encoder = encoder
        self.default_format = _check("format", default_format, FORMATS)
        self._forms: dict[str, nn.Module] = {"dense": network.eval()}

    @property
    def classes(self) -> tuple:
        return tuple(self.encoder.classes)

    def network(self, fmt: str) -> nn.Module:
        """The network in form ``fmt`` (``compact`` and ``csr`` are exported on first use)."""
        fmt = _check("format", fmt, FORMATS)
        if fmt not in self._forms:
            from sparsearch.spaces import compact, to_csr

            self._forms[fmt] = (compact if fmt == "compact" else to_csr)(self._forms["dense"]).eval()
        return self._forms[fmt]

    def __getstate__(self) -> dict[str, object]:
        # only the trained network is stored; exports are rebuilt (exactly) when first used
        state = dict(self.__dict__)
        state["_forms"] = {"dense": self._forms["dense"]}
        return state

    def probabilities(self, rows: pd.DataFrame | pl.DataFrame, fmt: str | None = None, batch: int = 8192) -> np.ndarray:
        """Class probabilities ``(n, n_classes)`` for raw rows (a pandas or polars frame)."""
        import torch

        categorical, numeric = self.encoder.transform(rows)
        net = self.network(fmt or self.default_format)
        outs = []
        with torch.no_grad():
            for i in range(0, categorical.shape[0], batch):
                outs.append(net(torch.from_numpy(categorical[i:i + batch]), torch.from_numpy(numeric[i:i + batch])))
        logits = torch.cat(outs) if outs else torch.zeros((0, 1 if len(self.classes) == 2 else len(self.classes)))
        if logits.shape[1] == 1:
            p1 = torch.sigmoid(logits[:, 0].double())
            return torch.stack([1.0 - p1, p1], dim=1).numpy()
        return torch.softmax(logits.double(), dim=1).numpy()

    # MLflow reads predict's type hints: a pandas DataFrame hint infers no schema (the signature describes rows);
    # the others stay Any, as MLflow's own PythonModel.predict spells them: MLflow evaluates these hints at runtime
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        """pyfunc entry point: ``params`` may hold ``format`` (dense, compact, csr) and ``output`` (proba, class).

        Returns a pandas DataFrame: one probability column per class label (named by the label), or a single
        ``class`` column with the most probable label.
        """
        params = dict(params or {})
        output = _check("output", params.get("output", "proba"), OUTPUTS)
        proba = self.probabilities(model_input, params.get("format") or self.default_format)
        if output == "class":
            labels = np.asarray(self.classes, dtype=object)[proba.argmax(axis=1)] if len(proba) else []
            return pd.DataFrame({"class": list(labels)})
        return pd.DataFrame(proba, columns=[str(c) for c in self.classes])


def build_model_package(network: nn.Module, encoder: TabularEncoder, features: list[str] | tuple[str, ...] | None,
                        *, default_format: str = DEFAULT_FORMAT) -> SparsearchModel:
    """The pyfunc model of a trained tabular network whose trial kept ``features`` (``None``: all encoded)."""
    enc = encoder.select(features)
    n_cat = len(network.embeddings) if hasattr(network, "embeddings") else None  # type: ignore[arg-type]  # a ModuleList
    if n_cat is not None and n_cat != len(enc.categorical_names):
        raise DataError(f"the network reads {n_cat} categorical features but the encoder has "
                        f"{len(enc.categorical_names)} ({', '.join(enc.categorical_names)})")
    return SparsearchModel(enc, network, default_format=default_format)


def model_signature(model: SparsearchModel, example: pl.DataFrame) -> ModelSignature:
    """An MLflow signature for raw rows: string columns typed ``string``, every other column ``any`` (a pandas
    integer column with a missing value arrives as floats, a boolean one as objects: the model casts them)."""
    import polars as pl
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    dtypes = {c.name: c.raw_dtype for c in model.encoder.columns}
    for cross in model.encoder.crosses:  # a cross is computed from its two raw columns
        dtypes.update(zip(cross.parts, cross.dtypes, strict=True))
    cols: list[ColSpec | TensorSpec] = [ColSpec("string" if dtypes[name] == pl.String else AnyType(), name, required=True)
            for name in model.encoder.raw_features]
    outputs = Schema([ColSpec("double", str(c)) for c in model.classes])
    params = ParamSchema([ParamSpec("format", "string", model.default_format),
                          ParamSpec("output", "string", "proba")])
    return ModelSignature(inputs=Schema(cols), outputs=outputs, params=params)


def load_study_model(study_name: str, *, results_dir: str | os.PathLike[str] = "sparsearch-results",
                     storage: str | None = None, tracking_uri: str | None = None) -> tuple[PyFuncModel, str]:
    """The pyfunc model the study's last execution logged, and its URI (what ``sparsearch predict`` uses).

    The URI is read from the study's storage (``model_uri`` study attribute); the MLflow store is
    ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else the results folder's, else the one the study logged to.

    Raises:
        SpecError: no such study, or it has no logged model.
    """
    from sparsearch.errors import SpecError
    from sparsearch.search import records
    from sparsearch.search.results import load_result
    from sparsearch.search.tracking import default_tracking_uri

    result = load_result(study_name, storage=storage, results_dir=results_dir)
    uri = records.model_uri(result.study)
    if not uri:
        raise SpecError(f"study {study_name!r} has no logged model (run it with [tracking] log_model = true and "
                        "the built-in objective on tabular data)")
    local = Path(results_dir) / "mlflow.db"
    store = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
             or (default_tracking_uri(Path(results_dir)) if local.exists() else None)
             or records.model_tracking_uri(result.study))
    return _load_pyfunc(uri, store), uri


def _load_pyfunc(uri: str, store: str | None) -> PyFuncModel:
    import mlflow

    from sparsearch.errors import ConnectionProblem
    from sparsearch.search.tracking import fluent_tracking_uri

    try:  # resolve the URI against ``store`` for this call only (as Tracker does when it logs)
        with fluent_tracking_uri(store):
            return mlflow.pyfunc.load_model(uri)
    except Exception as exc:  # MlflowException, OSError: the store or the artifacts are not where they were
        first = first_line(exc)
        raise ConnectionProblem(f"cannot load model {uri!r} from MLflow store {store!r}: {first[:300]}") from None
