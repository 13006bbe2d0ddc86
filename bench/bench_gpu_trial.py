"""One trial on a GPU against one trial on a CPU core: ``train_and_evaluate`` alone, no Ray, no Optuna.

    python bench/bench_gpu_trial.py                     # both workloads, 3 repeats (about 6 minutes with a GPU)
    python bench/bench_gpu_trial.py --repeats 1 --cnn-images 4000 --tab-rows 20000    # a smoke run

:mod:`bench_gpu` measures trials per hour of a whole study through Ray; this script measures what a single trial
costs on each device, on a machine where only PyTorch and the data libraries are installed (a GPU box without Ray
or MLflow). Two workloads, each the size of a bundled study's trial:

- ``tabular``: a click log (``make_click_log``, the quickstart study's generator) of ``--tab-rows`` rows, its 10
  informative / redundant / numeric columns, a sparse MLP (widths 128-64, embeddings of 8, GMP to 90%), 3 epochs,
  batch 4096 (bench_gpu's size);
- ``cnn``: ``--cnn-images`` 28x28 one-channel images in 10 classes, the best ``fashion_cnn`` trial's network
  (3 convs of 55 / 49 / 64 channels, GMP to 92.8%, ERK), batch 256, ``--cnn-epochs`` epochs. The pixels are
  generated (class-dependent blobs plus noise), so the timing is Fashion-MNIST's and the accuracy is not.

Variants, in the same process and interleaved repeat by repeat (``cpu`` first): ``cpu`` (one thread: what a trial
with ``cpus_per_trial = 1`` gets), ``cuda`` (float32) and ``cuda-amp`` (mixed precision). The first CUDA trial of the
process pays CUDA's start-up; it is recorded apart (``cold_s``) and the statistic is the median of the repeats after
it. Each row records the device the trial reported, its training seconds, its wall seconds and its validation
metric and realised sparsity (the same seed on every device: masks come from CPU generators). Without CUDA the GPU
variants are skipped and the JSON says so. Output: ``--out`` (default ``bench/out/gpu/bench_gpu_trial.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)

OUT = _results.OUT / "gpu" / "bench_gpu_trial.json"


def tabular(rows: int) -> tuple[Any, Any]:
    from sparsearch.features import make_click_log
    from sparsearch.spaces import encode_tabular

    df = make_click_log(rows, n_informative=6, n_redundant=2, n_noise=24, max_cardinality=20_000, seed=0)
    keep = [c for c in df.columns if not c.startswith("noise")]
    data = encode_tabular(df.select(keep), "click")
    return data.split(0.2, seed=0)


def images(n: int) -> tuple[Any, Any]:
    from sparsearch.spaces import ImageData

    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    yy, xx = np.mgrid[0:28, 0:28]
    centres = rng.uniform(6, 22, size=(10, 2))
    blobs = np.exp(-((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2) / 30)
    x = np.clip(blobs[y] + rng.normal(0, 0.3, (n, 28, 28)), 0, 1).astype(np.float32)[:, None]
    cut = int(n * 0.8)
    return ImageData(x[:cut], y[:cut], 10), ImageData(x[cut:], y[cut:], 10)


def configs(args: argparse.Namespace) -> dict[str, Any]:
    from sparsearch.spaces import TrialConfig

    return {
        "tabular": TrialConfig(model="mlp", depth=2, widths=(128, 64), embedding_dim=8, method="gmp",
                               target_sparsity=0.9, distribution="erk", epochs=args.tab_epochs, batch_size=4096,
                               lr=5e-3),
        "cnn": TrialConfig(model="cnn", depth=3, widths=(55, 49, 64), dropout=0.008, method="gmp",
                           target_sparsity=0.928, distribution="erk", start_frac=0.1, end_frac=0.5,
                           epochs=args.cnn_epochs, batch_size=256, lr=6e-3, lr_schedule="cosine"),
    }


def one(config: Any, train: Any, val: Any, variant: str) -> dict[str, Any]:
    from sparsearch.spaces import train_and_evaluate

    device = "cpu" if variant == "cpu" else "cuda:0"
    start = time.perf_counter()
    out = train_and_evaluate(config, train, val, seed=0, threads=1 if variant == "cpu" else None,
                             return_model=False, measure_latency=False, device=device,
                             mixed_precision=variant == "cuda-amp")
    wall = time.perf_counter() - start
    metric = "val_auc" if config.model == "mlp" else "val_accuracy"
    return {"variant": variant, "device": out.accounting["device"], "wall_s": round(wall, 3),
            "train_s": round(out.metrics.get("train_seconds", wall), 3), metric: round(out.metrics[metric], 4),
            "realized_sparsity": round(out.metrics["realized_sparsity"], 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tab-rows", type=int, default=200_000)
    parser.add_argument("--tab-epochs", type=int, default=3)
    parser.add_argument("--cnn-images", type=int, default=60_000)
    parser.add_argument("--cnn-epochs", type=int, default=1)
    parser.add_argument("--workloads", default="tabular,cnn")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON written (default "
                        "bench/out/gpu/bench_gpu_trial.json; the committed H200 run is bench/results/gpu/)")
    args = parser.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    variants = ["cpu", "cuda", "cuda-amp"] if cuda else ["cpu"]
    doc: dict[str, Any] = {
        "command": "python bench/bench_gpu_trial.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "status": "measured" if cuda else "cpu only: no GPU", "workloads": {},
    }
    data = {"tabular": tabular(args.tab_rows) if "tabular" in args.workloads else None,
            "cnn": images(args.cnn_images) if "cnn" in args.workloads else None}
    for name, config in configs(args).items():
        if data[name] is None:
            continue
        train, val = data[name]
        runs: list[dict[str, Any]] = []
        for repeat in range(args.repeats + (1 if cuda else 0)):  # an extra round: the first CUDA trial is cold
            for variant in variants:
                if variant == "cpu" and repeat == args.repeats:
                    continue  # the CPU needs no cold round
                row = one(config, train, val, variant) | {"repeat": repeat}
                runs.append(row)
                print(json.dumps({"workload": name, **row}), flush=True)
        summary: dict[str, Any] = {}
        for variant in variants:
            rows = [r for r in runs if r["variant"] == variant]
            if variant != "cpu":
                summary[f"{variant}_cold_s"] = rows[0]["wall_s"] if variant == "cuda" else None
                rows = rows[1:]
            summary[f"{variant}_median_s"] = statistics.median(r["wall_s"] for r in rows)
        for variant in variants[1:]:
            summary[f"cpu_over_{variant}"] = round(summary["cpu_median_s"] / summary[f"{variant}_median_s"], 2)
        doc["workloads"][name] = {"config": config.to_dict(), "n_train": train.n_rows, "n_val": val.n_rows,
                                  "runs": runs, "summary": summary}
        print(json.dumps({"workload": name, **summary}), flush=True)
    _results.save(doc, key=args.out.stem, results=args.out.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
