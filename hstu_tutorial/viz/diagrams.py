"""Diagrams drawn by code: the STU layer, raw file -> jagged batch, the Triton kernel's tile walk.

Every function returns `(fig, data)`: the figure and what it drew (labels, ids, counts), so tests and
notebooks can check the picture against the code it describes.
"""

from __future__ import annotations

_BLUE, _ORANGE, _RED, _GREEN, _GREY = "#cfe2f3", "#f4a261", "#e76f51", "#2a9d8f", "#eeeeee"


def _box(ax, x, y, text, color="#ffffff", w=1.9, h=0.55, fs=9, edge="black"):
    """A rounded box centred at (x, y) holding `text`; returns the text artist."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=color,
            ec=edge,
            lw=1,
        )
    )
    return ax.text(x, y, text, ha="center", va="center", fontsize=fs)


def _arrow(ax, start, end, color="black", style="-|>", lw=1.0, connection="arc3"):
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops=dict(
            arrowstyle=style, color=color, lw=lw, shrinkA=0, shrinkB=0, connectionstyle=connection
        ),
    )


def plot_stu_layer():
    """One STU layer as a flow chart, eqs. 1-3 as `hstu_tutorial.modules.STULayer` computes them:
    x -> LayerNorm -> W_uvqk -> SiLU -> split u, v, q, k -> SiLU(q k^T + rab) / n -> A v -> LayerNorm
    -> (.) u -> W_o -> + x. The relative bias enters at the scores (highlighted); there is no FFN.
    data: the box labels top to bottom and where rab enters."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 8.2), dpi=80)
    ax.set_xlim(-1.6, 8.1)
    ax.set_ylim(-3.7, 10.6)
    ax.axis("off")
    steps = [  # (x, y, label, color)
        (3.0, 10.0, "x  (T, D)", _GREY),
        (3.0, 9.0, "LayerNorm", _BLUE),
        (3.0, 8.0, "$W_{uvqk}$ ($f_1$): D → 2H·$d_v$ + 2H·$d_{qk}$", _BLUE),
        (3.0, 7.0, "SiLU ($\\phi_1$)", _BLUE),
        (3.0, 6.0, "split", _BLUE),
    ]
    labels = []
    for x, y, text, color in steps:
        labels.append(_box(ax, x, y, text, color, w=3.9 if "W_" in text else 1.9).get_text())
    for (_, y0, *_), (_, y1, *_) in zip(steps, steps[1:]):
        _arrow(ax, (3.0, y0 - 0.28), (3.0, y1 + 0.28))
    cols = {"u": 0.4, "v": 2.0, "q": 3.6, "k": 5.2}
    for name, x in cols.items():
        labels.append(_box(ax, x, 5.0, name, "#ffffff", w=0.9).get_text())
        _arrow(ax, (3.0, 5.72), (x, 5.28))
    # the attention: scores with the relative bias, pointwise SiLU, constant divisor n
    labels.append(_box(ax, 4.4, 4.0, "$q k^\\top$ + rab", "#ffffff", w=1.9).get_text())
    _arrow(ax, (cols["q"], 4.72), (4.1, 4.28))
    _arrow(ax, (cols["k"], 4.72), (4.7, 4.28))
    rab_text = "rab$^{p,t}$: position offset\n+ time bucket of the gap"
    labels.append(_box(ax, 6.8, 4.0, rab_text, "#fde2b8", w=2.2, h=0.8, fs=8, edge=_ORANGE).get_text())
    _arrow(ax, (5.7, 4.0), (5.37, 4.0), color=_ORANGE, lw=2.0)
    ax.text(
        6.8, 4.5, "the bias enters here", color=_ORANGE, fontsize=8, ha="center", va="bottom", weight="bold"
    )
    labels.append(_box(ax, 4.4, 3.0, "A = SiLU($\\cdot$) / n, causal", "#ffffff", w=2.6).get_text())
    _arrow(ax, (4.4, 3.72), (4.4, 3.28))
    labels.append(_box(ax, 3.0, 2.0, "A · v", "#ffffff", w=1.4).get_text())
    _arrow(ax, (4.4, 2.72), (3.4, 2.28))
    _arrow(ax, (cols["v"], 4.72), (2.8, 2.28))
    tail = [
        (3.0, 1.0, "LayerNorm", _BLUE),
        (3.0, 0.0, "⊙ u  (the gate)", _GREEN),
        (3.0, -1.0, "$W_o$ ($f_2$): → D", _BLUE),
    ]
    prev = 2.0
    for x, y, text, color in tail:
        labels.append(_box(ax, x, y, text, color, w=2.2).get_text())
        _arrow(ax, (3.0, prev - 0.28), (3.0, y + 0.28))
        prev = y
    _arrow(ax, (cols["u"], 4.72), (1.9, 0.0), connection="arc3,rad=0.15")
    labels.append(_box(ax, 3.0, -2.0, "+ x", "#ffffff", w=1.2).get_text())
    _arrow(ax, (3.0, -1.28), (3.0, -1.72))
    # the residual path, around the left side
    ax.plot([1.05, -1.2, -1.2], [10.0, 10.0, -2.0], color="grey", lw=1.2)
    _arrow(ax, (-1.2, -2.0), (2.4, -2.0), color="grey", lw=1.2)
    ax.text(-1.1, 4.2, "residual", rotation=90, color="grey", fontsize=8, va="center")
    labels.append(_box(ax, 3.0, -3.0, "out  (T, D)", _GREY).get_text())
    _arrow(ax, (3.0, -2.28), (3.0, -2.72))
    ax.text(
        8.0,
        -0.5,
        "no FFN:\nthe gate u does\nits job per position",
        fontsize=8,
        ha="right",
        va="center",
        style="italic",
    )
    ax.set_title("One STU layer (eqs. 1-3), as STULayer computes it", fontsize=10)
    fig.tight_layout()
    return fig, {"labels": labels, "rab_enters_at": "$q k^\\top$ + rab", "ffn": False}


