"""Variants of the sampled softmax's forward kernel (`ops.triton.sampled_softmax`), timed against it.

    PYTHONPATH=. python3 benchmarks/try_sampled_softmax_fwd.py [--out DIR]     # GPU
    PYTHONPATH=. python benchmarks/try_sampled_softmax_fwd.py --smoke          # CPU interpreter, tiny shapes

In the training step the forward also forms d loss_i / d q_i (`WANT_DQ`): a softmax-weighted sum of the row's
item vectors. The package's kernel reduces each tile of item vectors over its rows as it goes (one cross-lane
reduction per tile). The variants here:
  * "deferred": keep a (BLOCK_R, BLOCK_D) running sum, rescaled with the running max, and reduce it once at
    the end;
  * "deferred+prefetch": the same, loading the next tile's column ids and item vectors before computing the
    current tile.
Each at several (BLOCK_R, num_warps), with and without WANT_DQ, at the ML-1M step's shape (M = 17,344 rows,
D = 50, C = 3,883, 1 + 128 columns, fp32), replayed as CUDA graphs (median of `--iters`). Every output (loss,
log-sum-exp, scores, dq1) is compared with the package kernel's: the same columns dropped (-inf), the rest
within `TOL` relative to the largest entry (tiles of other shapes sum in another order; "scores equal" says
whether they are bit for bit); exit 1 otherwise, or when an input changed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_sampled_softmax import graph_ms, make_inputs  # noqa: E402
from hstu_tutorial.ops.triton import sampled_softmax as tss  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402

TILES = [(32, 1), (32, 2), (64, 1), (64, 2), (64, 4), (128, 4)]
TOL = 1e-5


@triton.jit
def _load_tile(E, COLS_row, j, R1, D, stride_e, BLOCK_D: tl.constexpr):
    d = tl.arange(0, BLOCK_D)
    j_ok = j < R1
    c = tl.load(COLS_row + j, mask=j_ok, other=0).to(tl.int64)
    e = tl.load(E + c[:, None] * stride_e + d[None, :], mask=j_ok[:, None] & (d < D)[None, :], other=0.0)
    return c, e.to(tl.float32), j_ok


@triton.jit
def fwd_deferred_kernel(
    Q, E, COLS, LOSS, LSE, S, DQ1, R1, D,
    stride_q, stride_e, stride_c, stride_s, stride_dq1, inv_tau,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, WANT_DQ: tl.constexpr, PREFETCH: tl.constexpr,
):  # fmt: skip
    """The package's forward with the dq sum kept as a (BLOCK_R, BLOCK_D) tile and reduced once."""
    row = tl.program_id(0).to(tl.int64)
    Q_row, COLS_row, S_row = Q + row * stride_q, COLS + row * stride_c, S + row * stride_s
    j0 = tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    q = tl.load(Q_row + d, mask=d < D, other=0.0).to(tl.float32)
    c, e, j_ok = _load_tile(E, COLS_row, j0, 1, D, stride_e, BLOCK_D)  # the positive alone (lane 0)
    s = tl.sum(e * q[None, :], axis=1) * inv_tau
    pos = tl.sum(tl.where(j0 == 0, c, 0))
    s_pos = tl.sum(tl.where(j0 == 0, s, 0.0))
    tl.store(S_row + j0, s, mask=j_ok)
    m = s_pos
    total = s_pos * 0.0 + 1.0
    e_pos = tl.sum(e, axis=0)
    acc = e  # (BLOCK_R, BLOCK_D): lane 0 the positive with weight exp(s_pos - m) = 1, the others 0
    if PREFETCH:
        c_n, e_n, ok_n = _load_tile(E, COLS_row, 1 + j0, R1, D, stride_e, BLOCK_D)
    for start in range(1, R1, BLOCK_R):
        if PREFETCH:
            c, e, j_ok = c_n, e_n, ok_n
            c_n, e_n, ok_n = _load_tile(E, COLS_row, start + BLOCK_R + j0, R1, D, stride_e, BLOCK_D)
        else:
            c, e, j_ok = _load_tile(E, COLS_row, start + j0, R1, D, stride_e, BLOCK_D)
        s = tl.sum(e * q[None, :], axis=1) * inv_tau
        s = tl.where(j_ok & (c != pos), s, float("-inf"))
        tl.store(S_row + start + j0, s, mask=j_ok)
        m_new = tl.maximum(m, tl.max(s, axis=0))
        scale = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        total = total * scale + tl.sum(p, axis=0)
        if WANT_DQ:
            acc = acc * scale + p[:, None] * e
        m = m_new
    lse = m + tl.log(total)
    tl.store(LSE + row, lse)
    tl.store(LOSS + row, lse - s_pos)
    if WANT_DQ:
        tl.store(DQ1 + row * stride_dq1 + d, (tl.sum(acc, axis=0) / total - e_pos) * inv_tau, mask=d < D)


