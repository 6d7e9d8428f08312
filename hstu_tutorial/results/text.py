"""The tables and sentences the notebooks show about saved (or live) results, computed from the numbers."""

from __future__ import annotations

import math

from hstu_tutorial.results.attention import SILU_MIN

METRICS = ("hr@10", "ndcg@10", "hr@50", "ndcg@50", "mrr")


def seed_table(runs, paper=None, reference=None, metrics=METRICS):
    """One row per model: mean ± std over seeds of the reference-protocol test metrics (mean of the last
    epochs), next to the paper's and the official implementation's figures. `runs`: the runs frame."""
    import pandas as pd

    rows = []
    for model, g in runs.groupby("model", sort=False):
        row = {"model": model, "source": f"ours: {len(g)} seeds, mean ± std"}
        for m in metrics:
            if m in g:
                row[m] = f"{g[m].mean():.4f} ± {g[m].std(ddof=1) if len(g) > 1 else 0.0:.4f}"
        rows.append(row)
        for label, table in (
            ("official implementation, same data", reference),
            ("paper (full ML-1M)", paper),
        ):
            if table and model in table:
                vals = {m: f"{table[model][m]:.4f}" for m in metrics if m in table[model]}
                rows.append({"model": model, "source": label, **vals})
    return pd.DataFrame(rows, columns=["model", "source", *metrics]).fillna("")


def bucket_gaps(buckets, metric: str = "hr@10", a: str = "HSTU", b: str = "SASRec"):
    """Per bucket: mean and std over seeds of `metric` for models `a` and `b`, the gap a - b, its standard
    error over seeds, and whether the gap exceeds two standard errors (`beyond_spread`)."""
    import pandas as pd

    rows = []
    for (kind, bucket), g in buckets.groupby(["kind", "bucket"], sort=False):
        va, vb = g[g["model"] == a][metric], g[g["model"] == b][metric]
        if va.empty or vb.empty:
            continue
        sa, sb = (v.std(ddof=1) if len(v) > 1 else 0.0 for v in (va, vb))
        se = math.sqrt(sa**2 / len(va) + sb**2 / len(vb))
        gap = va.mean() - vb.mean()
        rows.append(
            {
                "kind": kind,
                "bucket": bucket,
                "lo": float(g["lo"].iloc[0]),
                "users": int(g["users"].iloc[0]),
                f"{a}": va.mean(),
                f"{a} std": sa,
                f"{b}": vb.mean(),
                f"{b} std": sb,
                "gap": gap,
                "gap se": se,
                "seeds": min(len(va), len(vb)),
                "beyond_spread": bool(len(va) > 1 and len(vb) > 1 and abs(gap) > 2 * se),
            }
        )
    out = pd.DataFrame(rows)
    return out.sort_values(["kind", "lo"], kind="stable").reset_index(drop=True) if len(out) else out


KIND_WORDS = {"history_length": "history length", "target_popularity": "target popularity (training count)"}


def bucket_markdown(buckets, metric: str = "hr@10", a: str = "HSTU", b: str = "SASRec") -> str:
    """What the bucket table shows, in sentences: per kind, where the gap a - b is largest and smallest,
    whether it grows along the buckets, and which gaps exceed two standard errors over seeds."""
    gaps = bucket_gaps(buckets, metric, a, b)
    if gaps.empty:
        return f"No bucket holds results of both {a} and {b}."
    M = metric.upper()
    seeds = int(gaps["seeds"].min())
    lines = []
    for kind, g in gaps.groupby("kind", sort=False):
        gap = g["gap"].to_numpy()
        names = g["bucket"].tolist()
        trend = (
            "grows along the buckets"
            if all(x < y for x, y in zip(gap, gap[1:]))
            else "shrinks along the buckets"
            if all(x > y for x, y in zip(gap, gap[1:]))
            else "does not move in one direction along the buckets"
        )
        if len(names) == 1:
            sig = "beyond" if g["beyond_spread"].iloc[0] else "within"
            lines.append(
                f"* **by {KIND_WORDS.get(kind, kind)}**: one bucket only, {names[0]}: {a} - {b} {M} "
                f"{gap[0]:+.3f}, {sig} two standard errors over seeds."
            )
            continue
        hi, lo = int(gap.argmax()), int(gap.argmin())
        beyond = [f"{n} ({x:+.3f})" for n, x, s in zip(names, gap, g["beyond_spread"]) if s]
        within = len(names) - len(beyond)
        lines.append(
            f"* **by {KIND_WORDS.get(kind, kind)}**: {a} - {b} {M} {trend}, from {gap[0]:+.3f} in {names[0]} "
            f"to {gap[-1]:+.3f} in {names[-1]}; largest in {names[hi]} ({gap[hi]:+.3f}), smallest in "
            f"{names[lo]} ({gap[lo]:+.3f}). "
            + (
                f"Beyond two standard errors over seeds: {', '.join(beyond)}; "
                f"{within} of the {len(names)} buckets within them."
                if beyond
                else f"No gap exceeds two standard errors over seeds ({len(names)} buckets)."
            )
        )
    head = f"{a} against {b}, test {M} per bucket, mean over {seeds} seed{'s' if seeds != 1 else ''}:\n\n"
    tail = (
        "\n\nA gap counts as beyond the seed spread when it exceeds twice its standard error, "
        "sqrt(s_a^2/n + s_b^2/n) with s the standard deviation of each model's seeds."
        if seeds > 1
        else "\n\nOne seed per model: no spread to compare the gaps with; differences of a few hundredths are "
        "within what another seed could give."
    )
    return head + "\n".join(lines) + tail


