"""Pictures of the Triton attention kernel: which tiles it computes, and its measured speed.

Every function returns `(fig, data)`: the figure and the data it drew.
"""

from __future__ import annotations


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

    from hstu_tutorial.viz.diagrams import tile_legend, tile_walk

    lengths = [int(x) for x in lengths]
    names = ["padding", "skipped", "diagonal", "full"]
    if causal:  # the forward kernel's own bounds
        status = tile_walk(lengths, block_m, block_n)
    else:  # every tile inside the sequence is computed, none masked
        nm, nn = -(-max(lengths) // block_m), -(-max(lengths) // block_n)
        rows, cols = np.arange(nm)[:, None] * block_m, np.arange(nn)[None, :] * block_n
        status = [np.where((rows < L) & (cols < L), 3, 0) for L in lengths]
    nm, nn = status[0].shape
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
    tile_legend(fig, cmap, names, counts)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig, {"status": status, "counts": counts}


def plot_kernel_benchmark(payload, kind: str = "jagged", passes=("fwd", "fwdbwd"), impls=None):
    """TFLOP/s against max length from a bench_attention.py result (its JSON payload as a dict), one
    panel per pass; the title names the machine and date. data: {pass: {impl: [(N, TFLOP/s), ...]}}."""
    import matplotlib.pyplot as plt

    impls = impls or [
        "triton",
        "pytorch_padded",
        "pytorch_jagged",
        "torch_compile_padded",
        "sdpa_softmax_padded",
    ]
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
    fig.suptitle(
        f"{kind} batches, bf16, causal, H=4, d=128 - {meta.get('device', '?')}, "
        f"{str(meta.get('date', '?'))[:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig, data
