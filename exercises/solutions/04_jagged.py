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
# # Exercises 04: jagged tensors
#
# Companion of [`notebooks/04_jagged_tensors`](../notebooks/04_jagged_tensors.ipynb). A batch of users'
# histories has very different lengths. Padding every history to the longest wastes memory and compute on
# zeros; a **jagged** batch stores all items back to back, `values (T, ...)`, with `offsets (B+1,)` saying
# where each user starts: user `b` owns `values[offsets[b]:offsets[b+1]]`, `offsets[0] = 0`,
# `offsets[-1] = T`.
#
# You write the three conversions and computations HSTU builds on. Each check runs seeded random batches and
# edge cases (length 1, an **empty history**, every sequence at the maximum length, no sequences at all) and
# compares with `hstu_tutorial.ops`. Unsolved stubs print *not attempted yet*; later cells use the package
# unless you set `use_mine = True`. Hints unfold one at a time.
#
# > **中文摘要**：你要写三个函数：由长度得到偏移量、锯齿 → 填充的转换、直接在锯齿批上计算 HSTU 注意力。
# > 检查覆盖空历史、长度 1、全部满长、没有序列等边界情况，并与 `hstu_tutorial.ops` 对比。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/04_jagged.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import torch
import torch.nn.functional as F

import hstu_tutorial
from hstu_tutorial import checks, ops, viz
from hstu_tutorial.data import get_reco_dataset

preset = hstu_tutorial.get_preset()
torch.manual_seed(0);


# %% [markdown]
# ## 1. Offsets from lengths
#
# `lengths = [3, 1, 4]` → `offsets = [0, 3, 4, 8]`: an *exclusive* running sum with the total at the end,
# $B + 1$ entries, `int64` (they index tensors). Lengths may be 0 (a user with no history in this split).

# %%
def lengths_to_offsets(lengths):
    """lengths (B,) int64 -> offsets (B+1,) int64 with offsets[0] = 0 and offsets[-1] = sum(lengths)."""
    # BEGIN SOLUTION
    offsets = torch.zeros(lengths.shape[0] + 1, dtype=torch.int64)  # (B+1,)
    offsets[1:] = torch.cumsum(lengths.to(torch.int64), dim=0)
    return offsets
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_lengths_to_offsets(lengths_to_offsets)


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `torch.cumsum(lengths, 0)` gives `[3, 4, 8]`: the *ends* of the sequences. Offsets are the same with a 0 in
# front.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Allocate `torch.zeros(B + 1, dtype=torch.int64)` and write the cumulative sum into `offsets[1:]`; that also
# handles `B = 0` (the result is `[0]`).
# </details>

# %% [markdown]
# ## 2. Jagged → padded
#
# Code that wants a rectangle (a padded attention, a plot) needs `(B, N, ...)`: row `b` holds user `b`'s items
# left-aligned (position 0 = the oldest), then `padding_value`. A sequence longer than `N = max_len` keeps its
# **first** `max_len` rows (the convention of fbgemm's `jagged_to_padded_dense`; histories are cut to the most
# recent items earlier, when they are built). The result must stay differentiable in `values`.

# %%
def jagged_to_padded(values, offsets, max_len, padding_value=0.0):
    """values (T, D), offsets (B+1,) -> padded (B, max_len, D), filled with padding_value after each sequence."""
    # BEGIN SOLUTION
    B = offsets.shape[0] - 1
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    out = values.new_full((B, max_len) + tuple(values.shape[1:]), padding_value)  # (B, N, D)
    pos = torch.arange(max_len)  # (N,)
    keep = pos[None, :] < lengths[:, None]  # (B, N): which padded slots hold an item
    src = (offsets[:-1, None] + pos[None, :])[keep]  # (T',) the jagged row of each kept slot
    out[keep] = values[src]  # one vectorised gather, no Python loop over users
    return out
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_jagged_to_padded(jagged_to_padded)


# %% [markdown]
# <details><summary>Hint 1 (a loop is fine first)</summary>
#
# `for b in range(B): seq = values[offsets[b]:offsets[b+1]][:max_len]; out[b, :len(seq)] = seq`, with `out`
# created by `values.new_full((B, max_len, D), padding_value)`.
# </details>
#
# <details><summary>Hint 2 (vectorised)</summary>
#
# `keep = torch.arange(max_len)[None, :] < lengths[:, None]` marks the slots that hold an item; the jagged
# row of slot `(b, i)` is `offsets[b] + i`. Gather those rows and assign `out[keep] = values[rows]`.
# </details>

