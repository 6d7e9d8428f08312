"""Triton kernels of jagged HSTU attention: the forward kernel and the bias helpers the backward kernels
share (`hstu_bwd_dkdv_kernel.py` computes dK/dV, `hstu_bwd_dq_kernel.py` dQ).

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

With LENGTHS (HAS_LENGTHS, a compile-time constant) a sequence of `offsets` may hold more rows than it has
items: only its first LENGTHS[b] positions attend and are attended to, and the kernels leave the rows after
them alone (the caller hands in zeros there). The trainer's padded layout stores every history in N rows; this
way its padding costs no FLOPs either.

Bias modes (BIAS, a compile-time constant): 0 none; 1 a padded tensor rab[b, h, i, j] (any strides,
stride 0 for a broadcast head); 2 relative bias formed in the kernel:
    rab_ij = pos_w[P - 1 + j - i] + ts_w[bucket(next_ts_i - ts_j)],
    bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, NB - 1),
the time bucket of `hstu_tutorial.ops.time_buckets.time_bucket(d, NB - 1)`, restated in Triton below
with the same constant.

The forward exists twice over one program (`_fwd_program`): `hstu_fwd_kernel` reads key and value tiles by
pointer loads, `hstu_fwd_tma_kernel` through TMA tensor descriptors (Hopper's copy engine; causal only, chosen
by `KernelOptions.tma`).

Names: D_QK, D_V are head sizes (of q/k and of v); dq, dk, dv are gradients.
"""

import os

import triton
import triton.language as tl

from hstu_tutorial.ops.time_buckets import TIME_BUCKET_LOG_BASE

# A global a kernel reads must be a compile-time constant: the literal of the PyTorch definition.
_TIME_LOG_BASE = tl.constexpr(TIME_BUCKET_LOG_BASE)
# The GPU's one-instruction tanh exists only on a GPU: the CPU interpreter (TRITON_INTERPRET=1, which must
# be set before Triton is imported, so reading it here is reliable) takes the exact sigmoid.
_GPU_TANH = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") != "1")


@triton.jit
def _seq_bounds(OFFSETS, LENGTHS, b, HAS_LENGTHS: tl.constexpr):
    """Sequence b's first token and how many of its positions attend: all its rows, or the first LENGTHS[b]."""
    start = tl.load(OFFSETS + b)  # int64
    L = (tl.load(OFFSETS + b + 1) - start).to(tl.int32)
    if HAS_LENGTHS:
        L = tl.minimum(L, tl.load(LENGTHS + b).to(tl.int32))
    return start, L


@triton.jit
def _sigmoid(x, DOT_PREC: tl.constexpr):
    """sigmoid(x) in fp32. With tf32/bf16/fp16 dots on a GPU: 0.5 + 0.5 tanh(x / 2) through the hardware's
    tanh.approx (one special-function instruction, max relative error about 2^-11, no larger than the 2^-8 to
    2^-11 rounding of the dot inputs). tl.sigmoid needs an exp and a division, two such instructions per
    score, and those instructions, not the matrix products, bound SiLU attention at head size 128."""
    if _GPU_TANH:
        if DOT_PREC == "tf32":
            t = tl.inline_asm_elementwise(
                "tanh.approx.f32 $0, $1;", "=f,f", [x * 0.5], dtype=tl.float32, is_pure=True, pack=1
            )
            return 0.5 + 0.5 * t
        else:
            return tl.sigmoid(x)
    else:
        return tl.sigmoid(x)


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
    s_vt,  # key/value pointers of the sequence's first tile; their token strides (TMA: two descriptors)
    row0,
    head,  # TMA only: the sequence's first token (int32) and the head, the descriptors' coordinates
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
    BLOCK_D_QK: tl.constexpr,
    BLOCK_D_V: tl.constexpr,  # the same rounded up to a power of two
    BLOCK_N: tl.constexpr,  # keys per tile
    DIAGONAL: tl.constexpr,  # these tiles straddle the diagonal: apply the causal mask
    BIAS: tl.constexpr,
    DOT_PREC: tl.constexpr,  # tl.dot input precision for fp32 operands: "tf32", "tf32x3" or "ieee"
    TMA: tl.constexpr,  # key/value tiles through tensor descriptors (causal only, see hstu_fwd_tma_kernel)
):
    """acc += SiLU(alpha q k^T + rab) v over the key tiles [lo, hi) (1/n is applied by the caller)."""
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n  # (BN,) key positions
        if TMA:  # the copy engine fetches the whole tile; head-dim columns past D read zeros
            k = k_ptrs.load([row0 + start_n, head, 0]).reshape(BLOCK_N, BLOCK_D_QK)  # (BN, D_QK)
            v = v_ptrs.load([row0 + start_n, head, 0]).reshape(BLOCK_N, BLOCK_D_V)  # (BN, D_V)
        else:
            kv_mask = cols[:, None] < L
            k = tl.load(
                k_ptrs + start_n * s_kt, mask=kv_mask & (offs_d_qk[None, :] < D_QK), other=0.0
            )  # (BN, D_QK)
            v = tl.load(
                v_ptrs + start_n * s_vt, mask=kv_mask & (offs_d_v[None, :] < D_V), other=0.0
            )  # (BN, D_V)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PREC) * alpha  # (BM, BN), fp32 accumulation
        if BIAS != 0:
            s += _bias_tile(
                rab_base, s_ri, s_rj, TS, NTS, POS_W, TS_W, P, NB, offs_m[:, None], cols[None, :], L, BIAS
            )
        p = s * _sigmoid(s, DOT_PREC)  # SiLU: depends on s_ij alone, so no running max and no rescaling
        if DIAGONAL:
            p = tl.where(cols[None, :] <= offs_m[:, None], p, 0.0)
        acc += tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)  # (BM, D_V)
    return acc


