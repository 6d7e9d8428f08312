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
# # Exercises 06: training and evaluation
#
# Companion of [`notebooks/06_training_ml1m`](../notebooks/06_training_ml1m.ipynb). HSTU is trained like a
# language model: every position $i$ of a history predicts the next item. With millions of items a full
# softmax is too expensive, so the reference samples negatives: the **sampled softmax** loss. Models are then
# compared by ranking the held-out item against the whole catalogue: **HR@K** and **NDCG@K**.
#
# You write both; then a short training run uses them (or the package's versions). Checks compare with
# `hstu_tutorial.losses` and `hstu_tutorial.metrics`, including gradients, with edge cases (one row, one
# negative, accidental hits, ties, empty histories, a target already in its history).
#
# > **中文摘要**：你要写采样 softmax 损失（L2 归一化、温度、屏蔽意外命中）以及 HR@K 与 NDCG@K；检查与
# > `hstu_tutorial.losses` / `hstu_tutorial.metrics` 对比（包括梯度），随后用它们做一次短训练。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/06_training.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import torch
import torch.nn.functional as F

import hstu_tutorial
from hstu_tutorial import checks, losses, metrics
from hstu_tutorial.data import get_reco_dataset
from hstu_tutorial.modules import hstu_encoder

preset = hstu_tutorial.get_preset()
torch.manual_seed(0);


# %% [markdown]
# ## 1. Sampled softmax
#
# For a supervised position with output embedding $q$, its next item $p$ and $R$ negatives $n_1 .. n_R$ drawn
# uniformly from the catalogue, with every embedding L2-normalised (scores are cosines) and temperature
# $\tau$ (0.05 in the paper's ML-1M configs):
#
# $$\ell = -\log \frac{\exp(\langle q, e_p\rangle / \tau)}{\exp(\langle q, e_p\rangle / \tau) + \sum_{r:\, n_r \ne p} \exp(\langle q, e_{n_r}\rangle / \tau)}.$$
#
# A negative that happens to be the positive (an *accidental hit*) is left out of the sum: otherwise the
# loss pushes the positive away from itself. The batch loss is the mean over positions.
#
# Write `sampled_softmax_loss(query, positive_ids, negative_ids, item_table, temperature=0.05)`:
# query `(M, D)`, positive_ids `(M,)`, negative_ids `(M, R)` item ids, item_table `(num_items+1, D)` (row =
# item id) → a scalar.

# %%
def sampled_softmax_loss(query, positive_ids, negative_ids, item_table, temperature=0.05):
    """Mean sampled-softmax loss over M positions; all embeddings L2-normalised."""
    # BEGIN SOLUTION
    q = F.normalize(query, dim=-1)                                   # (M, D)
    pos = F.normalize(item_table[positive_ids], dim=-1)              # (M, D)
    neg = F.normalize(item_table[negative_ids], dim=-1)              # (M, R, D)
    pos_logit = (q * pos).sum(-1, keepdim=True)                      # (M, 1)
    neg_logits = torch.einsum("md,mrd->mr", q, neg)                  # (M, R)
    neg_logits = neg_logits.masked_fill(negative_ids == positive_ids[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logits], dim=1) / temperature  # (M, 1 + R)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_sampled_softmax_loss(sampled_softmax_loss)


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `F.normalize(x, dim=-1)` L2-normalises rows. `item_table[negative_ids]` is `(M, R, D)`; scores against the
# query are `torch.einsum("md,mrd->mr", q, neg)`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Put the positive first: `logits = torch.cat([pos_logit, neg_logits], 1) / temperature`; the loss of a row is
# `-log_softmax(logits)[0]`.
# </details>
#
# <details><summary>Hint 3 (accidental hits)</summary>
#
# `negative_ids == positive_ids[:, None]` is `(M, R)`; fill those logits with `-inf` before the softmax
# (`exp(-inf) = 0`).
# </details>

# %% [markdown]
# ## 2. HR@K and NDCG@K
#
# Leave-one-out evaluation ranks each user's held-out item against **every** item of the catalogue, after
# removing the items already in the user's history window (they cannot be recommended again). With
# $\mathrm{rank} = 1 + \#\{\text{unseen items scored strictly higher than the target}\}$:
#
# $$\mathrm{HR@K} = [\mathrm{rank} \le K], \qquad \mathrm{NDCG@K} = \frac{[\mathrm{rank} \le K]}{\log_2(\mathrm{rank} + 1)}.$$
#
# A target that is itself in the history counts as a miss. Write `hr_ndcg(scores, target_ids, history_ids, k)`:
# scores `(B, C+1)` with column = item id (column 0 is padding, never an item), target_ids `(B,)`,
# history_ids `(B, N)` zero-padded → per-user `(hr, ndcg)`, two `(B,)` float tensors.

