"""Trials per hour on a GPU against the CPU, for the same study (issue 12).

    python bench/bench_gpu.py                       # the default size (a few minutes on one GPU)
    python bench/bench_gpu.py --trials 4 --rows 5000 --epochs 1   # a smoke run
    python bench/bench_gpu.py --cpu-only            # measure the CPU side alone (no GPU needed)

The same study (bundled ``quickstart``: click-log data, sparse MLPs with embeddings, GMP) runs with the same seed
and sampler three ways on one local Ray: CPU trials (``cpus_per_trial``), GPU trials (``gpus_per_trial = 1``), and
GPU trials with mixed precision. Each variant gets its own results folder and storage; reported: trials per hour
(trials / wall time of ``run_study``, data preparation excluded as far as the controller times it), the median
trial duration, the best value, and the device each trial recorded. Without CUDA the GPU variants are not run:
the JSON says ``"not run: no GPU"`` and the script exits 0. Output: ``bench/out/gpu/bench_gpu.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

OUT = _results.OUT / "gpu"


def _ray_up() -> None:
    """The package's private local Ray; Ray counts the GPUs itself (every visible one, none without CUDA)."""
    from sparsearch._ray import connect_ray

    connect_ray("local")


def _variant(name: str, overrides: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from sparsearch import run_study

    with tempfile.TemporaryDirectory(prefix=f"bench-gpu-{name}-") as tmp:
        start = time.perf_counter()
        result = run_study("quickstart", results_dir=tmp, progress=False, n_trials=args.trials, seed=0,
                           **{"train.epochs": args.epochs, "data.params.n_rows": args.rows,
                              "tracking.enabled": False, **overrides})
        wall = time.perf_counter() - start
        trials = result.trials  # read while the storage exists
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    elapsed = result.elapsed_s
    best = max((t.values[0] for t in trials if t.values), default=None)
    return {
        "variant": name, "overrides": overrides, "n_trials": len(trials),
        "states": sorted({t.state.name for t in trials}),
        "elapsed_s": round(elapsed, 2), "wall_s": round(wall, 2),
        "trials_per_hour": round(len(trials) / elapsed * 3600, 1) if elapsed else None,
        "median_trial_s": round(statistics.median(durations), 3) if durations else None,
        "best_val_auc": best,
        "devices": sorted({str(t.user_attrs.get("device")) for t in trials}),
        "workers": result.info.get("workers"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12, help="trials per variant (default 12)")
    parser.add_argument("--rows", type=int, default=200_000, help="rows of the generated click log (default 200k)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--batch-size", type=int, default=4096, help="mini-batch size (default 4096)")
    parser.add_argument("--cpu-only", action="store_true", help="measure the CPU variant even without a GPU")
    parser.add_argument("--out", type=Path, default=OUT / "bench_gpu.json",
                        help="the JSON written (default bench/out/gpu/bench_gpu.json)")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    doc: dict[str, Any] = {
        "benchmark": "trials per hour, GPU against CPU, same study (quickstart)",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "size": {"trials": args.trials, "rows": args.rows, "epochs": args.epochs, "batch_size": args.batch_size},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "gpu": torch.cuda.get_device_name(0) if cuda else None},
        "variants": [],
    }
    if not cuda and not args.cpu_only:
        doc["status"] = "not run: no GPU (torch.cuda.is_available() is False)"
    else:
        _ray_up()
        # workers = 0: as many trials at once as the resources allow (CPU variant: one per core; GPU: one per GPU)
        common = {"train.batch_size": args.batch_size, "execution.workers": 0}
        doc["variants"].append(_variant("cpu", {**common, "execution.gpus_per_trial": 0.0}, args))
        if cuda:
            doc["variants"].append(_variant("gpu", {**common, "execution.gpus_per_trial": 1.0}, args))
            doc["variants"].append(_variant("gpu_mixed_precision", {**common, "execution.gpus_per_trial": 1.0,
                                                                    "execution.mixed_precision": True}, args))
            cpu, gpu = doc["variants"][0]["trials_per_hour"], doc["variants"][1]["trials_per_hour"]
            doc["speedup_gpu_over_cpu"] = round(gpu / cpu, 2) if cpu and gpu else None
            doc["status"] = "run"
        else:
            doc["status"] = "cpu only: no GPU (torch.cuda.is_available() is False), GPU variants not run"
    print(json.dumps(doc, indent=2))
    _results.save(doc, key=args.out.stem, results=args.out.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
