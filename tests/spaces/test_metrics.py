from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from sparsearch.spaces import TrialConfig, classification_metrics, encode_tabular, train_and_evaluate
from sparsearch.spaces.metrics import binary_auc


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    z = rng.normal(size=500) + y * 0.8
    z[:50] = np.round(z[:50])  # ties
    m = classification_metrics(y, z[:, None])
    assert m["val_auc"] == pytest.approx(roc_auc_score(y, z))
    assert m["val_logloss"] == pytest.approx(log_loss(y, 1 / (1 + np.exp(-z))))
    assert m["val_accuracy"] == pytest.approx(np.mean((z > 0) == y))
    assert binary_auc(np.zeros(5), np.arange(5)) == 0.5


def test_multiclass_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(400), y] += 1.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(y, logits)
    assert m["val_logloss"] == pytest.approx(log_loss(y, p))
    assert m["val_auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert m["val_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))


def test_multiclass_tabular_training():
    rng = np.random.default_rng(0)
    n = 1500
    a = rng.integers(0, 3, n)
    y = np.where(rng.random(n) < 0.8, a, rng.integers(0, 3, n))
    df = pl.DataFrame({"a": [f"k{v}" for v in a], "z": rng.normal(size=n), "y": [f"c{v}" for v in y]})
    data = encode_tabular(df, "y")
    assert data.task == "multiclass" and data.n_classes == 3
    train, val = data.split(0.3, seed=0)
    out = train_and_evaluate(TrialConfig(widths=(16,), depth=1, epochs=3, batch_size=64, lr=0.01,
                                         target_sparsity=0.5), train, val, measure_latency=False)
    assert out.model.head.out_features == 3 and out.metrics["val_accuracy"] > 0.7
