# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (hstu-tutorial)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Exercises 05: Triton kernels
#
# Companion of [`notebooks/05_triton_kernels`](../notebooks/05_triton_kernels.ipynb). Two kernels, in the order
# the notebook builds them: first a small jagged kernel (program ids, blocks, masks, offsets), then the heart of
# HSTU's fused attention: the forward **tile loop**.
#
# On a machine without a GPU, Triton runs the kernels in its **interpreter** (numpy on the CPU): set
# `TRITON_INTERPRET=1` *before* the first `@triton.jit` (the next cell does it), keep shapes small and blocks
# large, compute in float32. On a GPU the same code compiles to a real kernel. Each check compares your kernel
# with `hstu_tutorial.ops` on jagged batches whose lengths are not block multiples, with a length 1, an empty
# history, several heads and `dqk != dv`.
#
# > **中文摘要**：你要写两个 Triton 内核：一个锯齿 → 填充的小内核（program id、分块、掩码、偏移量），以及 HSTU
# > 融合注意力前向的分块循环。没有 GPU 时在 Triton 解释器中运行（用 float32 计算、形状取小）。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/05_triton.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # before any @triton.jit: kernels run in the interpreter on the CPU

import triton
import triton.language as tl

import hstu_tutorial
from hstu_tutorial import checks, ops

preset = hstu_tutorial.get_preset()
device = "cuda" if torch.cuda.is_available() else "cpu"
print("Triton runs", "natively on the GPU" if device == "cuda" else "in its interpreter on the CPU")


# %% [markdown]
# ## 1. A jagged kernel: jagged → padded
#
# One **program** per (sequence `b`, block of `BLOCK_N` positions). A program reads `offsets[b]` and
# `offsets[b+1]`, loads its block of rows of `values (T, D)` and stores them into row `b` of the padded output
# `(B, max_len, D)`. Two masks do all the work: rows past the sequence's end read `padding_value` instead
# (`tl.load(..., mask=..., other=padding_value)`), and rows past `max_len` (or columns past `D`, since
# `BLOCK_D` is a power of two) are not stored.
#
# Fill in the kernel body. The wrapper below it launches the grid `(B, cdiv(max_len, BLOCK_N))`.

# %%
@triton.jit
def jagged_to_padded_kernel(
    values_ptr,       # (T, D) float32, contiguous: row t starts at values_ptr + t * D
    offsets_ptr,      # (B+1,) int64
    out_ptr,          # (B, max_len, D) float32, contiguous
    max_len,          # N, the pad width
    D,                # feature size
    padding_value,    # what padded slots hold
    BLOCK_N: tl.constexpr,   # positions per program
    BLOCK_D: tl.constexpr,   # a power of two >= D
):
    b = tl.program_id(0)      # which sequence
    block = tl.program_id(1)  # which block of positions
    # BEGIN SOLUTION
    start = tl.load(offsets_ptr + b)
    length = tl.load(offsets_ptr + b + 1) - start
    pos = block * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) positions inside the sequence
    cols = tl.arange(0, BLOCK_D)                   # (BLOCK_D,)
    col_ok = cols[None, :] < D
    x = tl.load(values_ptr + (start + pos)[:, None] * D + cols[None, :],
                mask=(pos[:, None] < length) & col_ok, other=padding_value)  # (BLOCK_N, BLOCK_D)
    tl.store(out_ptr + (b * max_len + pos)[:, None] * D + cols[None, :], x,
             mask=(pos[:, None] < max_len) & col_ok)
    # END SOLUTION


def triton_jagged_to_padded(values, offsets, max_len, padding_value=0.0, BLOCK_N=32):
    """values (T, D), offsets (B+1,) -> (B, max_len, D) with the kernel above."""
    B, D = offsets.numel() - 1, values.shape[1]
    out = torch.empty(B, max_len, D, dtype=values.dtype, device=values.device)
    grid = (B, triton.cdiv(max_len, BLOCK_N))
    jagged_to_padded_kernel[grid](values, offsets, out, max_len, D, padding_value,
                                  BLOCK_N=BLOCK_N, BLOCK_D=triton.next_power_of_2(D))
    return out


# %% tags=["nbval-check-output"]
ok = checks.check_triton_jagged_to_padded(triton_jagged_to_padded)


