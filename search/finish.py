"""The end of a study execution: test evaluation, late MLflow child runs, the parent run's summary and model.

In the order ``run_study`` calls them:

1. :func:`sync_unlogged` writes child runs for finished trials whose MLflow logging failed (this or an earlier
   execution); it runs even when the loop stopped on an error, never after Ctrl-C;
2. :func:`evaluate_test` evaluates the best trial (or every Pareto trial) once on the held-out test rows;
3. :func:`finish_parent` gives the parent run the trials table, best-so-far metrics, best trials, Optuna's plots
   and the best model (:func:`_log_best_model`), and returns the model's URI;
4. :func:`detach_study` returns a study object that outlives the storage actor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial, TrialState

from sparsearch._redact import redact
from sparsearch._types import JSONDict
from sparsearch.search import records
from sparsearch.search._internals import study_storage, trial_id
from sparsearch.search.data import PreparedData, trial_feature_subset
from sparsearch.search.execution import Execution
from sparsearch.search.listeners import ModelKeeper
from sparsearch.search.protocol import TrialReport, build_payload
from sparsearch.search.records import get_test_record
from sparsearch.search.results import best_complete, best_values
from sparsearch.search.storage import is_memory_url, open_storage

if TYPE_CHECKING:
    import plotly.graph_objects as go
    from ray import ObjectRef
    from ray.remote_function import RemoteFunction

__all__ = ["detach_study", "evaluate_test", "finish_parent", "sync_unlogged"]

log = logging.getLogger("sparsearch")


def sync_unlogged(ex: Execution, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
    """Write child runs for finished trials whose MLflow logging failed (this or an earlier execution)."""
    if not ex.spec.tracking.enabled or ex.tracker.parent_run_id is None:
        return
    ex.tracker.resume()
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    logged = records.study_system_attrs(study)
    now = time.time()
    existing: dict[int, str] | None = None
    for t in study.get_trials(deepcopy=False, states=finished):
        if records.logged_run(logged, t.number) is not None:
            continue
        owner = records.owner(t)
        if owner is not None and owner != ex.driver_id and not records.driver_done(logged, owner):
            finished_at = t.datetime_complete.timestamp() if t.datetime_complete else 0.0
            if now - finished_at <= ex.spec.execution.stale_after:
                continue  # a live driver logs its own trials (syncing them too gave duplicate child runs)
        # finish the child run created at dispatch when there is one, so a trial never gets two runs: the one
        # recorded in the study, else one in MLflow that a killed driver (or a storage outage) left unrecorded
        run_id = records.created_run(logged, t.number)
        if run_id is None:
            if existing is None:
                existing = ex.tracker.child_runs(study.study_name)
            run_id = existing.get(t.number) or ex.tracker.start_trial(
                t.number, t.params, {"study": study.study_name, "synced_late": "true"})
        if ex.tracker.finish_trial(run_id, state=records.finished_state(t.state),
                                   metrics=records.trial_metrics(t),
                                   error=records.fail_reason(t)):
            records.mark_logged(study, t.number, run_id)  # type: ignore[arg-type]  # logged: it has a run id
    # this driver has logged what it could: its remaining unlogged trials are any later driver's to sync
    records.mark_driver_done(study, ex.driver_id)


def evaluate_test(ex: Execution, study: optuna.Study, prepared: PreparedData, task: RemoteFunction, data_refs: list[ObjectRef],
                  keeper: ModelKeeper, say: Callable[[str], None]) -> None:
    """Evaluate the best trial (single objective) or every Pareto trial once on the held-out test rows.

    A trial's test metrics are stored as the study user attribute ``test:<number>`` and never recomputed for the
    same split: a resumed study that keeps its incumbent reports the same figures. The model comes from this
    execution when it trained the trial; otherwise (an incumbent of an earlier execution that was never tested) the
    trial is re-trained from its stored parameters with its own seed, on a Ray worker, and marked ``retrained``
    (its model is then kept in ``keeper`` too). ``say`` shows each trial's test metrics.
    """
    import ray

    from sparsearch.search.data import select_features
    from sparsearch.spaces import config_from_params, evaluate_model

    spec = ex.spec
    if prepared.test is None or spec.study.objective is not None:
        if spec.study.objective is not None and prepared.test is not None:
            log.info("no test metrics: a custom objective returns no model to evaluate")
        return
    digest = prepared.split.get("digest")
    for t in best_complete(study, len(ex.objectives)):
        rec = get_test_record(study, t.number)
        if rec is not None and rec.get("split_digest") == digest:
            continue
        retrained = False
        kept = keeper.models.get(t.number)
        try:
            if kept is not None:
                model, features = kept[1], kept[2]
            else:
                features = trial_feature_subset(spec, prepared, t.params)
                config = config_from_params(t.params, spec.space, spec.train,
                                            n_features=len(prepared.candidates) or None)
                payload = build_payload(spec, trial_id=trial_id(t), number=t.number, config=config,
                                        features=features, dispatch=None)
                report: TrialReport = ray.get(task.remote(payload, None, data_refs))
                if report.state != "COMPLETE" or report.model is None:
                    raise RuntimeError(f"re-training trial {t.number} ended {report.state}: {report.error}")
                model, retrained = report.model, True
                keeper.keep_retrained(t, model, features)  # the model logged for this trial
            metrics = evaluate_model(model, select_features(prepared.test, features))
        except Exception as exc:  # a test evaluation must never lose the study
            log.warning("could not evaluate trial %d on the test rows: %s", t.number, exc)
            continue
        tested: JSONDict = {"metrics": dict(metrics), "n_rows": int(prepared.test.n_rows), "split_digest": digest,
                           "retrained": retrained, "driver": ex.driver_id}
        records.store_test_record(study, t.number, tested)
        run_id = records.logged_run(records.study_system_attrs(study), t.number)
        ex.tracker.log_run(run_id, metrics, {"test_evaluated": "true", "test_rows": str(tested["n_rows"])})
        say(f"trial {t.number} on {tested['n_rows']} held-out test rows: "
               + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def finish_parent(ex: Execution, study: optuna.Study, prepared: PreparedData, elapsed: float,
                  keeper: ModelKeeper) -> str | None:
    """Give the parent run its summary, plots and best model; return the model's URI when one was logged."""
    tracker = ex.tracker
    parent = tracker.parent_run_id
    if parent is None:
        return None
    trials = study.get_trials(deepcopy=False)
    metrics = {
        "n_trials": len(trials),
        "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "n_failed": sum(t.state == TrialState.FAIL for t in trials),
        "elapsed_s": elapsed,
    }
    best = best_values(study, len(ex.objectives))
    if best:
        metrics[f"best_{ex.objectives[0]}"] = best[0]
    best_trials = best_complete(study, len(ex.objectives))
    if len(best_trials) == 1 and (rec := get_test_record(study, best_trials[0].number)) is not None:
        metrics.update(records.stored_test_metrics(rec))  # the incumbent's test metrics (test_auc, ...) on the parent
    try:
        df = study.trials_dataframe(multi_index=False)
        tracker.log_artifact_text(parent, "trials.csv", df.to_csv(index=False))
        tracker.log_table(parent, df)  # the same trials, as a table MLflow's UI shows
    except Exception as exc:  # pragma: no cover - logging must never lose the study
        log.warning("could not write the trials table: %s", exc)
    tracker.log_search(parent, trials, ex.objectives, ex.directions, best_trials,
                       _child_runs(study))
    if metrics["n_complete"] >= 1:
        for name, html in _plots(study, ex.objectives).items():
            tracker.log_artifact_text(parent, name, html)
    model_uri = _log_best_model(ex, study, prepared, parent, keeper) if ex.spec.tracking.log_model else None
    tracker.finish_parent("FINISHED", metrics, {"status": "FINISHED"})
    return model_uri


