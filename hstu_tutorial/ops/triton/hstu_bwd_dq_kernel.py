"""Backward of jagged HSTU attention, second kernel: dQ per query tile (no atomics).

The math and layout are those of `hstu_attention_kernels.py` (forward); dK/dV come from
`hstu_bwd_dkdv_kernel.py`.
"""

import triton
import triton.language as tl

from hstu_tutorial.ops.triton.hstu_attention_kernels import (  # noqa: F401
    _bias_tile,
    _rel_bias_index,
    _seq_bounds,
    _sigmoid,
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
        sig = _sigmoid(s, DOT_PREC)
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
    HAS_LENGTHS: tl.constexpr,  # LENGTHS given: positions past LENGTHS[b] are left alone (zeros)
):
    """Grid (cdiv(max_seq_len, BLOCK_M), B * H), the forward's walk: dQ = alpha sum_j ds_ij k_j / n."""
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # longest walks first, as in the forward
    pid_bh = tl.program_id(1)
    b = pid_bh // H
    h = pid_bh % H
    start, L = _seq_bounds(OFFSETS, LENGTHS, b, HAS_LENGTHS)  # first token, positions attended
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
