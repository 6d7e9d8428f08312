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
# # Exercises 00: a PyTorch warm-up
#
# Four small exercises on the PyTorch the rest of the course leans on: **broadcasting** (every attention
# score is a broadcast product), **masking** (causal and padding masks before a softmax), **autograd**
# (where gradients come from, and why they must be cleared), and **a training loop** (the ten lines every
# trainer grows from). Each check runs your function on its own seeded inputs, compares with a reference and
# names the usual mistake when it sees one; it never reads what you print.
#
# Do them before exercise 01 if PyTorch is new to you; they take minutes each on a laptop CPU.
#
# > **中文摘要**：PyTorch 热身：广播（两批向量的全部两两得分）、掩码（因果 + 填充，softmax 前后不产生 NaN）、
# > 自动求导（每个 batch 单独的梯度，清零与累加）、以及一个十行的训练循环。每个检查用自己的随机数据运行你的函数，
# > 并指出常见错误。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/00_pytorch.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import math

import torch
import torch.nn.functional as F

from hstu_tutorial import checks

torch.manual_seed(0);


# %% [markdown]
# ## 1. Broadcasting: all pairwise scores
#
# Attention compares every query with every key. For a batch of $B$ sequences, $x$ of shape `(B, N, D)` and
# $y$ of shape `(B, M, D)`, the scaled scores are
#
# $$s_{bij} = \frac{\langle x_{bi}, y_{bj}\rangle}{\sqrt D}, \qquad s \in \mathbb R^{B \times N \times M}.$$
#
# Two tensors broadcast when, aligned from the right, each pair of sizes is equal or one of them is 1:
# `x[:, :, None, :]` is `(B, N, 1, D)`, `y[:, None, :, :]` is `(B, 1, M, D)`, their product is
# `(B, N, M, D)`. A matrix product or `torch.einsum` gets there without the big intermediate.
#
# Write `pairwise_scores(x, y)` → `(B, N, M)`. $N$ and $M$ may differ.

# %%
def pairwise_scores(x, y):
    """All scaled dot products <x[b, i], y[b, j]> / sqrt(D): (B, N, D), (B, M, D) -> (B, N, M)."""
    # BEGIN SOLUTION
    return x @ y.transpose(1, 2) / math.sqrt(x.shape[-1])  # (B, N, M)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_pairwise_scores(pairwise_scores)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `y.transpose(1, 2)` is `(B, D, M)`; `x @ y.transpose(1, 2)` multiplies `(N, D)` by `(D, M)` for every $b$.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The same with einsum: `torch.einsum("bnd,bmd->bnm", x, y)`; the letter that disappears (`d`) is summed.
# The scale is the embedding width, `x.shape[-1]`, not a sequence length.
# </details>

# %% [markdown]
# ## 2. Masking: causal and padding
#
# A padded batch holds $B$ histories of different lengths in one `(B, N)` grid; position $i$ of sequence
# $b$ is real when $i < \mathrm{lengths}_b$. In causal attention position $i$ may look at $j$ only when both
# are real and $j \le i$ (itself and its past). Masked entries must weigh nothing: fill them with $-\infty$
# before the softmax ($e^{-\infty} = 0$).
#
# One trap: a row where **every** entry is masked (a padding row, or an empty history) becomes
# $\mathrm{softmax}(-\infty, \dots, -\infty) = 0/0 =$ NaN, and one NaN spreads through everything it touches.
# Such a row must come out as zeros.
#
# Write `masked_softmax(scores, lengths)`: scores `(B, N, N)`, lengths `(B,)` → weights `(B, N, N)`, a
# softmax over $j$ of the allowed entries of each row, 0 elsewhere.

