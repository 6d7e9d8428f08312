"""The Triton exercise checks against real (interpreted) kernels: the solution passes, known-wrong kernels
are rejected with the right message. Small shapes, large blocks (the interpreter is numpy)."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any @triton.jit below

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

from hstu_tutorial import checks  # noqa: E402


@pytest.fixture(autouse=True)
def _progress_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(tmp_path / "progress.json"))


@triton.jit
def _j2p_kernel(
    values_ptr,
    offsets_ptr,
    out_ptr,
    max_len,
    D,
    padding_value,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PAD_ZERO: tl.constexpr,
    SHIFT: tl.constexpr,
):
    b = tl.program_id(0)
    block = tl.program_id(1)
    nb = tl.num_programs(0)
    src = b + SHIFT
    ok = src < nb
    start = tl.load(offsets_ptr + src, mask=ok, other=0)
    length = tl.where(ok, tl.load(offsets_ptr + src + 1, mask=ok, other=0) - start, 0)
    pos = block * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = tl.arange(0, BLOCK_D)
    col_ok = cols[None, :] < D
    other = 0.0 if PAD_ZERO else padding_value
    x = tl.load(
        values_ptr + (start + pos)[:, None] * D + cols[None, :],
        mask=(pos[:, None] < length) & col_ok,
        other=other,
    )
    tl.store(
        out_ptr + (b * max_len + pos)[:, None] * D + cols[None, :], x, mask=(pos[:, None] < max_len) & col_ok
    )


def j2p(pad_zero=False, shift=0):
    def fn(values, offsets, max_len, padding_value=0.0):
        B, D = offsets.numel() - 1, values.shape[1]
        out = torch.empty(B, max_len, D, dtype=values.dtype, device=values.device)
        grid = (B, triton.cdiv(max_len, 32))
        _j2p_kernel[grid](
            values,
            offsets,
            out,
            max_len,
            D,
            padding_value,
            BLOCK_N=32,
            BLOCK_D=triton.next_power_of_2(D),
            PAD_ZERO=pad_zero,
            SHIFT=shift,
        )
        return out

    return fn


def test_triton_jagged_to_padded():
    assert checks.check_triton_jagged_to_padded(j2p()), checks.last_report


@pytest.mark.parametrize(
    "fn, fragment",
    [
        (j2p(pad_zero=True), "padding_value"),
        (j2p(shift=1), "off-by-one"),
        (lambda v, o, n, padding_value=0.0: j2p()(v, o, n + 1, padding_value), "wrong shape"),
    ],
)
def test_triton_jagged_to_padded_wrong(fn, fragment):
    assert not checks.check_triton_jagged_to_padded(fn)
    assert fragment in checks.last_report, checks.last_report


@triton.jit
def _fwd_kernel(
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
    STRICT: tl.constexpr,
    NO_DIV: tl.constexpr,
    NO_KEY_MASK: tl.constexpr,
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
    if CAUSAL:
        hi = tl.minimum(length, (block_m + 1) * BLOCK_M)
    if NO_KEY_MASK:
        hi = hi + BLOCK_N  # reads (and uses) the rows after the sequence: the next user's
    for j0 in range(0, hi, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        col_ok = cols < length
        if NO_KEY_MASK:
            col_ok = (start + cols) < tl.load(offsets_ptr + tl.num_programs(1))
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
        a = s * tl.sigmoid(s)
        if not NO_DIV:
            a = a / n
        keep = col_ok[None, :] & (rows[:, None] < length)
        if CAUSAL:
            if STRICT:
                keep = keep & (cols[None, :] < rows[:, None])
            else:
                keep = keep & (cols[None, :] <= rows[:, None])
        acc += tl.dot(tl.where(keep, a, 0.0), v)
    tl.store(
        out_ptr + (start + rows)[:, None] * (H * DV) + h * DV + dv[None, :],
        acc,
        mask=(rows[:, None] < length) & (dv[None, :] < DV),
    )


def fwd(strict=False, no_div=False, no_key_mask=False, ignore_causal=False):
    def fn(q, k, v, offsets, n, causal=True):
        T, H, dqk = q.shape
        dv = v.shape[2]
        lengths = offsets[1:] - offsets[:-1]
        max_len = int(lengths.max())
        out = torch.empty(T, H, dv, dtype=torch.float32, device=q.device)
        grid = (max(triton.cdiv(max_len, 32), 1), offsets.numel() - 1, H)
        _fwd_kernel[grid](
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
            BLOCK_M=32,
            BLOCK_N=32,
            BLOCK_DQK=max(16, triton.next_power_of_2(dqk)),
            BLOCK_DV=max(16, triton.next_power_of_2(dv)),
            STRICT=strict,
            NO_DIV=no_div,
            NO_KEY_MASK=no_key_mask,
        )
        return out

    return fn


def test_triton_hstu_forward():
    assert checks.check_triton_hstu_forward(fwd()), checks.last_report


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"strict": True}, "diagonal is missing"),
        ({"no_div": True}, "missing divisor n"),
        ({"no_key_mask": True}, "sequence boundary"),
        ({"ignore_causal": True}, "future position leaked"),
    ],
)
def test_triton_hstu_forward_wrong(kw, fragment):
    assert not checks.check_triton_hstu_forward(fwd(**kw))
    assert fragment in checks.last_report, checks.last_report


def test_triton_stub_is_not_attempted():
    @triton.jit
    def stub_kernel(x_ptr):
        raise NotImplementedError("exercise: replace this line with your code")

    def fn(values, offsets, max_len, padding_value=0.0):
        out = torch.empty(offsets.numel() - 1, max_len, values.shape[1], device=values.device)
        stub_kernel[(1,)](out)
        return out

    assert not checks.check_triton_jagged_to_padded(fn)
    assert checks.NOT_ATTEMPTED in checks.last_report
