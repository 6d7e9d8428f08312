"""Relative-bias weight gradients in the Triton backward: in-kernel atomics vs a dense (B, H, N, N) buffer.

    PYTHONPATH=. python benchmarks/bench_rel_bias_grad.py [--out DIR]

For each shape: the two modes' gradients against each other (q, k, v, pos_w, ts_w; relative error), and
forward+backward time and peak memory of each (median of timed calls), and of the same call with the bias
weights frozen (no bias gradient: the baseline the two modes add to). Fixed tiles (autotune off). Shapes:
the ML-1M step (B=128, N=200, H=1, d=50, lengths as in ML-1M-like data: uniform in [N/4, N]) and long
sequences (N up to 8192).
Needs a GPU (on a CPU the interpreter is far too slow for these shapes; the unit tests check both modes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial.ops import RelativeAttentionBias, use_options  # noqa: E402
from hstu_tutorial.ops.triton import triton_hstu_attention_rel_bias  # noqa: E402
from hstu_tutorial.perf import machine_info  # noqa: E402

SHAPES = [
    (128, 200, 1, 50, torch.float32),
    (128, 200, 1, 50, torch.bfloat16),
    (32, 1024, 2, 64, torch.bfloat16),
    (16, 2048, 2, 64, torch.bfloat16),
    (8, 4096, 2, 64, torch.bfloat16),
    (4, 8192, 2, 64, torch.bfloat16),
]


def case(B, N, H, d, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(N // 4, N + 1, (B,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).cuda()
    T = int(lengths.sum())
    q, k, v = (
        torch.randn(T, H, d, generator=g).mul(0.3).to("cuda", dtype).requires_grad_() for _ in range(3)
    )
    ts = torch.cumsum(torch.randint(1, 10**5, (T,), generator=g), 0).cuda()
    nts = ts + torch.randint(0, 10**6, (T,), generator=g).cuda()
    bias = RelativeAttentionBias(max_len=N + 11, num_buckets=128).cuda()
    with torch.no_grad():
        bias.pos_w.normal_(0, 0.1)
        bias.ts_w.normal_(0, 0.1)
    grad_out = torch.randn(T, H, d, generator=g).to("cuda", dtype)
    return q, k, v, offsets, ts, nts, bias, grad_out, N


def run(mode, c):
    """Forward + backward; mode "atomic" / "dense" (how the weight gradients are formed) or "frozen" (the bias
    weights detached: the kernels compute no bias gradient at all, the baseline both modes add to)."""
    q, k, v, offsets, ts, nts, bias, grad_out, N = c
    pos_w, ts_w = bias.pos_w, bias.ts_w
    if mode == "frozen":
        pos_w, ts_w = pos_w.detach(), ts_w.detach()
    with use_options(
        rel_bias_grad="auto" if mode == "frozen" else mode
    ):  # the backward follows the forward's
        out = triton_hstu_attention_rel_bias(q, k, v, offsets, ts, nts, pos_w, ts_w, max_len=N)
    if mode == "frozen":
        return torch.autograd.grad(out, (q, k, v), grad_out)
    return torch.autograd.grad(out, (q, k, v, pos_w, ts_w), grad_out)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12)).item()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    with use_options(autotune=False):
        rows = measure(args)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        payload = {"machine": machine_info(), "rows": rows}
        (Path(args.out) / "rel_bias_grad.json").write_text(json.dumps(payload, indent=1))
    return 0


def measure(args) -> list[dict]:
    rows = []
    for B, N, H, d, dtype in SHAPES:
        c = case(B, N, H, d, dtype)
        ga, gd = run("atomic", c), run("dense", c)
        errs = {n: rel(a, b) for n, a, b in zip(["dq", "dk", "dv", "dpos_w", "dts_w"], ga, gd)}
        row = {
            "B": B,
            "N": N,
            "H": H,
            "d": d,
            "dtype": str(dtype).split(".")[-1],
            "rel_err_atomic_vs_dense": errs,
        }
        for mode in ("atomic", "dense", "frozen"):
            for _ in range(3):
                run(mode, c)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            times = []
            for _ in range(args.iters):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                run(mode, c)
                e.record()
                torch.cuda.synchronize()
                times.append(s.elapsed_time(e))
            row[f"{mode}_ms"] = statistics.median(times)
            row[f"{mode}_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        print(
            f"B={B} N={N} H={H} d={d} {row['dtype']}: atomic {row['atomic_ms']:.3f} ms "
            f"{row['atomic_peak_mib']:.0f} MiB | dense {row['dense_ms']:.3f} ms "
            f"{row['dense_peak_mib']:.0f} MiB | no bias gradient {row['frozen_ms']:.3f} ms | max rel err {max(errs.values()):.1e} ({errs})",
            flush=True,
        )
        rows.append(row)
        del c
        torch.cuda.empty_cache()
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
