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
# # 04 · Jagged tensors: computing on histories of different lengths
#
# Users' histories have very different lengths: on MovieLens-1M from 20 to over 2,000 ratings, cut to a window of
# 200. A padded batch stores every history in a row of width $N$; a **jagged** batch stores them back to back,
# `values (T, ...)`, with `offsets (B+1,)` saying where each one starts. The HSTU paper (§3.3) builds its
# efficiency on jagged tensors: no memory and no FLOPs for padding, in attention (quadratic in the length) above
# all.
#
# This notebook: (1) what padding costs on the real length distribution; (2) offsets and the conversions in
# `hstu_tutorial.ops.jagged_tensors`; (3) jagged attention equals padded-and-masked attention (checked here);
# (4) time and memory on this machine.
#
# > **中文摘要**：锯齿张量：在真实的长度分布上量出填充的代价，学习偏移量与锯齿 ↔ 填充的转换，验证锯齿注意力
# > 等于填充加掩码的注意力，并在本机上测时间与内存。动手部分在练习 `exercises/04_jagged`。

# %%
import time

import torch
from IPython.display import Markdown, display

import hstu_tutorial
from hstu_tutorial import viz
from hstu_tutorial.ops import (dense_to_jagged, hstu_attention, jagged_positions, jagged_to_padded,
                               lengths_to_offsets, next_timestamps, offsets_to_lengths,
                               padded_hstu_attention, padded_to_jagged)

preset = hstu_tutorial.get_preset()
torch.manual_seed(0)
ds = preset.load_dataset()  # MovieLens-1M on real-cpu and full, the synthetic look-alike on small
print("Data:", viz.dataset_label(ds))

# %% [markdown]
# Where jagged batches come from (notebook 01), drawn with the first users of the loaded data: the raw lines,
# one time-sorted sequence per user, the leave-one-out split, and the first training batch as `values` +
# `offsets`.

# %%
fig, pipeline = viz.plot_jagged_pipeline(ds, num_users=3)

# %% [markdown]
# ## 1. How much padding costs
#
# Training histories are cut to the last `max_seq_len` items (200 for ML-1M in the `real-cpu` and `full`
# presets; 50 on the synthetic data of the `small` preset). Padding every history to the window wastes the share of cells that are
# padding, in every linear layer; in attention the waste is quadratic: a padded batch computes $B N^2$ scores,
# a jagged one $\sum_b L_b^2$.

# %%
lengths = torch.cat([b.lengths for b in ds.loader("train", 1024)])  # (users,) every training history
N = ds.max_seq_len
tokens, padded_tokens = lengths.sum().item(), lengths.numel() * N
scores, padded_scores = (lengths.double() ** 2).sum().item(), lengths.numel() * N**2
print(f"{ds.name}: {lengths.numel():,} training histories, window N={N}")
print(f"lengths: min {lengths.min().item()}, median {lengths.median().item()}, mean {lengths.float().mean():.1f}, at the window: {(lengths == N).float().mean():.0%}")
print(f"tokens:             {tokens:>12,} real vs {padded_tokens:>12,} padded -> {1 - tokens / padded_tokens:.0%} of a padded batch is padding")
print(f"attention scores:   {scores:>12,.0f} real vs {padded_scores:>12,} padded -> {1 - scores / padded_scores:.0%} wasted")

# %%
pad_tokens, pad_scores = 1 - tokens / padded_tokens, 1 - scores / padded_scores
display(Markdown(
    f"On `{ds.name}` at max_seq_len {N}: padding every training history to the window makes **{pad_tokens:.0%}** of "
    f"the tokens padding and wastes **{pad_scores:.0%}** of the attention scores (median history "
    f"{lengths.median().item()} items, {(lengths == N).float().mean():.0%} of the histories fill the window)."
))

# %% [markdown]
# The share of waste depends on how the lengths spread below the window: histories far shorter than
# `max_seq_len` leave most of a padded row empty, and the attention scores waste more than the tokens because
# they grow with the square of the length. The cells above measure it on the dataset this notebook loaded.
#
# Padding to each batch's *longest* history instead of the window saves less than one might hope: in a batch of
# a few dozen histories, one long history is enough to set the width. The seaborn picture shows the share of
# padding per batch, for three batch sizes, over one shuffled epoch each:

# %%
fig, pad = viz.plot_padding_fraction(ds, batch_sizes=(8, 32, preset.batch_size))
by_size = pad.groupby("batch size")["to the longest"].median()
display(Markdown(
    "Median share of padding per batch, padded to the batch's longest history: "
    + ", ".join(f"{share:.0%} at batch size {size}" for size, share in by_size.items())
    + f"; padded to the window of {ds.max_seq_len}: {pad['to the window'].median():.0%}."
))

# %% [markdown]
# ## 2. Offsets and conversions
#
# A jagged tensor is a pair: `values (T, ...)` and `offsets (B+1,)`, with sequence $b$ in
# `values[offsets[b]:offsets[b+1]]`. `offsets` is the exclusive cumulative sum of the lengths.

# %% tags=["nbval-check-output"]
lens = torch.tensor([3, 1, 4])
offsets = lengths_to_offsets(lens)  # (B+1,)
values = torch.arange(10, 18)  # (T,) = 8 tokens
print("lengths  ", lens.tolist())
print("offsets  ", offsets.tolist(), "-> lengths again:", offsets_to_lengths(offsets).tolist())
print("positions", jagged_positions(offsets).tolist(), "(index inside each sequence: the position embedding reads it)")
padded = jagged_to_padded(values, offsets, max_len=5, padding_value=-1)  # (B, N)
print("padded (B=3, N=5):\n", padded)
back, offs = dense_to_jagged(padded, lens)
print("back to jagged:", back.tolist(), "| offsets", offs.tolist())

# %%
fig, layout_data = viz.plot_jagged_layout([3, 1, 4], max_len=5)

# %% [markdown]
# The conversions are vectorised (no Python loop over sequences) and differentiable: `jagged_to_padded` is one
# `index_copy` into a zero tensor, `padded_to_jagged` one `index_select`, both driven by the index
# $b \cdot N + \text{position}$ of every token. They are the same conversions PyTorch's own jagged nested tensors
# perform; the test suite checks them against `torch.nested` (jagged layout):

# %%
import logging

logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)  # silence a torch-internal notice
x = torch.randn(8, 4)  # (T, D)
nt = torch.nested.nested_tensor_from_jagged(x, offsets, max_seqlen=4)  # PyTorch's jagged layout: same values + offsets
torch.testing.assert_close(torch.nested.to_padded_tensor(nt, 0.0), jagged_to_padded(x, offsets, 4))
print("torch.nested agrees:", tuple(nt.values().shape), nt.offsets().tolist())

# %% [markdown]
# HSTU needs one more jagged helper: the relative attention bias of query $i$ uses the timestamp of item $i+1$,
# the target's for the last item. `next_timestamps` shifts each sequence by one inside the jagged tensor:

# %% tags=["nbval-check-output"]
ts = torch.tensor([100, 110, 120, 200, 300, 310, 320, 330])  # (T,) jagged timestamps
targets = torch.tensor([130, 210, 340])  # (B,) the timestamp of each history's target
print(next_timestamps(ts, offsets, targets).tolist())

# %% [markdown]
# ### Who may attend to whom
#
# A causal mask on the padded grid has to exclude padding rows and columns as well; in the jagged layout the
# mask is block-diagonal: each token sees the earlier tokens of its own sequence, nothing else.

# %%
fig, masks = viz.plot_masks([3, 1, 4], max_len=5)

# %% [markdown]
# ## 3. Jagged attention equals padded + masked attention
#
# `hstu_attention(q, k, v, offsets)` is the jagged reference: inside each sequence,
# $o_i = \sum_{j \le i} \mathrm{SiLU}(\langle q_i, k_j\rangle + \mathrm{rab}_{ij})/n \; v_j$. The padded version runs the same
# formula on $(B, N, H, d)$ with masks. They must agree, and both must equal an explicit loop over the sequences
# (checked here in float64 on a real batch's lengths; the tests do it to 1e-8 with gradients):

# %% tags=["nbval-check-output"]
batch = next(iter(ds.loader("train", 16)))
lens, offs = batch.lengths, batch.offsets
T, H, dqk, dv = batch.num_tokens, 2, 8, 6
g = torch.Generator().manual_seed(0)
q, k = torch.randn(T, H, dqk, generator=g, dtype=torch.float64), torch.randn(T, H, dqk, generator=g, dtype=torch.float64)
v = torch.randn(T, H, dv, generator=g, dtype=torch.float64)
N = batch.max_len
rab = torch.randn(len(lens), N, N, generator=g, dtype=torch.float64)  # (B, N, N)

