"""What runs inside a Ray worker for one trial.

The worker rebuilds a real ``optuna.Trial`` over the storage proxy, trains the configuration the driver sampled,
reports each epoch's objective to the study (so trial pruners work across workers), and returns a
:class:`TrialReport`. It never raises for a failing trial: exceptions become a FAIL report with the traceback, so one
bad trial cannot bring down the study. A worker that dies (crash, OOM kill, node loss) is handled by the driver.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrialPayload", "TrialReport", "execute_trial"]

MEMORY_REASON_ATTR = "fail_reason"


@dataclass(frozen=True)
class TrialPayload:
    """Everything a worker needs besides the data."""

    study_name: str
    trial_id: int
    number: int
    config: Any
    objectives: tuple[str, ...]
    sampler: str
    pruner: str
    pruner_params: dict[str, Any]
    seed: int | None
    cpus: float
    features: tuple[str, ...] | None = None
    memory_mb: int | None = None
    objective: str | None = None
    return_model: bool = True


@dataclass
class TrialReport:
    """The outcome of one trial as the driver sees it."""

    state: str
    values: list[float] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    accounting: dict[str, Any] = field(default_factory=dict)
    model: Any = None
    error: str | None = None
    duration_s: float = 0.0
    node: str | None = None
    """The Ray node that ran the trial."""


def _memory_watchdog(limit_mb: int, on_exceed: Callable[[float], None]) -> threading.Event:
    """Stop the worker process when its resident memory exceeds ``limit_mb``."""
    import psutil

    stop = threading.Event()
    proc = psutil.Process()

    def watch() -> None:
        while not stop.wait(0.1):
            rss_mb = proc.memory_info().rss / 2**20
            if rss_mb > limit_mb:
                on_exceed(rss_mb)
                os._exit(137)

    threading.Thread(target=watch, daemon=True, name="sparsearch-memory-watchdog").start()
    return stop


def _resolve_objective(spec: str) -> Callable[..., Any]:
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def execute_trial(payload: TrialPayload, storage_actor: Any, train: Any, val: Any) -> TrialReport:
    """Train and evaluate one trial; report epochs to the study; never raise for a trial's own failure."""
    import optuna
    import ray
    import torch

    from sparsearch.search.data import select_features
    from sparsearch.search.registry import make_pruner, make_sampler
    from sparsearch.search.storage import RayStorageProxy

    started = time.perf_counter()
    node = ray.get_runtime_context().get_node_id()
    threads = max(1, int(payload.cpus))
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = RayStorageProxy(storage_actor)

    watchdog = None
    if payload.memory_mb is not None:
        def exceeded(rss_mb: float) -> None:
            reason = f"memory budget exceeded: resident {rss_mb:.0f} MB > trial_memory_mb {payload.memory_mb}"
            try:
                storage.set_trial_user_attr(payload.trial_id, MEMORY_REASON_ATTR, reason)
            except Exception:
                pass

        watchdog = _memory_watchdog(payload.memory_mb, exceeded)

    history: list[dict[str, float]] = []
    try:
        trial_seed = None if payload.seed is None else payload.seed * 100_003 + payload.number
        prune = payload.pruner != "none" and len(payload.objectives) == 1
        trial = None
        if prune or payload.objective is not None:
            # a real optuna.Trial over the storage proxy: report/should_prune and worker-side suggestions
            study = optuna.load_study(
                study_name=payload.study_name,
                storage=storage,
                sampler=make_sampler(payload.sampler, trial_seed),
                pruner=make_pruner(payload.pruner, **payload.pruner_params),
            )
            trial = optuna.Trial(study, payload.trial_id)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            history.append({"epoch": epoch, **metrics})
            if prune and payload.objectives[0] in metrics:
                trial.report(float(metrics[payload.objectives[0]]), epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"trial pruner stopped the trial after epoch {epoch}")

        train_k = select_features(train, payload.features)
        val_k = select_features(val, payload.features)
        if payload.objective is not None:
            fn = _resolve_objective(payload.objective)
            result = fn(trial, payload.config, train_k, val_k, on_epoch)
            metrics = dict(result) if isinstance(result, dict) else {payload.objectives[0]: float(result)}
            outcome_accounting: dict[str, Any] = {}
            model = None
        else:
            from sparsearch.spaces import train_and_evaluate

            outcome = train_and_evaluate(
                payload.config, train_k, val_k, seed=trial_seed, threads=threads, callback=on_epoch,
                return_model=payload.return_model,
            )
            metrics = dict(outcome.metrics)
            outcome_accounting = dict(outcome.accounting)
            model = outcome.model
            if not history:
                history = [dict(h) for h in outcome.history]
        missing = [o for o in payload.objectives if o not in metrics]
        if missing:
            raise KeyError(f"the trial did not report objective {missing[0]!r}; it reported {sorted(metrics)}")
        values = [float(metrics[o]) for o in payload.objectives]
        return TrialReport("COMPLETE", values=values, metrics=metrics, history=history,
                           accounting=outcome_accounting, model=model, duration_s=time.perf_counter() - started,
                           node=node)
    except optuna.TrialPruned as exc:
        return TrialReport("PRUNED", history=history, error=str(exc), duration_s=time.perf_counter() - started,
                           node=node)
    except Exception as exc:
        tb = traceback.format_exc(limit=8)
        return TrialReport("FAIL", history=history, error=f"{type(exc).__name__}: {exc}\n{tb}",
                           duration_s=time.perf_counter() - started, node=node)
    finally:
        if watchdog is not None:
            watchdog.set()
