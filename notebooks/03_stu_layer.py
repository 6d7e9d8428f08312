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
# # 03 · The STU layer, line by line
#
# HSTU stacks identical **Sequential Transduction Units** (Zhai et al., ICML 2024, §3.1). One STU layer does the
# work of a Transformer's attention block *and* its feed-forward network, with three equations:
#
# $$U(X), V(X), Q(X), K(X) = \mathrm{Split}\big(\phi_1(f_1(X))\big) \tag{1}$$
# $$A(X)V(X) = \phi_2\big(Q(X)K(X)^\top + \mathrm{rab}^{p,t}\big)\,V(X) \tag{2}$$
# $$Y(X) = f_2\big(\mathrm{Norm}(A(X)V(X)) \odot U(X)\big) \tag{3}$$
#
# $f_1$ is one linear map to four projections, $\phi_1 = \phi_2 = \mathrm{SiLU}$, $f_2$ a linear map back to $D$.
# The official research code also divides the attention weights of eq. 2 by a constant $n$ (max_seq_len + 11);
# the table below, like the package, follows it.
# As the reference implementation trains it (and `hstu_tutorial.modules.STULayer` implements it), with $x$ jagged
# $(T, D)$:
#
# | step | code | shape |
# | --- | --- | --- |
# | input norm | `x_n = LayerNorm(x)` (no scale/shift, eps 1e-6) | $(T, D)$ |
# | eq. 1 | `u, v, q, k = split(SiLU(x_n @ W_uvqk))`, $W$ has no bias, $\mathcal N(0, 0.02^2)$ | $(T, Hd_v), (T, Hd_v), (T, Hd_{qk}), (T, Hd_{qk})$ |
# | eq. 2 | `av = sum_j SiLU(<q_i,k_j> + rab_ij) / n * v_j`, causal, per head | $(T, Hd_v)$ |
# | eq. 3 | `o = u * LayerNorm(av)` (norm over all heads jointly) | $(T, Hd_v)$ |
# | residual | `out = x + Linear(Dropout(o))` (bias, xavier-uniform) | $(T, D)$ |
#
# > **中文摘要**：逐行拆解 STU 层：一次投影得到 u、v、q、k，逐点注意力，门控 u * LayerNorm(AV)，输出投影与残差；
# > 并实测它与 Transformer 块在参数量、FLOPs、激活显存上的差别（STU 层没有前馈网络，由门控代替）。
# > 动手部分在练习 `exercises/03_stu`。

# %%
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display
from torch.utils.flop_counter import FlopCounterMode

import hstu_tutorial
from hstu_tutorial import viz
from hstu_tutorial.modules import (JaggedLayout, count_parameters, hstu_encoder, saved_activation_bytes,
                                   sasrec_encoder)

preset = hstu_tutorial.get_preset()
torch.manual_seed(0)
ds = preset.load_dataset()  # MovieLens-1M on real-cpu and full, the synthetic look-alike on small
print("Data:", viz.dataset_label(ds))
batch = next(iter(ds.loader("train", preset.batch_size)))  # a JaggedBatch
# The paper's ML-1M sizes (D = 50, 2 blocks, 1 head, dqk = dv = 50) in every preset: only the data changes.
model = hstu_encoder(ds.num_items, max_seq_len=ds.max_seq_len).eval()
layer = model.blocks[0]
print(f"batch: B={batch.batch_size} histories, T={batch.num_tokens} tokens, pad width N={batch.max_len}")
print(layer)

# %% [markdown]
# ## 1. The layer, one line at a time
#
# The whole layer first, as a picture (the relative bias enters at the scores; there is no feed-forward box):

# %%
fig, stu = viz.plot_stu_layer()

# %% [markdown]
# The input of the first layer is the preprocessor's $x_0 = E[\text{item}]\sqrt D + P[\text{position}]$ (dropout is
# off in eval mode). The layout holds what every layer shares: offsets, the pad width, and the time buckets
# of the relative attention bias.

# %%
x = model.preprocessor(batch.item_ids, batch.offsets)  # (T, D)
layout = JaggedLayout.from_batch(batch, rab=layer.rab)
T, D = x.shape
H, dqk, dv = layer.num_heads, layer.dqk, layer.dv

x_n = F.layer_norm(x, (D,), eps=1e-6)  # (T, D): no learnable scale or shift
uvqk = F.silu(x_n @ layer.uvqk)  # (T, 2*H*dv + 2*H*dqk): eq. 1, SiLU on all four
u, v, q, k = torch.split(uvqk, [H * dv, H * dv, H * dqk, H * dqk], dim=-1)
av, _ = layer.attention(q, k, v, layout)  # (T, H*dv): eq. 2 (pads to (B, N, H, d) and back inside)
o = u * F.layer_norm(av, (H * dv,), eps=1e-6)  # (T, H*dv): eq. 3, the gate u replaces the FFN
out = x + layer.o(o)  # (T, D): residual (Dropout is the identity in eval mode)

