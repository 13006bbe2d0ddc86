"""Sampler comparisons: same controller path for every sampler, spread over seeds, a report, resumable."""

from __future__ import annotations

import json
import math

import pytest

from sparsearch.search.compare import best_so_far, compare_samplers, comparison_run, verdict

pytestmark = pytest.mark.usefixtures("ray_session")


def test_best_so_far_respects_direction_and_gaps():
    assert best_so_far([0.3, None, 0.1, 0.5], maximize=False) == [0.3, 0.3, 0.1, 0.1]
    assert math.isnan(best_so_far([None, 1.0], maximize=True)[0])


def test_verdict_detects_a_clear_winner_and_a_tie():
    win = verdict([0.9, 0.91, 0.92, 0.93, 0.9], [0.5, 0.52, 0.51, 0.49, 0.5], maximize=True, names=("tpe", "random"))
    assert win["improvement"] > 0.3 and win["ci95"][0] > 0 and win["p_value"] < 0.05
    assert win["text"].startswith("tpe beats random")
    tie = verdict([0.5, 0.6, 0.55], [0.52, 0.58, 0.56], maximize=True, names=("tpe", "random"))
    assert tie["text"].startswith("no difference shown") and tie["outcome"] == "no difference shown"
    lower = verdict([0.1, 0.12, 0.11, 0.1, 0.13], [0.5, 0.52, 0.51, 0.5, 0.49], maximize=False, names=("tpe", "random"))
    assert lower["text"].startswith("tpe beats random")


def test_comparison_run_keeps_sampler_params_for_the_studys_own_sampler_only():
    from sparsearch.search.spec import StudySection, StudySpec

    base = StudySpec(study=StudySection(name="s", sampler="tpe", sampler_params={"n_startup_trials": 3}),
                     data={"generator": "click_log"})
    tpe, rnd = comparison_run(base, "tpe", 1), comparison_run(base, "random", 1)
    assert (tpe.study.name, tpe.study.seed, tpe.study.sampler_params) == ("s-tpe-s1", 1, {"n_startup_trials": 3})
    assert (rnd.study.name, rnd.study.sampler, rnd.study.sampler_params) == ("s-random-s1", "random", {})


def test_compare_runs_every_sampler_and_seed_and_writes_a_report(tmp_path):
    path = tmp_path / "study.toml"

    path.write_text(
        '[study]\nname = "cmp"\nn_trials = 4\nobjective = "sparsearch_test_objectives:quadratic"\n'
        'sampler_params = { n_startup_trials = 2 }\n'  # TPE's own option: random search runs without it
        '[data]\ngenerator = "click_log"\nparams = { n_rows = 2000, n_noise = 4, max_cardinality = 200 }\n'
        '[train]\nepochs = 1\n'
    )
    report = compare_samplers(path, samplers=["tpe", "random"], seeds=2, results_dir=tmp_path, progress=False)
    # past its 2 start-up trials TPE samples from its model: not the trials random search draws with the same seed
    # (with TPE's default 10 start-up trials, a 4-trial study would be random search under both names)
    assert report.runs["tpe"][0]["values"] != report.runs["random"][0]["values"]
    assert set(report.runs) == {"tpe", "random"}
    for sampler in ("tpe", "random"):
        assert sorted(report.runs[sampler]) == [0, 1]
        for run in report.runs[sampler].values():
            assert len(run["curve"]) == 4 and run["best"] is not None
    assert len(report.verdicts) == 1 and report.verdicts[0]["b"] == "random"
    html = report.report_path.read_text()
    assert "data:image/png;base64," in html and "Verdict" in html and "cpu_count" in html
    doc = json.loads(report.report_path.with_suffix(".json").read_text())
    assert doc["environment"]["versions"]["optuna"]
    assert report.mlflow_run_id is not None
    # different seeds give different trials (the seed reaches the sampler)
    assert report.runs["random"][0]["curve"] != report.runs["random"][1]["curve"]

    again = compare_samplers(path, samplers=["tpe", "random"], seeds=2, results_dir=tmp_path, progress=False)
    assert again.runs["tpe"][0]["curve"] == report.runs["tpe"][0]["curve"]  # read back, not re-run


@pytest.mark.slow
def test_multi_objective_comparison_uses_hypervolume_and_draws_pareto_fronts(tmp_path):
    path = tmp_path / "mo.toml"
    path.write_text(
        '[study]\nname = "mo"\nn_trials = 5\nobjective = "sparsearch_test_objectives:quadratic"\n'
        'objectives = ["val_auc", "nnz_params"]\n'
        '[data]\ngenerator = "click_log"\nparams = { n_rows = 2000, n_noise = 4, max_cardinality = 200 }\n'
        '[train]\nepochs = 1\n'
    )
    report = compare_samplers(path, samplers=["nsga2", "random"], seeds=2, results_dir=tmp_path, progress=False)
    assert report.objective == "hypervolume" and report.direction == "maximize"
    for runs in report.runs.values():
        for run in runs.values():
            curve = run["curve"]
            assert len(curve) == 5 and curve[-1] > 0
            assert all(b >= a for a, b in zip(curve, curve[1:]))  # hypervolume never shrinks
    assert report.report_path.with_suffix(".png").stat().st_size > 10_000
