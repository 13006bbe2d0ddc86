"""A trial keeps its best validation epoch among the epochs at the final sparsity: its metrics, its model (weights
and masks) and its accounting are that epoch's; the callback (the pruner) still sees every report."""

from __future__ import annotations

import math

import pytest
import torch

from sparsearch.spaces import (
    EPOCH_METRICS,
    TrialConfig,
    evaluate_model,
    selection_metric,
    sparsity_summary,
    train_and_evaluate,
)
from sparsearch.spaces.methods import make_method

SMALL = dict(batch_size=128, lr=0.01, widths=(64, 32), depth=2)
#: a dense net that overfits the small synthetic table: its validation log-loss is best at epoch 2 of 6
OVERFIT = TrialConfig(method="dense", epochs=6, batch_size=64, lr=0.03, widths=(128, 128), depth=2, embedding_dim=16)


def test_an_earlier_epoch_is_kept_with_its_metric_and_a_model_that_reproduces_it(tab_split):
    train, val = tab_split
    seen = []
    out = train_and_evaluate(OVERFIT, train, val, seed=0, measure_latency=False, select="val_logloss",
                             callback=lambda step, m: seen.append(step))
    assert seen == [1, 2, 3, 4, 5, 6]  # every report reaches the callback (the pruner), the kept epoch or not
    losses = [h["val_logloss"] for h in out.history]
    k = out.best_epoch
    assert k < OVERFIT.epochs and losses[k - 1] == min(losses) < losses[-1]  # the check can fail: k is not last
    assert out.metrics["best_epoch"] == k and out.accounting["schedule"]["best_epoch"] == k
    assert [h["best"] for h in out.history] == [float(e == k) for e in range(1, 7)]
    for name in EPOCH_METRICS:
        assert out.metrics[name] == out.history[k - 1][name]
    # the returned model is epoch k's: evaluated on the validation rows, it reproduces epoch k's metrics exactly
    again = evaluate_model(out.model, val, prefix="val_")
    assert {n: again[n] for n in EPOCH_METRICS} == {n: out.metrics[n] for n in EPOCH_METRICS}
    last = train_and_evaluate(OVERFIT, train, val, seed=0, measure_latency=False, select=None)
    assert last.best_epoch == 6 and last.metrics["val_logloss"] == losses[-1]
    assert evaluate_model(last.model, val, prefix="val_")["val_logloss"] == losses[-1]
    assert not all(torch.equal(a, b) for a, b in zip(out.model.parameters(), last.model.parameters()))


def test_gmp_never_keeps_a_denser_epoch_from_before_its_pruning_window_ends(tab_split):
    train, val = tab_split
    cfg = TrialConfig(method="gmp", target_sparsity=0.98, start_frac=0.5, end_frac=0.75, mask_updates=3, epochs=4,
                      **SMALL)
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False, select="val_auc")
    aucs = [h["val_auc"] for h in out.history]
    final_from = out.accounting["schedule"]["final_from_epoch"]
    assert final_from == 3  # the last mask update is at step 54 of 72, the end of epoch 3
    assert max(aucs[: final_from - 1]) > max(aucs[final_from - 1:])  # a dense epoch was better: the check can fail
    assert out.best_epoch >= final_from and out.metrics["val_auc"] == max(aucs[final_from - 1:])
    # the kept model is at the target sparsity, and the accounting describes it
    assert abs(out.metrics["realized_sparsity"] - 0.98) < 0.005
    summary = sparsity_summary(out.model)
    assert all(out.metrics[k] == v for k, v in summary.items())


@pytest.mark.parametrize("method", ["static", "set", "rigl", "dense"])
def test_methods_at_their_final_sparsity_from_the_start_let_every_epoch_qualify(tab_split, method):
    train, val = tab_split
    cfg = TrialConfig(method=method, target_sparsity=0.9, dst_interval=5, epochs=2, **SMALL)
    out = train_and_evaluate(cfg, train, val, seed=1, measure_latency=False)
    assert out.accounting["schedule"]["final_from_epoch"] == 1
    aucs = [h["val_auc"] for h in out.history]
    assert out.metrics["val_auc"] == max(aucs) and out.best_epoch == aucs.index(max(aucs)) + 1


