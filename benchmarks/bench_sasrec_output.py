"""The second half of a SASRec block, fused (`ops.triton.sasrec_output`) against spelled out, at the ML-1M step's
shape, and the fused kernels' tile choices.

    PYTHONPATH=. python benchmarks/bench_sasrec_output.py [--tiles 64x4,32x8 --programs 1,2] [--out DIR]  # GPU
    PYTHONPATH=. python benchmarks/bench_sasrec_output.py --smoke                                             # CPU

Rows M = 128 x 200 (a batch of the trainer's padded layout), D = H = 50, FFN dropout 0.2, TF32 products (the
trainer's `tf32 = true`). Each variant runs forward, and forward + backward into the three layers' weights and
both inputs, as one CUDA graph (median of the replays' GPU time). "spelled out" is `SASRecBlock._output` with
the option `fused_sasrec_output` off: nn.Linear (cuBLAS), the Triton LayerNorm, F.dropout. For each tile choice
of the fused kernels: their registers and spills per thread, as Triton compiled them.

`--smoke`: small shapes in the Triton interpreter, for the logic only (no timing worth reading).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial.modules.sasrec import SASRecBlock  # noqa: E402
from hstu_tutorial.ops import use_options  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results, time_call  # noqa: E402
from hstu_tutorial.perf.measure import graph_replay_ms  # noqa: E402


def compiled_stats(kernel) -> list[tuple[int, int]]:
    """(registers, spills) of every compiled version of a Triton kernel in this process ([] if unknown)."""
    found = []
    caches = getattr(kernel, "device_caches", None)
    if caches:
        for entry in caches.values():
            for k in entry[0].values():
                found.append((getattr(k, "n_regs", -1), getattr(k, "n_spills", -1)))
    return found


def run(M: int, D: int, device, fused: bool, backward: bool, iters: int) -> float:
    """Median ms of the half block's forward (and backward) on random inputs."""
    from hstu_tutorial.ops.triton.sasrec_output import sasrec_output

    torch.manual_seed(0)
    block = SASRecBlock(D, 1, D, 0.2, "sdpa-bf16").to(device).train()
    x_q = torch.randn(M, D, device=device, requires_grad=backward)
    a = torch.randn(M, D, device=device, requires_grad=backward)
    g = torch.randn(M, D, device=device)
    leaves = [x_q, a] + [t for m in (block.out_proj, block.ffn1, block.ffn2) for t in (m.weight, m.bias)]

    def step():
        if fused:  # the kernels directly (on a CPU too, in the interpreter)
            out = sasrec_output(a, x_q, block.out_proj, block.ffn1, block.ffn2, dropout=0.2, eps=1e-8)
        else:
            with use_options(fused_sasrec_output=False):
                out = block._output(x_q, a)
        if backward:
            torch.autograd.grad(out, leaves, g)

    if device.type == "cuda":
        return statistics.median(graph_replay_ms(step, iters))
    return time_call(step, device, warmup=1, iters=2)["median_ms"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", default="", help="fused kernels' (BLOCK_M x warps) choices, e.g. 64x4,32x4")
    ap.add_argument("--programs", default="", help="backward programs per multiprocessor to try, e.g. 1,2")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True  # the trainer's `tf32 = true`
    try:
        return measure(args)
    finally:  # a process-wide switch: the caller's (e.g. the next test's) setting comes back
        torch.backends.cuda.matmul.allow_tf32 = before


def measure(args) -> int:
    """Every row of the table for the parsed arguments (see the module docstring)."""
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    from hstu_tutorial.ops.triton import sasrec_output as so

    M, D = (128 * 200, 50) if cuda else (300, 50)
    tiles = [tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",") if t]
    programs = [int(p) for p in args.programs.split(",") if p] or [so.GPU_BWD_PROGRAMS_PER_SM]
    default = (so.GPU_FWD_TILE, so.GPU_BWD_TILE, so.GPU_BWD_PROGRAMS_PER_SM)
    configs = [default] + [(t, t, n) for t in tiles for n in programs]  # the shipped choice, then the sweep
    base = {
        "fwd": run(M, D, device, False, False, args.iters),
        "fwd+bwd": run(M, D, device, False, True, args.iters),
    }
    rows = [dict(variant="spelled out (nn.Linear, LayerNorm, F.dropout)", **base)]
    try:
        for i, (fwd_tile, bwd_tile, n) in enumerate(configs):
            so.GPU_FWD_TILE, so.GPU_BWD_TILE, so.GPU_BWD_PROGRAMS_PER_SM = fwd_tile, bwd_tile, n
            for k in (so.sasrec_output_fwd_kernel, so.sasrec_output_bwd_kernel):
                getattr(k, "device_caches", {}).clear()  # recompile: the stats below are this tile's
            r = dict(
                variant=f"fused{' (shipped)' if i == 0 else ''}, (BLOCK_M, warps) forward {fwd_tile}, "
                f"backward {bwd_tile}, backward programs <= {n} per multiprocessor"
            )
            try:
                r["fwd"] = run(M, D, device, True, False, args.iters)
                r["fwd+bwd"] = run(M, D, device, True, True, args.iters)
            except Exception as e:  # e.g. OutOfResources for a tile too big: reported, the others go on
                r["error"] = f"{type(e).__name__}: {str(e)[:120]}"
                r["fwd"] = r.get("fwd", float("nan"))
                r["fwd+bwd"] = float("nan")
            fs, bs = compiled_stats(so.sasrec_output_fwd_kernel), compiled_stats(so.sasrec_output_bwd_kernel)
            r["regs/spills"] = f"fwd {fs[-1] if fs else '?'}, bwd {bs[-1] if bs else '?'}"
            rows.append(r)
    finally:
        so.GPU_FWD_TILE, so.GPU_BWD_TILE, so.GPU_BWD_PROGRAMS_PER_SM = default
    lines = [
        f"# SASRec block's second half, fused against spelled out ({machine_info().get('device', device)})",
        "",
        f"M = {M} rows, D = H = {D}, dropout 0.2, TF32; median of {args.iters} CUDA-graph replays (GPU ms).",
        "",
        "| variant | forward ms | forward + backward ms | vs spelled out (f+b) | registers, spills |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['fwd']:.4f} | {r['fwd+bwd']:.4f} | {r['fwd+bwd'] / base['fwd+bwd']:.2f}x | "
            f"{r.get('regs/spills', '-')}{' ' + r['error'] if 'error' in r else ''} |"
        )
    text = "\n".join(lines + ["", "Command:", "", "    python " + " ".join(sys.argv), ""])
    print(text)
    if args.out:
        save_results({"rows": rows, "machine": machine_info()}, "bench_sasrec_output", [args.out], text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
