"""Property-based tests (hypothesis) for distributions and schedules on random layer shapes and targets."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from sparsearch.spaces import DISTRIBUTIONS, SCHEDULES, MaskedConv2d, MaskedLinear, Sparsifier
from sparsearch.spaces.distributions import LayerInfo, make_distribution
from sparsearch.spaces.schedules import make_schedule

dims = st.integers(min_value=1, max_value=96)
linear_shapes = st.tuples(dims, dims)
conv_shapes = st.tuples(st.integers(1, 24), st.integers(1, 24), st.sampled_from([1, 3]))
layer_shapes = st.lists(st.one_of(linear_shapes, conv_shapes), min_size=1, max_size=5)
targets = st.floats(min_value=0.0, max_value=0.99)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _feasible(ns: list[int], target: float) -> bool:
    # every layer keeps at least one weight: the target is reachable only if that floor fits the budget
    return len(ns) <= (1.0 - target) * sum(ns) - 0.5


def _build(shapes) -> nn.Module:
    layers = []
    for s in shapes:
        layers.append(MaskedLinear(s[1], s[0]) if len(s) == 2 else MaskedConv2d(s[1], s[0], s[2]))
    return nn.ModuleList(layers)


@SETTINGS
@given(shapes=layer_shapes, target=targets, name=st.sampled_from(DISTRIBUTIONS.names()),
       power=st.floats(0.0, 3.0), seed=st.integers(0, 2**16))
def test_distribution_realises_target_without_collapse(shapes, target, name, power, seed):
    torch.manual_seed(seed)
    model = _build(shapes)
    ns = [m.weight.numel() for m in model]
    scales = list(np.random.default_rng(seed).uniform(0.25, 4.0, len(shapes)))
    sp = Sparsifier(model, distribution=name, erk_power=power, scales=scales, seed=seed)
    infos = sp.infos
    dens = sp.layer_densities(target, [m.weight.abs() for m in model])
    assert all(0.0 < d <= 1.0 + 1e-12 for d in dens)
    sp.prune_to(target)
    assert all(m.weight_mask.sum() >= 1 for m in model)  # no layer ever collapses
    if _feasible(ns, target):
        assert abs(sp.mask_sparsity() - target) <= 0.005 + 0.5 / sum(ns)
    assert [i.n for i in infos] == ns


@SETTINGS
@given(shapes=st.lists(linear_shapes, min_size=1, max_size=6), target=targets,
       name=st.sampled_from(["uniform", "er", "erk", "uniform_plus", "searched"]))
def test_solved_densities_fit_the_budget_exactly(shapes, target, name):
    layers = [LayerInfo(f"l{i}", s) for i, s in enumerate(shapes)]
    ns = np.array([la.n for la in layers])
    d = np.array(make_distribution(name, scales=[1.0 + i for i in range(len(shapes))]).densities(layers, target))
    assert ((d > 0) & (d <= 1.0 + 1e-12)).all()
    floor_total = (1.0 / ns * ns).sum()
    if floor_total <= (1 - target) * ns.sum():
        assert abs((d * ns).sum() - (1 - target) * ns.sum()) <= 1e-6 * ns.sum()


@SETTINGS
@given(name=st.sampled_from(SCHEDULES.names()), total=st.integers(1, 500), start=st.floats(0.0, 1.0),
       length=st.floats(0.0, 1.0), n=st.integers(1, 50), s_f=st.floats(0.0, 0.99), s_i=st.floats(0.0, 0.5))
def test_schedule_is_monotone_bounded_and_ends_at_target(name, total, start, length, n, s_f, s_i):
    end = min(1.0, start + length)
    s_i = min(s_i, s_f)
    sched = make_schedule(name, final_sparsity=s_f, initial_sparsity=s_i, total_steps=total, start_frac=start,
                          end_frac=end, mask_updates=n)
    values = [sched.sparsity_at(t) for t in range(total + 1)]
    assert all(b >= a - 1e-12 for a, b in zip(values, values[1:]))  # never un-prunes
    assert all(s_i - 1e-12 <= v <= s_f + 1e-12 for v in values)
    assert abs(values[-1] - s_f) < 1e-9  # reaches the target by the end of training
    first_step = sched.updates()[0][0]
    assert all(v == s_i for v in values[:first_step])  # nothing before the first update
    assert sched.t0 <= first_step and sched.updates()[-1][0] == (sched.t0 if name == "one_shot" else sched.t1)