@triton.jit
def _fwd_program(
    Q,
    K,
    V,
    OUT,  # (T, H, D_QK), (T, H, D_QK), (T, H, D_V), (T, H, D_V); last dim contiguous
    OFFSETS,  # (B+1,) int64 sequence starts
    LENGTHS,  # HAS_LENGTHS: (B,) attend over each sequence's first LENGTHS[b] positions only
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
    HAS_LENGTHS: tl.constexpr,  # LENGTHS given: positions past LENGTHS[b] are left alone (zeros)
    TMA: tl.constexpr,  # K, V are tensor descriptors (hstu_fwd_tma_kernel) or pointers
):
    """The forward's program, shared by the two kernels below."""
    # Query tiles far down a sequence see the most keys: launch them first, so the short ones fill
    # the gaps at the end instead of a few long ones finishing alone.
    pid_m = tl.num_programs(0) - 1 - tl.program_id(0)  # which query tile
    pid_bh = tl.program_id(1)  # which (sequence, head)
    b = pid_bh // H
    h = pid_bh % H
    start, L = _seq_bounds(OFFSETS, LENGTHS, b, HAS_LENGTHS)  # first token, positions attended
    start_m = pid_m * BLOCK_M
    # A tile past the sequence's end does nothing (the jagged saving). A branch rather than an early return:
    # this is a helper the two kernels call.
    if start_m < L:
        offs_m = start_m + tl.arange(0, BLOCK_M)  # (BM,) query positions in the sequence
        offs_n = tl.arange(0, BLOCK_N)  # (BN,) key positions relative to a tile's start
        offs_d_qk = tl.arange(0, BLOCK_D_QK)
        offs_d_v = tl.arange(0, BLOCK_D_V)
        # Masked loads fill rows past L (and head-dim padding) with zeros. A zero value row adds nothing to
        # the output, so outside the diagonal tiles no `where` is needed. (TMA tiles past L hold the next
        # sequence's rows instead; only diagonal tiles reach past L, and their causal mask drops them.)
        q = tl.load(
            Q + start * s_qt + h * s_qh + offs_m[:, None] * s_qt + offs_d_qk[None, :],
            mask=(offs_m[:, None] < L) & (offs_d_qk[None, :] < D_QK),
            other=0.0,
        )  # (BM, D_QK)
        if TMA:  # K and V are tensor descriptors over (T, H, D): tiles are addressed by (token, head)
            tl.static_assert(CAUSAL, "TMA tiles past a sequence's end hold the next one's keys: causal only")
            k_ptrs, v_ptrs = K, V
        else:
            k_ptrs = K + start * s_kt + h * s_kh + offs_n[:, None] * s_kt + offs_d_qk[None, :]  # (BN, D_QK)
            v_ptrs = V + start * s_vt + h * s_vh + offs_n[:, None] * s_vt + offs_d_v[None, :]  # (BN, D_V)
        row0 = start.to(tl.int32)  # TMA coordinates are 32-bit (the launcher checks T < 2**31)
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
                row0,
                h,
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
                BLOCK_D_QK,
                BLOCK_D_V,
                BLOCK_N,
                False,
                BIAS,
                DOT_PREC,
                TMA,
            )
            acc = _fwd_key_tiles(
                acc,
                q,
                k_ptrs,
                v_ptrs,
                s_kt,
                s_vt,
                row0,
                h,
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
                BLOCK_D_QK,
                BLOCK_D_V,
                BLOCK_N,
                True,
                BIAS,
                DOT_PREC,
                TMA,
            )
        else:
            acc = _fwd_key_tiles(
                acc,
                q,
                k_ptrs,
                v_ptrs,
                s_kt,
                s_vt,
                row0,
                h,
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
                BLOCK_D_QK,
                BLOCK_D_V,
                BLOCK_N,
                False,
                BIAS,
                DOT_PREC,
                TMA,
            )
        acc = acc * inv_n
        tl.store(
            OUT + start * s_ot + h * s_oh + offs_m[:, None] * s_ot + offs_d_v[None, :],
            acc.to(OUT.dtype.element_ty),
            mask=(offs_m[:, None] < L) & (offs_d_v[None, :] < D_V),
        )


