"""Security (issue 7, requirement 5): study files are data, credentials never leak, paths stay in the results folder.

Loopback binding of the servers sparsearch starts (Ray, MLflow UI) is tested in tests/search/test_cluster.py and
tests/test_cli.py; this file covers what those do not.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from sparsearch.errors import SpecError

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["search", "features", "spaces", "sparsearch", "studies"]
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"),
                   ("marshal", "loads"), ("yaml", "load"), ("torch", "load"), ("shelve", "open"), ("dill", "load")}
# The only places that import code by a name that is not a literal: the documented custom objective, and the
# packages' lazy attribute tables (module names from a fixed dict in the source).
IMPORT_BY_NAME_ALLOWED = {("search/worker.py", "_resolve_objective"), ("search/__init__.py", "__getattr__"),
                          ("search/spec/__init__.py", "__getattr__"),
                          ("sparsearch/__init__.py", "__getattr__"),
                          # the wheel a logged model carries: the installed folders of a fixed tuple of subpackages
                          ("search/requirements.py", "build_wheel"),
                          # the export extra's packages, named by literals at each call (onnx, onnxruntime)
                          ("spaces/portable.py", "_require")}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node
            while func in parents and not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                func = parents[func]
            yield node, getattr(func, "name", "<module>")


def _weights_only(call: ast.Call) -> bool:
    """``torch.load(..., weights_only=True)``: torch's restricted unpickler (tensors, containers and plain values
    only; it refuses to build any other object), the one form of ``torch.load`` the packages may use."""
    f = call.func
    return (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) == ("torch", "load")
            and any(
        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords))


def test_no_eval_exec_or_unpickling_in_the_packages():
    found = []
    import_by_name = set()
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for call, where in _calls(path):
                f = call.func
                if isinstance(f, ast.Name) and f.id in FORBIDDEN_NAMES:
                    found.append(f"{rel}:{call.lineno} {f.id}(")
                if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                        (f.value.id, f.attr) in FORBIDDEN_ATTRS and not _weights_only(call):
                    found.append(f"{rel}:{call.lineno} {f.value.id}.{f.attr}(")
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name == "import_module":
                    import_by_name.add((rel, where))
    assert found == []
    assert import_by_name <= IMPORT_BY_NAME_ALLOWED, import_by_name - IMPORT_BY_NAME_ALLOWED


def test_study_files_are_parsed_as_toml_only(tmp_path):
    """A study file that looks like Python is not run: it is a TOML error, and nothing is executed."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.toml"
    path.write_text(f"import os\nos.system('touch {marker}')\n")
    from sparsearch.search.spec import load_study

    with pytest.raises(SpecError, match="is not valid TOML"):
        load_study(path)
    assert not marker.exists()
    spec = load_study({"data": {"generator": "click_log"}})
    assert spec.study.objective is None  # no code is imported unless [study] objective is set


def test_custom_objective_must_be_an_explicit_module_function():
    from sparsearch.search.spec import load_study

    for bad in ("os.system('x')", "os", "a:b:c", ":f", "m:"):
        with pytest.raises(SpecError, match="module:function"):
            load_study({"study": {"objective": bad}, "data": {"generator": "click_log"}})


def test_a_journal_url_cannot_overwrite_another_file(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me\n")
    from sparsearch.search.storage import open_storage

    with pytest.raises(SpecError, match="is not an Optuna journal"):
        open_storage(f"journal:{precious}")
    assert precious.read_text() == "keep me\n"


# -- credentials ------------------------------------------------------------------------------------------------------
SECRET = "S3cr3t-Pa55w0rd-xyzzy"


@pytest.fixture(scope="module")
def secret_postgres_url():
    """A PostgreSQL role whose password is SECRET, on the test server (created once)."""
    url = os.environ.get("SPARSEARCH_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must provide SPARSEARCH_TEST_POSTGRES_URL (see .ci/run)")
        pytest.skip("no PostgreSQL server: set SPARSEARCH_TEST_POSTGRES_URL (bash .ci/postgres.sh start DIR PORT)")
    import psycopg  # psycopg 3: what the dev and postgres extras install

    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = 'sparsearch_reltest'")
        if cur.fetchone() is None:
            cur.execute(f"CREATE ROLE sparsearch_reltest LOGIN PASSWORD '{SECRET}'")
        cur.execute("SELECT 1 FROM pg_database WHERE datname = 'sparsearch_reltest'")
        if cur.fetchone() is None:
            cur.execute("CREATE DATABASE sparsearch_reltest OWNER sparsearch_reltest")
    parts = urlsplit(url)
    netloc = f"sparsearch_reltest:{SECRET}@{parts.hostname}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, "/sparsearch_reltest", "", ""))


@pytest.mark.postgres
@pytest.mark.slow
def test_storage_password_never_appears_in_output_logs_or_mlflow(secret_postgres_url, tmp_path):
    study = tmp_path / "secret.toml"
    study.write_text(f"""
[study]
name = "secret-{os.getpid()}"
n_trials = 3
objective = "reliability_objectives:instant"
pruner = "none"
[data]
generator = "click_log"
params = {{ n_rows = 500, n_noise = 2, max_cardinality = 50 }}
prefilter = "none"
[execution]
workers = 1
[tracking]
log_model = false
[storage]
url = "{secret_postgres_url}"
""")
    results = tmp_path / "res"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "search"),
                                                           os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, "-m", "sparsearch", "run", str(study), "--results", str(results),
                           "--json", "--verbose"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert SECRET not in proc.stdout and SECRET not in proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["n_complete"] == 3 and "***" in doc["storage"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=doc["tracking_uri"])
    exp = client.get_experiment_by_name(doc["study_name"])
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 4
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values(), *run.data.params, *run.data.tags]:
            assert SECRET not in value
    assert any("***" in v for r in runs for v in [*r.data.params.values(), *r.data.tags.values()])
    for path in results.rglob("*"):  # the MLflow store, artifacts (trials.csv, plots), caches
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    shown = subprocess.run([sys.executable, "-m", "sparsearch", "show", doc["study_name"], "--storage",
                            secret_postgres_url, "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert SECRET not in shown.stdout + shown.stderr


def test_wrong_password_error_names_the_server_not_the_password(secret_postgres_url, capsys):
    from sparsearch.cli import main

    bad = secret_postgres_url.replace(SECRET, SECRET + "-wrong")
    assert main(["show", "x", "--storage", bad]) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "cannot open storage" in err and "***" in err
    assert len(err.strip().splitlines()) == 1
