"""One learner-style Triton HSTU forward kernel for the exercise-05 check tests, with a switch per known
mistake (all off: a correct kernel). Shared by test_checks_triton.py and test_checks_wrong_triton.py."""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before the @triton.jit below

import triton  # noqa: E402
import triton.language as tl  # noqa: E402


@triton.jit
def _fwd(
    q_ptr,
    k_ptr,
    v_ptr,
    out_ptr,
    offsets_ptr,
    n,
    H,
    DQK,
    DV,
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_DQK: tl.constexpr,
    BLOCK_DV: tl.constexpr,
    SKIP: tl.constexpr,  # causal tile skipping: stop the key loop after the query block's last row
    STRICT: tl.constexpr,  # mistake: j < i (the diagonal dropped)
    NO_DIV: tl.constexpr,  # mistake: no division by n
    NO_KEY_MASK: tl.constexpr,  # mistake: keys past the sequence end are read (the next user's)
    NEG_INF: tl.constexpr,  # mistake: -inf masking before SiLU (NaN)
    KEY_MASKED_LOADS: tl.constexpr,  # no skipping, but future tiles are masked out of the loads
):
    block_m = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    start = tl.load(offsets_ptr + b)
    length = tl.load(offsets_ptr + b + 1) - start
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dq = tl.arange(0, BLOCK_DQK)
    dv = tl.arange(0, BLOCK_DV)
    q = tl.load(
        q_ptr + (start + rows)[:, None] * (H * DQK) + h * DQK + dq[None, :],
        mask=(rows[:, None] < length) & (dq[None, :] < DQK),
        other=0.0,
    )
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    hi = length
    if CAUSAL and SKIP:
        hi = tl.minimum(length, (block_m + 1) * BLOCK_M)
    if NO_KEY_MASK:
        hi = hi + BLOCK_N  # reads (and uses) the rows after the sequence: the next user's
    last_row = (block_m + 1) * BLOCK_M - 1
    for j0 in range(0, hi, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        col_ok = cols < length
        if NO_KEY_MASK:
            col_ok = (start + cols) < tl.load(offsets_ptr + tl.num_programs(1))
        if KEY_MASKED_LOADS:  # loops over every tile but never reads a future one: no memory traffic
            if CAUSAL:
                col_ok = col_ok & (cols <= last_row)
        k = tl.load(
            k_ptr + (start + cols)[:, None] * (H * DQK) + h * DQK + dq[None, :],
            mask=col_ok[:, None] & (dq[None, :] < DQK),
            other=0.0,
        )
        v = tl.load(
            v_ptr + (start + cols)[:, None] * (H * DV) + h * DV + dv[None, :],
            mask=col_ok[:, None] & (dv[None, :] < DV),
            other=0.0,
        )
        s = tl.dot(q, tl.trans(k))
        keep = col_ok[None, :] & (rows[:, None] < length)
        if CAUSAL:
            if STRICT:
                keep = keep & (cols[None, :] < rows[:, None])
            else:
                keep = keep & (cols[None, :] <= rows[:, None])
        if NEG_INF:
            s = tl.where(keep, s, float("-inf"))
        a = s * tl.sigmoid(s)
        if not NO_DIV:
            a = a / n
        if not NEG_INF:
            a = tl.where(keep, a, 0.0)
        acc += tl.dot(a, v)
    tl.store(
        out_ptr + (start + rows)[:, None] * (H * DV) + h * DV + dv[None, :],
        acc,
        mask=(rows[:, None] < length) & (dv[None, :] < DV),
    )


def fwd(
    block_m=32,
    block_n=32,
    *,
    skip=True,
    strict=False,
    no_div=False,
    no_key_mask=False,
    neg_inf=False,
    key_masked_loads=False,
    ignore_causal=False,
):
    """The learner's `fn(q, k, v, offsets, n, causal=True)` built on the kernel above."""

    def fn(q, k, v, offsets, n, causal=True):
        T, H, dqk = q.shape
        dv = v.shape[2]
        lengths = offsets[1:] - offsets[:-1]
        max_len = int(lengths.max()) if lengths.numel() else 0
        out = torch.empty(T, H, dv, dtype=torch.float32, device=q.device)
        grid = (max(triton.cdiv(max_len, block_m), 1), offsets.numel() - 1, H)
        _fwd[grid](
            q,
            k,
            v,
            out,
            offsets,
            float(n),
            H,
            dqk,
            dv,
            CAUSAL=causal and not ignore_causal,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_DQK=max(16, triton.next_power_of_2(dqk)),
            BLOCK_DV=max(16, triton.next_power_of_2(dv)),
            SKIP=skip,
            STRICT=strict,
            NO_DIV=no_div,
            NO_KEY_MASK=no_key_mask,
            NEG_INF=neg_inf,
            KEY_MASKED_LOADS=key_masked_loads,
        )
        return out

    return fn
