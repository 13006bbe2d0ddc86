"""What every fault test asserts after the fault (BENCHMARKS.md, "Faults": lost 0, duplicated 0).

- every finished trial is stored once: trial numbers are unique, and a trial and its retries (``retry_of``) give
  at most one COMPLETE or PRUNED outcome between them; a retry exists only for a trial that failed;
- exactly one MLflow child run per trial number, under a parent run of the study's experiment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

FINISHED = {"COMPLETE", "PRUNED", "FAIL"}
DONE = {"COMPLETE", "PRUNED"}


def _plain(trial: Any) -> tuple[int, str, Mapping[str, Any]]:
    """(number, state name, user attributes) of an Optuna ``FrozenTrial`` or of a trial of ``--json`` output."""
    if isinstance(trial, Mapping):
        return int(trial["number"]), str(trial["state"]), trial.get("user_attrs") or {}
    return int(trial.number), trial.state.name, trial.user_attrs


def assert_stored_once(trials: Iterable[Any]) -> None:
    """No finished trial is stored twice: unique numbers, at most one outcome per piece of dispatched work."""
    rows = [_plain(t) for t in trials]
    numbers = Counter(n for n, _, _ in rows)
    assert all(c == 1 for c in numbers.values()), f"trial numbers stored twice: {numbers.most_common(3)}"
    state = {n: s for n, s, _ in rows}
    parent = {n: int(a["retry_of"]) for n, _, a in rows if a.get("retry_of") is not None}
    for n, of in parent.items():
        assert of in state, f"trial {n} is a retry of trial {of}, which is not stored"
        assert state[of] == "FAIL", f"trial {n} re-ran trial {of}, which ended {state[of]}, not FAIL"

    def origin(n: int) -> int:
        seen = set()
        while n in parent:
            assert n not in seen, f"retry_of loops through trial {n}"
            seen.add(n)
            n = parent[n]
        return n

    outcomes = Counter(origin(n) for n, s, _ in rows if s in DONE)
    twice = {n: c for n, c in outcomes.items() if c > 1}
    assert not twice, f"work finished more than once (origin trial: COMPLETE/PRUNED copies): {twice}"


def child_runs_by_number(tracking_uri: str, experiment: str) -> Counter:
    """How many MLflow child runs each trial number has in ``experiment`` (children of any of its parent runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} at {tracking_uri}"
    runs, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    parents = {r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags}
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    orphans = [r.info.run_id for r in children if r.data.tags["mlflow.parentRunId"] not in parents]
    assert not orphans, f"child runs whose parent run is not in the experiment: {orphans}"
    untagged = [r.info.run_id for r in children if "trial_number" not in r.data.tags]
    assert not untagged, f"child runs without a trial_number tag: {untagged}"
    return Counter(int(r.data.tags["trial_number"]) for r in children)


def assert_one_child_run_per_trial(tracking_uri: str, experiment: str, trials: Iterable[Any]) -> None:
    """Exactly one child run per finished trial number, and none for a number that is not a finished trial."""
    counts = child_runs_by_number(tracking_uri, experiment)
    finished = {n for n, s, _ in (_plain(t) for t in trials) if s in FINISHED}
    twice = {n: c for n, c in counts.items() if c > 1}
    assert not twice, f"trial numbers with more than one MLflow child run: {twice}"
    missing = sorted(finished - set(counts))
    assert not missing, f"finished trials without an MLflow child run: {missing}"
    extra = sorted(set(counts) - finished)
    assert not extra, f"MLflow child runs for trials that are not finished in storage: {extra}"
