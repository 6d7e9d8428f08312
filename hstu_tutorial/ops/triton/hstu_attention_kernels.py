"""Triton kernels of jagged HSTU attention: forward, and backward as two kernels (dK/dV and dQ).

The math, inside each sequence of length L (rows i = queries, columns j = keys):

    s_ij = alpha * <q_i, k_j> + rab_ij                   (rab: a tensor, or formed here from weights)
    A_ij = SiLU(s_ij) / n   for j <= i (causal), else 0
    out_i = sum_j A_ij v_j

Unlike softmax attention, every A_ij depends on s_ij alone: a tile of keys can be folded into the
output without knowing the rest of the row, so there is no running maximum and no rescaling
(flash attention's "online softmax"), and the backward pass needs no saved row statistics.

Layout: q, k (T, H, D_QK), v and out (T, H, D_V), jagged along T by `offsets` (B+1,). One program works
on one tile of BLOCK_M queries (or BLOCK_N keys) of one (sequence, head). Programs whose tile starts
past the end of their sequence return at once, so padding costs a launch slot, never FLOPs.

Bias modes (BIAS, a compile-time constant): 0 none; 1 a padded tensor rab[b, h, i, j] (any strides,
stride 0 for a broadcast head); 2 relative bias formed in the kernel:
    rab_ij = pos_w[P - 1 + j - i] + ts_w[bucket(next_ts_i - ts_j)],
    bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, NB - 1),
the time bucket of `hstu_tutorial.ops.time_buckets.time_bucket(d, NB - 1)`, restated in Triton below
with the same constant.

Names: D_QK, D_V are head sizes (of q/k and of v); dq, dk, dv are gradients.
"""

import triton
import triton.language as tl

from hstu_tutorial.ops.time_buckets import TIME_BUCKET_LOG_BASE

# A global a kernel reads must be a compile-time constant: the literal of the PyTorch definition.
_TIME_LOG_BASE = tl.constexpr(TIME_BUCKET_LOG_BASE)


@triton.jit
def _rel_bias_index(
    TS,
    NTS,  # this sequence's timestamps and next-item timestamps (already offset to its start)
    P,
    NB,  # pos_w has 2P-1 entries, ts_w has NB
    i,
    j,
    L,  # query and key positions (broadcastable 2-D), sequence length
):
    """Where the relative bias of (query i, key j) reads its two weights: pos_w[pos] and ts_w[bucket].

    bucket is ops.time_buckets.time_bucket(next_ts_i - ts_j, NB - 1), in float32 as there."""
    nt = tl.load(NTS + i, mask=i < L, other=0)  # next item's timestamp of each query row
    t = tl.load(TS + j, mask=j < L, other=0)
    d = tl.maximum(tl.abs(nt - t), 1).to(tl.float32)
    bucket = tl.floor(tl.log(d) / _TIME_LOG_BASE).to(tl.int32)
    bucket = tl.minimum(tl.maximum(bucket, 0), NB - 1)
    pos = tl.minimum(tl.maximum(P - 1 + j - i, 0), 2 * P - 2)
    return pos, bucket