# %%
def hr_ndcg(scores, target_ids, history_ids, k):
    """Per-user HR@k and NDCG@k from full-ranking scores, history items removed."""
    # BEGIN SOLUTION
    scores = scores.clone().double()
    target_score = scores.gather(1, target_ids[:, None])              # (B, 1), before any masking
    seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, history_ids, True)  # (B, C+1)
    seen[:, 0] = True                                                  # the padding column is no item
    scores = scores.masked_fill(seen, float("-inf"))
    rank = 1 + (scores > target_score).sum(dim=1).double()             # (B,) 1-based
    hit = (rank <= k) & ~seen.gather(1, target_ids[:, None])[:, 0]     # a seen target is a miss
    return hit.double(), torch.where(hit, 1.0 / torch.log2(rank + 1.0), 0.0)
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_hr_ndcg(hr_ndcg)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# Read the target's score first, then mask: `seen = torch.zeros_like(scores, dtype=torch.bool).scatter_(1,
# history_ids, True)` marks history items (the padding 0 lands in column 0, which must be masked anyway).
# </details>
#
# <details><summary>Hint 2</summary>
#
# `rank = 1 + (masked_scores > target_score).sum(1)`: strictly greater, so ties favour the target (the
# reference's convention). HR is `rank <= k`, NDCG is `1 / log2(rank + 1)` where HR is 1, else 0.
# </details>

# %% [markdown]
# ## Use it: a short training run
#
# Train a small HSTU for a few epochs with the loss above and evaluate it with the metric above, next to the
# popularity baseline (recommend the most popular unseen items). The package's versions are used unless
# `use_mine = True`. Small preset: synthetic data, seconds on a CPU.

# %%
use_mine = False  # set to True once both checks pass

dataset = get_reco_dataset(preset.dataset, max_seq_len=preset.max_seq_len, verbose=False)
catalogue = dataset.catalogue                                          # (C,) valid item ids
model = hstu_encoder(dataset.num_items, max_seq_len=preset.max_seq_len)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), weight_decay=0.0)
gen = torch.Generator().manual_seed(0)


def next_items(batch):
    # position i predicts item i+1 of its history; the last position predicts the target
    nxt = torch.roll(batch.item_ids, -1)                               # (T,)
    nxt[batch.offsets[1:] - 1] = batch.target_item_ids
    return nxt


def loss_fn(out, positive_ids):
    negatives = torch.randint(0, catalogue.numel(), (out.shape[0], 128), generator=gen)  # (T, R) positions
    if use_mine:
        table = model.preprocessor.item_emb.weight                     # (num_items+1, D), row = item id
        return sampled_softmax_loss(out, positive_ids, catalogue[negatives], table, temperature=0.05)
    return losses.sampled_softmax_loss(out, positive_ids, model.item_embeddings, catalogue,
                                       temperature=0.05, negatives=negatives)


for epoch in range(preset.num_epochs):
    model.train()
    total = 0.0
    for batch in dataset.loader("train", batch_size=preset.batch_size, shuffle=True, seed=epoch):
        loss = loss_fn(model(batch), next_items(batch))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item()
    print(f"epoch {epoch + 1}: mean training loss {total / len(dataset.loader('train', preset.batch_size)):.3f}")

# %%
model.eval()
hits, gains = [], []
with torch.no_grad():
    items = model.item_embeddings(torch.arange(dataset.num_items + 1))   # (num_items+1, D)
    not_items = torch.ones(dataset.num_items + 1, dtype=torch.bool)
    not_items[catalogue] = False                                          # ids that are no movie
    for batch in dataset.loader("test", batch_size=256):
        query = model.last_embeddings(model(batch), batch)               # (B, D)
        scores = (query @ items.t()).masked_fill(not_items, float("-inf"))  # (B, num_items+1)
        history = batch.padded("item_ids")                                # (B, N) zero-padded
        if use_mine:
            hr, ndcg = hr_ndcg(scores, batch.target_item_ids, history, 10)
        else:
            ranks = metrics.target_ranks(query, items[catalogue], catalogue, batch.target_item_ids, history,
                                         dataset.num_items).double()
            hr, ndcg = (ranks <= 10).double(), torch.where(ranks <= 10, 1 / torch.log2(ranks + 1), 0.0)
        hits.append(hr)
        gains.append(ndcg)
popular = metrics.popularity_baseline(dataset, "test", ks=(10,))
print(f"HSTU after {preset.num_epochs} epochs: HR@10 {torch.cat(hits).mean():.3f}  NDCG@10 {torch.cat(gains).mean():.3f}")
print(f"popularity baseline:     HR@10 {popular['hr@10']:.3f}  NDCG@10 {popular['ndcg@10']:.3f}")

# %% [markdown]
# ## 3. Per-bucket analysis from saved ranks
#
# Every run of the package's trainer saves, next to `results.json`, one row per test user in `ranks_test.csv`:
# `user_id, target_item_id, history_length, rank`, the 1-based rank of the target at the epoch the results
# report (`ranks_valid.csv` holds the validation targets). The overall HR@10 is the mean of
# $[\mathrm{rank} \le 10]$ over all users; grouping the users into **buckets** (short or long histories, rare
# or popular targets) shows where that mean comes from. First a short trainer run on the same data, then its
# file:

# %%
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from hstu_tutorial import analysis
from hstu_tutorial.train import load_config, train

cfg = load_config("synthetic/hstu-small", overrides={
    "dataset": dataset.name, "max_seq_len": dataset.max_seq_len, "protocol": dataset.protocol,
    "num_epochs": preset.pick(2, 2, 10), "exp_dir": tempfile.mkdtemp(prefix="hstu-ex06-"),
    "tensorboard": False, "progress": False})
run = train(cfg, dataset=dataset, verbose=False)
ranks_df = pd.read_csv(Path(run["run_dir"]) / "ranks_test.csv")
print(f"{len(ranks_df)} test users, ranks of epoch {run['rank_files']['epoch']} ({run['rank_files']['weights']})")
ranks_df.head(3)


# %% [markdown]
# Write `per_bucket_metrics(ranks_df, bucket_of, k=10)`. `bucket_of = (column, edges)`: bucket $i$ holds the
# users with `edges[i] <= value < edges[i+1]` (closed on the left, open on the right: a value equal to an
# edge belongs to the bucket that starts there). Return a DataFrame with one row per bucket, in edge order
# (the index is yours: labels such as `[20, 50)` read well), and the columns `users`, `hr@{k}` and
# `ndcg@{k}`, each a mean over **that bucket's** users: HR@K $= [\mathrm{rank} \le K]$, NDCG@K $=
# [\mathrm{rank} \le K] / \log_2(\mathrm{rank} + 1)$ with the file's 1-based ranks. A bucket without users
# keeps its row: 0 users, NaN metrics (there is no mean of nothing). Leave `ranks_df` unchanged.

# %%
def per_bucket_metrics(ranks_df, bucket_of, k=10):
    """Users, HR@k and NDCG@k per bucket [edges[i], edges[i+1]) of one column of a ranks table."""
    # BEGIN SOLUTION
    column, edges = bucket_of
    rank = ranks_df["rank"].to_numpy(dtype=float)                     # (U,) 1-based
    per_user = pd.DataFrame({
        "bucket": pd.cut(ranks_df[column], edges, right=False),        # [a, b): closed on the left
        "hit": (rank <= k).astype(float),
        "gain": np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0),
    })
    groups = per_user.groupby("bucket", observed=False)                # empty buckets keep their row
    return pd.DataFrame({"users": groups.size(), f"hr@{k}": groups["hit"].mean(),
                         f"ndcg@{k}": groups["gain"].mean()})
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_per_bucket(per_bucket_metrics)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `pd.cut(values, edges, right=False)` gives every user its bucket `[a, b)`; its default, `right=True`, makes
# `(a, b]` buckets and drops the values equal to the first edge.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Put one row per user in a new DataFrame (bucket, hit, gain) and `groupby("bucket", observed=False)`: the
# mean of `hit` is the bucket's HR@K, `observed=False` keeps the empty buckets, `.size()` counts the users.
# </details>

# %% [markdown]
# Now the two questions of notebook 06, section 7: by the length of the user's history, and by how often the
# target item occurs in the training split (its popularity). Edges at the quartiles give buckets of similar
# size; the last edge is `inf`. Your function is used once its check passes, the package's until then.

# %%
bucketed = per_bucket_metrics if ok else analysis.per_bucket_metrics
length_edges = analysis.quantile_edges(ranks_df["history_length"])
by_length = bucketed(ranks_df, ("history_length", length_edges), k=10)
with_popularity = analysis.with_target_popularity(ranks_df, metrics.item_popularity(dataset, "train"))
popularity_edges = analysis.quantile_edges(with_popularity["target_popularity"])
by_popularity = bucketed(with_popularity, ("target_popularity", popularity_edges), k=10)
display(by_length.round(4), by_popularity.round(4))

overall = run["best_by_valid"]["test"]["hr@10"]
weighted = float((by_length["hr@10"].fillna(0.0) * by_length["users"]).sum() / by_length["users"].sum())
display(Markdown(
    f"This run's test HR@10 is {overall:.3f}; the history-length buckets' HR@10, weighted by their users, give "
    f"back {weighted:.3f}. The highest HR@10 is in history-length bucket {by_length['hr@10'].idxmax()} and in "
    f"target-popularity bucket {by_popularity['hr@10'].idxmax()}. One short run, one seed and "
    f"{int(by_length['users'].min())} to {int(by_length['users'].max())} users per bucket: small differences "
    "are noise."))

# %% [markdown]
# ## What you built
#
# The loss HSTU trains with, the metrics it is judged by, and a per-bucket view of a run's saved ranks.
# `python -m hstu_tutorial.train --config ...` (notebook 06) runs the same loop at full size, with evaluation on
# the device, checkpoints and early stopping.
