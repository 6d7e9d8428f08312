"""The second half of a SASRec block in one Triton kernel each way: output projection, residual LayerNorm, FFN.

For each row (position) with attention output a (D,) and normalised query x_q (D,), as `SASRecBlock` spells it:

    s   = x_q + W_o a + b_o                      attention's output projection and the residual
    y   = LayerNorm(s)                           no affine, over the D values
    h   = Dropout_1(ReLU(W_1 y + b_1))           (H,)
    out = y + Dropout_2(W_2 h + b_2)             (D,)

Why a kernel of our own: at ML-1M's width (D = H = 50) each of these steps is a small pass over (B N, 50)
values, and cuBLAS takes its slow unaligned path for rows of 50 floats. Spelled out, the chain is nine
operations forward and their backward passes, each a kernel or more (cuBLAS adds split-K reductions, the
biases need sums); here it is one forward kernel, one backward kernel and one sum of the weight gradients.
Each program holds its rows' tiles in registers (D and H padded to a power of two, masked), so nothing in
between goes to memory.

Dropout: each element's keep decision is `tl.rand(seed, offset) >= p`, Philox random numbers from a seed the
forward draws with `torch.randint` on the tensors' device (inside a CUDA graph, a new seed at each replay)
and unique offsets per element, so the backward recomputes the same masks and nothing is stored. The masks
differ from `F.dropout`'s (another generator), with the same distribution. `dropout_masks` returns them.

Backward (g = dL/dout), recomputing s, y, h from a and x_q:

    dz_2 = Dropout_2'(g)                 dW_2 = dz_2^T h          db_2 = sum dz_2
    dz_1 = ReLU'(Dropout_1'(dz_2 W_2))   dW_1 = dz_1^T y          db_1 = sum dz_1
    dy   = g + dz_1 W_1
    ds   = rstd (dy - mean(dy) - y mean(dy y))                    (LayerNorm's backward)
    dx_q = ds,  da = ds W_o,             dW_o = ds^T a            db_o = sum ds

Each program sums its rows' share of the six weight gradients in registers and writes it once; one
`torch.sum` over the programs adds them up (a fixed order: the same bits every run).

Products are `tl.dot` in fp32, TF32 when `torch.backends.cuda.matmul.allow_tf32` is on (the trainer's `tf32`),
as the `nn.Linear` layers they replace; the option `fp32_precision` overrides it. Outputs are fresh buffers
(NaN-filled first under the option `poison_outputs`, so an element a kernel never writes shows).
"""

from __future__ import annotations

import functools

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

# (rows per tile, warps) of each kernel on a GPU, and how many backward programs per multiprocessor (each
# writes its share of the weight gradients; one torch.sum adds them up). Measured on an H200 at the ML-1M step's
# shape (benchmarks/bench_sasrec_output.py, 2026-12-02, 15 choices): the forward took 0.046 ms with (64, 4); forward
# + backward 0.142 ms with (32, 8) and one backward program per multiprocessor (132), the fastest, where (64, 4)
# spilled 408 registers per thread in the backward and took 0.21-0.23 ms. The backward's loop over tiles is not
# software-pipelined (num_stages 1): Triton's default stages would buffer every load of the loop body, more shared
# memory than an H200 has.
GPU_FWD_TILE = (64, 4)
GPU_BWD_TILE = (32, 8)
GPU_BWD_PROGRAMS_PER_SM = 1
INTERPRETER_BLOCK_M = 1024
INTERPRETER_BWD_PROGRAMS = 1 << 30  # tests lower it, so that a program loops over several tiles
MAX_WIDTH = 128  # D or H above this: the register tiles would spill (wider models keep nn.Linear)


