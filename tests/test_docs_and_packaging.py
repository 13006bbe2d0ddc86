"""README stays true (generated references in sync, the Python example runs); the wheel holds every part."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_cli_and_study_references_are_in_sync():
    from sparsearch._docs import render

    text = README.read_text(encoding="utf-8")
    assert render(text) == text, "README.md is out of date: run `python -m sparsearch._docs README.md`"


def test_readme_two_commands_are_the_ones_ci_runs():
    text = README.read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", text, re.S)
    assert blocks[0].strip().endswith("sparsearch run quickstart")
    assert blocks[1].strip() == "python -m pytest -q"
    assert "python -m pytest -q" in ci and "torch==2.13.0" in ci
    # the default run leaves out the slow tests; CI runs the whole suite and lists every skip with its reason
    full = re.search(r"^python -m pytest -q .*$", ci, re.M).group(0)
    assert '-m "slow or not slow"' in full and "-rs" in full
    assert 'python -m pytest -q -m "slow or not slow"' in text  # and the README says how


@pytest.mark.usefixtures("ray_session")
def test_readme_python_example_runs(tmp_path, monkeypatch):
    from sparsearch.features import make_click_log

    make_click_log(5000, n_noise=6, seed=1).write_parquet(tmp_path / "clicks.parquet")
    code = re.search(r"```python\n(.*?)\n```", README.read_text(encoding="utf-8"), re.S).group(1)
    assert len(code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    try:
        exec(compile(code, "README.md", "exec"), namespace)
    finally:
        namespace["mlflow"].set_tracking_uri(None)  # the example points MLflow at its store: not the next test's
    result = namespace["result"]
    assert len(result.trials) == 4 and result.mlflow_parent_run_id
    assert (tmp_path / "sparsearch-results" / "optuna.journal").exists()
    # the best model, loaded as the README does, predicts raw rows of the study's data
    proba = namespace["model"].predict(pl.read_parquet(tmp_path / "clicks.parquet").head(50).to_pandas())
    assert list(proba.columns) == ["0", "1"] and proba.shape == (50, 2)
    assert ((proba >= 0) & (proba <= 1)).all().all() and (abs(proba.sum(axis=1) - 1) < 1e-9).all()


def test_wheel_contains_every_subpackage_and_study(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
                           str(ROOT)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("sparsearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in (("sparsearch", "sparsearch"), ("sparsearch/features", "features"),
                            ("sparsearch/spaces", "spaces"), ("sparsearch/search", "search"),
                            ("sparsearch/studies", "studies")):
        for source in (ROOT / folder).rglob("*.py"):  # sub-packages (search/spec, search/storage) too
            inner = source.relative_to(ROOT / folder).as_posix()
            assert f"{package}/{inner}" in names, f"{package}/{inner} missing from the wheel"
    for study in (ROOT / "studies").glob("*.toml"):
        assert f"sparsearch/studies/{study.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def _any_in_annotations(path: Path) -> int:
    """How many times ``Any`` appears in the annotations of one module (arguments, returns, annotated names)."""
    import ast

    tree = ast.parse(path.read_text())
    annotations = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            annotations += [arg.annotation for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]
                            if arg is not None and arg.annotation is not None]
            annotations += [node.returns] if node.returns is not None else []
        elif isinstance(node, ast.AnnAssign):
            annotations.append(node.annotation)
    count = 0
    for ann in annotations:
        for sub in ast.walk(ann):
            if isinstance(sub, ast.Name) and sub.id == "Any" or isinstance(sub, ast.Attribute) and sub.attr == "Any":
                count += 1
            elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):  # a quoted annotation
                count += len(re.findall(r"\bAny\b", sub.value))
    return count


# Issue #32 item 5: at most 40 `Any` annotations in search/ (255 when filed by its own count; 348 counted this way
# when the check was added, 277 once the first typing pass and the refit and warm-start features had landed). The
# three left are MLflow's own `PythonModel.predict` signature in search/model.py (context, params, return), which
# MLflow reads at runtime to infer the model's signature. The ceiling only goes down: lower it when a change
# removes some, never raise it.
SEARCH_ANY_CEILING = 3


def test_any_annotations_in_search_stay_under_the_ceiling():
    counts = {p.relative_to(ROOT).as_posix(): _any_in_annotations(p) for p in sorted((ROOT / "search").rglob("*.py"))}
    assert "search/loop.py" in counts and len(counts) >= 30  # the walk found the package
    total = sum(counts.values())
    worst = sorted(counts.items(), key=lambda kv: -kv[1])[:5]
    assert total <= SEARCH_ANY_CEILING, f"{total} Any annotations in search/ (ceiling {SEARCH_ANY_CEILING}): {worst}"


def test_any_counter_counts_arguments_returns_names_and_quoted_annotations(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import Any\nimport typing\n"
                   "def f(a: Any, *b: 'dict[str, Any]', c: int = 1, **d: typing.Any) -> list[Any]:\n"
                   "    x: Any = 1\n    y = Any\n    return [x]\n")
    assert _any_in_annotations(src) == 5


def test_every_type_ignore_names_its_error_code_and_a_reason():
    pattern = re.compile(r"#\s*type:\s*ignore(?P<rest>.*)$")
    bad = []
    for folder in ("search", "sparsearch", "features", "spaces", "studies"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                m = pattern.search(line)
                if m and not re.match(r"\[[a-z-]+(, *[a-z-]+)*\]\s+#\s*\S", m.group("rest")):
                    bad.append(f"{path.relative_to(ROOT)}:{n}")
    assert not bad, f"`# type: ignore[code]  # reason` is the allowed form; these lack a code or a reason: {bad}"
