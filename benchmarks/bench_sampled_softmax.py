"""The sampled softmax's Triton kernels (`ops.triton.sampled_softmax`): tiles and backward passes, timed.

    PYTHONPATH=. python3 benchmarks/bench_sampled_softmax.py [--out DIR]     # GPU
    PYTHONPATH=. python benchmarks/bench_sampled_softmax.py --smoke          # CPU interpreter, tiny shapes

At the ML-1M training step's shape (M = 17,344 rows, D = 50, C = 3,883 items, R = 128 negatives, fp32; a tenth
of the rows zero-gradient filler rows with positive column 0, as the trainer's graph step pads its loss rows),
each call replayed as a CUDA graph (median of `--iters` replays, CUDA events):
  * the forward kernel alone, for every (BLOCK_R, num_warps) in `TILES`;
  * forward + backward with each backward pass at the forward's fastest tiles ("segments": dQ from the forward,
    dE summed per item over the sampled positions sorted by item, for every (BLOCK_N, num_warps) in
    `SEGMENT_TILES`; "matrix": the (M, C) score gradient and two matrix products; "atomic": item gradients
    added with fp32 atomics);
  * the whole loss (`losses.sampled_softmax_loss`, normalisation and mean included) with impl "fused" and
    "dense" (the padded matrix-product loss), forward + backward.
The whole-loss rows run the module's shipped tiles and backward. Every variant's loss and gradients are compared
with float64; the exit status is 1 beyond `TOL` of the largest entry (the matrix backward's products are TF32,
as the trainer runs them), or when an input changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial import losses  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402
from hstu_tutorial.perf.measure import graph_replay_ms  # noqa: E402

TILES = [(r, w) for r in (16, 32, 64, 128) for w in (1, 2, 4, 8)]
SEGMENT_TILES = [(n, w) for n in (16, 32, 64, 128) for w in (1, 2, 4)]  # the segments backward's item kernel
TOL = 2e-3  # TF32 products: the dense loss differs from an fp32 one by up to 6.5e-4 (bench_loss.py, H200)


def graph_ms(fn, iters: int) -> float:
    """Median ms of `fn` replayed as a CUDA graph (on a CPU: eager wall-clock calls)."""
    import time

    if not torch.cuda.is_available():
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
        return statistics.median(out)
    return statistics.median(graph_replay_ms(fn, iters))


def make_inputs(M, D, C, R, device, seed=0, filler=0.1) -> dict:
    """Random rows; the last `filler` of them as the trainer's CUDA-graph step pads its loss rows: positive
    column 0 and a zero gradient."""
    g = torch.Generator().manual_seed(seed)
    columns = torch.randint(0, C, (M, 1 + R), generator=g)
    dloss = torch.rand(M, generator=g) / M
    n = int(M * filler)
    columns[M - n :, 0], dloss[M - n :] = 0, 0.0
    return {
        "query": torch.nn.functional.normalize(torch.randn(M, D, generator=g), dim=1).to(device),
        "items": torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1).to(device),
        "columns": columns.to(device),
        "dloss": dloss.to(device),
    }


def reference(inp: dict):
    """Per-row losses and both gradients in float64."""
    q = inp["query"].double().requires_grad_()
    e = inp["items"].double().requires_grad_()
    loss = losses.sampled_softmax_rows(q, e, inp["columns"], 0.05)
    dq, de = torch.autograd.grad(loss, [q, e], inp["dloss"].double())
    return loss.detach(), dq, de


def rel(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def main(argv=None) -> int:
    """Runs the benchmark; the process's TF32 switch is restored afterwards (tests call this in-process)."""
    flag = torch.backends.cuda.matmul.allow_tf32
    try:
        return _main(argv)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = flag


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=17344)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--items", type=int, default=3883)
    ap.add_argument("--negatives", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--smoke", action="store_true", help="CPU interpreter, tiny shapes")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if args.smoke:
        args.rows, args.items, args.negatives, args.iters = 64, 101, 16, 2
    import hstu_tutorial.ops.triton.sampled_softmax as tss

    torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer runs
    inp = make_inputs(args.rows, args.dim, args.items, args.negatives, device)
    before = {k: v.clone() for k, v in inp.items()}
    ref = reference(inp)
    q = inp["query"].clone().requires_grad_()
    e = inp["items"].clone().requires_grad_()
    tiles = TILES if device == "cuda" else [(8, 1), (16, 4)]
    real = tss.GPU_BLOCK_R, tss.GPU_NUM_WARPS, tss.is_interpreter
    real_segments = tss.GPU_SEGMENT_BLOCK, tss.GPU_SEGMENT_WARPS
    rows, worst = [], 0.0

    def fwd():
        return tss.triton_sampled_softmax(q.detach(), e.detach(), inp["columns"], 0.05)

    def fwd_bwd(backward):
        def call():
            q.grad = e.grad = None
            loss = tss.triton_sampled_softmax(q, e, inp["columns"], 0.05, backward=backward)
            loss.backward(inp["dloss"])

        return call

    try:
        tss.is_interpreter = lambda: False  # the GPU's tiling, also in the smoke run's interpreter
        for block_r, warps in tiles:
            tss.GPU_BLOCK_R, tss.GPU_NUM_WARPS = block_r, warps
            worst = max(worst, rel(fwd(), ref[0]))
            rows.append(
                {"what": "forward", "BLOCK_R": block_r, "num_warps": warps, "ms": graph_ms(fwd, args.iters)}
            )
        best = min(rows, key=lambda r: r["ms"])
        tss.GPU_BLOCK_R, tss.GPU_NUM_WARPS = best["BLOCK_R"], best["num_warps"]
        for backward in tss.BACKWARDS:
            # the segments backward at every tile of its item-gradient kernel, the others once
            seg_tiles = SEGMENT_TILES if device == "cuda" else [(4, 1), (64, 2)]
            for block_n, seg_warps in seg_tiles if backward == "segments" else [(None, None)]:
                if block_n is not None:
                    tss.GPU_SEGMENT_BLOCK, tss.GPU_SEGMENT_WARPS = block_n, seg_warps
                call = fwd_bwd(backward)
                call()
                errs = rel(q.grad, ref[1]), rel(e.grad, ref[2])
                worst = max(worst, *errs)
                ms = graph_ms(call, args.iters)
                what = f"forward + backward, {backward}"
                what += f" (BLOCK_N = {block_n}, {seg_warps} warps)" if block_n is not None else ""
                rows.append({"what": what, "BLOCK_R": best["BLOCK_R"], "num_warps": best["num_warps"], "ms": ms,
                             "dq_err": errs[0], "de_err": errs[1], "BLOCK_N": block_n, "segment_warps": seg_warps})  # fmt: skip
    finally:
        tss.GPU_BLOCK_R, tss.GPU_NUM_WARPS, tss.is_interpreter = real
        tss.GPU_SEGMENT_BLOCK, tss.GPU_SEGMENT_WARPS = real_segments
    catalogue = torch.arange(1, args.items + 1, device=device)
    table = torch.cat([torch.zeros(1, args.dim, device=device), inp["items"]]).requires_grad_()
    pos = inp["columns"][:, 0] + 1
    negs = inp["columns"][:, 1:]

    def whole(impl):
        def call():
            table.grad = q.grad = None
            losses.sampled_softmax_loss(
                q, pos, lambda ids: table[ids], catalogue, negatives=negs, impl=impl
            ).backward()

        return call

    for impl in ("fused", "dense"):
        rows.append({"what": f"whole loss, impl={impl}", "ms": graph_ms(whole(impl), args.iters)})
    unchanged = all(torch.equal(before[k], inp[k]) for k in inp)
    info = machine_info()
    lines = [
        f"# The sampled softmax's kernels ({info['device']}, {info['date_utc'][:16]})",
        "",
        f"M = {args.rows}, D = {args.dim}, C = {args.items}, R = {args.negatives}, fp32; CUDA-graph replays, median "
        f"of {args.iters}. Largest error against float64 (relative to the largest entry): {worst:.1e}; inputs "
        f"unchanged: {'yes' if unchanged else 'NO'}.",
        "",
        "| what | BLOCK_R | num_warps | ms |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['what']} | {r.get('BLOCK_R', '-')} | {r.get('num_warps', '-')} | {r['ms']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    save_results({"machine": info, "args": vars(args), "rows": rows, "worst_err": worst, "inputs_unchanged": unchanged},
                 "bench_sampled_softmax", [args.out], text)  # fmt: skip
    return 0 if unchanged and worst < TOL else 1


if __name__ == "__main__":
    sys.exit(main())
