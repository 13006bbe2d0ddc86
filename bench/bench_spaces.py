"""Benchmarks of sparsearch.spaces (issue 4). Figures go to BENCHMARKS.md, section "spaces".

    python bench/bench_spaces.py overhead   # masked training step vs the same dense model
    python bench/bench_spaces.py inference  # compacted and CSR exports vs dense, 3x1024 MLP, 90/95%, batch 1/256
    python bench/bench_spaces.py accuracy   # digits CNN and tabular MLP: GMP / RigL / static ERK / small dense

All timings pin torch to one thread (``--threads``) and report medians; speed figures are ratios against the dense
peer measured in the same run. Each command's raw results (for inference: every round's medians) go to
bench/results/<command>.json (committed).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparsearch.spaces import (
    MaskedLinear,
    SparseMLP,
    Sparsifier,
    TrialConfig,
    encode_tabular,
    load_digits_data,
    masked_modules,
    to_csr,
    train_and_evaluate,
)
from sparsearch.spaces.train import make_optimizer  # not in sparsearch.spaces.__all__ (issue 32: to expose)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)


def _mlp(width: int, depth: int, in_dim: int, n_out: int, masked: bool) -> nn.Module:
    lin = MaskedLinear if masked else nn.Linear
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(depth):
        layers += [lin(d, width), nn.ReLU()]
        d = width
    layers.append(lin(d, n_out))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------------- overhead
def _interleaved(fns: dict, runs: int, warmup: int = 3, raw: bool = False) -> dict:
    """Median ms of each callable, measured in alternation so machine noise hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    if raw:
        return times
    return {k: statistics.median(v) for k, v in times.items()}


def _step_fn(model, inputs, y, loss_fn, masked: bool):
    opt = make_optimizer("adam", model.parameters(), lr=1e-3)  # what train_and_evaluate uses (fused Adam)
    sp = Sparsifier(model, distribution="erk", optimizer=opt)
    if masked:
        sp.prune_to(0.9)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(*inputs), y).backward()
        if masked:
            sp.mask_gradients()
        opt.step()
        if masked:
            sp.apply_masks()

    return step


def overhead(args) -> list[dict]:
    """Time one training step (forward, backward, Adam) of a masked model (90% ERK) vs the same dense model.

    The masked step is the one :func:`train_and_evaluate` runs: masked gradients, optimizer step, masks re-applied.
    """
    rows = []
    torch.manual_seed(0)
    x, y = torch.randn(256, 1024), torch.randn(256, 1)
    mse = nn.functional.mse_loss
    cases = {"3x1024 MLP, batch 256": (lambda masked: _mlp(1024, 3, 1024, 1, masked), (x,), y, mse)}
    cards = [3, 4, 33, 762, 1037, 18, 2160, 3452, 5, 101, 198, 21, 62, 871]  # nycflights13 columns
    cat = torch.stack([torch.randint(0, c, (512,)) for c in cards], dim=1)
    yb = (torch.rand(512) > 0.7).float()
    bce = lambda logits, t: nn.functional.binary_cross_entropy_with_logits(logits.squeeze(1), t)  # noqa: E731

    def tab(masked: bool) -> nn.Module:
        m = SparseMLP(cards, 0, [256, 128], 1, embedding_dim=16)
        if not masked:  # same shapes with plain layers
            m.hidden[0], m.hidden[2], m.head = nn.Linear(m.in_dim, 256), nn.Linear(256, 128), nn.Linear(128, 1)
        return m

    cases["flights SparseMLP 256-128 (14 embeddings), batch 512"] = (tab, (cat, torch.zeros(512, 0)), yb, bce)
    for label, (make, inputs, target, loss_fn) in cases.items():
        torch.manual_seed(0)
        dense = _step_fn(make(False), inputs, target, loss_fn, masked=False)
        torch.manual_seed(0)
        masked = _step_fn(make(True), inputs, target, loss_fn, masked=True)
        times = _interleaved({"dense": dense, "masked": masked}, args.runs, raw=True)
        paired = [m / d for m, d in zip(times["masked"], times["dense"])]
        rows.append({"case": label, "dense_ms": statistics.median(times["dense"]),
                     "masked_ms": statistics.median(times["masked"]),
                     "ratio": statistics.median(times["masked"]) / statistics.median(times["dense"]),
                     "paired_ratio": statistics.median(paired)})
    print("| model | dense step (ms) | masked step (ms) | ratio of medians | median of paired ratios |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['case']} | {r['dense_ms']:.2f} | {r['masked_ms']:.2f} | {r['ratio']:.2f}x | "
              f"{r['paired_ratio']:.2f}x |")
    return rows


