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

from check_helpers import _progress_file  # noqa: E402, F401 (an autouse fixture)
from learner_triton_forward import fwd  # noqa: E402

from hstu_tutorial import checks  # noqa: E402


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
