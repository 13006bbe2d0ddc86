"""Per-row latency of an exported model (issue 31 item 3): ONNX Runtime against the pyfunc's compact and CSR forms.

    python bench/bench_export.py            # batch 1 and 256, 95% sparse 2x512 MLP over a 24-column click log
    python bench/bench_export.py --model ingredients   # only the network with the new ingredients
    python bench/bench_export.py --quick    # a smoke run (few calls, small network); writes no results file

No study: a tabular encoder fitted on a generated click log (categorical columns of 10 to 5,000 values, numeric
ones with missing values), a SparseMLP pruned to ``--sparsity`` (unstructured, random weights: latency does not
depend on what was learnt) and packaged as the study's pyfunc would be. Two models (``--model``, default both):

- ``plain``: standardised numbers, embeddings, the hidden layers;
- ``ingredients``: the new model family (issue 29) on the same rows: integer columns with at least 1,000
  values also ordered numbers (``ordered_ints``), the largest column hashed (``max_cardinality`` 2,000, FNV-1a),
  the ``quantile`` numeric encoding (its portable form in the ONNX file), one DCN-v2 cross layer (rank 16), the
  pairwise-product block (``fm_dim`` 8) and a 4-member efficient ensemble.

Timed, torch and ONNX Runtime each on one thread (``--threads``), calls interleaved so that a load spike hits
every form alike:

- network only, on the same int32 codes and float inputs: ONNX Runtime on the exported ONNX file, torch on the
  compact and the CSR form;
- raw rows in, probabilities out: the encoder alone, the encoder + ONNX Runtime, and the pyfunc's ``predict`` with
  ``format`` compact and csr.

Reports the median per-row latency in microseconds (a call's median time / batch) over ``--repeats`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402  (bench/ is not a package)


def click_log(n: int, n_cat: int, n_num: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    cols = {}
    for i in range(n_cat):
        card = int(10 * (500 ** (i / max(1, n_cat - 1))))  # 10 .. 5000 values
        cols[f"c{i}"] = rng.integers(0, card, n)
    for i in range(n_num):
        v = rng.normal(size=n)
        v[rng.random(n) < 0.05] = np.nan
        cols[f"n{i}"] = v
    cols["click"] = (rng.random(n) < 0.2).astype(np.int64)
    return pl.DataFrame(cols)


MODELS = {  # name: (encoder options, TrialConfig options)
    "plain": ({}, {}),
    "ingredients": ({"ordered_ints": 1000, "max_cardinality": 2000},
                    {"numeric_encoding": "quantile", "cross_layers": 1, "cross_rank": 16, "fm_dim": 8,
                     "ensemble_size": 4}),
}


def build(args, name: str):
    from sparsearch.search.model import build_model_package
    from sparsearch.spaces import Sparsifier, TabularEncoder, TrialConfig, build_model

    encoder_options, config_options = MODELS[name]
    frame = click_log(args.rows, args.categorical, args.numeric)
    enc = TabularEncoder.fit(frame, "click", **encoder_options)
    torch.manual_seed(0)
    config = TrialConfig(widths=tuple(args.widths), depth=len(args.widths), **config_options)
    net = build_model(config, enc.encode(frame)).eval()  # numeric encodings fitted on these rows
    Sparsifier(net, pattern="unstructured", distribution="uniform").prune_to(args.sparsity)
    return frame.drop("click"), build_model_package(net, enc, None)


def interleaved(fns: dict, runs: int) -> dict[str, float]:
    """Median seconds per call of each function, the calls interleaved."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def forms(package, session, rows, cat: np.ndarray, num: np.ndarray) -> dict:
    """The timed calls of one batch: the network alone on codes, and raw rows in."""
    tc, tn = torch.from_numpy(cat), torch.from_numpy(num)
    compact, csr = package.network("compact"), package.network("csr")

    def onnx_end_to_end():
        c, n = package.encoder.transform(rows)
        return session.run(["probabilities"], {"categorical": c, "numeric": n})

    return {
        "onnxruntime_network": lambda: session.run(["probabilities"], {"categorical": cat, "numeric": num}),
        "torch_compact_network": lambda: compact(tc, tn),
        "torch_csr_network": lambda: csr(tc, tn),
        "encoder": lambda: package.encoder.transform(rows),
        "encoder_plus_onnxruntime": onnx_end_to_end,
        "pyfunc_compact": lambda: package.predict(None, rows, {"format": "compact"}),
        "pyfunc_csr": lambda: package.predict(None, rows, {"format": "csr"}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000, help="rows of the generated click log")
    ap.add_argument("--categorical", type=int, default=20)
    ap.add_argument("--numeric", type=int, default=4)
    ap.add_argument("--widths", type=int, nargs="+", default=[512, 512])
    ap.add_argument("--sparsity", type=float, default=0.95)
    ap.add_argument("--runs", type=int, default=50, help="calls per form and round (x10 at batch 1)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", choices=[*MODELS, "both"], default="both",
                    help="plain network, the new ingredients, or both (default)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no results file")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.widths, args.runs, args.repeats = 2000, [64], 3, 1
    import onnxruntime as ort

    from sparsearch.spaces.portable import export_onnx

    torch.set_num_threads(args.threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = args.threads
    rows_out, networks = [], {}
    for name in (list(MODELS) if args.model == "both" else [args.model]):
        raw, package = build(args, name)
        with tempfile.TemporaryDirectory() as tmp:
            info = export_onnx(package.network("compact"), Path(tmp) / "model.onnx")
            session = ort.InferenceSession(str(Path(tmp) / "model.onnx"), opts, providers=["CPUExecutionProvider"])
        networks[name] = {"onnx": info, "encoder": MODELS[name][0], "config": MODELS[name][1]}
        for batch in (1, 256):
            rows = raw.head(batch).to_pandas()
            cat, num = package.encoder.transform(rows)
            expected = package.predict(None, rows).to_numpy()
            got = session.run(["probabilities"], {"categorical": cat, "numeric": num})[0]
            np.testing.assert_allclose(got, expected, atol=1e-5)

            fns = forms(package, session, rows, cat, num)
            runs = args.runs * (10 if batch == 1 else 1)
            rounds: dict[str, list[float]] = {k: [] for k in fns}
            with torch.no_grad():
                for _ in range(args.repeats):
                    for k, v in interleaved(fns, runs).items():
                        rounds[k].append(v / batch * 1e6)
            row = {"model": name, "batch": batch, "calls_per_round": runs, "rounds": args.repeats,
                   "per_row_us": {k: statistics.median(v) for k, v in rounds.items()}, "round_per_row_us": rounds}
            rows_out.append(row)
            print(f"{name} model, batch {batch}: median per-row latency, microseconds ({args.repeats} rounds x "
                  f"{runs} calls)")
            for k, v in row["per_row_us"].items():
                print(f"  {k:<26} {v:10.1f}")
    doc = {"method": {"network": {"widths": args.widths, "sparsity": args.sparsity, "categorical": args.categorical,
                                  "numeric": args.numeric, "models": networks, "onnxruntime": ort.__version__},
                      "threads": args.threads, "statistic": "median over rounds of each round's median call / batch"},
           "results": rows_out}
    if not args.quick:
        _results.save(doc)


if __name__ == "__main__":
    main()
