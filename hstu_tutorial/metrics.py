"""Full-ranking evaluation: HR@K, NDCG@K and MRR over the whole catalogue, with seen items removed.

For each user the model's query `q` (the output at the last history position) scores every item of the
catalogue by dot product, `s_c = <q, e_c>`. Items inside the history window are removed (as the
reference does; a target that also appears in the window is then a miss). The target's rank is

    rank = 1 + #{c not seen : s_c > s_target}          (ties count in the target's favour)

and the metrics average over users:

    HR@K   = mean[rank <= K]
    NDCG@K = mean[rank <= K] / log2(rank + 1)          (one relevant item, so the ideal DCG is 1)
    MRR    = mean 1 / rank

The reference keeps only the top 2,500 items and gives every target beyond them rank 2,501; here the
rank is exact (MRR differs from the reference's by at most 1/2501 per user beyond the top 2,500, and HR
and NDCG at K <= 2,500 not at all).

Everything is batched and stays on the model's device; the only host transfer is the final averages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch

from hstu_tutorial.losses import catalogue_index, l2_normalize

DEFAULT_KS = (1, 10, 50, 200)

__all__ = [
    "DEFAULT_KS",
    "batch_ranks",
    "evaluate",
    "evaluate_per_user",
    "item_popularity",
    "popularity_baseline",
    "popularity_ranks",
    "metric_names",
    "metrics_from_ranks",
    "ranks_table",
    "split_batches",
    "target_ranks",
]


def seen_mask(history_ids: torch.Tensor, catalogue: torch.Tensor, num_items: int) -> torch.Tensor:
    """Which catalogue items appear in each history window. history_ids (B, N) zero-padded -> (B, C) bool."""
    B = history_ids.shape[0]
    seen = torch.zeros(B, num_items + 1, dtype=torch.bool, device=history_ids.device)  # (B, num_items + 1)
    seen.scatter_(1, history_ids, True)  # padding id 0 lands in column 0, which no catalogue item uses
    return seen[:, catalogue]  # (B, C)


def target_ranks(
    query: torch.Tensor,
    item_embeddings: torch.Tensor,
    catalogue: torch.Tensor,
    target_ids: torch.Tensor,
    history_ids: torch.Tensor | None = None,
    num_items: int | None = None,
) -> torch.Tensor:
    """1-based rank of each target among the unseen catalogue items. Returns (B,) int64.

    query (B, D); item_embeddings (C, D) for `catalogue` (C,) sorted item ids; target_ids (B,);
    history_ids (B, N) zero-padded ids to remove (None: remove nothing). A removed target gets rank
    C + 1 (a miss at every K).
    """
    scores = query.float() @ item_embeddings.float().t()  # (B, C)
    target_col = catalogue_index(catalogue, target_ids)  # (B,)
    target_seen = torch.zeros_like(target_ids, dtype=torch.bool)  # (B,)
    if history_ids is not None:
        num_items = int(catalogue[-1]) if num_items is None else num_items
        seen = seen_mask(history_ids, catalogue, num_items)  # (B, C)
        scores = scores.masked_fill(seen, float("-inf"))  # (B, C)
        target_seen = seen.gather(1, target_col[:, None])[:, 0]  # (B,)
    target_score = scores.gather(1, target_col[:, None])  # (B, 1)
    ranks = 1 + (scores > target_score).sum(dim=1)  # (B,)
    return torch.where(target_seen, torch.full_like(ranks, catalogue.numel() + 1), ranks)


def metric_names(ks: Sequence[int] = DEFAULT_KS) -> list[str]:
    """The keys `metrics_from_ranks` returns, in display order: hr@K..., ndcg@K..., mrr."""
    return [f"hr@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + ["mrr"]


def metrics_from_ranks(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS, as_float: bool = True) -> dict:
    """HR@K, NDCG@K (for each K in `ks`) and MRR from 1-based ranks (U,). Floats, or 0-dim tensors."""
    ranks = ranks.double()  # (U,)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = (ranks <= k).double().mean()
    for k in ks:
        out[f"ndcg@{k}"] = torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), 0.0).mean()
    out["mrr"] = (1.0 / ranks).mean()
    if as_float:
        stacked = torch.stack(list(out.values())).tolist()  # one host transfer for all metrics
        out = dict(zip(out, stacked))
    return out


def split_batches(dataset, split: str, batch_size: int, device) -> Iterable:
    """The `JaggedBatch`es of `dataset`'s `split` ("train", "valid" or "test") in user order."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    return dataset.loader(split, batch_size, shuffle=False, device=device)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def batch_ranks(
    model: torch.nn.Module,
    batches: Iterable,
    catalogue: torch.Tensor,
    num_items: int,
    *,
    forward: Callable | None = None,
    autocast=None,
) -> torch.Tensor:
    """Rank of every target of `batches` (JaggedBatch) among the unseen catalogue items: (U,) int64.

    The query of a history is the model's output at its last position: `model.query_embeddings(batch)`
    when the model has it (HSTU and SASRec compute their last block for that position only), else
    `model.last_embeddings(model(batch), batch)`. It scores every item of `catalogue (C,)` against the
    L2-normalised item embeddings, and the items of the history window are removed. `forward(batch)`, when
    given, runs the model instead (a trainer passes its compiled or DistributedDataParallel wrapper) and
    its last positions are the queries; `autocast` is the context the forward runs in (e.g. bf16). The
    model is put in eval mode and its training mode restored afterwards.
    """
    if forward is not None:
        query_of = lambda batch: model.last_embeddings(forward(batch), batch)  # noqa: E731
    elif hasattr(model, "query_embeddings"):
        query_of = model.query_embeddings
    else:
        query_of = lambda batch: model.last_embeddings(model(batch), batch)  # noqa: E731
    autocast = contextlib.nullcontext() if autocast is None else autocast
    was_training = model.training
    model.eval()
    try:
        with autocast:
            items = l2_normalize(model.item_embeddings(catalogue).float())  # (C, D)
        ranks = []
        for batch in batches:
            with autocast:
                query = query_of(batch).float()  # (B, D)
            history = batch.padded("item_ids")  # (B, N)
            ranks.append(target_ranks(query, items, catalogue, batch.target_item_ids, history, num_items))
        return torch.cat(ranks)  # (U,)
    finally:
        model.train(was_training)


