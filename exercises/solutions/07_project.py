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
# # Exercises 07 · Project: apply HSTU to a new dataset
#
# The walkthrough trained HSTU on MovieLens-1M. A real project starts from *someone else's* data: another file
# format, other id ranges, other time scales. This guided project takes a new dataset through the whole
# pipeline and ends with a small, honest report: HR@10 and NDCG@10 of HSTU and SASRec next to a popularity
# baseline, on a validation-selected epoch.
#
# **The data.** In the small preset (CPU, CI) the "new dataset" is a *synthetic variant* written in
# **ML-100K's format** (`u.data`: tab-separated `user, item, rating, timestamp`), so everything runs in a
# minute or two. With the full preset on a machine that has `data/ml-100k/` (MovieLens-100K, 943 users, 1,682
# movies), the same cells use the real thing.
#
# Steps: (1) read the raw file — an exercise with a check; (2) convert it to the layout the package reads and
# load it as jagged batches; (3) train HSTU and SASRec and compare with popularity; (4) your turn: questions
# to explore, and a record of what you ran.
#
# > **中文摘要**：开放项目：把 HSTU 用到一个新数据集（CPU 上是 ML-100K 格式的合成变体，有 `data/ml-100k/` 时用真实数据）。
# > 你要读入原始文件（有检查），接入数据管线，训练 HSTU 与 SASRec 并与流行度基线比较，最后记录你做了什么。

# %% [markdown]
# <!-- SOLUTION ONLY -->
# **Solution version.** The learner notebook `exercises/07_project.ipynb` is generated from this one by `tools/make_exercises.py`.

# %%
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import hstu_tutorial
from hstu_tutorial import checks, metrics
from hstu_tutorial.data import data_root, get_reco_dataset
from hstu_tutorial.train import train

preset = hstu_tutorial.get_preset()
work = Path(tempfile.mkdtemp(prefix="hstu-project-"))  # everything this notebook writes goes here

real = data_root() / "ml-100k"
if preset.name == "full" and (real / "u.data").exists():
    raw_file, source = real / "u.data", "MovieLens-100K (data/ml-100k)"
else:
    # a synthetic variant: another seed of the generator, rows shuffled, written as ML-100K's u.data
    variant = get_reco_dataset("synthetic", max_seq_len=preset.max_seq_len, seed=1, verbose=False).ratings_df
    variant = variant.sample(frac=1.0, random_state=0)
    raw_file, source = work / "u.data", "a synthetic variant in ML-100K's format"
    raw_file.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in variant.itertuples(index=False)))
print(f"new dataset: {source}; first lines of {raw_file.name}:")
print("".join(raw_file.open().readlines()[:3]), end="")


# %% [markdown]
# ## 1. Read the raw file
#
# Write `read_u_data(path)`: a DataFrame with int64 columns `user_id, item_id, rating, timestamp`, one row per
# line, **in file order** (sorting per user and by time is the pipeline's job, and it needs the file order to
# keep same-second ties stable). The file has no header line. The check writes small `u.data` files and
# compares with the package's ML-100K reader.

# %%
def read_u_data(path):
    """ML-100K u.data (tab-separated user, item, rating, timestamp) -> ratings DataFrame, file order."""
    # BEGIN SOLUTION
    return pd.read_csv(path, sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"],
                       dtype="int64")
    # END SOLUTION


# %% tags=["nbval-check-output"]
ok = checks.check_ratings_table(read_u_data)

# %% [markdown]
# <details><summary>Hint 1</summary>
#
# `pd.read_csv(path, sep="\t", header=None, names=[...])`: without `header=None` the first rating becomes the
# column names.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `dtype="int64"` makes every column an integer; do not sort.
# </details>

# %% [markdown]
# ## 2. Into the pipeline
#
# The package reads MovieLens-1M's layout from any folder (`ratings.dat` as `UserID::MovieID::Rating::Timestamp`,
# `movies.dat`, `users.dat`), so the most general route for a new dataset is to write those three files. Item
# titles and user features are not used by the model; placeholders do. Then `get_reco_dataset` gives the
# leave-one-out splits as jagged batches, here with the honest **validation** protocol (the epoch is chosen on
# the second-to-last item, the test item is only read at the end).

# %%
use_mine = False  # set to True once check_ratings_table passes

if use_mine:
    ratings = read_u_data(raw_file)
else:
    ratings = pd.read_csv(raw_file, sep="\t", header=None, names=["user_id", "item_id", "rating", "timestamp"])


