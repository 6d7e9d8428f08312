"""Pictures of attention: per-user attention maps, masks, the jagged layout, time buckets, an explorer.

Every function returns `(fig, data)`: the figure and the data it drew.
"""

from __future__ import annotations

from hstu_tutorial.viz._style import new_axes


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
        "item_ids": batch.item_ids[s + first : e].cpu().numpy(),
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
    fig, ax = new_axes(ax, figsize=(max(4.0, 0.22 * L + 2.5), max(3.5, 0.22 * L + 1.5)))
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


def plot_attention_maps(
    model, batch, user_index: int = 0, item_titles=None, max_items: int = 20, diverging: bool | None = None
):
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
            plot_attention_map(
                maps[layer, h],
                labels if l <= 40 else None,
                f"layer {layer}, head {h}",
                ax=ax,
                diverging=diverging,
            )
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
    strip = np.concatenate(
        [np.where(valid[b][:, None] & valid[b][None, :], padded[b] * 1.0, 0.35) for b in range(B)], axis=1
    )
    axes[1].imshow(strip, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest", aspect="auto")
    for b in range(1, B):
        axes[1].axvline(b * N - 0.5, color="black", lw=0.8)
    axes[1].set_title(
        f"padded: B={B} masks of N x N\n{1 - padded.sum() / (B * causal.sum()):.0%} of the "
        "causal cells are padding",
        fontsize=9,
    )
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
        ax.annotate(
            f"offsets[{b}]={o}",
            (o, top + 1),
            (o, top + 1.7),
            fontsize=7,
            ha="center",
            arrowprops=dict(arrowstyle="->", lw=0.6),
        )
    for b in range(B):
        y = B - 1 - b
        for i in range(N):
            t = index[b, i]
            pad = t < 0
            ax.add_patch(
                Rectangle(
                    (i, y),
                    1,
                    1,
                    facecolor="lightgrey" if pad else colors(b % 10),
                    alpha=0.6,
                    edgecolor="black",
                    hatch="//" if pad else None,
                )
            )
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
    fig, ax = new_axes(ax)
    ax.step(gaps, buckets, where="post", color="tab:blue")
    ax.set_xscale("log")
    marks = {
        "1 min": 60,
        "1 hour": 3600,
        "1 day": 86400,
        "1 week": 604800,
        "1 month": 2592000,
        "1 year": 31536000,
    }
    for i, (name, sec) in enumerate(marks.items()):
        if sec <= max_gap_seconds:
            b = int(time_bucket(torch.tensor([sec]), num_buckets))
            ax.axvline(sec, color="grey", lw=0.5, ls=":")
            # Neighbouring marks (a week, a month) are close on the log axis: alternate the labels between
            # above-left and below-right of the step, the two sides the rising curve leaves free.
            if i % 2 == 0:
                ax.text(sec / 1.15, b + 2, f"{name}\n(bucket {b})", fontsize=7, ha="right", va="bottom")
            else:
                ax.text(sec * 1.15, b - 2, f"{name}\n(bucket {b})", fontsize=7, ha="left", va="top")
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
        fig, _ = plot_attention_map(
            d["maps"][layer, head],
            labels,
            f"user {d['user_id']}, layer {layer}, head {head}",
            diverging=bool((d["maps"] < 0).any()),
        )
        return fig

    first = maps_of(0)
    n_layers, H = first["maps"].shape[:2]
    B = len(batch.offsets) - 1
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError:
        print(
            "ipywidgets is not installed (pip install ipywidgets): showing user 0, layer 0, head 0; "
            "call data['draw'](user_index, layer, head) for others."
        )
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
        caption.value = (
            f"user {d['user_id']} · layer {layer_w.value} · head {head_w.value} · "
            f"last {d['maps'].shape[-1]} of {d['length']} items"
        )

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


def plot_saved_attention(user: dict, title: str = "", diverging: bool = True):
    """Attention maps saved by `results.attention_record` for one user: every layer and head, titles on the
    axes. `user`: one entry of its "users" list (maps [layer][head] (L, L), items, next_item). data: the
    maps as an array (layers, H, L, L) and the labels."""
    import matplotlib.pyplot as plt
    import numpy as np

    maps = np.asarray(user["maps"], dtype=np.float64)  # (layers, H, L, L)
    n_layers, H, L = maps.shape[0], maps.shape[1], maps.shape[2]
    labels = [_short_title(str(t)) for t in user["items"]]
    size = max(3.0, 0.2 * L + 1.6)
    fig, axes = plt.subplots(
        1, n_layers * H, figsize=(size * n_layers * H + 1.0, size + 0.6), dpi=80, squeeze=False
    )
    for layer in range(n_layers):
        for h in range(H):
            ax = axes[0][layer * H + h]
            plot_attention_map(maps[layer, h], labels, f"layer {layer}, head {h}", ax=ax, diverging=diverging)
            if layer or h:
                ax.set_ylabel("")
                ax.set_yticks([])
    fig.suptitle(
        title
        or f"user {user['user_id']}: last {L} of {user['history_length']} items; next: {user['next_item']}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig, {"maps": maps, "labels": labels}