@triton.jit
def _load_rows(PTR, rows, cols, row_ok, col_ok, stride):
    """A (BLOCK_M, BLOCK_C) tile of rows of PTR, in fp32, zero outside the rows and columns that exist."""
    ptrs = PTR + rows[:, None].to(tl.int64) * stride + cols[None, :]
    return tl.load(ptrs, mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _load_matrix(PTR, r, c, r_ok, c_ok, stride_r, stride_c):
    """W[r, c] as a tile (fp32), zero outside the matrix; strides pick W or its transpose."""
    ptrs = PTR + r[:, None] * stride_r + c[None, :] * stride_c
    return tl.load(ptrs, mask=r_ok[:, None] & c_ok[None, :], other=0.0).to(tl.float32)


@triton.jit
def _keep(seed, rows, cols, first, width, p):
    """Dropout's keep decisions for the tile (rows, cols) of a mask whose element (r, c) has offset
    first + r * width + c: uniform [0, 1) Philox numbers >= p."""
    offsets = first + rows[:, None] * width + cols[None, :]
    return tl.rand(seed, offsets) >= p


@triton.jit
def _normalised(A, XQ, WO, BO, rows, d, row_ok, d_ok, D, stride_a, stride_xq, eps, PREC: tl.constexpr):
    """y = LayerNorm(x_q + W_o a + b_o) of one tile of rows (0 in the padding columns), and each row's rstd."""
    a = _load_rows(A, rows, d, row_ok, d_ok, stride_a)  # (BM, BD)
    x_q = _load_rows(XQ, rows, d, row_ok, d_ok, stride_xq)
    wo_t = _load_matrix(WO, d, d, d_ok, d_ok, 1, D)  # wo_t[k, n] = W_o[n, k]
    bo = tl.load(BO + d, mask=d_ok, other=0.0).to(tl.float32)
    s = x_q + tl.dot(a, wo_t, input_precision=PREC) + bo[None, :]
    s = tl.where(d_ok[None, :], s, 0.0)
    mean = tl.sum(s, axis=1) / D
    sc = tl.where(d_ok[None, :], s - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(sc * sc, axis=1) / D + eps)  # (BM,)
    return sc * rstd[:, None], rstd


@triton.jit
def _hidden(y, W1, B1, SEED, rows, d, h, d_ok, h_ok, M, D, p, scale,
            DROPOUT: tl.constexpr, PREC: tl.constexpr, BLOCK_H: tl.constexpr):  # fmt: skip
    """hk = Dropout_1(ReLU(W_1 y + b_1)) of one tile, 0 in the padding columns. hk > 0 exactly where the
    backward lets a gradient through (a positive ReLU input, kept), so the backward keeps no mask."""
    w1_t = _load_matrix(W1, d, h, d_ok, h_ok, 1, D)  # w1_t[k, j] = W_1[j, k]
    b1 = tl.load(B1 + h, mask=h_ok, other=0.0).to(tl.float32)
    z1 = tl.dot(y, w1_t, input_precision=PREC) + b1[None, :]  # (BM, BH)
    hid = tl.where(h_ok[None, :], tl.maximum(z1, 0.0), 0.0)
    if DROPOUT:
        hid = tl.where(_keep(tl.load(SEED), rows, h, 0, BLOCK_H, p), hid * scale, 0.0)
    return hid


@triton.jit
def _kept_out(
    x, SEED, rows, d, M, p, scale, DROPOUT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr
):
    """Dropout_2 applied to a tile x (BM, BD): forward, or its backward on a gradient (the same masks)."""
    if DROPOUT:
        return tl.where(_keep(tl.load(SEED), rows, d, M * BLOCK_H, BLOCK_D, p), x * scale, 0.0)
    return x


@triton.jit
def sasrec_output_fwd_kernel(
    A,  # attention output (M, D), unit column stride
    XQ,  # the block's normalised input (M, D), unit column stride
    WO, BO, W1, B1, W2, B2,  # W_o (D, D), b_o (D,), W_1 (H, D), b_1 (H,), W_2 (D, H), b_2 (D,): contiguous
    OUT,  # (M, D), written (contiguous)
    SEED,  # (1,) int64: dropout's Philox seed (read only with DROPOUT)
    M, D, H, stride_a, stride_xq, eps, p, scale,  # scale = 1 / (1 - p)
    DROPOUT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Grid (cdiv(M, BLOCK_M),): one program computes BLOCK_M rows. The weights are read where they are used
    (they stay in the cache; held in registers all along they would spill)."""
    d = tl.arange(0, BLOCK_D)
    h = tl.arange(0, BLOCK_H)
    d_ok, h_ok = d < D, h < H
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < M
    y, _ = _normalised(A, XQ, WO, BO, rows, d, row_ok, d_ok, D, stride_a, stride_xq, eps, PREC)
    hk = _hidden(y, W1, B1, SEED, rows, d, h, d_ok, h_ok, M, D, p, scale, DROPOUT, PREC, BLOCK_H)
    w2_t = _load_matrix(W2, h, d, h_ok, d_ok, 1, H)  # w2_t[j, n] = W_2[n, j]
    b2 = tl.load(B2 + d, mask=d_ok, other=0.0).to(tl.float32)
    z2 = tl.dot(hk, w2_t, input_precision=PREC) + b2[None, :]  # (BM, BD)
    out = y + _kept_out(z2, SEED, rows, d, M, p, scale, DROPOUT, BLOCK_D, BLOCK_H)
    ptrs = OUT + rows[:, None].to(tl.int64) * D + d[None, :]
    tl.store(ptrs, out, mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def sasrec_output_bwd_kernel(
    A, XQ, WO, BO, W1, B1, W2, B2, SEED,  # as the forward's
    G,  # dL/dout (M, D), unit column stride
    DA, DXQ,  # (M, D) each, written (contiguous)
    PART,  # (programs, BLOCK_D * BLOCK_D + 2 * BLOCK_H * BLOCK_D + 2 * BLOCK_D + BLOCK_H) fp32, written
    M, D, H, stride_a, stride_xq, stride_g, eps, p, scale,
    DROPOUT: tl.constexpr, PREC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Grid (programs,): program i takes the tiles i, i + programs, ... of BLOCK_M rows: their input gradients,
    and its share of the weight gradients: [dW_o | dW_1 | dW_2 | db_o | db_1 | db_2], padded to the tiles.
    Each tile's values are formed where they are needed and dropped after (a, the masks: recomputed), so that
    the three weight-gradient tiles fit in registers beside them."""
    d = tl.arange(0, BLOCK_D)
    h = tl.arange(0, BLOCK_H)
    d_ok, h_ok = d < D, h < H
    dwo = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    dw1 = tl.zeros((BLOCK_H, BLOCK_D), dtype=tl.float32)
    dw2 = tl.zeros((BLOCK_D, BLOCK_H), dtype=tl.float32)
    dbo = tl.zeros((BLOCK_D,), dtype=tl.float32)
    db1 = tl.zeros((BLOCK_H,), dtype=tl.float32)
    db2 = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for tile in range(tl.program_id(0), tl.cdiv(M, BLOCK_M), tl.num_programs(0)):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        tile_ok = row_ok[:, None] & d_ok[None, :]
        y, rstd = _normalised(A, XQ, WO, BO, rows, d, row_ok, d_ok, D, stride_a, stride_xq, eps, PREC)
        hk = _hidden(y, W1, B1, SEED, rows, d, h, d_ok, h_ok, M, D, p, scale, DROPOUT, PREC, BLOCK_H)
        g = _load_rows(G, rows, d, row_ok, d_ok, stride_g)  # (BM, BD), 0 outside the rows
        dz2 = _kept_out(g, SEED, rows, d, M, p, scale, DROPOUT, BLOCK_D, BLOCK_H)
        dw2 += tl.dot(tl.trans(dz2), hk, input_precision=PREC)  # (BD, BH)
        db2 += tl.sum(dz2, axis=0)
        w2 = _load_matrix(W2, d, h, d_ok, h_ok, H, 1)  # W_2[n, j]
        dhk = tl.dot(dz2, w2, input_precision=PREC)  # (BM, BH)
        dz1 = tl.where(hk > 0.0, dhk * scale, 0.0)  # through Dropout_1 and the ReLU
        dw1 += tl.dot(tl.trans(dz1), y, input_precision=PREC)  # (BH, BD)
        db1 += tl.sum(dz1, axis=0)
        w1 = _load_matrix(W1, h, d, h_ok, d_ok, D, 1)  # W_1[j, k]
        dy = g + tl.dot(dz1, w1, input_precision=PREC)  # (BM, BD)
        c_g = tl.sum(dy, axis=1) / D
        c_gy = tl.sum(dy * y, axis=1) / D
        ds = tl.where(tile_ok, (dy - c_g[:, None] - y * c_gy[:, None]) * rstd[:, None], 0.0)
        a = _load_rows(A, rows, d, row_ok, d_ok, stride_a)  # read again (cached) rather than kept
        dwo += tl.dot(tl.trans(ds), a, input_precision=PREC)  # (BD, BD)
        dbo += tl.sum(ds, axis=0)
        wo = _load_matrix(WO, d, d, d_ok, d_ok, D, 1)  # W_o[n, k]
        da = tl.dot(ds, wo, input_precision=PREC)  # (BM, BD)
        offs = rows[:, None].to(tl.int64) * D + d[None, :]
        tl.store(DXQ + offs, ds, mask=tile_ok)
        tl.store(DA + offs, da, mask=tile_ok)
    part = PART + tl.program_id(0).to(tl.int64) * (
        BLOCK_D * BLOCK_D + 2 * BLOCK_H * BLOCK_D + 2 * BLOCK_D + BLOCK_H
    )
    tl.store(part + d[:, None] * BLOCK_D + d[None, :], dwo)
    part += BLOCK_D * BLOCK_D
    tl.store(part + h[:, None] * BLOCK_D + d[None, :], dw1)
    part += BLOCK_H * BLOCK_D
    tl.store(part + d[:, None] * BLOCK_H + h[None, :], dw2)
    part += BLOCK_H * BLOCK_D
    tl.store(part + d, dbo)
    tl.store(part + BLOCK_D + h, db1)
    tl.store(part + BLOCK_D + BLOCK_H + d, db2)


@triton.jit
def dropout_masks_kernel(
    SEED, KEEP1, KEEP2, M, D, H, p,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    """Grid (cdiv(M, BLOCK_M),): the forward's two keep masks, (M, H) and (M, D) int8, for `dropout_masks`."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    h = tl.arange(0, BLOCK_H)
    row_ok = rows < M
    seed = tl.load(SEED)
    keep1 = _keep(seed, rows, h, 0, BLOCK_H, p)
    keep2 = _keep(seed, rows, d, M * BLOCK_H, BLOCK_D, p)
    r64 = rows[:, None].to(tl.int64)
    tl.store(KEEP1 + r64 * H + h[None, :], keep1.to(tl.int8), mask=row_ok[:, None] & (h < H)[None, :])
    tl.store(KEEP2 + r64 * D + d[None, :], keep2.to(tl.int8), mask=row_ok[:, None] & (d < D)[None, :])


@functools.cache
def _multiprocessors(device: int) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


def _tiles(M: int, backward: bool, device: torch.device) -> tuple[int, int, dict]:
    """(BLOCK_M, programs, launch options): the forward takes one tile per program; the backward's programs
    loop over the tiles (GPU_BWD_PROGRAMS_PER_SM per multiprocessor at most, each writing one share of the
    weight gradients)."""
    if is_interpreter():
        block_m = min(_block_dim(M), INTERPRETER_BLOCK_M)
        tiles = max(1, triton.cdiv(M, block_m))
        return block_m, min(tiles, INTERPRETER_BWD_PROGRAMS) if backward else tiles, {}
    block_m, warps = GPU_BWD_TILE if backward else GPU_FWD_TILE
    tiles = max(1, triton.cdiv(M, block_m))
    if backward:
        index = device.index if device.index is not None else torch.cuda.current_device()
        programs = GPU_BWD_PROGRAMS_PER_SM * _multiprocessors(index)
        return block_m, min(tiles, programs), {"num_warps": warps, "num_stages": 1}
    return block_m, tiles, {"num_warps": warps}


class _SASRecOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, x_q, wo, bo, w1, b1, w2, b2, p: float, eps: float):
        a, x_q = _last_dim_contiguous(a), _last_dim_contiguous(x_q)
        weights = [t.contiguous() for t in (wo, bo, w1, b1, w2, b2)]
        M, D = x_q.shape
        H = weights[2].shape[0]
        block_d, block_h = _block_dim(D), _block_dim(H)
        dropout = p > 0.0
        if dropout and M * (block_d + block_h) >= 2**31:
            raise ValueError(
                f"sasrec_output: dropout offsets need M * (BLOCK_D + BLOCK_H) < 2^31, got M = {M}"
            )
        # a fresh seed from torch's generator on this device (CUDA graphs: a new one at each replay)
        seed = (
            torch.randint(0, 2**31 - 1, (1,), device=x_q.device)
            if dropout
            else x_q.new_zeros(1, dtype=torch.int64)
        )
        scale = 1.0 / (1.0 - p) if dropout else 1.0
        # read once: the backward may run outside the caller's use_options scope (another thread)
        opts = get_options()
        out = _new((M, D), torch.float32, x_q.device, opts)
        prec = _dot_precision(out, opts)  # the products' operands are fp32 in the kernels whatever a's dtype
        block_m, programs, launch = _tiles(M, False, x_q.device)
        if M:
            sasrec_output_fwd_kernel[(programs,)](
                a, x_q, *weights, out, seed, M, D, H, a.stride(0), x_q.stride(0), eps, p, scale,
                DROPOUT=dropout, PREC=prec, BLOCK_M=block_m, BLOCK_D=block_d, BLOCK_H=block_h, **launch,
            )  # fmt: skip
        ctx.save_for_backward(a, x_q, seed, *weights)
        ctx.args = (p, eps, scale, prec, opts)
        return out

    @staticmethod
    def backward(ctx, g):
        a, x_q, seed, wo, bo, w1, b1, w2, b2 = ctx.saved_tensors
        p, eps, scale, prec, opts = ctx.args
        g = _last_dim_contiguous(g)
        M, D = x_q.shape
        H = w1.shape[0]
        block_d, block_h = _block_dim(D), _block_dim(H)
        block_m, programs, launch = _tiles(M, True, a.device)
        width = block_d * block_d + 2 * block_h * block_d + 2 * block_d + block_h
        da, dxq = (_new((M, D), torch.float32, a.device, opts) for _ in range(2))
        part = _new((programs, width), torch.float32, a.device, opts)
        if M:
            sasrec_output_bwd_kernel[(programs,)](
                a, x_q, wo, bo, w1, b1, w2, b2, seed, g, da, dxq, part,
                M, D, H, a.stride(0), x_q.stride(0), g.stride(0), eps, p, scale,
                DROPOUT=p > 0.0, PREC=prec, BLOCK_M=block_m, BLOCK_D=block_d, BLOCK_H=block_h, **launch,
            )  # fmt: skip
            total = part.sum(0)  # (width,)
        else:
            total = torch.zeros(width, dtype=torch.float32, device=a.device)
        dwo, dw1, dw2, dbo, db1, db2 = total.split(
            [block_d * block_d, block_h * block_d, block_d * block_h, block_d, block_h, block_d]
        )
        dwo = dwo.view(block_d, block_d)[:D, :D]
        dw1 = dw1.view(block_h, block_d)[:H, :D]
        dw2 = dw2.view(block_d, block_h)[:D, :H]
        grads = (dwo, dbo[:D], dw1, db1[:H], dw2, db2[:D])
        return (
            da.to(a.dtype),
            dxq.to(x_q.dtype),
            *(t.to(w.dtype) for t, w in zip(grads, ctx.saved_tensors[3:])),
            None,
            None,
        )


def sasrec_output(
    a: torch.Tensor,
    x_q: torch.Tensor,
    out_proj: torch.nn.Linear,
    ffn1: torch.nn.Linear,
    ffn2: torch.nn.Linear,
    dropout: float,
    eps: float,
) -> torch.Tensor:
    """`x_q + out_proj(a)` through LayerNorm(eps) and the residual FFN (module docstring), fused: `a, x_q (..., D)`
    -> `(..., D)` float32. `dropout` is the FFN's (0 outside training). Differentiable in a, x_q and the three
    layers' weights and biases."""
    if a.shape != x_q.shape:
        raise ValueError(
            f"sasrec_output: a and x_q must have one shape; got {tuple(a.shape)}, {tuple(x_q.shape)}"
        )
    D = x_q.shape[-1]
    H = ffn1.out_features
    shapes = (out_proj.weight.shape, ffn1.weight.shape, ffn2.weight.shape)
    if shapes != ((D, D), (H, D), (D, H)) or any(lin.bias is None for lin in (out_proj, ffn1, ffn2)):
        raise ValueError(
            f"sasrec_output: layers must be out_proj (D, D), ffn1 (H, D), ffn2 (D, H) with biases, D = {D}; got "
            f"{[tuple(s) for s in shapes]}"
        )
    if max(D, H) > MAX_WIDTH:
        raise ValueError(f"sasrec_output handles D and H up to {MAX_WIDTH}; got D = {D}, H = {H}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"sasrec_output: dropout must be in [0, 1), got {dropout}")
    if not x_q.is_cuda and not is_interpreter():
        raise ValueError("sasrec_output runs on CUDA tensors (on a CPU only under TRITON_INTERPRET=1)")
    shape = x_q.shape
    out = _SASRecOutput.apply(
        a.reshape(-1, D), x_q.reshape(-1, D), out_proj.weight, out_proj.bias, ffn1.weight, ffn1.bias,
        ffn2.weight, ffn2.bias, float(dropout), float(eps),
    )  # fmt: skip
    return out.view(shape)


def spelled_out(a, x_q, wo, bo, w1, b1, w2, b2, keep1=None, keep2=None, p: float = 0.0, eps: float = 1e-8):
    """The kernels' math in PyTorch operations, in the inputs' dtype, with given keep masks (None: that dropout
    off; `dropout_masks` gives the kernels' own): the reference the tests and `benchmarks/check_kernels_gpu.py`
    compare the kernels with."""
    scale = 1.0 / (1.0 - p)
    y = F.layer_norm(x_q + F.linear(a, wo, bo), (x_q.shape[-1],), eps=eps)
    h = F.relu(F.linear(y, w1, b1))
    if keep1 is not None:
        h = h * keep1 * scale
    z = F.linear(h, w2, b2)
    if keep2 is not None:
        z = z * keep2 * scale
    return y + z


def dropout_masks(seed: torch.Tensor, M: int, D: int, H: int, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The keep masks (bool) the kernels use for `seed (1,) int64` and M rows: Dropout_1's (M, H) and
    Dropout_2's (M, D). For tests and for reading what a run dropped."""
    keep1 = torch.empty((M, H), dtype=torch.int8, device=seed.device)
    keep2 = torch.empty((M, D), dtype=torch.int8, device=seed.device)
    block_m, programs, launch = _tiles(M, False, seed.device)  # the forward's tiles
    if M:
        dropout_masks_kernel[(programs,)](
            seed,
            keep1,
            keep2,
            M,
            D,
            H,
            p,
            BLOCK_M=block_m,
            BLOCK_D=_block_dim(D),
            BLOCK_H=_block_dim(H),
            **launch,
        )
    return keep1.bool(), keep2.bool()
