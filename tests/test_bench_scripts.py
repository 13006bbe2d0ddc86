"""What every bench/ script keeps to (issue 32, item 6): the package's Ray set-up rather than its own copy of the
Ray environment, argparse with a working --help, no positional sys.argv, results written by bench/_results.py only.
Fast: the scripts are read, or asked for help only."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py"))


def test_there_are_scripts_to_check() -> None:
    assert len(SCRIPTS) >= 14 and BENCH / "bench_peers.py" in SCRIPTS


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_ray_is_set_up_by_the_package(path: Path) -> None:
    text = path.read_text()
    # sparsearch._ray.connect_ray starts or joins Ray; set_ray_env / RAY_ENV hold its environment
    assert not re.search(r"\bray\.init\(", text), f"{path.name}: use sparsearch._ray.connect_ray"
    for key in ("RAY_USAGE_STATS_ENABLED", "RAY_enable_metrics_collection", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
                "RAY_AUTH_MODE"):
        assert key not in text, f"{path.name} spells {key}: use sparsearch._ray.set_ray_env"


def test_private_ray_env_adds_the_token_setting_and_user_values_win(monkeypatch) -> None:
    from sparsearch._ray import PRIVATE_RAY_ENV, RAY_ENV, set_ray_env

    for key in {**RAY_ENV, **PRIVATE_RAY_ENV}:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user's value is kept
    set_ray_env()
    assert "RAY_AUTH_MODE" not in os.environ and os.environ["RAY_enable_metrics_collection"] == "0"
    set_ray_env(private=True)
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and os.environ["RAY_USAGE_STATS_ENABLED"] == "1"


def _argv_by_position(tree: ast.AST) -> list[int]:
    """Lines that read ``sys.argv[<n>]`` (n > 0) or ``len(sys.argv)``; the program's name ``sys.argv[0]``, slices
    and child programs inside strings do not count."""
    def is_argv(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "argv" and isinstance(node.value, ast.Name) \
            and node.value.id == "sys"

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and is_argv(node.value) and not isinstance(node.slice, ast.Slice) \
                and not (isinstance(node.slice, ast.Constant) and node.slice.value == 0):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "len" and node.args \
                and is_argv(node.args[0]):
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_script_reads_its_arguments_by_position(path: Path) -> None:
    assert _argv_by_position(ast.parse(path.read_text())) == [], f"{path.name}: use argparse"


def test_the_position_check_finds_a_positional_read() -> None:
    assert _argv_by_position(ast.parse("import sys\nn = int(sys.argv[1]) if len(sys.argv) > 1 else 3")) == [2, 2]
    assert _argv_by_position(ast.parse("import sys\nrest = sys.argv[1:]\ncode = 'sys.argv[1]'\nme = sys.argv[0]")) == []


MAINS = [p for p in SCRIPTS if '__name__ == "__main__"' in p.read_text()]


@pytest.mark.parametrize("path", MAINS, ids=lambda p: p.name)
def test_help_works(path: Path) -> None:
    proc = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=300,
                          cwd=path.parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("usage: ") and "--help" in proc.stdout


@pytest.mark.parametrize("path", [p for p in SCRIPTS if p.name != "_results.py"], ids=lambda p: p.name)
def test_results_are_written_by_the_one_writer(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"write_text\(\s*json\.dumps|json\.dump\(", text), f"{path.name}: use bench/_results.py"


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_machine_paths(path: Path) -> None:
    # data comes from --data-root / $SPARSEARCH_DATA_ROOT (bench/_results.data_root), tools from PATH
    assert not re.search(r"[\"'](/work|/usr|/home|/root|/opt)/", path.read_text()), path.name


PRIVATE_ALLOWED = {("sparsearch._ray", "connect_ray"), ("sparsearch._ray", "set_ray_env")}


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_private_package_names(path: Path) -> None:
    private = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sparsearch"):
            for alias in node.names:
                if any(part.startswith("_") for part in [*node.module.split("."), alias.name]):
                    private.add((node.module, alias.name))
    assert private <= PRIVATE_ALLOWED, f"{path.name} imports private names: {sorted(private - PRIVATE_ALLOWED)}"