# ------------------------------------------------------------------------------------------------ inference
def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def inference(args) -> list[dict]:
    """3x1024 MLP: dense vs masked vs compacted vs CSR at 90/95% (unstructured and neuron), batch 1 and 256.

    ``--repeats`` rounds; each round visits every configuration once and times its four models interleaved call
    by call (``--runs`` calls each, x20 at batch 1), so a load spike hits a round of every configuration rather
    than one row. Each row reports the median over rounds of the per-round medians, their spread (min-max over
    rounds), and the speed-ups as the median (min-max) of the per-round ratios to the dense model of that round.
    """
    configs = []
    for pattern in ("unstructured", "neuron"):
        for sparsity in (0.9, 0.95):
            torch.manual_seed(0)
            masked = _mlp(1024, 3, 1024, 1024, masked=True).eval()
            Sparsifier(masked, pattern=pattern, distribution="uniform").prune_to(sparsity)
            dense = _mlp(1024, 3, 1024, 1024, masked=False).eval()
            dense.load_state_dict({k: v for k, v in masked.state_dict().items() if "mask" not in k})
            models = {"dense": dense, "masked": masked, "compact": _compact_sequential(masked), "csr": to_csr(masked)}
            for batch in (1, 256):
                x = torch.randn(batch, 1024)
                with torch.no_grad():
                    ref = dense(x)
                    assert torch.allclose(models["csr"](x), ref, atol=1e-4)
                    assert torch.allclose(models["compact"](x), ref, atol=1e-4)
                configs.append({"pattern": pattern, "sparsity": sparsity, "batch": batch, "x": x, "models": models,
                                "rounds": {k: [] for k in models}})
    for _ in range(args.repeats):
        for c in configs:
            runs = args.runs * (20 if c["batch"] == 1 else 1)
            with torch.no_grad():
                res = _interleaved({k: (lambda m=m, x=c["x"]: m(x)) for k, m in c["models"].items()}, runs)
            for k, v in res.items():
                c["rounds"][k].append(v)
    rows = []
    for c in configs:
        r = c["rounds"]
        row = {"pattern": c["pattern"], "sparsity": c["sparsity"], "batch": c["batch"],
               "rounds": args.repeats, "calls_per_round": args.runs * (20 if c["batch"] == 1 else 1),
               "round_medians_ms": r,
               "compact_shapes": [list(m.weight.shape) for m in c["models"]["compact"] if isinstance(m, nn.Linear)]}
        for k in r:
            row[f"{k}_ms"] = _spread(r[k])
        for k in ("masked", "compact", "csr"):
            row[f"{k}_speedup"] = _spread([d / t for d, t in zip(r["dense"], r[k])])
        rows.append(row)
    print(f"{args.repeats} rounds x {args.runs} interleaved calls (x20 at batch 1); median over rounds "
          "(min-max over rounds)")
    print("| pattern | sparsity | batch | dense (ms) | masked (ms) | compacted (ms) | CSR (ms) | compacted speed-up | "
          "CSR speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")

    def ms(v: dict) -> str:
        return f"{v['median']:.3f} ({v['min']:.3f}-{v['max']:.3f})"

    def x(v: dict) -> str:
        return f"{v['median']:.2f}x ({v['min']:.2f}-{v['max']:.2f})"

    for r in rows:
        print(f"| {r['pattern']} | {r['sparsity']:.0%} | {r['batch']} | {ms(r['dense_ms'])} | {ms(r['masked_ms'])} | "
              f"{ms(r['compact_ms'])} | {ms(r['csr_ms'])} | {x(r['compact_speedup'])} | {x(r['csr_speedup'])} |")
    return rows


def _compact_sequential(seq: nn.Sequential) -> nn.Sequential:
    """The plain Sequential MLP without its dead hidden units (``spaces.compact_linear_chain``)."""
    from sparsearch.spaces import compact_linear_chain

    return compact_linear_chain(seq)