def _log_best_model(ex: Execution, study: optuna.Study, prepared: PreparedData, parent: str,
                    keeper: ModelKeeper) -> str | None:
    """Log the best trial's model as a pyfunc that takes raw rows (tabular studies; an image study's network is
    logged with mlflow.pytorch); record its URI on the study for ``sparsearch predict``.

    The model is the study's incumbent (the first of the Pareto front) when this execution holds it (trained or
    re-trained for the test rows), else this execution's best trial's.
    """
    best = best_complete(study, len(ex.objectives))
    kept = keeper.models.get(best[0].number) if best else None
    if kept is not None and kept[1] is not None:
        network, features, number = kept[1], kept[2], best[0].number
    elif (kept_best := keeper.best_kept()) is not None:
        (_, network, features), number = kept_best, None
    else:
        return None
    if prepared.encoder is None:
        model_uri = ex.tracker.log_torch_model(parent, network)
    else:
        from sparsearch.search.model import build_model_package

        package = build_model_package(network, prepared.encoder, features)
        registered = ex.spec.study.name if ex.spec.tracking.register_model else None
        # raw rows, as the model reads them (tabular data: fit_encoder keeps an example)
        example = prepared.example.select(list(package.encoder.raw_features))  # type: ignore[union-attr]  # as above
        model_uri = ex.tracker.log_pyfunc_model(parent, package, example, registered_name=registered)
    if model_uri is not None:
        records.set_model(study, model_uri, redact(ex.tracking_uri), number)
    return model_uri


