"""Study-file validation: typed sections, one-line errors naming the field, overrides."""

from __future__ import annotations

import pytest

from sparsearch.errors import SpecError
from sparsearch.search.spec import bundled_studies, load_study, parse_study

BASE = {"data": {"generator": "click_log", "params": {"n_rows": 2000}}}


def with_(section: str, **fields):
    raw = {k: dict(v) for k, v in BASE.items()}
    raw.setdefault(section, {}).update(fields)
    return raw


def test_bundled_quickstart_loads_with_documented_values():
    spec = load_study("quickstart")
    assert spec.study.name == "quickstart"
    assert spec.study.objectives == ["val_auc"]
    assert spec.study.resolved_directions() == ["maximize"]
    assert spec.study.n_trials >= 12
    assert spec.execution.workers == 2
    assert spec.data.prefilter == "adjusted-mi"
    assert "quickstart" in bundled_studies()


def test_overrides_replace_fields_and_keep_the_rest():
    spec = load_study("quickstart", n_trials=3, sampler="random", seed=7, **{"train.epochs": 1})
    assert (spec.study.n_trials, spec.study.sampler, spec.study.seed, spec.train.epochs) == (3, "random", 7, 1)
    assert spec.data.generator == "click_log"


def test_overriding_the_sampler_or_pruner_drops_the_files_options_for_the_old_one():
    # fashion_cnn tunes TPE (n_startup_trials) and Hyperband (min_resource, reduction_factor): `--sampler random`
    # and `--pruner median` run those with their defaults instead of failing on options they do not take
    spec = load_study("fashion_cnn", sampler="random", pruner="median")
    assert (spec.study.sampler_params, spec.study.pruner_params) == ({}, {})
    spec = load_study("fashion_cnn", sampler="tpe", pruner="hyperband")  # the same choice keeps them
    assert spec.study.sampler_params == {"n_startup_trials": 4} and spec.study.pruner_params["reduction_factor"] == 3
    spec = load_study("fashion_cnn", sampler="random", **{"study.pruner_params": {"min_resource": 2}})
    assert spec.study.sampler_params == {} and spec.study.pruner_params["min_resource"] == 2
    raw = with_("study", sampler_params={"n_startup_trials": 2})  # no sampler named: the default, tpe
    from sparsearch.search.spec import apply_overrides

    assert "sampler_params" not in apply_overrides(raw, {"sampler": "random"})["study"]
    with pytest.raises(SpecError, match="sampler_params for 'random'"):  # options given with it are checked
        parse_study(apply_overrides(raw, {"sampler": "random", "study.sampler_params": {"n_startup_trials": 2}}))


def test_data_override_switches_from_generator_to_path():
    spec = load_study("quickstart", data="flights.parquet", target="late")
    assert spec.data.path == "flights.parquet" and spec.data.generator is None and spec.data.target == "late"


