"""Property-based tests (issue 7, requirement 2): the ranker and the study-file loader, on generated inputs, plus a
bounded fuzz run of the loader (arbitrary bytes and TOML-like tables): valid or a clean SpecError, never a crash."""

from __future__ import annotations

import copy
import math

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsearch.errors import SpecError
from sparsearch.features import rank_features
from sparsearch.search import registry
from sparsearch.search.spec import StudySpec, load_study, parse_study

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tables(draw):
    """A non-degenerate table: 20-120 rows, 1-4 features of mixed kinds, a target with 2-3 classes."""
    n = draw(st.integers(20, 120))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    n_classes = draw(st.integers(2, 3))
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)  # every class present
    cols = {}
    for j in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["int", "str", "float", "signal", "nulls"]))
        card = draw(st.integers(1, 30))
        if kind == "int":
            cols[f"f{j}"] = rng.integers(0, card, n)
        elif kind == "str":
            cols[f"f{j}"] = [f"v{v}" for v in rng.integers(0, card, n)]
        elif kind == "float":
            vals = rng.normal(size=n)
            vals[rng.random(n) < 0.1] = np.nan
            cols[f"f{j}"] = vals
        elif kind == "signal":
            cols[f"f{j}"] = (y + rng.integers(0, 2, n) * (rng.random(n) < 0.3)).astype(np.int64)
        else:
            cols[f"f{j}"] = pl.Series([None if r < 0.5 else int(v) for r, v in zip(rng.random(n), rng.integers(0, card, n))],
                                      dtype=pl.Int64)
    cols["y"] = y
    return pl.DataFrame(cols), seed


@FAST
@given(tables())
def test_scores_are_finite_and_ranks_are_a_permutation(case):
    df, _ = case
    ranking = rank_features(df, "y")
    assert all(math.isfinite(s) for s in ranking["score"].to_list())
    assert sorted(ranking["rank"].to_list()) == list(range(1, df.width))
    assert sorted(ranking["feature"].to_list()) == sorted(c for c in df.columns if c != "y")


@FAST
@given(tables())
def test_permuting_rows_or_renaming_columns_keeps_the_ranking(case):
    df, seed = case
    base = rank_features(df, "y")
    perm = np.random.default_rng(seed + 1).permutation(df.height)
    shuffled = rank_features(df[perm], "y")
    assert shuffled["feature"].to_list() == base["feature"].to_list()
    np.testing.assert_allclose(shuffled["score"].to_numpy(), base["score"].to_numpy(), rtol=1e-9, atol=1e-12)
    names = {c: f"renamed_{i}" for i, c in enumerate(df.columns) if c != "y"}
    renamed = rank_features(df.rename({**names, "y": "label"}), "label")
    assert renamed["feature"].to_list() == [names[f] for f in base["feature"].to_list()]
    np.testing.assert_allclose(renamed["score"].to_numpy(), base["score"].to_numpy(), rtol=1e-9, atol=1e-12)


@FAST
@given(tables(), st.lists(st.floats(0.0, 1.0), max_size=4))
def test_counts_merged_from_any_split_equal_the_unsplit_counts(case, cuts):
    from sparsearch.features._counts import TargetSpec, count_batch

    df, _ = case
    features = [c for c in df.columns if c != "y"]
    spec = TargetSpec("y", "multiclass")
    whole = count_batch(df, features, spec)
    bounds = sorted({0, df.height, *(int(c * df.height) for c in cuts)})
    parts = [count_batch(df.slice(a, b - a), features, spec, offset=a) for a, b in zip(bounds, bounds[1:]) if b > a]
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    assert merged.n_rows == whole.n_rows and merged.n_null_target == whole.n_null_target
    assert list(merged.classes) == list(whole.classes)
    for f in features:
        a, b = merged.features[f], whole.features[f]
        assert list(a.keys) == list(b.keys), f
        np.testing.assert_array_equal(a.counts, b.counts)
        np.testing.assert_array_equal(a.nulls, b.nulls)


# -- study files ----------------------------------------------------------------------------------------------------
@st.composite
def valid_raw_studies(draw):
    lo_depth = draw(st.integers(1, 3))
    lo_width = draw(st.integers(4, 64))
    lo_sp = draw(st.floats(0.0, 0.9))
    multi = draw(st.booleans())
    study = {"n_trials": draw(st.integers(1, 1000)), "seed": draw(st.one_of(st.none(), st.integers(0, 10**6))),
             "name": draw(st.text("abcxyz-_0123456789", min_size=1, max_size=20))}
    if multi:
        study.update(objectives=["val_auc", "nnz_params"], sampler=draw(st.sampled_from(["nsga2", "tpe"])))
    else:
        study.update(sampler=draw(st.sampled_from(["tpe", "random"])),
                     pruner=draw(st.sampled_from(["none", "median", "hyperband"])))
    return {
        "study": study,
        "data": {"generator": "click_log", "params": {"n_rows": draw(st.integers(100, 10**6))},
                 "top_k": draw(st.one_of(st.none(), st.integers(1, 50)))},
        "space": {"depth": [lo_depth, lo_depth + draw(st.integers(0, 2))],
                  "width": [lo_width, lo_width + draw(st.integers(0, 256))],
                  "target_sparsity": [lo_sp, min(0.99, lo_sp + draw(st.floats(0.0, 0.5)))]},
        "train": {"epochs": draw(st.integers(1, 50)), "batch_size": draw(st.integers(1, 4096))},
        "execution": {"workers": draw(st.integers(0, 64)), "max_retries": draw(st.integers(0, 5))},
    }


