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
# # 01 · Data format: from raw MovieLens files to jagged batches
#
# HSTU reformulates recommendation as **sequential transduction**: a user is the time-ordered sequence of their
# actions (here: the movies they rated), and the model reads that sequence to predict the next action
# (*"Actions Speak Louder than Words"*, Zhai et al., ICML 2024, §2). So before any attention there is a data
# question: how do rating logs become per-user sequences, how are they split for training and evaluation, and
# how are sequences of very different lengths packed into a batch without wasting compute on padding?
#
# This notebook walks that path with the package's own code (`hstu_tutorial.data`):
#
# 1. the raw files and their pandas tables;
# 2. per-user sequences, and what the data looks like (lengths, popularity, time);
# 3. the leave-one-out split and two pitfalls of the reference setup;
# 4. jagged batches (values + offsets) versus padded ones.
#
# The first code cell picks the preset and says which data it loaded: MovieLens-1M when it is on disk (presets
# `real-cpu` on a CPU, `full` on a GPU), else the synthetic look-alike (`small`, what CI runs). The picture
# below is the whole path on the first users of the loaded data (item ids only).
#
# > **中文摘要**：从 MovieLens 原始文件到按时间排序的用户行为序列，再到锯齿批（values + offsets）；讲解留一法切分、
# > 参考协议的两个陷阱，以及行为之间的时间间隔与时间分桶。你只需运行并读懂各单元格的表与图；
# > 动手部分在练习 `exercises/01_data`。

# %%
import pandas as pd
import torch
from IPython.display import Markdown, display

import hstu_tutorial
from hstu_tutorial import viz
from hstu_tutorial.data import get_reco_dataset

preset = hstu_tutorial.get_preset()
# real-cpu and full: MovieLens-1M from data/ml-1m (or data/ml-1m-u2999); small (CI): the synthetic look-alike
ds = preset.load_dataset()
print("Data:", viz.dataset_label(ds))

# %%
fig, pipeline = viz.plot_jagged_pipeline(ds, num_users=3)

# %% [markdown]
# ## 1. The raw files
#
# MovieLens-1M ships three `::`-separated text files in Latin-1 (movie titles hold characters like `é`).
# Our synthetic dataset writes exactly the same format (see `data/README.md` for its story), so everything below
# runs the same on both.
#
# | file | one line | notes |
# | --- | --- | --- |
# | `ratings.dat` | `UserID::MovieID::Rating::Timestamp` | 1,000,209 lines for ML-1M; grouped by user, **not** time-sorted |
# | `movies.dat` | `MovieID::Title (Year)::Genre\|Genre` | 3,883 movies, ids 1..3952 with gaps |
# | `users.dat` | `UserID::Gender::Age::Occupation::Zip-code` | 6,040 users, age and occupation are codes |

# %%
for name in ("ratings.dat", "movies.dat", "users.dat"):
    with open(ds.folder / name, encoding="latin-1") as f:
        print(f"--- {name}:", *[next(f).rstrip() for _ in range(3)], sep="\n  ")

# %% [markdown]
# The readers turn them into pandas tables with one pass of pandas' C parser. Bad input stops with an error that
# names the file, the line and what was expected, for example a file written with the wrong separator:

# %% tags=["nbval-check-output"]
import tempfile
from pathlib import Path

from hstu_tutorial.data import DataFormatError, read_ratings

bad = Path(tempfile.mkdtemp()) / "ratings.dat"
bad.write_text("1::1193::5::978300760\n1,661,3,978302109\n")
try:
    read_ratings(bad)
except DataFormatError as e:
    print(str(e).replace(str(bad.parent), "<tmp>"))

# %%
display(ds.ratings_df.head(4))
display(ds.movies_df.head(3))
display(ds.users_df.head(3))

# %% [markdown]
# Counts that matter later: the **catalogue** is every movie in `movies.dat` (what we rank over at evaluation),
# `num_items` is the largest id (the size of the embedding table: ids are kept raw, 0 is padding). They differ
# because ids have gaps, and some catalogue movies are never rated.

# %%
stats = ds.stats()
pd.Series({k: stats[k] for k in ("users", "rated_items", "interactions", "catalogue", "num_items")})


