"""Where a model wins: HR@K and NDCG@K per bucket of users, from the per-user ranks a run saves.

A run's `ranks_test.csv` (see `hstu_tutorial.training.run_files`) has one row per user: user_id,
target_item_id, history_length and the 1-based rank of the target. The overall HR@K is the mean of
[rank <= K] over all users; splitting users into buckets (by history length, by how popular the target is)
shows where that mean comes from.

A bucketing is `(column, edges)`: bucket i holds the users with `edges[i] <= value < edges[i + 1]` (closed on
the left, open on the right, so a value equal to an edge belongs to the bucket that *starts* there). Inside
a bucket the metrics are means over that bucket's users only; a bucket without users has no mean (NaN).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["bucket_labels", "per_bucket_metrics", "quantile_edges", "with_target_popularity"]


def _edge(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bucket_labels(edges: Sequence[float], closed: str = "left") -> list[str]:
    """'[a, b)' (or '(a, b]' with closed="right") for every pair of consecutive edges: the labels of
    `per_bucket_metrics`' rows."""
    left, right = ("[", ")") if closed == "left" else ("(", "]")
    return [f"{left}{_edge(a)}, {_edge(b)}{right}" for a, b in zip(edges[:-1], edges[1:])]


def per_bucket_metrics(ranks_df, bucket_of: tuple[str, Sequence[float]], k: int = 10, closed: str = "left"):
    """Users, HR@k and NDCG@k per bucket: a DataFrame with one row per bucket, in edge order.

    ranks_df: one row per user with a 1-based "rank" column and the bucketing column; bucket_of:
    (column, edges), bucket i = [edges[i], edges[i+1]) (closed="right": (edges[i], edges[i+1]]). Columns
    "users", "hr@{k}", "ndcg@{k}"; an empty bucket has 0 users and NaN metrics. Every value must lie in
    [edges[0], edges[-1]) (closed="right": (edges[0], edges[-1]]).
    """
    import pandas as pd

    if closed not in ("left", "right"):
        raise ValueError(f'closed must be "left" or "right", got {closed!r}')
    column, edges = bucket_of
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
        raise ValueError(f"edges must be at least two increasing numbers, got {list(edges)}")
    values = ranks_df[column].to_numpy(dtype=np.float64)  # (U,)
    rank = ranks_df["rank"].to_numpy(dtype=np.float64)  # (U,)
    if len(rank) and rank.min() < 1:
        raise ValueError(f"ranks are 1-based (the best is 1), got a rank of {rank.min():g}")
    # (U,) edges[i] <= v < edges[i+1], or edges[i] < v <= edges[i+1] when closed on the right
    bucket = np.searchsorted(edges, values, side="right" if closed == "left" else "left") - 1
    n = len(edges) - 1
    outside = (bucket < 0) | (bucket >= n)
    if outside.any():
        (span,) = bucket_labels([edges[0], edges[-1]], closed)
        raise ValueError(
            f"{int(outside.sum())} value(s) of {column!r} lie outside {span}, "
            f"e.g. {values[outside][0]:g}: widen the first or last edge (np.inf is allowed)"
        )
    hit = rank <= k  # (U,)
    gain = np.where(hit, 1.0 / np.log2(rank + 1.0), 0.0)  # (U,)
    users = np.bincount(bucket, minlength=n)  # (n,)
    with np.errstate(invalid="ignore", divide="ignore"):  # an empty bucket: 0 / 0 = NaN, no mean
        hr = np.bincount(bucket, weights=hit.astype(np.float64), minlength=n) / users
        ndcg = np.bincount(bucket, weights=gain, minlength=n) / users
    index = pd.Index(bucket_labels(list(edges), closed), name=column)
    return pd.DataFrame({"users": users.astype(np.int64), f"hr@{k}": hr, f"ndcg@{k}": ndcg}, index=index)


def quantile_edges(values, quantiles: Sequence[float] = (0.25, 0.5, 0.75)) -> list[float]:
    """Edges at the minimum, the given quantiles (duplicates dropped) and inf: buckets of similar size."""
    values = np.asarray(values, dtype=np.float64)
    inner = np.quantile(values, quantiles) if len(values) else []
    return sorted({float(values.min()), *map(float, inner)}) + [math.inf]


def with_target_popularity(ranks_df, popularity):
    """A copy of `ranks_df` with a "target_popularity" column: how often the target occurs in training.

    popularity: counts indexed by item id, e.g. `metrics.item_popularity(dataset, "train")`."""
    counts = np.asarray(popularity.cpu() if hasattr(popularity, "cpu") else popularity)
    return ranks_df.assign(target_popularity=counts[ranks_df["target_item_id"].to_numpy()])
