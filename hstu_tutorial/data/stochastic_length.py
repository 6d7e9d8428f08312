"""Stochastic Length (SL): train on shorter histories, drawn afresh each epoch, to cut the attention cost.

The rule (the paper, arXiv 2402.17152, §3.2, Eq. 4): with N the longest history and alpha in (1, 2],
a history of n items is used whole when n <= N^(alpha/2); a longer one is replaced by a subsequence of
N^(alpha/2) of its items with probability 1 - N^alpha / n^2, and used whole otherwise. The expected
attention cost of a long history is then N^alpha + (1 - N^alpha / n^2) * L^2 <= 2 N^alpha
(L = N^(alpha/2)) instead of n^2: the cost grows like N^alpha rather than N^2.

The official code (generative-recommenders, `apply_sampling` in generative_recommenders/common.py, used
by its attention benchmark) applies the same rule to sequence lengths: threshold
int(max_seq_len ** (alpha / 2)), cut when a uniform draw falls below 1 - max_seq_len ** alpha / n ** 2.
Here, as there, N is `max_seq_len` (the pad width): the longest history once a user reaches the cap.

Eq. 4 does not fix which items the subsequence keeps (the paper discusses that choice in its appendix F.1;
the official `apply_sampling` changes lengths only). `selection` picks one of two simple choices, both
keeping the kept items' order and timestamps:

    "uniform"  a uniformly random set of L = floor(N^(alpha/2)) positions of the history
    "recent"   the L most recent items

A cut history is a new, shorter sequence: each kept position predicts the next kept item and the last one
predicts the split's target, as for any history (`SequenceSplit.batch` builds that supervision). The
trainer draws a new cut of the training split every epoch (`stochastic_length_alpha` in the config) and
never touches the evaluation splits.
"""

from __future__ import annotations

import math

import torch

from hstu_tutorial.data.reco_dataset import SequenceSplit, jagged_coordinates

__all__ = [
    "SELECTIONS",
    "cut_users",
    "expected_cost",
    "keep_whole_probability",
    "stochastic_length_split",
    "threshold",
]

SELECTIONS = ("uniform", "recent")


def _check_alpha(alpha: float) -> None:
    if not 1.0 < alpha <= 2.0:
        raise ValueError(
            f"alpha must be in (1, 2] (the paper's range; 2 cuts nothing), got {alpha}: try 1.6 or 1.8"
        )


def threshold(alpha: float, max_len: int) -> int:
    """L = floor(N^(alpha/2)): the longest history SL leaves alone, and the length of a cut one."""
    _check_alpha(alpha)
    return max(1, math.floor(max_len ** (alpha / 2)))


def keep_whole_probability(lengths: torch.Tensor, alpha: float, max_len: int) -> torch.Tensor:
    """(U,) float64: the chance each history of `lengths (U,)` is used whole (1 up to the threshold)."""
    n = lengths.to(torch.float64)  # (U,)
    p = (float(max_len) ** alpha) / n.clamp(min=1.0) ** 2  # (U,) N^alpha / n^2
    return torch.where(lengths > threshold(alpha, max_len), p.clamp(max=1.0), torch.ones_like(p))


def cut_users(
    lengths: torch.Tensor, alpha: float, max_len: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(U,) bool: which histories of `lengths (U,)` are cut this draw (one uniform number per history)."""
    u = torch.rand(lengths.shape, generator=generator, device=lengths.device, dtype=torch.float64)  # (U,)
    return u >= keep_whole_probability(lengths, alpha, max_len)  # P(cut) = 1 - N^alpha / n^2 above L


def _rank_in_row(row: torch.Tensor, offsets: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """(T,) each token's rank by `key (T,)` among the tokens of its own row (0 = smallest key)."""
    by_key = torch.argsort(key)  # (T,)
    grouped = by_key[torch.sort(row[by_key], stable=True).indices]  # (T,) by row, then by key inside a row
    rank = torch.empty_like(grouped)
    total = row.shape[0]
    rank[grouped] = torch.arange(total, device=row.device) - offsets.index_select(0, row[grouped])
    return rank


def stochastic_length_split(
    split: SequenceSplit,
    alpha: float,
    *,
    generator: torch.Generator | None = None,
    selection: str = "uniform",
    max_len: int | None = None,
) -> SequenceSplit:
    """One SL draw of `split`: a new SequenceSplit with the same users and targets, some histories cut.

    `max_len` is N (default: the split's pad width). Works on the split's device, with `generator` (on that
    device) as the only source of randomness: the same generator state gives the same cut."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {list(SELECTIONS)}, got {selection!r}")
    N = split.pad_width if max_len is None else max_len
    L = threshold(alpha, N)
    lengths = split.lengths  # (U,)
    cut = cut_users(lengths, alpha, N, generator)  # (U,)
    T = split.num_tokens
    row, col = jagged_coordinates(split.offsets, lengths, T)  # (T,), (T,)
    if selection == "recent":
        chosen = col >= lengths.index_select(0, row) - L  # (T,) the last L positions of each row
    else:
        key = torch.rand(T, generator=generator, device=row.device)  # (T,) a random order inside each row
        chosen = _rank_in_row(row, split.offsets, key) < L  # (T,) L random positions of each row
    keep = ~cut.index_select(0, row) | chosen  # (T,) uncut rows keep everything
    new_lengths = torch.where(cut, torch.full_like(lengths, L), lengths)  # (U,)
    offsets = torch.zeros_like(split.offsets)  # (U+1,)
    torch.cumsum(new_lengths, 0, out=offsets[1:])
    return SequenceSplit(
        name=split.name,
        pad_width=split.pad_width,
        user_ids=split.user_ids,
        item_ids=split.item_ids[keep],  # boolean masks keep the order: oldest first, as before
        ratings=split.ratings[keep],
        timestamps=split.timestamps[keep],
        offsets=offsets,
        target_item_ids=split.target_item_ids,
        target_ratings=split.target_ratings,
        target_timestamps=split.target_timestamps,
    )


def expected_cost(lengths: torch.Tensor, alpha: float, max_len: int) -> dict[str, float]:
    """Expected share of tokens and of attention cost (sum of n^2) that SL keeps, for `lengths (U,)`."""
    n = lengths.to(torch.float64)  # (U,)
    p = keep_whole_probability(lengths, alpha, max_len)  # (U,)
    L = float(threshold(alpha, max_len))
    tokens = p * n + (1 - p) * L  # (U,) expected kept length
    squares = p * n**2 + (1 - p) * L**2  # (U,) expected n^2
    return {
        "threshold": int(L),
        "users_above_threshold": float((lengths > L).double().mean()),
        "tokens_kept": float(tokens.sum() / n.sum()),
        "attention_kept": float(squares.sum() / (n**2).sum()),
    }