def test_overrides_walk_nested_tables_and_name_a_value_that_is_not_one():
    from sparsearch.search.spec import apply_overrides

    raw = apply_overrides(BASE, {"data.params.extra.depth": 2})
    assert raw["data"]["params"] == {"n_rows": 2000, "extra": {"depth": 2}}
    assert BASE["data"]["params"] == {"n_rows": 2000}  # the input is copied, never changed
    with pytest.raises(SpecError, match=r"^data\.params\.n_rows must be a table to set 'params\.n_rows\.x'$"):
        apply_overrides(BASE, {"data.params.n_rows.x": 1})
    # --data on a study whose [data] is not a table: the one-line error, not an AttributeError
    with pytest.raises(SpecError, match=r"^\[data\] must be a table, got str$"):
        load_study({"data": "click_log"}, data="flights.parquet")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (with_("study", n_trails=3), "unknown key 'n_trails' in [study] (did you mean 'n_trials'?)"),
        ({**BASE, "studdy": {}}, "unknown section [studdy] (did you mean [study]?)"),
        (with_("study", n_trials="many"), "[study] n_trials"),
        (with_("study", n_trials=0), "[study] n_trials: Input should be greater than or equal to 1"),
        (with_("study", sampler="tpee"), "unknown sampler 'tpee' (did you mean 'tpe'?)"),
        (with_("study", pruner="medain"), "unknown trial pruner 'medain' (did you mean 'median'?)"),
        (with_("study", objectives=["val_auc", "flops_sparse"], pruner="median"), "single-objective"),
        (with_("study", objectives=["val_acu"]), "unknown objective metric 'val_acu' (did you mean 'val_auc'?)"),
        (with_("study", objectives=["val_auc"], directions=["maximize", "minimize"]), "directions has 2 entries"),
        (with_("space", depth=[3, 1]), "low must be <= high"),
        (with_("space", distributions=["erkk"]), "unknown distribution 'erkk' (did you mean 'erk'?)"),
        (with_("space", schedules=["cube"]), "unknown schedule 'cube'"),
        (with_("space", target_sparsity=[0.5, 1.5]), "target_sparsity"),
        (with_("train", epochs=-1), "[train] epochs"),
        (with_("execution", workers=-2), "[execution] workers"),
        ({"data": {"generator": "click_log", "path": "x.parquet"}}, "exactly one of 'generator' and 'path'"),
        ({"data": {"generator": "clicklog"}}, "unknown data generator 'clicklog' (did you mean 'click_log'?)"),
        ({"study": {"n_trials": 3}}, "missing section [data]"),
        ({"data": "click_log"}, "[data] must be a table"),
        (with_("data", prefilter="magic"), "unknown prefilter method 'magic'"),
        (with_("study", sampler="nsga2", objectives=["val_auc", "nnz_params"], sampler_params={"populaton": 9}),
         "sampler_params for 'nsga2'"),
    ],
)
def test_invalid_study_is_one_line_error_naming_the_field(raw, expected):
    with pytest.raises(SpecError) as info:
        load_study(raw)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_study_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1\n")
    with pytest.raises(SpecError, match="bad.toml' is not valid TOML: Expected"):
        load_study(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe[study]")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_study(binary)
    with pytest.raises(SpecError, match="unknown study"):
        load_study("no-such-study")
    with pytest.raises(SpecError, match="does not exist"):
        load_study(tmp_path / "missing.toml")


def test_default_name_is_the_file_stem(tmp_path):
    path = tmp_path / "my-study.toml"
    path.write_text('[data]\ngenerator = "click_log"\n')
    assert load_study(path).study.name == "my-study"


def test_unknown_override_is_rejected():
    with pytest.raises(SpecError, match="unknown override 'n_trial'"):
        load_study("quickstart", n_trial=3)
    with pytest.raises(SpecError, match="unknown section 'trian'"):
        load_study("quickstart", **{"trian.epochs": 1})


@pytest.mark.parametrize("raw", [
    {"study": {}, "data": {"\n": [], "generator": "click_log"}},
    {"st\tudy": {}, "data": {"generator": "click_log"}},
])
def test_unknown_keys_with_control_characters_give_a_one_line_error(raw):
    with pytest.raises(SpecError) as err:
        parse_study(raw)
    assert "\n" not in str(err.value) and "\t" not in str(err.value)


def test_pruner_comparison_steps_follow_optunas_rungs_and_warmup():
    from sparsearch.search.spec import pruner_comparison_steps

    # fashion_cnn: 12 epochs x 4 reports, Hyperband min_resource 4, reduction_factor 3 -> rungs at 1, 3, 9 epochs
    assert pruner_comparison_steps(load_study("fashion_cnn")) == [4, 12, 36]
    spec = load_study(with_("train", epochs=10), pruner="successive_halving",
                      **{"study.pruner_params": {"min_resource": 1, "min_early_stopping_rate": 1}})
    assert pruner_comparison_steps(spec) == [4]  # rungs 1 * 4**(1 + k) <= 10 reports
    spec = load_study(with_("train", epochs=10), pruner="successive_halving")  # 'auto': ceil(1% of 10) = 1
    assert pruner_comparison_steps(spec) == [1, 4]
    spec = load_study(with_("train", epochs=6), pruner="median",
                      **{"study.pruner_params": {"n_warmup_steps": 2, "interval_steps": 2}})
    assert pruner_comparison_steps(spec) == [2, 4, 6]
    assert pruner_comparison_steps(load_study(BASE)) is None  # no pruner
    assert pruner_comparison_steps(load_study(BASE, pruner="NopPruner")) is None


def test_pruning_window_note_flags_rungs_inside_gmps_window_when_other_trials_have_no_dip():
    from sparsearch.search.spec import pruning_window_note

    # study v2 of BENCHMARKS.md: window 0.25-0.75 of 12 epochs; the 9-epoch rung sat at its very end
    v2 = load_study("fashion_cnn", **{"space.prune_start_frac": 0.25, "space.prune_end_frac": 0.75})
    note = pruning_window_note(v2)
    assert note is not None and "epoch(s) 9," in note and "epochs 3-9" in note and "rigl trials" in note  # 3: start
    # the bundled study (window 0.1-0.5) still meets Hyperband's 3-epoch rung inside the window
    note = pruning_window_note(load_study("fashion_cnn"))
    assert note is not None and "epoch(s) 3," in note and "epochs 1.2-6" in note
    # nothing to flag: every trial prunes in the same window; or the pruner starts comparing after the window
    assert pruning_window_note(load_study("fashion_cnn", **{"space.methods": ["gmp"]})) is None
    assert pruning_window_note(load_study("fashion_cnn", **{"study.pruner_params": {"min_resource": 36}})) is None
    assert pruning_window_note(load_study("fashion_cnn", pruner="none")) is None
    # a searched window is a rival even among GMP trials only
    searched = load_study("fashion_cnn", **{"space.methods": ["gmp"], "space.prune_end_frac": [0.5, 0.75]})
    note = pruning_window_note(searched)
    assert note is not None and "another pruning window" in note and "epochs 1.2-9" in note
    # the median pruner compares at every report from n_warmup_steps on
    raw = with_("space", methods=["gmp", "dense"])
    raw["train"] = {"epochs": 4}
    note = pruning_window_note(load_study(raw, pruner="median", **{"study.pruner_params": {"n_warmup_steps": 1}}))
    assert note is not None and "epoch(s) 2, 3" in note and "dense trials" in note
    assert pruning_window_note(load_study(raw, pruner="median", **{"study.pruner_params": {"n_warmup_steps": 4}})) \
        is None


@pytest.mark.parametrize("value", [float("inf"), float("nan"), [1.0, float("-inf")]])
def test_a_generator_parameter_that_is_not_a_finite_number_is_a_one_line_error(value):
    # TOML allows inf and nan; a generator takes counts, sizes and rates
    raw = {"data": {"generator": "click_log", "params": {"n_rows": value}}}
    with pytest.raises(SpecError, match=r"^study: \[data\] params: n_rows = .*a finite number is required") as info:
        parse_study(raw)
    assert "\n" not in str(info.value)
    spec = parse_study(BASE)  # a finite one round-trips through the TOML form
    assert parse_study(spec.to_toml_dict()) == spec


def test_an_infinite_pruner_parameter_survives_the_toml_form_and_an_override():
    # TOML allows inf; pydantic's JSON dump wrote it as None, so a spec re-validated with an override (the CLI's
    # --sampler, the random baseline, a refit) held another value than its file, and MLflow recorded None
    raw = with_("study", pruner="threshold", pruner_params={"lower": 0.5, "upper": float("inf")})
    spec = parse_study(raw)
    doc = spec.to_toml_dict()
    assert doc["study"]["pruner_params"] == {"lower": 0.5, "upper": float("inf")}
    assert parse_study(doc) == spec
    overridden = load_study(spec.to_raw(), sampler="random")
    assert overridden.study.pruner_params == {"lower": 0.5, "upper": float("inf")}
    assert overridden.study.sampler == "random"