def _near(mean_by_distance, first: int, last: int) -> float:
    vals = mean_by_distance[first:last]
    return sum(vals) / len(vals) if vals else float("nan")


def silu_roots(y: float) -> tuple[float, float]:
    """The two scores s < 0 with SiLU(s) = y, for SILU_MIN < y < 0 (bisection on each side of the minimum)."""

    def silu(x):
        return x / (1.0 + math.exp(-x))

    def solve(a, b):  # silu(a) - y and silu(b) - y of opposite signs
        for _ in range(80):
            m = (a + b) / 2
            if (silu(a) - y) * (silu(m) - y) <= 0:
                b = m
            else:
                a = m
        return (a + b) / 2

    x_min = -1.2784645
    return solve(-60.0, x_min), solve(x_min, 0.0)


def attention_markdown(summary: dict) -> str:
    """What every layer x head attends to, read from `attention_summary`'s numbers, and why a layer whose
    weights are nearly all negative still works."""
    n = summary["norm"]
    floor = summary["weight_floor"]
    lines = []
    negative_layers = []
    for layer in summary["layers"]:
        for h in layer["heads"]:
            md = h["mean_by_distance"]
            recent, far = _near(md, 1, 4), _near(md, 20, len(md))
            diag, off = h["mean_diagonal"], h["mean_off_diagonal"]
            focus = (
                "the item itself more than the others"
                if abs(diag) > 2 * abs(off)
                else "the last few items more than the older ones"
                if abs(recent) > 2 * abs(far)
                else "its whole history with weights of similar size"
            )
            lines.append(
                f"* **layer {layer['layer']}, head {h['head']}**: {h['frac_negative']:.0%} of the weights are "
                f"negative, mean weight {h['mean']:+.2e} (row sum {h['mean_row_sum']:+.3f}); diagonal "
                f"{diag:+.2e} against {off:+.2e} off it; distance 1-3 {recent:+.2e} against {far:+.2e} at "
                f"distance 20 and more: it weighs {focus}."
            )
            if h["frac_negative"] > 0.9:
                negative_layers.append((layer["layer"], h))
    text = (
        f"Over all {summary['users']:,} {summary['split']} users (every causal cell of every real "
        f"history):\n\n" + "\n".join(lines)
    )
    lo_s, hi_s = silu_roots(SILU_MIN / 2)
    for layer, h in negative_layers:
        text += (
            f"\n\n**Why layer {layer} is almost uniformly negative.** A weight is SiLU(s)/n with "
            f"s = q·k + rab and n = {n:g}. SiLU(s) is negative exactly when s < 0 and never below "
            f"{SILU_MIN:.3f} (at s = -1.28), so no weight is below {SILU_MIN:.3f}/{n:g} = {floor:.2e}; the "
            f"smallest seen is {h['min']:.2e}. {h['frac_negative']:.0%} negative weights mean that the scores "
            f"of this layer sit almost all below zero, and {h['frac_below_half_silu_min']:.0%} of the weights "
            f"are below half that floor, which takes a score between {lo_s:.2f} and {hi_s:.2f}: near SiLU's minimum, where a weight changes little from item to "
            f"item"
            + (
                ", so such a row is close to a negative average of the values"
                if h["frac_below_half_silu_min"] > 0.5
                else ""
            )
            + ". The layer still carries information. The LayerNorm after A·V removes the row's scale, and "
            f"the sign is no obstacle: LayerNorm(-x) = -LayerNorm(x), and the gate u and the output projection "
            f"are learned. What tells items apart is how the weights differ, e.g. on the diagonal ({h['mean_diagonal']:+.2e}) "
            f"against off it ({h['mean_off_diagonal']:+.2e})."
        )
    return text


def sampled_markdown(d: dict, dataset_name: str, where: str = "") -> str:
    """The full softmax loss against the sampled one and the rescaled one, as a sentence."""
    full, s_mean, s_std, r_mean = d["full"], d["sampled_mean"], d["sampled_std"], d["rescaled_mean"]
    close = abs(r_mean - full) < 0.5 * abs(full - s_mean)
    return (
        f"{where}On `{dataset_name}` the sampled loss ({d['negatives']} negatives of {d['catalogue']} items) "
        f"averages **{s_mean:.2f}** over {d['draws']} draws against **{full:.2f}** for the full softmax: "
        f"{full - s_mean:.2f} nats below it, while the draws scatter by only {s_std:.3f}. That gap is bias, "
        f"not noise. Rescaling the negatives' sum by (C-1)/R brings the mean to {r_mean:.2f}"
        + (", close to the full loss." if close else ", still not the full loss.")
        + " The more of the catalogue the R negatives cover, the smaller the gap."
    )
