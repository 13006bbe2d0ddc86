"""Progress lines: one per finished trial, named by its Optuna state, with counts and the best so far."""

from __future__ import annotations

import io

from optuna.trial import TrialState

from sparsearch.search.progress import ProgressPrinter


def test_progress_line_names_the_state_and_counts_each_state():
    out = io.StringIO()
    printer = ProgressPrinter(3, ["accuracy"], stream=out)
    printer.trial_done(0, TrialState.COMPLETE, [0.91], [0.91], 1.5)
    printer.trial_done(1, TrialState.PRUNED, None, [0.91], 0.5, note="pruned at step 2")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("trial    0 COMPLETE accuracy=0.91 [1.5s] | 1/3 done")
    assert lines[1].startswith("trial    1 PRUNED   [0.5s] (pruned at step 2) | 2/3 done")
    assert printer.counts == {"COMPLETE": 1, "PRUNED": 1, "FAIL": 0}
