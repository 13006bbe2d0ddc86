"""Our own accounting of sparse models (FLOP counters that ignore zeros are a known pain, DOMAIN.md 2.6).

FLOPs count one multiply-add as 2 FLOPs, per sample, for linear and conv layers, per-feature linear layers of
numeric embeddings and cross layers, and the pairwise products of a factorization-machine block
(``interaction_macs``, a row without weights); embedding lookups, activations, pooling, biases and other elementwise
products are not counted. Sparse FLOPs count only non-zero weights. A layer shared by the ``k`` members of an efficient ensemble runs
once per member: its MACs are ``k`` times its weights' (its weights are stored, and counted as parameters, once).
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .masked import MaskedNLinear, masked_modules

#: Layers whose multiply-adds are counted.
COMPUTE_TYPES = (nn.Linear, nn.Conv2d, MaskedNLinear)


def output_positions(model: nn.Module, example: tuple[torch.Tensor, ...]) -> dict[str, int]:
    """Number of output positions of each linear/conv layer for one sample (1 for linear, H*W for conv; ``k`` for a
    linear layer shared by ``k`` ensemble members)."""
    positions: dict[str, int] = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(
                lambda mod, inp, out, name=name: positions.__setitem__(name, int(out.shape[-1] * out.shape[-2]))
            ))
        elif isinstance(m, COMPUTE_TYPES):
            positions[name] = int(getattr(m, "ensemble_size", 1))
    try:
        was_training = model.training
        model.eval()
        with torch.no_grad():
            model(*(t[:1] for t in example))
        model.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return positions


def layer_table(model: nn.Module, positions: dict[str, int]) -> list[dict[str, Any]]:
    """Per prunable-or-compute layer: shape, weights, non-zeros, sparsity, dense and sparse MACs per sample."""
    rows = []
    for name, m in model.named_modules():
        if not isinstance(m, (*COMPUTE_TYPES, nn.Embedding)):
            continue
        w = m.weight.detach()
        n = w.numel()
        nnz = int((w != 0).sum())
        pos = 0 if isinstance(m, nn.Embedding) else positions.get(name, 1)
        rows.append({
            "name": name, "type": type(m).__name__, "shape": list(w.shape), "n": n, "nnz": nnz,
            "sparsity": 1.0 - nnz / n if n else 0.0, "prunable": hasattr(m, "weight_mask"),
            "macs_dense": n * pos, "macs_sparse": nnz * pos,
        })
    for name, m in model.named_modules():
        extra = getattr(m, "interaction_macs", None)
        if extra is not None and not isinstance(m, nn.Linear):
            rows.append({"name": f"{name}.products", "type": type(m).__name__, "shape": [], "n": 0, "nnz": 0,
                         "sparsity": 0.0, "prunable": False, "macs_dense": int(extra), "macs_sparse": int(extra)})
    return rows


def _interaction_macs(model: nn.Module) -> int:
    return sum(int(getattr(m, "interaction_macs", 0) or 0) for m in model.modules() if not isinstance(m, nn.Linear))


def sparse_macs(model: nn.Module, positions: dict[str, int]) -> int:
    """MACs per sample counting only mask-kept weights (cheap; used every step for training FLOPs)."""
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, COMPUTE_TYPES):
            kept = int(m.mask.sum()) if hasattr(m, "weight_mask") else m.weight.numel()  # type: ignore[operator]  # MaskedMixin.mask
            total += kept * positions.get(name, 1)
    return total + _interaction_macs(model)


def dense_macs(model: nn.Module, positions: dict[str, int]) -> int:
    return sum(m.weight.numel() * positions.get(name, 1) for name, m in model.named_modules()
               if isinstance(m, COMPUTE_TYPES)) + _interaction_macs(model)


def saved_size(obj: Any) -> int:
    """Bytes of ``torch.save(obj)`` (a state_dict or a module)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getbuffer().nbytes


def measure_latency(fn: Callable[[], Any], *, runs: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return float(statistics.median(times))


def sparsity_summary(model: nn.Module) -> dict[str, float]:
    """``realized_sparsity`` (zeros among prunable weights), ``nnz_prunable``, ``nnz_params``, ``n_params``."""
    total = zeros = 0
    for _, m in masked_modules(model):
        total += m.weight.numel()
        zeros += int((m.weight == 0).sum())
    n_params = sum(p.numel() for p in model.parameters())
    nnz = sum(int((p != 0).sum()) for p in model.parameters())
    return {
        "realized_sparsity": zeros / total if total else 0.0,
        "nnz_prunable": float(total - zeros),
        "nnz_params": float(nnz),
        "n_params": float(n_params),
    }
