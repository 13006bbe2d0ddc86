"""Serving from an environment built from the model's own requirements (issue 31 item 4).

    python bench/serve_virtualenv.py            # a 3-trial quickstart study, then `mlflow models serve --env-manager virtualenv`

``mlflow models serve --env-manager local`` is tested in CI (``tests/search``, slow): it serves from sparsearch's
own environment. This script checks the path a deployment takes: MLflow builds a fresh virtualenv (Python from
pyenv, then ``pip install -r requirements.txt`` of the logged model, which names mlflow, torch, polars, pandas,
numpy and sparsearch, here the wheel the model carries in ``code/``), starts the server in it on 127.0.0.1, and
answers ``/invocations`` with raw rows, including values never seen in training and missing values. The served
probabilities must equal the pyfunc's in this environment to 1e-6. It needs pip to reach a package index (this
machine's mirrors serve it), so it is a script, not a CI test.

Steps: ``sparsearch run quickstart --n-trials 3 --epochs 1`` into a scratch folder under bench/out/serve/, the best
model's URI from its JSON, ``mlflow models serve -m URI --env-manager virtualenv -h 127.0.0.1 -p PORT``, a POST of
8 raw rows of the model's input example (row 0: an unseen value in every column; row 1: nulls in every column;
row 2: nulls in the numeric columns), the same rows through ``mlflow.pyfunc.load_model(URI).predict``. Writes
``bench/results/serve-virtualenv.json``: the requirements, the environment build + server start time, the largest
difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

OUT = _results.OUT / "serve"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(model: Any, uri: str) -> Any:
    """8 raw rows of the model's input example, with unseen values and missing values a client may send."""
    import mlflow
    import pandas as pd

    example = mlflow.models.Model.load(uri).load_input_example(mlflow.artifacts.download_artifacts(uri))
    rows = pd.DataFrame(example).head(8).reset_index(drop=True).copy()
    for c in rows.columns:
        if rows[c].dtype == object:
            rows[c] = rows[c].astype(object)
            rows.loc[0, c] = "never-seen-in-training"
            rows.loc[1, c] = None
        else:
            rows[c] = rows[c].astype("float64")
            rows.loc[0, c] = 987_654_321.0  # far outside every vocabulary and numeric range of training
            rows.loc[1, c] = None
            rows.loc[2 % len(rows), c] = None
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="server port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--start-timeout-s", type=float, default=1500, help="environment build + server start limit")
    args = ap.parse_args()

    from sparsearch._ray import set_ray_env

    set_ray_env()
    OUT.mkdir(parents=True, exist_ok=True)
    results = OUT / "results"
    shutil.rmtree(results, ignore_errors=True)
    run = subprocess.run([sys.executable, "-m", "sparsearch", "run", "quickstart", "--n-trials", "3", "--epochs", "1",
                          "--results", str(results), "--quiet", "--json"], cwd=OUT, capture_output=True, text=True,
                         check=True)
    uri = json.loads(run.stdout)["model_uri"]
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{(results / 'mlflow.db').resolve()}"
    import mlflow
    import pandas as pd

    model_dir = Path(mlflow.artifacts.download_artifacts(uri))
    requirements = (model_dir / "requirements.txt").read_text().split()
    port = args.port or _free_port()
    # the server's own bin folder first: MLflow starts uvicorn from PATH (README, "Serve with MLflow")
    # a fresh environment every run (not MLflow's cache under ~/.mlflow/envs), so the build time is a build's
    env_root = OUT / "envs"
    shutil.rmtree(env_root, ignore_errors=True)
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
           "MLFLOW_ENV_ROOT": str(env_root.resolve())}
    log = open(OUT / "serve.log", "w")
    t0 = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager",
                               "virtualenv", "-h", "127.0.0.1", "-p", str(port)], cwd=OUT, env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5)
                break
            except OSError:
                if server.poll() is not None:
                    raise SystemExit(f"serve_virtualenv.py: the server exited {server.returncode}; see "
                                     f"{OUT / 'serve.log'}") from None
                if time.perf_counter() - t0 > args.start_timeout_s:
                    raise SystemExit(f"serve_virtualenv.py: no server after {args.start_timeout_s:.0f} s") from None
                time.sleep(2)
        started_s = time.perf_counter() - t0
        model = mlflow.pyfunc.load_model(uri)
        rows = _rows(model, uri)
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        served = pd.DataFrame(json.load(urllib.request.urlopen(req, timeout=120))["predictions"])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    local = pd.DataFrame(model.predict(rows))
    served.columns = [str(c) for c in served.columns]
    local.columns = [str(c) for c in local.columns]
    diff = float((served[local.columns].astype(float) - local.astype(float)).abs().max().max())
    build = [line for line in (OUT / "serve.log").read_text().splitlines() if "Creating a new environment" in line
             or "Installing python" in line or "Successfully installed" in line]
    doc = {"model_uri": uri, "requirements": requirements, "rows": len(rows), "columns": list(rows.columns),
           "env_build_and_start_s": started_s, "max_abs_diff": diff, "environment_log": build,
           "served": served.to_dict(orient="list"), "pyfunc": local.to_dict(orient="list")}
    _results.save(doc, key="serve-virtualenv")
    print(f"[serve] environment built and server up in {started_s:.0f} s; served vs pyfunc max |diff| {diff:.2e}",
          file=sys.stderr)
    if diff > 1e-6:
        raise SystemExit(f"serve_virtualenv.py: served probabilities differ from the pyfunc's by {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
