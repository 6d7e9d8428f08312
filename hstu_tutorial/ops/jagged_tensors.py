"""Jagged tensors: a batch of variable-length sequences stored without padding.

A jagged tensor is a pair `values (T, ...)` + `offsets (B+1,)`: sequence `b` is
`values[offsets[b]:offsets[b+1]]`, `offsets[0] = 0`, `offsets[-1] = T = sum(lengths)`.
The padded view of the same batch is `(B, N, ...)` with `N >= max(lengths)`; sequences are
left-aligned (position 0 = the oldest item) and the tail of each row is padding.

Everything here is pure PyTorch, differentiable in `values`, and vectorised: no Python loop over
sequences, and no host synchronisation when the caller passes the sizes it already knows
(`total_length`, `max_len`), so the same functions are fast on a GPU.
"""

from __future__ import annotations

import torch


def check_floating(t: torch.Tensor, name: str) -> None:
    """TypeError unless `t` is a floating-point tensor (integer q, k, v would silently compute nonsense)."""
    if not isinstance(t, torch.Tensor) or not t.is_floating_point():
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(
            f"{name} must be a floating-point tensor (float32, bfloat16, ...); got {got}. "
            f"Convert it first, e.g. {name}.float()."
        )


def _check_index_tensor(t: torch.Tensor, name: str, shape: str) -> None:
    # Shape and dtype of offsets / lengths: read from the tensor's metadata, never a host sync.
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a 1-D integer tensor {shape}; got {type(t).__name__}")
    if t.dim() != 1:
        raise ValueError(f"{name} must be 1-D {shape}; got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(
            f"{name} must hold integers (int64 or int32), since they count rows; got {t.dtype}. "
            f"Convert with {name}.long()."
        )


def check_offsets(
    offsets: torch.Tensor, total: int | None = None, *, name: str = "offsets", read_values: bool | None = None
) -> int | None:
    """Check that `offsets (B+1,)` describe a jagged batch of `total` rows; return the longest length.

    Always checked (no sync): a 1-D integer tensor with at least one entry. With `read_values`, also
    `offsets[0] == 0`, no decrease, and `offsets[-1] == total` (when given), read in one host sync;
    by default the values are read only on the CPU, where that costs nothing. Returns the longest
    sequence length, or None when the values were not read.
    """
    _check_index_tensor(offsets, name, "(B+1,)")
    if offsets.numel() < 1:
        raise ValueError(f"{name} must have B+1 >= 1 entries ([0] for an empty batch); got none")
    if read_values is None:
        read_values = offsets.device.type == "cpu"
    if not read_values:
        return None
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    if lengths.numel():
        stats = torch.stack([offsets[0], offsets[-1], lengths.min(), lengths.max()])  # one host sync below
        first, last, shortest, longest = stats.tolist()
    else:
        first = last = int(offsets[0])
        shortest = longest = 0
    if first != 0:
        raise ValueError(
            f"{name}[0] must be 0 (the first sequence starts at row 0); got {first}. "
            "Build offsets from lengths with lengths_to_offsets(lengths)."
        )
    if shortest < 0:
        raise ValueError(
            f"{name} must not decrease (every length offsets[b+1] - offsets[b] is >= 0); got "
            f"a length of {shortest}. Build offsets with lengths_to_offsets(lengths)."
        )
    if total is not None and last != total:
        raise ValueError(
            f"{name}[-1] = {last} must equal the number of jagged rows T = {total} (the "
            "lengths sum to the rows of the values); are offsets and values of the same batch?"
        )
    return longest


def check_lengths(
    lengths: torch.Tensor, max_seq_len: int | None = None, *, name: str = "lengths", read_values: bool = True
) -> tuple[int, int] | None:
    """Check sequence lengths `(B,)`: integers, and (with `read_values`, one host sync) each in
    [0, max_seq_len] (the upper bound when given). Returns (longest, total), or None when not read."""
    _check_index_tensor(lengths, name, "(B,)")
    if not read_values:
        return None
    if lengths.numel() == 0:
        return 0, 0
    n = lengths.to(torch.int64)  # sum() promotes int32 to int64: one dtype for the stack
    shortest, longest, total = torch.stack([n.min(), n.max(), n.sum()]).tolist()
    if shortest < 0 or (max_seq_len is not None and longest > max_seq_len):
        bound = ">= 0" if max_seq_len is None else f"[0, N={max_seq_len}] (the padded width)"
        fix = (
            "A length counts items."
            if max_seq_len is None
            else "Pad to a wider N or truncate the sequences first."
        )
        raise ValueError(f"{name} must lie in {bound}; got min {shortest}, max {longest}. {fix}")
    return longest, total


