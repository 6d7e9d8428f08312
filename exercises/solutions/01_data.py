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
# # Exercises 01: per-user sequences and the leave-one-out split
#
# Companion of [`notebooks/01_data_format`](../notebooks/01_data_format.ipynb). A generative recommender reads
# each user's actions as a time-ordered sequence, so the data pipeline is: ratings table → one sequence per
# user, sorted by time → train / valid / test examples. Two small functions carry most of the pitfalls:
# ties in timestamps, and leaking the item you evaluate on into training.
#
# Each check builds tables and sequences with edge cases (a user with a single rating, same-second ties,
# histories longer than the window) and compares with `hstu_tutorial.data`. Unsolved stubs print
# *not attempted yet*; hints unfold one at a time.
#
# > **中文摘要**：你要写两个函数：按时间排序的用户序列（同一秒内的评分保持稳定顺序），以及带历史窗口的留一法
# > train / valid / test 切分。每个 `check_...` 单元格用边界用例对比 `hstu_tutorial.data` 并指出错在哪里，
# > 通过后自动勾选学习清单。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/01_data.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import pandas as pd

import hstu_tutorial
from hstu_tutorial import checks
from hstu_tutorial.data import get_reco_dataset

preset = hstu_tutorial.get_preset()
dataset = get_reco_dataset(preset.dataset, max_seq_len=preset.max_seq_len)
ratings = dataset.ratings_df       # one row per rating, in file order
ratings.head()


# %% [markdown]
# ## 1. Per-user sequences
#
# Group the ratings by user and sort each user's ratings by timestamp, **oldest first**. MovieLens has many
# ratings in the same second (a user rating a batch of films): keep such ties in their **file order** by using a
# *stable* sort. The reference implementation uses pandas' default (unstable) sort, so the order inside ties
# is arbitrary there, and so is part of what its model learns and is evaluated on.
#
# Write `build_user_sequences(ratings_df)`: input columns `user_id, item_id, rating, timestamp`; output one row
# per user, sorted by `user_id`, with columns `user_id, sequence_item_ids, sequence_ratings,
# sequence_timestamps` (Python lists, aligned, oldest first).

# %%
def build_user_sequences(ratings_df):
    """Ratings table -> one row per user with time-sorted lists (ties keep their file order)."""
    # BEGIN SOLUTION
    ordered = ratings_df.sort_values(["user_id", "timestamp"], kind="stable")  # stable: ties keep file order
    grouped = ordered.groupby("user_id", sort=True)
    return pd.DataFrame({
        "user_id": list(grouped.groups),
        "sequence_item_ids": grouped["item_id"].apply(list).tolist(),
        "sequence_ratings": grouped["rating"].apply(list).tolist(),
        "sequence_timestamps": grouped["timestamp"].apply(list).tolist(),
    })
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_user_sequences(build_user_sequences)


# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `ratings_df.sort_values([...], kind="stable")` sorts by several columns at once; sorting by
# `["user_id", "timestamp"]` groups users and orders each user's ratings in time.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `groupby("user_id")` keeps the row order inside each group; `grouped["item_id"].apply(list)` gives one list
# per user. Build the DataFrame from those lists.
# </details>
#
# <details><summary>Hint 3 (the tie pitfall)</summary>
#
# `sort_values("timestamp")` alone uses quicksort, which is **not** stable: two ratings of the same second may
# swap places. Pass `kind="stable"` (or `"mergesort"`).
# </details>

# %% [markdown]
# ## 2. The leave-one-out split
#
# For one user with time-sorted items $s_0, \dots, s_{L-1}$ (the protocol of the paper and of SASRec):
#
# | split | history | target |
# | --- | --- | --- |
# | test | $s_{0..L-2}$ | $s_{L-1}$ (the last item) |
# | valid | $s_{0..L-3}$ | $s_{L-2}$ |
# | train, protocol `"reference"` | $s_{0..L-3}$ | $s_{L-2}$ (everything but the test item) |
# | train, protocol `"validation"` | $s_{0..L-4}$ | $s_{L-3}$ (the valid item is held out too) |
#
# A history keeps its most recent `max_len` items; an example whose history would be empty is skipped
# (`None`). Training supervises every position of the history (position $i$ predicts item $i+1$, the last
# position predicts the target), so the target must never appear inside its own history.
#
# The reference has no validation split: it reports test metrics after every epoch, so choosing the epoch by
# them tunes on the test set. The `"validation"` protocol is the honest variant.
#
# Write `leave_one_out(items, max_len, protocol="reference")` → `{"train": ..., "valid": ..., "test": ...}`,
# each `(history_list, target)` or `None`.

# %%
def leave_one_out(items, max_len, protocol="reference"):
    """One user's time-sorted items -> {split: (history, target) or None}."""
    # BEGIN SOLUTION
    def example(drop):
        cut = len(items) - drop  # index of the target
        if cut < 1:
            return None  # the history would be empty
        return items[max(0, cut - max_len):cut], items[cut]

    train_drop = 2 if protocol == "reference" else 3
    return {"train": example(train_drop), "valid": example(2), "test": example(1)}
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_leave_one_out(leave_one_out)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# All three splits are "drop the last `m` items, predict the next one": the target is `items[len(items) - m]`
# with `m = 1` for test, `2` for valid, `2` or `3` for train.
# </details>
#
# <details><summary>Hint 2</summary>
#
# The history is everything before the target, cut to the most recent `max_len`: `items[:cut][-max_len:]`.
# Return `None` when `cut < 1`.
# </details>

# %% [markdown]
# ## Use it: one user, and the whole dataset
#
# The next cells use the package's version unless you set `use_mine = True`.

# %%
use_mine = False  # set to True once both checks pass

if use_mine:
    sequences = build_user_sequences(ratings)
else:
    sequences = dataset.sequences
user = sequences.iloc[0]
items = list(user["sequence_item_ids"])
print(f"user {user['user_id']}: {len(items)} ratings, first items {items[:6]} ...")

# %%
# the dataset's own examples for this user: what the loaders feed the model
user_id = int(user["user_id"])
for name in ("train", "valid", "test"):
    split = getattr(dataset, name)
    row = int((split.user_ids == user_id).nonzero()[0, 0])
    history, target = split.histories()[row], int(split.target_item_ids[row])
    print(f"{name:>5}: history of {len(history)} items, ending {history[-4:]} -> target {target}")
    if use_mine:
        mine = leave_one_out(items, dataset.max_seq_len, protocol=dataset.protocol)[name]
        assert mine == (history, target), f"{name}: yours {mine} differs from the dataset's"

# %%
lengths = {name: len(getattr(dataset, name)) for name in ("train", "valid", "test")}
print(f"{dataset.num_users} users -> examples per split: {lengths}")
print(f"the test targets are every user's last item; train uses the valid item as its target under the "
      f"'{dataset.protocol}' protocol")

# %% [markdown]
# ## What you built
#
# Time-sorted sequences with stable ties, and the leave-one-out split with a history window. Notebook 01 shows
# the consequences on real data: the length distribution, the popularity long tail, and the same-second ties that
# make an unstable sort change the data.
