"""The Triton forward check against interpreted kernels: a kernel that loads key tiles lying entirely in the
future fails by name, also when its values are right; correct kernels pass whatever their block shapes
(a diagonal tile wider than the query block is loaded and masked, and that is fine)."""

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
    SKIP: tl.constexpr,
    NEG_INF: tl.constexpr,
    KEY_MASKED_LOADS: tl.constexpr,
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
    last_row = (block_m + 1) * BLOCK_M - 1
    for j0 in range(0, hi, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)
        col_ok = cols < length
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
            keep = keep & (cols[None, :] <= rows[:, None])
        if NEG_INF:
            s = tl.where(keep, s, float("-inf"))
            a = s * tl.sigmoid(s) / n
        else:
            a = tl.where(keep, s * tl.sigmoid(s) / n, 0.0)
        acc += tl.dot(a, v)
    tl.store(
        out_ptr + (start + rows)[:, None] * (H * DV) + h * DV + dv[None, :],
        acc,
        mask=(rows[:, None] < length) & (dv[None, :] < DV),
    )


def fwd(block_m=32, block_n=32, skip=True, neg_inf=False, key_masked_loads=False):
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
            CAUSAL=causal,
            BLOCK_M=block_m,
            BLOCK_N=block_n,
            BLOCK_DQK=max(16, triton.next_power_of_2(dqk)),
            BLOCK_DV=max(16, triton.next_power_of_2(dv)),
            SKIP=skip,
            NEG_INF=neg_inf,
            KEY_MASKED_LOADS=key_masked_loads,
        )
        return out

    return fn


interpreted = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") in ("", "0"),
    reason="the load recorder needs the Triton interpreter",
)


@interpreted
def test_a_kernel_without_causal_tile_skipping_fails_by_name():
    ok = checks.check_triton_hstu_forward(fwd(skip=False))
    assert not ok
    assert "no causal tile skipping" in checks.last_report, checks.last_report
    assert "hi = tl.minimum(length, (block_m + 1) * BLOCK_M)" in checks.last_report


@pytest.mark.parametrize("block_m, block_n", [(32, 32), (16, 64), (64, 16), (128, 32)])
def test_tile_skipping_kernels_pass_with_any_block_shape(block_m, block_n):
    # (16, 64): the diagonal tile reaches 48 rows past the query block; it is loaded and masked, not skipped
    assert checks.check_triton_hstu_forward(fwd(block_m, block_n)), checks.last_report


def test_masking_future_loads_instead_of_ending_the_loop_is_not_a_load():
    assert checks.check_triton_hstu_forward(fwd(skip=False, key_masked_loads=True)), checks.last_report


def test_minus_inf_before_silu_in_a_kernel_is_named():
    ok = checks.check_triton_hstu_forward(fwd(neg_inf=True))
    assert not ok
    assert "NaN" in checks.last_report and "SiLU(-inf)" in checks.last_report, checks.last_report