def _cells(ax, x, y, texts, colors, w=0.62, h=0.5, fs=7):
    """A row of square cells from (x, y), left to right; returns the x after the last cell."""
    from matplotlib.patches import Rectangle

    for text, color in zip(texts, colors):
        ax.add_patch(Rectangle((x, y - h / 2), w, h, fc=color, ec="grey", lw=0.6))
        ax.text(x + w / 2, y, str(text), ha="center", va="center", fontsize=fs)
        x += w
    return x


def plot_jagged_pipeline(dataset, num_users: int = 3, shown: int = 4):
    """Raw file -> jagged batch with the loaded dataset's first `num_users` users: the first lines of
    ratings.dat, each user's time-sorted item ids, the leave-one-out split (valid = second to last, test
    = last) and the first training batch as values (T, D) + offsets (B+1,). Item ids only.
    data: the raw lines, the users, their sequences' first/last ids, the batch's lengths and offsets."""
    import matplotlib.pyplot as plt

    seqs = dataset.sequences.head(num_users)
    users = [int(u) for u in seqs["user_id"]]
    with open(dataset.folder / "ratings.dat", encoding="latin-1") as f:
        raw = [next(f).rstrip() for _ in range(5)]
    batch = next(iter(dataset.loader("train", batch_size=num_users, shuffle=False)))
    assert [int(u) for u in batch.user_ids] == users, "the first train batch should hold the first users"
    lengths = [int(x) for x in batch.lengths]
    offsets = [int(x) for x in batch.offsets]

    fig, axes = plt.subplots(4, 1, figsize=(9.0, 7.6), dpi=80, height_ratios=[1.25, 1, 1, 1.25])
    for ax in axes:
        ax.set_xlim(0, 15)
        ax.axis("off")
    ax = axes[0]
    ax.set_title(
        "1 · ratings.dat: UserID::MovieID::Rating::Timestamp, grouped by user, not time-sorted",
        fontsize=9,
        loc="left",
    )
    for i, line in enumerate(raw + ["..."]):
        ax.text(0.2, 0.9 - i * 0.16, line, family="monospace", fontsize=8, va="top", transform=ax.transAxes)
    ax.text(
        6.0, 0.5, "group by user,\nsort by time (stable)", fontsize=8, va="center", transform=ax.transData
    )
    ax.set_ylim(0, 1)

    def row_ids(ids):
        if len(ids) <= 2 * shown + 2:
            return ids
        return [*ids[:shown], "…", *ids[-(shown + 2) :]]

    ax = axes[1]
    ax.set_title("2 · one time-sorted sequence per user (item ids, oldest first)", fontsize=9, loc="left")
    ax.set_ylim(-num_users + 0.4, 0.6)
    for r, (uid, ids) in enumerate(zip(users, seqs["sequence_item_ids"])):
        ax.text(0.1, -r, f"user {uid} (L={len(ids)})", fontsize=8, va="center")
        shown_ids = row_ids(list(ids))
        _cells(ax, 2.6, -r, shown_ids, [_BLUE if t != "…" else "#ffffff" for t in shown_ids])

    ax = axes[2]
    ax.set_title(
        "3 · leave-one-out: test target = last item, valid target = second to last", fontsize=9, loc="left"
    )
    ax.set_ylim(-num_users + 0.4, 0.6)
    for r, (uid, ids) in enumerate(zip(users, seqs["sequence_item_ids"])):
        ax.text(0.1, -r, f"user {uid}", fontsize=8, va="center")
        shown_ids = row_ids(list(ids))
        colors = [_BLUE if t != "…" else "#ffffff" for t in shown_ids]
        colors[-2], colors[-1] = _ORANGE, _RED
        _cells(ax, 2.6, -r, shown_ids, colors)
    handles = [plt.Rectangle((0, 0), 1, 1, fc=c, ec="grey") for c in (_BLUE, _ORANGE, _RED)]
    ax.legend(
        handles, ["history", "valid target", "test target"], loc="center right", fontsize=7, frameon=False
    )

    ax = axes[3]
    T = sum(lengths)
    ax.set_title(
        f"4 · the first training batch, jagged: values (T={T}, D) + offsets (B+1={len(offsets)},) = {offsets}",
        fontsize=9,
        loc="left",
    )
    ax.set_ylim(-1.3, 1.0)
    scale, x0 = 12.0 / max(T, 1), 2.6
    palette = ["#8ecae6", "#ffb703", "#90be6d", "#cdb4db", "#f28482"]
    for b, L in enumerate(lengths):
        x = x0 + offsets[b] * scale
        ax.add_patch(
            plt.Rectangle((x, 0.0), L * scale, 0.6, fc=palette[b % len(palette)], ec="black", lw=0.8)
        )
        ax.text(x + L * scale / 2, 0.3, f"user {users[b]}: {L} ids", ha="center", va="center", fontsize=7)
    for o in offsets:
        ax.plot([x0 + o * scale] * 2, [-0.05, -0.3], color="black", lw=0.8)
        ax.text(x0 + o * scale, -0.55, str(o), ha="center", va="center", fontsize=7)
    ax.text(0.1, 0.3, "values (T, D)", fontsize=8, va="center")
    ax.text(0.1, -0.55, "offsets", fontsize=8, va="center")
    ax.text(
        x0,
        -1.05,
        f"history b = values[offsets[b] : offsets[b+1]]; each id becomes a row of D numbers "
        f"(the item embedding); window max_seq_len = {dataset.max_seq_len}",
        fontsize=7,
        va="center",
    )
    from hstu_tutorial.viz.data import dataset_label

    fig.suptitle(
        f"From the raw file to a jagged batch: {dataset_label(dataset)}, the first {num_users} users",
        fontsize=10,
    )
    fig.tight_layout()
    firsts = [list(map(int, ids[:shown])) for ids in seqs["sequence_item_ids"]]
    lasts = [list(map(int, ids[-2:])) for ids in seqs["sequence_item_ids"]]
    return fig, {
        "raw_lines": raw,
        "users": users,
        "first_ids": firsts,
        "valid_test_ids": lasts,
        "lengths": lengths,
        "offsets": offsets,
    }