jagged = hstu_attention(q, k, v, offs, rab=rab, norm=N + 11)  # (T, H, dv)
padded = padded_hstu_attention(*(jagged_to_padded(t, offs, N) for t in (q, k, v)), lens, rab=rab, norm=N + 11)  # (B, N, H, dv)
loop = []
for b in range(len(lens)):  # one sequence at a time, no padding at all
    s, e = offs[b].item(), offs[b + 1].item()
    L = e - s
    scores = torch.einsum("ihd,jhd->hij", q[s:e], k[s:e]) + rab[b, :L, :L]  # (H, L, L)
    A = torch.nn.functional.silu(scores) * torch.ones(L, L, dtype=torch.bool).tril() / (N + 11)
    loop.append(torch.einsum("hij,jhd->ihd", A, v[s:e]))  # (L, H, dv)
loop = torch.cat(loop)
# float64 sums in a different order differ by round-off (~1e-16): compare against a tolerance, not for equality
print("jagged == loop   (max |diff| < 1e-12):", (jagged - loop).abs().max().item() < 1e-12)
print("padded == jagged (max |diff| < 1e-12):", (padded_to_jagged(padded, offs) - jagged).abs().max().item() < 1e-12)
print("padding rows of the padded output are zero:", bool((padded * ~batch.mask()[:, :, None, None]).abs().max() == 0))

# %% [markdown]
# ## 4. Time and memory on this machine
#
# Three ways to run the same attention on one training batch: padded to the window $N$ (what the reference
# trainer does), padded to the batch's longest history, and a loop over the sequences (truly jagged, no padding,
# but one small computation per user: Python overhead and tiny matrix products). The memory column is the size of
# the score tensor each needs ($B \cdot H \cdot N^2$ against $\sum_b H L_b^2$ values). A fused jagged kernel (notebook
# 05) gets the jagged FLOPs *and* the large-matrix speed.

# %%
batch = next(iter(ds.loader("train", preset.batch_size)))
lens, offs, T = batch.lengths, batch.offsets, batch.num_tokens
H, d = 1, 50
q, k, v = (torch.randn(T, H, d) for _ in range(3))  # (T, H, d), float32


def bench(fn, reps=5):
    fn()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def padded_to(n):
    return lambda: padded_hstu_attention(*(jagged_to_padded(t, offs, n) for t in (q, k, v)), lens, norm=211.0)


def per_sequence():
    out = []
    for b in range(len(lens)):
        s, e = offs[b].item(), offs[b + 1].item()
        A = torch.nn.functional.silu(torch.einsum("ihd,jhd->hij", q[s:e], k[s:e])).tril() / 211.0  # (H, L, L)
        out.append(torch.einsum("hij,jhd->ihd", A, v[s:e]))
    return torch.cat(out)


B, N_window, N_longest = len(lens), batch.max_len, int(lens.max())
rows = [("padded to the window", padded_to(N_window), B * H * N_window**2),
        ("padded to the longest", padded_to(N_longest), B * H * N_longest**2),
        ("jagged: loop over sequences", per_sequence, H * (lens.double() ** 2).sum().item())]
print(f"B={B}, T={T}, window N={N_window}, longest {N_longest}, {torch.get_num_threads()} CPU threads")
print(f"{'method':<30}{'time':>10}{'score tensor MiB':>18}")
for name, fn, n_scores in rows:
    print(f"{name:<30}{bench(fn) * 1e3:>8.1f} ms{n_scores * 4 / 2**20:>18.2f}")

# %% [markdown]
# ## Summary
#
# * A jagged tensor is `values (T, ...)` + `offsets (B+1,)`; `lengths_to_offsets`, `jagged_to_padded`,
#   `padded_to_jagged`, `dense_to_jagged`, `jagged_positions` and `next_timestamps` convert between views
#   with one gather or scatter, no loop over sequences.
# * Padding to the window costs the share of tokens and of attention scores measured in section 1: the more the
#   histories fall short of the window, the larger it is, and the scores waste more than the tokens.
# * Jagged attention = padded attention with masks = a loop over sequences (to float64 round-off).
# * The PyTorch model pads once per batch (to the window, so no host synchronisation), keeps its linear layers on
#   the $T$ real tokens, and runs attention padded; the Triton kernel (notebook 05) runs attention jagged.
#
# Next: **05 · Triton kernels**.