def _child_runs(study: optuna.Study) -> dict[int, str]:
    """Trial number -> MLflow child run id, as recorded in the study (see :mod:`sparsearch.search.trial_log`)."""
    return records.child_runs(records.study_system_attrs(study))


class _SnapshotStudy(optuna.Study):
    """A read-only view of a study whose trials are listed once and never deep-copied.

    Optuna's importance plot reads ``study.trials`` (a deep copy of every trial) once per parameter: with 200
    trials of 20 parameters that was 2 s at the end of every study. The plots only read trials.
    """

    def __init__(self, study: optuna.Study) -> None:
        super().__init__(study_name=study.study_name, storage=study_storage(study), sampler=study.sampler,
                         pruner=study.pruner)
        self._snapshot = study.get_trials(deepcopy=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return list(self._snapshot)

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [t for t in self._snapshot if states is None or t.state in states]


def _plots(study: optuna.Study, objectives: list[str]) -> dict[str, str]:
    """Optuna's visualizations as self-contained HTML (plotly) for the parent run."""
    import optuna.visualization as vis

    study = _SnapshotStudy(study)
    out: dict[str, str] = {}
    makers: dict[str, Callable[[], go.Figure]] = {}
    if len(objectives) == 1:
        makers["optimization_history.html"] = lambda: vis.plot_optimization_history(study, target_name=objectives[0])
    else:
        makers["pareto_front.html"] = lambda: vis.plot_pareto_front(study, target_names=objectives)
    n_complete = sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    if n_complete >= 3:
        evaluator = optuna.importance.PedAnovaImportanceEvaluator()
        makers["param_importances.html"] = lambda: vis.plot_param_importances(
            study, evaluator=evaluator, target=(lambda t: t.values[0]) if len(objectives) > 1 else None,
            target_name=objectives[0])
    import warnings

    for name, make in makers.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = make().to_html(include_plotlyjs="cdn", full_html=True)
        except Exception as exc:  # a plot must never fail a study
            log.info("skipped %s: %s", name, exc)
    return out


def detach_study(ex: Execution, study: optuna.Study) -> optuna.Study:
    """A study object that stays usable after the storage actor is gone."""
    if is_memory_url(ex.storage_url):
        local = optuna.storages.InMemoryStorage()
        optuna.copy_study(from_study_name=study.study_name, from_storage=study_storage(study), to_storage=local)
        return optuna.load_study(study_name=study.study_name, storage=local)
    return optuna.load_study(study_name=study.study_name, storage=open_storage(ex.storage_url))