def kernel_fwd_tiles(
    d_qk: int = 50, d_v: int = 50, max_seq_len: int = 200, dtype: str = "float32", bias: int = 2
):
    """(BLOCK_M, BLOCK_N, where from) of the forward kernel for this shape class: the tiles the package
    ships for Hopper GPUs (`ops/triton/tiles_sm90.json`), else the fixed tiles used with autotune off."""
    import torch

    from hstu_tutorial.ops.triton import tiles
    from hstu_tutorial.ops.triton.hstu_attention_autograd import GPU_DEFAULT_CONFIG

    def block(d):
        return max(16, 1 << (int(d) - 1).bit_length())

    consts = {
        "BLOCK_D_QK": block(d_qk),
        "BLOCK_D_V": block(d_v),
        "DOT_PREC": "tf32",
        "CAUSAL": True,
        "BIAS": bias,
    }
    key = tiles.shape_class("fwd", getattr(torch, dtype), consts, max_seq_len)
    table = tiles.read_tile_file(tiles.TABLE_DIR / "tiles_sm90.json", "tile table")
    if key in table:
        return table[key]["BLOCK_M"], table[key]["BLOCK_N"], f"tiles_sm90.json ({key})"
    bm, bn = GPU_DEFAULT_CONFIG["fwd"][:2]
    return bm, bn, "GPU_DEFAULT_CONFIG (no shipped entry)"


