"""Each seed trained alone against the same seed inside `--seeds` (one process, the seeds on CUDA streams):
do the runs agree, and if not, from which epoch on and in which direction?

    PYTHONPATH=. python benchmarks/seeds_alone_vs_together.py --data-dir data/ml-1m-u2999            # GPU
    PYTHONPATH=. python benchmarks/seeds_alone_vs_together.py --data-dir data/ml-1m-u2999 --blocking
    PYTHONPATH=. python benchmarks/seeds_alone_vs_together.py --smoke                                # CPU

`hstu-train --seeds` is meant to give each seed the run `--set seed=<s>` gives (training/multi_seed.py). On
a CPU the seeds take turns in one thread and the histories agree to the bit (tests/test_multi_seed.py). On a
GPU the seeds' kernels overlap. A run alone is reproducible there to about 1e-3 in test HR@10 (seed 42 of the
ML-1M HSTU in seven processes: .2964 to .2976, NVIDIA H200, 2026-12-01), so a larger, one-sided gap points at
the concurrent path. This script found one: the seeds' CUDA graphs shared a cuBLAS workspace (HR@10 .003 lower
together); since each graph is captured on its own stream the gap is gone
(benchmarks/results/h200_2026-12-01/perf/graph_streams/README.md).

For every seed of --seeds: one run alone (its own process), then `--repeats` processes of `--seeds` (with
`--blocking`, under CUDA_LAUNCH_BLOCKING=1: every kernel launch waits for the kernel, so no two seeds'
kernels run at once). Prints, per seed, the test HR@10 / NDCG@10 (mean of the reference protocol's last
epochs) alone and together, their difference, and the first epoch whose loss or metrics differ by more
than --tol; then the mean paired difference and how many pairs are below zero. All runs share one Triton
cache (compile time is not what is compared). `--out DIR` writes seeds_alone_vs_together.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_seeds import MODELS, SMOKE, _results, command, run_case  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("hr@10", "ndcg@10")


def first_apart(a: list[dict], b: list[dict], tol: float) -> int | None:
    """The first epoch whose loss or any validation/test metric differs by more than `tol` between two
    histories; None when every epoch agrees (a history that ends early differs at its first missing epoch)."""
    for e, (ra, rb) in enumerate(zip(a, b)):
        diffs = [abs(ra["loss"] - rb["loss"])]
        diffs += [abs(ra[s][k] - rb[s][k]) for s in ("valid", "test") for k in ra[s]]
        if max(diffs) > tol:
            return e
    return None if len(a) == len(b) else min(len(a), len(b))


def _summary(res: dict) -> dict:
    test = res["reference_protocol"]["test_mean"]
    return {"test": {k: test[k] for k in METRICS}, "history": res["history"]}


def compare(config: str, args, exp_dir: Path, env: dict) -> dict:
    """Alone and together runs of one config; returns per-seed figures and the paired differences."""
    seeds = [int(s) for s in args.seeds.split(",")]
    out = {"config": config, "seeds": seeds, "alone": {}, "together": [], "failed": []}
    for s in seeds:
        name = f"alone-s{s}"
        cmd = command(config, name, None, args, exp_dir, seed=s)
        rc, _ = run_case(cmd, exp_dir / f"{name}.log", args.timeout, env)
        if rc == 0:
            out["alone"][s] = _summary(_results(exp_dir, name))
        else:
            out["failed"].append(f"{name} (exit {rc})")
    together_env = dict(env, CUDA_LAUNCH_BLOCKING="1") if args.blocking else env
    for r in range(args.repeats):
        name = f"together-r{r}"
        cmd = command(config, name, args.seeds, args, exp_dir)
        rc, _ = run_case(cmd, exp_dir / f"{name}.log", args.timeout, together_env)
        if rc != 0:
            out["failed"].append(f"{name} (exit {rc})")
            continue
        out["together"].append({s: _summary(_results(exp_dir, f"{name}-s{s}")) for s in seeds})
    pairs = []
    for rep in out["together"]:
        for s, run in rep.items():
            if s in out["alone"]:
                alone = out["alone"][s]
                pairs.append(
                    {
                        "seed": s,
                        **{f"d_{k}": run["test"][k] - alone["test"][k] for k in METRICS},
                        "first_apart": first_apart(alone["history"], run["history"], args.tol),
                    }
                )
    out["pairs"] = pairs
    return out


def markdown(result: dict, args, device: str) -> str:
    reps = len(result["together"])
    mode = "one thread (CPU)" if device == "cpu" else "CUDA_LAUNCH_BLOCKING=1" if args.blocking else "streams"
    lines = [
        f"# Each seed alone against the same seed in `--seeds {args.seeds}` ({device}, "
        f"{time.strftime('%Y-%m-%d')})",
        "",
        f"Config `{result['config']}`; together: {reps} process(es), {mode}. Test HR@10 / NDCG@10, mean of the "
        f"reference protocol's last epochs; 'apart from' = first epoch with a loss or metric more than "
        f"{args.tol:g} away from the run alone.",
        "",
        "| seed | alone | " + " | ".join(f"together {r + 1}" for r in range(reps)) + " | apart from |",
        "|---|---|" + "---|" * reps + "---|",
    ]
    fmt = lambda d: f"{d['test']['hr@10']:.4f} / {d['test']['ndcg@10']:.4f}"  # noqa: E731
    for s in result["seeds"]:
        alone = result["alone"].get(s)
        cells = [fmt(rep[s]) for rep in result["together"]]
        apart = [
            "never" if p["first_apart"] is None else f"epoch {p['first_apart']}"
            for p in result["pairs"]
            if p["seed"] == s
        ]
        lines.append(
            f"| {s} | {fmt(alone) if alone else 'failed'} | " + " | ".join(cells) + f" | {', '.join(apart)} |"
        )
    pairs = result["pairs"]
    if pairs:
        mean = {k: sum(p[f"d_{k}"] for p in pairs) / len(pairs) for k in METRICS}
        below = sum(p["d_hr@10"] < 0 for p in pairs)
        lines += [
            "",
            f"Together minus alone over {len(pairs)} pairs: HR@10 {mean['hr@10']:+.4f}, NDCG@10 "
            f"{mean['ndcg@10']:+.4f} on average; HR@10 lower together in {below} of {len(pairs)}.",
        ]
    if result["failed"]:
        lines += ["", "Failed: " + ", ".join(result["failed"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="", help="the ML-1M folder, e.g. data/ml-1m-u2999")
    ap.add_argument("--model", default="hstu", choices=sorted(MODELS))
    ap.add_argument("--seeds", default="42,1,2,3")
    ap.add_argument("--repeats", type=int, default=2, help="processes of --seeds")
    ap.add_argument("--blocking", action="store_true", help="the --seeds runs under CUDA_LAUNCH_BLOCKING=1")
    ap.add_argument("--epochs", type=int, default=0, help="shorten the runs (default: the config's)")
    ap.add_argument("--tol", type=float, default=1e-4, help="'apart' threshold on losses and metrics")
    ap.add_argument("--smoke", action="store_true", help="CPU, synthetic data, 2 epochs, seeds 1,2, 1 repeat")
    ap.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE", help="a --set for every run")
    ap.add_argument("--exp-dir", default="", help="where the runs go (default: a temporary folder)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per process")
    ap.add_argument("--out", default="", help="write seeds_alone_vs_together.json and .md here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.epochs = args.epochs or 2
        args.seeds, args.repeats = ("1,2", 1) if args.seeds == "42,1,2,3" else (args.seeds, args.repeats)
    args.extra = [*args.extra, "save_checkpoints=false", "tensorboard=false"]
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("no CUDA GPU: the question is about GPU streams; use --smoke on a CPU", file=sys.stderr)
        return 2
    config = (SMOKE if args.smoke else MODELS)[args.model]
    with tempfile.TemporaryDirectory(prefix="seeds-alone-") as tmp:
        exp_dir = Path(args.exp_dir or tmp).resolve()
        exp_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.setdefault("TRITON_CACHE_DIR", str(exp_dir / "triton-cache"))
        result = compare(config, args, exp_dir, env)
    text = markdown(result, args, device)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        slim = {**result, "alone": {s: a["test"] for s, a in result["alone"].items()}}
        slim["together"] = [{s: r["test"] for s, r in rep.items()} for rep in result["together"]]
        payload = {"device": device, "blocking": args.blocking, **slim}
        (out / "seeds_alone_vs_together.json").write_text(json.dumps(payload, indent=1))
        (out / "seeds_alone_vs_together.md").write_text(text)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
