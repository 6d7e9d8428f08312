"""Plots for the walkthrough. Every function returns `(fig, data)`: the figure and the data it drew."""

from __future__ import annotations

# ---- section: data plots (owner: data) -------------------------------------------------------------


def _new_axes(ax, figsize=(6.0, 3.2)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, dpi=80)
    return fig, ax


def _user_of_position(offsets):
    import numpy as np

    offsets = np.asarray(offsets)
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))  # (T,) owner of each position


def hstu_time_bucket(d):
    """HSTU's log time bucket of a gap `d` in seconds: clamp(floor(ln(max(|d|, 1)) / 0.301), 0, 128)."""
    import numpy as np

    d = np.maximum(np.abs(np.asarray(d, dtype=np.float64)), 1.0)
    return np.clip(np.floor(np.log(d) / 0.301), 0, 128).astype(np.int64)


def plot_sequence_lengths(dataset, bins: int = 50, max_seq_len: int | None = None, ax=None):
    """Histogram of ratings per user (log-scaled counts), with the model's `max_seq_len` window marked.
    data: lengths `(U,)` and a summary (min, median, mean, max, share of users longer than the window)."""
    import numpy as np

    lengths = np.diff(dataset.flat.offsets)  # (U,)
    n = max_seq_len or dataset.max_seq_len
    fig, ax = _new_axes(ax)
    ax.hist(lengths, bins=bins, color="tab:blue", alpha=0.8)
    ax.axvline(n, color="tab:red", ls="--", label=f"max_seq_len = {n}")
    ax.set_yscale("log")
    ax.set_xlabel("ratings per user (sequence length)")
    ax.set_ylabel("users")
    ax.set_title(f"{dataset.name}: sequence lengths")
    ax.legend()
    fig.tight_layout()
    summary = {"users": len(lengths), "min": int(lengths.min()), "median": float(np.median(lengths)),
               "mean": float(lengths.mean()), "max": int(lengths.max()), "share_longer_than_window":
               float((lengths > n).mean())}
    return fig, {"lengths": lengths, "summary": summary}


