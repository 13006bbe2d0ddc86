"""What a study run returns and how it is read back: :class:`StudyResult`, its JSON, stored test records.

:func:`load_result` reads a stored study without running anything (``sparsearch show``); the JSON of
:meth:`StudyResult.to_json` is the documented interface of ``sparsearch run --json`` (README, "The run JSON").
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from sparsearch._redact import redact
from sparsearch._types import JSONDict, JSONValue
from sparsearch.errors import SpecError
from sparsearch.search import records
from sparsearch.search._internals import study_id
from sparsearch.search.records import get_test_record
from sparsearch.search.storage import default_storage_url, env_storage_url, open_storage

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunInfo", "StoredInfo", "StudyResult", "best_complete", "best_values", "get_test_record", "load_result",
           "trial_json"]


class _Info:
    """The ``info`` of a run JSON: a typed record whose :meth:`to_json` is the documented object (its fields, in
    order). ``info["key"]`` and ``info.get("key")`` still read it as the former dict did."""

    def to_json(self) -> JSONDict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]  # subclasses are dataclasses

    def __getitem__(self, key: str) -> JSONValue:
        if key not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]  # as above
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: JSONValue = None) -> JSONValue:
        try:
            return self[key]
        except KeyError:
            return default


@dataclass(frozen=True)
class RunInfo(_Info):
    """What one execution of a study reports besides its trials (``info`` of ``sparsearch run --json``)."""

    workers: int
    cpus_per_trial: float
    data_fingerprint: str
    n_rows: int
    split: JSONDict
    """How the rows were split (see README, "The run JSON")."""
    ranking_rows: JSONDict
    """The rows the prefilter ranked."""
    features: list[str]
    """The candidate features after the prefilter, best first."""
    crosses: list[str]
    timings: dict[str, float]
    ranking_cached: bool
    mlflow_failures: int
    mlflow_logging: str
    """Where trial child runs were written: ``process``, ``thread`` or ``off``."""
    notes: list[str]
    """Study-level warnings (also shown on the progress lines or as Python warnings)."""
    encoding_cached: bool = False
    """Whether the encoded rows came from the encoding cache (``results/cache/encoded-*.npz``)."""
    prepare_s: float = 0.0
    """Seconds of data preparation (load or generate, rank, crosses, encode), apart from the search's time; the
    parts are in ``timings``."""
    warm_start: JSONDict = dataclasses.field(default_factory=lambda: {"mode": "none", "enqueued": 0,
                                                                            "notes": []})
    """``[study] warm_start``: ``mode``, trials ``enqueued`` by this execution and ``notes`` (clipped, skipped)."""
    startup: JSONDict | None = None
    """The sampler's start-up trials (``n_startup_trials``, ``source``: user / n_trials / timeout / provisional,
    ``estimated_trials``); ``None`` for a sampler without start-up trials (search/startup.py)."""


@dataclass(frozen=True)
class StoredInfo(_Info):
    """The ``info`` of a study read back from storage (``sparsearch show``)."""

    n_mlflow_child_runs: int
    split: JSONDict | None


@dataclass
class StudyResult:
    """The outcome of :func:`run_study` (or :func:`load_result` for a stored study)."""

    study_name: str
    storage: str
    tracking_uri: str | None
    mlflow_parent_run_id: str | None
    study: optuna.Study
    objectives: list[str]
    directions: list[str]
    elapsed_s: float = 0.0
    n_trials_run: int = 0
    info: RunInfo | StoredInfo | None = None
    model_uri: str | None = None
    """The best trial's model as an MLflow pyfunc (raw rows in, probabilities out), when one was logged:
    ``mlflow.pyfunc.load_model(model_uri).predict(raw_frame)``."""

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)

    @property
    def best_trials(self) -> list[FrozenTrial]:
        """The best trial (single objective) or the Pareto front (several objectives)."""
        return best_complete(self.study, len(self.directions))

    @property
    def best_trial(self) -> FrozenTrial | None:
        best = self.best_trials
        return best[0] if best else None

    def trials_dataframe(self) -> pd.DataFrame:
        """All trials as a pandas DataFrame (Optuna's layout: number, values, params_*, user_attrs_*, state)."""
        return self.study.trials_dataframe(multi_index=False)

    def test_metrics(self) -> dict[int, dict[str, float]]:
        """Metrics on the held-out test rows of the best trial(s) that have them: number -> ``{"test_auc": ...}``."""
        out = {}
        for t in self.best_trials:
            rec = get_test_record(self.study, t.number)
            if rec is not None:
                out[t.number] = records.stored_test_metrics(rec)
        return out

    def to_json(self) -> JSONDict:
        """The public JSON document of ``sparsearch run --json`` (field names are a stable interface).

        Documented in README.md ("The run JSON"). ``best_values`` are validation metrics (what the search
        selected on); ``test_metrics`` are the incumbent's metrics on the held-out test rows, computed once.
        """
        best = self.best_trial
        tests = self.test_metrics()
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "tracking_uri": self.tracking_uri,
            "mlflow_parent_run_id": self.mlflow_parent_run_id,
            "model_uri": self.model_uri,
            "objectives": list(self.objectives),
            "directions": list(self.directions),
            "n_trials": len(self.trials),
            "n_trials_run": self.n_trials_run,
            "n_complete": self.count(TrialState.COMPLETE),
            "n_pruned": self.count(TrialState.PRUNED),
            "n_failed": self.count(TrialState.FAIL),
            "best_values": list(best.values) if best else None,
            "best_params": dict(best.params) if best else None,
            "best_trial_number": best.number if best else None,
            "pareto_front": [t.number for t in self.best_trials] if len(self.directions) > 1 else None,
            "test_metrics": _jsonable(tests.get(best.number)) if best is not None and best.number in tests else None,
            "test": [{"number": n, "metrics": _jsonable(m)} for n, m in tests.items()],
            "split": _jsonable(self.info.split if self.info is not None else None),
            "elapsed_s": round(self.elapsed_s, 3),
            "info": self.info.to_json() if self.info is not None else {},
            "trials": [trial_json(t) for t in self.trials],
        }


