"""Where SASRec's training step could get faster: its CUDA-graph step with one change at a time, whole epochs
in rotation, in one process.

    PYTHONPATH=. python benchmarks/bench_sasrec_step.py --data-dir data/ml-1m-u2999 [--out DIR]   # GPU
    PYTHONPATH=. python benchmarks/bench_sasrec_step.py --smoke                                  # CPU

The ML-1M SASRec config (2 blocks, d=50, 1 head, dropout 0.2 on the attention weights and the FFN), one
trainer. Each variant is captured as its own CUDA graph, then every variant trains whole epochs in turn
(`--rounds` each, the order rotated), so all see the same GPU and clocks; one model trains on through all of
them, so the variants' mean losses are close, not equal. Variants:

- `fp32 attention, three projections`: the step before this benchmark's changes (SDPA in fp32, PyTorch's
  memory-efficient kernel; one matrix product each for q, k and v);
- `fp32 attention`: k and v from one matrix product (`SASRecBlock._project`);
- `bf16 attention`: also SDPA on bf16 copies of q, k, v (`attention_impl="sdpa-bf16"`, which SDPA runs
  with its flash kernel; the trainer's default on a GPU);
- `bf16 attention, compiled blocks`: also each block's forward through `torch.compile` (PyTorch's
  LayerNorm inside, so that the compiler can fuse it), captured in the same graph; not a trainer option
  for the graph step (`compile = true` compiles the whole forward and gives up evaluation graphs);
- `bf16 attention, fused output half`: bf16 attention, and each block's output projection, residual
  LayerNorm and FFN through the Triton kernels of `ops.triton.sasrec_output` (every variant above spells
  that half out);
- `bf16 attention, both halves fused`: also each block's LayerNorm and q, k, v products through the kernels of
  `ops.triton.sasrec_input`, which write SDPA's bf16 operands directly (the trainer's default on a GPU since
  2026-12-02; every other variant spells that half out).

`--check`: instead, the fused attention in fp32 and on bf16 copies against the spelled-out attention in
float64 on random inputs of the step's shape (no dropout): output and gradients, zero padding rows, inputs
unchanged; exits 1 on a failure. `--smoke`: synthetic data on the CPU, eager steps, for the logic only (no compile there).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss_rows import graph_variants_in_rotation, trainer_for  # noqa: E402

from hstu_tutorial.modules import sasrec  # noqa: E402
from hstu_tutorial.ops import use_options  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402


def _blocks(model) -> list:
    return [m for m in model.modules() if isinstance(m, sasrec.SASRecBlock)]


def _three_projections(self, x_q, x):
    """SASRecBlock._project as it was: one matrix product each for q, k and v."""
    w_q, w_k, w_v = self.in_proj.weight.chunk(3)
    b_q, b_k, b_v = self.in_proj.bias.chunk(3)
    return F.linear(x_q, w_q, b_q), F.linear(x, w_k, b_k), F.linear(x, w_v, b_v)


# name: (attention_impl, one product for k and v, compiled blocks, fused output half, fused input half)
VARIANTS = {
    "fp32 attention, three projections": ("sdpa", False, False, False, False),
    "fp32 attention": ("sdpa", True, False, False, False),
    "bf16 attention": ("sdpa-bf16", True, False, False, False),
    "bf16 attention, compiled blocks": ("sdpa-bf16", True, True, False, False),
    "bf16 attention, fused output half": ("sdpa-bf16", True, False, True, False),
    "bf16 attention, both halves fused": ("sdpa-bf16", True, False, True, True),
}


@contextlib.contextmanager
def variant(name: str, model):
    """Inside: the model's SASRec blocks run as variant `name` says (restored after)."""
    impl, kv_fused, compiled, fused_output, fused_input = VARIANTS[name]
    blocks = _blocks(model)
    before = [b.attention_impl for b in blocks]
    for b in blocks:
        b.attention_impl = impl
        if not kv_fused:
            b._project = _three_projections.__get__(b)
        if compiled:  # PyTorch's LayerNorm inside, so that the compiler can fuse it
            b.forward = torch.compile(sasrec.SASRecBlock.forward.__get__(b), dynamic=False)
    try:
        with use_options(
            fused_layer_norm=not compiled, fused_sasrec_output=fused_output, fused_sasrec_input=fused_input
        ):
            yield
    finally:
        for b, impl in zip(blocks, before):
            b.attention_impl = impl
            b.__dict__.pop("_project", None)
            b.__dict__.pop("forward", None)