def plot_item_popularity(dataset, ax=None):
    """Ratings per item, items ranked by popularity (log-log): the long tail. data: counts `(I,)` in rank
    order (catalogue items never rated count 0), and the share of ratings of the top 1% / 10% of items."""
    import numpy as np

    rated = dataset.ratings_df["item_id"].value_counts()
    counts = np.zeros(len(dataset.catalogue), dtype=np.int64)
    counts[: len(rated)] = np.sort(rated.to_numpy())[::-1]
    ranks = np.arange(1, len(counts) + 1)
    fig, ax = _new_axes(ax)
    ax.loglog(ranks[counts > 0], counts[counts > 0], color="tab:purple")
    ax.set_xlabel("item rank (most rated first)")
    ax.set_ylabel("ratings")
    total = counts.sum()
    top = {f"top_{p}pct_share": float(counts[: max(1, len(counts) * p // 100)].sum() / total)
           for p in (1, 10)}
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
    fig, ax = _new_axes(ax)
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
    fig, ax = _new_axes(ax, figsize=(6.5, 3.4))
    edges = np.logspace(0, np.log10(max(gaps.max(), 10)) + 0.1, 60)
    ax.hist(np.maximum(gaps, 1), bins=edges, color="tab:orange", alpha=0.85)
    ax.set_xscale("log")
    ax.set_xlabel("gap to the user's previous rating (s); gaps of 0 s drawn at 1 s")
    ax.set_ylabel("pairs")
    for sec, name in ((60, "1 min"), (3600, "1 h"), (86400, "1 day"), (30 * 86400, "30 days")):
        ax.axvline(sec, color="grey", lw=0.8, ls=":")
        ax.text(sec, ax.get_ylim()[1] * 0.9, name, fontsize=7, ha="center", color="grey")
    top = ax.secondary_xaxis("top", functions=(lambda s: np.log(np.maximum(s, 1e-9)) / 0.301,
                                               lambda b: np.exp(np.clip(b, -100, 200) * 0.301)))
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


# ---- section: attention maps, masks, jagged layout, explorers (owner: model core) -------------------


def _short_title(title: str, width: int = 24) -> str:
    return title if len(title) <= width else title[: width - 1] + "…"


def _item_labels(item_ids, item_titles=None, width: int = 24):
    """Axis labels for a list of item ids: movie titles when `item_titles` (id -> title) is given."""
    if not item_titles:
        return [f"item {int(i)}" for i in item_ids]
    return [_short_title(str(item_titles.get(int(i), f"item {int(i)}")), width) for i in item_ids]


def user_attention_maps(model, batch, user_index: int = 0, max_items: int | None = None):
    """Run `model` (eval mode, no grad) with `return_attention=True` and cut out one history.

    Returns a dict: `maps` numpy `(layers, H, L, L)` (row = query position, column = key), `item_ids (L,)`,
    `user_id`, `length` L; with `max_items`, only the last `max_items` positions (rows and columns).
    """
    import torch

    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, maps = model(batch, return_attention=True)  # list of (B, H, N, N)
    model.train(was_training)
    s, e = int(batch.offsets[user_index]), int(batch.offsets[user_index + 1])
    L = e - s
    first = 0 if max_items is None else max(0, L - max_items)
    cut = [m[user_index, :, first:L, first:L].float().cpu() for m in maps]  # each (H, l, l)
    stacked = torch.stack(cut)  # (layers, H, l, l)
    user_ids = getattr(batch, "user_ids", None)
    return {
        "maps": stacked.numpy(),
        "item_ids": batch.item_ids[s + first:e].cpu().numpy(),
        "user_id": int(user_ids[user_index]) if user_ids is not None else user_index,
        "length": L,
        "first_position": first,
    }


def plot_attention_map(attn, labels=None, title: str = "", ax=None, diverging: bool = True):
    """One attention matrix `(L, L)` as a heatmap (rows: queries, columns: keys), labels on both axes.

    `diverging=True` centres the colour scale at 0 (HSTU's SiLU weights can be negative); use False for
    softmax weights. data: the matrix drawn and the colour range.
    """
    import numpy as np

    attn = np.asarray(attn, dtype=np.float64)
    L = attn.shape[0]
    fig, ax = _new_axes(ax, figsize=(max(4.0, 0.22 * L + 2.5), max(3.5, 0.22 * L + 1.5)))
    if diverging:
        vmax = float(np.abs(attn).max()) or 1.0
        im = ax.imshow(attn, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
        vmin = -vmax
    else:
        vmin, vmax = 0.0, float(attn.max()) or 1.0
        im = ax.imshow(attn, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    if labels is not None:
        fs = 7 if L <= 20 else 5
        ax.set_xticks(range(L), labels, rotation=90, fontsize=fs)
        ax.set_yticks(range(L), labels, fontsize=fs)
    ax.set_xlabel("key j (attended item)")
    ax.set_ylabel("query i")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig, {"attention": attn, "vmin": vmin, "vmax": vmax}


def plot_attention_maps(model, batch, user_index: int = 0, item_titles=None, max_items: int = 20,
                        diverging: bool | None = None):
    """Attention of every layer and head for one user, movie titles on the axes (last `max_items` items).

    `model`: an encoder whose forward accepts `return_attention=True` (HSTU or SASRec). data: the dict of
    `user_attention_maps` plus the axis `labels`.
    """
    import matplotlib.pyplot as plt

    data = user_attention_maps(model, batch, user_index, max_items)
    maps = data["maps"]  # (layers, H, l, l)
    n_layers, H, l = maps.shape[0], maps.shape[1], maps.shape[2]
    labels = _item_labels(data["item_ids"], item_titles)
    if diverging is None:
        diverging = bool((maps < 0).any())
    size = max(3.0, 0.2 * l + 1.6)
    fig, axes = plt.subplots(n_layers, H, figsize=(size * H + 0.5, size * n_layers), dpi=80, squeeze=False)
    for layer in range(n_layers):
        for h in range(H):
            ax = axes[layer][h]
            plot_attention_map(maps[layer, h], labels if l <= 40 else None,
                               f"layer {layer}, head {h}", ax=ax, diverging=diverging)
            if h:
                ax.set_ylabel("")
                ax.set_yticks([])
            if layer < n_layers - 1:
                ax.set_xlabel("")
                ax.set_xticks([])
    kind = type(model).__name__.replace("Encoder", "")
    title = f"{kind} attention, user {data['user_id']} (last {l} of {data['length']} items)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, {**data, "labels": labels}


def plot_masks(lengths, max_len: int | None = None):
    """Three pictures of "who may attend to whom" for a batch with these `lengths`:
    the causal mask `(N, N)`; the padded masks `(B, N, N)` (causal and both positions real); and the
    jagged (block-diagonal) causal mask over the concatenated `T` tokens. data: the three boolean arrays.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    lengths = [int(x) for x in lengths]
    N = max_len or max(lengths)
    B, T = len(lengths), sum(lengths)
    causal = np.tril(np.ones((N, N), dtype=bool))
    valid = np.arange(N)[None, :] < np.array(lengths)[:, None]  # (B, N)
    padded = causal[None] & valid[:, :, None] & valid[:, None, :]  # (B, N, N)
    seq = np.repeat(np.arange(B), lengths)  # (T,)
    pos = np.concatenate([np.arange(n) for n in lengths]) if T else np.zeros(0, dtype=int)
    jagged = (seq[:, None] == seq[None, :]) & (pos[None, :] <= pos[:, None])  # (T, T)
    fig, axes = plt.subplots(1, 3, figsize=(10.0, 3.4), dpi=80, width_ratios=[1, 1.1, 1.4])
    axes[0].imshow(causal, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
    axes[0].set_title(f"causal mask (N={N}): j <= i", fontsize=9)
    # Padded masks side by side: allowed (blue), padding (grey) per sequence.
    strip = np.concatenate([np.where(valid[b][:, None] & valid[b][None, :], padded[b] * 1.0, 0.35)
                            for b in range(B)], axis=1)
    axes[1].imshow(strip, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest", aspect="auto")
    for b in range(1, B):
        axes[1].axvline(b * N - 0.5, color="black", lw=0.8)
    axes[1].set_title(f"padded: B={B} masks of N x N\n{1 - padded.sum() / (B * causal.sum()):.0%} of the "
                      "causal cells are padding", fontsize=9)
    axes[2].imshow(jagged, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest")
    for o in np.cumsum(lengths)[:-1]:
        axes[2].axvline(o - 0.5, color="tab:red", lw=0.6)
        axes[2].axhline(o - 0.5, color="tab:red", lw=0.6)
    axes[2].set_title(f"jagged: T={T} tokens, block-diagonal causal", fontsize=9)
    for ax in axes:
        ax.set_xlabel("key j")
        ax.set_ylabel("query i")
    fig.tight_layout()
    return fig, {"causal": causal, "padded": padded, "jagged": jagged}


def plot_jagged_layout(lengths, max_len: int | None = None):
    """Offsets-to-padded layout diagram: the jagged `values (T,)` with `offsets (B+1,)` on top, the
    padded `(B, N)` grid below, each token labelled with its jagged index t. data: `offsets` and
    `padded_index (B, N)` (the t stored at each padded cell, -1 for padding)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Rectangle

    lengths = [int(x) for x in lengths]
    B, T = len(lengths), sum(lengths)
    N = max_len or max(lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = -np.ones((B, N), dtype=np.int64)
    for b in range(B):  # a picture of a few cells: clarity over vectorisation
        index[b, : lengths[b]] = np.arange(offsets[b], offsets[b + 1])
    colors = plt.get_cmap("tab10")
    width = max(T, N)
    fig, ax = plt.subplots(figsize=(min(12.0, 0.45 * width + 2.0), 0.45 * (B + 4) + 0.6), dpi=80)
    top = B + 2.2
    for t in range(T):
        b = int(np.searchsorted(offsets, t, side="right") - 1)
        ax.add_patch(Rectangle((t, top), 1, 1, facecolor=colors(b % 10), alpha=0.6, edgecolor="black"))
        ax.text(t + 0.5, top + 0.5, str(t), ha="center", va="center", fontsize=7)
    for b, o in enumerate(offsets):
        ax.annotate(f"offsets[{b}]={o}", (o, top + 1), (o, top + 1.7), fontsize=7, ha="center",
                    arrowprops=dict(arrowstyle="->", lw=0.6))
    for b in range(B):
        y = B - 1 - b
        for i in range(N):
            t = index[b, i]
            pad = t < 0
            ax.add_patch(Rectangle((i, y), 1, 1, facecolor="lightgrey" if pad else colors(b % 10),
                                   alpha=0.6, edgecolor="black", hatch="//" if pad else None))
            ax.text(i + 0.5, y + 0.5, "pad" if pad else str(t), ha="center", va="center", fontsize=6)
        ax.text(-0.3, y + 0.5, f"b={b}", ha="right", va="center", fontsize=7)
    ax.text(0, top - 0.5, f"jagged values (T={T})", fontsize=8)
    ax.text(0, B + 0.3, f"padded (B={B}, N={N}): cell (b, i) holds values[offsets[b] + i]", fontsize=8)
    ax.set_xlim(-1.5, width + 0.5)
    ax.set_ylim(-0.5, top + 2.3)
    ax.axis("off")
    fig.tight_layout()
    return fig, {"offsets": offsets, "padded_index": index}


def plot_time_buckets(max_gap_seconds: float = 10**9, num_buckets: int = 128, ax=None):
    """HSTU's log time bucket `clamp(floor(ln(max(|d|,1)) / 0.301), 0, num_buckets)` against the gap d,
    with familiar durations marked. data: gaps and buckets."""
    import numpy as np
    import torch

    from hstu_tutorial.ops.hstu_attention import time_bucket

    gaps = np.unique(np.logspace(0, np.log10(max_gap_seconds), 400).astype(np.int64))
    buckets = time_bucket(torch.from_numpy(gaps), num_buckets).numpy()
    fig, ax = _new_axes(ax)
    ax.step(gaps, buckets, where="post", color="tab:blue")
    ax.set_xscale("log")
    marks = {"1 min": 60, "1 hour": 3600, "1 day": 86400, "1 week": 604800, "1 month": 2592000,
             "1 year": 31536000}
    for name, sec in marks.items():
        if sec <= max_gap_seconds:
            b = int(time_bucket(torch.tensor([sec]), num_buckets))
            ax.axvline(sec, color="grey", lw=0.5, ls=":")
            ax.text(sec, b + 2, f"{name}\n(bucket {b})", fontsize=7, ha="center")
    ax.set_xlabel("time gap |t_next(i) - t(j)| in seconds (log)")
    ax.set_ylabel("bucket (index into ts_w)")
    ax.set_title("relative attention bias: log time buckets", fontsize=9)
    fig.tight_layout()
    return fig, {"gaps": gaps, "buckets": buckets}


def attention_explorer(model, batch, item_titles=None, max_items: int = 20):
    """Interactive attention maps: pick the user (history in `batch`), the layer and the head; redraws.

    Uses ipywidgets when installed (imported here, lazily); otherwise prints how to get it and draws
    the first user, layer 0, head 0. Returns `(fig, data)`: the first drawing and a dict with the
    `widget` (None without ipywidgets) and `draw(user_index, layer, head)` to redraw from code.
    The widget shows each drawing as PNG bytes in an `ipywidgets.Image`, so it works under any
    matplotlib backend (`display(fig)` shows only a text repr when the backend is not `inline`).
    """
    import io

    import matplotlib.pyplot as plt

    cache = {}

    def maps_of(u):
        if u not in cache:
            cache[u] = user_attention_maps(model, batch, u, max_items)
        return cache[u]

    def draw(user_index=0, layer=0, head=0):
        d = maps_of(user_index)
        labels = _item_labels(d["item_ids"], item_titles)
        fig, _ = plot_attention_map(d["maps"][layer, head], labels,
                                    f"user {d['user_id']}, layer {layer}, head {head}",
                                    diverging=bool((d["maps"] < 0).any()))
        return fig

    first = maps_of(0)
    n_layers, H = first["maps"].shape[:2]
    B = len(batch.offsets) - 1
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        print("ipywidgets is not installed (pip install ipywidgets): showing user 0, layer 0, head 0; "
              "call data['draw'](user_index, layer, head) for others.")
        fig = draw(0, 0, 0)
        return fig, {"widget": None, "draw": draw, "maps": first}
    user_ids = getattr(batch, "user_ids", None)
    options = [(f"user {int(user_ids[b]) if user_ids is not None else b}", b) for b in range(B)]
    user_w = widgets.Dropdown(options=options, value=0, description="user")
    layer_w = widgets.IntSlider(0, 0, n_layers - 1, description="layer")
    head_w = widgets.IntSlider(0, 0, H - 1, description="head", disabled=H == 1)  # one head: nothing to pick
    caption = widgets.Label()  # what the picture shows, as text (read by screen readers and the browser test)
    image = widgets.Image(format="png", layout=widgets.Layout(align_self="flex-start"))  # natural size

    def redraw(*_):
        fig = draw(user_w.value, layer_w.value, head_w.value)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        plt.close(fig)
        image.value = buf.getvalue()
        d = maps_of(user_w.value)
        caption.value = (f"user {d['user_id']} · layer {layer_w.value} · head {head_w.value} · "
                         f"last {d['maps'].shape[-1]} of {d['length']} items")

    for w in (user_w, layer_w, head_w):
        w.observe(redraw, names="value")
    box = widgets.VBox([widgets.HBox([user_w, layer_w, head_w]), caption, image])
    box.add_class("hstu-attention-explorer")
    caption.add_class("hstu-attention-caption")
    display(box)
    redraw()
    fig = draw(0, 0, 0)
    plt.close(fig)  # the widget shows the live figure; this one is returned for inspection
    return fig, {"widget": box, "draw": draw, "maps": first}


# ---- section: Triton kernels (owner: triton kernels) -------------------------------------------------


def plot_tile_map(lengths, block_m: int = 16, block_n: int = 16, causal: bool = True, max_plots: int = 4):
    """Which (query tile, key tile) pairs the jagged causal kernel computes, one panel per sequence.

    Tiles cover the batch's padded (max_len x max_len) square, classified as the kernel does: "full"
    (no mask), "diagonal" (the causal mask applied inside), "skipped" (right of the diagonal: never
    loaded), "padding" (past the sequence: the program returns at once or never gets there).
    data: `status` list of (num_m_tiles, num_n_tiles) int arrays (0 padding, 1 skipped, 2 diagonal,
    3 full) and `counts` per status over the whole batch."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    lengths = [int(x) for x in lengths]
    N = max(lengths)
    nm, nn = -(-N // block_m), -(-N // block_n)
    names = ["padding", "skipped", "diagonal", "full"]
    status = []
    for L in lengths:
        st = np.zeros((nm, nn), dtype=np.int64)
        for a in range(nm):
            for c in range(nn):
                m0, n0 = a * block_m, c * block_n
                if m0 >= L or n0 >= L:
                    continue  # padding rows, or keys past the end
                if causal and n0 >= min(m0 + block_m, L):
                    st[a, c] = 1  # every key in the tile comes after every query: never visited
                elif causal and n0 + block_n - 1 > m0:
                    st[a, c] = 2  # straddles the diagonal: the causal `where` runs on it
                else:
                    st[a, c] = 3  # no mask (rows/keys past the end are loaded as zeros, adding nothing)
        status.append(st)
    counts = {name: int(sum((st == i).sum() for st in status)) for i, name in enumerate(names)}
    k = min(len(lengths), max_plots)
    fig, axes = plt.subplots(1, k, figsize=(2.6 * k + 0.6, 2.9), dpi=80, squeeze=False)
    cmap = ListedColormap(["#eeeeee", "#ffffff", "#f4a261", "#2a9d8f"])
    for ax, st, L in zip(axes[0], status, lengths):
        ax.imshow(st, cmap=cmap, vmin=0, vmax=3, extent=(0, nn * block_n, nm * block_m, 0))
        for x in range(0, nn * block_n + 1, block_n):
            ax.axvline(x, color="grey", lw=0.4)
        for y in range(0, nm * block_m + 1, block_m):
            ax.axhline(y, color="grey", lw=0.4)
        if causal:
            ax.plot([0, L], [0, L], color="black", lw=0.8)  # the diagonal j = i
        ax.set_title(f"L={L}", fontsize=9)
        ax.set_xlabel("key j", fontsize=8)
    axes[0][0].set_ylabel("query i", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=cmap(i), edgecolor="grey") for i in (3, 2, 1, 0)]
    fig.legend(handles, [f"{names[i]} ({counts[names[i]]})" for i in (3, 2, 1, 0)], loc="lower center",
               ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig, {"status": status, "counts": counts}


def plot_kernel_benchmark(payload, kind: str = "jagged", passes=("fwd", "fwdbwd"), impls=None):
    """TFLOP/s against max length from a bench_attention.py result (its JSON payload as a dict), one
    panel per pass; the title names the machine and date. data: {pass: {impl: [(N, TFLOP/s), ...]}}."""
    import matplotlib.pyplot as plt

    impls = impls or ["triton", "pytorch_padded", "pytorch_jagged", "torch_compile_padded",
                      "sdpa_softmax_padded"]
    rows = [r for r in payload["results"] if r["case"].startswith(kind + "-")]
    fig, axes = plt.subplots(1, len(passes), figsize=(5.0 * len(passes), 3.3), dpi=80, squeeze=False)
    data = {}
    for ax, tag in zip(axes[0], passes):
        data[tag] = {}
        for impl in impls:
            pts = sorted((r["N"], r[f"{impl}_{tag}_tflops"]) for r in rows if f"{impl}_{tag}_tflops" in r)
            if pts:
                data[tag][impl] = pts
                ax.plot(*zip(*pts), marker="o", label=impl, lw=2.2 if impl == "triton" else 1.2)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("max length N")
        ax.set_ylabel("TFLOP/s")
        ax.set_title({"fwd": "forward", "fwdbwd": "forward + backward"}.get(tag, tag), fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    meta = payload.get("meta", {})
    fig.suptitle(f"{kind} batches, bf16, causal, H=4, d=128 - {meta.get('device', '?')}, "
                 f"{str(meta.get('date', '?'))[:10]}", fontsize=10)
    fig.tight_layout()
    return fig, data


# ---- section: training curves and result tables (owner: training) -----------------------------------


def _histories(runs) -> dict:
    """{name: history list} from {name: history list | results dict | Trainer} (or one of those)."""
    if isinstance(runs, list) or (isinstance(runs, dict) and "history" in runs):
        runs = {"run": runs}
    out = {}
    for name, r in runs.items():
        if isinstance(r, dict):
            r = r["history"]
        elif hasattr(r, "history"):
            r = r.history
        out[name] = list(r)
    return out


def plot_training_curves(runs, metrics=("loss", "hr@10", "ndcg@10"), splits=("valid", "test"), anchors=None,
                         axes=None):
    """Training curves, one panel per metric: the mean training loss and per-split metrics after each epoch.

    `runs`: {name: history} where a history is the list of per-epoch records of `train` (or its results
    dict, or the Trainer). `anchors`: optional {name: {metric: value}} drawn as dotted horizontal lines
    (e.g. the reference's figures). data: {name: {"epoch": [...], "loss": [...], "valid/hr@10": [...], ...}}.
    """
    import matplotlib.pyplot as plt

    hist = _histories(runs)
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), dpi=80, squeeze=False)
        axes = axes[0]
    else:
        fig = axes[0].figure
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"valid": "--", "test": "-", "train": ":"}
    data = {}
    for i, (name, h) in enumerate(hist.items()):
        color = colors[i % len(colors)]
        epochs = [r["epoch"] for r in h]
        series = {"epoch": epochs, "loss": [r["loss"] for r in h]}
        for split in splits:
            for m in metrics:
                if m != "loss":
                    series[f"{split}/{m}"] = [r[split][m] for r in h]
        data[name] = series
        for ax, m in zip(axes, metrics):
            if m == "loss":
                ax.plot(epochs, series["loss"], color=color, label=name)
                continue
            for split in splits:
                ax.plot(epochs, series[f"{split}/{m}"], styles.get(split, "-"), color=color,
                        label=f"{name} {split}")
            if anchors and name in anchors and m in anchors[name]:
                ax.axhline(anchors[name][m], color=color, ls=":", lw=1, label=f"{name} reference")
    for ax, m in zip(axes, metrics):
        ax.set_xlabel("epoch")
        ax.set_title("training loss" if m == "loss" else m.upper().replace("@", "@"), fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig, data


class LiveCurves:
    """A `train(..., callback=...)` callback that redraws `plot_training_curves` after every epoch.

    In Jupyter the figure is updated in place (one output, not one per epoch); elsewhere it only collects
    the records. `live.runs` holds {name: history}; start a new curve with `live.new_run(name)`.
    """

    def __init__(self, name: str = "run", metrics=("loss", "hr@10", "ndcg@10"), splits=("valid", "test"),
                 anchors=None):
        self.metrics, self.splits, self.anchors = metrics, splits, anchors
        self.runs: dict = {}
        self.current = name
        self._handle = None
        self.fig = None

    def new_run(self, name: str) -> LiveCurves:
        self.current = name
        return self

    def __call__(self, record: dict) -> None:
        import matplotlib.pyplot as plt

        self.runs.setdefault(self.current, []).append(record)
        if self.fig is not None:
            plt.close(self.fig)
        self.fig, _ = plot_training_curves(self.runs, self.metrics, self.splits, self.anchors)
        try:
            from IPython import get_ipython
            from IPython.display import display

            if get_ipython() is None:
                return
            if self._handle is None:
                self._handle = display(self.fig, display_id=True)
            else:
                self._handle.update(self.fig)
        except ImportError:
            pass
        finally:
            plt.close(self.fig)


def results_frame(results: dict, metrics=("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"), reference=None,
                  paper=None):
    """A pandas table of runs next to reference figures, one row per (model, source).

    `results`: {model name: results dict of `train`} (reference-protocol mean and best-by-validation rows
    are both shown). `reference` / `paper`: {model name: {metric: value}} (e.g. `train.ANCHORS_ML1M_U2999`,
    `train.PAPER_ML1M`). Missing values are NaN.
    """
    import pandas as pd

    rows = []
    for model, res in results.items():
        ref = res.get("reference_protocol") if isinstance(res, dict) else None
        if ref:
            e0, e1 = ref["epochs"]
            rows.append({"model": model, "source": f"ours: test, mean of epochs {e0}-{e1}",
                         **{m: ref["test_mean"].get(m) for m in metrics}})
        best = (res.get("best_by_valid") or {}) if isinstance(res, dict) else {}
        if "test" in best:
            rows.append({"model": model, "source": f"ours: test at best validation epoch {best['epoch']}",
                         **{m: best["test"].get(m) for m in metrics}})
        for label, table in (("reference code on the same data (ANCHORS.md)", reference),
                             ("paper (full ML-1M)", paper)):
            if table and model in table:
                rows.append({"model": model, "source": label, **{m: table[model].get(m) for m in metrics}})
    return pd.DataFrame(rows, columns=["model", "source", *metrics])


def plot_results_bars(frame, metric: str = "hr@10", ax=None):
    """Bars of `metric` per model, one bar per source of a `results_frame`. data: the pivoted table."""
    import numpy as np

    table = frame.pivot_table(index="model", columns="source", values=metric, aggfunc="first", sort=False)
    fig, ax = _new_axes(ax, figsize=(7.0, 3.2))
    n = len(table.columns)
    width = 0.8 / max(n, 1)
    x = np.arange(len(table.index))
    for i, col in enumerate(table.columns):
        vals = table[col].to_numpy(dtype=float)
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=col)
    ax.set_xticks(x, table.index)
    ax.set_ylabel(metric.upper())
    ax.set_title(f"test {metric.upper()}", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, table


def plot_seed_spread(runs, metrics=("HR@10", "NDCG@10"), axes=None):
    """Each run as a dot (seeds of one precision side by side), the reference's figure as a bar per model.

    `runs`: a DataFrame with columns model, precision, seed, the `metrics` and "reference <metric>" (the
    rows notebook 06 reads from `benchmarks/results/training_h200_*.json`). Shows whether a gap to the
    reference is larger than the spread between seeds.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2))
    axes = np.atleast_1d(axes)
    fig = axes[0].figure
    models = list(dict.fromkeys(runs["model"]))
    markers = {"tf32": "o", "bf16": "D"}
    for ax, metric in zip(axes, metrics):
        for i, model in enumerate(models):
            rows = runs[runs["model"] == model]
            ref = rows[f"reference {metric}"].iloc[0]
            label = "reference (1 run)" if i == 0 else None
            ax.hlines(ref, i - 0.35, i + 0.35, colors="black", linewidth=2, label=label)
            for j, (precision, group) in enumerate(rows.groupby("precision", sort=False)):
                x = i - 0.15 + 0.3 * j + np.linspace(-0.06, 0.06, len(group))
                ax.scatter(x, group[metric], marker=markers.get(precision, "o"), s=28,
                           color=f"C{j}", label=f"ours, {precision}" if i == 0 else None, zorder=3)
        ax.set_xticks(range(len(models)), models)
        ax.set_ylabel(metric)
        ax.set_title(f"test {metric}: every run vs the reference", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def where_model_wins(per_user: dict, popularity, k: int = 10, length_bins=(0, 20, 50, 100, 200, 10**9),
                     popularity_quantiles=(0.0, 0.5, 0.8, 0.95, 1.0)):
    """HR@k per model, by history length and by the target's popularity (from per-user ranks).

    `per_user`: {model name: DataFrame with history_length, target_item_id, rank} (`Trainer.per_user_ranks`
    or `metrics.evaluate_per_user`). `popularity`: counts per item id (`metrics.item_popularity`).
    Popularity buckets are quantiles of the targets' counts (tail to head). Returns two DataFrames,
    (by_length, by_popularity), with one HR@k column per model and the number of users per bucket.
    """
    import numpy as np
    import pandas as pd

    popularity = np.asarray(popularity)
    first = next(iter(per_user.values()))
    lengths = first["history_length"].to_numpy()
    target_pop = popularity[first["target_item_id"].to_numpy()]
    pairs = zip(length_bins[:-1], length_bins[1:])
    len_labels = [f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}" for lo, hi in pairs]
    len_bucket = pd.cut(lengths, bins=list(length_bins), right=False, labels=len_labels)
    edges = np.unique(np.quantile(target_pop, popularity_quantiles))
    pop_labels = [f"{a:.0f}-{b:.0f} ratings" for a, b in zip(edges[:-1], edges[1:])]
    pop_bucket = pd.cut(target_pop, bins=edges, include_lowest=True, labels=pop_labels)
    by_len = pd.DataFrame({"users": pd.Series(len_bucket).value_counts(sort=False)})
    by_pop = pd.DataFrame({"users": pd.Series(pop_bucket).value_counts(sort=False)})
    for name, df in per_user.items():
        hit = (df["rank"].to_numpy() <= k).astype(float)
        by_len[f"{name} HR@{k}"] = pd.Series(hit).groupby(np.asarray(len_bucket), observed=False).mean()
        by_pop[f"{name} HR@{k}"] = pd.Series(hit).groupby(np.asarray(pop_bucket), observed=False).mean()
    by_len.index.name, by_pop.index.name = "history length", "target popularity"
    return by_len, by_pop


def plot_where_model_wins(per_user: dict, popularity, k: int = 10, **kwargs):
    """Two panels of `where_model_wins`: HR@k by history length, and by target popularity (tail -> head).
    data: {"by_length": DataFrame, "by_popularity": DataFrame}."""
    import matplotlib.pyplot as plt
    import numpy as np

    by_len, by_pop = where_model_wins(per_user, popularity, k, **kwargs)
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.2), dpi=80)
    panels = ((axes[0], by_len, "by history length"), (axes[1], by_pop, "by target popularity"))
    for ax, table, title in panels:
        cols = [c for c in table.columns if c != "users"]
        x = np.arange(len(table.index))
        width = 0.8 / max(len(cols), 1)
        for i, c in enumerate(cols):
            ax.bar(x + (i - (len(cols) - 1) / 2) * width, table[c].to_numpy(dtype=float), width, label=c)
        ax.set_xticks(x, [f"{ix}\n({n} users)" for ix, n in zip(table.index, table["users"])], fontsize=7)
        ax.set_title(f"test HR@{k} {title}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, {"by_length": by_len, "by_popularity": by_pop}

# ---- section: performance charts (owner: performance) ------------------------------------------------

def _lever_label(row: dict) -> str:
    return f"{row.get('group', '')}: {row.get('setting', row.get('id', ''))}"


def plot_levers(payload: dict, speed: str = "tokens_per_s", ax=None):
    """Speed and memory of every lever of a `bench_levers` result (`payload`, the saved JSON as a dict).

    Left: `speed` ("tokens_per_s", or "step_ms" / "epoch_s") per row; right: memory (GPU peak, or the CPU
    estimate) and the activations kept for backward. The title names the machine and the date.
    Returns (fig, data) with data = {"labels", "speed", "memory", "activations"} in row order.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [r for r in payload["rows"] if "skipped" not in r and not r.get("error")]
    labels = [_lever_label(r) for r in rows]
    sp = np.array([r.get(speed) if r.get(speed) is not None else np.nan for r in rows], dtype=float)
    mem = np.array([r.get("mem_mib") if r.get("mem_mib") is not None else np.nan for r in rows], dtype=float)
    act = np.array([r.get("activations_mib") or np.nan for r in rows], dtype=float)
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(10.5, 0.32 * len(rows) + 1.4), dpi=80, sharey=True)
    else:
        fig, axes = ax[0].figure, ax
    y = np.arange(len(rows))
    scale = 1e3 if speed == "tokens_per_s" else 1.0
    axes[0].barh(y, sp / scale, color="tab:blue")
    names = {
        "tokens_per_s": "k tokens / s (higher is better)",
        "step_ms": "ms per step (lower is better)",
        "epoch_s": "s per epoch (lower is better)",
    }
    axes[0].set_xlabel(names.get(speed, speed))
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].invert_yaxis()
    axes[1].barh(y - 0.2, mem, height=0.4, color="tab:orange", label="peak / estimated memory")
    axes[1].barh(y + 0.2, act, height=0.4, color="tab:green", label="activations kept for backward")
    axes[1].set_xlabel("MiB")
    axes[1].legend(fontsize=7, loc="lower right")
    m = payload.get("machine", {})
    fig.suptitle(f"Levers on {payload.get('data', '?')}: {m.get('device', '?')}, {m.get('date_utc', '?')}",
                 fontsize=9)
    fig.tight_layout()
    return fig, {"labels": labels, "speed": sp, "memory": mem, "activations": act}


def scaling_terms(point: dict, fit: dict) -> tuple[float, float]:
    """The fitted quadratic (a * sum L^2 d) and linear (b * sum L d + c) parts of one scaling point, in ms."""
    return fit["a_ms_per_L2d"] * point["sum_L2_d"], fit["b_ms_per_Ld"] * point["sum_L_d"] + fit["c_ms"]


def plot_scaling(
    payload: dict, sweep: str = "length", quantity: str = "ms", show_terms: bool = True, ax=None
):
    """Measured time (`quantity="ms"`) or memory ("peak_mib", "activations_mib") of a `bench_scaling` result
    against N (sweep "length") or blocks ("depth"), one line per series, log-log.

    With `show_terms` (time, length sweep) each series' fitted O(N^2 d) and O(N d) parts are drawn dashed
    and dotted: where the dashed line meets the measured one, attention's N^2 term is the cost.
    Returns (fig, data): data[series] = {"x", "y", "quadratic", "linear"}.
    """
    import numpy as np

    fig, ax = _new_axes(ax, figsize=(6.4, 3.8))
    key = "N" if sweep == "length" else "blocks"
    data = {}
    fits = payload.get("fits", {})
    for i, series in enumerate(dict.fromkeys(p["series"] for p in payload["points"])):
        pts = sorted((p for p in payload["points"] if p["series"] == series and p["sweep"] == sweep),
                     key=lambda p: p[key])
        if not pts:
            continue
        x = np.array([p[key] for p in pts], dtype=float)
        y = np.array([p[quantity] if p.get(quantity) is not None else np.nan for p in pts], dtype=float)
        color = f"C{i}"
        ax.plot(x, y, "o-", color=color, label=series)
        entry = {"x": x, "y": y, "quadratic": None, "linear": None}
        if show_terms and quantity == "ms" and sweep == "length" and series in fits:
            terms = np.array([scaling_terms(p, fits[series]) for p in pts])  # (n, 2)
            entry["quadratic"], entry["linear"] = terms[:, 0], terms[:, 1]
            if terms[:, 0].max() > 0:
                ax.plot(x, terms[:, 0], "--", color=color, alpha=0.7, lw=1)
            if terms[:, 1].max() > 0:
                ax.plot(x, terms[:, 1], ":", color=color, alpha=0.7, lw=1)
        data[series] = entry
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("sequence length N" if sweep == "length" else "blocks")
    ax.set_ylabel({"ms": "ms per step (fwd + bwd)", "peak_mib": "peak memory (MiB)",
                   "activations_mib": "activations (MiB)"}.get(quantity, quantity))
    m = payload.get("machine", {})
    extra = "  (dashed: fitted N^2 d term, dotted: N d term)" if show_terms and quantity == "ms" else ""
    ax.set_title(f"{m.get('device', '?')}, {m.get('date_utc', '?')}{extra}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, data


def plot_remedies(rows: list[dict], value: str, label: str = "remedy", ax=None, xlabel: str | None = None,
                  baseline: str | None = None):
    """Bar chart of one measured `value` per remedy (rows of dicts), with the ratio to `baseline` written
    next to each bar. Returns (fig, data) with data = {"labels", "values", "ratios"}."""
    import numpy as np

    fig, ax = _new_axes(ax, figsize=(6.4, 0.35 * len(rows) + 1.0))
    labels = [str(r[label]) for r in rows]
    vals = np.array([r[value] for r in rows], dtype=float)
    base = next((r[value] for r in rows if str(r[label]) == baseline), vals[0]) if rows else 1.0
    ratios = vals / base if base else np.full_like(vals, np.nan)
    y = np.arange(len(rows))
    ax.barh(y, vals, color=["tab:gray"] + ["tab:blue"] * (len(rows) - 1))
    for yi, v, r in zip(y, vals, ratios):
        ax.text(v, yi, f" {r:.2f}x", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel or value)
    ax.margins(x=0.15)
    fig.tight_layout()
    return fig, {"labels": labels, "values": vals, "ratios": ratios}
