"""Sampler comparisons: same controller path for every sampler, spread over seeds, a report, resumable."""

from __future__ import annotations

import json
import math

import pytest

from sparsearch.errors import DataError
from sparsearch.search.compare import best_so_far, compare_samplers, comparison_run, decide, verdict


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


def test_unpaired_ties_get_the_exact_permutation_p_and_three_seeds_cannot_win():
    # the case: scipy's tie-corrected normal Mann-Whitney said "wins" at p = 0.036. Exactly, the observed
    # split is the most extreme of C(6, 3) = 20 equally likely splits of the pooled values: p = 1/20, not < 0.05
    v = verdict([0.9, 0.9, 0.91], [0.8, 0.8, 0.81], maximize=True, names=("tpe", "random"))
    assert v["paired"] is False and v["p_value"] == pytest.approx(1 / 20)
    assert v["outcome"] == "no difference shown" and v["ci95"][0] > 0  # the interval alone would have claimed it
    assert "exact permutation test of the difference of means (20 arrangements)" in v["test"]
    assert v["test"] in v["text"] and "unpaired, 3 vs 3 seeds" in v["text"]


def test_paired_seeds_identical_on_every_seed_show_no_difference_with_a_zero_width_interval():
    same = [0.8981, 0.8659, 0.8663, 0.8659, 0.8902]  # ours and random on fashion_cnn: the same trials, seed by seed
    v = verdict(same, same, maximize=True, names=("ours", "random"), paired=True)
    assert v["ci95"] == [0.0, 0.0] and v["improvement"] == 0.0 and v["p_value"] == 1.0
    assert v["outcome"] == "no difference shown" and "sign-flip" in v["test"] and "paired by seed" in v["text"]
    unpaired = verdict(same, same, maximize=True, names=("ours", "random"))
    assert unpaired["ci95"][1] - unpaired["ci95"][0] > 0.01  # what ignoring the pairing reported


def test_paired_sign_flip_p_equals_the_hand_computed_value():
    # five positive differences of different sizes: only "every sign +" of the 2**5 sign flips reaches the
    # observed mean, so the one-sided p is 1/32
    a, b = [0.81, 0.83, 0.82, 0.86, 0.84], [0.80, 0.80, 0.80, 0.80, 0.80]
    v = verdict(a, b, maximize=True, names=("tpe", "random"), paired=True)
    assert v["p_value"] == pytest.approx(1 / 32) and v["outcome"] == "wins" and v["ci95"][0] > 0
    assert v["test"] == "exact sign-flip permutation test on the per-seed differences (32 arrangements)"
    # fashion_cnn tpe - random by seed: 0, +0.0089, +0.0046, +0.0011, 0. A zero difference flips to itself, so
    # 2 * 2 of the 32 flips reach the observed mean: p = 4/32 = 0.125 (the unpaired rule had said "wins", p = 0.046)
    tpe, rnd = [0.8981, 0.9024, 0.9016, 0.9009, 0.9013], [0.8981, 0.8935, 0.8970, 0.8998, 0.9013]
    fashion = verdict(tpe, rnd, maximize=True, names=("tpe", "random"), paired=True)
    assert fashion["p_value"] == pytest.approx(4 / 32) and fashion["outcome"] == "no difference shown"
    # the direction flips with minimisation, and a loss is reported with its own p
    worse = verdict(a, b, maximize=False, names=("tpe", "random"), paired=True)
    assert worse["outcome"] == "loses" and worse["p_value"] == pytest.approx(1 / 32) and worse["ci95"][1] < 0


def test_verdict_rejects_what_it_cannot_test():
    with pytest.raises(ValueError, match="one value per seed each, got 3 values for 'a' and 2 for 'b'"):
        verdict([0.1, 0.2, 0.3], [0.1, 0.2], maximize=True, names=("a", "b"), paired=True)
    with pytest.raises(ValueError, match="at least one value"):
        verdict([], [0.1], maximize=True, names=("a", "b"))
    with pytest.raises(ValueError, match="finite"):
        verdict([0.1, float("nan")], [0.1, 0.2], maximize=True, names=("a", "b"))


def _runs(tests, digest="d0", name="cmp-tpe"):
    return {seed: {"study_name": f"{name}-s{seed}", "test": t, "best": t, "split_digest": digest}
            for seed, t in enumerate(tests)}


