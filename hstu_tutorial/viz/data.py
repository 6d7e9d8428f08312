"""Pictures of a dataset: history lengths, popularity, activity over time, time gaps, padded vs jagged,
seaborn distributions; and the label that says which data a notebook runs on.

Every function returns `(fig, data)`: the figure and the data it drew.
"""

from __future__ import annotations

from hstu_tutorial.viz._style import new_axes


def dataset_label(dataset) -> str:
    """What a notebook runs on, from the dataset's folder: "MovieLens-1M, users 1-2999
    (data/ml-1m-u2999)", "MovieLens-1M, all 6,040 users (data/ml-1m)" or "synthetic look-alike ..."."""
    from hstu_tutorial.data import data_root

    folder = dataset.folder
    try:
        where = f"data/{folder.relative_to(data_root())}"
    except ValueError:  # outside data/: the synthetic cache, or a folder given explicitly
        where = folder.name
    users = dataset.ratings_df["user_id"]
    lo, hi, n = int(users.min()), int(users.max()), int(users.nunique())
    if dataset.name != "ml-1m":
        return f"synthetic look-alike of MovieLens ({n:,} users, {where})"
    who = f"all {n:,} users" if n == 6040 else f"users {lo}-{hi}" if hi - lo + 1 == n else f"{n:,} users"
    return f"MovieLens-1M, {who} ({where})"


def _user_of_position(offsets):
    import numpy as np

    offsets = np.asarray(offsets)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # (T,) owner of each position


def hstu_time_bucket(d):
    """HSTU's log time bucket of gaps `d` in seconds (any array-like) as a numpy int64 array:
    `hstu_tutorial.ops.time_bucket`, the one definition the model uses (floor(ln(max(|d|, 1)) / 0.301),
    clamped to 0..128)."""
    import numpy as np
    import torch

    from hstu_tutorial.ops.hstu_attention import time_bucket

    # Gaps past e^(0.301 * 128) ~ 5e16 s all land in the last bucket; capping them keeps float32 finite.
    d = np.minimum(np.abs(np.asarray(d, dtype=np.float64)), 1e18)
    return time_bucket(torch.from_numpy(d)).numpy()


