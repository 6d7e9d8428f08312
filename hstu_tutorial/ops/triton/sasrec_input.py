"""The first half of a SASRec block in one Triton kernel each way: the query's LayerNorm and the q, k, v products,
written as the bf16 tensors PyTorch's flash attention takes.

For each row (position) x (D,) of the block's input, as `SASRecBlock` spells it with `attention_impl="sdpa-bf16"`
and one head:

    x_q = LayerNorm(x)                 no affine
    q   = W_q x_q + b_q                the query from the normalised input,
    k   = W_k x + b_k                  keys and values from the raw one (W_q, W_k, W_v: in_proj's three blocks)
    v   = W_v x + b_v

The forward writes x_q (float32, the block's second half reads it) and q, k, v in bfloat16, each row widened to P
columns (a multiple of 8: what SDPA's fused kernels accept) with zeros after the D values. Spelled out, that
is a LayerNorm, two products with their bias additions, three casts and three pads; their backward passes
add the products' weight and input gradients, the bias sums, the slices and casts back, and the concatenation
of the split weight's gradients.

Backward (g_q, g_k, g_v: the first D columns of the incoming bf16 gradients, in float32; g_xq: x_q's own
gradient, from the block's second half), recomputing x_q from x:

    dW_q = g_q^T x_q    db_q = sum g_q     dW_k = g_k^T x    db_k = sum g_k    dW_v = g_v^T x    db_v = sum g_v
    dx_q = g_xq + g_q W_q
    dx   = rstd (dx_q - mean(dx_q) - x_q mean(dx_q x_q)) + g_k W_k + g_v W_v

Each program sums its rows' share of the weight gradients and writes it once; one `torch.sum` over the
programs adds them up (a fixed order: the same bits every run). Products are `tl.dot` in fp32 (TF32 when
`torch.backends.cuda.matmul.allow_tf32` is on, as for the `nn.Linear` they replace; the option `fp32_precision`
overrides it), as in `sasrec_output.py`, whose tile choices and helpers this module shares.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from hstu_tutorial.ops.options import get_options
from hstu_tutorial.ops.triton.hstu_attention_autograd import (
    _block_dim,
    _dot_precision,
    _last_dim_contiguous,
    _new,
    is_interpreter,
)
from hstu_tutorial.ops.triton.sasrec_output import MAX_WIDTH, _load_matrix, _load_rows, _tiles


def padded_width(D: int) -> int:
    """The row width of the q, k, v written: D rounded up to a multiple of 8."""
    return -(-D // 8) * 8


@triton.jit
def _normalised_input(X, rows, d, row_ok, d_ok, D, stride_x, eps):
    """x (0 outside), x_q = LayerNorm(x) (0 in the padding columns) and each row's rstd, for one tile."""
    x = _load_rows(X, rows, d, row_ok, d_ok, stride_x)  # (BM, BD)
    mean = tl.sum(x, axis=1) / D
    xc = tl.where(d_ok[None, :], x - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=1) / D + eps)  # (BM,)
    return x, xc * rstd[:, None], rstd