def _jsonable(v: object) -> JSONValue:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def trial_json(t: FrozenTrial) -> JSONDict:
    duration = t.duration.total_seconds() if t.duration is not None else None
    return {
        "number": t.number,
        "state": t.state.name,
        "values": _jsonable(list(t.values)) if t.values is not None else None,
        "params": _jsonable(dict(t.params)),
        "user_attrs": _jsonable(dict(t.user_attrs)),
        "duration_s": duration,
    }


def best_complete(study: optuna.Study, n_objectives: int) -> list[FrozenTrial]:
    """The best trial, or the Pareto front of a multi-objective study (none before a trial completes)."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return [study.best_trial] if n_objectives == 1 else list(study.best_trials)


def best_values(study: optuna.Study, n_objectives: int) -> list[float] | None:
    try:
        if n_objectives == 1:
            return [study.best_value]
        return None
    except ValueError:
        return None


def load_result(study_name: str, *, storage: str | None = None,
                results_dir: str | os.PathLike[str] = "sparsearch-results") -> StudyResult:
    """Read a stored study (what ``sparsearch show`` prints) without running anything."""
    results = Path(results_dir)
    url = storage or env_storage_url() or default_storage_url(results)
    if url.startswith("journal:") and not Path(url.removeprefix("journal:")).exists():
        raise SpecError(f"no study storage at {url!r} (run a study first, or pass --storage / --results)")
    backend = open_storage(url)
    try:
        study = optuna.load_study(study_name=study_name, storage=backend)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(backend)]
        from sparsearch.errors import unknown_choice

        raise unknown_choice(f"study in {redact(url)!r}", study_name, names) from None
    objectives = list(records.stored_objectives(study) or study.metric_names
                      or [f"value_{i}" for i in range(len(study.directions))])
    logged = records.logged_numbers(backend.get_study_system_attrs(study_id(study)))
    return StudyResult(study_name=study_name, storage=redact(url), tracking_uri=None, mlflow_parent_run_id=None,
                       study=study, objectives=objectives, directions=[d.name.lower() for d in study.directions],
                       info=StoredInfo(n_mlflow_child_runs=len(logged), split=records.stored_split(study)),
                       model_uri=records.model_uri(study))
