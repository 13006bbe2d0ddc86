"""Every use of a private Optuna or MLflow internal, in one place.

sparsearch drives Optuna's ask/tell loop from a Ray driver and keeps its own bookkeeping in the study, which needs
a few things neither library exports. Each one is wrapped here, says why it is needed, and is checked by
``tests/search/test_internals.py``, which fails when an Optuna or MLflow release changes it (so an upgrade breaks
one test, not a study). Nothing else in sparsearch touches a private name of Optuna or MLflow.
"""

from __future__ import annotations

import threading

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import BaseStorage
from optuna.storages.journal import BaseJournalBackend

# Why: sparsearch's journal lock queues its own processes (an flock on a side file) in front of Optuna's open-file
# lock; it subclasses the base of Optuna's file locks, which Optuna 5 does not re-export.
from optuna.storages.journal._file import BaseJournalFileLock

from sparsearch._types import ParamValue

__all__ = ["BaseJournalFileLock", "get_fluent_tracking_uri", "hypervolume", "journal_parts", "pareto_mask",
           "relative_sample", "restore_fluent_tracking_uri", "set_journal_backend", "set_startup_trials",
           "startup_trials", "study_id", "study_storage", "sync_journal", "trial_handle", "trial_id"]

# -- Optuna: a study's storage and ids ---------------------------------------------------------------------------
# Why: the driver writes bookkeeping a finished trial can no longer hold (its MLflow run id, driver heartbeats) as
# *system* attributes through the storage, stores a worker's report in one batch before ``tell``, and reads trials
# without deep copies. Storage methods take ids; ``Study`` and ``Trial`` publish neither their storage nor their ids
# (``study._storage``, ``study._study_id`` and ``trial._trial_id`` have been stable since Optuna 1.0).


def study_storage(study: optuna.Study) -> optuna.storages.BaseStorage:
    """The storage a study object reads and writes through."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The storage's id of ``study`` (what ``BaseStorage.get_study_system_attrs`` and friends take)."""
    return study._study_id


def trial_id(trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The storage's id of a trial (``Trial`` or ``FrozenTrial``); the public API gives its number only."""
    return trial._trial_id


def trial_handle(study: optuna.Study, tid: int) -> optuna.Trial:
    """An ``optuna.Trial`` for the existing RUNNING trial ``tid`` of ``study``.

    Why: a Ray worker runs a trial the driver asked for; a trial pruner's ``report``/``should_prune`` need a real
    ``Trial`` over the storage. ``Trial(study, trial_id)`` is how ``Study.ask`` builds one; Optuna documents the class
    but not its constructor.
    """
    return optuna.Trial(study, tid)


# -- Optuna: samplers ----------------------------------------------------------------------------------------------
# Why: the driver proposes a worker's parameters from the trial's relative sample (what ``Trial._suggest`` uses),
# and a study note warns when a model-based sampler never left its random start-up phase. ``Trial.relative_params``
# is an undocumented property and the start-up count is kept only as ``_n_startup_trials``.


def relative_sample(trial: optuna.Trial) -> tuple[dict[str, ParamValue], dict[str, BaseDistribution]]:
    """``(values, search space)`` of the trial's relative sample (drawn on first use, as ``Trial._suggest`` does)."""
    values = trial.relative_params
    return values, trial.relative_search_space or {}


def startup_trials(sampler: optuna.samplers.BaseSampler) -> int | None:
    """How many trials a TPE or GP sampler samples at random before its model takes over; ``None`` for others."""
    if not isinstance(sampler, optuna.samplers.TPESampler | optuna.samplers.GPSampler):
        return None
    n = getattr(sampler, "_n_startup_trials", None)
    return n if isinstance(n, int) else None


# -- Optuna: journal storage internals ----------------------------------------------------------------------------
# Why: a finished trial's report is ~6 storage writes, each an fsync of the journal file; holding them and
# appending once needs the storage's backend, the lock it writes under and its replay step. If an Optuna release
# drops them, ``journal_parts`` returns None and writes go one by one (slower, still correct).


def journal_parts(storage: BaseStorage) -> tuple[threading.Lock, BaseJournalBackend] | None:
    """``(lock, backend)`` of a ``JournalStorage``, or ``None`` for any other storage (or an unknown layout)."""
    if not isinstance(storage, optuna.storages.JournalStorage):
        return None
    lock, backend = getattr(storage, "_thread_lock", None), getattr(storage, "_backend", None)
    if lock is None or not isinstance(backend, BaseJournalBackend):
        return None
    if not callable(getattr(storage, "_sync_with_backend", None)):
        return None
    return lock, backend


def set_journal_backend(storage: optuna.storages.JournalStorage, backend: BaseJournalBackend) -> None:
    """Replace the backend a ``JournalStorage`` appends to and reads from (call under its lock)."""
    storage._backend = backend


def sync_journal(storage: optuna.storages.JournalStorage) -> None:
    """Replay the logs appended since the last read into the storage's in-memory state (call under its lock)."""
    storage._sync_with_backend()


# -- Optuna: multi-objective helpers -------------------------------------------------------------------------------
# Why: ``compare`` reports the hypervolume of each sampler's Pareto front and plots the fronts. Optuna computes
# both (exactly, in any dimension) but exports neither; writing them again would duplicate tested code.


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume dominated by ``points`` (to be minimised, each below ``reference``) up to ``reference``."""
    from optuna._hypervolume import compute_hypervolume

    return float(compute_hypervolume(points, reference))


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``points`` (every column minimised)."""
    from optuna.study._multi_objective import _is_pareto_front

    return _is_pareto_front(points, assume_unique_lexsorted=False)


# -- MLflow: the process-wide ("fluent") tracking URI ----------------------------------------------------------------
# Why: logging a model goes through MLflow's fluent API, which reads a process-wide tracking URI. The driver must
# restore the user's URI exactly afterwards, including "never set" (``mlflow.get_tracking_uri()`` returns a default
# instead, and setting that default would change what a later ``MLFLOW_TRACKING_URI`` does).


def get_fluent_tracking_uri() -> str | None:
    """The URI ``mlflow.set_tracking_uri`` last set in this process, or ``None`` when never set."""
    from mlflow.tracking._tracking_service import utils

    return utils._tracking_uri


def restore_fluent_tracking_uri(saved: str | None) -> None:
    """Put back what :func:`get_fluent_tracking_uri` returned."""
    from mlflow.tracking._tracking_service import utils

    utils._tracking_uri = saved  # type: ignore[assignment]  # MLflow annotates it None; it holds a URI


# -- Optuna: a sampler's start-up trial count ------------------------------------------------------------------------
# Why: with only a time budget, the number of random start-up trials follows the expected number of trials, which
# is known only once the first trials have run (search/startup.py). TPESampler and GPSampler take
# ``n_startup_trials`` in their constructor and keep it as ``_n_startup_trials`` (read at every ``sample_*``
# call); neither has a public setter, and rebuilding the sampler mid-study would lose its seeded random state.


def set_startup_trials(sampler: optuna.samplers.BaseSampler, n: int) -> None:
    """Set a TPE or GP sampler's ``n_startup_trials`` after it was built."""
    if startup_trials(sampler) is None:
        raise TypeError(f"{type(sampler).__name__} has no n_startup_trials")
    sampler._n_startup_trials = int(n)  # type: ignore[attr-defined]  # checked above: TPE and GP keep it
