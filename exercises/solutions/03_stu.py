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
# # Exercises 03: the STU layer
#
# Companion of [`notebooks/03_stu_layer`](../notebooks/03_stu_layer.ipynb). The Sequential Transduction Unit
# replaces a Transformer block (attention **and** feed-forward network) with one layer of four projections,
# pointwise attention and a gate (paper eqs. 1-3). As the reference implementation trains it, on jagged
# `x (T, D)`:
#
# $$x_n = \mathrm{LayerNorm}(x) \qquad \text{(no learnable scale or shift, } \epsilon = 10^{-6})$$
# $$u, v, q, k = \mathrm{split}\big(\mathrm{SiLU}(x_n W_{uvqk})\big) \qquad W_{uvqk} \in \mathbb{R}^{D \times (2 H d_v + 2 H d_{qk})}, \text{ columns in the order } u, v, q, k$$
# $$A v = \text{HSTU attention}(q, k, v; \mathrm{rab}, n) \qquad \text{(exercise 02, per head)}$$
# $$o = u \odot \mathrm{LayerNorm}(A v) \qquad \text{(normalised over all heads jointly, } H d_v)$$
# $$\mathrm{out} = x + o\, W_o^\top + b_o \qquad \text{(dropout on } o \text{ in training; none here)}$$
#
# The gate $u$ plays the FFN's role: an elementwise, data-dependent scaling of what attention brought in.
#
# Write `stu_forward(x, offsets, w_uvqk, w_o, b_o, num_heads, dqk, dv, n, rab=None)`. Use the package's jagged
# attention for the middle step (you wrote it in exercises 02 and 04):
# `ops.hstu_attention(q, k, v, offsets, rab=rab, norm=n)` with q, k `(T, H, dqk)`, v `(T, H, dv)`.
# The check runs random batches (length 1, several heads, `dqk != dv`, with and without a bias), compares with
# the package's `STULayer`, and also compares gradients. Unsolved, it prints *not attempted yet*.
#
# > **中文摘要**：你要写 STU 层的前向 `stu_forward`：LayerNorm，一次投影并经 SiLU 后切分为 u、v、q、k，逐点注意力，
# > 门控 u * LayerNorm(AV)，输出投影与残差。检查把它与包中的 `STULayer` 对比，输出和梯度都比较。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/03_stu.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import torch
import torch.nn.functional as F

import hstu_tutorial
from hstu_tutorial import checks, ops
from hstu_tutorial.data import get_reco_dataset
from hstu_tutorial.modules import hstu_encoder

preset = hstu_tutorial.get_preset()
torch.manual_seed(0);


# %%
def stu_forward(x, offsets, w_uvqk, w_o, b_o, num_heads, dqk, dv, n, rab=None):
    """One STU layer, eval mode. x (T, D) jagged with offsets (B+1,) -> (T, D)."""
    # BEGIN SOLUTION
    T, D = x.shape
    H = num_heads
    x_n = F.layer_norm(x, (D,), eps=1e-6)                                  # (T, D), no affine
    u, v, q, k = torch.split(F.silu(x_n @ w_uvqk), [H * dv, H * dv, H * dqk, H * dqk], dim=-1)
    av = ops.hstu_attention(q.reshape(T, H, dqk), k.reshape(T, H, dqk), v.reshape(T, H, dv),
                            offsets, rab=rab, norm=n)                      # (T, H, dv)
    o = u * F.layer_norm(av.reshape(T, H * dv), (H * dv,), eps=1e-6)       # (T, H*dv), all heads jointly
    return x + o @ w_o.t() + b_o                                           # (T, D)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_stu_forward(stu_forward)

# %% [markdown]
# <details><summary>Hint 1 (the projections)</summary>
#
# `F.layer_norm(x, (D,), eps=1e-6)` has no weights unless you pass them. One matrix product gives all four
# projections; `torch.split(..., [H*dv, H*dv, H*dqk, H*dqk], dim=-1)` cuts them in the order u, v, q, k, and
# SiLU applies to all four.
# </details>
#
# <details><summary>Hint 2 (the attention)</summary>
#
# Reshape q, k to `(T, H, dqk)` and v to `(T, H, dv)` for `ops.hstu_attention`; reshape its `(T, H, dv)` result
# back to `(T, H*dv)`.
# </details>
#
# <details><summary>Hint 3 (the output)</summary>
#
# LayerNorm over the last dimension of the `(T, H*dv)` tensor (all heads together, not per head), multiply by
# u, project with `o @ w_o.t() + b_o` (that is `nn.Linear`), and add the input x back.
# </details>

# %% [markdown]
# ## Use it: one layer of a real encoder on a real batch
#
# `hstu_encoder` builds the model trained in notebook 06; its first STU layer holds the weights. With
# `use_mine = True` your function runs on the same input with those weights (and the layer's relative
# attention bias) and is compared with the layer itself.

# %%
use_mine = False  # set to True once check_stu_forward passes

dataset = get_reco_dataset(preset.dataset, max_seq_len=preset.max_seq_len, verbose=False)
batch = next(iter(dataset.loader("train", batch_size=16)))
model = hstu_encoder(dataset.num_items, num_blocks=2, num_heads=2, dqk=25, dv=25,
                     max_seq_len=preset.max_seq_len).eval()
layer = model.blocks[0]
layout = model.layout(batch)
with torch.no_grad():
    x = model.preprocessor(batch.item_ids, batch.offsets)          # (T, D) item + position embeddings
    u, v, q, k = layer.split_uvqk(x)
    out = layer(x, layout)                                         # (T, D)
    rab = layer.rab.from_buckets(layout.buckets)                   # (B, N, N) the layer's bias
    if use_mine:
        mine = stu_forward(x, batch.offsets, layer.uvqk, layer.o.weight, layer.o.bias, layer.num_heads,
                           layer.dqk, layer.dv, layer.norm, rab=rab)
        print(f"max |yours - STULayer| = {(mine - out).abs().max().item():.1e}")
print(f"x {tuple(x.shape)}  u {tuple(u.shape)}  v {tuple(v.shape)}  q {tuple(q.shape)}  k {tuple(k.shape)}"
      f"  rab {tuple(rab.shape)}  out {tuple(out.shape)}")

# %% tags=["nbval-check-output"]
# parameters of one STU layer against a Transformer block with the same D, H, d (FFN hidden 4D)
D, H, d = model.embedding_dim, layer.num_heads, layer.dv
stu_params = D * 2 * H * (layer.dv + layer.dqk) + (H * d * D + D)
transformer = 4 * (D * H * d + H * d) + 2 * (D * 4 * D) + 4 * D + D + 2 * 2 * D
print(f"D={D}, H={H}, d={d}: STU layer {stu_params:,} weights (+ bias tables), "
      f"Transformer block {transformer:,}")

# %% [markdown]
# ## What you built
#
# The whole STU layer: one projection into four signals, pointwise attention, a LayerNorm over all heads, a gate
# and a residual. Stacking such layers (plus input embeddings and an L2-normalised output) is the HSTU
# encoder. Next: exercise 04 (jagged tensors) or 06 (training).
