"""Experiment: does loading K and V through TMA tensor descriptors speed up the attention forward on Hopper?

    PYTHONPATH=. python3 benchmarks/try_tma_forward.py --out $OUT/tma        # GPU (Hopper)
    PYTHONPATH=. python benchmarks/try_tma_forward.py --smoke               # CPU interpreter: correctness only

Two stripped-down copies of the package's forward (causal, jagged, no bias, bf16, one head dim), identical but
for how a key/value tile reaches shared memory: `pointer` computes a (BLOCK_N, D) block of addresses and
loads with masks, as the package's kernel does; `tma` hands the copy to the Tensor Memory Accelerator through
a host-built descriptor over the (T, H, D) tensor, so no addresses are computed per element. A TMA tile that
runs past a sequence's end holds the next sequence's rows (past the tensor's end, zeros): the causal mask of
the diagonal tile already drops them. Each kernel runs with the same tiles, as a CUDA-graph replay timed by
do_bench, next to the package's forward (the production kernel, its own tuned tiles). Every output is
checked against the package's forward (relative error), and the inputs are compared with copies after
timing. The package itself is not changed by this script.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from attention_host_time import D, H, graph_ms, make_case  # noqa: E402  (same cases, same timing)

from hstu_tutorial.ops.triton import triton_hstu_attention  # noqa: E402
from hstu_tutorial.ops.triton.hstu_attention_kernels import _sigmoid  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402

CONFIGS = [(64, 64, 4, 3), (64, 64, 4, 4), (128, 64, 8, 3), (128, 64, 4, 3), (128, 128, 8, 3)]


@triton.jit
def _tile(acc, q, k, v, offs_m, offs_n, start_n, alpha, L, MASK: tl.constexpr):
    s = tl.dot(q, tl.trans(k)) * alpha  # (BM, BN)
    p = s * _sigmoid(s, "tf32")
    if MASK:
        keep = ((start_n + offs_n)[None, :] <= offs_m[:, None]) & ((start_n + offs_n)[None, :] < L)
        p = tl.where(keep, p, 0.0)
    return acc + tl.dot(p.to(v.dtype), v)


@triton.jit
def _kv(K, V, K_DESC, V_DESC, base, start, start_n, h, s_t, offs_n, offs_d, L, BLOCK_N: tl.constexpr, D: tl.constexpr, TMA: tl.constexpr):  # fmt: skip
    """One key tile and its value tile, (BLOCK_N, D) each: by TMA, or by masked pointer loads."""
    if TMA:
        row = (start + start_n).to(tl.int32)
        k = K_DESC.load([row, h, 0]).reshape(BLOCK_N, D)
        v = V_DESC.load([row, h, 0]).reshape(BLOCK_N, D)
    else:
        kv_mask = (start_n + offs_n)[:, None] < L
        k = tl.load(K + base + (start_n + offs_n)[:, None] * s_t + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(V + base + (start_n + offs_n)[:, None] * s_t + offs_d[None, :], mask=kv_mask, other=0.0)
    return k, v


@triton.jit
def fwd_kernel(
    Q, K, V, OUT, OFFSETS, K_DESC, V_DESC, s_t, s_h, alpha, inv_n,
    H: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TMA: tl.constexpr,
):  # fmt: skip
    """q, k, v, out: (T, H, D) with the same strides (s_t, s_h, 1). Grid (cdiv(N, BLOCK_M), B * H)."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start = tl.load(OFFSETS + b)
    L = (tl.load(OFFSETS + b + 1) - start).to(tl.int32)
    start_m = pid_m * BLOCK_M
    if start_m >= L:
        return
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D)
    base = start * s_t + h * s_h
    q = tl.load(Q + base + offs_m[:, None] * s_t + offs_d[None, :], mask=offs_m[:, None] < L, other=0.0)
    acc = tl.zeros((BLOCK_M, D), dtype=tl.float32)
    full_end = tl.minimum(((start_m + 1) // BLOCK_N) * BLOCK_N, L)
    hi = tl.minimum(L, start_m + BLOCK_M)
    # as the package's kernel: the tiles left of the diagonal without a mask, then the diagonal ones with it
    for start_n in range(0, full_end, BLOCK_N):
        k, v = _kv(K, V, K_DESC, V_DESC, base, start, start_n, h, s_t, offs_n, offs_d, L, BLOCK_N, D, TMA)
        acc = _tile(acc, q, k, v, offs_m, offs_n, start_n, alpha, L, False)
    for start_n in range(full_end, hi, BLOCK_N):
        k, v = _kv(K, V, K_DESC, V_DESC, base, start, start_n, h, s_t, offs_n, offs_d, L, BLOCK_N, D, TMA)
        acc = _tile(acc, q, k, v, offs_m, offs_n, start_n, alpha, L, True)
    acc = acc * inv_n
    tl.store(
        OUT + base + offs_m[:, None] * s_t + offs_d[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=offs_m[:, None] < L,
    )


def forward(q, k, v, offsets, n, config, tma: bool):
    from triton.tools.tensor_descriptor import TensorDescriptor

    bm, bn, warps, stages = config
    out = torch.empty_like(q)
    if tma:
        k_desc = TensorDescriptor(k, list(k.shape), list(k.stride()), [bn, 1, D])
        v_desc = TensorDescriptor(v, list(v.shape), list(v.stride()), [bn, 1, D])
    else:
        k_desc = v_desc = None
    grid = (triton.cdiv(n, bm), (offsets.numel() - 1) * H)
    fwd_kernel[grid](
        q, k, v, out, offsets, k_desc, v_desc, q.stride(0), q.stride(1), 1.0 / D**0.5, 1.0 / n,
        H=H, D=D, BLOCK_M=bm, BLOCK_N=bn, TMA=tma, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def _cell(row: dict, label: str) -> str:
    """A table cell: the kernel's ms, or why it did not run."""
    return f"{row[label + '_ms']:.3f}" if label + "_ms" in row else row.get(label + "_error", "-")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="jagged-1024,dense-1024,jagged-4096,dense-4096,jagged-8192,dense-8192")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        args.cases, args.tokens = "jagged-64,dense-64", 128
    device = "cuda" if on_gpu else "cpu"
    # the interpreter's bf16 arithmetic is not faithful: fp32 there (correctness only)
    dtype = torch.bfloat16 if on_gpu else torch.float32
    configs = CONFIGS if on_gpu else [(32, 32, 4, 2)]
    lines = [
        "| case | tiles (BM, BN, warps, stages) | package forward ms | pointer ms | TMA ms | TMA / pointer | "
        "rel. err pointer, TMA | inputs unchanged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows, ok = [], True
    for name in args.cases.split(","):
        q, k, v, _, offsets, n = make_case(name, args.tokens, device, dtype)
        q, k, v = (t.detach() for t in (q, k, v))
        before = [t.clone() for t in (q, k, v, offsets)]
        package = functools.partial(
            triton_hstu_attention, q, k, v, offsets, alpha=1.0 / D**0.5, norm=n, max_len=n
        )
        with torch.no_grad():
            ref = package().float()
            prod_ms = graph_ms(package) if on_gpu else float("nan")
        for cfg in configs:
            row = {"case": name, "tiles": cfg, "package_ms": prod_ms}
            for label, tma in (("pointer", False), ("tma", True)):
                try:
                    run = functools.partial(forward, q, k, v, offsets, n, cfg, tma)
                    out = run().float()
                    row[f"{label}_err"] = float((out - ref).norm() / ref.norm())
                    row[f"{label}_ms"] = graph_ms(run) if on_gpu else float("nan")
                except Exception as err:  # a config that does not fit, or TMA unsupported: say so, go on
                    row[f"{label}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            row["inputs_unchanged"] = all(torch.equal(a, b) for a, b in zip(before, (q, k, v, offsets)))
            tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
            good = row["inputs_unchanged"] and all(
                row.get(f"{x}_err", 1.0) <= tol for x in ("pointer", "tma")
            )
            ok &= good
            rows.append(row)

            ratio = (
                row["tma_ms"] / row["pointer_ms"] if "tma_ms" in row and "pointer_ms" in row else float("nan")
            )
            errs = ", ".join(
                f"{row[f'{x}_err']:.1e}" if f"{x}_err" in row else "-" for x in ("pointer", "tma")
            )
            lines.append(
                f"| {name} | {cfg} | {prod_ms:.3f} | {_cell(row, 'pointer')} | {_cell(row, 'tma')} | {ratio:.2f} | {errs} | "
                f"{row['inputs_unchanged']}{'' if good else ' FAIL'} |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    save_results(
        {"machine": machine_info(), "args": vars(args), "rows": rows}, "try_tma_forward", [args.out], text
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
