"""The sampled softmax loss in Triton: each row's sampled item vectors are read from the table, never stored.

For row i with query q_i (D,), sampled columns c_i0 .. c_iR into the item table E (C, D) (c_i0 the positive,
c_i1 .. c_iR the negatives) and temperature tau:

    s_ij    = <q_i, E[c_ij]> / tau
    loss_i  = logsumexp_{j kept} s_ij - s_i0        kept: j = 0, and every j >= 1 with c_ij != c_i0

A negative equal to the positive (an accidental hit) is dropped; a negative drawn twice counts twice. This
is `losses.sampled_softmax_loss`'s per-row loss, the formula of its "gather" implementation.

Backward, with g_i = dL/dloss_i and p_ij = exp(s_ij - logsumexp_i) (0 for a dropped column):

    dL/dq_i    = (g_i / tau) (sum_j p_ij E[c_ij] - E[c_i0])
    dL/dE[c]   = sum over the (i, j) with c_ij = c of (g_i / tau) (p_ij - [j = 0]) q_i

Why kernels of our own: the "gather" formula materialises the (M, R, D) negative vectors (650 MB at the
ML-1M step's 17,344 rows and 128 negatives of 50 floats) and scatters as many gradient rows back; the "dense"
formula scores every row against the whole catalogue, three passes over an (M, C) matrix (269 MB). Here the
forward runs one program per row: it reads the row's 1 + R item vectors straight from the table (ML-1M's
3,883 x 50 floats stay in the GPU's L2 cache), keeps a running max and sum, and writes the row's loss,
log-sum-exp and 1 + R scores; its dot products are fp32 multiply-adds (no TF32).

Three backward passes (`BACKWARDS`); what dE needs is the awkward part, since every item is a negative in about
576 rows of an ML-1M step (17,344 x 129 / 3,883):
  * "segments" (what "auto" runs): the forward also keeps d loss_i / d q_i, a softmax-weighted sum of the item
    vectors it holds anyway (so dQ is one scaling by g_i); for dE the M (1 + R) sampled positions are sorted
    by item (`torch.sort`), and one program per item sums its own run of them. No atomics, no (M, C) matrix:
    0.342 ms forward + backward at the ML-1M step against 0.445 ms for "matrix" (H200, 2026-12-01).
  * "matrix": a kernel writes G[i, c] = (g_i / tau)(p_ij - [j = 0]) into a zeroed (M, C) matrix, then
    dQ = G E and dE = G^T Q are two matrix products (TF32 when the trainer allows it).
  * "atomic": each row recomputes its scores and adds its share of dE with fp32 atomics. Slow where items
    repeat (2.6 ms against 0.45 ms for the matrix pass at the ML-1M step on an H200: atomics on one address
    queue up; `benchmarks/bench_sampled_softmax.py`, 2026-12-01).

Fixed tiles (no autotuning): nothing is restored between launches, and outputs are fresh buffers (NaN-filled
first under the option `poison_outputs`, so an element a kernel never writes shows).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from hstu_tutorial import losses
from hstu_tutorial.ops.options import get_options
from hstu_tutorial.ops.triton import hstu_attention_autograd as _attention
from hstu_tutorial.ops.triton.hstu_attention_autograd import _last_dim_contiguous, is_interpreter

# Sampled columns a program scores at once, on a GPU (the interpreter takes them all at once: it is faster
# with bigger tiles). R = 128 negatives make exactly 128 / GPU_BLOCK_R tiles. 32 columns and one warp per row
# were the fastest of 16 choices on an H200 (forward 0.125 ms at the ML-1M step; 0.546 ms with four warps;
# benchmarks/bench_sampled_softmax.py, 2026-12-01).
GPU_BLOCK_R = 32
GPU_NUM_WARPS = 1
MAX_WIDTH = 1024  # D above this: the kernels' (BLOCK_R, D) tiles would spill registers


@triton.jit
def _scores(Q_row, E, COLS_row, j, R1, D, stride_e, inv_tau, BLOCK_D: tl.constexpr):
    """q (BLOCK_D,), the column ids c (BLOCK_R,) at positions j and their scores s (BLOCK_R,) / tau, the item
    vectors e (BLOCK_R, BLOCK_D), and which positions exist (j < R1)."""
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    q = tl.load(Q_row + d, mask=d_ok, other=0.0).to(tl.float32)
    j_ok = j < R1
    c = tl.load(COLS_row + j, mask=j_ok, other=0).to(tl.int64)
    e = tl.load(E + c[:, None] * stride_e + d[None, :], mask=j_ok[:, None] & d_ok[None, :], other=0.0)
    e = e.to(tl.float32)
    s = tl.sum(e * q[None, :], axis=1) * inv_tau
    return q, c, e, s, j_ok


@triton.jit
def sampled_softmax_fwd_kernel(
    Q,  # queries (M, D), unit column stride
    E,  # item vectors (C, D), unit column stride
    COLS,  # (M, R1) int64 rows into E: column 0 the positive, 1 .. R1 - 1 the negatives
    LOSS,  # (M,) fp32, written: logsumexp - positive score
    LSE,  # (M,) fp32, written: logsumexp of the kept scores, for the backward
    S,  # (M, R1) fp32, written: the scores s_ij, -inf where a column is dropped (the backward's input)
    DQ1,  # (M, D) fp32, written when WANT_DQ: d loss_i / d q_i
    R1,  # 1 + R: sampled columns per row
    D,  # vector width
    stride_q,
    stride_e,
    stride_c,
    stride_s,
    stride_dq1,  # row strides of Q, E, COLS, S and DQ1
    inv_tau,  # 1 / temperature
    BLOCK_R: tl.constexpr,  # negatives scored per iteration
    BLOCK_D: tl.constexpr,  # D rounded up to a power of two
    WANT_DQ: tl.constexpr,  # also form d loss_i / d q_i (the "segments" backward's dQ)
):
    """Grid (M,): program i forms row i's loss with an online logsumexp over tiles of its negatives; with
    WANT_DQ also d loss_i / d q_i = (sum_j p_ij E[c_ij] - E[c_i0]) / tau, from the item vectors it already
    holds (a softmax-weighted sum kept with the same running max)."""
    row = tl.program_id(0).to(tl.int64)
    Q_row, COLS_row, S_row = Q + row * stride_q, COLS + row * stride_c, S + row * stride_s
    j0 = tl.arange(0, BLOCK_R)
    # the positive (column 0) first: it starts the running max, so the max is finite from the start
    q, c, e, s, j_ok = _scores(Q_row, E, COLS_row, j0, 1, D, stride_e, inv_tau, BLOCK_D)
    pos = tl.sum(tl.where(j0 == 0, c, 0))
    s_pos = tl.sum(tl.where(j0 == 0, s, 0.0))
    tl.store(S_row + j0, s, mask=j_ok)
    m = s_pos
    total = s_pos * 0.0 + 1.0  # exp(s_pos - m)
    e_pos = tl.sum(e, axis=0)  # (BLOCK_D,): lanes other than 0 were loaded as zeros
    acc = e_pos  # sum_j exp(s_j - m) E[c_j], so far the positive alone
    for start in range(1, R1, BLOCK_R):
        q, c, e, s, j_ok = _scores(Q_row, E, COLS_row, start + j0, R1, D, stride_e, inv_tau, BLOCK_D)
        s = tl.where(j_ok & (c != pos), s, float("-inf"))  # padding lanes and accidental hits drop out
        tl.store(S_row + start + j0, s, mask=j_ok)
        m_new = tl.maximum(m, tl.max(s, axis=0))
        scale = tl.exp(m - m_new)
        p = tl.exp(s - m_new)  # (BLOCK_R,), 0 on dropped lanes
        total = total * scale + tl.sum(p, axis=0)
        if WANT_DQ:
            acc = acc * scale + tl.sum(p[:, None] * e, axis=0)
        m = m_new
    lse = m + tl.log(total)
    tl.store(LSE + row, lse)
    tl.store(LOSS + row, lse - s_pos)
    if WANT_DQ:
        d = tl.arange(0, BLOCK_D)
        tl.store(DQ1 + row * stride_dq1 + d, (acc / total - e_pos) * inv_tau, mask=d < D)


@triton.jit
def sampled_softmax_bwd_kernel(
    Q,  # queries (M, D)
    E,  # item vectors (C, D)
    COLS,  # (M, R1) int64, as in the forward
    LSE,  # (M,) fp32 from the forward
    DLOSS,  # (M,) gradient of each row's loss
    DQ,  # (M, D), written
    DE,  # (C, D) fp32, zero-filled by the caller: every row adds its share with atomics
    R1,
    D,
    stride_q,
    stride_e,
    stride_c,
    stride_dq,
    stride_de,
    inv_tau,
    BLOCK_R: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ADD_DE: tl.constexpr,  # False: items need no gradient, DE is not touched
):
    """Grid (M,): program i recomputes row i's scores, writes dq_i and adds to the rows of dE it sampled.
    A row whose loss gradient is 0 (a padded or unsupervised position) only writes dq_i = 0."""
    row = tl.program_id(0).to(tl.int64)
    Q_row, COLS_row = Q + row * stride_q, COLS + row * stride_c
    j0 = tl.arange(0, BLOCK_R)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    g = tl.load(DLOSS + row).to(tl.float32) * inv_tau
    dq = tl.zeros((BLOCK_D,), dtype=tl.float32)
    if g != 0.0:
        lse = tl.load(LSE + row)
        pos = tl.load(COLS_row)
        for start in range(0, R1, BLOCK_R):
            j = start + j0
            q, c, e, s, j_ok = _scores(Q_row, E, COLS_row, j, R1, D, stride_e, inv_tau, BLOCK_D)
            keep = j_ok & ((j == 0) | (c != pos))  # the positive, and the negatives that are not it
            # d loss / d s_j = p_j - [j = 0]
            coef = tl.where(keep, g * (tl.exp(s - lse) - tl.where(j == 0, 1.0, 0.0)), 0.0)  # (BLOCK_R,)
            dq += tl.sum(coef[:, None] * e, axis=0)
            if ADD_DE:
                tl.atomic_add(
                    DE + c[:, None] * stride_de + d[None, :],
                    coef[:, None] * q[None, :],
                    mask=keep[:, None] & d_ok[None, :],
                )
    tl.store(DQ + row * stride_dq + d, dq.to(DQ.dtype.element_ty), mask=d_ok)


@triton.jit
def sampled_softmax_grad_matrix_kernel(
    S,  # (M, R1) fp32 scores from the forward (-inf: dropped)
    LSE,  # (M,) fp32 from the forward
    DLOSS,  # (M,) gradient of each row's loss
    COLS,  # (M, R1) int64 column ids
    G,  # (M, Cp) fp32, zero-filled by the caller: written dL/ds, the sampled columns of each row
    R1,
    stride_s,
    stride_c,
    stride_g,
    inv_tau,
    BLOCK_R1: tl.constexpr,  # R1 rounded up to a power of two: one tile per row
):
    """Grid (M,): G[i, c_ij] += (g_i / tau) (p_ij - [j = 0]), the gradient of row i's loss with respect to its
    scores against the whole catalogue (zero outside the sampled columns). A column drawn twice adds up (the
    atomics of one row only meet each other). Then dQ = G E and dE = G^T Q are two matrix products."""
    row = tl.program_id(0).to(tl.int64)
    g = tl.load(DLOSS + row).to(tl.float32) * inv_tau
    if g != 0.0:
        j = tl.arange(0, BLOCK_R1)
        j_ok = j < R1
        s = tl.load(S + row * stride_s + j, mask=j_ok, other=float("-inf"))
        lse = tl.load(LSE + row)
        coef = g * (tl.exp(s - lse) - tl.where(j == 0, 1.0, 0.0))
        c = tl.load(COLS + row * stride_c + j, mask=j_ok, other=0)
        keep = j_ok & (s > float("-inf"))
        tl.atomic_add(G + row * stride_g + c, coef, mask=keep)


@triton.jit
def sampled_softmax_item_grad_kernel(
    ORDER,  # (M * R1,) int64: the flat positions i * R1 + j of COLS, ordered by column id
    START,  # (C + 1,) int64: item c's positions are ORDER[START[c] : START[c + 1]]
    S,  # (M, R1) fp32 scores from the forward (-inf: dropped)
    LSE,  # (M,) fp32 from the forward
    DLOSS,  # (M,) gradient of each row's loss
    Q,  # queries (M, D)
    DE,  # (C, D) fp32, written (every row: 0 for an item no row sampled)
    R1,
    D,
    stride_s,
    stride_q,
    stride_de,
    inv_tau,
    BLOCK_N: tl.constexpr,  # sampled positions summed per iteration
    BLOCK_D: tl.constexpr,
):
    """Grid (C,): program c sums dE[c] = sum over the (i, j) with c_ij = c of (g_i / tau)(p_ij - [j = 0]) q_i,
    its own segment of the sorted positions: no atomics, no (M, C) matrix."""
    item = tl.program_id(0).to(tl.int64)
    lo = tl.load(START + item)
    hi = tl.load(START + item + 1)
    d = tl.arange(0, BLOCK_D)
    d_ok = d < D
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for start in range(lo, hi, BLOCK_N):
        n = start + tl.arange(0, BLOCK_N)
        n_ok = n < hi
        flat = tl.load(ORDER + n, mask=n_ok, other=0)
        i, j = flat // R1, flat % R1
        s = tl.load(S + i * stride_s + j, mask=n_ok, other=float("-inf"))
        lse = tl.load(LSE + i, mask=n_ok, other=0.0)
        g = tl.load(DLOSS + i, mask=n_ok, other=0.0).to(tl.float32) * inv_tau
        keep = n_ok & (s > float("-inf"))
        coef = tl.where(keep, g * (tl.exp(s - lse) - tl.where(j == 0, 1.0, 0.0)), 0.0)  # (BLOCK_N,)
        q = tl.load(Q + i[:, None] * stride_q + d[None, :], mask=keep[:, None] & d_ok[None, :], other=0.0)
        acc += tl.sum(coef[:, None] * q.to(tl.float32), axis=0)
    tl.store(DE + item * stride_de + d, acc, mask=d_ok)


BACKWARDS = ("segments", "matrix", "atomic")  # the backward passes
BACKWARD = "auto"  # what triton_sampled_softmax runs unless told: "auto" or one of BACKWARDS


def backward_for(backward: str) -> str:
    """The backward pass `backward` ("auto", "segments", "matrix" or "atomic") stands for: "auto" is
    "segments", the fastest at the ML-1M step and the one whose memory grows with neither C nor M C."""
    if backward not in ("auto", *BACKWARDS):
        raise ValueError(f"backward must be 'auto' or one of {BACKWARDS}, got {backward!r}")
    return "segments" if backward == "auto" else backward


def _tiles(R1: int, D: int) -> dict:
    block_d = triton.next_power_of_2(D)
    if is_interpreter():
        return {"BLOCK_R": triton.next_power_of_2(max(R1 - 1, 1)), "BLOCK_D": block_d}
    return {"BLOCK_R": GPU_BLOCK_R, "BLOCK_D": block_d, "num_warps": GPU_NUM_WARPS}


# Sorted positions the segment kernel sums per iteration on a GPU, and its warps (the interpreter takes large
# tiles: it is faster with them). 32 positions and one warp were the fastest of 12 choices on an H200: forward +
# backward 0.342 ms at the ML-1M step against 0.445 ms for the matrix backward; some choices took 1.3-2.9 ms
# (benchmarks/bench_sampled_softmax.py, 2026-12-01).
GPU_SEGMENT_BLOCK = 32
GPU_SEGMENT_WARPS = 1


def _segment_tiles(D: int) -> dict:
    block_d = triton.next_power_of_2(D)
    if is_interpreter():
        return {"BLOCK_N": 256, "BLOCK_D": block_d}
    return {"BLOCK_N": GPU_SEGMENT_BLOCK, "BLOCK_D": block_d, "num_warps": GPU_SEGMENT_WARPS}


def _outputs(shape, dtype, device) -> torch.Tensor:
    """A fresh buffer the kernel writes in full; NaN-filled under the option `poison_outputs` (tests)."""
    return _attention._new(shape, dtype, device, get_options())


class _SampledSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query, items, columns, temperature: float, backward: str):
        query, items = _last_dim_contiguous(query), _last_dim_contiguous(items)
        columns = columns.to(torch.int64)
        (M, D), R1 = query.shape, columns.shape[1]
        loss, lse = _outputs((M,), torch.float32, query.device), _outputs((M,), torch.float32, query.device)
        scores = _outputs((M, R1), torch.float32, query.device)
        want_dq = backward == "segments" and ctx.needs_input_grad[0]
        dq1 = _outputs((M, D) if want_dq else (1, 1), torch.float32, query.device)  # d loss_i / d q_i
        if M:
            sampled_softmax_fwd_kernel[(M,)](
                query, items, columns, loss, lse, scores, dq1, R1, D,
                query.stride(0), items.stride(0), columns.stride(0), scores.stride(0), dq1.stride(0),
                1.0 / temperature, **_tiles(R1, D), WANT_DQ=want_dq,
            )  # fmt: skip
        ctx.save_for_backward(query, items, columns, lse, scores, dq1)
        ctx.temperature, ctx.backward = temperature, backward
        return loss

    @staticmethod
    def backward(ctx, dloss: torch.Tensor):
        query, items, columns, lse, scores, dq1 = ctx.saved_tensors
        (M, D), C, R1 = query.shape, items.shape[0], columns.shape[1]
        dloss = dloss.contiguous()
        add_de = ctx.needs_input_grad[1]
        inv_tau = 1.0 / ctx.temperature
        if ctx.backward == "segments":
            dq = (dloss.float()[:, None] * dq1).to(query.dtype) if ctx.needs_input_grad[0] else None  # (M, D)
            if not add_de:
                return dq, None, None, None, None
            # every sampled position (i, j), grouped by item: item c's are order[start[c] : start[c + 1]]. The
            # rows of zero gradient (a CUDA graph's filler rows, all with one positive column) go to a segment
            # past the table that no program reads: else one item's program would sum them all, alone.
            key_dtype = next(t for t in (torch.int16, torch.int32, torch.int64) if C < torch.iinfo(t).max)
            keys = torch.where(dloss[:, None] == 0, C, columns).to(key_dtype).reshape(-1)  # (M R1,)
            sorted_keys, order = torch.sort(keys)  # fewer key bits, fewer radix passes
            start = torch.searchsorted(sorted_keys, torch.arange(C + 1, dtype=key_dtype, device=keys.device))
            de = _outputs(items.shape, torch.float32, items.device)  # (C, D)
            if C:
                sampled_softmax_item_grad_kernel[(C,)](
                    order, start, scores, lse, dloss, query, de, R1, D,
                    scores.stride(0), query.stride(0), de.stride(0), inv_tau, **_segment_tiles(D),
                )  # fmt: skip
            return dq, de.to(items.dtype), None, None, None
        if ctx.backward == "matrix":
            # padded to 16-byte rows as the dense loss's products are (losses.GEMM_ALIGN)
            Dp, Cp = losses._aligned(D), losses._aligned(C)
            grad = torch.zeros(M, Cp, dtype=torch.float32, device=query.device)  # (M, Cp) dL/d(scores)
            if M:
                sampled_softmax_grad_matrix_kernel[(M,)](
                    scores, lse, dloss, columns, grad, R1, scores.stride(0), columns.stride(0), grad.stride(0),
                    inv_tau, BLOCK_R1=triton.next_power_of_2(R1),
                )  # fmt: skip
            dq = (grad @ losses._pad_to(items.float(), Cp, Dp))[:, :D].to(query.dtype)  # (M, D)
            de = (
                (grad.t() @ losses._pad_to(query.float(), M, Dp))[:C, :D].to(items.dtype) if add_de else None
            )  # (C, D)
            return dq, de, None, None, None
        dq = _outputs(query.shape, query.dtype, query.device)
        de = torch.zeros(items.shape if add_de else (1, 1), dtype=torch.float32, device=items.device)
        if M:
            sampled_softmax_bwd_kernel[(M,)](
                query, items, columns, lse, dloss, dq, de, R1, D,
                query.stride(0), items.stride(0), columns.stride(0), dq.stride(0), de.stride(0),
                inv_tau, **_tiles(R1, D), ADD_DE=add_de,
            )  # fmt: skip
        return dq, de.to(items.dtype) if add_de else None, None, None, None


def triton_sampled_softmax(
    query: torch.Tensor,
    items: torch.Tensor,
    columns: torch.Tensor,
    temperature: float,
    backward: str | None = None,
) -> torch.Tensor:
    """Each row's sampled softmax loss, (M,) float32: `query (M, D)` against the rows `columns (M, 1 + R)`
    of `items (C, D)`, column 0 the positive, negatives equal to it dropped (module docstring).

    `backward` (None: the module's `BACKWARD`, "auto" = "segments"): "segments" takes dQ from the forward
    and sums dE per item over the sampled positions sorted by item; "matrix" writes the (M, C) gradient of
    the scores, zero but in the sampled columns, and forms dQ and dE as two matrix products (fp32, TF32 when
    `torch.backends.cuda.matmul.allow_tf32` is on); "atomic" recomputes each row's scores and adds into dE
    with fp32 atomics (module docstring).

    Differentiable in query and items (fp32 arithmetic whatever their dtype; gradients in their dtypes).
    Column ids must lie in [0, C): they are not checked on the GPU (that would cost a sync).
    """
    if query.dim() != 2 or items.dim() != 2 or columns.dim() != 2:
        raise ValueError(
            "triton_sampled_softmax takes query (M, D), items (C, D) and columns (M, 1 + R); got shapes "
            f"{tuple(query.shape)}, {tuple(items.shape)}, {tuple(columns.shape)}"
        )
    if items.shape[1] != query.shape[1] or columns.shape[0] != query.shape[0] or columns.shape[1] < 1:
        raise ValueError(
            f"shapes do not match: query {tuple(query.shape)}, items {tuple(items.shape)}, "
            f"columns {tuple(columns.shape)} (need items (C, D) and columns (M, 1 + R))"
        )
    if items.device != query.device or columns.device != query.device:
        raise ValueError(
            f"query, items and columns must be on one device; got {query.device}, {items.device}, {columns.device}"
        )
    # the attention module's check: this module's `is_interpreter` only picks tiles (tests patch it)
    if not query.is_cuda and not _attention.is_interpreter():
        raise ValueError(
            "triton_sampled_softmax runs on CUDA tensors (on a CPU only under TRITON_INTERPRET=1); "
            f"got tensors on {query.device}: use losses.sampled_softmax_loss(impl='dense') there"
        )
    if query.shape[1] > MAX_WIDTH:
        raise ValueError(
            f"triton_sampled_softmax handles vectors of up to {MAX_WIDTH} values, got {query.shape[1]}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    backward = backward_for(BACKWARD if backward is None else backward)
    return _SampledSoftmax.apply(query, items, columns, float(temperature), backward)
