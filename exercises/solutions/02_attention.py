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
# # Exercises 02: attention math
#
# Companion of [`notebooks/02_attention_math`](../notebooks/02_attention_math.ipynb). You write six functions
# from their equations (two attentions, the time bucket, and the three pieces of the relative attention bias);
# after each one a `check_...` cell runs it on seeded random batches and edge cases
# (length 1, every sequence at the maximum length, several heads, `dqk != dv`, with and without causal mask),
# compares it with the package (`hstu_tutorial.ops`) and tells you precisely what is wrong.
#
# * Replace each `raise NotImplementedError(...)` line with your code, run the cell, then run its check.
# * An unsolved exercise prints *not attempted yet*: the notebook still runs top to bottom, and later cells use
#   the package's version unless you set `use_mine = True`.
# * Hints unfold one at a time: open the first only when stuck.
# * Passing a check ticks its item of the learning checklist (see `notebooks/00_overview`).
#
# Shapes follow the package: padded tensors `(B, N, H, d)` (batch, positions, heads, head dim) and
# `lengths (B,)`. Positions `i >= lengths[b]` are padding; their output rows are not compared.
#
# > **中文摘要**：你要按公式写三个函数：因果且考虑填充的 softmax 注意力（SASRec 基线）、HSTU 逐点注意力
# > SiLU(q kᵀ + rab) / n、相对注意力偏置的时间分桶函数，以及偏置本身（位置项 pos_w[L-1+j-i] 加上用下一个物品
# > 时间戳计算的时间项）。把 `raise NotImplementedError(...)` 换成
# > 你的代码，再运行其后的检查；未完成的练习打印 *not attempted yet*，提示逐条展开。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/02_attention.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import math

import torch
import torch.nn.functional as F

import hstu_tutorial
from hstu_tutorial import checks, ops

preset = hstu_tutorial.get_preset()
torch.manual_seed(0);


# %% [markdown]
# ## 1. Softmax attention (the SASRec baseline)
#
# SASRec, the Transformer that HSTU is compared with, uses scaled dot-product attention. For one head,
# query position $i$ attends to key positions $j$:
#
# $$\mathrm{out}_i = \sum_{j \in \mathcal{M}(i)} \mathrm{softmax}_j\!\left(\frac{\langle q_i, k_j\rangle}{\sqrt{d_{qk}}}\right) v_j,
# \qquad \mathcal{M}(i) = \{\, j < \mathrm{len} \,\} \cap \{\, j \le i \text{ if causal} \,\}.$$
#
# Masking means setting the score to $-\infty$ *before* the softmax, so a masked key gets weight exactly 0.
# Two masks: the **causal** one (a position may not look at the future: $j \le i$) and the **padding** one
# (keys at $j \ge$ `lengths[b]` are not items at all).
#
# Write `softmax_attention(q, k, v, lengths, causal=True)`: q, k `(B, N, H, dqk)`, v `(B, N, H, dv)`,
# lengths `(B,)` int64 → `(B, N, H, dv)`.