@triton.jit
def time_bucket_kernel(
    TS,
    NTS,  # (N,) int64 timestamps and next timestamps: bucket i is that of the gap NTS[i] - TS[i]
    OUT,  # (N,) int32 buckets, written
    N,  # number of gaps
    NB,  # number of buckets (ts_w's length): buckets clamp to [0, NB - 1]
    BLOCK: tl.constexpr,  # gaps per program
):
    """The kernels' own bucket formula (`_rel_bias_index`) on N gaps, for comparing it with the PyTorch
    `time_bucket(d, NB - 1)` (tests, benchmarks/check_kernels_gpu.py). Grid (cdiv(N, BLOCK),)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    _, bucket = _rel_bias_index(TS, NTS, 1, NB, i, i, N)
    tl.store(OUT + i, bucket, mask=i < N)


@triton.jit
def _bias_tile(
    RAB,
    s_ri,
    s_rj,  # bias tensor of this (sequence, head), already offset; its row and column strides
    TS,
    NTS,
    POS_W,
    TS_W,  # timestamps and next-timestamps of this sequence (offset), the two weight vectors
    P,
    NB,  # P: pos_w has 2P-1 entries; NB: number of time buckets (len(ts_w))
    i,
    j,
    L,  # query positions and key positions (broadcastable 2-D), sequence length
    BIAS: tl.constexpr,  # 1: read RAB; 2: form the bias from the weights
):
    """Bias tile (fp32), for whatever broadcast shape i and j have: (BM, 1) x (1, BN) or transposed."""
    valid = (i < L) & (j < L)
    if BIAS == 1:
        return tl.load(RAB + i * s_ri + j * s_rj, mask=valid, other=0.0).to(tl.float32)
    else:
        pos, bucket = _rel_bias_index(TS, NTS, P, NB, i, j, L)
        rab = tl.load(POS_W + pos, mask=valid, other=0.0) + tl.load(TS_W + bucket, mask=valid, other=0.0)
        return rab.to(tl.float32)


@triton.jit
def _fwd_key_tiles(
    acc,
    q,  # accumulator (BM, D_V) fp32, query tile (BM, D_QK)
    k_ptrs,
    v_ptrs,
    s_kt,
    s_vt,  # key/value pointers of the sequence's first tile; their token strides
    lo,
    hi,  # key range [lo, hi) to visit, in steps of BLOCK_N
    offs_m,
    offs_n,
    offs_d_qk,
    offs_d_v,  # query positions (BM,), key offsets in a tile (BN,), head dims
    L,
    alpha,  # sequence length, score scale
    rab_base,
    s_ri,
    s_rj,
    TS,
    NTS,
    POS_W,
    TS_W,
    P,
    NB,  # bias inputs (see _bias_tile)
    D_QK: tl.constexpr,
    D_V: tl.constexpr,  # head sizes of q/k and of v
    BLOCK_N: tl.constexpr,  # keys per tile
    DIAGONAL: tl.constexpr,  # these tiles straddle the diagonal: apply the causal mask
    BIAS: tl.constexpr,
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands: "tf32", "tf32x3" or "ieee"
):
    """acc += SiLU(alpha q k^T + rab) v over the key tiles [lo, hi) (1/n is applied by the caller)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BN,) key positions
        kv_mask = cols[:, None] < L
        k = tl.load(
            k_ptrs + start_n * s_kt, mask=kv_mask & (offs_d_qk[None, :] < D_QK), other=0.0
        )  # (BN, D_QK)
        v = tl.load(v_ptrs + start_n * s_vt, mask=kv_mask & (offs_d_v[None, :] < D_V), other=0.0)  # (BN, D_V)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * alpha  # (BM, BN), fp32 accumulation
        if BIAS != 0:
            s += _bias_tile(
                rab_base, s_ri, s_rj, TS, NTS, POS_W, TS_W, P, NB, offs_m[:, None], cols[None, :], L, BIAS
            )
        p = s * tl.sigmoid(s)  # SiLU: depends on s_ij alone, so no running max and no rescaling
        if DIAGONAL:
            p = tl.where(cols[None, :] <= offs_m[:, None], p, 0.0)
        acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)  # (BM, D_V)
    return acc


