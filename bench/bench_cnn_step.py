"""What a fashion_cnn training step costs on one CPU thread, with and without the two fixes of the CNN's training
speed: channels-last convolutions whatever layout the images arrive in (``spaces.models.channels_last``) and
freed batch memory kept for reuse (``spaces.allocator``).

Each variant trains the warm-start portfolio's CNN entry (the largest bundled configuration) on the study's own
split, in its own process, for ``--reports`` validation reports (a quarter epoch each: 47 batches of 256 images),
on images that come back from a pickle (as bench_peers' prepared data and Ray's object store hand them over:
plain NCHW strides). Variants run one after another, each on one thread. It reports seconds per report after the
first (the first includes start-up) and the validation accuracy at the last report. Keeping freed memory changes
no value; the layout changes the order of floating-point sums, so the two layouts' runs differ by rounding at first
and then drift apart like runs of two seeds.

    python bench/bench_cnn_step.py [--reports 3]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

VARIANTS = {"before (NCHW, glibc defaults)": {"layout": "nchw", "keep": "0"},
            "channels-last only": {"layout": "fixed", "keep": "0"},
            "freed memory kept only": {"layout": "nchw", "keep": "1"},
            "both (as shipped)": {"layout": "fixed", "keep": "1"}}


def _child(data: str, layout: str, reports: int) -> None:
    from sparsearch import load_study
    from sparsearch.search.warmstart import PORTFOLIO
    from sparsearch.spaces import config_from_params, train_and_evaluate

    if layout == "nchw":
        import sparsearch.spaces.models as models

        models.channels_last = lambda x: x  # what SparseCNN did before the fix
    with open(data, "rb") as fh:
        prepared = pickle.load(fh)
    spec = load_study("fashion_cnn")
    entry = next(e for e in PORTFOLIO if e["model"] == "cnn")
    config = config_from_params(entry["params"], spec.space, spec.train)
    times: list[float] = []
    last: dict[str, float] = {}
    t0 = time.perf_counter()

    def report(step: int, metrics: dict[str, float]) -> None:
        times.append(time.perf_counter() - t0)
        last.update(metrics)
        if step >= reports:
            raise StopIteration

    try:
        train_and_evaluate(config, prepared.train, prepared.val, seed=0, threads=1, callback=report,
                           measure_latency=False, select="val_accuracy")
    except StopIteration:
        pass
    gaps = [b - a for a, b in zip(times, times[1:])]
    print(json.dumps({"s_per_report": sum(gaps) / len(gaps), "report_times_s": times,
                      "val_accuracy": last.get("val_accuracy")}))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        _child(argv[1], argv[2], int(argv[3]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reports", type=_results.positive_int, default=3,
                    help="validation reports per variant (at least 2: the first is not timed)")
    args = ap.parse_args(argv)
    if args.reports < 2:
        ap.error(f"--reports: at least 2 (the first report includes start-up), got {args.reports}")
    from sparsearch import load_study
    from sparsearch.search.data import prepare_data

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_data(load_study("fashion_cnn"), Path(tmp) / "prep")
        data = Path(tmp) / "prepared.pkl"
        with open(data, "wb") as fh:
            pickle.dump(prepared, fh, protocol=5)
        rows = {}
        for name, v in VARIANTS.items():
            env = {**os.environ, "SPARSEARCH_KEEP_FREED_MEMORY": v["keep"], "OMP_NUM_THREADS": "1"}
            out = subprocess.run([sys.executable, __file__, "_child", str(data), v["layout"], str(args.reports)],
                                 env=env, check=True, capture_output=True, text=True).stdout
            rows[name] = json.loads(out.strip().splitlines()[-1])
            print(name, json.dumps(rows[name]), flush=True)
    base = rows["before (NCHW, glibc defaults)"]["s_per_report"]
    doc = {"study": "fashion_cnn", "config": "warm-start portfolio CNN entry", "threads": 1,
           "reports": args.reports, "variants": rows,
           "speedup_over_before": {k: base / r["s_per_report"] for k, r in rows.items()}}
    _results.save(doc, key="cnn-step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