def lengths_to_offsets(lengths: torch.Tensor) -> torch.Tensor:
    """Sequence lengths `(B,)` -> offsets `(B+1,)` int64 with `offsets[0] = 0` (an exclusive cumsum)."""
    check_lengths(lengths, read_values=False)  # dtype and shape only: no host sync
    offsets = lengths.new_zeros(lengths.numel() + 1, dtype=torch.int64)  # (B+1,)
    offsets[1:] = torch.cumsum(lengths.to(torch.int64), dim=0)
    return offsets


def offsets_to_lengths(offsets: torch.Tensor) -> torch.Tensor:
    """Offsets `(B+1,)` -> lengths `(B,)` int64 (`offsets.diff()`)."""
    if offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"offsets must be 1-D (B+1,), got shape {tuple(offsets.shape)}")
    return (offsets[1:] - offsets[:-1]).to(torch.int64)


def _total(offsets: torch.Tensor, total_length: int | None) -> int:
    # Reading offsets[-1] is a host sync on a GPU: callers that know T (values.shape[0]) pass it.
    return int(offsets[-1]) if total_length is None else int(total_length)


def jagged_batch_ids(offsets: torch.Tensor, total_length: int | None = None) -> torch.Tensor:
    """Which sequence each jagged row belongs to: `(T,)` int64, e.g. offsets [0,2,5] -> [0,0,1,1,1]."""
    lengths = offsets_to_lengths(offsets)  # (B,)
    B = lengths.numel()
    T = _total(offsets, total_length)
    return torch.repeat_interleave(torch.arange(B, device=offsets.device), lengths, output_size=T)  # (T,)


def jagged_positions(offsets: torch.Tensor, total_length: int | None = None) -> torch.Tensor:
    """Index of each jagged row inside its own sequence: `(T,)` int64, e.g. [0,2,5] -> [0,1,0,1,2].

    Position 0 is the first (oldest) item of a sequence; this is the index the learnable position
    embedding of HSTU/SASRec reads.
    """
    T = _total(offsets, total_length)
    batch_ids = jagged_batch_ids(offsets, T)  # (T,)
    return torch.arange(T, device=offsets.device) - offsets[batch_ids]  # (T,)


def padded_index(offsets: torch.Tensor, max_len: int, total_length: int | None = None) -> torch.Tensor:
    """Row of each jagged element in the flattened padded view `(B*N, ...)`: `(T,)` int64 = b*N + pos.

    Rows with `pos >= max_len` (sequences longer than the pad width) get the index `B*N`, one past the
    end, so callers can drop them into a scratch row.
    """
    T = _total(offsets, total_length)
    B = offsets.numel() - 1
    batch_ids = jagged_batch_ids(offsets, T)  # (T,)
    pos = torch.arange(T, device=offsets.device) - offsets[batch_ids]  # (T,)
    index = batch_ids * max_len + pos  # (T,)
    return torch.where(pos < max_len, index, torch.full_like(index, B * max_len))


def jagged_to_padded(
    values: torch.Tensor, offsets: torch.Tensor, max_len: int, padding_value: float = 0.0
) -> torch.Tensor:
    """Jagged `values (T, ...)` + `offsets (B+1,)` -> padded `(B, max_len, ...)`.

    Row `b` holds sequence `b` left-aligned, followed by `padding_value`. Sequences longer than
    `max_len` keep their first `max_len` elements (as fbgemm's `jagged_to_padded_dense`).
    Differentiable in `values`; no host sync (so on a GPU only the shape and dtype of `offsets` are
    checked; `check_offsets(offsets, T, read_values=True)` checks the values too).
    """
    T = values.shape[0]
    check_offsets(offsets, T)  # values read on the CPU only: on a GPU that would be a host sync
    B = offsets.numel() - 1
    index = padded_index(offsets, max_len, T)  # (T,)
    # One scratch row at the end absorbs elements beyond max_len; it is dropped below.
    out = values.new_full((B * max_len + 1, *values.shape[1:]), padding_value)  # (B*N+1, ...)
    out = out.index_copy(0, index, values)
    return out[: B * max_len].view(B, max_len, *values.shape[1:])  # (B, N, ...)


