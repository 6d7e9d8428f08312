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
# # 02 · Attention math: softmax attention vs HSTU's pointwise attention
#
# A Transformer (and SASRec, the Transformer recommender HSTU is compared with) mixes a history with
# **softmax attention**. HSTU (Zhai et al., ICML 2024, §3.1) replaces it with **pointwise** attention, the
# paper's eq. 2 $A(X)V(X) = \phi_2\big(Q(X)K(X)^\top + \mathrm{rab}^{p,t}\big)V(X)$ with $\phi_2 = \mathrm{SiLU}$;
# the division by a constant $n$ below is not in the paper but comes from its official research code, which
# this package follows:
#
# $$\text{softmax:}\quad o_i = \sum_{j \le i} \frac{\exp(\langle q_i, k_j\rangle / \sqrt{d})}{\sum_{j' \le i} \exp(\langle q_i, k_{j'}\rangle/\sqrt{d})}\, v_j
# \qquad\qquad
# \text{HSTU:}\quad o_i = \sum_{j \le i} \frac{\mathrm{SiLU}\big(\langle q_i, k_j\rangle + \mathrm{rab}^{p,t}_{ij}\big)}{n}\, v_j$$
#
# Three differences, each taken in turn below with the package's code (`hstu_tutorial.ops.hstu_attention`):
#
# 1. **no softmax**: each weight depends on its own score only, nothing normalises a row to 1;
# 2. **a constant divisor $n$** instead of the row sum (the reference uses $n$ = max_seq_len + 11 = 211 on ML-1M);
# 3. **a relative attention bias** $\mathrm{rab}^{p,t}$ from the *position* offset and the *time gap*.
#
# At the end: attention maps of a trained HSTU for a real user, with the movie titles on the axes.
#
# > **中文摘要**：对比 softmax 注意力与 HSTU 的逐点注意力 SiLU(⟨q, k⟩ + rab) / n：为什么去掉 softmax（偏好强度得以保留）、
# > 常数除数 n 的作用、由位置差与时间分桶组成的相对注意力偏置，最后看训练后模型对真实用户的注意力图。
# > 动手部分在练习 `exercises/02_attention`。

# %%
import math

import torch
import torch.nn.functional as F

import hstu_tutorial
from hstu_tutorial import viz
from hstu_tutorial.ops import (RelativeAttentionBias, hstu_attention, jagged_to_padded, next_timestamps,
                               softmax_attention, time_bucket)
from hstu_tutorial.train import load_config, train
from hstu_tutorial.training.report import plural
from IPython.display import Markdown, display

preset = hstu_tutorial.get_preset()
torch.manual_seed(0)
# The model trained at the end of this notebook: a small HSTU on synthetic data (small), the paper's ML-1M HSTU
# for one epoch on a CPU with MovieLens on disk (real-cpu, about two minutes), and for 10 epochs on a GPU (full).
CONFIG = preset.pick("synthetic/hstu-small", "ml-1m/hstu-sampled-softmax-n128-final", "ml-1m/hstu-sampled-softmax-n128-final")
EPOCHS = preset.pick(2, 1, 10)
cfg = load_config(CONFIG)
ds = preset.load_dataset(protocol=cfg.protocol, verbose=False)
print(f"This notebook runs on: {viz.dataset_label(ds)}")

# %% [markdown]
# ## 1. Softmax attention, from the formula
#
# One sequence of $L = 6$ items, $d = 4$. Scores $s_{ij} = \langle q_i, k_j\rangle/\sqrt d$; the causal mask
# keeps $j \le i$ (an item may only look at the past); the softmax turns each row into weights that sum to 1.

# %%
L, d = 6, 4
q, k, v = torch.randn(L, d), torch.randn(L, d), torch.randn(L, d)  # (L, d) each
scores = q @ k.T / math.sqrt(d)  # (L, L)
causal = torch.ones(L, L, dtype=torch.bool).tril()  # (L, L): True where j <= i
weights_softmax = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)  # (L, L)
out_softmax = weights_softmax @ v  # (L, d)

# The package's jagged version takes (T, H, d) plus offsets; one sequence, one head here.
offsets = torch.tensor([0, L])
torch.testing.assert_close(softmax_attention(q[:, None], k[:, None], v[:, None], offsets)[:, 0], out_softmax)
print("row sums of the softmax weights:", weights_softmax.sum(-1).tolist())

