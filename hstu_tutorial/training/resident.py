"""The device-resident split: a split copied to the training device once, batched by gathers there."""

from __future__ import annotations

import torch

from hstu_tutorial.data.reco_dataset import JaggedBatch, SequenceSplit, batch_totals

__all__ = ["ResidentSplit"]


class ResidentSplit:
    """A split on the training device, batched in two layouts that give the same `JaggedBatch` type.

    jagged: only the real tokens of B histories (what `SequenceSplit.batch` and the data loaders give);
    padded: B histories of exactly N = `pad_width` positions each (fixed shapes, for a CUDA graph).
    Padded tensors have one extra all-zero row (index U) that fills the last, partial batch of the padded
    layout, so that every batch has exactly `batch_size` rows.
    """

    def __init__(self, split: SequenceSplit, device: torch.device):
        self.split = split.to(device)  # the data module's flat SequenceSplit
        self.device = device
        self.num_users = U = len(split)
        self.pad_width = N = split.pad_width  # N: positions per row of the padded layout
        every = self.split.batch(torch.arange(U, device=device), total=self.split.num_tokens)
        lengths = every.lengths  # (U,)

        def pad(values):  # (T,) -> (U + 1, N): one padded row per user, plus the empty filler row
            out = torch.zeros(U + 1, N, dtype=values.dtype, device=device)
            out[:U] = every.padded(values, max_len=N)
            return out

        self.padded_item_ids = pad(every.item_ids)  # (U+1, N)
        self.padded_ratings = pad(every.ratings)  # (U+1, N)
        self.padded_next_ids = pad(every.next_item_ids)  # (U+1, N): the supervision; 0 = not supervised
        ts = pad(every.timestamps)  # (U+1, N)
        # The target's timestamp goes into the first padding slot: HSTU's bias for the last real query
        # reads the timestamp of the position after it.
        slot = lengths.clamp(max=N - 1)[:, None]  # (U, 1)
        has_room = (lengths < N)[:, None]  # (U, 1)
        ts[:U].scatter_(
            1, slot, torch.where(has_room, every.target_timestamps[:, None], ts[:U].gather(1, slot))
        )
        self.padded_timestamps = ts  # (U+1, N)

        def ext(v):  # (U,) -> (U+1,)
            return torch.cat([v, v.new_zeros(1)])

        self.lengths = ext(lengths)  # (U+1,)
        self.user_ids = ext(every.user_ids)
        self.target_item_ids = ext(every.target_item_ids)
        self.target_ratings = ext(every.target_ratings)
        self.target_timestamps = ext(every.target_timestamps)
        self.total_tokens = self.split.num_tokens
        self._in_order: tuple | None = None  # (batch_size, order, totals) of `batches`

    def refill_(self, split: SequenceSplit) -> None:
        """Hold `split` (same users, e.g. a Stochastic Length draw) in this object's own tensors, in place.

        A captured CUDA graph keeps reading the same addresses, so it trains on the new histories."""
        fresh = ResidentSplit(split, self.device)
        if fresh.num_users != self.num_users or fresh.pad_width != self.pad_width:
            raise ValueError(
                f"refill_: {fresh.num_users} users of width {fresh.pad_width}, "
                f"expected {self.num_users} of width {self.pad_width}"
            )
        for name, value in vars(fresh).items():
            if isinstance(value, torch.Tensor):
                getattr(self, name).copy_(value)
        self.split, self.total_tokens, self._in_order = fresh.split, fresh.total_tokens, None

    # -- padded layout: fixed shapes (B*N tokens), no host sync at all --------------------------------
    def padded_batch(self, index: torch.Tensor) -> JaggedBatch:
        """Rows `index (B,)` as a JaggedBatch of B sequences of length N; padding is not supervised."""
        B, N = index.shape[0], self.pad_width
        return JaggedBatch(
            user_ids=self.user_ids[index],
            item_ids=self.padded_item_ids[index].reshape(-1),  # (B*N,)
            ratings=self.padded_ratings[index].reshape(-1),
            timestamps=self.padded_timestamps[index].reshape(-1),
            offsets=torch.arange(B + 1, dtype=torch.int64, device=self.device) * N,  # (B+1,)
            lengths=torch.full((B,), N, dtype=torch.int64, device=self.device),  # (B,)
            max_len=N,
            target_item_ids=self.target_item_ids[index],
            target_ratings=self.target_ratings[index],
            target_timestamps=self.target_timestamps[index],
            next_item_ids=self.padded_next_ids[index].reshape(-1),  # (B*N,)
            history_lengths=self.lengths[index],  # (B,) the real items at the front of each row
        )

    def padded_last(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) position in a padded batch of `index` of each history's last real token."""
        N = self.pad_width
        return torch.arange(index.shape[0], device=self.device) * N + (self.lengths[index] - 1).clamp(min=0)

    # -- jagged layout: only real tokens (the token count comes from the host) ------------------------
    def jagged_batch(self, index: torch.Tensor, total: int | None = None) -> JaggedBatch:
        """Rows `index (B,)` (no filler rows) as a JaggedBatch of `total` tokens, with supervision.

        `total` = their summed lengths, known ahead to spare a host sync (None: counted here)."""
        return self.split.batch(index, total=total)

    def batch_totals(self, order: torch.Tensor, batch_size: int) -> list[int]:
        """Token count of each batch of `order` (one host transfer for a whole epoch)."""
        return batch_totals(self.lengths, order, batch_size)

    def batches(self, batch_size: int):
        """The users in order as jagged batches of `batch_size` (token counts read to the host once)."""
        if self._in_order is None or self._in_order[0] != batch_size:
            order = torch.arange(self.num_users, device=self.device)  # (U,)
            self._in_order = (batch_size, order, self.batch_totals(order, batch_size))
        _, order, totals = self._in_order
        for i, total in enumerate(totals):
            yield self.jagged_batch(order[i * batch_size : (i + 1) * batch_size], total)
