from __future__ import annotations

import json
import pickle

import numpy as np
import optuna
import pytest
import torch

from sparsearch.errors import DataError
from sparsearch.spaces import (
    METRICS,
    SpaceSpec,
    SparseCNN,
    SparseMLP,
    TrainSpec,
    TrialConfig,
    TrialOutcome,
    suggest_config,
    train_and_evaluate,
)

FAST = dict(epochs=3, batch_size=128, lr=0.01, widths=(64, 32), depth=2, embedding_dim=8)


def test_default_gmp_trains_to_target_and_learns(tab_split):
    train, val = tab_split
    cfg = TrialConfig(method="gmp", target_sparsity=0.9, **FAST)
    seen = []
    out = train_and_evaluate(cfg, train, val, seed=0, threads=1, callback=lambda e, m: seen.append((e, m)))
    assert isinstance(out, TrialOutcome) and isinstance(out.model, SparseMLP)
    m = out.metrics
    assert abs(m["realized_sparsity"] - 0.9) < 0.005
    assert m["val_auc"] > 0.75  # the synthetic target is learnable (a constant model scores 0.5)
    assert [e for e, _ in seen] == [1, 2, 3] and len(out.history) == 3
    assert out.history[-1]["epoch"] == 3 and out.history[out.best_epoch - 1]["val_auc"] == m["val_auc"]
    for key in ("val_auc", "val_logloss", "val_accuracy", "realized_sparsity", "nnz_params", "flops_dense",
                "flops_sparse", "train_flops", "latency_ms", "latency_compact_ms", "latency_csr_ms",
                "target_sparsity"):
        assert key in m and key in METRICS, key
    assert m["flops_sparse"] < 0.2 * m["flops_dense"]
    assert m["params_compact"] <= m["n_params"]
    json.dumps(out.accounting)
    layers = [r for r in out.accounting["layers"] if r["prunable"]]
    assert len(layers) == 3 and all(r["nnz"] > 0 for r in layers)
    assert pickle.loads(pickle.dumps(out)).metrics == m


def test_deterministic_for_a_seed(tab_split):
    train, val = tab_split
    cfg = TrialConfig(method="rigl", target_sparsity=0.8, dst_interval=10, **{**FAST, "epochs": 1})
    a = train_and_evaluate(cfg, train, val, seed=5, measure_latency=False)
    b = train_and_evaluate(cfg, train, val, seed=5, measure_latency=False)
    c = train_and_evaluate(cfg, train, val, seed=6, measure_latency=False)
    assert a.metrics["val_logloss"] == b.metrics["val_logloss"]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.metrics["val_logloss"] != c.metrics["val_logloss"]
    assert "latency_ms" not in a.metrics


def test_int32_and_int64_codes_train_the_same_model(tab_split):
    # the encoder writes int32 codes (half the memory); int64 codes (hand-built data) must give the same model
    import dataclasses

    train, val = tab_split
    assert train.categorical.dtype == np.int32
    wide = [dataclasses.replace(d, categorical=d.categorical.astype(np.int64)) for d in (train, val)]
    cfg = TrialConfig(method="gmp", target_sparsity=0.8, **{**FAST, "epochs": 1})
    a = train_and_evaluate(cfg, train, val, seed=3, measure_latency=False)
    b = train_and_evaluate(cfg, *wide, seed=3, measure_latency=False)
    assert a.metrics["val_logloss"] == b.metrics["val_logloss"]
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(DataError, match="categorical codes must be int32 or int64, got float64"):
        dataclasses.replace(train, categorical=train.categorical.astype(np.float64))


def test_callback_exception_propagates_and_stops(tab_split):
    train, val = tab_split
    epochs = []

    def cb(epoch, metrics):
        epochs.append(epoch)
        if epoch == 2:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        train_and_evaluate(TrialConfig(**{**FAST, "epochs": 4}), train, val, callback=cb, measure_latency=False)
    assert epochs == [1, 2]


def test_threads_are_pinned_and_restored(tab_split):
    train, val = tab_split
    before = torch.get_num_threads()
    seen = []
    train_and_evaluate(TrialConfig(**{**FAST, "epochs": 1}), train, val, threads=1, return_model=False,
                       callback=lambda e, m: seen.append(torch.get_num_threads()), measure_latency=False)
    assert seen == [1] and torch.get_num_threads() == before


def test_return_model_false_and_dense_baseline(tab_split):
    train, val = tab_split
    out = train_and_evaluate(TrialConfig(method="dense", target_sparsity=0.0, **{**FAST, "epochs": 1}), train, val,
                             return_model=False, measure_latency=False)
    assert out.model is None and out.metrics["realized_sparsity"] < 0.01
    assert out.metrics["flops_sparse"] == pytest.approx(out.metrics["flops_dense"], rel=0.01)


def test_wrong_data_kind_errors(tab_split, digits):
    train, val = tab_split
    with pytest.raises(DataError, match="cannot train on tabular"):
        train_and_evaluate(TrialConfig(model="cnn"), train, val)
    dtr, dva = digits.split(0.2, 0)
    with pytest.raises(DataError, match="same kind"):
        train_and_evaluate(TrialConfig(), train, dva)


