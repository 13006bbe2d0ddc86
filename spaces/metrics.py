"""Metrics a trial reports, with their natural optimisation direction, and the validation metric functions."""

from __future__ import annotations

import numpy as np

#: Every metric a trial reports -> its default direction (``maximize`` or ``minimize``).
METRICS: dict[str, str] = {
    "val_auc": "maximize",
    "val_logloss": "minimize",
    "val_accuracy": "maximize",
    "target_sparsity": "maximize",
    "realized_sparsity": "maximize",
    "nnz_params": "minimize",
    "nnz_prunable": "minimize",
    "n_params": "minimize",
    "params_compact": "minimize",
    "params_members": "minimize",
    "flops_dense": "minimize",
    "flops_sparse": "minimize",
    "flops_ratio": "minimize",
    "train_flops": "minimize",
    "size_dense_bytes": "minimize",
    "size_sparse_bytes": "minimize",
    "latency_ms": "minimize",
    "latency_compact_ms": "minimize",
    "latency_csr_ms": "minimize",
    "train_seconds": "minimize",
}


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula with average ranks for ties; 0.5 if one class is absent."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(score, kind="mergesort")
    s = np.asarray(score)[order]
    ranks = np.empty(y.size, dtype=np.float64)
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [y.size]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """``val_auc`` (binary; macro one-vs-rest for multiclass), ``val_logloss`` (nats) and ``val_accuracy``.

    ``logits`` is (n,) or (n, 1) for binary targets (one logit), else (n, n_classes).
    """
    y = np.asarray(y).astype(np.int64)
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        z = logits.reshape(-1)
        # log(1 + exp(-|z|)) formulation: stable logloss
        logloss = float(np.mean(np.logaddexp(0.0, z) - y * z))
        acc = float(np.mean((z > 0).astype(np.int64) == y))
        return {"val_auc": binary_auc(y, z), "val_logloss": logloss, "val_accuracy": acc}
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    logloss = float(-np.mean(logp[np.arange(y.size), y]))
    acc = float(np.mean(logits.argmax(axis=1) == y))
    aucs = [binary_auc(y == k, logp[:, k]) for k in range(logits.shape[1]) if 0 < (y == k).sum() < y.size]
    return {"val_auc": float(np.mean(aucs)) if aucs else 0.5, "val_logloss": logloss, "val_accuracy": acc}