@triton.jit
def hstu_fwd_kernel(
    Q,
    K,
    V,
    OUT,  # (T, H, D_QK), (T, H, D_QK), (T, H, D_V), (T, H, D_V); last dim contiguous
    OFFSETS,  # (B+1,) int64 sequence starts
    LENGTHS,  # HAS_LENGTHS: (B,) attend over each sequence's first LENGTHS[b] positions only
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
    HAS_LENGTHS: tl.constexpr,  # LENGTHS given: positions past LENGTHS[b] are left alone (zeros)
):
    """Grid (cdiv(max_seq_len, BLOCK_M), B * H): one program = BLOCK_M queries of one (sequence, head)."""
    _fwd_program(
        Q,
        K,
        V,
        OUT,
        OFFSETS,
        LENGTHS,
        RAB,
        TS,
        NTS,
        POS_W,
        TS_W,
        s_qt,
        s_qh,
        s_kt,
        s_kh,
        s_vt,
        s_vh,
        s_ot,
        s_oh,
        s_rb,
        s_rh,
        s_ri,
        s_rj,
        H,
        P,
        NB,
        alpha,
        inv_n,
        MAX_SEQ_LEN_KEY,
        D_QK,
        D_V,
        BLOCK_D_QK,
        BLOCK_D_V,
        BLOCK_M,
        BLOCK_N,
        CAUSAL,
        BIAS,
        DOT_PREC,
        HAS_LENGTHS,
        False,
    )


@triton.jit
def hstu_fwd_tma_kernel(
    Q,
    K,
    V,
    OUT,  # (T, H, D_QK), (T, H, D_QK), (T, H, D_V), (T, H, D_V); last dim contiguous
    OFFSETS,  # (B+1,) int64 sequence starts
    LENGTHS,  # HAS_LENGTHS: (B,) attend over each sequence's first LENGTHS[b] positions only
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
    HAS_LENGTHS: tl.constexpr,  # LENGTHS given: positions past LENGTHS[b] are left alone (zeros)
):
    """hstu_fwd_kernel with K and V as TMA tensor descriptors over (T, H, D_QK) and (T, H, D_V), block
    (BLOCK_N, 1, BLOCK_D): on Hopper the Tensor Memory Accelerator copies each key/value tile into shared
    memory, no per-element addresses or masks. A tile that runs past its sequence's end holds the next
    sequence's first keys (zeros past the tensor's end), which only the causal mask keeps out: causal only.
    The launcher chooses it (`KernelOptions.tma`), with its own tiles (shape class "fwd_tma")."""
    _fwd_program(
        Q,
        K,
        V,
        OUT,
        OFFSETS,
        LENGTHS,
        RAB,
        TS,
        NTS,
        POS_W,
        TS_W,
        s_qt,
        s_qh,
        s_kt,
        s_kh,
        s_vt,
        s_vh,
        s_ot,
        s_oh,
        s_rb,
        s_rh,
        s_ri,
        s_rj,
        H,
        P,
        NB,
        alpha,
        inv_n,
        MAX_SEQ_LEN_KEY,
        D_QK,
        D_V,
        BLOCK_D_QK,
        BLOCK_D_V,
        BLOCK_M,
        BLOCK_N,
        CAUSAL,
        BIAS,
        DOT_PREC,
        HAS_LENGTHS,
        True,
    )
