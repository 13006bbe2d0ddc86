"""sparsearch.spaces: sparse architecture search spaces that are correct, searchable and really faster.

The public contract used by the search controller: :class:`SpaceSpec`/:class:`TrainSpec` (study-file sections),
:func:`suggest_config` (define-by-run search space) -> :class:`TrialConfig`, the data containers
(:class:`TabularData`, :class:`ImageData`) and :func:`train_and_evaluate` -> :class:`TrialOutcome`, whose metrics
are listed in :data:`METRICS`.
"""

from __future__ import annotations

from .accounting import layer_table, measure_latency, output_positions, saved_size, sparsity_summary
from .config import TrialConfig, config_from_params, suggest_config
from .criteria import CRITERIA, Criterion
from .data import ImageData, TabularData, split_indices
from .distributions import DISTRIBUTIONS, Distribution, LayerInfo, solve_densities
from .encoder import TabularEncoder, encode_tabular
from .export import CSRLinear, compact, compact_linear_chain, to_csr
from .images import IMAGE_DATASETS, load_digits_data, load_fashion_mnist
from .masked import (
    MaskedConv2d,
    MaskedEmbedding,
    MaskedLinear,
    apply_masks,
    mask_gradients,
    masked_modules,
    zero_optimizer_state,
)
from .methods import METHODS, Method
from .metrics import METRICS, classification_metrics
from .models import SparseCNN, SparseMLP
from .patterns import PATTERNS, Pattern
from .portable import encoder_document, export_onnx, export_torchscript
from .schedules import SCHEDULES, SparsitySchedule
from .sparsifier import Sparsifier
from .spec import SpaceSpec, TrainSpec
from .train import (
    EPOCH_METRICS,
    TrialOutcome,
    build_model,
    evaluate_model,
    selection_metric,
    train_and_evaluate,
)

__all__ = [
    "CRITERIA",
    "DISTRIBUTIONS",
    "EPOCH_METRICS",
    "IMAGE_DATASETS",
    "METHODS",
    "METRICS",
    "PATTERNS",
    "SCHEDULES",
    "CSRLinear",
    "Criterion",
    "Distribution",
    "ImageData",
    "LayerInfo",
    "MaskedConv2d",
    "MaskedEmbedding",
    "MaskedLinear",
    "Method",
    "Pattern",
    "SpaceSpec",
    "SparseCNN",
    "SparseMLP",
    "Sparsifier",
    "SparsitySchedule",
    "TabularData",
    "TabularEncoder",
    "TrainSpec",
    "TrialConfig",
    "TrialOutcome",
    "apply_masks",
    "build_model",
    "classification_metrics",
    "compact",
    "compact_linear_chain",
    "config_from_params",
    "encode_tabular",
    "encoder_document",
    "evaluate_model",
    "export_onnx",
    "export_torchscript",
    "layer_table",
    "load_digits_data",
    "load_fashion_mnist",
    "mask_gradients",
    "masked_modules",
    "measure_latency",
    "output_positions",
    "saved_size",
    "selection_metric",
    "solve_densities",
    "split_indices",
    "sparsity_summary",
    "suggest_config",
    "to_csr",
    "train_and_evaluate",
    "zero_optimizer_state",
]