# %%
def softmax_attention(q, k, v, lengths, causal=True):
    """Scaled dot-product attention with causal and padding masks. (B, N, H, d) -> (B, N, H, dv)."""
    # BEGIN SOLUTION
    B, N, H, dqk = q.shape
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(dqk)  # (B, H, N, N)
    pos = torch.arange(N)
    keep = (pos[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, N): key j is a real item
    if causal:
        keep = keep & (pos[None, :] <= pos[:, None])  # (B, 1, N, N): and not in the future
    scores = scores.masked_fill(~keep, float("-inf"))
    attn = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # a row with no key at all would be NaN
    return torch.einsum("bhij,bjhd->bihd", attn, v)  # (B, N, H, dv)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_softmax_attention(softmax_attention)


# %% [markdown]
# <details><summary>Hint 1 (shapes)</summary>
#
# `torch.einsum("bihd,bjhd->bhij", q, k)` gives every score `<q_i, k_j>` per batch and head, `(B, H, N, N)`.
# `torch.einsum("bhij,bjhd->bihd", attn, v)` puts the heads back where the output wants them.
# </details>
#
# <details><summary>Hint 2 (the two masks)</summary>
#
# `pos = torch.arange(N)`; the padding mask on keys is `pos[None, :] < lengths[:, None]` `(B, N)`;
# the causal mask is `pos[None, :] <= pos[:, None]` `(N, N)` (row i, column j). Combine them with `&` after
# adding the broadcast dimensions so both become `(B, 1, N, N)`.
# </details>
#
# <details><summary>Hint 3 (the softmax)</summary>
#
# `scores.masked_fill(~keep, float("-inf"))`, then `torch.softmax(scores, dim=-1)` over the **key** axis,
# and do not forget the `1 / sqrt(dqk)` scale.
# </details>

# %% [markdown]
# ## 2. HSTU pointwise attention
#
# HSTU (paper eq. 2) drops the softmax. Each score goes through SiLU on its own and is divided by a constant
# $n$ (the reference uses $n = $ `max_seq_len + 11` $= 211$ on ML-1M, not the sequence's length), with a
# relative attention bias $\mathrm{rab}_{ij}$ added to the raw score and **no** $1/\sqrt{d}$ scale:
#
# $$\mathrm{out}_i = \sum_{j \in \mathcal{M}(i)} \frac{\mathrm{SiLU}(\langle q_i, k_j\rangle + \mathrm{rab}_{ij})}{n}\, v_j,
# \qquad \mathrm{SiLU}(x) = x\,\sigma(x).$$
#
# Why: softmax makes the weights of a row sum to one, so it cannot say *how much* a user engaged, only with
# what, relatively. Without the normalisation an unrelated item adds SiLU(0) = 0 to the row instead of diluting
# the weight of the matching ones, which the paper argues suits non-stationary, huge vocabularies.
# Because there is no $-\infty$ trick here, masked positions are zeroed *after* SiLU (SiLU(0) is 0 but a
# masked score is not 0).
#
# Write `hstu_attention(q, k, v, lengths, n, rab=None, causal=True)` with `rab` `(B, N, N)` (shared by the
# heads) or `None`.

# %%
def hstu_attention(q, k, v, lengths, n, rab=None, causal=True):
    """HSTU pointwise attention, padded. q, k (B, N, H, dqk), v (B, N, H, dv) -> (B, N, H, dv)."""
    # BEGIN SOLUTION
    N = q.shape[1]
    scores = torch.einsum("bihd,bjhd->bhij", q, k)  # (B, H, N, N); no 1/sqrt(d) in HSTU
    if rab is not None:
        scores = scores + rab[:, None]  # (B, 1, N, N): one bias shared by every head
    pos = torch.arange(N)
    keep = (pos[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, N)
    if causal:
        keep = keep & (pos[None, :] <= pos[:, None])  # (B, 1, N, N)
    attn = F.silu(scores) * keep / n  # masked entries become exact zeros
    return torch.einsum("bhij,bjhd->bihd", attn, v)  # (B, N, H, dv)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_hstu_attention(hstu_attention)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Start from your softmax attention: the scores and the masks are the same, minus the `1/sqrt(dqk)`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Replace "fill with -inf, softmax" by "SiLU, multiply by the mask, divide by n": `F.silu(scores) * keep / n`.
# </details>
#
# <details><summary>Hint 3 (the bias)</summary>
#
# `rab` is `(B, N, N)`; the scores are `(B, H, N, N)`. `rab[:, None]` broadcasts it over the heads. Add it
# before SiLU.
# </details>

# %% [markdown]
# ### Use it: what the softmax normalises away
#
# One query, eight past items. In the first history one item matches the query strongly, in the second four
# do. Softmax gives both histories the same total weight (1); HSTU's weights grow with the evidence, and the
# unrelated items add nothing (SiLU(0) = 0). The next cell uses the package's attention unless you set
# `use_mine = True`.
#
# Keep in mind where this row goes: the STU layer (exercise 03) passes on $u \odot \mathrm{LayerNorm}(AV)$, and the
# LayerNorm divides by the row's own scale. So the count of matching items does not survive as the scale of one
# head; it survives as the size of one head *relative to the others* (the norm is taken over all heads together).
# Notebook `02_attention_math` measures both.

# %%
use_mine = False  # set to True once check_hstu_attention passes, to run the rest with your functions

if use_mine:
    hstu_attn, softmax_attn = hstu_attention, softmax_attention
else:
    hstu_attn = lambda q, k, v, lengths, n, rab=None, causal=True: ops.padded_hstu_attention(
        q, k, v, lengths, rab=rab, norm=n, causal=causal)
    softmax_attn = lambda q, k, v, lengths, causal=True: ops.padded_softmax_attention(
        q, k, v, lengths, causal=causal)

# %% tags=["nbval-check-output"]
d = 8
query = torch.zeros(1, 1, 1, d, dtype=torch.float64); query[..., 0] = 2.0     # (B=1, N=1, H=1, d)
match = torch.zeros(d, dtype=torch.float64); match[0] = 2.0                   # <q, match> = 4
other = torch.zeros(d, dtype=torch.float64); other[1] = 2.0                   # <q, other> = 0
v = torch.ones(1, 8, 1, 1, dtype=torch.float64)                               # every item has value 1
lengths = torch.tensor([8])
for n_match in (1, 4):
    keys = torch.stack([match] * n_match + [other] * (8 - n_match))[None, :, None, :]  # (1, 8, 1, d)
    q = query.expand(1, 8, 1, d).contiguous()   # the last position holds the query we look at
    soft = softmax_attn(q, keys, v, lengths, causal=False)[0, -1, 0, 0].item()
    pointwise = hstu_attn(q, keys, v, lengths, 8, causal=False)[0, -1, 0, 0].item()
    print(f"{n_match} matching item(s): softmax total weight {soft:.3f}   HSTU total weight {pointwise:.3f}")


# %% [markdown]
# ## 3. The time bucket of the relative attention bias
#
# HSTU's bias has a position part and a time part. The time part looks up one of 129 learned weights by the
# **bucket** of the time gap $d$ (seconds) between the query's next action and key $j$:
#
# $$\mathrm{bucket}(d) = \mathrm{clamp}\!\left(\left\lfloor \frac{\ln \max(|d|, 1)}{0.301} \right\rfloor, 0, 128\right).$$
#
# Buckets are evenly spaced in $\log d$ (each one spans a factor $e^{0.301} \approx 1.35$), so seconds and
# years both get resolution with 129 parameters.
#
# Write `time_bucket(d)`: d an int64 tensor of any shape (negative, zero and huge values included) → int64
# of the same shape.

# %%
def time_bucket(d):
    """Log time bucket of gaps in seconds: int64 tensor -> int64 tensor of the same shape."""
    # BEGIN SOLUTION
    gap = d.abs().clamp(min=1).to(torch.float32)  # float32 as the reference computes it
    return torch.floor(torch.log(gap) / 0.301).to(torch.int64).clamp(0, 128)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_time_bucket(time_bucket)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `torch.log` is the natural log and needs a floating-point tensor: `.to(torch.float32)` first.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The order matters: absolute value, at least 1 (so `log` never sees 0), log, divide by 0.301, floor, to
# int64, clamp to [0, 128].
# </details>

# %% tags=["nbval-check-output"]
bucket = time_bucket if use_mine else ops.time_bucket
gaps = {"1 s": 1, "1 min": 60, "1 hour": 3600, "1 day": 86_400, "1 week": 604_800, "1 year": 31_536_000}
for label, g in gaps.items():
    print(f"{label:>7}: bucket {int(bucket(torch.tensor([g]))[0])}")

# %% [markdown]
# ## 4. Build the relative attention bias
#
# The bias of one layer adds two learned terms, both shared by all heads:
#
# $$\mathrm{rab}[b, i, j] = w^{p}\big[L-1 + j - i\big] + w^{t}\big[\mathrm{bucket}(t^{\mathrm{next}}_{b,i} - t_{b,j})\big].$$
#
# * **Position.** `pos_w` has $2L-1$ entries, one per offset $j - i$ from $-(L-1)$ to $L-1$, where $L$ is the
#   longest length the model is built for (211 on ML-1M). So $L$ = `(len(pos_w) + 1) // 2`, and the middle
#   entry `pos_w[L-1]` holds offset 0 (the diagonal). A batch padded to $N \le L$ reads only the middle $2N-1$
#   entries. Row $i$ is the query and column $j$ the key, so past keys have negative offsets. Careful:
#   `pos_w[j - i]` without the $L-1$ raises no error, because a negative index silently wraps around to the
#   end of the table.
# * **Time.** `ts_w` has 129 entries, one per bucket of section 3. The gap is `next_timestamps[b, i] -
#   timestamps[b, j]`: the **query uses the next item's timestamp**, the key its own.
#
# **The reference's convention.** `next_timestamps[b, i]` is the timestamp of the item at position $i+1$. For
# the last position it is the timestamp of the target, the item the model has to predict. Row $i$ of the
# attention builds the representation that predicts item $i+1$, so $t_{i+1}$ is the time at which that
# prediction is made. The gap $t_{i+1} - t_j$ says how long before that moment key $j$ happened. The printed
# example below shows one short history (seconds since its first rating). Entries with $j > i$ are computed
# too; the causal mask of the attention drops them.

# %% tags=["nbval-check-output"]
t_demo = torch.tensor([[0, 30, 90, 3_690]])  # (B=1, N=4): seconds since the first rating
target_time = 90_090  # the item to predict comes a day later
tn_demo = torch.cat([t_demo[:, 1:], torch.tensor([[target_time]])], dim=1)  # (1, 4): the next item's time


def show(title, m):
    print(title)
    for i, row in enumerate(m.tolist()):
        print(f"  query i={i}: " + " ".join(f"{x:>6}" if j <= i else f"{'·':>6}" for j, x in enumerate(row)))


print("timestamps      t[i]:", t_demo[0].tolist())
print("next_timestamps t[i+1]:", tn_demo[0].tolist(), "<- the last one is the target's")
show("gap t[i+1] - t[j] (columns: keys j; · = masked later)", tn_demo[0, :, None] - t_demo[0, None, :])
show("its bucket (what HSTU looks up)", ops.time_bucket(tn_demo[0, :, None] - t_demo[0, None, :]))
own_gap = t_demo[0, :, None] - t_demo[0, None, :]  # (N, N): what the query's own time would give
show("bucket of the query's own time t[i] - t[j] (not HSTU)", ops.time_bucket(own_gap))

# %% [markdown]
# With the query's own time, the diagonal is always a gap of 0 (bucket 0), and the last row cannot tell
# whether the next action comes a minute or a day later. With the next item's time, each row knows how far its
# prediction is from every past item.
#
# Write the three functions. `pos_w` and `ts_w` are float tensors `(2L-1,)` and `(129,)`. `timestamps` and
# `next_timestamps` are padded `(B, N)` int64 (or int32) seconds, with `N <= L`. For the bucket, use
# `ops.time_bucket`, or your own `time_bucket` from section 3 once its check passes.
#
# * `position_bias(pos_w, N)` → `(N, N)`, entry `[i, j]` = `pos_w[L-1 + j - i]`;
# * `time_bias(ts_w, timestamps, next_timestamps)` → `(B, N, N)`, entry `[b, i, j]` =
#   `ts_w[bucket(next_timestamps[b, i] - timestamps[b, j])]`;
# * `relative_attention_bias(pos_w, ts_w, timestamps, next_timestamps)` → `(B, N, N)`, the sum of the two.


# %%
def position_bias(pos_w, N):
    """Position term of the bias: (2L-1,) table -> (N, N), entry [i, j] = pos_w[L-1 + j - i]."""
    # BEGIN SOLUTION
    L = (pos_w.shape[0] + 1) // 2
    pos = torch.arange(N)
    return pos_w[L - 1 + pos[None, :] - pos[:, None]]  # (N, N): rows are queries i, columns keys j
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_position_bias(position_bias)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Build the `(N, N)` matrix of offsets first: `pos = torch.arange(N)`, then `pos[None, :] - pos[:, None]` is
# `j - i` (row i, column j). Print it for N = 3 and check that the row of query 2 reads `[-2, -1, 0]`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Shift the offsets by `L - 1` with `L = (len(pos_w) + 1) // 2` (not `N - 1`: the table is built for the
# longest length, whatever N the batch has), then index the table with the whole matrix at once:
# `pos_w[index]`.
# </details>


# %%
def time_bias(ts_w, timestamps, next_timestamps):
    """Time term of the bias: (129,) table, (B, N) seconds -> (B, N, N), ts_w[bucket(t_next[b, i] - t[b, j])]."""
    # BEGIN SOLUTION
    gap = next_timestamps[:, :, None] - timestamps[:, None, :]  # (B, N, N): query's next time - key's time
    return ts_w[ops.time_bucket(gap)]  # (B, N, N)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_time_bias(time_bias)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# One broadcast builds every gap of the batch: `next_timestamps[:, :, None]` is `(B, N, 1)` (the query i along
# the rows), `timestamps[:, None, :]` is `(B, 1, N)` (the key j along the columns).
# </details>
#
# <details><summary>Hint 2</summary>
#
# `ops.time_bucket(gap)` gives an int64 `(B, N, N)` tensor of bucket indices. It takes `|gap|` and clamps to
# [0, 128], so a negative or a huge gap is fine. `ts_w[buckets]` looks them all up at once.
# </details>


# %%
def relative_attention_bias(pos_w, ts_w, timestamps, next_timestamps):
    """HSTU's relative attention bias: position term + time term, (B, N) seconds -> (B, N, N)."""
    # BEGIN SOLUTION
    N = timestamps.shape[1]
    return position_bias(pos_w, N)[None] + time_bias(ts_w, timestamps, next_timestamps)  # (B, N, N)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_relative_attention_bias(relative_attention_bias)

# %% [markdown]
# <details><summary>Hint</summary>
#
# The position term is `(N, N)`, the same for every user; the time term is `(B, N, N)`, one matrix per user.
# `position[None] + time` broadcasts the first over the batch.
# </details>

# %% [markdown]
# **Your turn, in words.** Why does query row $i$ measure its time gaps from `next_timestamps[b, i]` and not
# from `timestamps[b, i]`? (Double-click this cell and write two sentences below, then open the answer.)
#
# *Your answer:*

# %% [markdown]
# <details><summary>One answer</summary>
#
# Row $i$'s output is used to predict item $i+1$, so the moment that matters is when that prediction is made,
# $t_{i+1}$ (the target's time for the last row; when the model serves, the time of the request). Gaps from
# that moment say how stale each past item is for this prediction. The row's own time $t_i$ would give every
# diagonal the gap 0, and would not show whether the next action comes a minute or a month later.
# </details>

# %% [markdown]
# ### Use it: two users, same positions, different times
#
# The position term depends only on $j - i$, so it is constant along each diagonal. The time term is what
# makes two users with histories of the same length differ. The next cell uses the package's
# `RelativeAttentionBias` (the module the HSTU layers hold) unless you set `use_mine = True` above; it prints
# verdicts, not numbers.

# %% tags=["nbval-check-output"]
rab_module = ops.RelativeAttentionBias(max_len=6)  # tables drawn N(0, 0.02^2), as the model initialises them
t_two = torch.tensor([[0, 60, 120, 180], [0, 86_400, 172_800, 259_200]])  # (2, 4): a minute apart, a day apart
tn_two = torch.cat([t_two[:, 1:], t_two[:, -1:] + torch.tensor([[60], [86_400]])], dim=1)  # (2, 4)
with torch.no_grad():
    if use_mine:
        rab_two = relative_attention_bias(rab_module.pos_w, rab_module.ts_w, t_two, tn_two)
    else:
        rab_two = rab_module(t_two, tn_two)  # (2, 4, 4)
    pos_two = rab_module.position_bias(4)  # (4, 4)
diagonals_constant = all(bool((pos_two.diagonal(k) == pos_two.diagonal(k)[0]).all()) for k in range(-3, 4))
print("position term constant along each diagonal:", diagonals_constant)
print("bias shape (B, N, N):", tuple(rab_two.shape))
print("the two users get different biases:", not torch.allclose(rab_two[0], rab_two[1]))
buckets_two = ops.time_bucket(tn_two[:, :, None] - t_two[:, None, :])  # (2, 4, 4)
print("rab - position term = ts_w[bucket] for both users:",
      torch.allclose(rab_two - pos_two, rab_module.ts_w.detach()[buckets_two]))

# %% [markdown]
# ## What you built
#
# Softmax attention normalises each row; HSTU's pointwise SiLU divided by a constant keeps the strength of the
# evidence, and its bias adds a learned term per position offset $j - i$ and one per log bucket of the gap
# from the next item's time (the moment of the prediction) to each key. Next: the STU layer that wraps this
# attention (`exercises/03_stu`), or the jagged version of the same attention (`exercises/04_jagged`).
