"""Backward of jagged HSTU attention, first kernel: dK and dV (and the bias gradient) per key tile.

The math and layout are those of `hstu_attention_kernels.py` (forward); the dQ kernel is
`hstu_bwd_dq_kernel.py`.
"""

import triton
import triton.language as tl

from hstu_tutorial.ops.triton.hstu_attention_kernels import (  # noqa: F401
    _bias_tile,
    _rel_bias_index,
    _seq_bounds,
    _sigmoid,
)

# RAB_GRAD=2 adds every score gradient onto its (sequence, head)'s [dpos_w | dts_w] row with atomics. The
# atomics of one tile meet on few addresses: a few dozen diagonals of positions and often a handful of time
# buckets, and an L2 slice applies additions to one address one at a time. So each (sequence, head) gets
# this many copies of the row and a score adds onto copy (i + 2j) mod COPIES (i its query, j its key): the
# additions of a tile spread over COPIES times more addresses (along a diagonal, consecutive scores land on
# different copies). The caller sums the copies with the sequences and heads.
REL_BIAS_GRAD_COPIES = tl.constexpr(8)


@triton.jit
def _dkdv_query_tiles(
    dk,
    dv,  # accumulators (BN, D_QK), (BN, D_V) fp32
    k,
    v,  # this program's key and value tiles (BN, D_QK), (BN, D_V)
    q_ptrs,
    do_ptrs,
    dq_ptrs,  # pointers of the first query tile of q, dO and (atomic mode) dQ
    s_qt,
    s_dot,
    s_gqt,  # token strides of q, dO, dQ
    lo,
    hi,  # query range [lo, hi) to visit, in steps of BLOCK_M
    offs_n,
    offs_m,
    offs_d_qk,
    offs_d_v,  # key positions (BN,), query offsets in a tile (BM,), head dims
    L,
    alpha,
    inv_n,  # sequence length, score scale, 1/n
    rab_base,
    s_ri,
    s_rj,
    TS,
    NTS,
    POS_W,
    TS_W,
    P,
    NB,  # bias inputs (see _bias_tile)
    drab_base,
    DRAB_W,  # this (sequence, head)'s bias-gradient rows; row length
    D_QK: tl.constexpr,
    D_V: tl.constexpr,  # head sizes of q/k and of v
    BLOCK_M: tl.constexpr,  # queries per tile
    DIAGONAL: tl.constexpr,  # these tiles straddle the diagonal: apply the causal mask
    BIAS: tl.constexpr,  # bias mode (module docstring)
    RAB_GRAD: tl.constexpr,  # 0 none, 1 dense bias gradient, 2 atomics onto [dpos_w | dts_w]
    ATOMIC_DQ: tl.constexpr,  # also add this tile's share of dQ with atomics
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands
):
    """Accumulate dK, dV of one key tile over the query tiles [lo, hi), keys as rows (transposed)."""
    for start_m in range(lo, hi, BLOCK_M):
        rows = start_m + offs_m  # (BM,) query positions
        m_mask = rows[:, None] < L
        q = tl.load(
            q_ptrs + start_m * s_qt, mask=m_mask & (offs_d_qk[None, :] < D_QK), other=0.0
        )  # (BM, D_QK)
        do = tl.load(
            do_ptrs + start_m * s_dot, mask=m_mask & (offs_d_v[None, :] < D_V), other=0.0
        )  # (BM, D_V)
        sT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC) * alpha  # (BN, BM)
        if BIAS != 0:
            sT += _bias_tile(
                rab_base, s_ri, s_rj, TS, NTS, POS_W, TS_W, P, NB, rows[None, :], offs_n[:, None], L, BIAS
            )
        sig = _sigmoid(sT, DOT_PREC)
        pT = sT * sig  # SiLU(s)^T
        dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)  # (BN, BM) = (dO v^T)^T
        dsT = dpT * (sig * (1.0 + sT * (1.0 - sig)))  # times SiLU'(s)
        if DIAGONAL:
            keep = offs_n[:, None] <= rows[None, :]
            pT = tl.where(keep, pT, 0.0)
            dsT = tl.where(keep, dsT, 0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)  # (BN, D_V)
        dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PREC)  # (BN, D_QK)
        if RAB_GRAD == 1:  # the dense bias gradient of this (sequence, head)
            tl.store(
                drab_base + rows[None, :] * DRAB_W + offs_n[:, None],
                dsT * inv_n,
                mask=(rows[None, :] < L) & (offs_n[:, None] < L),
            )
        elif RAB_GRAD == 2:  # straight onto a copy of this (sequence, head)'s gradient of [pos_w | ts_w]
            pos, bucket = _rel_bias_index(TS, NTS, P, NB, rows[None, :], offs_n[:, None], L)
            valid = (rows[None, :] < L) & (offs_n[:, None] < L)
            g = dsT * inv_n
            copy = (rows[None, :] + 2 * offs_n[:, None]) % REL_BIAS_GRAD_COPIES  # (BN, BM)
            copy = copy * (2 * P - 1 + NB)  # its row's offset
            tl.atomic_add(drab_base + copy + pos, g, mask=valid)
            tl.atomic_add(drab_base + copy + (2 * P - 1) + bucket, g, mask=valid)
        if ATOMIC_DQ:
            dq_part = tl.dot(tl.trans(dsT.to(k.dtype)), k, input_precision=DOT_PREC)  # (BM, D_QK)
            dq_part = dq_part * (alpha * inv_n)
            tl.atomic_add(dq_ptrs + start_m * s_gqt, dq_part, mask=m_mask & (offs_d_qk[None, :] < D_QK))
    return dk, dv