def test_with_dense_fine_tuning_only_the_fine_tuning_epochs_qualify(tab_split):
    train, val = tab_split
    cfg = TrialConfig(method="static", target_sparsity=0.9, epochs=2, dense_finetune_epochs=2, **SMALL)
    out = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False)
    assert len(out.history) == 4 and out.accounting["schedule"]["final_from_epoch"] == 3
    assert out.best_epoch in (3, 4)
    assert out.metrics["val_auc"] == max(h["val_auc"] for h in out.history[2:])


def test_gmp_final_step_is_its_last_mask_update():
    for schedule, expected in (("cubic", 75), ("one_shot", 0), ("linear", 75)):
        method = make_method("gmp", target_sparsity=0.9, schedule=schedule, start_frac=0.0, end_frac=0.75)

        class _Sink:  # what GMP.setup needs of a sparsifier: prune_to
            def prune_to(self, sparsity):
                pass

        method.setup(_Sink(), 100)
        assert method.final_step == expected, schedule
    assert make_method("rigl", target_sparsity=0.9).final_step == 0


def test_selection_metric_and_bad_select(tab_split):
    assert selection_metric(["val_auc"]) == "val_auc"
    assert selection_metric(["nnz_params", "val_accuracy", "val_auc"]) == "val_accuracy"
    assert selection_metric(["nnz_params", "flops_sparse"]) is None
    train, val = tab_split
    with pytest.raises(ValueError, match="select must be one of val_auc, val_logloss, val_accuracy or None, "
                                         "got 'nnz_params'") as err:
        train_and_evaluate(OVERFIT, train, val, select="nnz_params")
    assert "\n" not in str(err.value)


def test_a_nan_epoch_is_never_kept_over_a_finite_one():
    from sparsearch.spaces.train import _BestEpoch

    model = torch.nn.Linear(2, 1)
    best = _BestEpoch("val_logloss")
    best.offer(1, {"val_logloss": math.nan}, model, last=False)
    best.offer(2, {"val_logloss": 0.7}, model, last=False)
    best.offer(3, {"val_logloss": math.nan}, model, last=True)
    best.offer(4, {"val_logloss": 0.7}, model, last=True)  # a tie keeps the earlier epoch
    assert best.epoch == 2


def test_keep_epoch_last_keeps_the_last_epoch_whatever_select_says(tab_split):
    import dataclasses

    train, val = tab_split
    best = train_and_evaluate(OVERFIT, train, val, seed=0, measure_latency=False, select="val_logloss")
    assert best.best_epoch < OVERFIT.epochs  # this config's best epoch is an early one: the check below can fail
    cfg = dataclasses.replace(OVERFIT, keep_epoch="last")
    last = train_and_evaluate(cfg, train, val, seed=0, measure_latency=False, select="val_logloss")
    assert last.best_epoch == OVERFIT.epochs
    assert last.metrics["val_logloss"] == last.history[-1]["val_logloss"] > best.metrics["val_logloss"]


def test_keep_epoch_comes_from_the_train_section_and_is_checked():
    import optuna

    from sparsearch.errors import SpecError
    from sparsearch.search.spec import load_study
    from sparsearch.spaces import suggest_config

    spec = load_study("quickstart", **{"train.keep_epoch": "last"})
    assert spec.train.keep_epoch == "last"
    trial = optuna.create_study().ask()
    assert suggest_config(trial, spec.space, spec.train).keep_epoch == "last"
    with pytest.raises(SpecError, match=r"keep_epoch.*'worst'.*best, last"):
        load_study("quickstart", **{"train.keep_epoch": "worst"})