def test_cnn_on_digits_learns_at_80_percent(digits):
    train, val = digits.split(0.2, seed=0)
    cfg = TrialConfig(model="cnn", depth=2, widths=(16, 32), method="gmp", target_sparsity=0.8, epochs=4,
                      batch_size=64, lr=0.01)
    out = train_and_evaluate(cfg, train, val, seed=0, threads=1)
    assert isinstance(out.model, SparseCNN)
    assert out.metrics["val_accuracy"] > 0.85
    assert abs(out.metrics["realized_sparsity"] - 0.8) < 0.005
    convs = [r for r in out.accounting["layers"] if r["type"] == "MaskedConv2d"]
    assert len(convs) == 2 and convs[0]["macs_dense"] == convs[0]["n"] * 64  # 8x8 output positions


def test_quickstart_like_search_end_to_end(tab_split):
    """The path the controller takes: suggest a config, train it, report metrics."""
    train, val = tab_split
    space = SpaceSpec(depth=(1, 2), width=(16, 64), methods=["gmp", "rigl", "static"])
    train_spec = TrainSpec(epochs=1, batch_size=256)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        cfg = suggest_config(trial, space, train_spec, n_features=4)
        out = train_and_evaluate(cfg, train, val, seed=trial.number, threads=1, return_model=False)
        assert abs(out.metrics["realized_sparsity"] - cfg.target_sparsity) < 0.005
        study.tell(trial, out.metrics["val_auc"])
    assert np.isfinite(study.best_value)


def test_pruned_embeddings_searched_distribution_and_iso_flop(tab_split):
    train, val = tab_split
    cfg = TrialConfig(method="gmp", target_sparsity=0.8, distribution="searched", layer_scales=(1.0, 2.0, 0.5),
                      prune_embeddings=True, iso_flop=True, **{**FAST, "epochs": 1})
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    emb = [r for r in out.accounting["layers"] if r["type"] == "MaskedEmbedding"]
    assert len(emb) == len(train.cardinalities) and all(r["prunable"] for r in emb)
    assert abs(out.metrics["realized_sparsity"] - 0.8) < 0.005
    hidden = [r for r in out.accounting["layers"] if r["type"] == "MaskedLinear"]
    # iso-FLOP widening by sqrt(1 / (1 - 0.8)) = 2.236
    assert [r["shape"][0] for r in hidden[:2]] == [round(64 * 5**0.5), round(32 * 5**0.5)]
    # searched scales: the second hidden layer (scale 2) is denser than the first (scale 1)
    assert 1 - hidden[1]["sparsity"] > 1 - hidden[0]["sparsity"]


def test_training_flops_follow_the_schedule(tab_split):
    train, val = tab_split
    base = {**FAST, "epochs": 2}
    dense = train_and_evaluate(TrialConfig(method="dense", target_sparsity=0.0, **base), train, val,
                               measure_latency=False).metrics
    gmp = train_and_evaluate(TrialConfig(method="gmp", target_sparsity=0.9, start_frac=0.0, end_frac=0.5, **base),
                             train, val, measure_latency=False).metrics
    static = train_and_evaluate(TrialConfig(method="static", target_sparsity=0.9, **base), train, val,
                                measure_latency=False).metrics
    # dense: 6 FLOPs per weight per sample (forward + backward) over every step
    assert dense["train_flops"] == pytest.approx(3 * dense["flops_dense"] * train.n_rows * 2, rel=1e-6)
    assert static["train_flops"] < gmp["train_flops"] < dense["train_flops"]
    assert static["train_flops"] == pytest.approx(3 * static["flops_sparse"] * train.n_rows * 2, rel=0.01)


def test_cosine_lr_schedule_decays_to_zero_and_changes_training(tab_split):
    from sparsearch.spaces.train import lr_at

    cfg = TrialConfig(method="gmp", target_sparsity=0.8, lr_schedule="cosine", **{**FAST, "epochs": 2})
    rates = [lr_at(cfg, s, 100) for s in range(101)]
    assert rates[0] == cfg.lr and rates[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a > b for a, b in zip(rates, rates[1:]))  # strictly decreasing
    assert rates[50] == pytest.approx(cfg.lr / 2)
    assert lr_at(TrialConfig(lr=0.02), 77, 100) == 0.02  # constant is the default
    with pytest.raises(ValueError, match="unknown lr_schedule 'step'; allowed: constant, cosine"):
        lr_at(TrialConfig(lr_schedule="step"), 0, 10)

    train, val = tab_split
    seen = []
    real_step = torch.optim.Adam.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.Adam, "step", spy)
        cos = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    const = train_and_evaluate(TrialConfig(method="gmp", target_sparsity=0.8, **{**FAST, "epochs": 2}), train, val,
                               seed=0, measure_latency=False)
    steps = cos.accounting["schedule"]["total_steps"]
    assert len(seen) == steps and seen[0] == cfg.lr and seen[-1] < 0.01 * cfg.lr
    assert seen == [lr_at(cfg, s, steps) for s in range(steps)]
    assert cos.metrics["val_logloss"] != const.metrics["val_logloss"]  # same seed, other schedule: other model
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        train_and_evaluate(TrialConfig(lr_schedule="step", **FAST), train, val, seed=0)


def test_lr_schedule_is_searched_only_with_two_choices():
    space = SpaceSpec()
    fixed = optuna.create_study().ask()
    cfg = suggest_config(fixed, space, TrainSpec(lr_schedule=["cosine"]))
    assert cfg.lr_schedule == "cosine" and "train.lr_schedule" not in fixed.params
    searched = optuna.create_study().ask()
    cfg = suggest_config(searched, space, TrainSpec(lr_schedule=["constant", "cosine"]))
    assert searched.params["train.lr_schedule"] == cfg.lr_schedule
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainSpec(lr_schedule=["step"])