# %% [markdown]
# ## 3. HSTU attention on a jagged batch
#
# The whole point of jagged batches: attention per user, over that user's own items only, with nothing spent on
# padding. For user $b$ with rows $s = $ `offsets[b]` to $e = $ `offsets[b+1]`:
#
# $$\mathrm{out}_i = \sum_{s \le j \le i} \frac{\mathrm{SiLU}(\langle q_i, k_j\rangle)}{n}\, v_j \qquad (s \le i < e),$$
#
# (all $s \le j < e$ when `causal=False`). Rows of different users must never see each other.
# q, k `(T, H, dqk)`, v `(T, H, dv)` → `(T, H, dv)`.

# %%
def jagged_hstu_attention(q, k, v, offsets, n, causal=True):
    """HSTU attention on jagged q, k (T, H, dqk), v (T, H, dv) with offsets (B+1,) -> (T, H, dv)."""
    # BEGIN SOLUTION
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[2], dtype=v.dtype)  # (T, H, dv)
    pieces = []
    for b in range(offsets.shape[0] - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        if e == s:
            continue  # an empty history has no rows
        scores = torch.einsum("ihd,jhd->hij", q[s:e], k[s:e])  # (H, L, L)
        attn = F.silu(scores) / n
        if causal:
            attn = attn * torch.ones(e - s, e - s, dtype=torch.bool).tril()
        pieces.append(torch.einsum("hij,jhd->ihd", attn, v[s:e]))  # (L, H, dv)
    return torch.cat(pieces) if pieces else out
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_jagged_hstu_attention(jagged_hstu_attention)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Loop over users: `s, e = int(offsets[b]), int(offsets[b + 1])`, and compute attention on `q[s:e]`, `k[s:e]`,
# `v[s:e]` exactly as in exercise 02 (no padding inside one user, so only the causal mask remains).
# </details>
#
# <details><summary>Hint 2</summary>
#
# `torch.einsum("ihd,jhd->hij", q_b, k_b)` gives `(H, L, L)` scores; multiply `SiLU(scores) / n` by
# `torch.ones(L, L, dtype=torch.bool).tril()` when causal; `torch.einsum("hij,jhd->ihd", a, v_b)` gives
# `(L, H, dv)`. Concatenate the users' pieces in order (skip empty users).
# </details>
#
# <details><summary>Hint 3 (why a loop is only a start)</summary>
#
# A Python loop over users is correct but slow on a GPU; the package pads once (`jagged_to_padded`) and runs one
# masked einsum, and the Triton kernel of exercise 05 works on the jagged layout directly.
# </details>

# %% [markdown]
# ## Use it: a real jagged batch
#
# A batch of the training split (synthetic data in the small preset, ML-1M in the full one). The next cells
# use the package's functions unless you set `use_mine = True`.

# %%
use_mine = False  # set to True once your checks pass, to run the rest with your functions

to_offsets = lengths_to_offsets if use_mine else ops.lengths_to_offsets
to_padded = jagged_to_padded if use_mine else ops.jagged_to_padded
attention = jagged_hstu_attention if use_mine else (
    lambda q, k, v, offsets, n, causal=True: ops.hstu_attention(q, k, v, offsets, norm=n, causal=causal))

dataset = get_reco_dataset(preset.dataset, max_seq_len=preset.max_seq_len)
batch = next(iter(dataset.loader("train", batch_size=8)))
offsets = to_offsets(batch.lengths)                                   # (B+1,)
assert torch.equal(offsets, batch.offsets)
padded = to_padded(batch.item_ids[:, None], offsets, batch.max_len)[..., 0]  # (B, N) item ids, 0 = padding
T, N = batch.item_ids.shape[0], padded.shape[1]
print(f"B={len(batch.lengths)} users, T={T} items, padded to N={N}: {T / padded.numel():.0%} of the padded slots hold an item")

# %%
fig, drawn = viz.plot_jagged_layout(batch.lengths, max_len=N)

# %%
# attention on the jagged batch equals padded + masked attention (the check did this on random data)
H, d = 2, 8
g = torch.Generator().manual_seed(0)
q, k, v = (torch.randn(T, H, d, generator=g) for _ in range(3))      # (T, H, d)
out = attention(q, k, v, offsets, preset.max_seq_len + 11)          # (T, H, d)
reference = ops.hstu_attention(q, k, v, offsets, norm=preset.max_seq_len + 11)
print("max |attention - ops.hstu_attention| =", f"{(out - reference).abs().max().item():.1e}", "| shapes:", tuple(out.shape))

# %% [markdown]
# ## What you built
#
# Offsets, the jagged → padded view, and attention that never crosses a user boundary. Exercise 05 writes the
# same attention as a Triton kernel that reads the jagged layout directly, tile by tile.