# %% [markdown]
# ## 2. HSTU's pointwise attention
#
# Same $q, k, v$. No $1/\sqrt d$ (the reference does not scale), a SiLU on every score, a fixed divisor $n$:
#
# $$A_{ij} = \frac{\mathrm{SiLU}(\langle q_i, k_j\rangle)}{n}\ \ (j \le i), \qquad \mathrm{SiLU}(x) = x\,\sigma(x).$$
#
# SiLU is close to $x$ for large positive scores, close to 0 for negative ones, and dips to $-0.28$ in
# between: a weight can be slightly **negative**, and the row sums are whatever the scores make them.

# %%
n = 211  # the reference's constant on ML-1M: max_seq_len (200) + 10 + 1
weights_hstu = F.silu(q @ k.T) * causal / n  # (L, L)
out_hstu = weights_hstu @ v  # (L, d)
torch.testing.assert_close(hstu_attention(q[:, None], k[:, None], v[:, None], offsets, norm=n)[:, 0], out_hstu)
print("row sums of the HSTU weights (x n):", [round(x, 3) for x in (weights_hstu.sum(-1) * n).tolist()])

# %% [markdown]
# ### Why drop the softmax? What reaches the next layer
#
# The paper's argument (§3.1): the softmax normalises *across* the history, so it can express *which* past
# items matter but not *how much* evidence there is. Take a query and a history that holds $m$ items matching it
# (score 8) among 20 unrelated ones (score 0). Softmax attention returns the same output whatever $m$ is (one
# strong match already takes all the weight); the pointwise row $AV$ grows with $m$.
#
# But $AV$ is not what the next layer sees. The STU layer (notebook 03) passes on $o = u \odot
# \mathrm{LayerNorm}(AV)$, and a LayerNorm divides by the row's own scale. The second cell below follows $AV$
# through that norm, with the STU's settings (no scale or shift, eps $10^{-6}$, over all heads jointly).

# %% tags=["nbval-check-output"]
d = 8
query = torch.ones(d) / math.sqrt(d)  # (d,) unit vector
match = torch.ones(d) / math.sqrt(d) * 8.0  # (d,): <query, match> = 8, a strong match
other = torch.zeros(d)  # (d,): <query, other> = 0
value_match, value_other = torch.ones(d), torch.zeros(d)  # every output coordinate = sum of the match weights
soft_out, hstu_out = {}, {}
print(f"{'matching items m':>17} | {'softmax output':>14} | {'HSTU output x n':>15}")
for m in (1, 2, 5, 10, 20):
    keys = torch.stack([match] * m + [other] * 20)  # (m + 20, d)
    values = torch.stack([value_match] * m + [value_other] * 20)  # (m + 20, d)
    s = keys @ query  # (m + 20,)
    soft_out[m] = (torch.softmax(s, 0) @ values)[0].item()  # one coordinate of the (d,) output
    hstu_out[m] = (F.silu(s) @ values)[0].item()  # the same, before the 1/n
    print(f"{m:>17} | {soft_out[m]:>14.2f} | {hstu_out[m]:>15.0f}")
silu8 = F.silu(torch.tensor(8.0)).item()
print("softmax output stays at most 1 for every m:", all(x <= 1 + 1e-6 for x in soft_out.values()))
print("HSTU output = m * SiLU(8) for every m (rel. tol 1e-5):",
      all(math.isclose(x, m * silu8, rel_tol=1e-5) for m, x in hstu_out.items()))

# %%
# What the next layer receives is o = u * LayerNorm(AV), the norm taken over all heads together (notebook 03).
torch.manual_seed(0)
dv, n = 8, 211
v_match = torch.randn(dv)
v_match -= v_match.mean()  # (dv,) value of a matching item (zero mean: the per-head norms below stay exact)
v_other = torch.randn(dv)
v_other -= v_other.mean()  # (dv,) value of an unrelated item
u_gate = torch.rand(2 * dv) + 0.5  # (2 dv,) a fixed gate u for two heads


def layer_norm(x):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6)  # as the STU: no scale or shift, eps 1e-6


def one_head(m, unrelated, score=8.0):
    """One query's (dv,) rows, pointwise (before LayerNorm) and softmax: m matches among `unrelated` others."""
    s = torch.tensor([score] * m + [0.0] * unrelated)  # (m + unrelated,) scores
    values = torch.stack([v_match] * m + [v_other] * unrelated)  # (m + unrelated, dv)
    return F.silu(s) @ values / n, torch.softmax(s, 0) @ values