def padded_to_jagged(
    padded: torch.Tensor, offsets: torch.Tensor, total_length: int | None = None
) -> torch.Tensor:
    """Padded `(B, N, ...)` -> jagged values `(T, ...)` for the given offsets (the inverse of
    `jagged_to_padded` for sequences of length <= N). Pass `total_length` to avoid a host sync."""
    B, N = padded.shape[:2]
    if offsets.numel() != B + 1:
        raise ValueError(f"padded has B={B} rows but offsets has {offsets.numel()} entries (expected B+1)")
    index = padded_index(offsets, N, total_length)  # (T,)
    return padded.reshape(B * N, *padded.shape[2:]).index_select(0, index)  # (T, ...)


def dense_to_jagged(padded: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded `(B, N, ...)` + `lengths (B,)` -> `(values (T, ...), offsets (B+1,))`, `T = sum(lengths)`.

    Keeps the first `lengths[b]` rows of each sequence. Differentiable in `padded`. Reads the lengths
    from the device once (to check them; the output size depends on their sum).
    """
    if padded.dim() < 2:
        raise ValueError(f"padded must be at least 2-D (B, N, ...), got shape {tuple(padded.shape)}")
    B, N = padded.shape[:2]
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape (B,)=({B},), got {tuple(lengths.shape)}")
    _, total = check_lengths(lengths, N)  # one host sync: checks the lengths, and T sizes the output
    offsets = lengths_to_offsets(lengths.to(padded.device))  # (B+1,)
    return padded_to_jagged(padded, offsets, total), offsets


def padding_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """`(B, N)` bool: True where position `i < lengths[b]` (a real item), False on padding."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, N)


def next_timestamps(
    timestamps, offsets: torch.Tensor | None = None, target_timestamps: torch.Tensor | None = None
) -> torch.Tensor:
    """Jagged timestamp of the *next* item: `out[t] = timestamps[t+1]` inside each sequence, and the
    target's timestamp for the last row of each sequence. Shapes: timestamps `(T,)`, offsets `(B+1,)`,
    target_timestamps `(B,)` -> `(T,)`.

    HSTU's relative attention bias buckets `t_next(i) - t(j)` for query row i: the query is about to
    predict the next item, so the time gap is measured from when that item happened.
    Also accepts a `JaggedBatch` as the only argument: `next_timestamps(batch)`.
    """
    if offsets is None and target_timestamps is None and hasattr(timestamps, "timestamps"):
        batch = timestamps
        timestamps, offsets, target_timestamps = batch.timestamps, batch.offsets, batch.target_timestamps
    if offsets is None or target_timestamps is None:
        raise TypeError("next_timestamps needs (timestamps, offsets, target_timestamps) or a JaggedBatch")
    T = timestamps.shape[0]
    lengths = offsets_to_lengths(offsets)  # (B,)
    if target_timestamps.shape != lengths.shape:
        raise ValueError(
            f"target_timestamps must have one entry per sequence (B={lengths.numel()}), "
            f"got shape {tuple(target_timestamps.shape)}"
        )
    # Shift left by one, then overwrite each sequence's last row with its target. Empty sequences
    # write into a scratch slot T (dropped), so no boolean indexing and no host sync.
    shifted = torch.cat([timestamps[1:], timestamps.new_zeros(2)])  # (T+1,)
    last = torch.where(lengths > 0, offsets[1:] - 1, torch.full_like(lengths, T))  # (B,)
    shifted = shifted.index_copy(0, last, target_timestamps.to(timestamps.dtype))
    return shifted[:T]  # (T,)


__all__ = [
    "JaggedLayout",
    "check_floating",
    "check_lengths",
    "check_offsets",
    "dense_to_jagged",
    "jagged_batch_ids",
    "jagged_positions",
    "jagged_to_padded",
    "lengths_to_offsets",
    "next_timestamps",
    "offsets_to_lengths",
    "padded_index",
    "padded_to_jagged",
    "padding_mask",
]


class JaggedLayout:
    """What every layer of one forward pass shares, computed once per batch (all on-device).

    `index (T,)`: row of each jagged token in the flattened padded view `(B*N, ...)`; `buckets (B, N, N)`:
    time buckets of `t_next[i] - t[j]` (the same for every layer, only the bias tables differ);
    `history_lengths (B,)` or None: the batch's `history_lengths` (items at the front of each sequence when
    a sequence holds padding rows too; attention may skip the rest). `uniform`: every sequence holds exactly N
    rows (the trainer's padded layout), so padding and unpadding are reshapes. `index` and `next_timestamps`
    are computed when first read.
    """

    def __init__(
        self,
        offsets: torch.Tensor,
        lengths: torch.Tensor,
        pad_width: int,
        num_tokens: int,
        index: torch.Tensor | None = None,
        timestamps: torch.Tensor | None = None,
        next_timestamps: torch.Tensor | None = None,
        buckets: torch.Tensor | None = None,
    ):
        self.offsets = offsets  # (B+1,)
        self.lengths = lengths  # (B,)
        self.pad_width = pad_width  # N
        self.num_tokens = num_tokens  # T
        self._index = index  # (T,) or None: computed when first read
        self.timestamps = timestamps  # (T,) jagged
        self._next_timestamps = next_timestamps  # (T,) jagged, or None: computed when first read
        self._target_timestamps: torch.Tensor | None = None  # (B,) what next_timestamps needs
        self.buckets = buckets  # (B, N, N) int32
        self.history_lengths: torch.Tensor | None = None  # (B,) see the class docstring
        self.uniform = False  # every sequence holds exactly N rows (see from_batch)

    @property
    def index(self) -> torch.Tensor:
        """(T,) row of each jagged token in the flattened padded view `(B*N, ...)`."""
        if self._index is None:
            self._index = padded_index(self.offsets, self.pad_width, self.num_tokens)
        return self._index

    @property
    def next_timestamps(self) -> torch.Tensor | None:
        """(T,) jagged timestamp of each row's next item (`next_timestamps`), None without timestamps."""
        if (
            self._next_timestamps is None
            and self.timestamps is not None
            and self._target_timestamps is not None
        ):
            self._next_timestamps = next_timestamps(self.timestamps, self.offsets, self._target_timestamps)
        return self._next_timestamps

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @classmethod
    def from_batch(cls, batch, pad_width: int | None = None, rab=None) -> JaggedLayout:
        """Build the layout of a `JaggedBatch` padded to width N = `pad_width` (default `batch.max_len`; no
        host sync). With `rab` (a `RelativeAttentionBias`) given, also bucket the time gaps once for all
        blocks."""
        N = int(batch.max_len if pad_width is None else pad_width)
        T = batch.item_ids.shape[0]
        layout = cls(
            offsets=batch.offsets, lengths=offsets_to_lengths(batch.offsets), pad_width=N, num_tokens=T
        )
        layout.history_lengths = getattr(batch, "history_lengths", None)
        # No history is longer than the batch's max_len, so with N >= max_len the rows add up to B * N only
        # when every sequence holds exactly N of them (known from shapes alone: no host sync).
        layout.uniform = N >= batch.max_len and T == (batch.offsets.numel() - 1) * N
        if layout.uniform and batch.offsets.device.type == "cpu":  # free to confirm there (as `padded` does)
            layout.uniform = bool((layout.lengths == N).all())
        if getattr(batch, "timestamps", None) is not None:
            layout.timestamps = batch.timestamps
            layout._target_timestamps = batch.target_timestamps
            if rab is not None:
                ts = jagged_to_padded(layout.timestamps, batch.offsets, N)  # (B, N)
                nts = jagged_to_padded(layout.next_timestamps, batch.offsets, N)  # (B, N)
                layout.buckets = rab.buckets(ts, nts).to(torch.int32)  # (B, N, N); int32 saves memory
        return layout

    def pad(self, values: torch.Tensor) -> torch.Tensor:
        """Jagged `(T, ...)` -> padded `(B, N, ...)` zeros on padding (one scatter; a view when uniform)."""
        B, N = self.batch_size, self.pad_width
        if self.uniform:
            return values.view(B, N, *values.shape[1:])
        out = values.new_zeros(B * N + 1, *values.shape[1:])  # +1: scratch row for over-long rows
        return out.index_copy(0, self.index, values)[: B * N].view(B, N, *values.shape[1:])

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """Padded `(B, N, ...)` -> jagged `(T, ...)` (one gather; a reshape when uniform)."""
        B, N = padded.shape[:2]
        flat = padded.reshape(B * N, *padded.shape[2:])
        if self.uniform and N == self.pad_width:
            return flat
        flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])  # scratch row, see pad()
        return flat.index_select(0, self.index)