def test_decide_pairs_runs_that_share_seed_and_split_and_names_the_design():
    a, b = _runs([0.81, 0.83, 0.82, 0.86, 0.84]), _runs([0.8] * 5, name="cmp-random")
    v = decide(a, b, names=("tpe", "random"), maximize=True)
    assert v["paired"] is True and v["p_value"] == pytest.approx(1 / 32) and v["seeds"] == [0, 1, 2, 3, 4]
    other = _runs([0.8] * 5, digest="d1", name="cmp-random")
    v = decide(a, other, names=("tpe", "random"), maximize=True)
    assert v["paired"] is False and "unpaired: seed 0's runs do not share a known split digest" in v["text"]
    assert v["p_value"] == pytest.approx(1 / 252)  # exact over C(10, 5) splits of the pooled values
    fewer = {s: r for s, r in b.items() if s < 4}
    assert decide(a, fewer, names=("tpe", "random"), maximize=True)["design"].startswith("unpaired: the arms ran")


def test_a_run_without_a_test_metric_fails_the_comparison_and_is_named():
    a, b = _runs([0.81, 0.83, 0.82]), _runs([0.8, 0.8, 0.8], name="cmp-random")
    b[1]["test"] = None
    with pytest.raises(DataError, match=r"run 'cmp-random-s1' \(random, seed 1\) has no test_auc") as err:
        decide(a, b, names=("tpe", "random"), maximize=True, metric="test_auc")
    assert "\n" not in str(err.value)


def test_comparison_run_keeps_sampler_params_for_the_studys_own_sampler_only():
    from sparsearch.search.spec import StudySection, StudySpec

    base = StudySpec(study=StudySection(name="s", sampler="tpe", sampler_params={"n_startup_trials": 3}),
                     data={"generator": "click_log"})
    tpe, rnd = comparison_run(base, "tpe", 1), comparison_run(base, "random", 1)
    assert (tpe.study.name, tpe.study.seed, tpe.study.sampler_params) == ("s-tpe-s1", 1, {"n_startup_trials": 3})
    assert (rnd.study.name, rnd.study.sampler, rnd.study.sampler_params) == ("s-random-s1", "random", {})


@pytest.mark.usefixtures("ray_session")
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
    # the runs of a seed share its split, so the comparison is paired, and the report says which test it ran
    assert report.verdicts[0]["paired"] is True and "exact sign-flip" in report.verdicts[0]["text"]
    assert report.runs["tpe"][0]["split_digest"] == report.runs["random"][0]["split_digest"] is not None
    html = report.report_path.read_text()
    assert "data:image/png;base64," in html and "Verdict" in html and "cpu_count" in html
    doc = json.loads(report.report_path.with_suffix(".json").read_text())
    assert doc["environment"]["versions"]["optuna"] and "sign-flip" in doc["rule"]
    assert doc["verdicts"][0]["test"].startswith("exact sign-flip")
    assert report.mlflow_run_id is not None
    # different seeds give different trials (the seed reaches the sampler)
    assert report.runs["random"][0]["curve"] != report.runs["random"][1]["curve"]

    again = compare_samplers(path, samplers=["tpe", "random"], seeds=2, results_dir=tmp_path, progress=False)
    assert again.runs["tpe"][0]["curve"] == report.runs["tpe"][0]["curve"]  # read back, not re-run


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
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


@pytest.mark.parametrize("paired", [True, False])
def test_a_single_seed_gets_an_exact_p_and_no_interval(paired):
    # `sparsearch compare --seeds 1`: one value a side, which scipy's permutation_test refuses; the exact test has
    # two arrangements, so p is 1/2 at best and nothing is claimed
    v = verdict([0.9], [0.8], maximize=True, names=("tpe", "random"), paired=paired)
    assert (v["outcome"], v["p_value"]) == ("no difference shown", 0.5)
    assert "2 arrangements" in v["test"] and all(math.isnan(x) for x in v["ci95"])
    assert "no bootstrap interval from one value" in v["text"] and "nan" not in v["text"]
    assert verdict([0.8], [0.9], maximize=True, names=("tpe", "random"), paired=paired)["p_value"] == 1.0
    assert verdict([0.9, 0.91], [0.8], maximize=True, names=("tpe", "random"))["p_value"] == pytest.approx(1 / 3)
