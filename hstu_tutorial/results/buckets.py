"""HR@10 and NDCG@10 by bucket of history length and of target popularity: aggregates of per-user ranks."""

from __future__ import annotations

from collections.abc import Sequence

LENGTH_EDGES = (0, 20, 50, 100, 200)  # history length buckets (lo, hi]
POPULARITY_BUCKETS = 5  # target popularity: quantiles of the test targets' training counts


def popularity_edges(target_counts, num_buckets: int = POPULARITY_BUCKETS) -> list[float]:
    """Bucket edges: quantiles of the targets' training counts (equal-sized buckets; ties merge edges)."""
    import numpy as np

    qs = np.linspace(0.0, 1.0, num_buckets + 1)
    return [float(e) for e in np.unique(np.quantile(np.asarray(target_counts, dtype=float), qs))]


def bucket_table(
    per_user,
    popularity,
    k: int = 10,
    length_edges: Sequence[int] = LENGTH_EDGES,
    num_popularity_buckets: int = POPULARITY_BUCKETS,
):
    """HR@k and NDCG@k per bucket of history length and of target popularity (aggregates only).

    `per_user`: DataFrame with history_length, target_item_id, rank (`Trainer.per_user_ranks`);
    `popularity`: training counts per item id (`metrics.item_popularity(ds, "train")`). Buckets are
    (lo, hi] (the lowest popularity bucket includes lo). Returns kind, bucket, lo, hi, users, hr@k, ndcg@k;
    empty buckets are left out. The metrics come from `hstu_tutorial.analysis.per_bucket_metrics` (the
    notebooks' and exercises' per-bucket function), with buckets closed on the right.
    """
    import numpy as np
    import pandas as pd

    from hstu_tutorial.analysis import per_bucket_metrics

    counts = np.asarray(popularity)[per_user["target_item_id"].to_numpy()]
    frame = per_user.assign(target_popularity=counts)
    kinds = {
        "history_length": [float(e) for e in length_edges],
        "target_popularity": popularity_edges(counts, num_popularity_buckets),
    }
    rows = []
    for kind, edges in kinds.items():
        if len(edges) < 2:  # every target equally popular: no popularity buckets
            continue
        lowest_closed = kind == "target_popularity"  # its first bucket also holds the lowest count
        values = frame[kind].to_numpy(dtype=float)
        inside = (values > edges[0]) & (values <= edges[-1])  # users outside every bucket are left out
        cut = list(edges)
        if lowest_closed:
            inside |= values == edges[0]
            cut[0] = float(np.nextafter(edges[0], -np.inf))  # (just below lo, hi] holds lo itself
        table = per_bucket_metrics(frame[inside], (kind, cut), k, closed="right")
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            users = int(table["users"].iloc[i])
            if users:
                label = f"[{lo:g}, {hi:g}]" if (i == 0 and lowest_closed) else f"({lo:g}, {hi:g}]"
                rows.append(
                    {
                        "kind": kind,
                        "bucket": label,
                        "lo": lo,
                        "hi": hi,
                        "users": users,
                        f"hr@{k}": float(table[f"hr@{k}"].iloc[i]),
                        f"ndcg@{k}": float(table[f"ndcg@{k}"].iloc[i]),
                    }
                )
    return pd.DataFrame(rows, columns=["kind", "bucket", "lo", "hi", "users", f"hr@{k}", f"ndcg@{k}"])
