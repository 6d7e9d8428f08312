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
    empty buckets are left out.
    """
    import numpy as np
    import pandas as pd

    rank = per_user["rank"].to_numpy()
    hit = (rank <= k).astype(float)
    ndcg = np.where(rank <= k, 1.0 / np.log2(rank + 1.0), 0.0)
    counts = np.asarray(popularity)[per_user["target_item_id"].to_numpy()]
    kinds = {
        "history_length": (per_user["history_length"].to_numpy(), [float(e) for e in length_edges]),
        "target_popularity": (counts, popularity_edges(counts, num_popularity_buckets)),
    }
    rows = []
    for kind, (values, edges) in kinds.items():
        for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
            inside = (values > lo) & (values <= hi)
            if i == 0 and kind == "target_popularity":
                inside |= values == lo
            n = int(inside.sum())
            if n:
                label = (
                    f"({lo:g}, {hi:g}]"
                    if not (i == 0 and kind == "target_popularity")
                    else f"[{lo:g}, {hi:g}]"
                )
                rows.append(
                    {
                        "kind": kind,
                        "bucket": label,
                        "lo": lo,
                        "hi": hi,
                        "users": n,
                        f"hr@{k}": float(hit[inside].mean()),
                        f"ndcg@{k}": float(ndcg[inside].mean()),
                    }
                )
    return pd.DataFrame(rows, columns=["kind", "bucket", "lo", "hi", "users", f"hr@{k}", f"ndcg@{k}"])
