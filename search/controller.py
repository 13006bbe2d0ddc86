"""The search controller: Optuna ask/tell in the driver, trials as Ray tasks, every trial in MLflow.

Flow of one execution (see ARCHITECTURE.md), and where each step lives:

1. validate the study (:mod:`~sparsearch.search.spec`), open MLflow (fail fast when unreachable) and the storage;
2. prepare the data once (:mod:`~sparsearch.search.data`): load, split, rank features on the training rows
   (cached), prefilter, add crosses, encode;
3. start or join Ray (:func:`sparsearch._ray.connect_ray`); ``ray.put`` the training and validation rows once
   (the driver keeps only their refs); start the storage actor when a worker may need it; create or resume the
   study (:func:`_open_study`);
4. :func:`_drive`: start the MLflow parent run, fail stale RUNNING trials left by a dead driver and re-queue
   them (:class:`~sparsearch.search.execution.Execution`), then run the search loop
   (:class:`~sparsearch.search.loop.SearchLoop`: dispatch, collect, heartbeat, timeouts);
5. the end of the study (:mod:`~sparsearch.search.finish`): late child runs, the best trial (or every Pareto
   trial) once on the held-out test rows, the parent run's summary, plots and best model;
6. return a :class:`~sparsearch.search.results.StudyResult`.

Random search is this same code path with ``sampler = "random"``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection

from sparsearch._ray import check_ray_reachable, connect_ray, set_ray_env
from sparsearch._redact import redact
from sparsearch.errors import ConnectionProblem, SpecError, first_line
from sparsearch.search import records
from sparsearch.search.data import PreparedData, prepare_data
from sparsearch.search.execution import Execution, resolve_urls
from sparsearch.search.finish import detach_study, evaluate_test, finish_parent
from sparsearch.search.listeners import LoopListener, ModelKeeper, ProgressListener, TrackingListener
from sparsearch.search.loop import SearchLoop
from sparsearch.search.registry import make_pruner, make_sampler
from sparsearch.search.results import RunInfo, StudyResult, load_result
from sparsearch.search.spec import StudySpec, load_study, pruning_window_note, startup_note
from sparsearch.search.startup import StartupListener, StartupPlan, plan_startup, sampler_params
from sparsearch.search.storage import (
    RayStorageProxy,
    is_backend_failure,
    is_journal,
    is_memory_url,
    open_storage,
    start_storage_server,
)
from sparsearch.search.tracking import warm_up_plots
from sparsearch.search.warmstart import source_study, warm_start
from sparsearch.search.worker import execute_trial

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

__all__ = ["StudyResult", "load_result", "run_study"]

log = logging.getLogger("sparsearch")


def _check_results_dir(results_dir: Path) -> Path:
    results_dir = Path(results_dir)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SpecError(f"results folder {str(results_dir)!r} is not writable: {exc.strerror or exc}") from None
    return results_dir


OWN_TABLE_STUDY = "table"
"""The bundled study a run with data and no study name uses (``sparsearch run --data FILE --target COL``)."""


def _own_table_study(overrides: dict[str, object], progress: bool | Callable[[str], None]) -> str:
    """The study name for a run given data but no study; a one-line error when the data or target is missing."""
    missing = [f"{flag} ({key}=)" for flag, key in (("--data", "data"), ("--target", "target"))
               if overrides.get(key) is None]
    if missing:
        raise SpecError(f"no study given: name one (a .toml file or a bundled study such as 'quickstart'), or give "
                        f"your own table with --data FILE --target COL; missing {' and '.join(missing)}")
    note = (f"no study given: running the bundled study {OWN_TABLE_STUDY!r} on your table "
            f"(target {overrides['target']!r}); the same as: sparsearch run {OWN_TABLE_STUDY} --data ... --target ...")
    if callable(progress):
        progress(note)
    elif progress:
        print(f"sparsearch: {note}", file=sys.stderr, flush=True)
    log.info(note)
    return OWN_TABLE_STUDY


def run_study(
    study: str | os.PathLike[str] | StudySpec | None = None,
    *,
    results_dir: str | os.PathLike[str] = "sparsearch-results",
    progress: bool | Callable[[str], None] = True,
    **overrides: object,
) -> StudyResult:
    """Run (or resume) a study and return its result.

    Args:
        study: a study file path, a bundled study name (``"quickstart"``) or a :class:`StudySpec`. ``None`` with
            ``data=`` and ``target=``: the bundled study for your own table (:data:`OWN_TABLE_STUDY`), whose name
            is printed.
        results_dir: where the embedded Optuna storage, MLflow store, artifacts and caches live.
        progress: print one progress line per trial to stderr (``True``), nothing (``False``).
        **overrides: see :data:`sparsearch.search.spec.OVERRIDES` (``n_trials=5``, ``sampler="random"``, ...)
            and dotted ``"section.key"`` entries. ``data=`` also takes a polars or pandas DataFrame (or a polars
            LazyFrame): it is encoded once and reaches the workers through Ray's object store once.
            ``objective=`` takes a function ``f(trial, config, train, val, report)`` (Ray serialises it, so one
            defined in a notebook or ``__main__`` runs on every node) or a ``"module:function"`` string.

    Returns:
        A :class:`StudyResult` with the Optuna study, all trials, the best trial(s) and the MLflow parent run id.

    Example:
        >>> import sparsearch
        >>> result = sparsearch.run_study("quickstart", n_trials=2, **{"train.epochs": 1})  # doctest: +SKIP
        >>> result.best_trial.values  # doctest: +SKIP
    """
    if study is None:
        study = _own_table_study(overrides, progress)
    spec = study if isinstance(study, StudySpec) else load_study(study, **overrides)
    if isinstance(study, StudySpec) and overrides:
        from sparsearch.search.spec import apply_overrides, parse_study

        spec = parse_study(apply_overrides(spec.to_raw(), overrides), default_name=spec.study.name)
    results = _check_results_dir(Path(results_dir))
    start = time.perf_counter()

    # fail fast on a bad or unreachable storage, before any work, and on a warm start from a study that is not
    # there (or has no completed trial)
    source_study(spec, open_storage(resolve_urls(spec, results)[0]))
    set_ray_env()  # before Ray's first import: it reads them once (localhost resolution)
    import ray

    if not ray.is_initialized():
        check_ray_reachable(spec.execution.ray_address)  # and on an unreachable Ray address
    from concurrent.futures import ThreadPoolExecutor

    ex = Execution(spec, results)  # starts the MLflow writer process
    # MLflow's store set-up (seconds for a new SQLite store: schema migrations) overlaps data preparation and Ray's
    # start; its failure is still reported before any trial runs, and first, as when it ran alone
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsearch-mlflow-connect")
    connecting = pool.submit(ex.tracker.connect)
    pool.shutdown(wait=False)
    started_ray = False
    try:
        prepared = prepare_data(spec, results)
        started_ray = connect_ray(spec.execution.ray_address)
        # the training and validation rows go to the object store once per execution (workers keep them); the
        # driver keeps only the refs, so the data is in memory once (the store), not twice
        data_refs = [ray.put(prepared.train), ray.put(prepared.val)]
        prepared = dataclasses.replace(prepared, train=None, val=None)
        connecting.result()
        # the parent run's plots come at the end; what they need takes ~2 s to set up: do it while trials run
        ex.tracker.submit(warm_up_plots)
    except BaseException:
        try:
            connecting.result()
        finally:
            ex.trial_log.close()
            if started_ray:
                ray.shutdown()
        raise
    actor = None
    status = "FAILED"
    try:
        # Workers on the driver's node open a journal file themselves; the storage actor serves every other case
        # (other nodes, databases, memory). It starts in the background: the driver has opened the storage already.
        if not (is_journal(ex.storage_url) and _single_node(spec.execution.ray_address)):
            actor = start_storage_server(ex.storage_url, wait=is_memory_url(ex.storage_url))
        result = _drive(ex, prepared, data_refs, actor, start, show_progress=bool(progress))
        status = "FINISHED"
        return result
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except Exception as exc:
        if not is_backend_failure(exc):
            raise
        # e.g. PostgreSQL restarted mid-study: stop with one clear line; finished trials are in storage already,
        # RUNNING ones are failed and re-queued by the next run (stale heartbeats)
        first = first_line(exc)
        raise ConnectionProblem(
            f"storage {redact(ex.storage_url)!r} failed mid-study ({type(exc).__name__}: {redact(first)[:200]}); "
            "finished trials are kept: re-run the same command to resume") from None
    finally:
        ex.trial_log.close()
        ex.tracker.flush()
        if ex.tracker.parent_run_id is not None and status != "FINISHED":
            ex.tracker.finish_parent(status, {}, {"status": status})
        if actor is not None:
            ray.kill(actor)
        if started_ray:
            ray.shutdown()


def _single_node(address: str | None) -> bool:
    """Whether every trial runs on the driver's node: a one-node Ray that was not joined by address (a cluster
    joined by address may gain nodes while the study runs, e.g. by autoscaling)."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    joined = address not in (None, "local")
    return not joined and len([n for n in ray.nodes() if n.get("Alive")]) == 1