def _clean(raw):
    """Drop None values (TOML has no null)."""
    if isinstance(raw, dict):
        return {k: _clean(v) for k, v in raw.items() if v is not None}
    return raw


def _assert_valid(spec: StudySpec) -> None:
    """What every spec the loader accepts must satisfy: ordered, in-range search ranges and budgets, and a
    round trip through its own TOML form that changes nothing (what a resumed study reads back)."""
    (d_lo, d_hi), (w_lo, w_hi) = spec.space.depth, spec.space.width
    s_lo, s_hi = spec.space.target_sparsity
    assert 0 <= d_lo <= d_hi <= 16 and 1 <= w_lo <= w_hi <= 16384 and 0.0 <= s_lo <= s_hi <= 0.99, spec.space
    assert spec.study.n_trials >= 1 and spec.train.epochs >= 1 and spec.train.batch_size >= 1
    assert spec.execution.workers >= 0
    assert 0.0 < spec.train.val_fraction < 1.0 and 0.0 <= spec.train.test_fraction < 1.0
    assert spec.train.val_fraction + spec.train.test_fraction < 1.0  # some rows are left to train on
    assert spec.study.timeout is None or spec.study.timeout > 0
    assert parse_study(spec.to_toml_dict()) == spec


@FAST
@given(valid_raw_studies())
def test_valid_specs_round_trip_through_to_toml_dict(raw):
    spec = parse_study(_clean(raw))
    # what the file said is what the spec holds
    assert spec.study.n_trials == raw["study"]["n_trials"]
    assert raw["study"]["seed"] is None or spec.study.seed == raw["study"]["seed"]
    assert list(spec.space.depth) == raw["space"]["depth"] and list(spec.space.width) == raw["space"]["width"]
    assert spec.train.epochs == raw["train"]["epochs"] and spec.execution.workers == raw["execution"]["workers"]
    _assert_valid(spec)
    again = parse_study(spec.to_toml_dict())
    assert again == spec
    assert again.to_toml_dict() == spec.to_toml_dict()


@FAST
@given(st.integers(-3, 20), st.integers(-3, 20), st.floats(-0.5, 1.5), st.floats(-0.5, 1.5))
def test_space_ranges_are_accepted_only_ordered_and_in_bounds(d_lo, d_hi, s_lo, s_hi):
    raw = {"data": {"generator": "click_log"}, "space": {"depth": [d_lo, d_hi], "target_sparsity": [s_lo, s_hi]}}
    try:
        spec = parse_study(raw)
    except SpecError as exc:
        assert "\n" not in str(exc) and ("depth" in str(exc) or "target_sparsity" in str(exc)), str(exc)
    else:
        _assert_valid(spec)
        assert spec.space.depth == (d_lo, d_hi) and spec.space.target_sparsity == (s_lo, s_hi)


def _paths(d, prefix=()):
    for k, v in d.items():
        yield (*prefix, k)
        if isinstance(v, dict):
            yield from _paths(v, (*prefix, k))


toml_scalars = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True), st.text(max_size=12))
toml_values = st.recursive(toml_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)
QUICKSTART = load_study("quickstart").to_toml_dict()
PATHS = list(_paths(QUICKSTART))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "delete", "add"]), toml_values,
                          st.text(max_size=8)), min_size=1, max_size=3))
def test_any_mutation_of_a_valid_spec_is_valid_or_a_clean_spec_error(mutations):
    raw = copy.deepcopy(QUICKSTART)
    for path, op, value, new_key in mutations:
        parent = raw
        for k in path[:-1]:
            parent = parent.get(k) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if op == "set":
            parent[path[-1]] = value
        elif op == "delete":
            parent.pop(path[-1], None)
        else:
            parent[new_key] = value
    try:
        spec = parse_study(raw)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        _assert_valid(spec)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["study", "data", "space", "train", "execution", "tracking", "storage", "x"]),
                       st.one_of(toml_values, st.dictionaries(st.text(max_size=10), toml_values, max_size=4)),
                       max_size=5))
def test_fuzz_study_loader_with_toml_like_tables(raw):
    try:
        spec = load_study(raw)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        _assert_valid(spec)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=200),
                 st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
                 st.lists(st.sampled_from(['[study]\n', '[data]\n', 'generator = "click_log"\n', 'n_trials = ',
                                           '1\n', '"x"\n', '[space]\n', 'depth = [3, 1]\n', '= =\n', '[[a]]\n',
                                           'target = "y"\n', 'top_k = -1\n', 'path = "/nope"\n']),
                          max_size=8).map(lambda parts: "".join(parts).encode())))
def test_fuzz_study_loader_with_bytes(tmp_path, data):
    path = tmp_path / "fuzz.toml"
    path.write_bytes(data)
    try:
        spec = load_study(path)
    except SpecError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        _assert_valid(spec)


def test_registry_names_are_what_the_strategies_use():
    assert {"tpe", "random", "nsga2"} <= set(registry.sampler_names())
    assert {"none", "median", "hyperband"} <= set(registry.pruner_names())


@pytest.mark.parametrize("section", ["study", "tracking"])
@pytest.mark.parametrize("name", ["..", ".", "../../outside", "a/../../b", "..\\x"])
def test_names_that_become_folders_cannot_climb_out_of_the_results_folder(section, name):
    """[study] name and [tracking] experiment name the artifact folder results/artifacts/<name>."""
    key = "name" if section == "study" else "experiment"
    raw = {section: {key: name}, "data": {"generator": "click_log"}}
    with pytest.raises(SpecError, match=rf"\[{section}\] {key}: must be at most 200 characters"):
        parse_study(raw)