# %% [markdown]
# ## 2. Per-user sequences
#
# Group the ratings by user and sort each group by timestamp: that is the whole "feature engineering" of the
# reference implementation, which writes the result as `sasrec_format.csv` (`ds.write_sasrec_format()` writes
# the same file). Lists, oldest first:

# %%
def short(xs, n=6):
    return ", ".join(map(str, xs[:n])) + (f", ... ({len(xs)} in all)" if len(xs) > n else "")

view = ds.sequences.head(3).copy()
for col in ("sequence_item_ids", "sequence_ratings", "sequence_timestamps"):
    view[col] = view[col].map(short)
view

# %%
u = ds.sequences.iloc[0]
when = pd.to_datetime(u["sequence_timestamps"], unit="s")
# the first three ratings of the first user, with titles (the histories above stay ids)
pd.DataFrame({"when": when[:3], "movie": [ds.item_titles[i] for i in u["sequence_item_ids"][:3]],
              "rating": u["sequence_ratings"][:3]})

# %% [markdown]
# ### What the sequences look like
#
# Four views that shape the model. First, how long the histories are: the spread between the median user and
# the heaviest one decides how much of a padded batch is padding, and a window of `max_seq_len` keeps only the
# most recent items of the users above it. The numbers under the plot are this dataset's.

# %%
fig, dists = viz.plot_distributions(ds)  # seaborn: lengths, gaps between a user's ratings, ratings per item
med = dists["medians"]
display(Markdown(
    f"On {viz.dataset_label(ds)}: the median user has {med['length']:.0f} ratings, the median gap between two "
    f"ratings of the same user is {med['gap_s']:.0f} s, and the median item has {med['per_item']:.0f} ratings. "
    "The panels below take each view in turn."
))

# %%
fig, data = viz.plot_sequence_lengths(ds)
print({k: round(v, 3) if isinstance(v, float) else v for k, v in data["summary"].items()})
summary = data["summary"]
spread = summary["max"] / summary["median"]
display(Markdown(
    f"On `{ds.name}`: {summary['users']:,} users, median history {summary['median']:.0f} ratings, longest "
    f"{summary['max']:,} ({spread:.1f}x the median): "
    + ("a long tail, a few heavy users far above the rest. " if spread >= 5 else
       "a narrow spread, with no heavy users far above the rest. ")
    + f"{summary['share_longer_than_window']:.0%} of the users have more than the window of {ds.max_seq_len} "
    "items, and the model sees only their most recent ones."
))

# %% [markdown]
# Second, how concentrated the ratings are on a few items. When a small share of the items gets a large share of
# the ratings, a popularity ranking is a baseline worth beating. Negatives for the sampled softmax are drawn
# uniformly from the catalogue (not by popularity) in the reference setup, whatever the concentration.

# %%
fig, data = viz.plot_item_popularity(ds)
print(f"top 1% of items: {data['top_1pct_share']:.1%} of ratings; top 10%: {data['top_10pct_share']:.1%}; "
      f"catalogue items never rated: {data['never_rated']}")
top1, top10 = data["top_1pct_share"], data["top_10pct_share"]
display(Markdown(
    f"On `{ds.name}` the top 1% of the items get {top1:.1%} of the ratings and the top 10% get {top10:.1%}, "
    f"{top10 / 0.10:.1f}x their share of a catalogue where every item is rated equally often: "
    + ("a long tail, where popularity alone already ranks well." if top10 >= 0.3 else
       "close to even, so popularity alone says little about the next item.")
))

# %%
fig, per_week = viz.plot_ratings_over_time(ds)

# %% [markdown]
# ### Time between actions, and HSTU's log time buckets
#
# HSTU adds to each attention score a learned **relative attention bias** that depends on positions and on
# time: $\mathrm{rab}_{ij} = w^{\mathrm{pos}}_{j-i} + w^{\mathrm{ts}}_{b(t_{i+1} - t_j)}$, with the time gap put
# into logarithmic buckets
#
# $$b(d) = \mathrm{clamp}\Big(\big\lfloor \ln(\max(|d|, 1)) / 0.301 \big\rfloor,\ 0,\ 128\Big).$$
#
# Why logarithmic? Gaps between consecutive actions span seconds (a user rating a batch of movies in one
# sitting) to months. On a log axis they spread out; each bucket is a factor $e^{0.301} \approx 1.35$ wider than
# the last, so a few dozen buckets cover everything from one second to years.

