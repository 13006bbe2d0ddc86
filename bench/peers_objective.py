"""The one training function every contender of bench/bench_peers.py runs (ours, random, plain Optuna, Ray Tune).

It trains a trial's config with :func:`sparsearch.spaces.train_and_evaluate` (reporting each validation report
through ``report``), and, once the trial is complete, evaluates the trained model on the held-out test rows. That
test figure is recorded for the anytime curves only: no contender selects on it (they all select on ``val_*``).
The prepared data (our train / validation / test split, the prefilter fitted on training rows) is read from the
pickle that ``SPARSEARCH_PEERS_DATA`` names, once per process.

A run's budget ends every contender's running trials alike: when ``SPARSEARCH_PEERS_DEADLINE`` (a Unix time) is
set, the first validation report after it stops the trial as pruned. A trial that completes after the budget counts
for no contender (``bench_peers.summary``), so this changes no figure; it only spares the wall time of trials that
could not count (a Fashion-MNIST trial takes 8-12 minutes). Ray Tune stops its trials at ``time_budget_s`` itself.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any

_CACHE: dict[str, Any] = {}


def prepared() -> Any:
    path = os.environ["SPARSEARCH_PEERS_DATA"]
    if path not in _CACHE:
        with open(path, "rb") as fh:
            _CACHE.clear()
            _CACHE[path] = pickle.load(fh)
    return _CACHE[path]


def trial_seed(number: int) -> int:
    """The torch seed of trial ``number`` (the same rule for every contender).

    With ``SPARSEARCH_PEERS_RUN_SEED`` set (the run's seed, in every round after ``issue30-r2``), trial ``number``
    of seed ``s`` trains with ``s * 100_003 + number``, as sparsearch's controller seeds its trials
    (``sparsearch.search.protocol.trial_seed``): a configuration that recurs on several seeds, such as a warm-start portfolio entry,
    trains from other initial weights on each. Without it, ``number`` itself, as the earlier rounds were measured:
    such a configuration then trains the same network on every seed."""
    # the controller's rule, one definition
    from sparsearch.search.protocol import trial_seed as controller_seed

    run_seed = os.environ.get("SPARSEARCH_PEERS_RUN_SEED")
    return number if not run_seed else int(controller_seed(int(run_seed), number))


def until_deadline(report: Any) -> Any:
    """``report``, then stop the trial as pruned if the run's deadline (``SPARSEARCH_PEERS_DEADLINE``) has passed."""
    deadline = os.environ.get("SPARSEARCH_PEERS_DEADLINE")
    if not deadline:
        return report
    end = float(deadline)

    def reporting(step: int, metrics: dict[str, float]) -> None:
        report(step, metrics)
        if time.time() > end:
            import optuna

            raise optuna.TrialPruned(f"the run's budget ended at step {step}")

    return reporting


def train_config(config: Any, features: tuple[str, ...] | None, seed: int, report: Any) -> dict[str, float]:
    """Train ``config`` on the training rows, report on validation rows, return val metrics plus hidden test ones."""
    from sparsearch.search.data import select_features
    from sparsearch.spaces import evaluate_model, train_and_evaluate

    data = prepared()
    outcome = train_and_evaluate(config, select_features(data.train, features), select_features(data.val, features),
                                 seed=seed, threads=1, callback=until_deadline(report), measure_latency=False)
    metrics = {k: float(v) for k, v in outcome.metrics.items() if isinstance(v, (int, float))}
    hidden = evaluate_model(outcome.model, select_features(data.test, features), prefix="hidden_test_")
    return {**metrics, **hidden}


def ours(trial: Any, config: Any, train: Any, val: Any, report: Any) -> dict[str, float]:
    """sparsearch's custom-objective form (the controller sampled ``config`` in the driver)."""
    features = None
    if "data.top_k" in trial.params:
        features = tuple(prepared().candidates[: int(trial.params["data.top_k"])])
    return train_config(config, features, seed=trial_seed(trial.number), report=report)


class DefineByRunSpace:
    """The study's define-by-run space as a picklable callable (Ray Tune's OptunaSearch checkpoints its searcher)."""

    def __init__(self, raw_spec: dict[str, Any], n_features: int | None) -> None:
        self.raw_spec = raw_spec
        self.n_features = n_features

    def __call__(self, trial: Any) -> None:
        from sparsearch.search.spec import parse_study
        from sparsearch.spaces import suggest_config

        spec = parse_study(self.raw_spec)
        top_k = spec.data.top_k
        if top_k is not None and top_k[0] < top_k[1]:
            trial.suggest_int("data.top_k", top_k[0], top_k[1])
        suggest_config(trial, spec.space, spec.train, n_features=self.n_features)