# (a) the overall scale: both heads see m matches among 20 unrelated items
ln_by_m = {m: layer_norm(torch.cat([one_head(m, 20)[0]] * 2)) for m in range(1, 21)}  # m -> (2 dv,)
raw_by_m = {m: torch.cat([one_head(m, 20)[0]] * 2).norm().item() for m in (1, 20)}
scale_gap = max((ln_by_m[m] - ln_by_m[1]).abs().max().item() for m in ln_by_m)
print(f"(a) |AV| grows {raw_by_m[20] / raw_by_m[1]:.0f}x from m=1 to m=20; LN(AV) moves by at most {scale_gap:.0e}")

# (b) unrelated items: one weaker match (score 2) among 0, 10 or 100 unrelated items
print("(b) unrelated | softmax weight on the match | cos(LN(out), LN(v_match)): softmax  pointwise")
cos = lambda a, b: F.cosine_similarity(layer_norm(a), layer_norm(b), dim=0).item()
dilution = {}
for unrelated in (0, 10, 100):
    pointwise, soft = one_head(1, unrelated, score=2.0)
    weight = math.exp(2) / (math.exp(2) + unrelated)
    dilution[unrelated] = (weight, cos(soft, v_match), cos(pointwise, v_match))
    print(f"    {unrelated:>9} | {weight:>26.2f} | {dilution[unrelated][1]:>28.2f} {dilution[unrelated][2]:>10.2f}")

# (c) two heads, each with its own number of matches: the ratio of the heads' norms after the joint LN
print("(c) matches (head 1, head 2) | |LN(AV)| head 1 / head 2 | o = u * LN(AV), first 3 coordinates")
outs = {}
for m1, m2 in ((1, 4), (5, 20), (4, 1), (2, 2)):
    o = u_gate * layer_norm(torch.cat([one_head(m1, 20)[0], one_head(m2, 20)[0]]))  # (2 dv,)
    ratio = o[:dv].div(u_gate[:dv]).norm() / o[dv:].div(u_gate[dv:]).norm()
    outs[(m1, m2)] = (ratio.item(), o)
    print(f"    {str((m1, m2)):>24} | {ratio.item():>24.2f} | {[round(x, 2) for x in o[:3].tolist()]}")
same_o = torch.allclose(outs[(1, 4)][1], outs[(5, 20)][1], atol=1e-3)
print("o for (1, 4) matches = o for (5, 20) matches (abs. tol 1e-3):", same_o)

display(Markdown(
    f"What survives $o = u \\odot \\mathrm{{LayerNorm}}(AV)$, measured above:\n\n"
    f"* **the overall scale does not**: $|AV|$ grows {raw_by_m[20] / raw_by_m[1]:.0f}x from 1 to 20 matches, "
    f"LayerNorm($AV$) moves by at most {scale_gap:.0e} (the eps of the norm). Counting matching items, the "
    "intensity argument of the paper, does not reach the next layer through one head's scale;\n"
    f"* **unrelated items do not dilute the row**: they add SiLU(0) = 0. With 100 unrelated items the softmax puts "
    f"{dilution[100][0]:.0%} of its weight on the one match and its normalised output keeps a cosine of "
    f"{dilution[100][1]:.2f} with the match's value; the pointwise row keeps {dilution[100][2]:.2f}. The softmax "
    "is what mixes in the rest of the history;\n"
    f"* **magnitudes across heads survive**: the norm is joint, so a head with 1 match next to a head with 4 "
    f"comes out at {outs[(1, 4)][0]:.2f} of the other's size, and (5, 20) gives the same output as (1, 4): "
    "relative evidence between heads is kept, absolute evidence is not."
))

# %% [markdown]
# ### The divisor $n$
#
# The paper's eq. 2 is $A(X)V(X) = \phi_2\big(Q(X)K(X)^\top + \mathrm{rab}^{p,t}\big)V(X)$: no divisor. The
# $1/n$ comes from the research code that reproduces the paper's public-dataset results
# (facebookresearch/generative-recommenders, `generative_recommenders/research/modeling/sequential/hstu.py`,
# function `_hstu_attention_maybe_from_cache`): it sets `n = invalid_attn_mask.size(-1)`, the padded width of the
# batch, and computes `F.silu(qk_attn) / n`. The mask is built in `HSTU.__init__` with side
# `max_sequence_len + max_output_len`, and the trainer (`research/trainer/train.py`) passes
# `max_output_len = gr_output_length + 1` = 11: so $n$ = 200 + 11 = 211 on ML-1M, whatever the user's length.
# The package follows the code: `hstu_encoder(..., norm=None)` means max_seq_len + 11 (`hstu_attention` alone
# defaults `norm` to the longest length in the batch, as a generic kernel would).
#
# A constant divisor is a pure scale (the cell below), and the LayerNorm that follows removes any scale (the
# cells above): $n$ matters for the size of the numbers inside the layer (and so for bf16 and the gradients),
# not for what the next layer receives.

