"""Self-check of the Triton HSTU attention kernels as training runs them: autotuning on, a fresh cache.

    PYTHONPATH=. python3 benchmarks/check_kernels_gpu.py            # on a GPU: every case below
    PYTHONPATH=. python benchmarks/check_kernels_gpu.py --small      # CPU, Triton interpreter: tiny shapes

For each case (dtype x bias x causal x lengths x shape), on the very tensors the kernels ran on (lengths
"padded": every sequence stored in N rows, as the trainer's padded layout does, and the kernels told how many
hold items through `lengths=`; the rows after them must come back zero):
  * the inputs (q, k, v, offsets, rab or ts/nts/pos_w/ts_w) are bit-identical to clones taken before,
    after the forward and again after the backward (and dO after the backward);
  * the output and every gradient are within a dtype tolerance of a float64 reference (relative error
    ||x - ref|| / ||ref||: 1e-2 for bf16, 1e-3 for fp32 with the default tf32x3 dots);
  * nothing is NaN although the kernels' outputs were filled with NaN first (an element a kernel never
    writes stays NaN).
Also: the kernels' time buckets against `time_bucket` on many gaps; and the sampled softmax loss's two kernels
(`ops.triton.sampled_softmax`) against the float64 formula, loss and both gradients, on the ML-1M step's shape
and on a catalogue too big for the GPU's cache, with accidental hits, repeated negatives and rows of zero
gradient, inputs checked unchanged and outputs NaN-poisoned; and the fused second half of a SASRec block
(`ops.triton.sasrec_output`) against float64 with the kernels' own dropout masks, the same way; and its first
half (`ops.triton.sasrec_input`: LayerNorm, q, k, v products, SDPA's padded bf16 operands), the same way, with
the padding columns checked to be 0. One row per case, PASS/FAIL; the exit status is 1 on any FAIL.

Triton compiles and tunes into a fresh temporary TRITON_CACHE_DIR unless --cache-dir is given, so no
earlier tuning result or compiled kernel hides a problem: the autotuner's timing runs (and the buffers it
zeroes between them) happen in this process. On a CPU (--small) the autotuner itself is driven through
the interpreter (its configs each run once), so the same reset/restore path is exercised.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOL = {torch.bfloat16: 1e-2, torch.float32: 1e-3}


@dataclass(frozen=True)
class Case:
    """One check: B sequences of at most N items, H heads of size d."""

    dtype: torch.dtype
    bias: str  # "none" | "rab" (a padded bias tensor) | "rel" (relative bias formed in the kernel)
    causal: bool
    lengths: (
        str  # "jagged" (lengths spread over [1, N], one of length 1) | "dense" (all N) | "padded" (N rows
    )
    # each, items spread over [0, N] with one empty, one of 1 and one full, handed over as `lengths=`)
    B: int
    N: int
    H: int
    d: int

    @property
    def name(self) -> str:
        dt = "bf16" if self.dtype == torch.bfloat16 else "fp32"
        return (
            f"{dt} {self.bias:<4} {'causal' if self.causal else 'full  '} {self.lengths:<6} "
            f"B={self.B:<3} N={self.N:<4} H={self.H} d={self.d}"
        )


def cases(small: bool) -> list[Case]:
    """The case list: three shapes (ML-1M N=200 H=1 d=50; N=1024 H=4 d=128; N=2048 H=2 d=64), each with
    bf16 and fp32, every bias form, causal and not, jagged and dense lengths, several batch sizes
    (not the full product: each kernel variant compiles and tunes ~14 configs); on a GPU also two bf16
    causal cases of head size 48 (N=300, H=2)."""
    bf, f32 = torch.bfloat16, torch.float32
    if small:  # CPU interpreter: tiny shapes, same kinds
        shapes = [(20, 1, 10), (40, 2, 16), (33, 2, 8)]
        sizes = [(4, 2), (3, 2), (2, 1)]
    else:
        shapes = [(200, 1, 50), (1024, 4, 128), (2048, 2, 64)]
        sizes = [(128, 32), (8, 4), (4, 2)]
    out = []
    for (N, H, d), (b_big, b_small) in zip(shapes, sizes):
        out += [
            Case(bf, "rel", True, "padded", b_big, N, H, d),
            Case(f32, "none", False, "padded", b_small + 1, N, H, d),
            Case(bf, "none", True, "jagged", b_big, N, H, d),
            Case(bf, "none", True, "dense", b_small, N, H, d),
            Case(f32, "none", True, "jagged", b_small, N, H, d),
            Case(bf, "rel", True, "jagged", b_big, N, H, d),
            Case(f32, "rel", True, "jagged", b_small, N, H, d),
            Case(bf, "rab", False, "jagged", b_small, N, H, d),
            Case(f32, "rab", True, "dense", max(1, b_small // 2), N, H, d),
            Case(bf, "none", False, "dense", 1, N, H, d),
        ]
    if not small:  # a head size that is no power of two, on the GPU's TMA forward (bf16, causal, aligned
        # rows): the copy engine's tiles are wider than the head and must read zeros past it
        out += [
            Case(bf, "none", True, "jagged", 16, 300, 2, 48),
            Case(bf, "rel", True, "jagged", 16, 300, 2, 48),
            Case(bf, "none", True, "padded", 16, 300, 2, 48),
        ]
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def make_inputs(case: Case, device: str, seed: int = 0) -> dict:
    """q, k, v (scores of order 1), offsets and the bias inputs of one case."""
    g = torch.Generator().manual_seed(seed)
    items = None
    if case.lengths == "dense":
        lengths = torch.full((case.B,), case.N)
    elif case.lengths == "padded":  # N rows per sequence; the kernels are told how many hold items
        lengths = torch.full((case.B,), case.N)
        items = torch.randint(1, case.N + 1, (case.B,), generator=g)
        items[0], items[-1] = 1, case.N  # one item, and a full sequence
        if case.B > 2:
            items[1] = 0  # no item at all
    else:
        lengths = torch.randint(1, case.N + 1, (case.B,), generator=g)
        lengths[0], lengths[-1] = 1, case.N  # a length-1 sequence and a full one
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    T = int(offsets[-1])
    scale = case.d**-0.25
    x = {
        name: (torch.randn(T, case.H, case.d, generator=g) * (scale if name != "v" else 1.0))
        .to(device, case.dtype)
        .requires_grad_()
        for name in ("q", "k", "v")
    }
    x["offsets"] = offsets.to(device)
    if items is not None:
        x["lengths"] = items.to(device)
    if case.bias == "rab":
        x["rab"] = (torch.randn(case.B, case.H, case.N, case.N, generator=g) * 0.5).to(device, case.dtype)
        x["rab"].requires_grad_()
    elif case.bias == "rel":
        ts = torch.cumsum(torch.randint(1, 10**5, (T,), generator=g), 0)
        x["ts"] = ts.to(device)
        x["nts"] = (ts + torch.randint(0, 10**6, (T,), generator=g)).to(device)
        x["pos_w"] = (torch.randn(2 * (case.N + 11) - 1, generator=g) * 0.2).to(device).requires_grad_()
        x["ts_w"] = (torch.randn(129, generator=g) * 0.2).to(device).requires_grad_()
    return x


def reference(case: Case, x: dict, dout: torch.Tensor, norm: float):
    """Output and gradients in float64 through the package's PyTorch reference (bias formed in float64).
    With `lengths`: the reference of the items alone, stored jagged, and zeros on the other rows."""
    from hstu_tutorial.ops import hstu_attention, jagged_to_padded, lengths_to_offsets, time_bucket

    if "lengths" in x:
        from hstu_tutorial.ops.triton.hstu_attention_autograd import attended_rows

        real = attended_rows(x["offsets"], x["lengths"], x["q"].shape[0])  # (T,)
        items = {k: t for k, t in x.items() if k not in ("lengths", "offsets")}
        items.update({k: x[k].detach()[real].requires_grad_() for k in ("q", "k", "v")})
        items.update({k: x[k][real] for k in ("ts", "nts") if k in x})
        items["offsets"] = lengths_to_offsets(x["lengths"])
        out, grads = reference(case, items, dout[real], norm)

        def full(t):  # rows that hold no item: zeros
            return torch.zeros(real.shape[0], *t.shape[1:], dtype=t.dtype, device=t.device).index_put_(
                (real,), t
            )

        return full(out), {k: full(g) if k in ("q", "k", "v") else g for k, g in grads.items()}

    params = {k: t.detach().double().requires_grad_() for k, t in x.items() if t.requires_grad}
    rab = params.get("rab")
    if case.bias == "rel":
        M = case.N
        P = (params["pos_w"].numel() + 1) // 2
        t = jagged_to_padded(x["ts"], x["offsets"], M)  # (B, M)
        tn = jagged_to_padded(x["nts"], x["offsets"], M)  # (B, M)
        ar = torch.arange(M, device=t.device)
        bucket = time_bucket(tn[:, :, None] - t[:, None, :], params["ts_w"].numel() - 1)  # (B, M, M)
        rab = params["pos_w"][P - 1 + ar[None, :] - ar[:, None]][None] + params["ts_w"][bucket]
    out = hstu_attention(
        params["q"], params["k"], params["v"], x["offsets"], rab=rab, norm=norm, causal=case.causal
    )
    grads = torch.autograd.grad(out, list(params.values()), dout.double())
    return out, dict(zip(params, grads))


def run_case(case: Case, device: str, seed: int = 0) -> dict:
    """Run one case with tuning on and NaN-poisoned outputs; errors, input checks and PASS/FAIL."""
    from hstu_tutorial.ops import use_options
    from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias

    x = make_inputs(case, device, seed)
    before = {k: t.detach().clone() for k, t in x.items()}
    norm = float(case.N + 11)
    changed = []
    with use_options(autotune=True, tuning="tune", poison_outputs=True):
        if case.bias == "rel":
            out = triton_hstu_attention_rel_bias(
                x["q"],
                x["k"],
                x["v"],
                x["offsets"],
                x["ts"],
                x["nts"],
                x["pos_w"],
                x["ts_w"],
                norm=norm,
                causal=case.causal,
                lengths=x.get("lengths"),
            )
        else:
            out = triton_hstu_attention(
                x["q"],
                x["k"],
                x["v"],
                x["offsets"],
                rab=x.get("rab"),
                norm=norm,
                causal=case.causal,
                lengths=x.get("lengths"),
            )
    changed += [f"{k}@fwd" for k, t in before.items() if not torch.equal(x[k].detach(), t)]
    g = torch.Generator().manual_seed(seed + 1)
    dout = torch.randn(out.shape, generator=g).to(device, out.dtype)
    dout_before = dout.clone()
    wrt = {k: t for k, t in x.items() if t.requires_grad}
    grads = dict(zip(wrt, torch.autograd.grad(out, list(wrt.values()), dout)))
    if device == "cuda":
        torch.cuda.synchronize()
    changed += [f"{k}@bwd" for k, t in before.items() if not torch.equal(x[k].detach(), t)]
    changed += ["dout@bwd"] if not torch.equal(dout, dout_before) else []
    ref_out, ref_grads = reference(case, x, dout, norm)
    errs = {"out": rel_err(out, ref_out)}
    errs.update({f"d{k}": rel_err(grads[k], ref_grads[k]) for k in wrt})
    nan = [k for k, t in [("out", out), *((f"d{k}", v) for k, v in grads.items())] if torch.isnan(t).any()]
    ok = not changed and not nan and max(errs.values()) <= TOL[case.dtype]
    return dict(case=case.name, errs=errs, changed=changed, nan=nan, ok=ok, tol=TOL[case.dtype])


def check_time_buckets(device: str) -> dict:
    """The kernels' bucket formula (`_rel_bias_index`) against `time_bucket` on gaps from 0 to 2^62."""
    from hstu_tutorial.ops import time_bucket
    from hstu_tutorial.ops.triton.hstu_attention_kernels import time_bucket_kernel, triton

    g = torch.Generator().manual_seed(0)
    edges = torch.tensor([math.exp(0.301 * b) for b in range(1, 140)], dtype=torch.float64).floor().long()
    gaps = torch.cat(
        [
            torch.tensor([0, 1, -1, 2, -2, 10**9, 2**40, 2**62, -(2**62)]),
            (edges[:, None] + torch.arange(-1, 3)).reshape(-1),
            torch.randint(-(10**6), 10**6, (4000,), generator=g),
            (torch.rand(4000, generator=g) * 40).exp().long(),
        ]
    )
    x = gaps.abs().clamp(min=1).double().log() / 0.301
    on_edge = ((x - x.round()).abs() < 1e-5) & (gaps.abs() > 1)
    out = torch.empty(gaps.numel(), dtype=torch.int32, device=device)
    ts, nts = torch.zeros_like(gaps).to(device), gaps.to(device)  # gap = nts - ts
    time_bucket_kernel[(triton.cdiv(gaps.numel(), 1024),)](ts, nts, out, gaps.numel(), 129, BLOCK=1024)
    got, want = out.cpu().long(), time_bucket(gaps, 128)
    off_edge_mismatch = int(((got != want) & ~on_edge).sum())
    edge_mismatch = int(((got != want) & on_edge).sum())
    ok = off_edge_mismatch == 0 and bool(((got - want).abs() <= 1).all())
    return dict(
        gaps=gaps.numel(),
        off_edge_mismatch=off_edge_mismatch,
        edge_mismatch=edge_mismatch,
        on_edge=int(on_edge.sum()),
        ok=ok,
    )