@triton.jit
def sasrec_input_fwd_kernel(
    X,  # (M, D) the block's input, unit column stride
    WQ, BQ, WKV, BKV,  # W_q (D, D), b_q (D,), [W_k; W_v] (2D, D), [b_k; b_v] (2D,): contiguous
    XQ,  # (M, D) float32, written (contiguous)
    Q, K, V,  # (M, P) each, written (contiguous, the outputs' dtype)
    M, D, P, stride_x, eps,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Grid (cdiv(M, BLOCK_M),): one program computes BLOCK_M rows (BLOCK_D >= P: the padding columns come out 0,
    since the weights and biases read there are masked to 0)."""
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    x, x_q, _ = _normalised_input(X, rows, d, row_ok, d_ok, D, stride_x, eps)
    r64 = rows[:, None].to(tl.int64)
    tl.store(XQ + r64 * D + d[None, :], x_q, mask=row_ok[:, None] & d_ok[None, :])
    out_ok = row_ok[:, None] & (d < P)[None, :]
    wq_t = _load_matrix(WQ, d, d, d_ok, d_ok, 1, D)  # wq_t[k, n] = W_q[n, k]
    bq = tl.load(BQ + d, mask=d_ok, other=0.0).to(tl.float32)
    q = tl.dot(x_q, wq_t, input_precision=PREC) + bq[None, :]
    tl.store(Q + r64 * P + d[None, :], q.to(Q.dtype.element_ty), mask=out_ok)
    wk_t = _load_matrix(WKV, d, d, d_ok, d_ok, 1, D)  # W_k = WKV rows 0 .. D-1
    bk = tl.load(BKV + d, mask=d_ok, other=0.0).to(tl.float32)
    k = tl.dot(x, wk_t, input_precision=PREC) + bk[None, :]
    tl.store(K + r64 * P + d[None, :], k.to(K.dtype.element_ty), mask=out_ok)
    wv_t = _load_matrix(WKV + D * D, d, d, d_ok, d_ok, 1, D)  # W_v = WKV rows D .. 2D-1
    bv = tl.load(BKV + D + d, mask=d_ok, other=0.0).to(tl.float32)
    v = tl.dot(x, wv_t, input_precision=PREC) + bv[None, :]
    tl.store(V + r64 * P + d[None, :], v.to(V.dtype.element_ty), mask=out_ok)


@triton.jit
def sasrec_input_bwd_kernel(
    X, WQ, WKV,  # as the forward's
    GXQ,  # (M, D) x_q's gradient, unit column stride
    GQ, GK, GV,  # (M, P) each, the q, k, v gradients, unit column stride (only the first D columns are read)
    DX,  # (M, D) float32, written (contiguous)
    PART,  # (programs, 3 * BLOCK_D * BLOCK_D + 3 * BLOCK_D) fp32, written
    M, D, stride_x, stride_gxq, stride_gq, stride_gk, stride_gv, eps,
    PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Grid (programs,): program i takes the tiles i, i + programs, ... of BLOCK_M rows: their input gradients
    and its share of [dW_q | dW_k | dW_v | db_q | db_k | db_v], padded to the tiles."""
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    dwq = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dwk = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dwv = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dbq = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbk = tl.zeros((BLOCK_D,), dtype=tl.float32)
    dbv = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for tile in range(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.num_programs(0)):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        tile_ok = row_ok[:, None] & d_ok[None, :]
        x, x_q, rstd = _normalised_input(X, rows, d, row_ok, d_ok, D, stride_x, eps)
        gq = _load_rows(GQ, rows, d, row_ok, d_ok, stride_gq)  # (BM, BD), 0 outside
        dwq += tl.dot(tl.trans(gq), x_q, input_precision=PREC)
        dbq += tl.sum(gq, axis=0)
        wq = _load_matrix(WQ, d, d, d_ok, d_ok, D, 1)  # W_q[n, k]
        dxq = _load_rows(GXQ, rows, d, row_ok, d_ok, stride_gxq) + tl.dot(gq, wq, input_precision=PREC)
        c_g = tl.sum(dxq, axis=1) / D
        c_gy = tl.sum(dxq * x_q, axis=1) / D
        dx = tl.where(tile_ok, (dxq - c_g[:, None] - x_q * c_gy[:, None]) * rstd[:, None], 0.0)
        gk = _load_rows(GK, rows, d, row_ok, d_ok, stride_gk)
        dwk += tl.dot(tl.trans(gk), x, input_precision=PREC)
        dbk += tl.sum(gk, axis=0)
        wk = _load_matrix(WKV, d, d, d_ok, d_ok, D, 1)  # W_k[n, k]
        dx += tl.dot(gk, wk, input_precision=PREC)
        gv = _load_rows(GV, rows, d, row_ok, d_ok, stride_gv)
        dwv += tl.dot(tl.trans(gv), x, input_precision=PREC)
        dbv += tl.sum(gv, axis=0)
        wv = _load_matrix(WKV + D * D, d, d, d_ok, d_ok, D, 1)  # W_v[n, k]
        dx += tl.dot(gv, wv, input_precision=PREC)
        tl.store(DX + rows[:, None].to(tl.int64) * D + d[None, :], dx, mask=tile_ok)
    part = PART + tl.program_id(0).to(tl.int64) * (3 * BLOCK_D * BLOCK_D + 3 * BLOCK_D)
    square = d[:, None] * BLOCK_D + d[None, :]
    tl.store(part + square, dwq)
    tl.store(part + BLOCK_D * BLOCK_D + square, dwk)
    tl.store(part + 2 * BLOCK_D * BLOCK_D + square, dwv)
    part += 3 * BLOCK_D * BLOCK_D
    tl.store(part + d, dbq)
    tl.store(part + BLOCK_D + d, dbk)
    tl.store(part + 2 * BLOCK_D + d, dbv)


class _SASRecInput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, wq, bq, wkv, bkv, eps: float, dtype: torch.dtype):
        x = _last_dim_contiguous(x)
        weights = [t.contiguous() for t in (wq, bq, wkv, bkv)]
        M, D = x.shape
        P = padded_width(D)
        block_d = _block_dim(P)
        opts = get_options()  # read once: the backward may run outside the caller's use_options scope
        x_q = _new((M, D), torch.float32, x.device, opts)
        q, k, v = (_new((M, P), dtype, x.device, opts) for _ in range(3))
        prec = _dot_precision(x_q, opts)
        block_m, programs, launch = _tiles(M, False, x.device)
        if M:
            sasrec_input_fwd_kernel[(programs,)](
                x, *weights, x_q, q, k, v, M, D, P, x.stride(0), eps,
                PREC=prec, BLOCK_M=block_m, BLOCK_D=block_d, **launch,
            )  # fmt: skip
        ctx.save_for_backward(x, *weights)
        ctx.args = (eps, prec, opts)
        return x_q, q, k, v

    @staticmethod
    def backward(ctx, g_xq, g_q, g_k, g_v):
        x, wq, bq, wkv, bkv = ctx.saved_tensors
        eps, prec, opts = ctx.args
        g_xq, g_q, g_k, g_v = (_last_dim_contiguous(t) for t in (g_xq, g_q, g_k, g_v))
        M, D = x.shape
        block_d = _block_dim(padded_width(D))
        block_m, programs, launch = _tiles(M, True, x.device)
        width = 3 * block_d * block_d + 3 * block_d
        dx = _new((M, D), torch.float32, x.device, opts)
        part = _new((programs, width), torch.float32, x.device, opts)
        if M:
            sasrec_input_bwd_kernel[(programs,)](
                x, wq, wkv, g_xq, g_q, g_k, g_v, dx, part,
                M, D, x.stride(0), g_xq.stride(0), g_q.stride(0), g_k.stride(0), g_v.stride(0), eps,
                PREC=prec, BLOCK_M=block_m, BLOCK_D=block_d, **launch,
            )  # fmt: skip
            total = part.sum(0)  # (width,)
        else:
            total = torch.zeros(width, dtype=torch.float32, device=x.device)
        square = block_d * block_d
        dwq, dwk, dwv = (
            total[i * square : (i + 1) * square].view(block_d, block_d)[:D, :D] for i in range(3)
        )
        dbq, dbk, dbv = (total[3 * square + i * block_d :][:D] for i in range(3))
        return (
            dx.to(x.dtype),
            dwq.to(wq.dtype),
            dbq.to(bq.dtype),
            torch.cat([dwk, dwv]).to(wkv.dtype),
            torch.cat([dbk, dbv]).to(bkv.dtype),
            None,
            None,
        )