# %% tags=["nbval-check-output"]
q2, k2, v2 = (torch.randn(10, 1, 4) for _ in range(3))  # one sequence of 10, (T, H, d)
offs = torch.tensor([0, 10])
a = hstu_attention(q2, k2, v2, offs, norm=211.0)
b = hstu_attention(q2, k2, v2, offs)  # default: n = longest length in the batch (10)
print("output(n=10) = output(n=211) * 211 / 10 (rel. tol 1e-4): a pure scale:",
      torch.allclose(b, a * 211 / 10, rtol=1e-4, atol=1e-6))

# %% [markdown]
# ## 3. The relative attention bias: positions and time
#
# HSTU adds to every score a learned bias that depends on **how far apart** two items are in the sequence and
# **how much time** separates them (one module per layer, shared by the heads):
#
# $$\mathrm{rab}_{ij} = w^{p}_{\,N-1+j-i} + w^{t}_{\,\mathrm{bucket}(t_{i+1} - t_j)}, \qquad
# \mathrm{bucket}(\Delta) = \mathrm{clamp}\Big(\Big\lfloor \frac{\ln \max(|\Delta|, 1)}{0.301} \Big\rfloor, 0, 128\Big)$$
#
# with $N = 211$, $w^p$ of $2N-1$ entries, $w^t$ of 129. Two details worth noticing:
#
# * **log buckets**: 0.301 ≈ log₁₀ 2, so a bucket spans a factor $e^{0.301} \approx 1.35$ in time: seconds, hours and
#   years each get their own handful of buckets with only 129 parameters;
# * **the next item's time**: query row $i$ measures gaps from $t_{i+1}$, the timestamp of the item it is about to
#   predict (the target's, for the last row). Its own time would say nothing about *when* the prediction is for.

# %%
fig, data = viz.plot_time_buckets()
print({g: int(time_bucket(torch.tensor([g]))) for g in (1, 60, 3600, 86400, 86400 * 365)})

# %% [markdown]
# For a real user of the dataset: jagged timestamps, the next-item timestamps (a shift by one, the target's at
# the end), and the bias matrix of a freshly initialised module ($w \sim \mathcal N(0, 0.02^2)$).

# %%
batch = next(iter(ds.loader("test", 8)))  # a JaggedBatch: (T,) values + offsets (B+1,)
b0 = 0
s, e = batch.offsets[b0].item(), batch.offsets[b0 + 1].item()
nts = next_timestamps(batch)  # (T,)
print("user", batch.user_ids[b0].item(), "| history length", e - s)
print("timestamps      (last 4):", batch.timestamps[e - 4:e].tolist())
print("next timestamps (last 4):", nts[e - 4:e].tolist(), "<- ends with the target's", batch.target_timestamps[b0].item())

rab_module = RelativeAttentionBias(max_len=ds.max_seq_len + 11)
N = batch.max_len
rab = rab_module(jagged_to_padded(batch.timestamps, batch.offsets, N), jagged_to_padded(nts, batch.offsets, N))  # (B, N, N)
L0 = min(e - s, 16)
fig, _ = viz.plot_attention_map(rab[b0, :L0, :L0].detach(), title=f"rab for user {batch.user_ids[b0].item()} (first {L0} items, untrained)")

# %% [markdown]
# ## 4. Side by side on the same inputs
#
# The same $q, k, v$ of one user, taken from an HSTU layer (untrained here), go through both formulas. Softmax
# rows each sum to 1 and spread weight over the whole past; SiLU weights are independent, can be negative, and
# their scale follows the scores.

# %%
from hstu_tutorial.modules import hstu_encoder

model0 = hstu_encoder(ds.num_items, embedding_dim=cfg.embedding_dim, dqk=cfg.dqk, dv=cfg.dv, max_seq_len=cfg.max_seq_len).eval()
L1 = min(e - s, 12)
with torch.no_grad():
    x0 = model0.preprocessor(batch.item_ids[s:s + L1], torch.tensor([0, L1]))  # (L1, D)
    u, v1, q1, k1 = model0.blocks[0].split_uvqk(x0)  # (L1, H*dv), ..., (L1, H*dqk)
    offs1 = torch.tensor([0, L1])
    causal1 = torch.ones(L1, L1, dtype=torch.bool).tril()
    w_soft = torch.softmax((q1 @ k1.T / math.sqrt(q1.shape[-1])).masked_fill(~causal1, float("-inf")), -1)  # (L1, L1)
    w_hstu = F.silu(q1 @ k1.T) * causal1 / model0.norm  # (L1, L1)
    torch.testing.assert_close(w_hstu @ v1, hstu_attention(q1[:, None], k1[:, None], v1[:, None], offs1, norm=model0.norm)[:, 0])