# %%
fig, gaps = viz.plot_time_gaps(ds)
print(f"{gaps['zero_share']:.1%} of consecutive ratings share the same second")

# %% tags=["nbval-check-output"]
examples = {"0 s": 0, "1 s": 1, "10 s": 10, "1 min": 60, "1 h": 3600, "1 day": 86400, "30 days": 30 * 86400,
            "1 year": 365 * 86400}
pd.DataFrame({"gap": list(examples), "bucket": viz.hstu_time_bucket(list(examples.values()))}).set_index("gap").T

# %% [markdown]
# ## 3. The split protocol: leave-one-out
#
# For a user with time-sorted items $s_0, \dots, s_{L-1}$:
#
# | split | history | target | used for |
# | --- | --- | --- | --- |
# | `test` | $s_{0..L-2}$ | $s_{L-1}$ (last item) | the reported numbers |
# | `valid` | $s_{0..L-3}$ | $s_{L-2}$ | model selection, early stopping |
# | `train`, `protocol="reference"` | $s_{0..L-3}$ | $s_{L-2}$ | what the paper's code trains on: everything but the test item |
# | `train`, `protocol="validation"` | $s_{0..L-4}$ | $s_{L-3}$ | the honest variant: the valid item is held out too |
#
# Every position of a training history is supervised (position $i$ predicts item $i+1$, the last one predicts
# the target), and a history keeps its most recent `max_seq_len` items.

# %%
uid = int(ds.test.user_ids[0])
honest = get_reco_dataset(ds.name, ds.max_seq_len, ds.folder, protocol="validation", verbose=False)
rows = {}
for label, split in (("test", ds.test), ("valid", ds.valid), ("train (reference)", ds.train),
                     ("train (validation)", honest.train)):
    k = int((split.user_ids == uid).nonzero()[0, 0])
    hist = split.histories()[k]
    rows[label] = {"history (last 4)": hist[-4:], "length": len(hist), "target": int(split.target_item_ids[k])}
print("user", uid, "sequence ends with", ds.sequences.set_index("user_id").loc[uid, "sequence_item_ids"][-4:])
pd.DataFrame(rows).T


# %% [markdown]
# **Pitfall 1: evaluating on the test item every epoch.** The reference trains on everything but the last item
# and reports the *test* metrics after every epoch; picking the best epoch (or any setting) from those numbers
# tunes on the test set, and the result is optimistic. Its train split has *no* held-out validation item: in the
# `reference` protocol, `train` and `valid` are the same examples, so "validation" numbers there are training
# numbers. Use `protocol="validation"` to select on `valid` and touch `test` once.

# %% tags=["nbval-check-output"]
def shared_targets(train, valid):
    # how many users have the same target in train and valid (the valid item was trained on)
    t = dict(zip(train.user_ids.tolist(), train.target_item_ids.tolist()))
    return sum(t.get(u) == v for u, v in zip(valid.user_ids.tolist(), valid.target_item_ids.tolist()))

ref_shared, honest_shared = shared_targets(ds.train, ds.valid), shared_targets(honest.train, honest.valid)
print("reference protocol:  every user's valid target is also a train target:", ref_shared == len(ds.valid))
print("validation protocol: no user's valid target is a train target:", honest_shared == 0)

# %%
print(f"{viz.dataset_label(ds)}: {ref_shared:,} of {len(ds.valid):,} users share it in the reference protocol, "
      f"{honest_shared:,} in the validation protocol")

# %% [markdown]
# **Pitfall 2: unstable sorting of ties.** Many ratings share a timestamp (users rate several movies in the same
# second). The reference sorts with `ratings.sort_values("unix_timestamp")`, pandas' default *quicksort*, which is
# not stable: the order of tied ratings depends on the sorting algorithm (and can differ between machines), not on
# the data. Since the test target is the last item, a tie at the end of a sequence decides *which movie is the
# test item*. `stable_sort=True` (our default) keeps ties in file order; `stable_sort=False` reproduces the
# reference's order.

# %%
# (outputs not checked by CI: numpy's quicksort order of ties depends on the CPU's SIMD instructions)
ref = get_reco_dataset(ds.name, ds.max_seq_len, ds.folder, stable_sort=False, verbose=False)
a = ds.sequences.set_index("user_id")["sequence_item_ids"]
b = ref.sequences.set_index("user_id")["sequence_item_ids"]
changed = [u for u in a.index if a[u] != b[u]]
target_changed = int((ds.test.target_item_ids != ref.test.target_item_ids).sum())
print(f"users whose sequence order changes: {len(changed)} of {len(a)}; "
      f"users whose TEST item changes: {target_changed}")

