"""Masks as plain buffers: persistence, copying, serialization, and no revival through the optimizer."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

from sparsearch.spaces import (
    MaskedConv2d,
    MaskedEmbedding,
    MaskedLinear,
    SparseCNN,
    SparseMLP,
    Sparsifier,
    apply_masks,
    mask_gradients,
    masked_modules,
)


def _model(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "mlp":
        return SparseMLP([30, 7], 2, [32, 16], 1, prune_embeddings=True)
    return SparseCNN(1, 8, 10, channels=[8, 16], hidden=32)


def _pruned(kind: str, sparsity: float = 0.8) -> nn.Module:
    model = _model(kind)
    Sparsifier(model, distribution="erk", seed=1).prune_to(sparsity)
    return model


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_masks_are_plain_buffers_that_round_trip(kind):
    model = _pruned(kind)
    keys = model.state_dict().keys()
    assert not any("weight_orig" in k for k in keys)
    masks = [k for k in keys if k.endswith("weight_mask")]
    assert len(masks) == len(list(masked_modules(model))) >= 3
    # state_dict save/load into a differently initialised model restores weights and masks exactly
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = _model(kind)
    torch.manual_seed(123)
    for p in fresh.parameters():
        nn.init.normal_(p)
    fresh.load_state_dict(torch.load(buf))
    _assert_same(model, fresh)
    assert all(m.weight_mask.dtype == m.weight.dtype for _, m in masked_modules(fresh))
    assert all(set(m.weight_mask.unique().tolist()) <= {0.0, 1.0} for _, m in masked_modules(fresh))
    assert sum(int((~m.mask).sum()) for _, m in masked_modules(fresh)) > 0
    # deepcopy, pickle and Ray's serializer
    _assert_same(model, copy.deepcopy(model))
    _assert_same(model, pickle.loads(pickle.dumps(model)))
    import ray.cloudpickle as cp

    _assert_same(model, cp.loads(cp.dumps(model)))
    x = (torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2)) if kind == "mlp" else (torch.rand(3, 1, 8, 8),)
    assert torch.equal(model.eval()(*x), pickle.loads(pickle.dumps(model)).eval()(*x))


def test_linear_conv_embedding_masks_zero_weights():
    for layer in (MaskedLinear(6, 5), MaskedConv2d(2, 3, 3), MaskedEmbedding(10, 4)):
        mask = torch.rand(layer.weight.shape) > 0.5
        layer.set_mask(mask)
        assert torch.equal(layer.weight != 0, mask)
        assert layer.density == pytest.approx(mask.float().mean().item())
        with pytest.raises(ValueError, match="mask shape"):
            layer.set_mask(torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize("opt_name", ["adam", "sgd", "adamw"])
def test_no_revival_through_momentum_and_weight_decay(opt_name):
    torch.manual_seed(0)
    model = SparseMLP([30, 7], 2, [32, 16], 1, prune_embeddings=True)
    params = model.parameters()
    opt = {
        "adam": lambda: torch.optim.Adam(params, lr=1e-2, weight_decay=1e-2),
        "sgd": lambda: torch.optim.SGD(params, lr=1e-2, momentum=0.9, weight_decay=1e-2),
        "adamw": lambda: torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-1),
    }[opt_name]()
    sp = Sparsifier(model, optimizer=opt, distribution="uniform")
    cat, num = torch.randint(0, 7, (64, 2)), torch.randn(64, 2)
    y = torch.rand(64) > 0.5

    def step(masked: bool) -> None:
        loss = nn.functional.binary_cross_entropy_with_logits(model(cat, num).squeeze(1), y.float())
        opt.zero_grad()
        loss.backward()
        if masked:
            mask_gradients(model)
        opt.step()
        if masked:
            apply_masks(model)

    for _ in range(5):  # dense warm-up fills momentum / moments everywhere
        step(False)
    sp.prune_to(0.7)
    for _, m in masked_modules(model):
        for value in opt.state[m.weight].values():
            if torch.is_tensor(value) and value.shape == m.weight.shape:
                assert (value[~m.mask] == 0).all()
    for _ in range(10):
        step(True)
    for _, m in masked_modules(model):
        assert (m.weight[~m.mask] == 0).all()
        for value in opt.state[m.weight].values():
            if torch.is_tensor(value) and value.shape == m.weight.shape:
                assert (value[~m.mask] == 0).all()
    assert sp.realized_sparsity() == pytest.approx(0.7, abs=0.005)


def test_control_without_masking_weights_do_revive():
    """The failure the masking prevents is real: plain steps revive pruned weights through momentum."""
    torch.manual_seed(0)
    lin = MaskedLinear(8, 8)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(16, 8)
    for _ in range(3):
        opt.zero_grad()
        lin(x).pow(2).sum().backward()
        opt.step()
    lin.set_mask(torch.rand(8, 8) > 0.5)  # masks the weights but leaves momentum
    opt.zero_grad()
    lin(x).pow(2).sum().backward()
    mask_gradients(lin)  # even with masked gradients, the old momentum moves pruned weights
    opt.step()
    assert (lin.weight[~lin.mask] != 0).any()