for name, t in [("x", x), ("x_n", x_n), ("uvqk", uvqk), ("u", u), ("v", v), ("q", q), ("k", k), ("av", av), ("o", o), ("out", out)]:
    print(f"{name:>5}: {tuple(t.shape)}")
torch.testing.assert_close(out, layer(x, layout))
print("line-by-line == STULayer.forward")

# %% [markdown]
# The attention in the middle, for one sequence, written out with the bias (what `layer.attention` does for all
# sequences at once with a padded einsum and masks):

# %%
b = 0
s, e = batch.offsets[b].item(), batch.offsets[b + 1].item()
L = e - s
rab = layer.rab.from_buckets(layout.buckets)[b, :L, :L]  # (L, L): positions + time buckets
scores = q[s:e] @ k[s:e].T + rab  # (L, L): no 1/sqrt(d)
A = F.silu(scores) * torch.ones(L, L, dtype=torch.bool).tril() / layer.norm  # (L, L), n constant
torch.testing.assert_close(A @ v[s:e], av[s:e])
print(f"sequence {b}: L={L}, n={layer.norm:g}, A has {int((A < 0).sum())} negative and {int((A > 0).sum())} positive weights")

# %% [markdown]
# ## 2. STU layer vs Transformer block: parameters, FLOPs, activation memory
#
# Three layers on the same real batch: HSTU's STU layer, SASRec's block (the HSTU paper's baseline: softmax
# attention + a ReLU FFN of width 50), and a standard Transformer block (`torch.nn.TransformerEncoderLayer`,
# FFN of width $4D$, GELU). All measured, not estimated:
#
# * **parameters**: trainable scalars of one layer;
# * **forward FLOPs**: counted by `torch.utils.flop_counter.FlopCounterMode` on this batch (matrix products; our
#   PyTorch STU path computes the attention on the padded $(B, N, N)$ grid, as does SASRec, and the linear
#   layers on the $T$ real tokens only);
# * **activation memory**: bytes autograd keeps for the backward pass (`saved_activation_bytes`), training mode.

# %%
sasrec = sasrec_encoder(ds.num_items, max_seq_len=ds.max_seq_len, attention_impl="pytorch")  # spelled out, as the STU
Dm = model.embedding_dim
transformer = torch.nn.TransformerEncoderLayer(Dm, nhead=1, dim_feedforward=4 * Dm, dropout=0.2, activation="gelu",
                                               batch_first=True, norm_first=True)
x_pad = layout.pad(x.detach())  # (B, N, D)
N = layout.pad_width
causal_mask = torch.ones(N, N, dtype=torch.bool).triu(1)  # True = not allowed
key_padding = ~batch.mask()  # (B, N): True on padding

runs = {
    "STU layer (HSTU)": (layer, lambda: layer(x.detach().requires_grad_(), layout)),
    "SASRec block": (sasrec.blocks[0], lambda: sasrec.blocks[0](x_pad.clone().requires_grad_(), layout.lengths)),
    "Transformer block (FFN 4D)": (transformer, lambda: transformer(x_pad.clone().requires_grad_(), src_mask=causal_mask,
                                                                    src_key_padding_mask=key_padding, is_causal=True)),
}
print(f"{'layer':<28}{'parameters':>11}{'fwd GFLOPs':>12}{'activations MiB':>17}")
for name, (module, run) in runs.items():
    module.train()
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            run()
    torch.manual_seed(0)
    _, nbytes = saved_activation_bytes(run)
    print(f"{name:<28}{count_parameters(module):>11,}{counter.get_total_flops() / 1e9:>12.3f}{nbytes / 2**20:>17.1f}")
_ = layer.eval()

# %% [markdown]
# What to read in the table:
#
# * the STU layer has fewer parameters than a Transformer block with a $4D$ FFN: $W_{uvqk}$ is $D \times 4D$
#   (here $50 \times 200$) and $f_2$ is $D \times D$; the gate $u$ does the FFN's job without an FFN;
# * SASRec's tiny FFN (width 50) is the paper's baseline, so HSTU's ML-1M model is not "bigger" than it: both
#   are ~13-15k parameters per layer; the item embedding table dominates the model (below);
# * activation memory: the STU layer keeps **more** than the SASRec block here, not less. The cell below splits
#   the saved tensors into $(B, N, N)$ score grids and per-token tensors. Both PyTorch versions store score
#   grids (ours computes attention on the padded grid, as SASRec does); the STU's extra bytes are per-token:
#   the $4HD$-wide projection before and after its SiLU, the padded copies of $q, k, v$, the two LayerNorms and
#   the gate each keep a tensor when every pointwise operation is a separate PyTorch op.
#
# So the memory savings the paper reports (§3.3) do not come from "not storing the $N \times N$ matrix": its
# baselines are FlashAttention2-based Transformers, which do not store it either. They come from the slimmer
# layer: fewer linear layers outside attention, no separate feed-forward network, and the pointwise operations
# (norms, SiLU, gating) fused into few kernels that recompute instead of storing. This unfused PyTorch layer
# has the slim design but not the fusion, and the table shows what that costs; `07_performance` measures the
# levers that get it back (the Triton kernel, recomputation, bf16).

