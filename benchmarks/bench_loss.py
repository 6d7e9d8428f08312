"""The sampled softmax loss alone, forward + backward, at the shape of the ML-1M training step.

    PYTHONPATH=. python benchmarks/bench_loss.py [--rows 17344] [--out DIR]     # GPU
    PYTHONPATH=. python benchmarks/bench_loss.py --smoke                        # CPU, small shapes

Variants, timed in alternation in one process (on a GPU: replays of a CUDA graph of forward + backward, as in
the trainer's step, CUDA events, median of `--iters` replays; on a CPU: eager calls):
  * dense, padded: `losses._SampledColumns` as the trainer runs it, query and items padded with zeros to
    multiples of `losses.GEMM_ALIGN` (D 50 -> 56, C 3,883 -> 3,888);
  * dense, unpadded: the same with `GEMM_ALIGN = 1` (rows of 50 and 3,883 floats, not 16-byte aligned);
  * gather: the reference's formulation, (M, R, D) negative embeddings.
Every variant's loss and gradients are compared with the unpadded dense variant's on the same inputs and
negatives (TF32 as the trainer runs it), the inputs are checked unchanged, and on a GPU the matrix-product
kernels each variant launched are listed (torch.profiler), which shows whether cuBLAS used aligned loads.

`--step-data DIR` adds the whole training step: for the ML-1M HSTU and SASRec configs, the trainer's CUDA-graph
step captured with the padded and the unpadded loss, whole epochs of each replayed in alternation
(`--step-rounds` each, median), as `bench_loss_rows.py` does for the row budget.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial import losses  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402
from hstu_tutorial.perf.measure import sync  # noqa: E402

VARIANTS = ("dense, padded", "dense, unpadded", "gather")


@contextlib.contextmanager
def gemm_align(n: int):
    real = losses.GEMM_ALIGN
    losses.GEMM_ALIGN = n
    try:
        yield
    finally:
        losses.GEMM_ALIGN = real


def make_inputs(rows: int, dim: int, items: int, negatives: int, device, seed: int = 0) -> dict:
    g = torch.Generator(device="cpu").manual_seed(seed)
    catalogue = torch.arange(1, items + 1)  # (C,) ids 1..C
    table = torch.randn(items + 1, dim, generator=g)  # (C + 1, D) row 0: padding
    return {
        "query": torch.randn(rows, dim, generator=g).to(device),
        "table": table.to(device),
        "positive_ids": torch.randint(1, items + 1, (rows,), generator=g).to(device),
        "negatives": torch.randint(0, items, (rows, negatives), generator=g).to(device),
        "weights": (torch.rand(rows, generator=g) > 0.02).float().to(device),
        "catalogue": catalogue.to(device),
    }


def run(variant: str, inp: dict):
    """One forward + backward; returns (loss, dquery, dtable)."""
    query = inp["query"].detach().requires_grad_(True)
    table = inp["table"].detach().requires_grad_(True)
    impl = "gather" if variant == "gather" else "dense"
    align = 1 if variant == "dense, unpadded" else losses.GEMM_ALIGN
    with gemm_align(align):
        loss = losses.sampled_softmax_loss(
            query,
            inp["positive_ids"],
            lambda ids: table[ids],
            inp["catalogue"],
            weights=inp["weights"],
            negatives=inp["negatives"],
            impl=impl,
        )
        loss.backward()
    return loss.detach(), query.grad, table.grad


def time_variant(variant: str, inp: dict, iters: int, device) -> list[float]:
    """Milliseconds per call: on a GPU, replays of one CUDA graph of the call (the trainer's step is a graph,
    so host launch costs do not count), else wall-clock eager calls."""
    import time

    if device.type != "cuda":
        out = []
        for _ in range(iters):
            t0 = time.perf_counter()
            run(variant, inp)
            out.append(1e3 * (time.perf_counter() - t0))
        return out
    from hstu_tutorial.training.cuda_graph import capture_stream

    stream = capture_stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up on the capture stream (cuBLAS workspaces, autograd)
            run(variant, inp)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        run(variant, inp)
    out = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    del graph
    return out


def gemm_kernels(variant: str, inp: dict, device) -> list[str]:
    """The names of the matrix-product kernels one call launches (GPU only)."""
    if device.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(variant, inp)
        sync(device)
    names = [
        e.key for e in prof.key_averages() if any(w in e.key.lower() for w in ("gemm", "cutlass", "xmma"))
    ]
    return sorted({n[:100] for n in names})


def step_ab(model: str, data_dir: str, rounds: int, smoke: bool) -> dict:
    """The trainer's graph step with the loss padded (GEMM_ALIGN as shipped) and unpadded (1), alternating."""
    import statistics as st

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_loss_rows import _epoch, trainer_for

    args = argparse.Namespace(smoke=smoke, data_dir=data_dir)
    tr = trainer_for(model, args, seed=0, layout="padded")
    orders = [tr.epoch_order() for _ in range(rounds)]
    graphs = {}
    for name, align in (("padded", losses.GEMM_ALIGN), ("unpadded", 1)):
        with gemm_align(align):
            tr.graph = None
            if tr.use_graphs:
                tr.capture_graph()
            graphs[name] = (tr.graph, tr.loss_rows)
    times = {k: [] for k in graphs}
    _epoch(tr, orders[0], budgeted=True)  # warm-up (the last captured graph)
    for i, order in enumerate(orders):
        for name, (graph, rows) in list(graphs.items())[:: 1 if i % 2 == 0 else -1]:
            tr.graph, tr.loss_rows = graph, rows
            with gemm_align(losses.GEMM_ALIGN if name == "padded" else 1):  # the eager fallback, if any
                times[name].append(_epoch(tr, order, budgeted=rows is not None)[0])
    steps = orders[0].numel() // tr.cfg.batch_size
    return {"model": model, "graph": tr.use_graphs, "steps_per_epoch": steps,
            **{f"{k}_step_ms": 1e3 * st.median(v) / steps for k, v in times.items()}}  # fmt: skip


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def main(argv=None) -> int:
    """Runs the benchmark; the process's TF32 switches are restored afterwards (tests call this in-process)."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        return _main(argv)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def _main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=17344, help="M: the loss's rows (the step's budget)")
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--items", type=int, default=3883)
    ap.add_argument("--negatives", type=int, default=128)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--smoke", action="store_true", help="CPU, small shapes")
    ap.add_argument(
        "--step-data", default="", metavar="DIR", help="also time the trainer's step on this data"
    )
    ap.add_argument("--step-rounds", type=int, default=10)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.rows, args.items, args.iters = 256, 301, 3
    torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer runs (tf32 = true in the ML-1M configs)
    inp = make_inputs(args.rows, args.dim, args.items, args.negatives, device)
    before = {k: v.clone() for k, v in inp.items()}
    ref = run("dense, unpadded", inp)
    rows = []
    for v in VARIANTS:  # warm-up, and the comparison
        got = run(v, inp)
        rows.append(
            {
                "variant": v,
                "loss_rel_diff": rel(got[0], ref[0]),
                "dquery_rel_diff": rel(got[1], ref[1]),
                "dtable_rel_diff": rel(got[2], ref[2]),
                "times": [],
                "kernels": gemm_kernels(v, inp, device),
            }
        )
    for _ in range(max(1, args.iters // 10)):  # alternate in blocks, so every variant sees the same clocks
        for r in rows:
            r["times"] += time_variant(r["variant"], inp, 10 if args.iters >= 10 else args.iters, device)
    unchanged = all(torch.equal(before[k], inp[k]) for k in inp)
    for r in rows:
        r["ms"] = statistics.median(r.pop("times"))
    info = machine_info()
    base = next(r["ms"] for r in rows if r["variant"] == "dense, unpadded")
    lines = [
        f"# Sampled softmax loss, forward + backward ({info['device']}, {info['date_utc'][:10]})",
        "",
        f"M = {args.rows} rows, D = {args.dim}, C = {args.items} items, R = {args.negatives} negatives, "
        f"fp32 inputs, TF32 matrix products; GEMM_ALIGN = {losses.GEMM_ALIGN}.",
        "",
        "| variant | ms | vs unpadded | loss rel. diff | dQ rel. diff | dE rel. diff |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['ms']:.3f} | {base / r['ms']:.2f}x | {r['loss_rel_diff']:.1e} "
            f"| {r['dquery_rel_diff']:.1e} | {r['dtable_rel_diff']:.1e} |"
        )
    lines += ["", f"Inputs unchanged after all calls: {'yes' if unchanged else 'NO'}.", ""]
    for r in rows:
        if r["kernels"]:
            lines += (
                [f"{r['variant']}, matrix-product kernels:", ""] + [f"- `{k}`" for k in r["kernels"]] + [""]
            )
    steps = []
    if args.step_data or args.smoke:
        steps = [
            step_ab(m, args.step_data, 2 if args.smoke else args.step_rounds, args.smoke)
            for m in ("hstu", "sasrec")
        ]
        lines += [
            "The trainer's step (CUDA graph), whole epochs in alternation, median:",
            "",
            "| model | step ms, unpadded loss | step ms, padded loss | saved |",
            "|---|---|---|---|",
        ]
        for r in steps:
            a, b = r["unpadded_step_ms"], r["padded_step_ms"]
            lines.append(f"| {r['model']} | {a:.3f} | {b:.3f} | {1 - b / a:.1%} |")
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    save_results({"machine": info, "args": vars(args), "rows": rows, "steps": steps, "inputs_unchanged": unchanged}, "bench_loss",
                 [args.out], text)  # fmt: skip
    worst = max(max(r["loss_rel_diff"], r["dquery_rel_diff"], r["dtable_rel_diff"]) for r in rows)
    return 0 if unchanged and worst < 1e-2 else 1


if __name__ == "__main__":
    sys.exit(main())
