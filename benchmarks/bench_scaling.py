"""How a training step's time and memory grow with sequence length and depth: HSTU vs SASRec, jagged/padded.

    PYTHONPATH=. python benchmarks/bench_scaling.py                 # GPU: N = 256 ... 8192, depth 1 ... 8
    PYTHONPATH=. python benchmarks/bench_scaling.py --preset small  # CPU: N = 32 ... 256, depth 1 ... 4
    PYTHONPATH=. python benchmarks/bench_scaling.py --out $OUT

One encoder forward + backward per point, HSTU (Triton jagged, Triton padded, PyTorch attention) and SASRec;
the measuring code and the fit are `hstu_tutorial.perf.scaling`. Results go to
benchmarks/results/<machine>_<date>/scaling[_<tag>].{json,md} and to --out if given.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hstu_tutorial.perf import results_folder, save_results
from hstu_tutorial.perf.scaling import run_scaling, to_markdown

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default=None, help="small (CPU sizes) or full (GPU sizes)")
    p.add_argument("--lengths", default="", help="comma-separated N, e.g. 256,1024,4096")
    p.add_argument("--depths", default="", help="comma-separated block counts, e.g. 1,2,4,8")
    p.add_argument("--tokens", type=int, default=None, help="padded positions per batch (B = tokens // N)")
    p.add_argument("--iters", type=int, default=None)
    p.add_argument("--out", default=os.environ.get("OUT"))
    p.add_argument("--tag", default=None, help="result file name suffix: scaling_<tag>.json")
    p.add_argument("--time-budget", type=float, default=1e9)
    p.add_argument("--no-save", action="store_true")
    p.add_argument("--series", default="", help="series names separated by ';' (default: the four main ones)")
    p.add_argument("--no-depth", action="store_true", help="skip the depth sweep")
    p.add_argument("--fixed-kernel-config", action="store_true", help="Triton: no autotuning")
    args = p.parse_args(argv)
    from hstu_tutorial import get_preset

    preset = get_preset(args.preset)
    if args.fixed_kernel_config:
        from hstu_tutorial.ops import set_options

        set_options(autotune=False)
    ints = lambda s: [int(x) for x in s.split(",") if x.strip()] or None  # noqa: E731
    series = [s.strip() for s in args.series.split(";") if s.strip()] or None
    payload = run_scaling(
        preset.name,
        ints(args.lengths),
        ints(args.depths),
        tokens=args.tokens,
        iters=args.iters,
        series=series,
        time_budget_s=args.time_budget,
        depth_sweep=not args.no_depth,
    )
    payload["triton_tiles"] = "fixed config (no autotuning)" if args.fixed_kernel_config else "autotuned"
    md = to_markdown(payload)
    print(md)
    if not args.no_save:
        stem = "scaling" + (f"_{args.tag}" if args.tag else "")
        folder = results_folder(RESULTS_DIR, payload["machine"])
        for path in save_results(payload, stem, [folder, args.out], md):
            print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
