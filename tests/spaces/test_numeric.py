"""Numeric encodings (issue 29 item 2, model side): fitted on training rows, carried by the state_dict, maskable."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
import torch

from sparsearch.spaces import (
    SpaceSpec,
    SparseMLP,
    Sparsifier,
    TrainSpec,
    TrialConfig,
    build_model,
    compact,
    layer_table,
    masked_modules,
    output_positions,
    suggest_config,
    to_csr,
    train_and_evaluate,
)
from sparsearch.spaces.config import config_from_params
from sparsearch.spaces.numeric import NUMERIC_ENCODINGS, PeriodicEncoding, QuantileEncoding, ple_bins


def _numbers(n: int = 2000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.lognormal(size=n), rng.integers(0, 7, n).astype(float), rng.random(n) < 0.3], axis=1)


def test_quantile_encoding_matches_scikit_learn_on_new_rows():
    from sklearn.preprocessing import QuantileTransformer

    train, new = _numbers(3000, 0), _numbers(500, 1)
    new[:3, 0] = [-5.0, 1e6, 0.0]  # outside the training range: clipped as scikit-learn clips
    enc = QuantileEncoding.fit(train)
    qt = QuantileTransformer(n_quantiles=100, output_distribution="normal", subsample=10**9).fit(train)
    ours = enc(torch.tensor(new, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(ours, qt.transform(new), atol=2e-4)
    assert enc.quantiles.shape == (3, 100)  # (features, quantiles), a buffer


def test_ple_bins_come_from_the_training_rows_and_reject_nothing_constant():
    x = np.stack([np.arange(1000.0), np.full(1000, 3.0)], axis=1)
    bins = ple_bins(x, 10)
    assert [len(b) - 1 for b in bins] == [10, 1]
    assert bins[0][0] == 0.0 and bins[0][-1] == 999.0 and bins[1].tolist() == [3.0, 4.0]


@pytest.mark.parametrize("name", NUMERIC_ENCODINGS.names())
def test_every_encoding_trains_exports_and_round_trips_its_state(name, tab_split):
    train, val = tab_split
    cfg = TrialConfig(numeric_encoding=name, numeric_bins=8, numeric_embedding_dim=4, widths=(16,), depth=1,
                      epochs=1, batch_size=128, target_sparsity=0.8, start_frac=0.0, end_frac=0.5)
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    model = out.model.eval()
    assert hasattr(model, "numeric_encoder") == (name != "standard")
    assert abs(out.metrics["realized_sparsity"] - 0.8) < 0.01 and out.metrics["val_auc"] > 0.6
    x = (torch.from_numpy(val.categorical), torch.from_numpy(val.numeric))
    ref = model(*x)
    for form in (compact(model), to_csr(model)):
        torch.testing.assert_close(form(*x), ref, atol=1e-5, rtol=1e-5)
    torch.manual_seed(1)  # a model built from the same training rows takes the state (bins, quantiles) exactly
    fresh = build_model(cfg, train)
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(fresh.eval()(*x), ref)


def test_encodings_are_fitted_on_the_rows_the_model_is_built_with(tab_split):
    train, _ = tab_split
    half = train.subset(np.arange(train.n_rows // 2))
    cfg = TrialConfig(numeric_encoding="ple", numeric_bins=4)
    a, b = build_model(cfg, train), build_model(cfg, half)
    bins = ple_bins(half.numeric, 4)
    assert not torch.equal(a.numeric_encoder.encoding.impl.weight, b.numeric_encoder.encoding.impl.weight)
    ref = type(b.numeric_encoder)(bins)
    assert torch.equal(ref.encoding.impl.weight, b.numeric_encoder.encoding.impl.weight)
    q = build_model(TrialConfig(numeric_encoding="quantile"), half).numeric_encoder
    assert torch.equal(q.quantiles, QuantileEncoding.fit(half.numeric).quantiles)


def test_plr_weights_are_prunable_and_counted():
    torch.manual_seed(0)
    model = SparseMLP([5, 7], 3, [16], 1, numeric_encoder=PeriodicEncoding(3, 4, n_frequencies=8))
    names = [n for n, _ in masked_modules(model)]
    assert names[0] == "numeric_encoder.linear" and names[-1] == "head"
    Sparsifier(model, distribution="uniform").prune_to(0.75)
    plr = model.numeric_encoder.linear
    assert abs(float((plr.weight == 0).float().mean()) - 0.75) < 0.02
    rows = {r["name"]: r for r in layer_table(model, output_positions(
        model, (torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3))))}
    assert rows["numeric_encoder.linear"]["prunable"] and rows["numeric_encoder.linear"]["n"] == 3 * 4 * 16
    assert rows["numeric_encoder.linear"]["macs_sparse"] == int((plr.weight != 0).sum())
    assert model.in_dim == sum(e.embedding_dim for e in model.embeddings) + 3 * 4


def test_the_space_searches_encodings_and_rejects_unknown_ones():
    space = SpaceSpec(numeric_encoding=["standard", "ple", "plr"], numeric_bins=(4, 32))
    seen = set()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        cfg = suggest_config(trial, space, TrainSpec())
        seen.add(cfg.numeric_encoding)
        assert ("arch.numeric_bins" in trial.params) == (cfg.numeric_encoding == "ple")
        assert config_from_params(trial.params, space, TrainSpec()) == cfg
    assert seen == {"standard", "ple", "plr"}
    # the default space adds no parameter: trials stored before the option replay unchanged
    trial = study.ask()
    suggest_config(trial, SpaceSpec(), TrainSpec())
    assert not {"arch.numeric_encoding", "arch.ensemble_size", "arch.cross_layers", "arch.fm_dim"} & set(trial.params)
    with pytest.raises(ValueError, match=r"unknown numeric_encoding 'pl' .*allowed: ple, plr, quantile, standard"):
        SpaceSpec(numeric_encoding=["pl"])
    with pytest.raises(ValueError, match="numeric_bins must lie in"):
        SpaceSpec(numeric_bins=1)


def test_statistics_of_very_many_rows_come_from_a_seeded_sample(monkeypatch):
    import sparsearch.spaces.numeric as numeric

    monkeypatch.setattr(numeric, "FIT_ROWS", 500)
    x = _numbers(3000, 0)
    a, b = QuantileEncoding.fit(x), QuantileEncoding.fit(x)
    assert torch.equal(a.quantiles, b.quantiles) and a.quantiles.shape == (3, 16)  # 500 rows -> 16 quantiles
    bins = ple_bins(x, 8)
    assert all(torch.equal(u, v) for u, v in zip(bins, ple_bins(x, 8), strict=True))
    assert bins[0][0] >= x[:, 0].min() and bins[0][-1] <= x[:, 0].max()


def test_normal_quantile_is_the_erfinv_transform_to_float64_rounding():
    from scipy.special import ndtri

    from sparsearch.spaces.numeric import normal_quantile

    u = torch.cat([torch.tensor([1e-7, 1 - 1e-7, 0.5, 0.075, 0.925, 0.07499, 0.07501, 1e-300, 0.3],
                                dtype=torch.float64),
                   torch.rand(20_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 1e-12])
    ours = normal_quantile(u)
    assert torch.isfinite(ours).all() and ours[2] == 0.0
    np.testing.assert_allclose(ours.numpy(), ndtri(u.numpy()), rtol=1e-14, atol=1e-300)  # all three ranges
    torch_value = math.sqrt(2.0) * torch.erfinv(2.0 * u[u > 1e-10] - 1.0)  # 2u - 1 rounds away the far tail
    np.testing.assert_allclose(ours[u > 1e-10].numpy(), torch_value.numpy(), rtol=1e-11, atol=1e-14)


def test_the_portable_quantile_encoding_computes_the_same_function():
    from sparsearch.spaces.numeric import PortableQuantileEncoding

    train = _numbers(3000, 0)
    train[:, 1] = np.round(train[:, 1] / 3)  # few values: many repeated quantiles
    enc = QuantileEncoding.fit(train)
    portable = PortableQuantileEncoding.of(enc)
    assert torch.equal(portable.quantiles, enc.quantiles)
    new = np.concatenate([_numbers(800, 1), train[:200], [[1e9, -1e9, 0.5], [-1e9, 1e9, 1.0]]])
    x = torch.tensor(new, dtype=torch.float32)
    xp, xt = enc.quantiles.double(), x.t().double()
    for a, b in ((xp, xt), (-xp.flip(1), -xt)):  # both directions of the interpolation: the same counts exactly
        counts = portable._count_at_most(a, b)
        assert torch.equal(counts, enc._count_at_most(a, b)) and counts.min() == 0 and counts.max() == a.shape[1]
    for q in range(1, 20):  # every length, duplicates, values on and beside the knots
        knots = torch.sort(torch.randint(0, 4, (2, q)).double(), dim=1).values
        at = torch.randint(-1, 5, (2, 30)).double()
        assert torch.equal(PortableQuantileEncoding._count_at_most(knots, at), torch.searchsorted(knots, at, right=True))
    out, ref = portable(x), enc(x)
    assert out.abs().max() > 5.0  # the clipped tails are reached
    np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=0, atol=1e-6)


def test_the_trained_quantile_encoding_still_runs_searchsorted_and_erfinv_bit_for_bit():
    """Training and the packaged pyfunc keep the torch operators (the portable form is for ONNX only): the
    encoding equals the transform written out with them, exactly."""
    enc = QuantileEncoding.fit(_numbers(3000, 0))
    x = torch.tensor(_numbers(500, 2), dtype=torch.float32)
    xp = enc.quantiles.double()
    ref = torch.linspace(0.0, 1.0, xp.shape[1], dtype=torch.float64)

    def interp(v, knots, values):
        q = knots.shape[1]
        hi = torch.searchsorted(knots, v.contiguous(), right=True).clamp(1, q - 1)
        lo = hi - 1
        x_lo, x_hi = knots.gather(1, lo), knots.gather(1, hi)
        width = x_hi - x_lo
        t = torch.where(width > 0, (v - x_lo) / torch.where(width > 0, width, torch.ones_like(width)),
                        torch.zeros_like(v))
        out = values[lo] + t.clamp(0.0, 1.0) * (values[hi] - values[lo])
        out = torch.where(v <= knots[:, :1], values[0].expand_as(out), out)
        return torch.where(v >= knots[:, -1:], values[-1].expand_as(out), out)

    xt = x.t().double()
    u = (0.5 * (interp(xt, xp, ref) - interp(-xt, -xp.flip(1), -ref.flip(0)))).clamp(1e-7, 1.0 - 1e-7)
    assert torch.equal(enc(x), (math.sqrt(2.0) * torch.erfinv(2.0 * u - 1.0)).t().float())