def tile_walk(lengths, block_m: int, block_n: int, max_len: int | None = None):
    """The forward kernel's walk, tile by tile: for each sequence an int array (query tiles, key tiles)
    with 0 = past the end (the program returns at once, or keys beyond L), 1 = skipped by causality
    (right of the diagonal: never loaded), 2 = loaded and masked at the diagonal, 3 = loaded, no mask.
    Same bounds as `hstu_fwd_kernel`: keys [0, full_end) unmasked with full_end = ((start_m + 1) //
    BLOCK_N) * BLOCK_N clipped to L, then [full_end, min(L, start_m + BLOCK_M)) masked."""
    import numpy as np

    N = max(max(int(x) for x in lengths), int(max_len or 0))  # the grid covers max_len (the pad width)
    nm, nn = -(-N // block_m), -(-N // block_n)
    out = []
    for L in (int(x) for x in lengths):
        st = np.zeros((nm, nn), dtype=np.int64)
        for pid_m in range(nm):
            start_m = pid_m * block_m
            if start_m >= L:
                continue  # `if start_m >= L: return`
            full_end = min(((start_m + 1) // block_n) * block_n, L)
            hi = min(L, start_m + block_m)
            for c in range(nn):
                n0 = c * block_n
                st[pid_m, c] = 3 if n0 < full_end else 2 if n0 < hi else 1 if n0 < L else 0
        out.append(st)
    return out


def tile_legend(fig, cmap, names, counts) -> None:
    """The figure's legend of tile classes (`names`, coloured by `cmap`), each with its count."""
    import matplotlib.pyplot as plt

    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=cmap(i), edgecolor="grey") for i in (3, 2, 1, 0)]
    labels = [f"{names[i]} ({counts[names[i]]})" for i in (3, 2, 1, 0)]
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)


def plot_kernel_tile_walk(
    lengths,
    max_len: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    num_heads: int = 1,
):
    """The Triton forward kernel's grid on a few jagged sequences: one panel per sequence, one row per
    query tile labelled with its program id (program_id(0), program_id(1)), each key tile coloured by what
    the kernel does with it. `max_len`: the longest length the launch is given (the model passes its pad
    width, max_seq_len), which sizes the grid and picks the shape class; default the longest of `lengths`.
    Block sizes default to the package's tiles for that shape class at the ML-1M head dims (d = 50).
    data: block sizes and their source, the per-sequence status arrays, counts per status."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    lengths = [int(x) for x in lengths]
    source = "given"
    if block_m is None or block_n is None:
        bm, bn, source = kernel_fwd_tiles(max_seq_len=max_len or max(lengths))
        block_m, block_n = block_m or bm, block_n or bn
    status = tile_walk(lengths, block_m, block_n, max_len)
    names = ["past the end", "skipped (causal)", "masked (diagonal)", "loaded, no mask"]
    counts = {n: int(sum((st == i).sum() for st in status)) for i, n in enumerate(names)}
    nm, nn = status[0].shape
    cmap = ListedColormap([_GREY, "#ffffff", _ORANGE, _GREEN])
    k = len(lengths)
    fig, axes = plt.subplots(1, k, figsize=(2.5 * k + 1.0, 3.4), dpi=80, squeeze=False)
    for b, (ax, st, L) in enumerate(zip(axes[0], status, lengths)):
        ax.imshow(st, cmap=cmap, vmin=0, vmax=3, extent=(0, nn * block_n, nm * block_m, 0), aspect="auto")
        for x in range(0, nn * block_n + 1, block_n):
            ax.axvline(x, color="grey", lw=0.5)
        for y in range(0, nm * block_m + 1, block_m):
            ax.axhline(y, color="grey", lw=0.5)
        ax.plot([0, L], [0, L], color="black", lw=0.8)  # the diagonal j = i
        ax.axvline(L, color=_RED, lw=1, ls="--")
        ax.set_yticks([(m + 0.5) * block_m for m in range(nm)])
        # program_id(0) runs the query tiles in reverse (long ones first); program_id(1) = b * H + h
        ax.set_yticklabels([f"({nm - 1 - m}, {b * num_heads})" for m in range(nm)], fontsize=7)
        ax.set_title(f"sequence {b}: L={L}", fontsize=9)
        ax.set_xlabel("key position j", fontsize=8)
    axes[0][0].set_ylabel("query tile: program id", fontsize=8)
    tile_legend(fig, cmap, names, counts)
    loaded = counts["loaded, no mask"] + counts["masked (diagonal)"]
    fig.suptitle(
        f"forward kernel, BLOCK_M={block_m}, BLOCK_N={block_n}: {loaded} tiles loaded "
        f"({counts['masked (diagonal)']} masked at the diagonal), {counts['skipped (causal)']} skipped by "
        f"causality, {counts['past the end']} past the end",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig, {"block_m": block_m, "block_n": block_n, "source": source, "status": status, "counts": counts}