LOSS_TOL = {torch.bfloat16: 1e-2, torch.float32: 1e-5}


def loss_cases(small: bool) -> list[tuple]:
    """(dtype, M rows, D, C items, R negatives): the ML-1M step's loss; a catalogue larger than the L2 cache
    (every item vector read from memory); a width and a count of negatives that fill no tile exactly."""
    if small:
        return [(torch.float32, 40, 10, 30, 9), (torch.bfloat16, 33, 7, 50, 5)]
    return [
        (torch.float32, 17344, 50, 3883, 128),
        (torch.bfloat16, 17344, 50, 3883, 128),
        (torch.float32, 4096, 64, 200_000, 128),
        (torch.float32, 3000, 33, 500, 77),
    ]


def check_sampled_softmax(dtype, M, D, C, R, device, seed=0, backward="auto") -> dict:
    """The fused sampled softmax on one random case against the float64 formula (inputs rounded to `dtype`),
    with the backward pass `backward`."""
    from hstu_tutorial.losses import sampled_softmax_rows
    from hstu_tutorial.ops import use_options
    from hstu_tutorial.ops.triton.sampled_softmax import triton_sampled_softmax

    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(M, D, generator=g), dim=1).to(device, dtype)
    e = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1).to(device, dtype)
    cols = torch.randint(0, C, (M, 1 + R), generator=g)
    cols[: M // 50, 1 : 1 + R // 4] = cols[: M // 50, :1]  # accidental hits
    cols[M // 50 : M // 25, 2] = cols[M // 50 : M // 25, 1]  # a negative drawn twice
    cols = cols.to(device)
    dloss = torch.rand(M, generator=g, dtype=torch.float64)
    dloss[torch.rand(M, generator=g) < 0.1] = 0.0  # padded rows: no gradient
    dloss = dloss.to(device)
    q.requires_grad_(), e.requires_grad_()
    before = {"q": q.detach().clone(), "e": e.detach().clone(), "cols": cols.clone(), "dloss": dloss.clone()}
    with use_options(poison_outputs=True):
        loss = triton_sampled_softmax(q, e, cols, 0.05, backward=backward)
        dq, de = torch.autograd.grad(loss, [q, e], dloss.float())
    if device == "cuda":
        torch.cuda.synchronize()
    now = {"q": q.detach(), "e": e.detach(), "cols": cols, "dloss": dloss}
    changed = [k for k in before if not torch.equal(before[k], now[k])]
    q64, e64 = (t.detach().double().requires_grad_() for t in (q, e))
    ref = sampled_softmax_rows(q64, e64, cols, 0.05)
    ref_dq, ref_de = torch.autograd.grad(ref, [q64, e64], dloss)
    errs = {"out": rel_err(loss, ref), "dq": rel_err(dq, ref_dq), "de": rel_err(de, ref_de)}
    nan = [k for k, t in (("out", loss), ("dq", dq), ("de", de)) if torch.isnan(t).any()]
    zero_rows_ok = bool((dq[dloss == 0] == 0).all())
    ok = not changed and not nan and zero_rows_ok and max(errs.values()) <= LOSS_TOL[dtype]
    dt = "bf16" if dtype == torch.bfloat16 else "fp32"
    name = f"sampled softmax {dt} M={M} D={D} C={C} R={R}, {backward} backward"
    return dict(case=name, errs=errs, changed=changed, nan=nan, ok=ok, tol=LOSS_TOL[dtype])


def tf32_yardstick(spelled, ref, ref_grads) -> float:
    """The largest error against float64 (`ref` outputs, `ref_grads`) of `spelled(torch.float32)` with TF32 products,
    what nn.Linear does under the trainer's `tf32 = true` (10-bit mantissas). The SASRec kernels in TF32 may be up to
    three times as far off; a wrong mask, index or weight gives errors of order 1."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        out, grads = spelled(torch.float32)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    outs = out if isinstance(out, (list, tuple)) else [out]
    return max(rel_err(a, b) for a, b in [*zip(outs, ref), *zip(grads, ref_grads)])


def sasrec_output_cases(small: bool) -> list[tuple]:
    """(M rows, D, H, dropout, dot precision): the ML-1M SASRec step's rows (128 x 200) with and without dropout,
    in the trainer's TF32 and in tf32x3; widths that fill no tile; a few rows (evaluation's last positions)."""
    if small:
        return [(70, 10, 20, 0.0, "ieee"), (70, 10, 20, 0.25, "ieee")]
    return [
        (25600, 50, 50, 0.2, "tf32"),
        (25600, 50, 50, 0.2, "tf32x3"),
        (25600, 50, 50, 0.0, "tf32x3"),
        (9999, 20, 100, 0.5, "tf32x3"),
        (128, 50, 50, 0.0, "tf32"),
    ]


def check_sasrec_output(M, D, H, p, precision, device, seed=0) -> dict:
    """The fused second half of a SASRec block (`ops.triton.sasrec_output`) on random inputs against the same
    math in float64 with the kernels' own dropout masks: output and the eight gradients (a, x_q, W_o, b_o,
    W_1, b_1, W_2, b_2), inputs and weights unchanged, outputs NaN-poisoned. Tolerance 1e-3 of the norm; in TF32,
    three times the largest error of the same math through nn.functional in TF32 (at least 1e-3)."""
    from hstu_tutorial.ops import use_options
    from hstu_tutorial.ops.triton import sasrec_output as so

    g = torch.Generator().manual_seed(seed)
    mods = [torch.nn.Linear(i, o) for i, o in ((D, D), (D, H), (H, D))]
    with torch.no_grad():
        for m in mods:
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features**0.5)
            m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    mods = [m.to(device) for m in mods]
    a = torch.randn(M, D, generator=g).to(device).requires_grad_()
    x_q = torch.nn.functional.layer_norm(torch.randn(M, D, generator=g), (D,)).to(device).requires_grad_()
    dout = torch.randn(M, D, generator=g).to(device)
    params = [t for m in mods for t in (m.weight, m.bias)]
    leaves = [a, x_q, *params]
    before = [t.detach().clone() for t in leaves] + [dout.clone()]
    with use_options(poison_outputs=True, fp32_precision=precision):
        torch.manual_seed(seed + 1)
        out = so.sasrec_output(a, x_q, *mods, dropout=p, eps=1e-8)
        grads = torch.autograd.grad(out, leaves, dout)
    if device == "cuda":
        torch.cuda.synchronize()
    changed = [i for i, (b, t) in enumerate(zip(before, [*leaves, dout])) if not torch.equal(b, t.detach())]
    keep = None
    if p:
        torch.manual_seed(seed + 1)  # the forward's draw
        keep = so.dropout_masks(torch.randint(0, 2**31 - 1, (1,), device=device), M, D, H, p)

    def spelled(dtype):  # the same math through nn.functional, the kernels' masks: output and the 8 gradients
        w = [t.detach().to(dtype).requires_grad_() for t in leaves]
        out = so.spelled_out(*w, *(keep or (None, None)), p=p, eps=1e-8)
        return out, torch.autograd.grad(out, w, dout.to(dtype))

    ref, ref_grads = spelled(torch.float64)
    names = ["a", "x_q", "W_o", "b_o", "W_1", "b_1", "W_2", "b_2"]
    errs = {"out": rel_err(out, ref), **{n: rel_err(gr, rg) for n, gr, rg in zip(names, grads, ref_grads)}}
    nan = [k for k, t in zip(["out", *names], (out, *grads)) if torch.isnan(t).any()]
    tol = 1e-3
    if precision == "tf32" and device == "cuda":
        tol = max(tol, 3 * tf32_yardstick(spelled, [ref], ref_grads))
    ok = not changed and not nan and max(errs.values()) <= tol
    name = f"SASRec output half M={M} D={D} H={H} dropout={p} {precision}"
    return dict(
        case=name, errs=errs, changed=[(names + ["dout"])[i] for i in changed], nan=nan, ok=ok, tol=tol
    )


def sasrec_input_cases(small: bool) -> list[tuple]:
    """(M rows, D, dot precision, output dtype): the ML-1M SASRec step's rows in the trainer's TF32 and in tf32x3,
    the bf16 operands SDPA takes and float32 ones; a width that fills no tile; a few rows."""
    if small:
        return [(70, 10, "ieee", torch.float32), (70, 10, "ieee", torch.bfloat16)]
    return [
        (25600, 50, "tf32", torch.bfloat16),
        (25600, 50, "tf32x3", torch.float32),
        (25600, 50, "tf32x3", torch.bfloat16),
        (9999, 20, "tf32x3", torch.float32),
        (128, 50, "tf32", torch.float32),
    ]


def check_sasrec_input(M, D, precision, dtype, device, seed=0) -> dict:
    """The fused first half of a SASRec block (`ops.triton.sasrec_input`) on random inputs against the same math in
    float64: x_q, q, k, v and the gradients of x, W and b, inputs and incoming gradients unchanged, outputs
    NaN-poisoned, the padding columns of q, k, v exactly 0. Tolerance 1e-3 of the norm (bf16 outputs: 8e-3, a
    rounding of 2^-8); in TF32, three times the largest error of the same math through nn.functional in TF32 (at
    least that)."""
    from hstu_tutorial.ops import use_options
    from hstu_tutorial.ops.triton import sasrec_input as si

    g = torch.Generator().manual_seed(seed)
    lin = torch.nn.Linear(D, 3 * D)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / D**0.5)
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.3)
    lin = lin.to(device)
    P = si.padded_width(D)
    x = (torch.randn(1, M, D, generator=g) * 2 + 0.5).to(device).requires_grad_()
    douts = [torch.randn(M, D, generator=g).to(device)] + [
        torch.randn(M, P, generator=g).to(dtype).to(device) for _ in range(3)
    ]
    leaves = [x, lin.weight, lin.bias]
    before = [t.detach().clone() for t in leaves + douts]
    with use_options(poison_outputs=True, fp32_precision=precision):
        outs = si.sasrec_input(x, lin, eps=1e-8, dtype=dtype)
        shaped = [douts[0].view(1, M, D)] + [t.view(1, 1, M, P) for t in douts[1:]]
        grads = torch.autograd.grad(outs, leaves, shaped)
    if device == "cuda":
        torch.cuda.synchronize()
    names = ["x_q", "q", "k", "v"]
    changed = [
        n for n, b, t in zip(["x", "W", "b", "dx_q", "dq", "dk", "dv"], before, leaves + douts)
        if not torch.equal(b, t.detach())
    ]  # fmt: skip
    flat = [t.reshape(M, -1) for t in outs]
    pads = [n for n, t in zip(names[1:], flat[1:]) if not torch.equal(t[:, D:], torch.zeros_like(t[:, D:]))]

    def spelled(dt):  # the same math through nn.functional: the outputs and the gradients of x, W, b
        x_, w, b = (t.detach().to(dt).requires_grad_() for t in leaves)
        w_q, w_kv = w.split([D, 2 * D])
        b_q, b_kv = b.split([D, 2 * D])
        out = si.spelled_out(x_.view(M, D), w_q, b_q, w_kv, b_kv, eps=1e-8)
        return out, torch.autograd.grad(out, [x_, w, b], [t.to(dt) for t in douts])

    ref, ref_grads = spelled(torch.float64)
    errs = {n: rel_err(t, r) for n, t, r in zip(names, flat, ref)}
    errs.update({n: rel_err(t, r) for n, t, r in zip(("x", "W", "b"), grads, ref_grads)})
    nan = [n for n, t in zip(names + ["x", "W", "b"], (*flat, *grads)) if torch.isnan(t).any()]
    tol = 8e-3 if dtype == torch.bfloat16 else 1e-3
    if precision == "tf32" and device == "cuda":
        tol = max(tol, 3 * tf32_yardstick(spelled, ref, ref_grads))
    ok = not changed and not nan and not pads and max(errs.values()) <= tol
    dt = str(dtype).replace("torch.", "")
    name = f"SASRec input half M={M} D={D} {precision}, q/k/v {dt}" + (
        f", padding not 0: {pads}" if pads else ""
    )
    errs = {"out": max(errs[n] for n in names), **{n: errs[n] for n in ("x", "W", "b")}}
    return dict(case=name, errs=errs, changed=changed, nan=nan, ok=ok, tol=tol)


def format_row(r: dict) -> str:
    e = r["errs"]
    grads = " ".join(f"{k}={v:.1e}" for k, v in e.items() if k != "out")
    inputs = "unchanged" if not r["changed"] else "CHANGED " + ",".join(r["changed"])
    nan = "none" if not r["nan"] else ",".join(r["nan"])
    return (
        f"| {r['case']} | {e['out']:.1e} | {grads} | {r['tol']:.0e} | {inputs} | {nan} | "
        f"{'PASS' if r['ok'] else 'FAIL'} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny shapes (CPU interpreter)")
    ap.add_argument("--cache-dir", default="", help="use this TRITON_CACHE_DIR instead of a fresh one")
    ap.add_argument(
        "--only",
        default="",
        help="run only the attention cases whose name contains this (several: separated by '|'); "
        "the loss (SASRec output, SASRec input) cases run when it is empty or one of its parts is 'loss' "
        "('sasrec', 'sasrec_input')",
    )
    ap.add_argument("--slice", default=":", help="run cases[i:j] of the list (e.g. 12:16), to split runs")
    ap.add_argument("--time-budget", type=float, default=480.0, help="seconds; later cases are skipped")
    ap.add_argument(
        "--tma",
        default="auto",
        choices=("auto", "on", "off"),
        help="KernelOptions.tma for every case (default auto: the TMA forward wherever it is eligible)",
    )
    args = ap.parse_args()
    # Before Triton is imported: compile and tune from nothing.
    os.environ["TRITON_CACHE_DIR"] = args.cache_dir or tempfile.mkdtemp(prefix="triton_cache_check_")
    device = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import triton

    import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
    from hstu_tutorial.ops import set_options

    set_options(tma=args.tma)
    if tha.is_interpreter():  # drive the autotuner itself through the interpreter (see the docstring)
        tha._tune = lambda opts: opts.autotune
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 dots in tf32x3, the kernels' accurate default
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(
        f"# check_kernels_gpu: {name}, torch {torch.__version__}, triton {triton.__version__}, "
        f"TRITON_CACHE_DIR={os.environ['TRITON_CACHE_DIR']}, autotune on, tma={args.tma}, outputs NaN-poisoned",
        flush=True,
    )
    t0, failed, skipped = time.time(), 0, 0
    i, j = (int(x) if x else None for x in args.slice.split(":"))
    selected = [c for c in cases(args.small)[i:j] if any(part in c.name for part in args.only.split("|"))]
    if selected:
        print("| case | out err | grad errs | tol | inputs | NaN | result |\n|" + " --- |" * 7, flush=True)
    for case in selected:
        if time.time() - t0 > args.time_budget:
            print(f"| {case.name} | - | - | - | - | - | SKIP (time budget) |", flush=True)
            skipped += 1
            continue
        r = run_case(case, device)
        failed += not r["ok"]
        print(format_row(r) + f" {time.time() - t0:.0f} s", flush=True)
        if device == "cuda":
            torch.cuda.empty_cache()
    b = check_time_buckets(device)
    failed += not b["ok"]
    print(
        f"\ntime buckets: {b['gaps']} gaps, {b['off_edge_mismatch']} differ off a bucket edge, "
        f"{b['edge_mismatch']} of {b['on_edge']} within 1e-5 of an edge differ by one: "
        f"{'PASS' if b['ok'] else 'FAIL'}"
    )
    if not args.only or "loss" in args.only.split("|"):
        print(
            "\n| loss case | loss err | grad errs | tol | inputs | NaN | result |\n|" + " --- |" * 7,
            flush=True,
        )
        from hstu_tutorial.ops.triton.sampled_softmax import BACKWARDS

        for c in loss_cases(args.small):
            for backward in BACKWARDS:
                r = check_sampled_softmax(*c, device, backward=backward)
                failed += not r["ok"]
                print(format_row(r), flush=True)
    if not args.only or "sasrec" in args.only.split("|"):
        print(
            "\n| SASRec output case | out err | grad errs | tol | inputs | NaN | result |\n|" + " --- |" * 7,
            flush=True,
        )
        for c in sasrec_output_cases(args.small):
            r = check_sasrec_output(*c, device)
            failed += not r["ok"]
            print(format_row(r), flush=True)
    if not args.only or "sasrec_input" in args.only.split("|"):
        print(
            "\n| SASRec input case | x_q, q, k, v err | grad errs | tol | inputs | NaN | result |\n|"
            + " --- |" * 7,
            flush=True,
        )
        for c in sasrec_input_cases(args.small):
            r = check_sasrec_input(*c, device)
            failed += not r["ok"]
            print(format_row(r), flush=True)
    print(f"\n{failed} FAIL, {skipped} skipped, {time.time() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
