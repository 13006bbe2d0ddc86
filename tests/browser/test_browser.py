"""What a user sees after a study, checked in headless Chromium: MLflow's UI, optuna-dashboard, a compare report.

Every check reads the page's DOM or text (run names, chart traces, table cells, image sizes), and every page must
load without script errors, console errors or failed requests (one known, harmless MLflow request excepted).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest
from _browser import SPARSEARCH, free_port, serving
from optuna.trial import TrialState

pytestmark = [pytest.mark.slow, pytest.mark.browser]

MLFLOW_HARMLESS = ("/ajax-api/2.0/mlflow/users/current", "/ajax-api/2.0/mlflow/artifacts/presigned-download-url")
"""MLflow's UI asks who is logged in (a server without authentication answers 404) and, from mlflow 3.18, for a
presigned artifact URL (a server that proxies its artifacts answers 501; the trials table still renders)."""

CHART_CARD_JS = """(name) => {
  for (const plot of document.querySelectorAll('.js-plotly-plot')) {
    let card = plot;  // the largest ancestor holding this chart alone: the chart's card, with its title
    while (card.parentElement && card.parentElement.querySelectorAll('.js-plotly-plot').length === 1) {
      card = card.parentElement;
    }
    if (!card.innerText.split('\\n').includes(name)) continue;
    const lines = Array.from(card.querySelectorAll('.scatterlayer path.js-line'))
      .filter(p => (p.getAttribute('d') || '').length > 10);
    return {lines: lines.length, points: card.querySelectorAll('.scatterlayer path.point').length};
  }
  return null;
}"""

TABLE_JS = """() => {
  const t = document.querySelector('[role=table]');
  if (!t) return null;
  return Array.from(t.querySelectorAll('[role=row]')).map(
    r => Array.from(r.querySelectorAll('[role=cell],[role=columnheader]')).map(c => c.innerText.trim()));
}"""


@pytest.fixture(scope="module", autouse=True)
def _browser_first(browser):
    """Skip (no Chromium) before running a study or starting a server for nothing."""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory, ray_session):
    """A finished tiny study (4 real trials) with its journal, MLflow store and artifacts in one folder."""
    from sparsearch.search.controller import run_study
    from sparsearch.search.spec import load_study

    results = tmp_path_factory.mktemp("after-study")
    raw = {
        "study": {"name": "tiny-ui", "n_trials": 4, "seed": 0},
        "data": {"generator": "click_log", "params": {"n_rows": 3000, "n_noise": 6, "max_cardinality": 500},
                 "top_k": 6},
        "space": {"depth": [1, 2], "width": [8, 32]},
        "train": {"epochs": 2, "batch_size": 256},
        "execution": {"workers": 2, "heartbeat_interval": 0.5},
    }
    result = run_study(load_study(raw), results_dir=results, progress=False)
    assert result.count(TrialState.COMPLETE) >= 2
    return results, result


@pytest.fixture(scope="module")
def mlflow_ui(tiny_study, tmp_path_factory):
    """``sparsearch ui`` over the study's results on a free port; yields the experiment's link that it prints."""
    results, _ = tiny_study
    port = free_port()
    cmd = [*SPARSEARCH, "ui", "--results", str(results), "--port", str(port), "--workers", "1"]
    printed = json.loads(subprocess.run([*cmd, "--dry-run", "--json"], capture_output=True, text=True,
                                        check=True).stdout)
    link = printed["experiments"]["tiny-ui"]
    # MLflow's background job runner (GenAI scorers) is not needed to browse runs; off, the server starts faster
    log = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    with serving(cmd, f"http://127.0.0.1:{port}/health", log, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}):
        yield link, f"http://127.0.0.1:{port}"


def test_mlflow_experiment_opens_in_model_training_view_with_parent_and_child_runs(tiny_study, mlflow_ui, watched):
    _, result = tiny_study
    link, _ = mlflow_ui
    assert "workflowType=machine_learning" in link
    w = watched()
    page = w.page
    page.goto(link)
    parent = result.mlflow_parent_run_id
    row = page.locator(f'[role=row][row-id="{parent}"]').first  # the grid's pinned part: name and expander
    row.wait_for()
    parent_name = row.locator("a").first.inner_text()
    assert parent_name.startswith("tiny-ui-")
    # the model-training view: its sidebar (Runs, Models, Model registry), none of the GenAI pages
    nav = page.locator("aside").inner_text()
    assert "Model registry" in nav and "Runs" in nav
    assert "Agent versions" not in nav and "Judges" not in nav
    # the parent row expands into one child run per trial
    row.locator('button[data-component-id*="runnamecellrenderer"]').click()
    for t in result.trials:
        page.get_by_role("link", name=f"trial-{t.number}", exact=True).wait_for()
    assert w.problems(*MLFLOW_HARMLESS) == []


def test_mlflow_parent_run_chart_shows_the_search_progress_and_lists_its_children(tiny_study, mlflow_ui, watched):
    from sparsearch.search.tracking import experiment_ui_url

    _, result = tiny_study
    _, base = mlflow_ui
    w = watched()
    page = w.page
    experiment_id = mlflow_ui[0].split("/experiments/")[1].split("/")[0]
    page.goto(experiment_ui_url(base, experiment_id, result.mlflow_parent_run_id))
    page.get_by_text("Child runs", exact=True).wait_for()
    for t in result.trials:  # the list of child runs loads after the heading (slowly on a loaded machine)
        page.get_by_text(f"trial-{t.number}", exact=True).first.wait_for()
    text = w.text()
    assert "best_trials" in text and "optuna.study_name" in text
    page.get_by_text("Model metrics", exact=True).first.click()
    finished = sum(t.state.is_finished() for t in result.trials)
    card = page.wait_for_function(
        f"(() => {{ const r = ({CHART_CARD_JS})('best_so_far_val_auc'); return r && r.lines > 0 ? r : null }})()")
    # one point per finished trial (step = trial number) on a drawn line
    assert card.json_value()["points"] == finished
    assert w.problems(*MLFLOW_HARMLESS) == []


def test_mlflow_trials_table_renders_with_every_trial_and_its_parameters(tiny_study, mlflow_ui, watched):
    from sparsearch.search.tracking import experiment_ui_url

    _, result = tiny_study
    _, base = mlflow_ui
    w = watched()
    page = w.page
    experiment_id = mlflow_ui[0].split("/experiments/")[1].split("/")[0]
    page.goto(experiment_ui_url(base, experiment_id, result.mlflow_parent_run_id).replace(
        "?", "/artifacts?"))
    page.get_by_text("trials_table.json", exact=True).first.click()
    rows = page.wait_for_function(f"(() => {{ const r = ({TABLE_JS})(); return r && r.length > 1 ? r : null }})()"
                                  ).json_value()
    header, body = rows[0], rows[1:]
    assert "number" in header and "value_val_auc" in header and "params_arch/depth" in header
    assert len(body) == len(result.trials)
    col = {name: i for i, name in enumerate(header)}
    # rows may have a leading selection cell: align on the end
    shift = len(body[0]) - len(header)
    by_number = {int(r[col["number"] + shift]): r for r in body}
    for t in result.trials:
        cells = by_number[t.number]
        assert cells[col["params_arch/width_l0"] + shift] == str(t.params["arch.width_l0"])
        assert cells[col["state"] + shift] == t.state.name
    assert w.problems(*MLFLOW_HARMLESS) == []


def test_optuna_dashboard_lists_the_trials_under_the_objective_name(tiny_study, watched, tmp_path):
    results, result = tiny_study
    port = free_port()
    cmd = [*SPARSEARCH, "dashboard", "tiny-ui", "--results", str(results), "--port", str(port)]
    with serving(cmd, f"http://127.0.0.1:{port}/api/studies", tmp_path / "dashboard.log"):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
            ids = {s["study_name"]: s["study_id"] for s in json.load(r)["study_summaries"]}
        w = watched()
        page = w.page
        page.goto(f"http://127.0.0.1:{port}/dashboard")
        page.get_by_text("tiny-ui").first.wait_for()  # the list of studies
        page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{ids['tiny-ui']}")
        page.get_by_text("val_auc").first.wait_for()  # the history plot's axis: the metric's name
        assert "Objective 0" not in w.text()
        page.goto(f"http://127.0.0.1:{port}/dashboard/studies/{ids['tiny-ui']}/trials")
        page.get_by_text(f"{len(result.trials)} Trials").wait_for()
        text = w.text()
        for t in result.trials:
            assert f"Trial {t.number}" in text
        assert "Best Trial" in text
        assert w.problems() == []


def test_compare_report_renders_every_plot_without_errors(watched, tmp_path, ray_session):
    from sparsearch.search.compare import compare_samplers

    path = tmp_path / "cmp.toml"
    path.write_text(
        '[study]\nname = "cmp-ui"\nn_trials = 3\nobjective = "sparsearch_test_objectives:quadratic"\n'
        '[data]\ngenerator = "click_log"\nparams = { n_rows = 2000, n_noise = 4, max_cardinality = 200 }\n'
        '[train]\nepochs = 1\n'
    )
    report = compare_samplers(path, samplers=["tpe", "random"], seeds=2, results_dir=tmp_path, progress=False)
    w = watched()
    page = w.page
    page.goto(report.report_path.resolve().as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, "
                           "w: i.naturalWidth, h: i.naturalHeight}))")
    assert images, "the report has no plot"
    for img in images:  # a broken image is complete with a natural size of 0
        assert img["complete"] and img["w"] > 300 and img["h"] > 200, img
    text = w.text()
    assert "Sampler comparison: cmp-ui" in text and "val_auc" in text
    assert report.verdicts[0]["text"] in text
    for sampler in ("tpe", "random"):
        assert sampler in text
    assert w.problems() == []
