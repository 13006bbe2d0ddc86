"""Launching from Python on a Ray cluster with a second node: a study built from typed sections, its data an
in-memory frame, its objective a function defined in the driver's ``__main__`` (as in a notebook), which no
worker can import by name: Ray serialises it. The driver runs in its own process, as a notebook's kernel would."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from _procs import env

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent("""
    import json, time
    import mlflow, ray
    from ray.cluster_utils import Cluster
    import sparsearch
    from sparsearch.features import make_click_log
    from sparsearch.search.spec import DataSpec, ExecutionSpec, StudySection, StudySpec, TrackingSpec

    SCALE = 2.0  # a global of __main__: travels with the function, by value

    def objective(trial, config, train, val, report):
        time.sleep(1.0)  # long enough for both nodes to take trials
        x = trial.suggest_float("x", -1.0, 1.0)
        return {"val_auc": 1.0 - SCALE * x * x, "train_rows": float(train.n_rows)}

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address)
    frame = make_click_log(3000, n_noise=4, seed=2)
    out = {"n_nodes": len([n for n in ray.nodes() if n["Alive"]])}

    # 1. typed sections, a pandas frame, a __main__ function
    spec = StudySpec(study=StudySection(name="notebook", n_trials=6, sampler="random", objective=objective),
                     data=DataSpec(frame=frame.to_pandas(), target="click"), train={"epochs": 1},
                     execution=ExecutionSpec(workers=2), tracking=TrackingSpec(enabled=False))
    result = sparsearch.run_study(spec, results_dir=RESULTS, progress=False)
    out["custom"] = {"states": [t.state.name for t in result.trials],
                     "nodes": sorted({t.user_attrs.get("ray_node") for t in result.trials}),
                     "values": [t.values[0] for t in result.trials],
                     "x": [t.params["x"] for t in result.trials],
                     "train_rows": sorted({t.user_attrs["metrics"]["train_rows"] for t in result.trials}),
                     "n_train": result.info["split"]["n_train"], "fingerprint": result.info["data_fingerprint"]}

    # 2. keyword data (a polars LazyFrame) and the built-in objective: the best model comes back from any node
    result = sparsearch.run_study("quickstart", data=frame.lazy(), n_trials=4, results_dir=RESULTS, progress=False,
                                  **{"train.epochs": 1, "data.top_k": 5, "execution.workers": 2,
                                     "study.sampler": "random"})
    mlflow.set_tracking_uri(result.tracking_uri)
    model = mlflow.pyfunc.load_model(result.model_uri)
    proba = model.predict(frame.head(50).to_pandas())
    out["builtin"] = {"states": [t.state.name for t in result.trials],
                      "nodes": sorted({t.user_attrs.get("ray_node") for t in result.trials}),
                      "proba_shape": list(proba.shape), "proba_ok": bool(((proba >= 0) & (proba <= 1)).all().all())}
    print(json.dumps(out))
    ray.shutdown()
    cluster.shutdown()
""")


def test_python_launched_studies_run_on_a_second_node(tmp_path):
    from sparsearch.features import data_fingerprint, make_click_log

    script = tmp_path / "notebook.py"
    script.write_text(f"RESULTS = {str(tmp_path / 'res')!r}\n" + DRIVER)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env(), timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc["n_nodes"] == 2
    custom = doc["custom"]
    assert custom["states"] == ["COMPLETE"] * 6
    assert len(custom["nodes"]) == 2, custom["nodes"]  # the function ran on both nodes
    assert custom["values"] == pytest.approx([1.0 - 2.0 * x * x for x in custom["x"]])  # with __main__'s SCALE
    assert custom["train_rows"] == [custom["n_train"]]
    assert custom["fingerprint"] == data_fingerprint(make_click_log(3000, n_noise=4, seed=2))
    builtin = doc["builtin"]
    assert builtin["states"] == ["COMPLETE"] * 4 and len(builtin["nodes"]) == 2, builtin
    assert builtin["proba_shape"] == [50, 2] and builtin["proba_ok"]
