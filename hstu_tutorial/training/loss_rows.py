"""The loss of a CUDA-graph step on the supervised positions only, in a fixed number of rows.

A graph needs fixed shapes, so its batches are padded: B histories of N positions each. On ML-1M users
1-2999 (N = 200) 47% of those positions are padding. The encoder must run on all of them (the graph's
shapes), but the loss need not: its sampled softmax scores every position against the whole catalogue,
(B*N, C) matrices that make up about a third of the step. The padded positions have weight zero, so
dropping them changes no number but the order of a sum.

The number of supervised positions varies from batch to batch, and a graph cannot. So the graph's loss
takes a fixed budget of `rows`: the supervised positions of the batch, in order, then filler rows of weight
zero. The budget (`row_budget`) is the batch's expected count plus five standard deviations of a random
batch's count, so it is almost never exceeded; the trainer counts every batch's supervised positions on
the host when it draws the epoch's order (`step_counts`) and runs a batch above the budget as an eager step
on all positions instead. A device counter (`compact_rows`'s overflow flag) catches a batch that was
replayed above the budget anyway: the trainer raises at the end of the epoch.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "compact_rows",
    "compare_with_all_positions",
    "fixed_negatives",
    "row_budget",
    "split_budget",
    "split_step_counts",
    "step_counts",
    "supervised_per_row",
]

SIGMAS = 5.0  # standard deviations of a random batch's count above its mean
ALIGN = 64  # the budget is a multiple of this (GEMM-friendly shapes)
WORTH_IT = 0.9  # no budget when it would keep more than this share of the padded positions


def supervised_per_row(next_ids: torch.Tensor) -> torch.Tensor:
    """(R,) on the CPU: the supervised positions (next id not 0) of every row of a padded (R, N) layout."""
    return (next_ids != 0).sum(1).cpu()


def row_budget(counts: torch.Tensor, batch_size: int, width: int, sigmas: float = SIGMAS) -> int | None:
    """The rows a graph's loss gets: mean + `sigmas` std of the count of `batch_size` rows drawn at random
    without replacement from `counts (U,)` (the users' supervised positions), rounded up to a multiple of
    64; None when that is no real saving (above 90% of `batch_size * width`) or there are no users."""
    counts = counts.to(torch.float64).flatten()
    users = counts.numel()
    full = batch_size * width
    if users == 0 or full <= 0:
        return None
    b = min(batch_size, users)
    mean = b * counts.mean().item()
    if users > 1:
        # the standard deviation of a sum drawn without replacement (finite population correction)
        sd = counts.std().item() * math.sqrt(b) * math.sqrt((users - b) / (users - 1))
    else:
        sd = 0.0
    budget = ALIGN * math.ceil((mean + sigmas * sd) / ALIGN)
    budget = max(budget, ALIGN)
    return None if budget >= WORTH_IT * full else int(budget)


def step_counts(per_row: torch.Tensor, order: torch.Tensor, batch_size: int) -> list[int]:
    """The supervised positions of every step's batch: `per_row (R,)` summed over `order (S*B,)` (CPU)."""
    order = order.cpu()
    if order.numel() % batch_size:
        raise ValueError(f"order has {order.numel()} rows, not a multiple of batch_size {batch_size}")
    return per_row[order].view(-1, batch_size).sum(1).tolist()


def split_budget(split, batch_size: int) -> int | None:
    """`row_budget` of a `ResidentSplit`'s users (its padded layout; the empty filler row left out)."""
    counts = supervised_per_row(split.padded_next_ids[: split.num_users])  # (U,)
    return row_budget(counts, batch_size, split.pad_width)


def split_step_counts(split, order: torch.Tensor, batch_size: int) -> list[int]:
    """`step_counts` of a `ResidentSplit`'s padded rows (filler row included) over `order (S*B,)`."""
    return step_counts(supervised_per_row(split.padded_next_ids), order, batch_size)


def compact_rows(supervised: torch.Tensor, rows: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the supervised positions of a batch are, in a fixed number of rows (no host synchronisation).

    supervised (T,) bool -> index (rows,) int64: the supervised positions in order, then position 0 as a
    filler; valid (rows,) bool: which rows are real; overflow () bool: the batch has more than `rows`
    supervised positions (those beyond are missing: the caller must not use the result)."""
    T = supervised.shape[0]
    place = supervised.cumsum(0) - 1  # (T,) the row each supervised position goes to
    dest = torch.where(supervised & (place < rows), place, rows)  # the rest to a spare row, dropped below
    index = torch.zeros(rows + 1, dtype=torch.int64, device=supervised.device)
    index.scatter_(0, dest, torch.arange(T, device=supervised.device))
    count = place[-1] + 1 if T else torch.zeros((), dtype=torch.int64, device=supervised.device)
    valid = torch.arange(rows, device=supervised.device) < count  # (rows,)
    return index[:rows], valid, count > rows


def fixed_negatives(loss_fn, negatives: torch.Tensor):
    """`loss_fn` that uses `negatives (M, R)` (positions into the catalogue) instead of drawing its own: for
    comparing the loss in its row budget with the loss on all positions (`compare_with_all_positions`)."""

    def fn(query, positive_ids, item_embed_fn, catalogue, num_negatives, temperature, weights=None):
        if query.shape[0] != negatives.shape[0]:
            raise ValueError(f"{query.shape[0]} rows but negatives for {negatives.shape[0]}")
        return loss_fn(
            query, positive_ids, item_embed_fn, catalogue, negatives.shape[1], temperature, weights=weights,
            negatives=negatives,
        )  # fmt: skip

    return fn


def compare_with_all_positions(
    trainer, index: torch.Tensor, rows: int, width: int | None = None, seed: int = 1
) -> dict:
    """The trainer's loss and gradients on the users `index (B,)` (padded batch) with the loss in `rows`
    rows against all positions, negatives fixed per position; dropout is off (eval mode) for both.

    Returns {"loss_rel_diff", "grad_rel_diff" (the largest over the parameters, relative to each gradient's
    largest entry), "inputs_unchanged"}. The trainer's `loss_fn` and model mode are restored."""
    batch = trainer.train_rows.padded_batch(index)
    inputs = {f"batch.{k}": v for k, v in vars(batch).items() if isinstance(v, torch.Tensor)}
    inputs.update(
        {f"train_rows.{k}": v for k, v in vars(trainer.train_rows).items() if isinstance(v, torch.Tensor)}
    )
    before = {k: v.clone() for k, v in inputs.items()}
    width = width or (1 if trainer.cfg.loss == "bce" else trainer.cfg.num_negatives)
    # the same negatives for a position in both calls: drawn per position, then compacted like the rows
    supervised = batch.next_item_ids != 0  # (T,)
    gen = torch.Generator().manual_seed(seed)
    per_position = torch.randint(0, trainer.catalogue.numel(), (supervised.numel(), width), generator=gen)
    per_position = per_position.to(supervised.device)  # (T, width)
    kept = per_position[supervised][:rows]  # (min(n, rows), width)
    compacted = torch.cat([kept, kept.new_zeros(rows - kept.shape[0], width)])  # (rows, width): fillers
    inner, was_training = trainer.loss_fn, trainer.model.training
    trainer.model.eval()
    try:

        def loss_and_grads(r):
            trainer.model.zero_grad(set_to_none=True)
            if trainer.cfg.loss != "full_softmax":
                trainer.loss_fn = fixed_negatives(inner, per_position if r is None else compacted)
            value = trainer.loss(batch, rows=r)
            value.backward()
            return value.detach().double(), [
                p.grad.detach().double().clone() for p in trainer.model.parameters() if p.grad is not None
            ]

        full, full_grads = loss_and_grads(None)
        part, part_grads = loss_and_grads(rows)
    finally:
        trainer.loss_fn = inner
        trainer.model.train(was_training)
        trainer.model.zero_grad(set_to_none=True)
    grad_diff = max(
        ((g - h).abs().max() / h.abs().max().clamp(min=1e-30)).item() for g, h in zip(part_grads, full_grads)
    )
    unchanged = all(torch.equal(before[k], inputs[k]) for k in inputs)
    return {
        "loss_rel_diff": ((part - full).abs() / full.abs()).item(),
        "grad_rel_diff": grad_diff if len(part_grads) == len(full_grads) else float("inf"),
        "inputs_unchanged": unchanged,
    }