def write_ml1m_layout(ratings, folder):
    # ratings.dat, movies.dat, users.dat in ML-1M's format (titles and user features are placeholders)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ratings[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False)
    (folder / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in rows))
    items = sorted(ratings["item_id"].unique())
    (folder / "movies.dat").write_text("".join(f"{i}::Item {i} (2000)::Drama\n" for i in items),
                                       encoding="latin-1")
    users = sorted(ratings["user_id"].unique())
    (folder / "users.dat").write_text("".join(f"{u}::M::25::0::00000\n" for u in users))
    return folder


folder = write_ml1m_layout(ratings, work / "new-dataset")
dataset = get_reco_dataset("ml-1m", data_dir=folder, max_seq_len=preset.max_seq_len, protocol="validation")
lengths = dataset.sequences["sequence_item_ids"].map(len)
print(f"{dataset.num_users} users, {len(dataset.catalogue)} items, {len(ratings)} ratings; "
      f"history length median {int(lengths.median())}, max {int(lengths.max())}")

# %% [markdown]
# ## 3. Train HSTU and SASRec, compare with popularity
#
# The package's trainer with the small synthetic configs (`hstu_tutorial/configs/synthetic/`), on the dataset
# above. Each epoch evaluates validation and test; `best_by_valid` reports the test metrics of the epoch with
# the best validation NDCG@10. In the small preset this is a few epochs on a CPU: enough to beat popularity
# on this data, far from converged.

# %%
epochs = preset.num_epochs if preset.name == "full" else 2
runs = {}
for model in ("hstu", "sasrec"):
    runs[model.upper().replace("SASREC", "SASRec")] = train(
        f"synthetic/{model}-small", dataset=dataset, max_seq_len=preset.max_seq_len, num_epochs=epochs,
        exp_dir=str(work / "exps"), tensorboard=False, progress=False, verbose=False)
popular = metrics.popularity_baseline(dataset, "test", ks=(10,))

table = pd.DataFrame({name: {"HR@10": r["best_by_valid"]["test"]["hr@10"],
                             "NDCG@10": r["best_by_valid"]["test"]["ndcg@10"],
                             "epoch": r["best_by_valid"]["epoch"],
                             "s/epoch": r["timing"]["s_per_epoch"]} for name, r in runs.items()}).T
table.loc["popularity"] = [popular["hr@10"], popular["ndcg@10"], None, None]
print(f"{source}, {epochs} epochs, validation protocol:")
print(table.round(4).to_string())

# %% [markdown]
# The check takes the runs exactly as `train()` returned them (a run folder or its `results.json` works too)
# and the dataset. It does not take numbers on trust: it checks that each run was trained on this dataset
# (the fingerprint in `results.json`), recomputes the reported test metrics from the run's saved ranks
# (`ranks_test.csv`) and best weights (`ckpt_best.pt`), computes the popularity baseline itself, and passes
# when the best run beats it on both HR@10 and NDCG@10.

# %%
if use_mine:  # your reader fed the pipeline: record the project in your checklist
    ok = checks.check_project_results(runs, dataset)
else:
    print("Set use_mine = True (once check_ratings_table passes) and re-run to record the project.")

# %%
# SOLUTION ONLY: the solution's reader is the one above, so its runs can be checked here
ok = checks.check_project_results(runs, dataset)

# %% [markdown]
# ## 4. Your turn
#
# Pick one or two of these, change the cells above (or run `python -m hstu_tutorial.train --config ... --set
# key=value`), and add a row to the record below for every run you keep.
#
# 1. **Epochs.** Train until validation NDCG@10 stops improving (`early_stopping_patience = 5`). How far is the
#    best epoch from the last? What does that say about reporting test metrics every epoch?
# 2. **History window.** ML-100K users are long-tailed. Compare `max_seq_len` 50 and 200: what fraction of the
#    histories is cut, and does HSTU gain more from the longer window than SASRec?
# 3. **The divisor n.** HSTU divides attention by a constant `n` (`max_seq_len + 11` by default). Try the true
#    length instead (a change in `ops.hstu_attention`'s `norm`): does the intensity signal matter here?
# 4. **Capacity and negatives.** `num_blocks`, `num_heads`, `num_negatives` (64, 128, 512): which one buys the
#    most NDCG@10 per second of training?
# 5. **Where does HSTU win?** Every run saved each test user's rank in `ranks_test.csv` (in `runs[name]["run_dir"]`):
#    split users by history length and by the popularity of their test item with `per_bucket_metrics`
#    (exercise 06, section 3) and compare the two models.
#
# | date | dataset | model | config changes | epochs (best) | HR@10 | NDCG@10 | s/epoch | machine |
# | --- | --- | --- | --- | --- | --- | --- | --- | --- |
# | | | | | | | | | |
#
# Notebook 08 shows a record template that the trainer fills in automatically from a run's results.
