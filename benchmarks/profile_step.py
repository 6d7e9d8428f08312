"""Where the trainer's time goes: one training step and one evaluation, kernel by kernel (torch.profiler).

For each config: the CUDA-graph step (median of timed replays), the evaluation of validation + test
(median of timed calls), and the top kernels of one eager step and one evaluation by GPU time.

    PYTHONPATH=. python benchmarks/profile_step.py --data-dir data/ml-1m-u2999 --no-autotune \
        --runs sasrec,hstu,hstu-large [--variants bf16=true] [--extra KEY=VALUE] [--out DIR]

On a CPU it runs the synthetic configs (small preset) so the script itself stays tested.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hstu_tutorial.perf import machine_info, sync, time_call
from hstu_tutorial.train import Trainer, load_config

CONFIGS = {
    "sasrec": "ml-1m/sasrec-sampled-softmax-n128-final",
    "hstu": "ml-1m/hstu-sampled-softmax-n128-final",
    "hstu-large": "ml-1m/hstu-sampled-softmax-n128-large-final",
}
CPU_CONFIGS = {
    "sasrec": "synthetic/sasrec-small",
    "hstu": "synthetic/hstu-small",
    "hstu-large": "synthetic/hstu-small",
}


def _median_ms(fn, device, warmup: int, iters: int) -> float:
    return time_call(fn, device, warmup=warmup, iters=iters)["median_ms"]


def top_kernels(fn, device, top: int) -> tuple[list[dict], float, list[dict]]:
    """Run `fn` once under torch.profiler: the `top` GPU (or CPU) ops by self time, their total (ms), and on a
    GPU the `top` aten ops by the GPU time they launched (an op's self device time; [] on a CPU)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        fn()
        sync(device)
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = [e for e in prof.key_averages() if getattr(e, attr, 0) > 0]
    ops = []
    if device.type == "cuda":  # kernels only (an op's self device time counts its kernels)
        ops = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CPU]
        events = [e for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    total = sum(getattr(e, attr) for e in events) / 1e3

    def rows(found):
        found = sorted(found, key=lambda e: getattr(e, attr), reverse=True)[:top]
        return [{"name": e.key[:90], "ms": getattr(e, attr) / 1e3, "calls": e.count} for e in found]

    kernels = [dict(r, share=r["ms"] / total) for r in rows(events)]
    return kernels, total, rows(ops)


def profile_run(name: str, config: str, overrides: dict, top: int) -> dict:
    cfg = load_config(config, overrides)
    tr = Trainer(cfg, verbose=False)
    device = tr.device
    rs = tr.splits["train"]
    B = cfg.batch_size
    order = torch.randperm(rs.num_users, device=device)
    index = order[:B]
    out = {"run": name, "config": config, "overrides": overrides, "model": cfg.model}
    if tr.use_graphs:
        tr.capture_graph()
        # the batch's supervised positions counted once, as the epoch loop does, not synced in every step
        rows = tr.supervised_count(index) if tr.loss_rows is not None else None
        out["loss_rows"] = tr.loss_rows
        out["graph_step_ms"] = _median_ms(lambda: tr.step(index, supervised=rows), device, 10, 50)
    totals = rs.batch_totals(index, B) if tr.layout == "jagged" else None
    out["layout"] = tr.layout
    out["eager_step_ms"] = _median_ms(lambda: tr.step(index, totals, use_graph=False), device, 3, 20)
    out["eval_ms"] = _median_ms(lambda: tr.evaluate(("valid", "test")), device, 2, 5)
    out["eval_split_ms"] = {s: _median_ms(lambda s=s: tr.ranks(s), device, 1, 5) for s in ("valid", "test")}
    out["step_kernels"], out["step_kernel_ms"], out["step_ops"] = top_kernels(
        lambda: tr.step(index, totals, use_graph=False), device, top
    )
    out["eval_kernels"], out["eval_kernel_ms"], out["eval_ops"] = top_kernels(
        lambda: tr.evaluate(("valid", "test")), device, top
    )
    steps = -(-rs.num_users // B)
    step_ms = out.get("graph_step_ms", out["eager_step_ms"])
    out["epoch_estimate_s"] = (steps * step_ms + out["eval_ms"]) / 1e3
    tr.graph = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def markdown(results: list[dict], info: dict) -> str:
    lines = [
        "# Where a step and an evaluation spend their time",
        "",
        f"{info['device']}, torch {info['torch']}, {info['date_utc']}.",
        "",
        "| run | overrides | graph step ms | eager step ms | eval (valid+test) ms | est. s/epoch |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        ov = ", ".join(f"{k}={v}" for k, v in r["overrides"].items() if k not in ("data_dir",)) or "-"
        g = f"{r['graph_step_ms']:.2f}" if "graph_step_ms" in r else "-"
        lines.append(
            f"| {r['run']} | {ov} | {g} | {r['eager_step_ms']:.2f} | {r['eval_ms']:.1f} | "
            f"{r['epoch_estimate_s']:.3f} |"
        )
    for r in results:
        for what in ("step", "eval"):
            lines += [
                "",
                f"## {r['run']}: {what} kernels (total {r[what + '_kernel_ms']:.2f} ms)",
                "",
                "| kernel | ms | calls | share |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| `{k['name']}` | {k['ms']:.3f} | {k['calls']} | {k['share']:.0%} |"
                for k in r[what + "_kernels"]
            ]
            if r.get(what + "_ops"):
                lines += [
                    "",
                    f"{what}: aten ops by the GPU time they launch",
                    "",
                    "| op | ms | calls |",
                    "|---|---|---|",
                ]
                lines += [f"| `{o['name']}` | {o['ms']:.3f} | {o['calls']} |" for o in r[what + "_ops"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="sasrec,hstu,hstu-large")
    ap.add_argument("--data-dir", default="data/ml-1m-u2999")
    ap.add_argument("--extra", action="append", default=[], help="KEY=VALUE set on every run")
    ap.add_argument(
        "--variants",
        action="append",
        default=[],
        help="';'-separated KEY=VALUE lists; each runs every config once more with them",
    )
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-autotune", action="store_true", help="Triton kernels: default tiles, no autotuning")
    ap.add_argument("--out", default="", help="folder for profile.json / profile.md")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    info = machine_info()
    results = []
    for variant in [""] + args.variants:
        for run in args.runs.split(","):
            overrides = {
                "progress": "false",
                "tensorboard": "false",
                "save_checkpoints": "false",
                "autotune": "false" if args.no_autotune else "true",
            }
            if cuda:
                config = CONFIGS[run]
                overrides["data_dir"] = args.data_dir
            else:
                config = CPU_CONFIGS[run]
            for kv in args.extra + [v for v in variant.split(";") if v]:
                k, v = kv.split("=", 1)
                overrides[k] = v
            t0 = time.perf_counter()
            r = profile_run(run, config, overrides, args.top)
            r["wall_s"] = time.perf_counter() - t0
            print(
                f"{run} {variant or '-'}: graph {r.get('graph_step_ms', float('nan')):.2f} ms, eager "
                f"{r['eager_step_ms']:.2f} ms, eval {r['eval_ms']:.1f} ms ({r['eval_split_ms']}), "
                f"epoch ~{r['epoch_estimate_s']:.3f} s",
                flush=True,
            )
            results.append(r)
    md = markdown(results, info)
    print(md)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        payload = {"machine": info, "results": results}
        (Path(args.out) / "profile.json").write_text(json.dumps(payload, indent=1))
        (Path(args.out) / "profile.md").write_text(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
