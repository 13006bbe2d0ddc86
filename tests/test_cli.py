"""The `sparsearch` command line: exit codes, one-line errors, --json documents, the quickstart end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sparsearch.cli import main


def cli(*args: str, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "sparsearch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_version():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.startswith("sparsearch 0.")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run"], "no study given: name one"),
        (["run", "--data", "mine.parquet"], "missing --target (target=)"),
        (["run", "quickstart", "--n-trials", "many"], "invalid int value: 'many'"),
        (["run", "quickstart", "--quiet", "--verbose"], "not allowed with argument"),
        (["run", "no-such-study"], "unknown study"),
        (["run", "quickstart", "--n-trials", "0"], "[study] n_trials"),
        (["run", "quickstart", "--sampler", "tpee"], "did you mean 'tpe'"),
        (["run", "quickstart", "--set", "train.epochz=1"], "unknown key 'epochz' in [train] (did you mean 'epochs'?)"),
        (["run", "quickstart", "--set", "nonsense"], "expected SECTION.KEY=VALUE"),
        (["rank", "missing.parquet", "--target", "y"], "missing.parquet"),
        (["show", "nothing-here"], "no study storage"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, expected, tmp_path, capsys):
    code = main([*args] + (["--results", str(tmp_path)] if args[0] in ("show",) else []))
    err = capsys.readouterr().err
    assert code == 2 if isinstance(code, int) else False
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], err


def test_argparse_errors_exit_2_one_line_in_a_real_process():
    line = one_line_error(cli("frobnicate"))
    assert line.startswith("sparsearch: error:")


def test_unreachable_storage_and_unwritable_results(tmp_path):
    line = one_line_error(cli("run", "quickstart", "--storage", "postgresql://u:secret@127.0.0.1:9/db",
                              "--results", str(tmp_path), "--n-trials", "1"))
    assert "cannot open storage" in line and "secret" not in line and "***" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_line_error(cli("run", "quickstart", "--results", str(blocker / "sub")))
    assert "not writable" in line
    line = one_line_error(cli("run", "quickstart", "--storage", "ftp://nowhere", "--results", str(tmp_path)))
    assert "not understood" in line


def test_ui_dry_run_binds_loopback(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
    proc = cli("ui", "--results", str(tmp_path), "--dry-run", "--json")
    doc = json.loads(proc.stdout)
    assert doc["command"][doc["command"].index("--host") + 1] == "127.0.0.1"
    assert doc["tracking_uri"].endswith("mlflow.db")


@pytest.mark.slow
def test_quickstart_through_the_cli_on_local_ray(tmp_path):
    """The README's main job at tiny size: a real local Ray, 3 trials, one epoch, --json, then `show`."""
    proc = cli("run", "quickstart", "--n-trials", "3", "--epochs", "1", "--set", "data.params.n_rows=4000",
               "--results", str(tmp_path / "res"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    for key in ("study_name", "storage", "tracking_uri", "mlflow_parent_run_id", "n_complete", "n_pruned",
                "n_failed", "best_values", "best_params", "elapsed_s", "trials"):
        assert key in doc
    assert doc["study_name"] == "quickstart" and len(doc["trials"]) == 3
    assert doc["n_complete"] + doc["n_pruned"] + doc["n_failed"] == 3 and doc["n_complete"] >= 1
    assert len(doc["best_values"]) == 1 and 0.0 <= doc["best_values"][0] <= 1.0
    for t in doc["trials"]:
        assert {"number", "state", "values", "params", "user_attrs"} <= set(t)
        if t["state"] == "COMPLETE":
            assert {"target_sparsity", "realized_sparsity"} <= set(t["user_attrs"])
    assert "done:" in proc.stderr and "ETA" in proc.stderr  # progress lines

    shown = cli("show", "quickstart", "--results", str(tmp_path / "res"), "--json")
    assert shown.returncode == 0, shown.stderr
    stored = json.loads(shown.stdout)
    assert [(t["number"], t["state"]) for t in stored["trials"]] == [(t["number"], t["state"]) for t in doc["trials"]]
    assert stored["info"]["n_mlflow_child_runs"] == 3

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=doc["tracking_uri"])
    exp = client.get_experiment_by_name("quickstart")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.run_id for r in parents] == [doc["mlflow_parent_run_id"]]
    assert sum(r.data.tags.get("mlflow.parentRunId") == doc["mlflow_parent_run_id"] for r in runs) == 3

    text = cli("show", "quickstart", "--results", str(tmp_path / "res"))
    assert "3 trials" in text.stdout and "val_auc" in text.stdout


def test_json_stdout_carries_only_the_document(monkeypatch, capsys):
    """Anything printed while a --json command runs (Ray prints cluster warnings to stdout) goes to stderr."""
    import sparsearch.cli as cli_module

    real = cli_module.COMMANDS["studies"]

    def noisy(args):
        print("(raylet) WARNING: 8 PYTHON worker processes have been started")
        return real(args)

    monkeypatch.setitem(cli_module.COMMANDS, "studies", noisy)
    before = sys.stdout
    assert main(["studies", "--json"]) == 0
    assert sys.stdout is before  # restored afterwards
    captured = capsys.readouterr()
    assert any(s["name"] == "quickstart" for s in json.loads(captured.out))
    assert "(raylet) WARNING" in captured.err


EXPECTED_OVERRIDE_FLAGS = [  # the flags `run` and `compare` had when the CLI typed them by hand
    "--study-name NAME", "--n-trials N", "--timeout SECONDS", "--sampler NAME", "--pruner NAME", "--seed N",
    "--warm-start WHAT",  # issue 30
    "--data PATH", "--target COL", "--top-k K", "--epochs N", "--workers N", "--ray-address ADDR",
    "--storage URL", "--tracking-uri URI",
]


@pytest.mark.parametrize("command", ["run", "compare"])
def test_override_flags_are_generated_from_the_override_table(command):
    from sparsearch.cli import build_parser
    from sparsearch.search.spec import OVERRIDES

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    parser = sub.choices[command]
    group = next(g for g in parser._action_groups if g.title == "overrides (any study-file field)")
    flags = [f"{a.option_strings[0]} {a.metavar}" for a in group._group_actions if a.dest != "set"]
    assert flags == EXPECTED_OVERRIDE_FLAGS
    for action in group._group_actions:
        if action.dest == "set":
            continue
        o = OVERRIDES[action.dest]
        assert (action.type or str) is o.type and action.help == o.help and o.help.startswith(f"[{o.section}] {o.key}")
    help_text = parser.format_help()
    assert "[study] sampler (tpe, random, nsga2, ...)" in help_text
    assert "[data] path: your parquet/CSV file, folder or glob" in help_text
    # a flag reaches load_study under the table's name, typed
    args = build_parser().parse_args([command, "quickstart", "--n-trials", "3", "--top-k", "4", "--timeout", "2.5"])
    from sparsearch.cli import _overrides

    assert _overrides(args) == {"n_trials": 3, "top_k": 4, "timeout": 2.5}