def sasrec_input(
    x: torch.Tensor, in_proj: torch.nn.Linear, eps: float, dtype: torch.dtype = torch.bfloat16
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x_q = LayerNorm(x) and one head's q = W_q x_q + b_q, k = W_k x + b_k, v = W_v x + b_v (module docstring),
    fused: `x (B, N, D)` float32 -> x_q `(B, N, D)` float32 and q, k, v `(B, 1, N, P)` in `dtype`, P =
    `padded_width(D)`, zeros after column D: what `F.scaled_dot_product_attention` takes. `in_proj`: the block's
    packed (3D, D) projection with bias (rows q, then k, then v). Differentiable in x and in_proj's weight and bias."""
    if x.dim() != 3:
        raise ValueError(f"sasrec_input: x must be (B, N, D); got shape {tuple(x.shape)}")
    B, N, D = x.shape
    if tuple(in_proj.weight.shape) != (3 * D, D) or in_proj.bias is None:
        raise ValueError(
            f"sasrec_input: in_proj must be a (3D, D) = ({3 * D}, {D}) Linear with a bias; got "
            f"{tuple(in_proj.weight.shape)}{'' if in_proj.bias is not None else ' without a bias'}"
        )
    if padded_width(D) > MAX_WIDTH:
        raise ValueError(f"sasrec_input handles D up to {MAX_WIDTH}; got D = {D}")
    if not x.is_cuda and not is_interpreter():
        raise ValueError("sasrec_input runs on CUDA tensors (on a CPU only under TRITON_INTERPRET=1)")
    w_q, w_kv = in_proj.weight.split([D, 2 * D])
    b_q, b_kv = in_proj.bias.split([D, 2 * D])
    x_q, q, k, v = _SASRecInput.apply(x.reshape(B * N, D), w_q, b_q, w_kv, b_kv, float(eps), dtype)
    P = q.shape[-1]
    return x_q.view(B, N, D), *(t.view(B, 1, N, P) for t in (q, k, v))


def spelled_out(x, w_q, b_q, w_kv, b_kv, eps: float = 1e-8, dtype: torch.dtype | None = None):
    """The kernels' math in PyTorch operations, in x's dtype (then cast to `dtype` and padded, if given):
    `x (M, D)` -> x_q `(M, D)`, q, k, v `(M, P)`. The reference of the tests and `check_kernels_gpu.py`."""
    D = x.shape[-1]
    x_q = F.layer_norm(x, (D,), eps=eps)
    q = F.linear(x_q, w_q, b_q)
    k, v = F.linear(x, w_kv, b_kv).chunk(2, dim=-1)
    pad = padded_width(D) - D
    out = [t if dtype is None else t.to(dtype) for t in (q, k, v)]
    return (x_q, *(F.pad(t, (0, pad)) for t in out))