def plot_sequence_lengths(dataset, bins: int = 50, max_seq_len: int | None = None, ax=None):
    """Histogram of ratings per user (log-scaled counts), with the model's `max_seq_len` window marked.
    data: lengths `(U,)` and a summary (min, median, mean, max, share of users longer than the window)."""
    import numpy as np

    lengths = np.diff(dataset.flat.offsets)  # (U,)
    n = max_seq_len or dataset.max_seq_len
    fig, ax = new_axes(ax)
    ax.hist(lengths, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(n, color="tab:red", ls="--", label=f"max_seq_len = {n}")
    ax.set_yscale("log")
    ax.set_xlabel("ratings per user (sequence length)")
    ax.set_ylabel("users")
    ax.set_title(f"{dataset.name}: sequence lengths")
    ax.legend()
    fig.tight_layout()
    summary = {
        "users": len(lengths),
        "min": int(lengths.min()),
        "median": float(np.median(lengths)),
        "mean": float(lengths.mean()),
        "max": int(lengths.max()),
        "share_longer_than_window": float((lengths > n).mean()),
    }
    return fig, {"lengths": lengths, "summary": summary}


def plot_item_popularity(dataset, ax=None):
    """Ratings per item, items ranked by popularity (log-log): the long tail. data: counts `(I,)` in rank
    order (catalogue items never rated count 0), and the share of ratings of the top 1% / 10% of items."""
    import numpy as np

    rated = dataset.ratings_df["item_id"].value_counts()
    counts = np.zeros(len(dataset.catalogue), dtype=np.int64)
    counts[: len(rated)] = np.sort(rated.to_numpy())[::-1]
    ranks = np.arange(1, len(counts) + 1)
    fig, ax = new_axes(ax)
    ax.loglog(ranks[counts > 0], counts[counts > 0], color="tab:purple")
    ax.set_xlabel("item rank (most rated first)")
    ax.set_ylabel("ratings")
    total = counts.sum()
    top = {
        f"top_{p}pct_share": float(counts[: max(1, len(counts) * p // 100)].sum() / total) for p in (1, 10)
    }
    share = top["top_10pct_share"]
    ax.set_title(f"{dataset.name}: item popularity (top 10% of items: {share:.0%} of ratings)")
    fig.tight_layout()
    return fig, {"counts": counts, "never_rated": int((counts == 0).sum()), **top}


def plot_ratings_over_time(dataset, freq: str = "W", ax=None):
    """Ratings per calendar period (`freq`: pandas offset alias, default weeks). data: a pandas Series."""
    import pandas as pd

    when = pd.to_datetime(dataset.ratings_df["timestamp"], unit="s")
    per = when.dt.to_period(freq).value_counts().sort_index()
    per.index = per.index.to_timestamp()
    fig, ax = new_axes(ax)
    ax.plot(per.index, per.to_numpy(), color="tab:green")
    ax.set_yscale("log")
    ax.set_ylabel(f"ratings per {freq}")
    ax.set_title(f"{dataset.name}: ratings over time")
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig, per


def plot_time_gaps(dataset, ax=None):
    """Seconds between consecutive ratings of the same user, on a log axis, with HSTU's time buckets on top:
    bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, 128), so each bucket is a factor e^0.301 ~ 1.35 wide.
    data: gaps `(T-U,)`, the share of zero gaps (same-second ties), the count of gaps per bucket `(129,)`."""
    import numpy as np

    f = dataset.flat
    user = _user_of_position(f.offsets)  # (T,)
    same = user[1:] == user[:-1]
    gaps = np.diff(f.timestamps)[same]  # (T-U,)
    buckets = np.bincount(hstu_time_bucket(gaps), minlength=129)
    fig, ax = new_axes(ax, figsize=(6.5, 3.4))
    edges = np.logspace(0, np.log10(max(gaps.max(), 10)) + 0.1, 60)
    ax.hist(np.maximum(gaps, 1), bins=edges, color="tab:orange", alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("gap to the user's previous rating (s); gaps of 0 s drawn at 1 s")
    ax.set_ylabel("pairs")
    for sec, name in ((60, "1 min"), (3600, "1 h"), (86400, "1 day"), (30 * 86400, "30 days")):
        ax.axvline(sec, color="grey", lw=0.8, ls=":")
        ax.text(sec, ax.get_ylim()[1] * 0.9, name, fontsize=7, ha="center", color="grey")
    top = ax.secondary_xaxis(
        "top",
        functions=(
            lambda s: np.log(np.maximum(s, 1e-9)) / 0.301,
            lambda b: np.exp(np.clip(b, -100, 200) * 0.301),
        ),
    )
    top.set_xlabel("HSTU time bucket", fontsize=8)
    zero = float((gaps == 0).mean())
    ax.set_title(f"{dataset.name}: time between actions ({zero:.0%} in the same second)", fontsize=10)
    fig.tight_layout()
    return fig, {"gaps": gaps, "zero_share": zero, "bucket_counts": buckets}


def plot_padded_vs_jagged(batch, field: str = "item_ids", ax=None):
    """The same batch twice: padded `(B, N)` (grey = padding, wasted work) and jagged `values (T,)` cut by
    `offsets (B+1,)`. data: the padded array, the jagged values, offsets and the padding share."""
    import matplotlib.pyplot as plt
    import numpy as np

    padded = batch.padded(field).cpu().numpy()  # (B, N)
    mask = batch.mask().cpu().numpy()  # (B, N)
    values = getattr(batch, field).cpu().numpy()  # (T,)
    offsets = batch.offsets.cpu().numpy()  # (B+1,)
    B, N = padded.shape
    if ax is None:
        fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(7.0, 3.6), dpi=80, height_ratios=[B, 1.6])
    else:
        fig, (ax0, ax1) = ax.figure, ax
    row_id = np.where(mask, np.arange(B)[:, None] % 10, np.nan)
    ax0.imshow(row_id, cmap="tab10", vmin=0, vmax=9, aspect="auto", interpolation="nearest")
    pad = np.where(mask, np.nan, 1.0)
    ax0.imshow(pad, cmap="Greys", vmin=0, vmax=2, aspect="auto", interpolation="nearest")
    ax0.set_title(f"padded (B={B}, N={N}): {1 - mask.mean():.0%} of the cells are padding", fontsize=9)
    ax0.set_ylabel("sequence b")
    ax0.set_xlabel("position")
    seq = _user_of_position(offsets)  # (T,)
    ax1.imshow((seq % 10)[None, :], cmap="tab10", vmin=0, vmax=9, aspect="auto", interpolation="nearest")
    for o in offsets[1:-1]:
        ax1.axvline(o - 0.5, color="black", lw=0.8)
    ax1.set_yticks([])
    ax1.set_xlabel(f"jagged values (T={len(values)}), split at offsets")
    fig.tight_layout()
    share = float(1 - mask.mean())
    return fig, {"padded": padded, "values": values, "offsets": offsets, "padding_share": share}


def plot_distributions(dataset):
    """Three seaborn distributions of a dataset: ratings per user (log x), seconds between a user's
    consecutive ratings (log x, same-second ties at 1 s), ratings per item (log x, every catalogue item).
    data: the three arrays and their medians."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    f = dataset.flat
    lengths = np.diff(f.offsets)  # (U,)
    user = _user_of_position(f.offsets)  # (T,)
    gaps = np.diff(f.timestamps)[user[1:] == user[:-1]]  # (T-U,)
    rated = dataset.ratings_df["item_id"].value_counts()
    per_item = np.zeros(len(dataset.catalogue), dtype=np.int64)  # (I,)
    per_item[: len(rated)] = rated.to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.2), dpi=80)
    sns.histplot(x=lengths, log_scale=True, bins=40, kde=True, ax=axes[0], color="tab:blue")
    axes[0].axvline(dataset.max_seq_len, color="tab:red", ls="--", label=f"max_seq_len {dataset.max_seq_len}")
    axes[0].legend(fontsize=7)
    axes[0].set(
        xlabel="ratings per user", ylabel="users", title=f"history length (median {np.median(lengths):.0f})"
    )
    sns.histplot(x=np.maximum(gaps, 1), log_scale=True, bins=50, ax=axes[1], color="tab:orange")
    for sec, name in ((60, "1 min"), (86400, "1 day")):
        axes[1].axvline(sec, color="grey", lw=0.8, ls=":")
        axes[1].text(sec, axes[1].get_ylim()[1] * 0.92, name, fontsize=7, ha="center", color="grey")
    axes[1].set(
        xlabel="seconds to the previous rating (0 s at 1 s)", ylabel="pairs", title="inter-action gaps"
    )
    sns.histplot(x=np.maximum(per_item, 1), log_scale=True, bins=40, ax=axes[2], color="tab:purple")
    axes[2].set(
        xlabel="ratings per item (unrated at 1)",
        ylabel="items",
        title=f"item popularity (median {np.median(per_item):.0f})",
    )
    for ax in axes:
        ax.title.set_fontsize(9)
    fig.suptitle(dataset_label(dataset), fontsize=9)
    fig.tight_layout()
    medians = {
        "length": float(np.median(lengths)),
        "gap_s": float(np.median(gaps)),
        "per_item": float(np.median(per_item)),
    }
    return fig, {"lengths": lengths, "gaps": gaps, "per_item": per_item, "medians": medians}


def plot_padding_fraction(dataset, batch_sizes=(8, 32, 128), split: str = "train", seed: int = 0):
    """Per batch of an epoch (shuffled with `seed`), the share of the batch that is padding when padded
    to its longest history, one seaborn distribution per batch size, with the share when padded to the
    window (max_seq_len) marked. data: a pandas DataFrame with one row per batch (batch size, both
    shares, real tokens)."""
    import pandas as pd
    import seaborn as sns

    rows = []
    for size in batch_sizes:
        for b in dataset.loader(split, size, shuffle=True, seed=seed):
            real = b.num_tokens
            rows.append(
                {
                    "batch size": size,
                    "to the longest": 1 - real / (b.batch_size * int(b.lengths.max())),
                    "to the window": 1 - real / (b.batch_size * b.max_len),
                    "tokens": real,
                    "window cells": b.batch_size * b.max_len,
                }
            )
    frame = pd.DataFrame(rows)
    fig, ax = new_axes(None, figsize=(6.4, 3.1))
    sns.histplot(
        frame,
        x="to the longest",
        hue="batch size",
        bins=40,
        binrange=(0, 1),
        element="step",
        stat="density",
        common_norm=False,
        palette="viridis",
        ax=ax,
    )
    first = frame[frame["batch size"] == batch_sizes[0]]  # one epoch: every history once
    window = 1 - first["tokens"].sum() / first["window cells"].sum()
    ax.axvline(window, color="tab:red", ls="--", lw=1)
    ax.text(
        window, ax.get_ylim()[1] * 0.95, f" padded to the window: {window:.0%}", color="tab:red", fontsize=7
    )
    ax.set_xlabel("share of a batch that is padding, padded to its longest history")
    ax.set_ylabel("density of batches")
    ax.set_title(f"{dataset_label(dataset)}: padding per batch", fontsize=9)
    fig.tight_layout()
    return fig, frame