# %%
def masked_softmax(scores, lengths):
    """Softmax over j of scores[b, i, j] where i, j < lengths[b] and j <= i; 0 elsewhere (no NaN)."""
    # BEGIN SOLUTION
    N = scores.shape[-1]
    pos = torch.arange(N)
    real = pos[None, :] < lengths[:, None]                              # (B, N)
    causal = pos[None, :] <= pos[:, None]                               # (N, N): j <= i
    keep = real[:, :, None] & real[:, None, :] & causal                 # (B, N, N)
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    return torch.where(keep, weights, 0.0)                              # NaN rows -> 0
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_masked_softmax(masked_softmax)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `pos = torch.arange(N)`; `pos[None, :] < lengths[:, None]` is `(B, N)`: True at real positions.
# `pos[None, :] <= pos[:, None]` is `(N, N)`: row $i$, column $j$, True where $j \le i$.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Combine with `&` after adding the missing axes (`real[:, :, None] & real[:, None, :] & causal`). Fill with
# `masked_fill(~keep, float("-inf"))`, take the softmax, then `torch.where(keep, weights, 0.0)` replaces the
# NaN of the rows that had nothing left.
# </details>

# %% [markdown]
# ## 3. Autograd: one gradient per batch
#
# `loss.backward()` computes $\partial \mathrm{loss} / \partial w$ for every tensor $w$ with
# `requires_grad=True` and **adds** it into `w.grad`. Adding is what gradient accumulation uses on purpose;
# everywhere else `w.grad` must be cleared first (`model.zero_grad()`), or the previous batch's gradient
# rides along. Two other ways to lose a gradient: computing the loss under `torch.no_grad()` or from a
# `.detach()`-ed tensor (the graph is cut), and changing a leaf tensor in place (`w += ...`), which autograd
# refuses.
#
# For a linear model $\hat y = x W^\top + b$ and the loss $\frac1M \sum_m (\hat y_m - y_m)^2$ the gradient is
# $\frac2M (\hat y - y)^\top x$; the check compares yours with that formula.
#
# Write `batch_gradients(model, batches)`: model a `torch.nn.Linear(D, 1)`, batches a list of `(x, y)` with
# x `(M, D)`, y `(M,)` → a list with one `(1, D)` tensor per batch, the gradient of that batch's loss with
# respect to `model.weight`, computed with `backward()`. Leave the weights unchanged. The model may arrive
# with a gradient already in `model.weight.grad`.

# %%
def batch_gradients(model, batches):
    """Per batch, d mean((model(x)[:, 0] - y)^2) / d model.weight, each from its own backward(): [(1, D)]."""
    # BEGIN SOLUTION
    grads = []
    for x, y in batches:
        model.zero_grad()                                               # backward() adds into .grad
        loss = ((model(x)[:, 0] - y) ** 2).mean()
        loss.backward()
        grads.append(model.weight.grad.clone())                         # .grad is reused: copy it
    return grads
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_batch_gradients(batch_gradients)

# %% [markdown]
# <details><summary>Hint</summary>
#
# In the loop: `model.zero_grad()`, the loss, `loss.backward()`, then `model.weight.grad.clone()` (without
# the clone every list entry is the same tensor, which the next backward overwrites).
# </details>

# %% [markdown]
# ## 4. A training loop
#
# Every trainer in this course, the big one included, is this loop: put the model in train mode, then per
# step compute the loss, clear the old gradients, `backward()`, `optimizer.step()`.
#
# Write `fit(model, x, y)`: train `model` (a small MLP with dropout, handed to you in **eval** mode, as after
# an evaluation) in place on x `(256, 4)`, y `(256, 1)` with the mean squared error. The check measures the
# loss itself afterwards, in eval mode, on its own seeded data; it must fall below
# `checks.pytorch_basics.LOOP_THRESHOLD`. It also watches the loop: that dropout was on, that gradients did
# not pile up from step to step, that the weights moved downhill.

# %%
def fit(model, x, y):
    """Train `model` in place on (x, y) with the mean squared error."""
    # BEGIN SOLUTION
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()                                                       # dropout on while training
    for _ in range(300):
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_training_loop(fit)

# %% [markdown]
# <details><summary>Hint</summary>
#
# `optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)`, `model.train()`, then 300 times:
# `loss = F.mse_loss(model(x), y)`, `optimizer.zero_grad()`, `loss.backward()`, `optimizer.step()`.
# </details>

# %% [markdown]
# ## What you built
#
# The four moves behind every later notebook: scores by broadcasting (notebook 02's attention), masks that
# never leak the future or the padding and never give NaN (notebooks 02 and 04), gradients you can trust
# (notebook 03 checks its layer's backward the same way), and the loop the trainer of notebook 06 runs,
# made fast.