def run_variant(variant: str, inp: dict, want_dq: bool, block_r: int, warps: int, interp: bool):
    """(loss, lse, scores, dq1) of one forward call."""
    q, e, cols = inp["query"], inp["items"], inp["columns"]
    (M, D), R1 = q.shape, cols.shape[1]
    dev = q.device
    loss, lse = torch.empty(M, device=dev), torch.empty(M, device=dev)
    scores = torch.empty(M, R1, device=dev)
    dq1 = torch.empty((M, D) if want_dq else (1, 1), device=dev)
    block_d = triton.next_power_of_2(D)
    extra = {} if interp else {"num_warps": warps}
    if variant == "package":
        tss.sampled_softmax_fwd_kernel[(M,)](
            q, e, cols, loss, lse, scores, dq1, R1, D, q.stride(0), e.stride(0), cols.stride(0),
            scores.stride(0), dq1.stride(0), 1 / 0.05, BLOCK_R=block_r, BLOCK_D=block_d, WANT_DQ=want_dq, **extra,
        )  # fmt: skip
    else:
        fwd_deferred_kernel[(M,)](
            q, e, cols, loss, lse, scores, dq1, R1, D, q.stride(0), e.stride(0), cols.stride(0),
            scores.stride(0), dq1.stride(0), 1 / 0.05, BLOCK_R=block_r, BLOCK_D=block_d, WANT_DQ=want_dq,
            PREFETCH=variant == "deferred+prefetch", **extra,
        )  # fmt: skip
    return loss, lse, scores, dq1


def rel(a, b) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    M, D, C, R = (17344, 50, 3883, 128) if cuda else (24, 50, 101, 16)
    inp = make_inputs(M, D, C, R, device)
    before = {k: v.clone() for k, v in inp.items()}
    tiles = TILES if cuda else [(16, 1)]
    rows, ok = [], True
    for want_dq in (True, False):
        ref = run_variant(
            "package", inp, want_dq, tss.GPU_BLOCK_R if cuda else 16, tss.GPU_NUM_WARPS, not cuda
        )
        for variant in ("package", "deferred", "deferred+prefetch"):
            for block_r, warps in tiles:
                out = run_variant(variant, inp, want_dq, block_r, warps, not cuda)
                kept = ref[2] > float("-inf")  # dropped columns must stay -inf, kept ones close
                scores_equal = torch.equal(out[2], ref[2])
                same_drops = torch.equal(out[2] > float("-inf"), kept)
                errs = [rel(out[k], ref[k]) for k in ((0, 1, 3) if want_dq else (0, 1))]
                errs.append(rel(out[2][kept], ref[2][kept]))
                good = same_drops and max(errs) <= TOL
                ok &= good

                def call(v=variant, b=block_r, w=warps, dq=want_dq):
                    run_variant(v, inp, dq, b, w, not cuda)

                ms = graph_ms(call, args.iters)
                rows.append({"variant": variant, "want_dq": want_dq, "BLOCK_R": block_r, "num_warps": warps,
                             "ms": ms, "max_rel_err": max(errs), "scores_equal": scores_equal, "ok": good})  # fmt: skip
                print(rows[-1], flush=True)
    unchanged = all(torch.equal(before[k], inp[k]) for k in inp)
    ok &= unchanged
    info = machine_info()
    lines = [
        f"# Sampled softmax forward variants ({info['device']}, {info['date_utc'][:16]})",
        "",
        f"M = {M}, D = {D}, C = {C}, R = {R}, fp32; CUDA-graph replays, median of {args.iters}; against the package "
        f"kernel at its shipped tiles. Inputs unchanged: {'yes' if unchanged else 'NO'}.",
        "",
        "| variant | WANT_DQ | BLOCK_R | num_warps | ms | largest relative difference | scores bit-equal | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['want_dq']} | {r['BLOCK_R']} | {r['num_warps']} | {r['ms']:.3f} "
            f"| {r['max_rel_err']:.1e} | {'yes' if r['scores_equal'] else 'no'} | {'PASS' if r['ok'] else 'FAIL'} |"
        )
    best = {}
    for dq in (True, False):
        cands = [r for r in rows if r["want_dq"] == dq and r["ok"]]
        if cands:
            b = min(cands, key=lambda r: r["ms"])
            pk = [r["ms"] for r in rows if r["want_dq"] == dq and r["variant"] == "package"]
            best[dq] = (b, statistics.median(pk))
            lines.append("")
            lines.append(
                f"WANT_DQ={dq}: fastest {b['variant']} ({b['BLOCK_R']}, {b['num_warps']} warps) {b['ms']:.3f} ms"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    save_results({"machine": info, "rows": rows, "inputs_unchanged": unchanged}, "try_sampled_softmax_fwd",
                 [args.out], text)  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
