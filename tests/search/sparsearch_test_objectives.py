"""Custom objectives (``[study] objective = "module:function"``) that make controller behaviour deterministic.

Ray workers import this module by name; tests/conftest.py puts this folder on their PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def quadratic(trial, config, train, val, on_epoch):
    """A fast objective with a known optimum, reported per epoch so trial pruners can act."""
    x = trial.suggest_float("extra.x", -3.0, 3.0)  # suggested inside the worker: must reach the study
    value = 1.0 - (x - 1.0) ** 2
    for epoch in range(1, 4):
        on_epoch(epoch, {"val_auc": value - 0.1 * (3 - epoch)})
    # nnz_params trades off against val_auc (more parameters, up to x = 1, score better): a real Pareto front
    return {"val_auc": value, "nnz_params": 100.0 * (x + 3.0) + 1.0, "realized_sparsity": 0.5,
            "target_sparsity": 0.5}


def bad_even(trial, config, train, val, on_epoch):
    """Raises on even trial numbers: that trial alone must FAIL, with the error recorded."""
    if trial.number % 2 == 0:
        raise RuntimeError(f"boom in trial {trial.number}")
    return {"val_auc": 0.6}


def crash_once(trial, config, train, val, on_epoch):
    """Kills its worker process the first time (marker file named by a study attribute), succeeds on the retry."""
    marker = Path(trial.study.user_attrs["marker"])
    if not marker.exists():
        marker.write_text("crashed")
        os._exit(1)
    return {"val_auc": 0.7}


def sleepy(trial, config, train, val, on_epoch):
    """Sleeps far longer than any trial_timeout used in the tests."""
    time.sleep(120)
    return {"val_auc": 0.5}


def hungry(trial, config, train, val, on_epoch):
    """Allocates memory steadily until the memory watchdog stops it."""
    blocks = []
    for _ in range(400):
        blocks.append(bytearray(10 * 2**20))
        time.sleep(0.01)
    return {"val_auc": 0.5}


def slow_quadratic(trial, config, train, val, on_epoch):
    """A few seconds per trial, for tests that kill the driver mid-study."""
    time.sleep(1.5)
    return quadratic(trial, config, train, val, on_epoch)


def conditional(trial, config, train, val, on_epoch):
    """Worker-side parameters, one of them conditional; records how often the trial had to ask the study."""
    x = trial.suggest_float("extra.x", -3.0, 3.0)
    if trial.number % 2 == 0:
        trial.suggest_int("extra.even_only", 1, 9)
    trial.suggest_categorical("extra.kind", ["a", "b"])
    for epoch in range(1, 3):
        trial.report(1.0 - (x - 1.0) ** 2 - 0.1 * (2 - epoch), epoch)
    trial.set_user_attr("remote_calls", trial.remote_calls)
    return {"val_auc": 1.0 - (x - 1.0) ** 2}


def gpu_probe(trial, config, train, val, on_epoch):
    """Records the GPUs Ray made visible to the trial and when it ran (tests with logical GPUs)."""
    import ray

    start = time.time()
    time.sleep(1.0)
    trial.set_user_attr("cuda_visible_devices", os.environ.get("CUDA_VISIBLE_DEVICES"))
    trial.set_user_attr("gpu_ids", [str(i) for i in ray.get_gpu_ids()])
    trial.set_user_attr("ran", [start, time.time()])
    return {"val_auc": 0.5 + 0.01 * trial.number}


def storage_down_once(trial, config, train, val, on_epoch):
    """The study's storage is unreachable from the worker the first time (marker file in a study attribute)."""
    from sparsearch.search.storage import StorageActorLost

    marker = Path(trial.study.user_attrs["marker"])
    if not marker.exists():
        marker.write_text("down")
        raise StorageActorLost("the study's storage actor died during set_trial_user_attr (simulated)")
    return {"val_auc": 0.7}