def ranks_table(ranks: torch.Tensor, user_ids, target_item_ids, history_lengths):
    """One row per user: user_id, target_item_id, history_length, rank (a pandas DataFrame)."""
    import pandas as pd

    host = lambda t: t.cpu().numpy() if isinstance(t, torch.Tensor) else t
    return pd.DataFrame(
        {
            "user_id": host(user_ids),
            "target_item_id": host(target_item_ids),
            "history_length": host(history_lengths),
            "rank": host(ranks),
        }
    )


def _split_ranks(model, dataset, split: str, batch_size: int, device) -> torch.Tensor:
    device = _model_device(model) if device is None else torch.device(device)
    batches = split_batches(dataset, split, batch_size, device)
    return batch_ranks(model, batches, dataset.catalogue.to(device), dataset.num_items)


def evaluate(
    model: torch.nn.Module,
    dataset,
    split: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Full-ranking HR@K, NDCG@K and MRR of `model` on `dataset`'s `split` ("valid" or "test").

    Every user of the split is ranked against the whole catalogue, history items removed. Returns
    {"hr@1": ..., "ndcg@1": ..., ..., "mrr": ...} (floats), as `metric_names(ks)` orders them.
    """
    return metrics_from_ranks(_split_ranks(model, dataset, split, batch_size, device), ks)


def evaluate_per_user(
    model: torch.nn.Module,
    dataset,
    split: str = "test",
    batch_size: int = 1024,
    device: torch.device | str | None = None,
):
    """One row per user: user_id, target_item_id, history_length, rank (a pandas DataFrame).

    For analyses such as "where does the model win": by history length, by target popularity...
    """
    ranks = _split_ranks(model, dataset, split, batch_size, device)
    s = dataset.split(split)
    return ranks_table(ranks, s.user_ids, s.target_item_ids, s.lengths)


def item_popularity(dataset, split: str = "train") -> torch.Tensor:
    """How often each item id occurs in `split` (histories and targets): (num_items + 1,) int64."""
    s = dataset.split(split)
    ids = torch.cat([s.item_ids, s.target_item_ids])  # (T + U,)
    return torch.bincount(ids, minlength=dataset.num_items + 1)  # (num_items + 1,)


def popularity_ranks(dataset, split: str = "test", popularity_from: str = "train") -> torch.Tensor:
    """Ranks (U,) of the most-popular-first baseline (same seen-item filtering). Ties go to lower ids."""
    counts = item_popularity(dataset, popularity_from).double()  # (num_items + 1,)
    ids = torch.arange(dataset.num_items + 1, dtype=torch.float64)
    score = counts - ids / (dataset.num_items + 2)  # break ties deterministically (lower id first)
    s = dataset.split(split)
    catalogue = dataset.catalogue
    history = s.batch(torch.arange(len(s)), total=s.num_tokens).padded("item_ids")  # (U, N)
    # A one-dimensional "embedding" whose dot product with the query 1 is the popularity score.
    return target_ranks(
        torch.ones(len(s), 1, dtype=torch.float64),
        score[catalogue][:, None],
        catalogue,
        s.target_item_ids,
        history,
        dataset.num_items,
    )


def popularity_baseline(dataset, split: str = "test", ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """HR@K, NDCG@K, MRR of recommending the most popular unseen items (popularity from the train split)."""
    return metrics_from_ranks(popularity_ranks(dataset, split), ks)
