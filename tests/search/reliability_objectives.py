"""Trivial custom objectives for the reliability suite (load tests): no training, so the controller, the storage
and MLflow are what is measured. Ray workers import this module by name (tests/conftest.py puts this folder on
their PYTHONPATH)."""

from __future__ import annotations


def instant(trial, config, train, val, on_epoch):
    """A value from one worker-side suggestion; returns at once."""
    x = trial.suggest_float("extra.x", 0.0, 1.0)
    return {"val_auc": x}
