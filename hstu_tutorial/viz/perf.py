"""Pictures of performance: the speed/memory levers, the scaling fit, remedies compared, a run's first seconds.

Every function returns `(fig, data)`: the figure and the data it drew.
"""

from __future__ import annotations

from hstu_tutorial.viz._style import new_axes


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
    fig.suptitle(
        f"Levers on {payload.get('data', '?')}: {m.get('device', '?')}, {m.get('date_utc', '?')}", fontsize=9
    )
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

    fig, ax = new_axes(ax, figsize=(6.4, 3.8))
    key = "N" if sweep == "length" else "blocks"
    data = {}
    fits = payload.get("fits", {})
    for i, series in enumerate(dict.fromkeys(p["series"] for p in payload["points"])):
        pts = sorted(
            (p for p in payload["points"] if p["series"] == series and p["sweep"] == sweep),
            key=lambda p: p[key],
        )
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
    ax.set_ylabel(
        {
            "ms": "ms per step (fwd + bwd)",
            "peak_mib": "peak memory (MiB)",
            "activations_mib": "activations (MiB)",
        }.get(quantity, quantity)
    )
    m = payload.get("machine", {})
    extra = "  (dashed: fitted N^2 d term, dotted: N d term)" if show_terms and quantity == "ms" else ""
    ax.set_title(f"{m.get('device', '?')}, {m.get('date_utc', '?')}{extra}", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, data


def plot_remedies(
    rows: list[dict],
    value: str,
    label: str = "remedy",
    ax=None,
    xlabel: str | None = None,
    baseline: str | None = None,
):
    """Bar chart of one measured `value` per remedy (rows of dicts), with the ratio to `baseline` written
    next to each bar. Returns (fig, data) with data = {"labels", "values", "ratios"}."""
    import numpy as np

    fig, ax = new_axes(ax, figsize=(6.4, 0.35 * len(rows) + 1.0))
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


def plot_startup(runs: dict[str, dict[str, float]], ax=None):
    """One horizontal bar per run (label -> a `perf.startup_phases` dict): its seconds, phase by phase.

    Segments of a second or more carry their length. Returns (fig, data) with data = {"labels", "phases",
    "seconds"}: the run labels, the phase names and a (runs, phases) list of seconds."""
    from hstu_tutorial.perf.startup import PHASES

    labels = list(runs)
    fig, ax = new_axes(ax, figsize=(10.0, 1.6 + 0.7 * len(labels)))
    colors = ["#4c72b0", "#dd8452", "#937860", "#c44e52", "#8172b3", "#55a868", "#8c8c8c"]
    seconds = [[float(runs[label].get(phase, 0.0)) for phase in PHASES] for label in labels]
    for row in range(len(labels)):
        left = 0.0
        for i, (phase, width) in enumerate(zip(PHASES, seconds[row])):
            ax.barh(row, width, left=left, color=colors[i % len(colors)], label=phase if row == 0 else None)
            if width >= 1.0:
                ax.text(
                    left + width / 2, row, f"{width:.1f}", ha="center", va="center", fontsize=8, color="white"
                )
            left += width
        ax.text(left + 0.2, row, f"{left:.1f} s", va="center", fontsize=9)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the process started")
    ax.set_xlim(0, max(sum(r) for r in seconds) * 1.15)
    ax.legend(ncol=4, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    fig.tight_layout()
    return fig, {"labels": labels, "phases": list(PHASES), "seconds": seconds}