# %%
# A concrete user: the first whose order differs, around the first position where it differs.
u = changed[0]
ts = ds.sequences.set_index("user_id").loc[u, "sequence_timestamps"]
i = next(k for k, (x, y) in enumerate(zip(a[u], b[u])) if x != y)
lo, hi = max(0, i - 1), min(len(ts), i + 4)
pd.DataFrame({"timestamp": ts[lo:hi], "stable (file order)": a[u][lo:hi], "reference (quicksort)": b[u][lo:hi]},
             index=range(lo, hi)).rename_axis(f"user {u}, position")

# %% [markdown]
# ## 4. Batches: jagged, not padded
#
# A batch of $B$ histories of different lengths can be stored two ways:
#
# * **padded** `(B, N)`: every history padded with 0 to a common width $N$; simple, but the padding costs memory
#   and compute in every layer (attention even quadratically);
# * **jagged**: the histories concatenated into `values (T,)` with $T = \sum_b L_b$, plus `offsets (B+1,)` so that
#   history $b$ is `values[offsets[b]:offsets[b+1]]`. HSTU's kernels work on this layout directly.
#
# `ds.loader(split, batch_size)` yields `JaggedBatch`es. Each split is stored once as flat tensors + offsets and
# a batch is a vectorised gather (no Python loop over users), so the same code feeds a GPU: with
# `device="cuda"` the whole split lives on the GPU and batches are gathered there.

# %%
loader = ds.loader("train", batch_size=4, shuffle=True, seed=0)
batch = next(iter(loader))
for name in ("user_ids", "item_ids", "timestamps", "offsets", "lengths", "target_item_ids"):
    t = getattr(batch, name)
    print(f"{name:16s} {str(tuple(t.shape)):8s} {t[:8].tolist()}{' ...' if len(t) > 8 else ''}")
print("max_len (pad width N):", batch.max_len, "| batches per epoch:", len(ds.loader("train", preset.batch_size)))

# %% [markdown]
# `batch.padded(field)` gives the `(B, N)` view for code that wants it (and `batch.mask()` the valid cells);
# `batch.padded(tensor)` pads any per-position tensor, e.g. the model's `(T, D)` outputs, to `(B, N, D)`.

# %%
p = batch.padded("item_ids")  # (B, N)
print(tuple(p.shape), "\n", p[:, :10])
k = 1
torch.testing.assert_close(p[k, : batch.lengths[k]], batch.item_ids[batch.offsets[k] : batch.offsets[k + 1]])

# %%
fig, layout = viz.plot_padded_vs_jagged(next(iter(ds.loader("train", batch_size=16, shuffle=True, seed=1))))

# %% [markdown]
# Over a whole epoch, how much of a padded batch would be padding? The median history sits far below the
# window on ML-1M, so a large share (computed below).

# %%
real = to_longest = to_window = 0
for b in ds.loader("train", preset.batch_size, shuffle=True):
    real += b.num_tokens
    to_longest += b.batch_size * int(b.lengths.max())  # pad to the longest history of each batch
    to_window += b.batch_size * b.max_len  # pad to max_seq_len, as the reference trainer does
print(f"real tokens per epoch: {real:,}")
print(f"padded to each batch's longest: {to_longest:,} ({1 - real / to_longest:.0%} padding)")
print(f"padded to max_seq_len={ds.max_seq_len}: {to_window:,} ({1 - real / to_window:.0%} padding)")

# %% [markdown]
# ## Summary
#
# * Raw MovieLens files -> pandas tables -> per-user, time-sorted sequences (`ds.sequences`), the reference's
#   `sasrec_format.csv` if you want it.
# * Leave-one-out: test = last item, valid = second to last. Select on `valid` (`protocol="validation"`), report
#   `test` once.
# * Sort ties stably, or at least know that the reference does not: it changes the test item of many users.
# * Batches are jagged (`values`, `offsets`), gathered without Python loops, with a padded view on demand.
#
# Next: **02 · attention math**, where these batches meet softmax and HSTU's pointwise attention.