@triton.jit
def hstu_fwd_kernel(
    Q,
    K,
    V,
    OUT,  # (T, H, D_QK), (T, H, D_QK), (T, H, D_V), (T, H, D_V); last dim contiguous
    OFFSETS,  # (B+1,) int64 sequence starts
    RAB,  # BIAS=1: padded bias rab[b, h, i, j] given by strides (s_rb, s_rh may be 0); else unused
    TS,
    NTS,
    POS_W,
    TS_W,  # BIAS=2: jagged timestamps (T,), next timestamps (T,), pos_w (2P-1,), ts_w (NB,)
    s_qt,
    s_qh,
    s_kt,
    s_kh,
    s_vt,
    s_vh,
    s_ot,
    s_oh,  # token and head strides of q, k, v, out
    s_rb,
    s_rh,
    s_ri,
    s_rj,  # strides of rab (batch, head, row, column)
    H,
    P,
    NB,  # heads; pos_w has 2P-1 entries; ts_w has NB (time buckets)
    alpha,
    inv_n,  # score scale and 1/n
    MAX_SEQ_LEN_KEY,  # next power of two of the longest sequence: read by the autotuner only
    D_QK: tl.constexpr,
    D_V: tl.constexpr,  # head dims of q/k and of v
    BLOCK_D_QK: tl.constexpr,
    BLOCK_D_V: tl.constexpr,  # head dims rounded up to a power of two (>= 16)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,  # query rows and key columns per tile
    CAUSAL: tl.constexpr,  # keys j <= i only
    BIAS: tl.constexpr,  # 0 none, 1 the tensor RAB, 2 formed from POS_W, TS_W (module docstring)
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands: "tf32", "tf32x3" or "ieee"
):
    """Grid (cdiv(max_seq_len, BLOCK_M), B * H): one program = BLOCK_M queries of one (sequence, head)."""
    # Query tiles far down a sequence see the most keys: launch them first, so the short ones fill
    # the gaps at the end instead of a few long ones finishing alone.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # which query tile
    pid_bh = tl.program_id(1)  # which (sequence, head)
    b = pid_bh // H
    h = pid_bh % H
    start = tl.load(OFFSETS + b)  # int64: first token of the sequence
    L = (tl.load(OFFSETS + b + 1) - start).to(tl.int32)
    start_m = pid_m * BLOCK_M
    if start_m >= L:  # the sequence is shorter than this tile's start: the jagged saving
        return

    offs_m = start_m + tl.arange(0, BLOCK_M)  # (BM,) query positions in the sequence
    offs_n = tl.arange(0, BLOCK_N)  # (BN,) key positions relative to a tile's start
    offs_d_qk = tl.arange(0, BLOCK_D_QK)
    offs_d_v = tl.arange(0, BLOCK_D_V)
    # Masked loads fill rows past L (and head-dim padding) with zeros. A zero value row adds nothing to
    # the output, so outside the diagonal tiles no `where` is needed.
    q = tl.load(
        Q + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d_qk[None, :],
        mask=(offs_m[:, None] < L) & (offs_d_qk[None, :] < D_QK),
        other=0.0,
    )  # (BM, D_QK)
    k_ptrs = K + start * s_kt + h * s_kh + offs_n[:, None] * s_kt + offs_d_qk[None, :]  # (BN, D_QK)
    v_ptrs = V + start * s_vt + h * s_vh + offs_n[:, None] * s_vt + offs_d_v[None, :]  # (BN, D_V)
    rab_base = RAB + b.to(tl.int64) * s_rb + h.to(tl.int64) * s_rh
    acc = tl.zeros((BLOCK_M, BLOCK_D_V), dtype=tl.float32)

    if CAUSAL:
        # Tiles wholly left of the diagonal: no mask. Tiles wholly right of it (start_n >= start_m +
        # BLOCK_M) would be all zeros: never visited, which halves the work.
        full_end = tl.minimum(((start_m + 1) // BLOCK_N) * BLOCK_N, L)
        acc = _fwd_key_tiles(
            acc,
            q,
            k_ptrs,
            v_ptrs,
            s_kt,
            s_vt,
            0,
            full_end,
            offs_m,
            offs_n,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            D_QK,
            D_V,
            BLOCK_N,
            False,
            BIAS,
            DOT_PREC,
        )
        acc = _fwd_key_tiles(
            acc,
            q,
            k_ptrs,
            v_ptrs,
            s_kt,
            s_vt,
            full_end,
            tl.minimum(L, start_m + BLOCK_M),
            offs_m,
            offs_n,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            D_QK,
            D_V,
            BLOCK_N,
            True,
            BIAS,
            DOT_PREC,
        )
    else:
        acc = _fwd_key_tiles(
            acc,
            q,
            k_ptrs,
            v_ptrs,
            s_kt,
            s_vt,
            0,
            L,
            offs_m,
            offs_n,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            D_QK,
            D_V,
            BLOCK_N,
            False,
            BIAS,
            DOT_PREC,
        )
    acc = acc * inv_n
    tl.store(
        OUT + start * s_ot + h * s_oh + offs_m[:, None] * s_ot + offs_d_v[None, :],
        acc.to(OUT.dtype.element_ty),
        mask=(offs_m[:, None] < L) & (offs_d_v[None, :] < D_V),
    )


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
        sig = tl.sigmoid(sT)
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
        elif RAB_GRAD == 2:  # straight onto this (sequence, head)'s gradient of [pos_w | ts_w]
            pos, bucket = _rel_bias_index(TS, NTS, P, NB, rows[None, :], offs_n[:, None], L)
            valid = (rows[None, :] < L) & (offs_n[:, None] < L)
            g = dsT * inv_n
            tl.atomic_add(drab_base + pos, g, mask=valid)
            tl.atomic_add(drab_base + (2 * P - 1) + bucket, g, mask=valid)
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
    DRAB,  # fp32, zeroed. RAB_GRAD=1: bias gradient (B, H, DRAB_W, DRAB_W); 2: rows [dpos_w | dts_w]
    #        of DRAB_W = 2P-1 + NB per (sequence, head); 0: unused
    OFFSETS,  # (B+1,) int64 sequence starts
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
    start = tl.load(OFFSETS + b)
    L = (tl.load(OFFSETS + b + 1) - start).to(tl.int32)
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


@triton.jit
def _dq_key_tiles(
    dq,  # accumulator (BM, D_QK) fp32
    q,
    do,  # this program's query and output-gradient tiles (BM, D_QK), (BM, D_V)
    k_ptrs,
    v_ptrs,
    s_kt,
    s_vt,  # key/value pointers of the sequence's first tile; their token strides
    lo,
    hi,  # key range [lo, hi) to visit, in steps of BLOCK_N
    offs_m,
    offs_n,
    offs_d_qk,
    offs_d_v,  # query positions (BM,), key offsets in a tile (BN,), head dims
    L,
    alpha,  # sequence length, score scale
    rab_base,
    s_ri,
    s_rj,
    TS,
    NTS,
    POS_W,
    TS_W,
    P,
    NB,  # bias inputs (see _bias_tile)
    D_QK: tl.constexpr,
    D_V: tl.constexpr,  # head sizes of q/k and of v
    BLOCK_N: tl.constexpr,  # keys per tile
    DIAGONAL: tl.constexpr,  # these tiles straddle the diagonal: apply the causal mask
    BIAS: tl.constexpr,  # bias mode (module docstring)
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands
):
    """dq += ((dO v^T) * SiLU'(s)) k over the key tiles [lo, hi) (alpha / n applied by the caller)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        kv_mask = cols[:, None] < L
        k = tl.load(
            k_ptrs + start_n * s_kt, mask=kv_mask & (offs_d_qk[None, :] < D_QK), other=0.0
        )  # (BN, D_QK)
        v = tl.load(v_ptrs + start_n * s_vt, mask=kv_mask & (offs_d_v[None, :] < D_V), other=0.0)  # (BN, D_V)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * alpha  # (BM, BN), recomputed, not saved
        if BIAS != 0:
            s += _bias_tile(
                rab_base, s_ri, s_rj, TS, NTS, POS_W, TS_W, P, NB, offs_m[:, None], cols[None, :], L, BIAS
            )
        sig = tl.sigmoid(s)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)  # (BM, BN)
        ds = dp * (sig * (1.0 + s * (1.0 - sig)))
        if DIAGONAL:
            ds = tl.where(cols[None, :] <= offs_m[:, None], ds, 0.0)
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)  # (BM, D_QK)
    return dq


@triton.jit
def hstu_bwd_dq_kernel(
    Q,
    K,
    V,  # forward inputs (T, H, D_QK), (T, H, D_QK), (T, H, D_V); last dim contiguous
    DO,  # output gradient dO (T, H, D_V)
    DQ_G,  # dQ out (T, H, D_QK)
    OFFSETS,  # (B+1,) int64 sequence starts
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
    s_gqh,  # token and head strides of dQ
    s_rb,
    s_rh,
    s_ri,
    s_rj,  # strides of rab (batch, head, row, column)
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
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands
):
    """Grid (cdiv(max_seq_len, BLOCK_M), B * H), the forward's walk: dQ = alpha sum_j ds_ij k_j / n."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # longest walks first, as in the forward
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
    offs_d_qk = tl.arange(0, BLOCK_D_QK)
    offs_d_v = tl.arange(0, BLOCK_D_V)
    m_mask = offs_m[:, None] < L
    q = tl.load(
        Q + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d_qk[None, :],
        mask=m_mask & (offs_d_qk[None, :] < D_QK),
        other=0.0,
    )  # (BM, D_QK)
    do = tl.load(
        DO + start * s_dot + h * s_doh + offs_m[:, None] * s_dot + offs_d_v[None, :],
        mask=m_mask & (offs_d_v[None, :] < D_V),
        other=0.0,
    )  # (BM, D_V)
    k_ptrs = K + start * s_kt + h * s_kh + offs_n[:, None] * s_kt + offs_d_qk[None, :]
    v_ptrs = V + start * s_vt + h * s_vh + offs_n[:, None] * s_vt + offs_d_v[None, :]
    rab_base = RAB + b.to(tl.int64) * s_rb + h.to(tl.int64) * s_rh
    dq = tl.zeros((BLOCK_M, BLOCK_D_QK), dtype=tl.float32)

    if CAUSAL:
        full_end = tl.minimum(((start_m + 1) // BLOCK_N) * BLOCK_N, L)
        dq = _dq_key_tiles(
            dq,
            q,
            do,
            k_ptrs,
            v_ptrs,
            s_kt,
            s_vt,
            0,
            full_end,
            offs_m,
            offs_n,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            D_QK,
            D_V,
            BLOCK_N,
            False,
            BIAS,
            DOT_PREC,
        )
        dq = _dq_key_tiles(
            dq,
            q,
            do,
            k_ptrs,
            v_ptrs,
            s_kt,
            s_vt,
            full_end,
            tl.minimum(L, start_m + BLOCK_M),
            offs_m,
            offs_n,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            D_QK,
            D_V,
            BLOCK_N,
            True,
            BIAS,
            DOT_PREC,
        )
    else:
        dq = _dq_key_tiles(
            dq,
            q,
            do,
            k_ptrs,
            v_ptrs,
            s_kt,
            s_vt,
            0,
            L,
            offs_m,
            offs_n,
            offs_d_qk,
            offs_d_v,
            L,
            alpha,
            rab_base,
            s_ri,
            s_rj,
            TS + start,
            NTS + start,
            POS_W,
            TS_W,
            P,
            NB,
            D_QK,
            D_V,
            BLOCK_N,
            False,
            BIAS,
            DOT_PREC,
        )
    tl.store(
        DQ_G + start * s_gqt + h * s_gqh + offs_m[:, None] * s_gqt + offs_d_qk[None, :],
        (dq * (alpha * inv_n)).to(DQ_G.dtype.element_ty),
        mask=m_mask & (offs_d_qk[None, :] < D_QK),
    )
