"""Validation and test ranks from one pass, where a model allows it (SASRec).

A user's validation history is, as a rule, their test history without its last item (the validation target).
For a causal model whose positions count from the oldest item and that reads no timestamps (SASRec), the
output at the second-to-last position of the test history is then exactly the validation query: every block
sees the same items at the same positions, and causal attention keeps the last item out. So one pass over the
test histories gives both queries, and only the users whose windows differ (a history cut at `max_seq_len`
drops its oldest item one split later, and a different first item changes every position) need a pass of their
own. HSTU is not such a model: its time bias reads the timestamp of the item after each query, which is the
validation target's for one query and the test target's for the other.

Which users qualify is decided once from the data (`prefix_pairs`), never assumed; ranks are computed as for
separate passes (the same seen-item removal, each split's own targets).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from hstu_tutorial.metrics import target_ranks
from hstu_tutorial.modules.preprocessors import l2_normalize
from hstu_tutorial.training.resident import ResidentSplit

__all__ = ["PrefixPairs", "paired_ranks", "prefix_pairs"]


@dataclass
class PrefixPairs:
    """`valid_of_test (U_t,)`: the validation row whose history is that test row's without its last item, or
    U_v (a scratch row) where none is; `rest (R,)`: validation rows no test row covers, in batches of
    `batch_size` whose token counts are `rest_totals`; `covered`: how many validation rows the test pass covers."""

    valid_of_test: torch.Tensor
    rest: torch.Tensor
    rest_totals: list[int]
    batch_size: int
    covered: int


def prefix_pairs(valid: ResidentSplit, test: ResidentSplit, batch_size: int) -> PrefixPairs:
    """Match each validation user to the test row of the same user whose history is theirs plus one item at
    the end (same items, same order, same first item). A few host transfers, once."""
    U_v, U_t = valid.num_users, test.num_users
    v_users, t_users = valid.user_ids[:U_v], test.user_ids[:U_t]  # (U_v,), (U_t,)
    t_sorted, t_order = torch.sort(t_users)
    pos = torch.searchsorted(t_sorted, v_users).clamp(max=max(U_t - 1, 0))  # (U_v,)
    match = t_order[pos] if U_t else torch.zeros_like(v_users)  # (U_v,) the test row of the same user, if any
    same_user = (t_sorted[pos] == v_users) if U_t else torch.zeros_like(v_users, dtype=torch.bool)
    v_len, t_len = valid.lengths[:U_v], test.lengths[match]  # (U_v,)
    t_rows = test.padded_item_ids[match].clone()  # (U_v, N)
    last = (t_len - 1).clamp(min=0)[:, None]  # (U_v, 1)
    t_rows.scatter_(1, last, 0)  # the test history without its last item
    prefix = same_user & (t_len == v_len + 1) & (v_len > 0) & (t_rows == valid.padded_item_ids[:U_v]).all(1)
    covered = prefix.nonzero()[:, 0]  # (P,) validation rows
    valid_of_test = torch.full((U_t,), U_v, dtype=torch.int64, device=valid.device)
    valid_of_test[match[covered]] = covered
    rest = (~prefix).nonzero()[:, 0]  # (R,)
    return PrefixPairs(
        valid_of_test, rest, valid.batch_totals(rest, batch_size), batch_size, int(covered.numel())
    )


@torch.no_grad()
def paired_ranks(
    model: torch.nn.Module,
    valid: ResidentSplit,
    test: ResidentSplit,
    pairs: PrefixPairs,
    catalogue: torch.Tensor,
    num_items: int,
    autocast=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks `(U_v,)` and `(U_t,)` of the validation and test targets, as `batch_ranks` gives them split by
    split: the validation queries of the covered users come from the test pass
    (`model.query_embeddings_and_previous`), the others from a pass of their own."""
    autocast = contextlib.nullcontext() if autocast is None else autocast
    batch_size = pairs.batch_size
    was_training = model.training
    model.eval()
    try:
        with autocast:
            items = l2_normalize(model.item_embeddings(catalogue).float())  # (C, D)
        U_v, D = valid.num_users, items.shape[1]
        q_valid = torch.zeros(U_v + 1, D, device=items.device)  # row U_v: where uncovered test rows write
        test_ranks, start = [], 0
        for batch in test.batches(batch_size):
            with autocast:
                q_last, q_prev = model.query_embeddings_and_previous(batch)  # (B, D) each
            B = q_last.shape[0]
            test_ranks.append(
                target_ranks(
                    q_last.float(),
                    items,
                    catalogue,
                    batch.target_item_ids,
                    batch.padded("item_ids"),
                    num_items,
                )
            )
            q_valid.index_copy_(0, pairs.valid_of_test[start : start + B], q_prev.float())
            start += B
        for i, total in enumerate(pairs.rest_totals):
            rows = pairs.rest[i * batch_size : (i + 1) * batch_size]
            with autocast:
                q_valid[rows] = model.query_embeddings(valid.jagged_batch(rows, total)).float()
        valid_ranks = [
            target_ranks(
                q_valid[i : min(i + batch_size, U_v)],
                items,
                catalogue,
                valid.target_item_ids[i : min(i + batch_size, U_v)],
                valid.padded_item_ids[i : min(i + batch_size, U_v)],
                num_items,
            )
            for i in range(0, U_v, batch_size)
        ]
        return torch.cat(valid_ranks), torch.cat(test_ranks)
    finally:
        model.train(was_training)