def check(device, B: int = 128, N: int = 200, D: int = 50, seed: int = 0) -> tuple[str, bool]:
    """SASRec's fused attention (`fused_softmax_attention`, fp32 and on bf16 copies) on random padded inputs
    of the ML-1M step's shape against the spelled-out attention in float64, no dropout: the output and the
    gradients of q, k, v (largest error over the reference's largest entry), zeros on padding rows, and the
    inputs unchanged."""
    from hstu_tutorial.ops.hstu_attention import fused_softmax_attention, padded_softmax_attention

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, N + 1, (B,), generator=g)
    lengths[0] = N
    q, k, v = (torch.randn(B, N, 1, D, generator=g).to(device) for _ in range(3))
    dout = torch.randn(B, N, 1, D, generator=g).to(device)
    lengths = lengths.to(device)
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = padded_softmax_attention(q64, k64, v64, lengths, causal=True)
    ref_grads = torch.autograd.grad(ref, [q64, k64, v64], dout.double())
    pad = torch.arange(N, device=device)[None, :] >= lengths[:, None]  # (B, N) padding rows
    lines = [
        "| attention | out err | dq err | dk err | dv err | tol | padding rows | inputs | result |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ok_all = True
    # bf16: q, k, v rounded to 8 bits (2^-9 relative) before their products; fp32: TF32 at worst
    for name, dtype, tol in (("fp32", None, 1e-3), ("bf16 copies", torch.bfloat16, 2e-2)):
        before = [t.clone() for t in (q, k, v, lengths, dout)]
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        out = fused_softmax_attention(*leaves, lengths, dtype=dtype)
        grads = torch.autograd.grad(out, leaves, dout)
        errs = [
            ((a.double() - b).abs().max() / b.abs().max()).item()
            for a, b in zip((out, *grads), (ref, *ref_grads))
        ]
        zero_pad = bool((out[pad] == 0).all())
        same = all(torch.equal(a, b) for a, b in zip(before, (q, k, v, lengths, dout)))
        finite = all(bool(torch.isfinite(t).all()) for t in (out, *grads))
        ok = same and zero_pad and finite and out.dtype == q.dtype and max(errs) <= tol
        ok_all &= ok
        lines.append(
            f"| {name} | " + " | ".join(f"{e:.1e}" for e in errs) + f" | {tol:.0e} | "
            f"{'zero' if zero_pad else 'NOT ZERO'} | {'unchanged' if same else 'CHANGED'} | {'PASS' if ok else 'FAIL'} |"
        )
    return "\n".join(lines), ok_all


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="data/ml-1m-u2999")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--only", default="", help="variant names separated by |")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--check", action="store_true", help="only the accuracy check of each attention_impl")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    names = [n for n in VARIANTS if not args.only or n in args.only.split("|")]
    if args.smoke:
        names = [n for n in names if not VARIANTS[n][2]]
    if args.check:
        device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
        text, ok = check(device, *((8, 24, 10) if args.smoke else ()))
        print(f"# SASRec's attention against float64 ({machine_info().get('device', device)})\n\n{text}")
        return 0 if ok else 1
    tr = trainer_for("sasrec", args, seed=0, layout="padded")
    orders = [tr.epoch_order() for _ in range(args.rounds)]
    settings = {name: functools.partial(variant, name, tr.model) for name in names}
    times, seen, errors, setup_s = graph_variants_in_rotation(tr, settings, orders)
    for name in names:
        print(
            f"{name}: "
            + (errors[name] if name in errors else f"captured and warmed up in {setup_s[name]:.1f} s")
        )
    steps = orders[0].numel() // tr.cfg.batch_size
    first = names[0] if names and times.get(names[0]) else None
    base = statistics.median(times[first]) if first else float("nan")
    lines = [
        f"# SASRec's step, one change at a time ({machine_info().get('device', tr.device)})",
        "",
        f"{steps} steps per epoch, {args.rounds} epochs per variant in rotation, median; CUDA graph: {tr.use_graphs}.",
        "",
        f"| variant | step ms | vs {first} | mean loss | capture + first epoch s |",
        "|---|---|---|---|---|",
    ]
    rows = []
    for name in names:
        if name in errors:
            lines.append(f"| {name} | failed: {errors[name]} | | | |")
            continue
        ms = 1e3 * statistics.median(times[name]) / steps
        rows.append(
            dict(variant=name, step_ms=ms, mean_loss=statistics.mean(seen[name]), setup_s=setup_s[name])
        )
        lines.append(
            f"| {name} | {ms:.3f} | {ms / (1e3 * base / steps):.2f}x | {statistics.mean(seen[name]):.4f} "
            f"| {setup_s[name]:.1f} |"
        )
    text = "\n".join(lines + ["", "Command:", "", "    python " + " ".join(sys.argv), ""])
    print(text)
    if args.out:
        save_results(
            {"rows": rows, "errors": errors, "machine": machine_info()}, "bench_sasrec_step", [args.out], text
        )
    return 1 if errors and not args.smoke else 0


if __name__ == "__main__":
    raise SystemExit(main())