# %%
# Where the bytes go: autograd's saved tensors of each layer, split into score-grid tensors (last two dims N x N)
# and the rest (tokens x features), counted once per storage as saved_activation_bytes does.
def saved_breakdown(run):
    seen = {}

    def pack(t):
        st = t.untyped_storage()
        if not isinstance(t, torch.nn.Parameter) and st.data_ptr() not in seen:
            grid = t.dim() >= 2 and t.shape[-1] == N and t.shape[-2] == N
            seen[st.data_ptr()] = ("grid" if grid else "rest", st.nbytes())
        return t

    torch.manual_seed(0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return {kind: (sum(1 for k, _ in seen.values() if k == kind),
                   sum(b for k, b in seen.values() if k == kind) / 2**20) for kind in ("grid", "rest")}


breakdown = {}
for name in ("STU layer (HSTU)", "SASRec block"):
    module, run = runs[name]
    module.train()
    breakdown[name] = saved_breakdown(run)
_ = layer.eval()
stu, sas = breakdown["STU layer (HSTU)"], breakdown["SASRec block"]
display(Markdown(
    f"On this batch the STU layer keeps **{stu['grid'][1] + stu['rest'][1]:.1f} MiB** for the backward pass and the "
    f"SASRec block **{sas['grid'][1] + sas['rest'][1]:.1f} MiB**. Of that, the $(B, N, N)$ score grids are "
    f"{stu['grid'][0]} tensors ({stu['grid'][1]:.1f} MiB) in the STU against {sas['grid'][0]} "
    f"({sas['grid'][1]:.1f} MiB) in SASRec; everything else (per-token tensors) is {stu['rest'][1]:.1f} MiB "
    f"against {sas['rest'][1]:.1f} MiB."
))

# %% [markdown]
# ## 3. The whole encoder on a real batch
#
# $x_0$ from the preprocessor, the stack of STU layers, and an L2 normalisation (no final LayerNorm): one
# output embedding per history position, each trained to score the next item.

# %%
out = model(batch)  # (T, D), L2-normalised
last = model.last_embeddings(out, batch)  # (B, D): the positions that score each user's target
scores = last @ model.item_embeddings(ds.catalogue).T  # (B, catalogue): full-ranking scores
print("outputs:", tuple(out.shape), "| norms:", round(out.norm(dim=-1).min().item(), 4), "-", round(out.norm(dim=-1).max().item(), 4))
print("last positions:", tuple(last.shape), "| scores against the catalogue:", tuple(scores.shape))


# %% [markdown]
# Parameters per part. We count trainable scalars (`requires_grad`), including the padding row of the item table
# (item ids are the raw MovieLens ids, so the table has `num_items + 1` rows) and the per-layer bias tables.

# %%
def show(counts, title):
    print(title)
    for key, n in counts.items():
        print(f"  {key:<28}{n:>10,}")

show(model.num_parameters(), f"HSTU, {ds.name}")
show(model.parameter_breakdown(), "  inside one STU layer")
show(sasrec.num_parameters(), f"SASRec, {ds.name}")
show(sasrec.parameter_breakdown(), "  inside one SASRec block")

# %% [markdown]
# On MovieLens-1M (3,952 movie ids, $D = 50$, max_seq_len 200, so position and bias tables of 211) this gives
# HSTU 234,400 parameters (item embeddings 197,650, positions 10,550, 13,100 per STU layer: $W_{uvqk}$ 10,000,
# $f_2$ 2,550, bias 421 + 129) and SASRec 238,800 (15,300 per block).
#
# ## Summary
#
# * One STU layer = LayerNorm, one fused projection to $u, v, q, k$ with SiLU, pointwise attention with the
#   relative bias, LayerNorm of $A v$ gated by $u$, output projection and residual.
# * It replaces a Transformer's attention **and** FFN; the gate $u$ is the non-linearity per position.
# * `tests/test_modules.py` checks `STULayer` against a line-by-line loop over sequences, queries, heads and keys
#   in float64, forward and gradients.
#
# Next: **04 · jagged tensors**, how batches of very different lengths are stored and computed without padding.
