"""Pictures of training runs: curves, result tables next to the published figures, seed spread, and where
the model wins over popularity.

Every function returns `(fig, data)` (or a table): what it drew, as data.
"""

from __future__ import annotations

from hstu_tutorial.viz._style import new_axes


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


def plot_training_curves(
    runs, metrics=("loss", "hr@10", "ndcg@10"), splits=("valid", "test"), anchors=None, axes=None
):
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
        mk = "o" if len(epochs) <= 5 else None  # a run of one or a few epochs is a few points: show them
        series = {"epoch": epochs, "loss": [r["loss"] for r in h]}
        for split in splits:
            for m in metrics:
                if m != "loss":
                    series[f"{split}/{m}"] = [r[split][m] for r in h]
        data[name] = series
        for ax, m in zip(axes, metrics):
            if m == "loss":
                ax.plot(epochs, series["loss"], color=color, marker=mk, label=name)
                continue
            for split in splits:
                ax.plot(
                    epochs,
                    series[f"{split}/{m}"],
                    styles.get(split, "-"),
                    color=color,
                    marker=mk,
                    label=f"{name} {split}",
                )
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

    def __init__(
        self, name: str = "run", metrics=("loss", "hr@10", "ndcg@10"), splits=("valid", "test"), anchors=None
    ):
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


def results_frame(
    results: dict, metrics=("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr"), reference=None, paper=None
):
    """A pandas table of runs next to reference figures, one row per (model, source).

    `results`: {model name: results dict of `train`} (reference-protocol mean and best-by-validation rows
    are both shown). `reference`: {model name: {metric: value}} measured by the official implementation on
    the same data (e.g. `train.REFERENCE_ML1M_U2999`, NVIDIA H200, 2026-11-28; the numbers are listed in
    docs/reference_results.md); `paper`: the paper's figures (`train.PAPER_ML1M`). Missing values are NaN.
    """
    import pandas as pd

    rows = []
    for model, res in results.items():
        ref = res.get("reference_protocol") if isinstance(res, dict) else None
        if ref:
            e0, e1 = ref["epochs"]
            rows.append(
                {
                    "model": model,
                    "source": f"ours: test, mean of epochs {e0}-{e1}",
                    **{m: ref["test_mean"].get(m) for m in metrics},
                }
            )
        best = (res.get("best_by_valid") or {}) if isinstance(res, dict) else {}
        if "test" in best:
            rows.append(
                {
                    "model": model,
                    "source": f"ours: test at best validation epoch {best['epoch']}",
                    **{m: best["test"].get(m) for m in metrics},
                }
            )
        for label, table in (
            ("official implementation, same data (NVIDIA H200, 2026-11-28)", reference),
            ("paper (full ML-1M)", paper),
        ):
            if table and model in table:
                rows.append({"model": model, "source": label, **{m: table[model].get(m) for m in metrics}})
    return pd.DataFrame(rows, columns=["model", "source", *metrics])


def plot_results_bars(frame, metric: str = "hr@10", ax=None):
    """Bars of `metric` per model, one bar per source of a `results_frame`. data: the pivoted table."""
    import numpy as np

    table = frame.pivot_table(index="model", columns="source", values=metric, aggfunc="first", sort=False)
    fig, ax = new_axes(ax, figsize=(9.0, 3.2))
    n = len(table.columns)
    width = 0.8 / max(n, 1)
    x = np.arange(len(table.index))
    for i, col in enumerate(table.columns):
        vals = table[col].to_numpy(dtype=float)
        ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=col)
    ax.set_xticks(x, table.index)
    ax.set_ylabel(metric.upper())
    ax.set_title(f"test {metric.upper()}", fontsize=10)
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False
    )  # beside, not on, the bars
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
                ax.scatter(
                    x,
                    group[metric],
                    marker=markers.get(precision, "o"),
                    s=28,
                    color=f"C{j}",
                    label=f"ours, {precision}" if i == 0 else None,
                    zorder=3,
                )
        ax.set_xticks(range(len(models)), models)
        ax.set_ylabel(metric)
        ax.set_title(f"test {metric}: every run vs the reference", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def where_model_wins(
    per_user: dict,
    popularity,
    k: int = 10,
    length_bins=(0, 20, 50, 100, 200, 10**9),
    popularity_quantiles=(0.0, 0.5, 0.8, 0.95, 1.0),
):
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


def plot_seed_curves(
    curves, metrics=("loss", "hr@10", "ndcg@10"), split: str = "test", label: str = "", axes=None
):
    """Per-epoch curves of saved runs: the mean over seeds as a line, the min-max over seeds as a band.

    `curves`: one row per (model, seed, epoch) with columns loss and "<split>/<metric>" (the curves frame of
    `results.load_ml1m_results`). `axes`: one per metric, e.g. those of `plot_training_curves`, to overlay
    live runs on the same axes. data: {model: DataFrame of mean, min, max per epoch and column}.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.0), dpi=80, squeeze=False)
        axes = axes[0]
    fig = axes[0].figure
    cols = [m if m == "loss" else f"{split}/{m}" for m in metrics]
    data = {}
    for i, (model, g) in enumerate(curves.groupby("model", sort=False)):
        stats = g.groupby("epoch")[cols].agg(["mean", "min", "max"])
        data[model] = stats
        n = g["seed"].nunique()
        color = f"C{i + 4}"  # apart from the live runs' first colours
        for ax, m, c in zip(axes, metrics, cols):
            ax.plot(
                stats.index,
                stats[(c, "mean")],
                color=color,
                lw=1.2,
                label=f"{model} {'' if m == 'loss' else split} ({label or f'{n} seeds'}), mean",
            )
            ax.fill_between(stats.index, stats[(c, "min")], stats[(c, "max")], color=color, alpha=0.25, lw=0)
    for ax, m in zip(axes, metrics):
        ax.set_xlabel("epoch")
        ax.set_title("training loss" if m == "loss" else m.upper(), fontsize=10)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=6)
    fig.tight_layout()
    return fig, data


def plot_bucket_bars(buckets, metric: str = "hr@10", title: str = ""):
    """Bars of `metric` per bucket and model, the error bar the standard deviation over seeds (seaborn).

    `buckets`: rows of model, seed, kind, bucket, lo, users and `metric` (buckets.csv). One panel per bucket
    kind. data: the mean and std per kind, bucket and model.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    kinds = list(dict.fromkeys(buckets["kind"]))
    fig, axes = plt.subplots(1, len(kinds), figsize=(5.2 * len(kinds), 3.4), dpi=80, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        part = buckets[buckets["kind"] == kind].sort_values("lo", kind="stable")
        order = list(dict.fromkeys(part["bucket"]))
        sns.barplot(
            data=part,
            x="bucket",
            y=metric,
            hue="model",
            order=order,
            errorbar="sd",
            capsize=0.15,
            ax=ax,
            err_kws={"linewidth": 1},
        )
        users = part.groupby("bucket", sort=False)["users"].first()
        ax.set_xticks(range(len(order)), [f"{b}\n({users[b]} users)" for b in order], fontsize=7)
        ax.set_xlabel(kind.replace("_", " ") + (" (training count)" if kind == "target_popularity" else ""))
        ax.set_ylabel(f"test {metric.upper()}")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title or f"test {metric.upper()} by bucket; error bars: std over seeds", fontsize=10)
    fig.tight_layout()
    table = buckets.groupby(["kind", "bucket", "model"], sort=False)[metric].agg(["mean", "std", "count"])
    return fig, table