# %% [markdown]
# <details><summary>Hint 1 (where am I?)</summary>
#
# `start = tl.load(offsets_ptr + b)` and `length = tl.load(offsets_ptr + b + 1) - start`. This program's
# positions are `pos = block * BLOCK_N + tl.arange(0, BLOCK_N)`, its columns `cols = tl.arange(0, BLOCK_D)`.
# </details>
#
# <details><summary>Hint 2 (addresses)</summary>
#
# Row `start + pos` of `values` starts at `values_ptr + (start + pos) * D`; a 2-D block of addresses is
# `values_ptr + (start + pos)[:, None] * D + cols[None, :]`. In the output, row `b`, position `pos` starts at
# `out_ptr + (b * max_len + pos) * D`.
# </details>
#
# <details><summary>Hint 3 (masks)</summary>
#
# Load with `mask=(pos[:, None] < length) & (cols[None, :] < D), other=padding_value`; store with
# `mask=(pos[:, None] < max_len) & (cols[None, :] < D)`. The store mask keeps a long sequence from spilling
# into the next row.
# </details>

# %% [markdown]
# ## 2. The HSTU forward tile loop
#
# One program per (query block, sequence, head). It loads a `(BLOCK_M, dqk)` tile of queries once, then walks
# over key/value tiles of `BLOCK_N` rows of the **same** sequence and accumulates
#
# $$\mathrm{acc} \mathrel{+}= \Big(\frac{\mathrm{SiLU}(Q K^\top)}{n} \odot \mathrm{mask}\Big) V .$$
#
# Two things make this simpler than FlashAttention: there is no softmax, so no running maximum and no
# rescaling of the accumulator, just a sum; and with the causal mask, key tiles that start after the query
# block's last row are entirely masked, so the loop simply **stops** at the query block's end (tile
# skipping: about half the work). The mask inside a tile keeps `j <= i` and `j < length`.
#
# The skeleton loads the queries and stores the result; write the loop. `tl.dot` needs tile sizes of at least 16.

# %%
@triton.jit
def hstu_forward_kernel(
    q_ptr, k_ptr, v_ptr,     # (T, H, dqk), (T, H, dqk), (T, H, dv) float32, contiguous
    out_ptr,                 # (T, H, dv) float32
    offsets_ptr,             # (B+1,) int64
    n,                       # the divisor
    H, DQK, DV,              # heads and head sizes
    CAUSAL: tl.constexpr,
    BLOCK_M: tl.constexpr,   # query rows per program
    BLOCK_N: tl.constexpr,   # key rows per loop step
    BLOCK_DQK: tl.constexpr, BLOCK_DV: tl.constexpr,  # powers of two >= DQK, DV (and >= 16)
):
    block_m = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    start = tl.load(offsets_ptr + b)
    length = tl.load(offsets_ptr + b + 1) - start
    rows = block_m * BLOCK_M + tl.arange(0, BLOCK_M)          # (BLOCK_M,) query positions in the sequence
    dq = tl.arange(0, BLOCK_DQK)
    dv = tl.arange(0, BLOCK_DV)
    q = tl.load(q_ptr + (start + rows)[:, None] * (H * DQK) + h * DQK + dq[None, :],
                mask=(rows[:, None] < length) & (dq[None, :] < DQK), other=0.0)   # (BLOCK_M, BLOCK_DQK)
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    # BEGIN SOLUTION
    hi = length
    if CAUSAL:
        hi = tl.minimum(length, (block_m + 1) * BLOCK_M)  # tiles after the query block are fully masked
    for j0 in range(0, hi, BLOCK_N):
        cols = j0 + tl.arange(0, BLOCK_N)                 # (BLOCK_N,) key positions
        col_ok = cols < length
        k = tl.load(k_ptr + (start + cols)[:, None] * (H * DQK) + h * DQK + dq[None, :],
                    mask=col_ok[:, None] & (dq[None, :] < DQK), other=0.0)   # (BLOCK_N, BLOCK_DQK)
        v = tl.load(v_ptr + (start + cols)[:, None] * (H * DV) + h * DV + dv[None, :],
                    mask=col_ok[:, None] & (dv[None, :] < DV), other=0.0)    # (BLOCK_N, BLOCK_DV)
        s = tl.dot(q, tl.trans(k))                        # (BLOCK_M, BLOCK_N) scores, no 1/sqrt(d)
        a = s * tl.sigmoid(s) / n                         # SiLU / n: pointwise, no running max
        keep = col_ok[None, :] & (rows[:, None] < length)
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None])
        acc += tl.dot(tl.where(keep, a, 0.0), v)          # (BLOCK_M, BLOCK_DV)
    # END SOLUTION
    tl.store(out_ptr + (start + rows)[:, None] * (H * DV) + h * DV + dv[None, :], acc,
             mask=(rows[:, None] < length) & (dv[None, :] < DV))