@triton.jit
def hstu_bwd_dkdv_kernel(
    Q,
    K,
    V,  # forward inputs (T, H, D_QK), (T, H, D_QK), (T, H, D_V); last dim contiguous
    DO,  # output gradient dO (T, H, D_V)
    DQ_G,  # ATOMIC_DQ: dQ (T, H, D_QK) fp32, zeroed, accumulated with atomics; else unused
    DK_G,
    DV_G,  # gradients out: dK (T, H, D_QK), dV (T, H, D_V)
    DRAB,  # fp32, zeroed. RAB_GRAD=1: bias gradient (B, H, DRAB_W, DRAB_W); 2: REL_BIAS_GRAD_COPIES rows
    #        [dpos_w | dts_w] of 2P-1 + NB per (sequence, head), DRAB_W = their total; 0: unused
    OFFSETS,  # (B+1,) int64 sequence starts
    LENGTHS,  # HAS_LENGTHS: (B,) attend over each sequence's first LENGTHS[b] positions only
    RAB,
    TS,
    NTS,
    POS_W,
    TS_W,  # bias inputs, as in the forward
    s_qt,
    s_qh,
    s_kt,
    s_kh,
    s_vt,
    s_vh,
    s_dot,
    s_doh,  # token and head strides of q, k, v, dO
    s_gqt,
    s_gqh,
    s_gkt,
    s_gkh,
    s_gvt,
    s_gvh,  # token and head strides of dQ, dK, dV
    s_rb,
    s_rh,
    s_ri,
    s_rj,  # strides of rab (batch, head, row, column)
    DRAB_W,  # row length of DRAB (see above)
    H,
    P,
    NB,  # heads; pos_w has 2P-1 entries; ts_w has NB
    alpha,
    inv_n,  # score scale and 1/n
    MAX_SEQ_LEN_KEY,  # next power of two of the longest sequence: read by the autotuner only
    D_QK: tl.constexpr,
    D_V: tl.constexpr,  # head sizes of q/k and of v
    BLOCK_D_QK: tl.constexpr,
    BLOCK_D_V: tl.constexpr,  # head sizes rounded up to a power of two (>= 16)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # query rows and key columns per tile
    CAUSAL: tl.constexpr,  # keys j <= i only
    BIAS: tl.constexpr,  # bias mode (module docstring)
    RAB_GRAD: tl.constexpr,  # 0 no bias gradient, 1 dense into DRAB, 2 atomics onto the weights' rows
    ATOMIC_DQ: tl.constexpr,  # dQ by atomics here (no separate dQ kernel)
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands
    HAS_LENGTHS: tl.constexpr,  # LENGTHS given: positions past LENGTHS[b] are left alone (zeros)
):
    """Grid (cdiv(max_seq_len, BLOCK_N), B * H): one program owns BLOCK_N keys and visits every query
    tile that sees them. With keys as rows, dK and dV come out of plain dots:
    sT = alpha k q^T + rab^T, dV = SiLU(sT) dO / n, dsT = (v dO^T) * SiLU'(sT) / n, dK = alpha dsT q,
    where SiLU'(s) = sig(s) (1 + s (1 - sig(s))). Nothing from the forward is saved but q, k, v.
    RAB_GRAD: 0 no bias gradient; 1 store dsT / n as the dense bias gradient; 2 (BIAS=2) add it with
    atomics straight onto the two weight vectors' gradients, O(P + NB) memory per (sequence, head).
    """
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start, L = _seq_bounds(OFFSETS, LENGTHS, b, HAS_LENGTHS)  # first token, positions attended
    start_n = pid_n * BLOCK_N
    if start_n >= L:
        return

    offs_n = start_n + tl.arange(0, BLOCK_N)  # (BN,) key positions
    offs_m = tl.arange(0, BLOCK_M)  # (BM,) query positions relative to a tile's start
    offs_d_qk = tl.arange(0, BLOCK_D_QK)
    offs_d_v = tl.arange(0, BLOCK_D_V)
    n_mask = offs_n[:, None] < L
    k = tl.load(
        K + start * s_kt + h * s_kh + offs_n[:, None] * s_kt + offs_d_qk[None, :],
        mask=n_mask & (offs_d_qk[None, :] < D_QK),
        other=0.0,
    )  # (BN, D_QK)
    v = tl.load(
        V + start * s_vt + h * s_vh + offs_n[:, None] * s_vt + offs_d_v[None, :],
        mask=n_mask & (offs_d_v[None, :] < D_V),
        other=0.0,
    )  # (BN, D_V)
    q_ptrs = Q + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d_qk[None, :]  # (BM, D_QK)
    do_ptrs = DO + start * s_dot + h * s_doh + offs_m[:, None] * s_dot + offs_d_v[None, :]  # (BM, D_V)
    dq_ptrs = DQ_G + start * s_gqt + h * s_gqh + offs_m[:, None] * s_gqt + offs_d_qk[None, :]
    rab_base = RAB + b.to(tl.int64) * s_rb + h.to(tl.int64) * s_rh
    if RAB_GRAD == 2:
        drab_base = DRAB + (b.to(tl.int64) * H + h) * DRAB_W
    else:
        drab_base = DRAB + (b.to(tl.int64) * H + h) * DRAB_W * DRAB_W
    dk = tl.zeros((BLOCK_N, BLOCK_D_QK), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, BLOCK_D_V), dtype=tl.float32)

    if CAUSAL:
        # Query tiles above the key tile see none of its keys: start at the tile holding query start_n.
        lo = (start_n // BLOCK_M) * BLOCK_M
        # First query tile wholly below the diagonal (its first row >= the last key of this tile).
        full_lo = tl.minimum(((start_n + BLOCK_N - 1 + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, L)
        dk, dv = _dkdv_query_tiles(
            dk,
            dv,
            k,
            v,
            q_ptrs,
            do_ptrs,
            dq_ptrs,
            s_qt,
            s_dot,
            s_gqt,
            lo,
            full_lo,
            offs_n,
            offs_m,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            inv_n,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            drab_base,
            DRAB_W,
            D_QK,
            D_V,
            BLOCK_M,
            True,
            BIAS,
            RAB_GRAD,
            ATOMIC_DQ,
            DOT_PREC,
        )
        dk, dv = _dkdv_query_tiles(
            dk,
            dv,
            k,
            v,
            q_ptrs,
            do_ptrs,
            dq_ptrs,
            s_qt,
            s_dot,
            s_gqt,
            full_lo,
            L,
            offs_n,
            offs_m,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            inv_n,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            drab_base,
            DRAB_W,
            D_QK,
            D_V,
            BLOCK_M,
            False,
            BIAS,
            RAB_GRAD,
            ATOMIC_DQ,
            DOT_PREC,
        )
    else:
        dk, dv = _dkdv_query_tiles(
            dk,
            dv,
            k,
            v,
            q_ptrs,
            do_ptrs,
            dq_ptrs,
            s_qt,
            s_dot,
            s_gqt,
            0,
            L,
            offs_n,
            offs_m,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            inv_n,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            drab_base,
            DRAB_W,
            D_QK,
            D_V,
            BLOCK_M,
            False,
            BIAS,
            RAB_GRAD,
            ATOMIC_DQ,
            DOT_PREC,
        )
    tl.store(
        DK_G + start * s_gkt + h * s_gkh + offs_n[:, None] * s_gkt + offs_d_qk[None, :],
        (dk * (alpha * inv_n)).to(DK_G.dtype.element_ty),
        mask=n_mask & (offs_d_qk[None, :] < D_QK),
    )
    tl.store(
        DV_G + start * s_gvt + h * s_gvh + offs_n[:, None] * s_gvt + offs_d_v[None, :],
        (dv * inv_n).to(DV_G.dtype.element_ty),
        mask=n_mask & (offs_d_v[None, :] < D_V),
    )
