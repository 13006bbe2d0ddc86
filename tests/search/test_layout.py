"""The study and MLflow layout sparsearch writes is a stable interface: compared against a golden file.

What is compared (keys exactly; values only where they are the same on every run):

- the sorted key paths of the run JSON (``StudyResult.to_json``, ``info`` included; lists as ``[]``);
- the MLflow tag keys of the parent run and of the trial child runs, and the values of the stable ones;
- the study user-attribute keys, the trial user- and system-attribute keys and the study system-attribute keys
  (trial numbers and driver ids replaced by ``N`` and ``ID``) that sparsearch writes into the Optuna study.

Two tiny studies cover it: a trained sparse model (test rows, best model, headline metrics) and a custom
objective that fails every even trial (``fail_reason``). Regenerate the golden file after a deliberate layout
change with ``SPARSEARCH_WRITE_LAYOUT=1 python -m pytest tests/search/test_layout.py``, and say so in the commit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from sparsearch.search._internals import study_id, study_storage
from sparsearch.search.controller import run_study
from sparsearch.search.spec import load_study

pytestmark = pytest.mark.usefixtures("ray_session")

GOLDEN = Path(__file__).parent / "data" / "layout.json"

STABLE_TAGS = {"sparsearch.kind", "sampler", "seed", "status", "study", "state", "best_trial", "test_evaluated",
               "optuna.study_name", "optuna.trial.number", "optuna.trial.state", "warm_start"}
"""Tags whose values are the same on every run (the rest: ids, times, paths, users, fingerprints)."""

FREE_KEYS = {"params", "best_params"}
"""JSON objects whose keys are the search space's parameter names, not sparsearch's layout."""


def _study(name: str, objective: str | None) -> dict[str, Any]:
    # the trained study's trials run for longer than a heartbeat (its key is written); the custom one's never do
    beat = {"heartbeat_interval": 60.0, "stale_after": 120.0} if objective else {"heartbeat_interval": 0.02}
    raw: dict[str, Any] = {
        "study": {"name": name, "n_trials": 2, "seed": 0, "pruner": "none"},
        "data": {"generator": "click_log", "params": {"n_rows": 2000, "n_noise": 4, "max_cardinality": 200},
                 "top_k": 4},
        "space": {"depth": [1, 1], "width": [8, 16]},
        "train": {"epochs": 1, "batch_size": 256},
        "execution": {"workers": 1, **beat},
    }
    if objective:
        raw["study"]["objective"] = f"sparsearch_test_objectives:{objective}"
    else:  # a warm-start trial: its user attribute and child-run tag are part of the layout
        raw["study"]["warm_start"] = "portfolio"
    return raw


def key_paths(value: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document: ``a.b``, lists as ``a[]``; the leaves' types are not compared."""
    out = {prefix} if prefix else set()
    if isinstance(value, dict) and prefix.rpartition(".")[2] in FREE_KEYS:
        return out | ({f"{prefix}.*"} if value else set())
    if isinstance(value, dict):
        for k, v in value.items():
            out |= key_paths(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list):
        for v in value:
            out |= key_paths(v, f"{prefix}[]")
    return out


def _generic(key: str, driver_ids: set[str]) -> str:
    for d in driver_ids:
        key = key.replace(d, "ID")
    return re.sub(r"(?<=:)\d+$", "N", key)


def _tags(tags: dict[str, str]) -> dict[str, str | None]:
    """Tag key -> value for the stable tags, ``None`` for the others (run names: their digits as ``N``)."""
    out: dict[str, str | None] = {}
    for k, v in sorted(tags.items()):
        out[k] = v if k in STABLE_TAGS else re.sub(r"\d+", "N", v) if k == "mlflow.runName" else None
    return out


def layout(tmp_path: Path, name: str, objective: str | None) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    result = run_study(load_study(_study(name, objective)), results_dir=tmp_path, progress=False)
    study = result.study
    sys_attrs = study_storage(study).get_study_system_attrs(study_id(study))
    drivers = {str(t.system_attrs.get("sparsearch:driver")) for t in result.trials} - {"None"}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and len(children) == len(result.trials) == 2
    child_tags: dict[str, Any] = {}
    for run in children:
        for k, v in _tags(run.data.tags).items():
            child_tags.setdefault(k, set()).add(v)
    assert child_tags, "no child run tags read"
    assert study.user_attrs and sys_attrs and drivers, "nothing read from the study"
    return {
        "run_json_keys": sorted(key_paths(json.loads(json.dumps(result.to_json())))),
        "study_user_attrs": sorted(_generic(k, drivers) for k in study.user_attrs),
        "study_system_attrs": sorted({_generic(k, drivers) for k in sys_attrs}),
        "trial_user_attrs": {state: sorted({k for t in result.trials if t.state.name == state for k in t.user_attrs})
                             for state in sorted({t.state.name for t in result.trials})},
        "trial_system_attrs": sorted({k for t in result.trials for k in t.system_attrs}),
        "parent_tags": _tags(parent[0].data.tags),
        "child_tags": {k: sorted(v, key=str) if None not in v else None for k, v in child_tags.items()},
        "experiment_tags": sorted(exp.tags),
    }


def test_run_json_study_records_and_mlflow_tags_keep_their_layout(tmp_path):
    got = {"model": layout(tmp_path / "model", "layout_model", None),
           "custom": layout(tmp_path / "custom", "layout_custom", "bad_even")}
    got = json.loads(json.dumps(got))
    if os.environ.get("SPARSEARCH_WRITE_LAYOUT"):
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
    want = json.loads(GOLDEN.read_text())
    for study in ("model", "custom"):
        for part in want[study]:
            assert got[study][part] == want[study][part], f"{study}: {part} changed"
    assert got == want
