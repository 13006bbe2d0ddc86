"""Compaction and CSR export: numerically equal to the masked model, smaller, savable."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from sparsearch.spaces import CSRLinear, SparseCNN, SparseMLP, Sparsifier, compact, masked_modules, to_csr


def _inputs(kind: str):
    torch.manual_seed(7)
    if kind == "mlp":
        return (torch.stack([torch.randint(0, c, (33,)) for c in (20, 5, 9)], dim=1), torch.randn(33, 2))
    return (torch.rand(33, 1, 28, 28),)


def _model(kind: str, pattern: str, sparsity: float) -> nn.Module:
    torch.manual_seed(0)
    model = (SparseMLP([20, 5, 9], 2, [48, 24, 16], 3, dropout=0.1) if kind == "mlp"
             else SparseCNN(1, 28, 10, channels=[8, 12, 16], hidden=24, dropout=0.1))
    with torch.no_grad():
        for _, m in masked_modules(model):
            m.bias.uniform_(-0.5, 0.5)  # positive biases make dead units emit constants that must be folded
    Sparsifier(model, pattern=pattern, distribution="uniform", seed=0).prune_to(sparsity)
    return model.eval()


def _roundtrip(module: nn.Module) -> nn.Module:
    buf = io.BytesIO()
    torch.save(module, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize(("pattern", "sparsity"), [("unstructured", 0.95), ("neuron", 0.5), ("block_4x1", 0.9)])
def test_exports_match_masked_model(kind, pattern, sparsity):
    model = _model(kind, pattern, sparsity)
    x = _inputs(kind)
    with torch.no_grad():
        ref = model(*x)
        small, csr = compact(model), to_csr(model)
        assert torch.allclose(small(*x), ref, atol=1e-5, rtol=1e-4)
        assert torch.allclose(csr(*x), ref, atol=1e-5, rtol=1e-4)
        assert torch.allclose(_roundtrip(small)(*x), ref, atol=1e-5, rtol=1e-4)
        assert torch.allclose(_roundtrip(csr)(*x), ref, atol=1e-5, rtol=1e-4)
    assert not any(isinstance(m, nn.Dropout) for m in small.modules())
    assert any(isinstance(m, CSRLinear) for m in csr.modules())
    assert not any(type(m) is nn.Linear for m in csr.modules())
    # the original model is untouched
    assert any(hasattr(m, "weight_mask") for m in model.modules())


def test_compaction_really_shrinks_structured_models():
    model = _model("mlp", "neuron", 0.5)
    small = compact(model)
    widths = [m.out_features for m in small.hidden if isinstance(m, nn.Linear)]
    original = [m.out_features for m in model.hidden if isinstance(m, nn.Linear)]
    assert all(w <= o for w, o in zip(widths, original)) and sum(widths) <= 0.6 * sum(original)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    cnn = compact(_model("cnn", "neuron", 0.5))
    chans = [m.out_channels for m in cnn.features if isinstance(m, nn.Conv2d)]
    assert sum(chans) < 8 + 12 + 16


def test_csr_state_dict_round_trip_and_nnz():
    torch.manual_seed(0)
    w = torch.randn(6, 10) * (torch.rand(6, 10) > 0.7)
    layer = CSRLinear(w, torch.randn(6))
    assert layer.nnz == int((w != 0).sum())
    other = CSRLinear(torch.ones(6, 10), torch.zeros(6))  # different nnz: buffers are resized on load
    other.load_state_dict(layer.state_dict())
    x = torch.randn(4, 10)
    ref = x @ w.t() + layer.bias
    assert torch.allclose(layer(x), ref, atol=1e-6) and torch.allclose(other(x), ref, atol=1e-6)


def test_compact_rejects_other_models():
    with pytest.raises(TypeError, match="SparseMLP and SparseCNN"):
        compact(nn.Linear(2, 2))