def _open_study(ex: Execution, storage: BaseStorage, plan: StartupPlan | None = None) -> optuna.Study:
    spec = ex.spec
    sampler = make_sampler(spec.study.sampler, spec.study.seed, **sampler_params(spec, plan))
    pruner = make_pruner(spec.study.pruner, **spec.pruner_params())
    try:
        existing = optuna.load_study(study_name=spec.study.name, storage=storage, sampler=sampler, pruner=pruner)
    except KeyError:
        existing = None
    if existing is not None:
        have = [d.name.lower() for d in existing.directions]
        if have != ex.directions:
            raise SpecError(
                f"study {spec.study.name!r} already exists in {redact(ex.storage_url)!r} with directions {have}, "
                f"but this study asks for {ex.directions}; use another --study-name"
            )
        stored = records.stored_objectives(existing)
        if stored is not None and list(stored) != ex.objectives:
            raise SpecError(f"study {spec.study.name!r} already exists with objectives {stored}, but this study "
                            f"asks for {ex.objectives}; use another --study-name")
        if existing.metric_names is None:  # a study made before sparsearch named its metrics
            _set_metric_names(existing, ex.objectives)
        return existing
    directions = [StudyDirection[d.upper()] for d in ex.directions]  # the spec checked each name
    study = optuna.create_study(study_name=spec.study.name, storage=storage, sampler=sampler, pruner=pruner,
                                directions=directions, load_if_exists=True)
    records.set_study_identity(study, ex.objectives)
    _set_metric_names(study, ex.objectives)
    return study


