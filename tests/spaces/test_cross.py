"""DCN-v2 cross layers (issue 29 item 5, first part): low-rank, maskable, counted, searched."""

from __future__ import annotations

import optuna
import pytest
import torch

from sparsearch.spaces import (
    SpaceSpec,
    SparseMLP,
    Sparsifier,
    TrainSpec,
    TrialConfig,
    compact,
    layer_table,
    masked_modules,
    output_positions,
    suggest_config,
    to_csr,
    train_and_evaluate,
)
from sparsearch.spaces.models import CrossLayer


def test_cross_layer_computes_the_dcn_v2_formula():
    torch.manual_seed(0)
    layer = CrossLayer(6, 2)
    x0, x = torch.randn(4, 6), torch.randn(4, 6)
    u, v, b = layer.up.weight, layer.down.weight, layer.up.bias
    want = x0 * (x @ v.t() @ u.t() + b) + x
    torch.testing.assert_close(layer(x0, x), want)
    assert layer.down.bias is None and v.shape == (2, 6) and u.shape == (6, 2)
    assert CrossLayer(3, 16).down.out_features == 3  # the rank never exceeds the width


def test_cross_layers_are_masked_counted_and_exported():
    torch.manual_seed(0)
    model = SparseMLP([10, 5], 3, [16], 1, cross_layers=2, cross_rank=4)
    names = [n for n, _ in masked_modules(model)]
    assert names == ["cross.0.down", "cross.0.up", "cross.1.down", "cross.1.up", "hidden.0", "head"]
    Sparsifier(model, distribution="uniform").prune_to(0.5)
    d = model.in_dim
    x = (torch.randint(0, 5, (30, 2)), torch.randn(30, 3))
    rows = {r["name"]: r for r in layer_table(model, output_positions(model, x))}
    assert rows["cross.0.down"]["macs_dense"] == d * 4 and rows["cross.1.up"]["prunable"]
    assert rows["cross.0.up"]["macs_sparse"] == int((model.cross[0].up.weight != 0).sum())
    model.eval()
    ref = model(*x)
    for form in (compact(model), to_csr(model)):
        torch.testing.assert_close(form(*x), ref, atol=1e-5, rtol=1e-5)


def test_cross_layers_train_and_are_searched(tab_split):
    train, val = tab_split
    cfg = TrialConfig(cross_layers=2, cross_rank=4, widths=(16,), depth=1, epochs=1, batch_size=128,
                      target_sparsity=0.7, start_frac=0.0, end_frac=0.5)
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    assert len(out.model.cross) == 2 and out.metrics["val_auc"] > 0.6
    assert abs(out.metrics["realized_sparsity"] - 0.7) < 0.01
    space = SpaceSpec(cross_layers=(0, 2), cross_rank=(2, 8))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        c = suggest_config(trial, space, TrainSpec())
        seen.add(c.cross_layers)
        assert ("arch.cross_rank" in trial.params) == (c.cross_layers > 0)
    assert seen == {0, 1, 2}
    with pytest.raises(ValueError, match=r"cross_layers must lie in \[0, 8\]"):
        SpaceSpec(cross_layers=(0, 9))


def test_pairwise_products_are_the_dot_products_of_projected_embeddings():
    from sparsearch.spaces.models import PairwiseInteraction

    torch.manual_seed(0)
    fm = PairwiseInteraction([3, 5, 4], 2)
    e = [torch.randn(6, 3), torch.randn(6, 5), torch.randn(6, 4)]
    v = [p.weight @ x.t() for p, x in zip(fm.projections, e, strict=True)]  # (dim, batch) each
    want = torch.stack([(v[0] * v[1]).sum(0), (v[0] * v[2]).sum(0), (v[1] * v[2]).sum(0)], dim=1)
    torch.testing.assert_close(fm(e), want)
    assert fm.interaction_macs == 3 * 2 and "pair_rows" not in fm.state_dict()


def test_fm_block_is_masked_counted_exported_and_searched(tab_split):
    torch.manual_seed(0)
    model = SparseMLP([10, 5, 7], 3, [16], 1, fm_dim=4, cross_layers=1, cross_rank=2)
    names = [n for n, _ in masked_modules(model)]
    assert names[:3] == ["fm.projections.0", "fm.projections.1", "fm.projections.2"] and names[-1] == "head"
    assert model.in_dim == sum(e.embedding_dim for e in model.embeddings) + 3 + 3  # 3 numbers, 3 pairs
    assert not hasattr(SparseMLP([10], 3, [16], 1, fm_dim=4), "fm")  # one categorical feature: no pairs
    Sparsifier(model, distribution="uniform").prune_to(0.5)
    x = (torch.randint(0, 5, (30, 3)), torch.randn(30, 3))
    rows = {r["name"]: r for r in layer_table(model, output_positions(model, x))}
    assert rows["fm.products"]["macs_dense"] == rows["fm.products"]["macs_sparse"] == 3 * 4
    assert rows["fm.projections.1"]["prunable"] and not rows["fm.products"]["prunable"]
    model.eval()
    ref = model(*x)
    for form in (compact(model), to_csr(model)):
        torch.testing.assert_close(form(*x), ref, atol=1e-5, rtol=1e-5)
    train, val = tab_split
    cfg = TrialConfig(fm_dim=4, widths=(16,), depth=1, epochs=1, batch_size=128, target_sparsity=0.7,
                      start_frac=0.0, end_frac=0.5)
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    assert out.metrics["val_auc"] > 0.6 and abs(out.metrics["realized_sparsity"] - 0.7) < 0.01
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    dims = {suggest_config(study.ask(), SpaceSpec(fm_dim=(0, 8)), TrainSpec()).fm_dim for _ in range(20)}
    assert 0 in dims and len(dims) > 3
    with pytest.raises(ValueError, match=r"fm_dim must lie in \[0, 256\]"):
        SpaceSpec(fm_dim=300)
