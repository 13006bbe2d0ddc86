"""ModelKeeper: which trained models are kept for the test rows and the packaged model (one record, not two)."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from sparsearch.search.listeners import ModelKeeper, TrialEnd
from sparsearch.search.protocol import TrialReport


def _ex(tmp_path, directions):
    return ModelKeeper(directions)


def _trial(number, values):
    t = create_trial(state=TrialState.COMPLETE, values=values, params={"x": 0.5},
                     distributions={"x": FloatDistribution(0, 1)})
    t.number = number
    return t


@pytest.mark.parametrize(("direction", "values", "best"), [("minimize", [0.5, 0.2, 0.3, 0.2], 1),
                                                           ("maximize", [0.5, 0.9, 0.1, 0.9], 1)])
def test_single_objective_keeps_only_the_best_and_ties_keep_the_earlier(tmp_path, direction, values, best):
    ex = _ex(tmp_path, [direction])
    for n, v in enumerate(values):
        ex.keep_model(_trial(n, [v]), f"model-{n}", None)
    assert list(ex.models) == [best]
    assert ex.best_kept() == (best, f"model-{best}", None)


def test_multi_objective_keeps_the_non_dominated_and_best_kept_is_best_in_the_first(tmp_path):
    ex = _ex(tmp_path, ["minimize", "minimize"])
    for n, v in enumerate([[0.5, 10.0], [0.3, 20.0], [0.6, 30.0], [0.2, 40.0]]):
        ex.keep_model(_trial(n, v), f"model-{n}", ("a",))
    assert sorted(ex.models) == [0, 1, 3]  # trial 2 is dominated by trial 0
    assert ex.best_kept() == (3, "model-3", ("a",))


def test_a_retrained_incumbent_is_ranked_in_the_same_order(tmp_path):
    """Models re-trained for the test rows are stored with signed values too (they once were raw)."""
    ex = _ex(tmp_path, ["minimize"])
    ex.keep_model(_trial(5, [0.4]), "this-run", None)
    ex.keep_retrained(_trial(1, [0.1]), "retrained-incumbent", None)
    assert ex.best_kept()[0] == 1
    assert ex.signed([0.1]) == [-0.1]
    assert _ex(tmp_path, ["maximize"]).signed([0.1]) == [0.1]


def test_failed_or_model_less_trials_are_not_kept(tmp_path):
    ex = _ex(tmp_path, ["maximize"])
    ex.keep_model(_trial(0, [0.9]), None, None)
    failed = create_trial(state=TrialState.FAIL)
    ex.keep_model(failed, "m", None)
    assert ex.models == {} and ex.best_kept() is None
    assert optuna.__version__  # the trial factory above is Optuna's own


def test_the_keeper_listens_only_to_trials_that_ran_here(tmp_path):
    keeper = _ex(tmp_path, ["maximize"])
    keeper.on_trial_end(TrialEnd(_trial(0, [0.9]), "interrupted"))
    keeper.on_trial_end(TrialEnd(_trial(1, [0.8]), "ran", TrialReport("COMPLETE", model="m1"), ("a",)))
    assert keeper.best_kept() == (1, "m1", ("a",))
