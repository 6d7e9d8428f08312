"""The sampled softmax loss alone, forward + backward, at the shape of the ML-1M training step.

    PYTHONPATH=. python benchmarks/bench_loss.py [--rows 17344] [--out DIR]     # GPU
    PYTHONPATH=. python benchmarks/bench_loss.py --smoke                        # CPU, small shapes

Variants, timed in alternation in one process (on a GPU: replays of a CUDA graph of forward + backward, as in
the trainer's step, CUDA events, median of `--iters` replays; on a CPU: eager calls):
  * dense, padded: `losses._SampledColumns` as the trainer runs it, query and items padded with zeros to
    multiples of `losses.GEMM_ALIGN` (D 50 -> 56, C 3,883 -> 3,888);
  * dense, unpadded: the same with `GEMM_ALIGN = 1` (rows of 50 and 3,883 floats, not 16-byte aligned);
  * sparse: `losses._SparseSampledColumns`, the sampled columns as a sparse pattern (SDDMM forward, two
    sparse-dense products backward), no (M, C) matrix;
  * gather: the reference's formulation, (M, R, D) negative embeddings;
  * fused: the gather formula in two Triton kernels (`ops.triton.sampled_softmax`), no (M, R, D) or (M, C)
    tensor: what `impl="auto"` runs on a GPU (option `fused_loss`).
Every variant's loss and gradients are compared with the unpadded dense variant's on the same inputs and
negatives (TF32 as the trainer runs it), the inputs are checked unchanged, and on a GPU the matrix-product
kernels each variant launched are listed (torch.profiler), which shows whether cuBLAS used aligned loads.

`--step-data DIR` adds the whole training step: for the ML-1M HSTU and SASRec configs, the trainer's CUDA-graph
step captured with the fused loss (its default backward, and the matrix one), the padded dense and the
unpadded dense loss (`STEP_VARIANTS`), whole epochs of each replayed in rotation (`--step-rounds` each, median),
as `bench_loss_rows.py` does for the row budget, with each variant's mean training loss (one model trains on
through all of them: close, not equal).

On a GPU every variant also gets its kernels' summed GPU time per call (torch.profiler, 10 eager calls): the
figure for a variant that a CUDA graph cannot hold (its graph column then shows why). The exit status is 1 when
a variant disagrees with the others, changes its inputs or fails outright, not when it cannot be captured.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial import losses  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402
from hstu_tutorial.perf.measure import graph_replay_ms, sync  # noqa: E402

VARIANTS = ("dense, padded", "dense, unpadded", "sparse", "gather", "fused")
# the trainer's step with each loss: (GEMM_ALIGN, what "auto" picks). Not "sparse": torch's sparse CSR products
# copy to the host, which a CUDA graph cannot hold (H200, 2026-12-01).
STEP_VARIANTS = {
    "fused": (None, "fused"),
    "fused (matrix backward)": (None, "fused:matrix"),
    "padded": (None, "dense"),
    "unpadded": (1, "dense"),
}


@contextlib.contextmanager
def gemm_align(n: int):
    real = losses.GEMM_ALIGN
    losses.GEMM_ALIGN = n
    try:
        yield
    finally:
        losses.GEMM_ALIGN = real


@contextlib.contextmanager
def loss_setting(align: int | None, impl: str):
    """GEMM_ALIGN (None: as shipped) and the implementation "auto" picks, inside: "fused" (the Triton kernels,
    option `fused_loss` on; "fused:<backward>" with that backward pass), or "dense" / "sparse" (`fused_loss`
    off, and what it picks for a small catalogue)."""
    from hstu_tutorial.ops import use_options

    fused = impl.startswith("fused")
    real = losses.SMALL_CATALOGUE_IMPL
    if not fused:
        losses.SMALL_CATALOGUE_IMPL = impl
    tss = None
    if ":" in impl:
        import hstu_tutorial.ops.triton.sampled_softmax as tss

        real_backward, tss.BACKWARD = tss.BACKWARD, impl.split(":", 1)[1]
    try:
        with (
            gemm_align(losses.GEMM_ALIGN if align is None else align),
            use_options(fused_loss=fused),
        ):
            yield
    finally:
        losses.SMALL_CATALOGUE_IMPL = real
        if tss is not None:
            tss.BACKWARD = real_backward


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
    impl = variant.split(",")[0]  # dense, sparse or gather
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

    with torch.cuda.device(device):
        return graph_replay_ms(lambda: run(variant, inp), iters, stream=capture_stream(device))


def kernels(variant: str, inp: dict, device, calls: int = 10) -> tuple[list[str], float | None]:
    """One profiler trace of `calls` eager calls (GPU only; ([], None) elsewhere): the names of the
    matrix-product kernels a call launches, and the summed GPU time of all its kernels in ms per call."""
    if device.type != "cuda":
        return [], None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            run(variant, inp)
        sync(device)
    events = prof.key_averages()
    names = [e.key for e in events if any(w in e.key.lower() for w in ("gemm", "cutlass", "xmma"))]
    return sorted({n[:100] for n in names}), sum(e.self_device_time_total for e in events) / calls / 1e3


def step_ab(model: str, data_dir: str, rounds: int, smoke: bool) -> dict:
    """The trainer's graph step with each loss of STEP_VARIANTS, whole epochs in rotation; a variant whose
    graph cannot be captured is reported with its error instead."""
    import statistics as st

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_loss_rows import graph_variants_in_rotation, trainer_for

    args = argparse.Namespace(smoke=smoke, data_dir=data_dir)
    tr = trainer_for(model, args, seed=0, layout="padded")
    orders = [tr.epoch_order() for _ in range(rounds)]
    settings = {name: functools.partial(loss_setting, *setting) for name, setting in STEP_VARIANTS.items()}
    times, losses_seen, errors, _ = graph_variants_in_rotation(tr, settings, orders)
    steps = orders[0].numel() // tr.cfg.batch_size
    out = {"model": model, "graph": tr.use_graphs, "steps_per_epoch": steps, "errors": errors}
    for k in STEP_VARIANTS:
        out[f"{k}_step_ms"] = 1e3 * st.median(times[k]) / steps if times.get(k) else None
        out[f"{k}_mean_loss"] = st.mean(losses_seen[k]) if losses_seen.get(k) else None
    return out


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
        row = {"variant": v, "times": [], "error": None, "capture": None, "kernels": [], "kernel_ms": None}
        try:
            got = run(v, inp)
            row.update(
                loss_rel_diff=rel(got[0], ref[0]),
                dquery_rel_diff=rel(got[1], ref[1]),
                dtable_rel_diff=rel(got[2], ref[2]),
            )
            row["kernels"], row["kernel_ms"] = kernels(v, inp, device)
        except Exception as e:  # noqa: BLE001 - a variant this device cannot run: reported in the table
            row.update(loss_rel_diff=float("nan"), dquery_rel_diff=float("nan"), dtable_rel_diff=float("nan"))
            row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        rows.append(row)
    for _ in range(max(1, args.iters // 10)):  # alternate in blocks, so every variant sees the same clocks
        for r in rows:
            if r["error"] is None and r["capture"] is None:
                try:
                    r["times"] += time_variant(
                        r["variant"], inp, 10 if args.iters >= 10 else args.iters, device
                    )
                except Exception as e:  # noqa: BLE001 - a CUDA graph that cannot hold the variant: reported
                    r["capture"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    unchanged = all(torch.equal(before[k], inp[k]) for k in inp)
    for r in rows:
        times = r.pop("times")
        r["ms"] = statistics.median(times) if times and r["error"] is None and r["capture"] is None else None
    info = machine_info()
    base = next(r["ms"] for r in rows if r["variant"] == "dense, unpadded") or float("nan")
    lines = [
        f"# Sampled softmax loss, forward + backward ({info['device']}, {info['date_utc'][:10]})",
        "",
        f"M = {args.rows} rows, D = {args.dim}, C = {args.items} items, R = {args.negatives} negatives, "
        f"fp32 inputs, TF32 matrix products; GEMM_ALIGN = {losses.GEMM_ALIGN}.",
        "",
        "| variant | ms (graph) | vs unpadded | kernel ms (eager) | loss rel. diff | dQ rel. diff | dE rel. diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = "-" if r["ms"] is None else f"{r['ms']:.3f}"
        ratio = "-" if r["ms"] is None else f"{base / r['ms']:.2f}x"
        kms = "-" if r["kernel_ms"] is None else f"{r['kernel_ms']:.3f}"
        lines.append(
            f"| {r['variant']} | {ms} | {ratio} | {kms} | {r['loss_rel_diff']:.1e} "
            f"| {r['dquery_rel_diff']:.1e} | {r['dtable_rel_diff']:.1e} |"
        )
    lines += [f"{r['variant']} failed: {r['error']}" for r in rows if r["error"]]
    lines += [
        f"{r['variant']} cannot be captured in a CUDA graph: {r['capture']}" for r in rows if r["capture"]
    ]
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
            "| model | "
            + " | ".join(f"step ms, {k} loss" for k in STEP_VARIANTS)
            + " | mean training loss, "
            + " / ".join(STEP_VARIANTS)
            + " |",
            "|---|" + "---|" * (len(STEP_VARIANTS) + 1),
        ]

        def cell(v, fmt):
            return "-" if v is None else format(v, fmt)

        for r in steps:
            ms = " | ".join(cell(r[f"{k}_step_ms"], ".3f") for k in STEP_VARIANTS)
            mean = " / ".join(cell(r[f"{k}_mean_loss"], ".4f") for k in STEP_VARIANTS)
            lines.append(f"| {r['model']} | {ms} | {mean} |")
        lines += [f"{r['model']}, {k}: {e}" for r in steps for k, e in r["errors"].items()]
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    save_results({"machine": info, "args": vars(args), "rows": rows, "steps": steps, "inputs_unchanged": unchanged}, "bench_loss",
                 [args.out], text)  # fmt: skip
    worst = max(max(r["loss_rel_diff"], r["dquery_rel_diff"], r["dtable_rel_diff"]) for r in rows)
    failed = any(r["error"] for r in rows) or any(s["errors"] for s in steps)
    return 0 if unchanged and worst < 1e-2 and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
