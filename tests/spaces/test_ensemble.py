"""Efficient ensembles (issue 29 item 3): k = 1 is today's model; k > 1 shares the sparse weights, averages the
members' probabilities, and its accounting counts shared weights once and the members' work k times."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from sparsearch.errors import SpecError
from sparsearch.search.spec import parse_study
from sparsearch.spaces import (
    SpaceSpec,
    SparseMLP,
    Sparsifier,
    TrainSpec,
    TrialConfig,
    build_model,
    compact,
    masked_modules,
    suggest_config,
    to_csr,
    train_and_evaluate,
)


def _inputs(n: int = 40):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 5, (n, 2), generator=g), torch.randn(n, 3, generator=g)


def test_k1_is_todays_model_bit_for_bit():
    torch.manual_seed(7)
    today = SparseMLP([10, 5], 3, [16, 8], 1, embedding_dim=4)
    torch.manual_seed(7)
    k1 = SparseMLP([10, 5], 3, [16, 8], 1, embedding_dim=4, ensemble_size=1, cross_layers=0, numeric_encoder=None)
    a, b = today.state_dict(), k1.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[key], b[key]) for key in a)
    assert [type(m) for m in today.modules()] == [type(m) for m in k1.modules()]
    x = _inputs()
    assert torch.equal(today(*x), k1(*x))


@pytest.mark.parametrize("n_out", [1, 3])
def test_the_prediction_is_the_mean_of_the_members_probabilities(n_out):
    torch.manual_seed(0)
    model = SparseMLP([10, 5], 3, [16, 8], n_out, ensemble_size=4).eval()
    x = _inputs()
    members = model.member_logits(*x)
    assert members.shape == (40, 4, n_out)
    assert not torch.allclose(members[:, 0], members[:, 1])  # random-sign adapters: members differ from the start
    if n_out == 1:
        want = torch.sigmoid(members.double()).mean(dim=1)
        torch.testing.assert_close(torch.sigmoid(model(*x).double()), want, atol=1e-6, rtol=0)
    else:
        want = torch.softmax(members.double(), dim=2).mean(dim=1)
        torch.testing.assert_close(torch.softmax(model(*x).double(), dim=1), want, atol=1e-6, rtol=0)


def test_members_share_the_masked_weights_and_exports_carry_the_adapters():
    torch.manual_seed(0)
    model = SparseMLP([10, 5], 3, [32, 16], 1, ensemble_size=3)
    shared = [name for name, _ in masked_modules(model)]
    assert shared == ["hidden.0", "hidden.2", "head"]  # one masked weight per layer, not one per member
    Sparsifier(model).prune_to(0.85)
    with torch.no_grad():  # dead units: their per-member constants must be folded by compact
        model.hidden[0].weight[:6] = 0
        model.hidden[0].weight_mask[:6] = 0
    model.eval()
    x = _inputs()
    ref = model(*x)
    small = compact(model)
    assert small.hidden[0].weight.shape[0] < 32 and small.hidden[0].r.shape == (3, small.hidden[0].in_features)
    for form in (small, to_csr(model)):
        torch.testing.assert_close(form(*x), ref, atol=1e-5, rtol=1e-5)


def test_accounting_counts_shared_weights_once_and_the_k_fold_work(tab_split):
    train, val = tab_split
    base = dict(widths=(32, 16), epochs=1, batch_size=128, target_sparsity=0.8, start_frac=0.0, end_frac=0.5)
    one = train_and_evaluate(TrialConfig(**base), train, val, seed=0, measure_latency=False)
    four = train_and_evaluate(TrialConfig(ensemble_size=4, **base), train, val, seed=0)
    m1, m4 = one.metrics, four.metrics
    assert m1["params_members"] == 0
    hidden = [(m.in_features, m.out_features) for _, m in masked_modules(four.model)]
    adapters = 4 * sum(i + 2 * o for i, o in hidden)
    assert m4["params_members"] == adapters and four.accounting["ensemble"] == {"size": 4, "member_params": adapters}
    assert m4["n_params"] == m1["n_params"] + adapters  # the shared weights once
    assert m4["nnz_prunable"] == pytest.approx(m1["nnz_prunable"], rel=0.02)
    rows = {r["name"]: r for r in four.accounting["layers"]}
    w = four.model.hidden[0].weight
    assert rows["hidden.0"]["macs_dense"] == 4 * w.numel() and rows["hidden.0"]["macs_sparse"] == 4 * int((w != 0).sum())
    assert m4["flops_sparse"] == pytest.approx(4 * m1["flops_sparse"], rel=0.05)
    assert m4["latency_ms"] > 0 and m4["latency_csr_ms"] > 0 and m4["val_auc"] > 0.6


def test_training_averages_the_members_losses(tab_split):
    from torch import nn

    from sparsearch.spaces.ensemble import member_losses

    z = torch.tensor([[[2.0], [-1.0]], [[0.5], [0.0]]])
    y = torch.tensor([1, 0])
    bce = nn.BCEWithLogitsLoss()
    want = (bce(z[:, 0, 0], y.float()) + bce(z[:, 1, 0], y.float())) / 2
    got = member_losses(lambda logits, t: bce(logits.squeeze(1), t.float()), z, y)
    torch.testing.assert_close(got, want)
    train, _ = tab_split
    assert build_model(TrialConfig(ensemble_size=2), train).ensemble_size == 2


def test_ensemble_size_is_searched_and_below_1_is_rejected():
    space = SpaceSpec(ensemble_size=(1, 4))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    sizes = {suggest_config(study.ask(), space, TrainSpec()).ensemble_size for _ in range(15)}
    assert sizes == {1, 2, 3, 4}
    with pytest.raises(SpecError, match=r"^study: \[space\]: ensemble_size must lie in \[1, 64\], got \[0, 4\]$"):
        parse_study({"data": {"generator": "click_log"}, "space": {"ensemble_size": [0, 4]}})
    with pytest.raises(ValueError, match="ensemble_size must be >= 1"):
        SparseMLP([3], 0, [4], 1, ensemble_size=0)
    with pytest.raises(SpecError, match="ensemble_size: only for model"):
        parse_study({"data": {"generator": "digits"}, "space": {"model": "cnn", "ensemble_size": 4}})


def test_mean_probability_logits_is_stable_for_large_logits():
    from sparsearch.spaces.ensemble import mean_probability_logits

    z = torch.tensor([[[80.0], [90.0]], [[-80.0], [-90.0]]])
    out = mean_probability_logits(z)
    assert torch.isfinite(out).all() and out[0, 0] > 79 and out[1, 0] < -79
    assert np.isfinite(mean_probability_logits(torch.tensor([[[500.0, 0.0], [-500.0, 0.0]]])).numpy()).all()
