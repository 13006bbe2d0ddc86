"""``sparsearch dashboard``: optuna-dashboard over a journal file, SQLite or PostgreSQL, started and stopped for real."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import optuna
import pytest

from sparsearch._redact import redact
from sparsearch.cli import main
from sparsearch.search.dashboard import open_dashboard
from sparsearch.search.storage import open_storage

POSTGRES = os.environ.get("SPARSEARCH_TEST_POSTGRES_URL")


def make_study(url: str, name: str, n: int = 3) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    study.set_metric_names(["val_auc"])
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dashboard exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            get(url)
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s")


@pytest.mark.parametrize("kind", ["journal", "sqlite", "postgres"])
def test_dashboard_serves_the_study_and_stops_cleanly_on_sigterm(tmp_path, kind):
    if kind == "journal":
        url = f"journal:{tmp_path / 'optuna.journal'}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'optuna.db'}"
    else:
        if not POSTGRES:
            pytest.skip("no PostgreSQL server: set SPARSEARCH_TEST_POSTGRES_URL (bash .ci/postgres.sh start DIR PORT)")
        url = POSTGRES
    name = f"dash-{uuid.uuid4().hex[:8]}"
    make_study(url, name)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sparsearch", "dashboard", name, "--storage", url, "--port",
                             str(port), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/api/studies", proc)
        summaries = json.loads(get(f"http://127.0.0.1:{port}/api/studies")[1])["study_summaries"]
        study_id = next(s["study_id"] for s in summaries if s["study_name"] == name)
        detail = json.loads(get(f"http://127.0.0.1:{port}/api/studies/{study_id}")[1])
        assert len(detail["trials"]) == 3
        assert detail["objective_names"] == ["val_auc"]  # what the dashboard names the objective
        status, page = get(f"http://127.0.0.1:{port}/dashboard")
        assert status == 200 and b"<html" in page.lower()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["study_url"] == f"http://127.0.0.1:{port}/dashboard/studies/{study_id}"
    assert name in doc["studies"] and doc["storage"] == redact(url)  # no password printed
    assert "optuna-dashboard stopped" in err and "interrupted" not in err and "Traceback" not in err
    with pytest.raises(OSError):  # the port is closed
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_open_dashboard_in_process_serves_until_stopped(tmp_path):
    url = f"journal:{tmp_path / 'optuna.journal'}"
    make_study(url, "inproc", n=2)
    board = open_dashboard(storage=url, port=0)
    thread = threading.Thread(target=board.serve, daemon=True)
    thread.start()
    try:
        base = board.url.removesuffix("/dashboard")
        names = [s["study_name"] for s in json.loads(get(f"{base}/api/studies")[1])["study_summaries"]]
        assert names == ["inproc"] and board.studies == ["inproc"] and board.study_url is None
    finally:
        board.stop()
    thread.join(10)
    assert not thread.is_alive()


def run_cli(args, capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_unknown_study_is_one_line_naming_the_studies_there(tmp_path, capsys):
    url = f"journal:{tmp_path / 'optuna.journal'}"
    make_study(url, "quickstart", n=1)
    code, err = run_cli(["dashboard", "quickstar", "--storage", url, "--port", "0"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "no study 'quickstar'" in err and "did you mean 'quickstart'" in err and "studies there: quickstart" in err


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "is not a loopback address"),
    (["--host", "192.168.1.10"], "--allow-remote"),
    (["--port", "70000"], "--port must be in 0..65535"),
])
def test_bad_host_or_port_is_refused_before_serving(tmp_path, capsys, args, message):
    url = f"journal:{tmp_path / 'optuna.journal'}"
    make_study(url, "s", n=1)
    code, err = run_cli(["dashboard", "s", "--storage", url, *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_missing_storage_empty_storage_and_taken_port_are_clear_errors(tmp_path, capsys):
    code, err = run_cli(["dashboard", "--results", str(tmp_path / "nothing")], capsys)
    assert code == 2 and "no study storage at" in err
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    code, err = run_cli(["dashboard", "--storage", empty], capsys)
    assert code == 2 and "has no studies yet" in err
    url = f"journal:{tmp_path / 'optuna.journal'}"
    make_study(url, "s", n=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = run_cli(["dashboard", "s", "--storage", url, "--port", str(taken.getsockname()[1])], capsys)
    assert code == 2 and "cannot listen on 127.0.0.1:" in err and "choose another --port" in err
