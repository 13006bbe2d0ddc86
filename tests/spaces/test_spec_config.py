from __future__ import annotations

import pickle

import optuna
import pytest
from pydantic import ValidationError

from sparsearch.errors import SpecError
from sparsearch.spaces import (
    CRITERIA,
    DISTRIBUTIONS,
    METHODS,
    METRICS,
    PATTERNS,
    SCHEDULES,
    SpaceSpec,
    TrainSpec,
    TrialConfig,
    config_from_params,
    suggest_config,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _ask(space: SpaceSpec, train: TrainSpec | None = None, seed: int = 0, n: int = 1):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        cfg = suggest_config(trial, space, train or TrainSpec())
        out.append((trial, cfg))
        study.tell(trial, 0.0)
    return out


def test_empty_sections_are_valid_with_fast_defaults():
    space, train = SpaceSpec(), TrainSpec()
    assert space.model == "mlp" and space.methods == ["gmp"] and space.schedules == ["cubic"]
    assert space.criteria == ["magnitude"] and space.patterns == ["unstructured"]
    assert train.optimizer == ["adam"] and 0 < train.val_fraction < 1
    assert SpaceSpec.model_validate({}) == space


def test_every_field_is_documented():
    for model in (SpaceSpec, TrainSpec):
        for name, f in model.model_fields.items():
            assert f.description and len(f.description) > 15, name


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"methods": ["rigll"]}, "did you mean 'rigl'"),
        ({"distributions": ["erkk"]}, "allowed:"),
        ({"patterns": ["nm", "nm"]}, "distinct"),
        ({"target_sparsity": [0.5, 0.999]}, "target_sparsity"),
        ({"target_sparsity": [0.9, 0.5]}, "low must be <= high"),
        ({"model": "rnn"}, "unknown model"),
        ({"nm_keep": 4, "nm_group": 4}, "nm_keep must be < nm_group"),
        ({"prune_start_frac": 0.8, "prune_end_frac": 0.5}, "prune_start_frac"),
        ({"widht": 3}, "widht"),
        ({"methods": []}, "at least one"),
    ],
)
def test_space_spec_rejects_bad_input(raw, needle):
    with pytest.raises(ValidationError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        SpaceSpec.model_validate(raw)


def test_train_spec_rejects_bad_input():
    with pytest.raises(ValidationError, match="unknown optimizer 'adamw'"):
        TrainSpec(optimizer=["adamw"])
    with pytest.raises(ValidationError):
        TrainSpec(lr=0.0)
    with pytest.raises(ValidationError):
        TrainSpec(epochs=0)


def test_registries_match_the_contract():
    assert set(DISTRIBUTIONS) == {"uniform", "uniform_plus", "er", "erk", "global_magnitude", "searched"}
    assert set(METHODS) == {"dense", "static", "gmp", "set", "rigl"}
    assert set(SCHEDULES) == {"one_shot", "linear", "cubic", "exponential"}
    assert set(CRITERIA) == {"magnitude", "random", "saliency"}
    assert set(PATTERNS) == {"unstructured", "block_1x4", "block_4x1", "nm", "neuron"}
    for name in ("val_auc", "val_logloss", "val_accuracy", "realized_sparsity", "nnz_params", "flops_sparse",
                 "latency_ms"):
        assert METRICS[name] in ("maximize", "minimize")
    assert METRICS["val_logloss"] == "minimize" and METRICS["val_auc"] == "maximize"


def test_default_space_params_have_prefixes_and_per_layer_widths():
    for trial, cfg in _ask(SpaceSpec(), n=10):
        params = trial.params
        assert all(k.split(".")[0] in {"arch", "sparsity", "sched", "dst", "train"} for k in params)
        assert cfg.depth == params["arch.depth"] == len(cfg.widths)
        widths = sorted(k for k in params if k.startswith("arch.width_l"))
        assert widths == [f"arch.width_l{i}" for i in range(cfg.depth)]
        assert not any(k.startswith("dst.") for k in params)
        assert "sparsity.target" in params and "sched.schedule" in params


def test_conditional_parameters_follow_the_method():
    space = SpaceSpec(methods=["dense", "static", "gmp", "set", "rigl"], patterns=["unstructured", "nm"],
                      distributions=["erk", "searched", "uniform"], depth=(1, 3))
    seen = set()
    for trial, cfg in _ask(space, n=80, seed=1):
        p = trial.params
        seen.add(cfg.method)
        has_dst = any(k.startswith("dst.") for k in p)
        assert has_dst == (cfg.method in ("set", "rigl"))
        assert any(k.startswith("sched.") for k in p) == (cfg.method == "gmp")
        if cfg.method == "dense":
            assert cfg.target_sparsity == 0.0 and set(k for k in p if k.startswith("sparsity.")) == {"sparsity.method"}
        elif cfg.pattern == "nm":
            assert "sparsity.target" not in p and cfg.target_sparsity == pytest.approx(0.5)
        if cfg.distribution == "searched" and cfg.method != "dense":
            scales = [k for k in p if k.startswith("sparsity.scale_l")]
            assert len(scales) == cfg.depth + 1 == len(cfg.layer_scales)
        if cfg.distribution != "erk" or cfg.method == "dense":
            assert "sparsity.erk_power" not in p
    assert seen == {"dense", "static", "gmp", "set", "rigl"}


def test_config_round_trips_through_params_dict_and_pickle():
    space = SpaceSpec(methods=["gmp", "rigl", "dense"], distributions=["erk", "searched"],
                      schedules=["cubic", "one_shot"])
    train = TrainSpec(optimizer=["adam", "sgd"], weight_decay=(1e-6, 1e-3))
    for trial, cfg in _ask(space, train, n=25, seed=3):
        rebuilt = config_from_params(trial.params, space, train)
        assert rebuilt == cfg
        assert TrialConfig.from_dict(cfg.to_dict()) == cfg
        assert pickle.loads(pickle.dumps(cfg)) == cfg
        import json

        json.dumps(cfg.to_dict())


def test_fixed_ranges_low_equals_high_work():
    space = SpaceSpec(depth=2, width=64, embedding_dim=8, dropout=0.0, target_sparsity=0.9, mask_updates=5,
                      prune_start_frac=0.1, prune_end_frac=0.9)
    train = TrainSpec(lr=0.003)
    (trial, cfg), = _ask(space, train)
    assert cfg.widths == (64, 64) and cfg.target_sparsity == 0.9 and cfg.lr == pytest.approx(0.003)
    assert cfg.start_frac == pytest.approx(0.1) and cfg.end_frac == pytest.approx(0.9) and cfg.mask_updates == 5
    assert config_from_params(trial.params, space, train) == cfg


def test_config_errors():
    with pytest.raises(SpecError, match="unknown TrialConfig keys"):
        TrialConfig.from_dict({"depth": 2, "dept": 3})
    with pytest.raises(SpecError, match="cannot rebuild"):
        config_from_params({"arch.depth": 2}, SpaceSpec(), TrainSpec())


def test_suggest_config_works_with_tpe_across_trials():
    space = SpaceSpec(methods=["gmp", "set", "rigl", "static", "dense"], depth=(1, 3),
                      patterns=["unstructured", "nm", "block_1x4"])
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=3))

    def objective(trial):
        cfg = suggest_config(trial, space, TrainSpec())
        return cfg.target_sparsity + cfg.depth

    study.optimize(objective, n_trials=12, catch=(Exception,))  # a failing trial is recorded FAIL, not raised
    assert len(study.trials) == 12
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 12, states
    for t in study.trials:  # each value is the objective of the config its parameters describe
        cfg = config_from_params(t.params, space, TrainSpec())
        assert t.value == pytest.approx(cfg.target_sparsity + cfg.depth)
    # past its 3 start-up trials TPE sampled from its model across the conditional parameters: several methods
    assert len({t.params["sparsity.method"] for t in study.trials}) >= 2