titles = [ds.item_titles.get(int(i), str(int(i))) for i in batch.item_ids[s:s + L1]]
titles = [t if len(t) <= 18 else t[:17] + "…" for t in titles]  # short axis labels
fig1, _ = viz.plot_attention_map(w_soft, titles, "softmax weights (rows sum to 1)", diverging=False)
fig2, _ = viz.plot_attention_map(w_hstu * model0.norm, titles, "HSTU weights x n (pointwise SiLU)")

# %% [markdown]
# ## 5. Attention maps of a trained HSTU, for a real user
#
# Now train the model of `CONFIG` for a few epochs with the package's trainer (notebook 06 explains it) and look
# at what its layers attend to. In the small preset this is a synthetic MovieLens look-alike (its "titles" are
# generated); on a GPU it is MovieLens-1M with real titles. Rows are the items the model is reading (queries),
# columns the earlier items it attends to; red is positive weight, blue negative.

# %%
results = train(CONFIG, dataset=ds, num_epochs=EPOCHS, verbose=False)
model = results["trainer"].model.cpu().eval()
print(f"trained {plural(results['epochs_run'], 'epoch')} on {ds.name}")
user_batch = next(iter(ds.loader("test", 16)))  # histories ending just before each user's test item
fig, maps = viz.plot_attention_maps(model, user_batch, user_index=0, item_titles=ds.item_titles, max_items=16)
print("maps (layers, heads, queries, keys):", maps["maps"].shape, "| user", maps["user_id"])

# %% [markdown]
# ### The fully trained HSTU on MovieLens-1M
#
# The model above trained for a few epochs. The maps below are the paper's ML-1M HSTU after the full recipe
# (101 epochs, seed 42) for three real users, over the last 12 items of each history, with the film each user
# rated next; and, under them, statistics of every layer's weights over **all** test users, from which the text
# reads what each head attends to. On a CPU they come from `benchmarks/results/h200_2026-12-01/ml1m/attention.json`
# (NVIDIA H200, 2026-12-01); on a GPU they are computed here, with the same functions, from the model trained
# above.

# %%
from hstu_tutorial import results as gpu_results

if preset.gpu:
    live_model = model.to("cuda")
    attention = {"record": gpu_results.attention_record(live_model, ds, gpu_results.attention_users(ds)),
                 "summary": gpu_results.attention_summary(live_model, ds, "test")}
    model = live_model.cpu()  # the explorer below runs on the CPU batch
    source = f"live: the HSTU trained above ({plural(results['epochs_run'], 'epoch')} on {ds.name})"
else:
    saved = gpu_results.load_ml1m_results()
    attention = saved.attention if saved is not None else None
    if saved is not None:
        source = f"saved: the seed-{attention['seed']} HSTU after {int(saved.runs['epochs'].max())} epochs ({saved.machine}, {saved.date})"
if attention is not None:
    for user in attention["record"]["users"]:
        fig, _ = viz.plot_saved_attention(user)
    display(Markdown(f"{source}; users: {attention['record']['rule']}.\n\n"
                     + gpu_results.attention_markdown(attention["summary"])))

# %% [markdown]
# ### Explore
#
# Pick a user, a layer and a head (needs `ipywidgets` in JupyterLab; without it the cell prints how to get it and
# shows the first map).

# %%
fig, explorer = viz.attention_explorer(model, user_batch, item_titles=ds.item_titles, max_items=16)

# %% [markdown]
# ## Summary
#
# * Softmax attention normalises each row; HSTU's pointwise $\mathrm{SiLU}(s)/n$ does not, so unrelated items
#   add nothing instead of diluting the row. The LayerNorm of the STU then removes the row's overall scale;
#   the relative sizes of the heads survive it.
# * $n$ is a constant (211 on ML-1M) from the research code, not from the paper's eq. 2: not the row sum and
#   not the user's length.
# * The relative attention bias adds a learned term for the position offset and one for the log-bucketed time
#   gap measured from the **next** item's timestamp.
# * `hstu_attention` (jagged) and `padded_hstu_attention` are the reference implementations; the tests check them
#   against per-sequence loops to 1e-8 in float64, forward and gradients.
#
# Next: **03 · the STU layer**, the block these attention weights live in.