def triton_hstu_forward(q, k, v, offsets, n, causal=True, BLOCK_M=32, BLOCK_N=32):
    """Jagged HSTU attention forward with the kernel above: q, k (T, H, dqk), v (T, H, dv) -> (T, H, dv)."""
    T, H, dqk = q.shape
    dv = v.shape[2]
    lengths = offsets[1:] - offsets[:-1]
    max_len = int(lengths.max()) if lengths.numel() else 0
    out = torch.empty(T, H, dv, dtype=torch.float32, device=q.device)
    grid = (max(triton.cdiv(max_len, BLOCK_M), 1), offsets.numel() - 1, H)
    hstu_forward_kernel[grid](q, k, v, out, offsets, float(n), H, dqk, dv, CAUSAL=causal,
                              BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                              BLOCK_DQK=max(16, triton.next_power_of_2(dqk)),
                              BLOCK_DV=max(16, triton.next_power_of_2(dv)))
    return out


# %% tags=["nbval-check-output"]
ok = checks.check_triton_hstu_forward(triton_hstu_forward)

# %% [markdown]
# <details><summary>Hint 1 (the loop)</summary>
#
# `for j0 in range(0, hi, BLOCK_N):` with `hi = length`, or, when `CAUSAL`, `hi = tl.minimum(length,
# (block_m + 1) * BLOCK_M)`: the last key a query of this block can see is the block's own last row.
# </details>
#
# <details><summary>Hint 2 (one step)</summary>
#
# `cols = j0 + tl.arange(0, BLOCK_N)`; load K and V tiles like Q (masked with `cols < length`, `other=0.0`);
# `s = tl.dot(q, tl.trans(k))`; `a = s * tl.sigmoid(s) / n`.
# </details>
#
# <details><summary>Hint 3 (the mask)</summary>
#
# `keep = (cols[None, :] < length) & (rows[:, None] < length)`, and `& (cols[None, :] <= rows[:, None])` when
# causal. Zero the rest with `tl.where(keep, a, 0.0)` before `acc += tl.dot(a, v)`: SiLU of a masked score is
# not 0.
# </details>

# %% [markdown]
# ## Use it
#
# Your kernel (or the package's, `ops.triton_hstu_attention`, which also has the backward pass and the in-kernel
# relative attention bias) on a jagged batch, against the PyTorch reference.

# %%
use_mine = False  # set to True once check_triton_hstu_forward passes

attention = triton_hstu_forward if use_mine else (
    lambda q, k, v, offsets, n, causal=True: ops.triton_hstu_attention(q, k, v, offsets, norm=n, causal=causal))
lengths = torch.tensor([45, 3, 17, 30])
offsets = ops.lengths_to_offsets(lengths).to(device)
g = torch.Generator().manual_seed(0)
q, k, v = (0.5 * torch.randn(int(lengths.sum()), 2, 16, generator=g) for _ in range(3))  # (T, H, d)
q, k, v = q.to(device), k.to(device), v.to(device)
out = attention(q, k, v, offsets, 61.0)
reference = ops.hstu_attention(q, k, v, offsets, norm=61.0)
print(f"T={q.shape[0]}, H=2, d=16: max |triton - reference| = {(out - reference).abs().max().item():.1e}")

# %% [markdown]
# ## What you built
#
# A jagged kernel driven by offsets and masks, and the forward pass of HSTU's fused attention: tiles over
# queries and keys, no padding, no softmax state, and causal tile skipping. Notebook 05 adds the backward
# pass (dQ, dK, dV), the relative attention bias formed inside the kernel, and the GPU benchmarks.