def _set_metric_names(study: optuna.Study, objectives: list[str]) -> None:
    """Name the study's objectives (``val_auc``, not "Objective 0") for optuna-dashboard and Optuna's plots.

    Optuna then also names the value columns of ``trials_dataframe`` after them (``value_val_auc``).
    """
    with warnings.catch_warnings():  # experimental since Optuna 3.2, still so in 5.0
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))


def _drive(ex: Execution, prepared: PreparedData, data_refs: list[ObjectRef], actor: ActorHandle | None,
           start: float, *, show_progress: bool) -> StudyResult:
    """One execution once Ray, the data and (maybe) the storage actor are up: open the study, start the parent
    run, run the search loop with its listeners (MLflow child runs, kept models, progress lines), then the
    end-of-study work."""
    import ray
    from ray.remote_function import RemoteFunction

    spec = ex.spec
    gpus = spec.execution.gpus_per_trial
    gpu_slots = _check_gpus(gpus)  # before the study is touched: nothing runs if no trial can be scheduled
    # The driver opens the storage itself (journal files and databases take several clients; in-process calls
    # are ~100x cheaper than actor round trips); only an in-memory storage lives in the actor alone.
    storage: BaseStorage
    if is_memory_url(ex.storage_url):
        assert actor is not None, "an in-memory storage lives in the storage actor, which the caller starts"
        storage = RayStorageProxy(actor, retries=0)  # type: ignore[abstract]  # set at import: _FORWARDED
    else:
        storage = open_storage(ex.storage_url)
    if optuna.logging.get_verbosity() < optuna.logging.WARNING:  # quiet Optuna's per-trial INFO lines, but never
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # undo a caller's stricter level (the CLI's ERROR)
    plan = plan_startup(spec)  # budget-aware start-up trials (search/startup.py)
    study = _open_study(ex, storage, plan)
    n_before = len(study.get_trials(deepcopy=False))

    cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
    cpus = spec.execution.cpus_per_trial
    if cpus > cluster_cpus:
        raise SpecError(f"[execution] cpus_per_trial = {cpus} but the Ray cluster has only {cluster_cpus:g} CPUs")
    workers = spec.execution.workers or max(1, min(int(cluster_cpus // cpus), gpu_slots))
    progress = ProgressListener(study, spec.study.n_trials, ex.objectives) if show_progress else None
    _start_parent(ex, prepared, workers, n_before, progress)
    records.set_split(study, prepared.split)
    keeper = ModelKeeper(ex.directions)
    listeners: list[LoopListener] = [TrackingListener(ex, study, storage, prepared.fingerprint), keeper]
    if progress is not None:
        listeners.append(progress)
    say = progress.say if progress else _quiet
    if plan is not None and plan.source == "provisional":
        listeners.append(StartupListener(study.sampler, plan, timeout=float(spec.study.timeout or 0),
                                         n_trials=spec.study.n_trials, workers=workers, say=say))
    if plan is not None:
        say(plan.describe())
    # before the stale trials are re-queued: a resumed, warm-started study is not warm-started again
    warm = warm_start(study, spec, storage)
    if warm.enqueued:
        say(f"warm start {warm.mode}: {warm.enqueued} trial(s) enqueued")
    ex.record_driver(study, storage)

    # a trial that reserves GPUs gets a fresh worker process (Ray's max_calls=1 for GPU tasks): CUDA is set up
    # once per process, for the CUDA_VISIBLE_DEVICES Ray gave that process's first task
    task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(execute_trial)
    # what ray.remote returns; its stubs type it as a RemoteFunction2 Protocol-like class instead
    assert isinstance(task, RemoteFunction)
    loop = SearchLoop(ex, study, storage, prepared, task, actor, data_refs,
                      driver_node=ray.get_runtime_context().get_node_id(), workers=workers, listeners=listeners)
    # stale trials left by a stopped driver: re-queued ones run on top of this execution's budget
    stale, requeued_at_start = loop.fail_stale()
    if stale and progress is not None:
        progress.say(f"failed {stale} stale RUNNING trial(s) left by a stopped driver; {requeued_at_start} re-queued")
    # before any trial runs: the user can still stop and fix it
    notes = [_note(progress, pruning_window_note(spec)), *(_note(progress, n) for n in warm.notes)]
    outcome = loop.run()

    notes.append(_note(progress, startup_note(study)))
    evaluate_test(ex, study, prepared, task, data_refs, keeper, progress.say if progress else _quiet)
    elapsed = time.perf_counter() - start
    model_uri = finish_parent(ex, study, prepared, elapsed, keeper)
    return StudyResult(
        study_name=spec.study.name, storage=redact(ex.storage_url),
        tracking_uri=redact(ex.tracking_uri) if spec.tracking.enabled else None,
        mlflow_parent_run_id=ex.tracker.parent_run_id, study=detach_study(ex, study), objectives=ex.objectives,
        directions=ex.directions, elapsed_s=elapsed, n_trials_run=outcome.n_run, model_uri=model_uri,
        info=RunInfo(workers=workers, cpus_per_trial=cpus, data_fingerprint=prepared.fingerprint,
                     n_rows=prepared.n_rows, split=prepared.split, ranking_rows=prepared.ranking_rows,
                     features=list(prepared.candidates), crosses=list(prepared.crosses), timings=prepared.timings,
                     ranking_cached=prepared.ranking_cached, mlflow_failures=len(ex.tracker.failures),
                     mlflow_logging=ex.trial_log.mode, notes=[n for n in notes if n],
                     encoding_cached=prepared.encoding_cached,
                     prepare_s=round(prepared.timings.get("prepare_s", 0.0), 3), warm_start=warm.to_json(),
                     startup=plan.to_json() if plan is not None else None),
    )


def _quiet(text: str) -> None:
    """Where messages go when progress is off: nowhere."""


def _note(progress: ProgressListener | None, note: str | None) -> str | None:
    """Show a study-level warning on the progress lines, else as a Python warning; the result's info keeps it."""
    if note and progress is not None:
        progress.say(f"note: {note}")
    elif note:
        warnings.warn(note, UserWarning, stacklevel=4)  # at the caller of run_study
    return note


def _start_parent(ex: Execution, prepared: PreparedData, workers: int, n_before: int,
                  progress: ProgressListener | None) -> None:
    """Start the MLflow parent run of this execution (with the ranking as an artifact); say what the study is."""
    spec = ex.spec
    cpus = spec.execution.cpus_per_trial
    params = {"study": spec.study.model_dump(mode="json"), "data": spec.data.model_dump(mode="json"),
              "space": spec.space.model_dump(mode="json"), "train": spec.train.model_dump(mode="json"),
              "execution": {**spec.execution.model_dump(mode="json"), "workers_effective": workers},
              "data_fingerprint": prepared.fingerprint, "n_rows": prepared.n_rows,
              "n_candidates": len(prepared.candidates)}
    tags = {"sparsearch.kind": "study", "sampler": spec.study.sampler, "seed": str(spec.study.seed),
            "data_fingerprint": prepared.fingerprint, "storage": redact(ex.storage_url),
            "optuna_trials_before": str(n_before), "driver": ex.driver_id}
    parent = ex.tracker.start_parent(f"{spec.study.name}-{time.strftime('%Y%m%d-%H%M%S')}", params, tags)
    if prepared.ranking is not None and parent is not None:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "feature_ranking.csv"
            prepared.ranking.write_csv(path)
            ex.tracker.log_artifact_file(parent, path)

    if progress is not None:
        progress.say(f"study {spec.study.name!r}: {spec.study.n_trials} trials, sampler {spec.study.sampler}, "
               f"{workers} workers x {cpus:g} CPU, data {prepared.n_rows} rows, "
               f"{len(prepared.candidates) or '-'} features after prefilter"
               f"{f' + {len(prepared.crosses)} crosses' if prepared.crosses else ''}"
               f"{' (cached ranking)' if prepared.ranking_cached else ''}"
               f"{' (cached encoding)' if prepared.encoding_cached else ''}; data prepared in "
               f"{prepared.timings.get('prepare_s', 0.0):.1f}s; storage {redact(ex.storage_url)}")


def _check_gpus(gpus: float) -> int:
    """Check that a trial asking ``gpus`` GPUs fits on some node; return how many such trials fit at once.

    A task asking for resources no node has would wait forever (and with an autoscaler, for a node type that may
    never come): stop before any trial instead, naming the resource.
    """
    import ray

    if gpus <= 0:
        return 1 << 30
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    per_node = [float(n.get("Resources", {}).get("GPU", 0.0)) for n in nodes]
    total = float(ray.cluster_resources().get("GPU", 0.0))
    if not per_node or max(per_node) + 1e-9 < gpus:
        most = max(per_node, default=0.0)
        raise SpecError(f"[execution] gpus_per_trial = {gpus:g} but no node of the Ray cluster has that many GPUs "
                        f"(resource 'GPU': {total:g} in the cluster, at most {most:g} on one node)")
    return max(1, sum(int(g // gpus + 1e-9) for g in per_node))
