"""Measure every speed and memory lever of the trainer on the same HSTU model and data; print one table.

    PYTHONPATH=. python benchmarks/bench_levers.py                  # full preset on a GPU: ml-1m-u2999
    PYTHONPATH=. python benchmarks/bench_levers.py --preset small   # CPU: synthetic data, CPU levers only
    PYTHONPATH=. python benchmarks/bench_levers.py --out $OUT --only precision,attention

Model and data: the paper's ML-1M HSTU (2 blocks, 1 head, d=50, batch 128, 128 negatives) on
data/ml-1m-u2999 (ML-1M's users 1-2999) when present, otherwise the synthetic set of ML-1M's size; the
small preset uses the CI-size synthetic set and the small HSTU config. Each row changes one thing against
the row named in its `vs` column, and reports one training step (median of synchronised steps), one
epoch (a full pass over the training split, warm-up excluded), the first epoch (with warm-up: autotuning,
compilation, graph capture), tokens/s, and memory: the GPU's peak allocation during training, or on a CPU
an estimate (parameters + gradients + AdamW state + activations kept for backward).

Results go to benchmarks/results/<machine>_<date>/levers[_<tag>].{json,md} (machine: h200, cpu, ...) and to
--out if given. The measuring code is `hstu_tutorial.perf.levers`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from hstu_tutorial.perf import results_folder, save_results
from hstu_tutorial.perf.levers import run_levers, to_markdown

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=None, help="small or full (default: full on a GPU, small on a CPU)")
    p.add_argument("--only", default="", help="comma-separated row ids or lever groups to run")
    p.add_argument("--out", default=os.environ.get("OUT"), help="also save the results in this folder")
    p.add_argument("--tag", default=None, help="result file name suffix: levers_<tag>.json")
    p.add_argument(
        "--time-budget", type=float, default=1e9, help="skip remaining rows after this many seconds"
    )
    p.add_argument("--step-iters", type=int, default=10)
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per row (0: steps only)")
    p.add_argument("--no-save", action="store_true", help="print only")
    p.add_argument(
        "--fixed-kernel-config",
        action="store_true",
        help="Triton: one fixed tile config instead of autotuning (saves ~1 min of tuning)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    from hstu_tutorial import get_preset

    preset = get_preset(args.preset)
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    payload = run_levers(
        preset,
        only=only,
        time_budget_s=args.time_budget,
        step_iters=args.step_iters,
        epochs=args.epochs,
        autotune=not args.fixed_kernel_config,  # every lever's config says autotune = false
    )
    md = to_markdown(payload)
    print(md)
    if not args.no_save:
        stem = "levers" + (f"_{args.tag}" if args.tag else "")
        folder = results_folder(RESULTS_DIR, payload["machine"])
        for path in save_results(payload, stem, [folder, args.out], md):
            print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
