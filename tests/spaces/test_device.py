"""``train_and_evaluate(device=..., mixed_precision=...)``: the CPU path is unchanged; CUDA where there is one."""

from __future__ import annotations

import pytest
import torch

from sparsearch.spaces import TrialConfig, train_and_evaluate

FAST = dict(epochs=2, batch_size=128, lr=0.01, widths=(32, 16), depth=2, embedding_dim=4)
SKIP_LATENCY = dict(measure_latency=False, return_model=True)


def test_explicit_cpu_and_mixed_precision_on_cpu_change_nothing(tab_split):
    train, val = tab_split
    cfg = TrialConfig(method="rigl", target_sparsity=0.8, **FAST)
    plain = train_and_evaluate(cfg, train, val, seed=3, threads=1, **SKIP_LATENCY)
    cpu = train_and_evaluate(cfg, train, val, seed=3, threads=1, device="cpu", mixed_precision=True, **SKIP_LATENCY)
    timing = {"train_seconds"}
    assert {k: v for k, v in cpu.metrics.items() if k not in timing} == {
        k: v for k, v in plain.metrics.items() if k not in timing}  # mixed precision is CUDA only: ignored here
    assert cpu.accounting["device"] == {"device": "cpu", "mixed_precision": "off"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("mixed_precision", [False, True])
@pytest.mark.parametrize(("method", "pattern", "criterion"), [("gmp", "block_1x4", "random"),
                                                              ("set", "unstructured", "magnitude"),
                                                              ("rigl", "nm", "magnitude")])
def test_trains_on_cuda_and_returns_a_cpu_model(tab_split, mixed_precision, method, pattern, criterion):
    train, val = tab_split
    cfg = TrialConfig(method=method, pattern=pattern, criterion=criterion, target_sparsity=0.75, **FAST)
    out = train_and_evaluate(cfg, train, val, seed=0, device="cuda:0", mixed_precision=mixed_precision,
                             **SKIP_LATENCY)
    assert out.accounting["device"]["device"] == "cuda:0"
    assert out.accounting["device"]["mixed_precision"] == ("off" if not mixed_precision else
                                                           ("bfloat16" if torch.cuda.is_bf16_supported()
                                                            else "float16"))
    assert all(p.device.type == "cpu" for p in out.model.parameters())
    assert out.metrics["val_auc"] > 0.6 and out.metrics["realized_sparsity"] > 0.5
    if not mixed_precision:  # masks drawn from CPU generators: the same sparsity as on the CPU
        cpu = train_and_evaluate(cfg, train, val, seed=0, **SKIP_LATENCY)
        assert abs(cpu.metrics["realized_sparsity"] - out.metrics["realized_sparsity"]) < 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("mixed_precision", [False, True])
@pytest.mark.parametrize("extra", [dict(numeric_encoding="quantile"), dict(numeric_encoding="ple"),
                                   dict(numeric_encoding="plr", ensemble_size=4, cross_layers=2)])
def test_new_ingredients_train_on_cuda(tab_split, mixed_precision, extra):
    train, val = tab_split
    cfg = TrialConfig(target_sparsity=0.75, **FAST, **extra)
    out = train_and_evaluate(cfg, train, val, seed=0, device="cuda:0", mixed_precision=mixed_precision,
                             **SKIP_LATENCY)
    assert all(t.device.type == "cpu" for t in out.model.state_dict().values())
    assert out.metrics["val_auc"] > 0.6 and abs(out.metrics["realized_sparsity"] - 0.75) < 0.01