# ------------------------------------------------------------------------------------------------- accuracy
def _flights(n_rows: int, data_root: str | None):
    import polars as pl

    path = _results.data_file(_results.data_root(data_root), "nycflights13/flights.parquet")
    df = pl.read_parquet(path).filter(pl.col("arr_delay").is_not_null())
    df = df.sample(n=min(n_rows, df.height), seed=0, shuffle=True)
    df = df.with_columns((pl.col("arr_delay") > 15).alias("late"))
    df = df.drop(["dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "year"])
    return encode_tabular(df, "late")


def _prunable_nnz(cfg: TrialConfig, data) -> tuple[int, int]:
    from sparsearch.spaces import build_model

    model = build_model(cfg, data)
    n = sum(m.weight.numel() for _, m in masked_modules(model))
    return n, int(round(n * (1 - cfg.target_sparsity)))


def _small_dense_widths(cfg: TrialConfig, data, nnz: int) -> tuple[int, ...]:
    """Scale all hidden widths by one factor so the dense model's prunable weights match ``nnz``."""
    lo, hi = 1e-3, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        widths = tuple(max(1, int(round(w * mid))) for w in cfg.widths)
        n, _ = _prunable_nnz(TrialConfig(**{**cfg.to_dict(), "widths": widths, "method": "dense",
                                            "target_sparsity": 0.0}), data)
        lo, hi = (mid, hi) if n < nnz else (lo, mid)
    return tuple(max(1, int(round(w * lo))) for w in cfg.widths)


def accuracy(args) -> list[dict]:
    rows = []
    tasks = []
    wanted = args.tasks.split(",")
    if "digits" in wanted:
        digits = load_digits_data()
        d_train, d_val = digits.split(0.25, seed=0)
        tasks.append(("digits CNN", "val_accuracy", d_train, d_val,
                      TrialConfig(model="cnn", depth=2, widths=(32, 64), epochs=args.cnn_epochs, batch_size=64,
                                  lr=3e-3, start_frac=0.1, end_frac=0.6, mask_updates=10, dst_interval=20)))
    if "flights" in wanted:
        flights = _flights(args.rows, args.data_root)
        f_train, f_val = flights.split(0.2, seed=0)
        tasks.append(("flights MLP", "val_auc", f_train, f_val,
                      TrialConfig(model="mlp", depth=2, widths=(256, 128), embedding_dim=16, epochs=args.mlp_epochs,
                                  batch_size=512, lr=3e-3, start_frac=0.1, end_frac=0.6, mask_updates=10,
                                  dst_interval=20)))
    if "fashion" in wanted:
        from sparsearch.spaces import load_fashion_mnist

        fashion = load_fashion_mnist(limit=args.fashion_images)
        fa_train, fa_val = fashion.split(0.2, seed=0)
        tasks.append(("fashion CNN", "val_accuracy", fa_train, fa_val,
                      TrialConfig(model="cnn", depth=2, widths=(16, 32), epochs=args.fashion_epochs, batch_size=64,
                                  lr=3e-3, start_frac=0.1, end_frac=0.6, mask_updates=10, dst_interval=50)))
    for task, metric, train, val, base in tasks:
        runs = [("dense", 0.0, TrialConfig(**{**base.to_dict(), "method": "dense", "target_sparsity": 0.0}))]
        for s in (0.8, 0.9, 0.95):
            d = base.to_dict()
            runs.append(("gmp", s, TrialConfig(**{**d, "method": "gmp", "target_sparsity": s})))
            runs.append(("rigl", s, TrialConfig(**{**d, "method": "rigl", "target_sparsity": s})))
            runs.append(("static (ERK)", s, TrialConfig(**{**d, "method": "static", "target_sparsity": s})))
            _, nnz = _prunable_nnz(TrialConfig(**{**d, "target_sparsity": s}), train)
            widths = _small_dense_widths(base, train, nnz)
            runs.append((f"small dense {'x'.join(map(str, widths))}", s,
                         TrialConfig(**{**d, "method": "dense", "target_sparsity": 0.0, "widths": widths})))
        for name, s, cfg in runs:
            vals, secs, real = [], [], []
            for seed in range(args.seeds):
                t = time.perf_counter()
                out = train_and_evaluate(cfg, train, val, seed=seed, threads=args.threads, return_model=False,
                                         measure_latency=False)
                secs.append(time.perf_counter() - t)
                vals.append(out.metrics[metric])
                real.append(out.metrics["realized_sparsity"])
            rows.append({"task": task, "metric": metric, "method": name, "sparsity": s,
                         "mean": float(np.mean(vals)), "std": float(np.std(vals)), "realized": float(np.mean(real)),
                         "nnz_prunable": _prunable_nnz(cfg, train)[1] if cfg.method != "dense"
                         else _prunable_nnz(cfg, train)[0], "seconds": float(np.mean(secs))})
            r = rows[-1]
            print(f"{task:12s} {name:28s} s={s:.2f} {metric}={r['mean']:.4f}±{r['std']:.4f} "
                  f"realized={r['realized']:.3f} nnz={r['nnz_prunable']} {r['seconds']:.1f}s", file=sys.stderr)
    print("| task | method | target sparsity | realized | prunable non-zeros | metric (mean ± sd over seeds) |"
          " vs dense (points) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    dense = {r["task"]: r["mean"] for r in rows if r["method"] == "dense"}
    for r in rows:
        delta = 100 * (r["mean"] - dense[r["task"]])
        print(f"| {r['task']} | {r['method']} | {r['sparsity']:.0%} | {r['realized']:.3f} | {r['nnz_prunable']} | "
              f"{r['metric']} {r['mean']:.4f} ± {r['std']:.4f} | {delta:+.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["overhead", "inference", "accuracy"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=7, help="inference: interleaved rounds over all configurations")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--cnn-epochs", type=int, default=15)
    ap.add_argument("--mlp-epochs", type=int, default=4)
    ap.add_argument("--tasks", default="digits,flights", help="accuracy tasks: digits, flights, fashion")
    ap.add_argument("--fashion-images", type=int, default=10_000)
    ap.add_argument("--fashion-epochs", type=int, default=3)
    _results.add_data_root(ap)  # accuracy: nycflights13/flights.parquet under it
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = {"overhead": overhead, "inference": inference, "accuracy": accuracy}[args.what](args)
    _results.save({"args": vars(args), "rows": rows})  # raw results behind the BENCHMARKS.md table: committed


if __name__ == "__main__":
    main()
