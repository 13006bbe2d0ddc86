"""Objectives for bench/bench_controller.py (imported by Ray workers through PYTHONPATH)."""

from __future__ import annotations

import time


def trivial(trial, config, train, val, on_epoch):
    x = trial.suggest_float("extra.x", -3.0, 3.0)
    return {"val_auc": 1.0 - (x - 1.0) ** 2}


def cpu_bound(trial, config, train, val, on_epoch):
    """About one second of pure-Python CPU work (holds one core)."""
    x = trial.suggest_float("extra.x", -3.0, 3.0)
    deadline = time.process_time() + 1.0
    acc = 0
    while time.process_time() < deadline:
        acc += sum(i * i for i in range(1000))
    return {"val_auc": 1.0 - (x - 1.0) ** 2 + 0.0 * acc}


def plain_trivial(trial):
    """The peer: the same search space sampled by plain Optuna (so only orchestration differs)."""
    from sparsearch.spaces import SpaceSpec, TrainSpec, suggest_config

    suggest_config(trial, SpaceSpec(), TrainSpec(epochs=1))
    x = trial.suggest_float("extra.x", -3.0, 3.0)
    return 1.0 - (x - 1.0) ** 2


def plain_cpu_bound(trial):
    from sparsearch.spaces import SpaceSpec, TrainSpec, suggest_config

    suggest_config(trial, SpaceSpec(), TrainSpec(epochs=1))
    x = trial.suggest_float("extra.x", -3.0, 3.0)
    deadline = time.process_time() + 1.0
    while time.process_time() < deadline:
        sum(i * i for i in range(1000))
    return 1.0 - (x - 1.0) ** 2


def trivial_space(trial):
    """The same space as a define-by-run function for Ray Tune's OptunaSearch (it must return None)."""
    plain_trivial(trial)
