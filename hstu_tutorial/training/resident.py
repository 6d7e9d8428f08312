"""The device-resident split: a split copied to the training device once, batched by gathers there."""

from __future__ import annotations

import torch

from hstu_tutorial.data.reco_dataset import JaggedBatch, jagged_coordinates

__all__ = ["ResidentSplit"]


class ResidentSplit:
    """A split on the training device, in both layouts, plus what the loss and the metrics need.

    Padded tensors have one extra all-zero row (index U) that fills the last, partial batch of the padded
    layout, so that every batch has exactly `batch_size` rows.
    """

    def __init__(self, split, device: torch.device):
        self.split = split.to(device)  # the data module's flat SequenceSplit
        self.device = device
        self.num_users = len(split)
        self.max_len = N = split.max_len
        U = self.num_users
        every = self.split.batch(torch.arange(U, device=device), total=self.split.num_tokens)
        lengths = every.lengths  # (U,)
        # Supervision in the jagged layout: token t predicts the next token; a history's last token
        # predicts its target.
        nxt = torch.roll(self.split.item_ids, -1)  # (T,)
        nxt[self.split.offsets[1:] - 1] = self.split.target_item_ids
        self.next_item_ids = nxt  # (T,)

        def pad(values):  # (T,) -> (U + 1, N): one padded row per user, plus the empty filler row
            out = torch.zeros(U + 1, N, dtype=values.dtype, device=device)
            out[:U] = every.padded(values, max_len=N)
            return out

        self.padded_item_ids = pad(every.item_ids)  # (U+1, N)
        self.padded_ratings = pad(every.ratings)  # (U+1, N)
        self.padded_next_ids = pad(nxt)  # (U+1, N): the supervision targets; 0 = not supervised
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

    # -- padded layout: fixed shapes (B*N tokens), no host sync at all --------------------------------
    def padded_batch(self, index: torch.Tensor):
        """Rows `index (B,)` as a JaggedBatch of B sequences of length N, with supervision and weights."""
        B, N = index.shape[0], self.max_len
        lengths = torch.full((B,), N, dtype=torch.int64, device=self.device)  # (B,)
        offsets = torch.arange(B + 1, dtype=torch.int64, device=self.device) * N  # (B+1,)
        batch = JaggedBatch(
            user_ids=self.user_ids[index],
            item_ids=self.padded_item_ids[index].reshape(-1),
            ratings=self.padded_ratings[index].reshape(-1),
            timestamps=self.padded_timestamps[index].reshape(-1),
            offsets=offsets,
            lengths=lengths,
            max_len=N,
            target_item_ids=self.target_item_ids[index],
            target_ratings=self.target_ratings[index],
            target_timestamps=self.target_timestamps[index],
        )
        supervision = self.padded_next_ids[index].reshape(-1)  # (B*N,)
        last = torch.arange(B, device=self.device) * N + (self.lengths[index] - 1).clamp(min=0)  # (B,)
        return batch, supervision, last

    # -- jagged layout: only real tokens (the token count comes from the host) ------------------------
    def jagged_batch(self, index: torch.Tensor, total: int | None = None):
        """Rows `index (B,)` (no filler rows) as a true JaggedBatch of `total` tokens, with supervision.

        `total` = their summed lengths, known ahead to spare a host sync (None: counted here)."""
        if total is None:
            total = int(self.lengths[index].sum())  # one host sync
        batch = self.split.batch(index, total=total)
        starts = self.split.offsets[index]  # (B,)
        row, col = jagged_coordinates(batch.offsets, batch.lengths, total)  # (T,), (T,)
        supervision = self.next_item_ids[starts[row] + col]  # (T,)
        last = batch.offsets[1:] - 1  # (B,)
        return batch, supervision, last

    def batch_totals(self, order: torch.Tensor, batch_size: int) -> list[int]:
        """Token count of each batch of `order` (one host transfer for a whole epoch)."""
        lens = self.lengths[order]  # (U',)
        which = torch.arange(order.shape[0], device=order.device) // batch_size
        num = -(-order.shape[0] // batch_size)
        return torch.zeros(num, dtype=torch.int64, device=order.device).index_add_(0, which, lens).tolist()

    def batches(self, batch_size: int):
        """The users in order as jagged batches of `batch_size` (token counts read to the host once)."""
        if getattr(self, "_order_totals", (None,))[0] != batch_size:
            order = torch.arange(self.num_users, device=self.device)  # (U,)
            self._order_totals = (batch_size, order, self.batch_totals(order, batch_size))
        _, order, totals = self._order_totals
        for i, total in enumerate(totals):
            yield self.jagged_batch(order[i * batch_size : (i + 1) * batch_size], total)[0]
