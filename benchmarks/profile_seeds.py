"""Do the seeds of `--seeds` overlap on the GPU? A kernel trace of one seed and of several in one process.

    PYTHONPATH=. python benchmarks/profile_seeds.py --data-dir data/ml-1m-u2999 --out $OUT/profile_seeds

For 1 seed and for `--seeds` seeds (default 4), HSTU's ML-1M config trains `--epochs` epochs (the first one
untraced: compile, CUDA graph capture) under the PyTorch profiler with CUDA activities. From the kernels of the
traced epochs it reports: the kernels' summed time, the time during which at least one kernel ran (the union
of their intervals), their ratio (the average number of kernels running at once: 1.0 means the streams never
overlap), the number of streams seen, the wall time, and the wall time not covered by any kernel (the GPU
idle, waiting for the host), and per kernel name the mean duration alone and with the seeds together: the
kernels that slow down most when they share the GPU show which resource the seeds compete for. Writes
`profile_seeds.json` and `profile_seeds.md`. `--smoke`: CPU, synthetic,
logic only (no CUDA kernels to trace).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by `intervals` [(start, end)] (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def trace(cfg, seeds: list[int], dataset, epochs: int) -> dict:
    """Train `seeds` for `epochs` epochs in one process; the last epochs traced. Returns the overlap figures."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from hstu_tutorial.training.multi_seed import train_seeds

    cuda = torch.cuda.is_available()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    state = {"epochs_seen": 0, "prof": None, "t0": None}
    total_epochs = epochs * len(seeds)

    def on_epoch(*_):  # untraced first epoch of every seed, then trace until the end
        state["epochs_seen"] += 1
        if state["epochs_seen"] == len(seeds) and state["prof"] is None:
            if cuda:
                torch.cuda.synchronize()
            state["prof"] = profile(activities=acts)
            state["prof"].__enter__()
            state["t0"] = time.perf_counter()

    try:
        cfg1 = dataclasses.replace(cfg, num_epochs=epochs)
        t_all = time.perf_counter()
        train_seeds(cfg1, seeds, dataset=dataset, verbose=False, write=False, callback=on_epoch)
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - (state["t0"] or t_all)
    finally:
        if state["prof"] is not None:
            state["prof"].__exit__(None, None, None)
    kernels, streams, by_name = [], set(), {}
    if state["prof"] is not None:
        for e in state["prof"].events():
            if getattr(e, "device_type", None) is not None and str(e.device_type).endswith("CUDA"):
                start, end = e.time_range.start / 1e6, e.time_range.end / 1e6
                kernels.append((start, end))
                streams.add(getattr(e, "device_resource_id", None))
                entry = by_name.setdefault(e.name[:90], [0, 0.0])
                entry[0] += 1
                entry[1] += end - start
    busy = sum(b - a for a, b in kernels)
    covered = union_length(kernels)
    return {
        "seeds": seeds,
        "traced_epochs": epochs - 1,
        "epochs_total": total_epochs,
        "kernels": len(kernels),
        "streams": len(streams),
        "kernel_sum_s": busy,
        "kernel_union_s": covered,
        "concurrency": busy / covered if covered else None,
        "wall_s": wall,
        "gpu_idle_s": wall - covered if kernels else None,
        "by_kernel": {k: {"calls": c, "sum_s": t} for k, (c, t) in by_name.items()},
    }


def slowdown_rows(alone: dict, together: dict, top: int = 15) -> list[dict]:
    """Per kernel name in both traces: mean duration alone and together, their ratio, and the kernel's share of
    the extra summed time (together's sum minus alone's sum scaled to the same number of calls); the `top`
    kernels by that extra time."""
    rows = []
    for name, t in together.items():
        a = alone.get(name)
        if not a or not a["calls"] or not t["calls"]:
            continue
        mean_a, mean_t = a["sum_s"] / a["calls"], t["sum_s"] / t["calls"]
        rows.append({"kernel": name, "calls_alone": a["calls"], "calls_together": t["calls"],
                     "mean_us_alone": 1e6 * mean_a, "mean_us_together": 1e6 * mean_t,
                     "ratio": mean_t / mean_a if mean_a else None,
                     "extra_s": t["sum_s"] - mean_a * t["calls"]})  # fmt: skip
    extra = sum(max(r["extra_s"], 0.0) for r in rows)
    for r in rows:
        r["extra_share"] = max(r["extra_s"], 0.0) / extra if extra else 0.0
    return sorted(rows, key=lambda r: r["extra_s"], reverse=True)[:top]


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data/ml-1m-u2999")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/h200_2026-12-01/profile_seeds"))
    p.add_argument("--seeds", default="42,1,2,3")
    p.add_argument("--epochs", type=int, default=4, help="epochs per seed; the first is not traced")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)

    import torch

    from hstu_tutorial.data import get_reco_dataset
    from hstu_tutorial.train import load_config

    name = "synthetic/hstu-small" if args.smoke else "ml-1m/hstu-sampled-softmax-n128-final"
    over = dict(
        progress=False,
        tensorboard=False,
        save_checkpoints=False,
        timestamp_run_dir=False,
        exp_dir=str(Path(args.out) / "exps"),
    )
    if not args.smoke:
        over["data_dir"] = args.data_dir
    cfg = load_config(name, over)
    if args.smoke:
        ds = get_reco_dataset("synthetic", cfg.max_seq_len, protocol=cfg.protocol, verbose=False)
    else:
        ds = get_reco_dataset("ml-1m", cfg.max_seq_len, args.data_dir, protocol=cfg.protocol, verbose=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for group in ([seeds[0]], seeds):
        r = trace(cfg, group, ds, args.epochs)
        rows.append(r)
        print(json.dumps(r), flush=True)
    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"machine": machine, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "config": name}
    slow = slowdown_rows(rows[0]["by_kernel"], rows[-1]["by_kernel"]) if len(rows) > 1 else []
    (out / "profile_seeds.json").write_text(json.dumps({**meta, "rows": rows, "slowdown": slow}, indent=1))
    lines = [
        f"# Do the seeds overlap? ({machine}, {meta['date']})",
        "",
        f"{name}; traced epochs per seed: {args.epochs - 1} (after one untraced epoch).",
        "",
        "| seeds | kernels | streams | kernel time summed, s | GPU busy (union), s | kernels at once | wall, s | GPU idle, s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        conc = "-" if r["concurrency"] is None else f"{r['concurrency']:.2f}"
        idle = "-" if r["gpu_idle_s"] is None else f"{r['gpu_idle_s']:.3f}"
        lines.append(
            f"| {len(r['seeds'])} | {r['kernels']} | {r['streams']} | {r['kernel_sum_s']:.3f} | "
            f"{r['kernel_union_s']:.3f} | {conc} | {r['wall_s']:.3f} | {idle} |"
        )
    if slow:
        lines += [
            "",
            f"Kernels that slow down most with {len(rows[-1]['seeds'])} seeds together (by the summed time they add):",
            "",
            "| kernel | mean µs alone | mean µs together | ratio | share of the added time |",
            "|---|---|---|---|---|",
        ]
        for r in slow:
            lines.append(
                f"| `{r['kernel'][:70]}` | {r['mean_us_alone']:.1f} | {r['mean_us_together']:.1f} | "
                f"{r['ratio']:.2f} | {r['extra_share']:.0%} |"
            )
    lines += ["", "Command:", "", "    python benchmarks/profile_seeds.py " + " ".join(argv or sys.argv[1:])]
    (out / "profile_seeds.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


if __name__ == "__main__":
    main()
