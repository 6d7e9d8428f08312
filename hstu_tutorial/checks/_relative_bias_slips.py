"""Known mistakes of the relative-attention-bias exercise (checks/relative_bias.py): what each one returns,
the message that names it, and the messages for a wrong value no known mistake explains.

The check's tables hold distinct entries, so a wrong value names the entry it was read from (`_which`).
"""

from __future__ import annotations

import math

import torch

from ._common import _fmt_val, _matches, _reference

_LOG_BASE = 0.301


def _bucket(gap: torch.Tensor, num_buckets: int = 128) -> torch.Tensor:
    return _reference("hstu_tutorial.ops", "time_bucket")(gap, num_buckets)


def _bucket64(gap: torch.Tensor, num_buckets: int = 128) -> torch.Tensor:
    """The bucket computed in float64: a few gaps sit on an edge where float32 and float64 disagree."""
    g = gap.to(torch.float64).abs().clamp(min=1)
    return torch.floor(torch.log(g) / _LOG_BASE).to(torch.int64).clamp(0, num_buckets)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor | None:
    """`table[index]` with Python's wrap-around for negative indices (what a learner's code silently gets);
    None when an index is out of range (that code would have raised)."""
    n = table.numel()
    if index.numel() and (int(index.min()) < -n or int(index.max()) >= n):
        return None
    return table[index]


# ---- known mistakes ---------------------------------------------------------------------------------------


_TRANSPOSED = (
    "the offsets are transposed: row i is the query and column j the key, so the offset is j - i (negative for "
    "past keys); you used i - j."
)


def _position_variants(pos_w: torch.Tensor, N: int) -> list[tuple[str, torch.Tensor | None]]:
    """(message, what the mistake returns `(N, N)`) for the position term: each wrong centre, each direction."""
    L = (pos_w.numel() + 1) // 2
    ar = torch.arange(N)
    rel = ar[None, :] - ar[:, None]  # (N, N): j - i
    use = "Use pos_w[L-1 + j - i]."
    centres = [
        (L - 1, None),
        (
            L,
            f"off by one: you read pos_w[L + j - i] (the same as L-1 + j - i + 1), so the diagonal i = j reads "
            f"pos_w[{L}] instead of the middle entry pos_w[L-1] = pos_w[{L - 1}]. {use}",
        ),
        (
            L - 2,
            f"off by one: you read pos_w[L-2 + j - i] (the same as L-1 + j - i - 1; did you take L = len(pos_w) // 2 "
            f"= {L - 1}, which is L-1 already, and subtract 1 again?), so the diagonal reads pos_w[{L - 2}] instead "
            f"of the middle entry pos_w[{L - 1}]. With L = (len(pos_w) + 1) // 2 = {L}, use pos_w[L-1 + j - i].",
        ),
        (
            0,
            "you indexed pos_w[j - i] without the offset L-1: a past key (j < i) has a negative offset, and a "
            "negative index silently wraps around to the END of the table in Python and PyTorch, so no error was "
            f"raised. Add L-1 = {L - 1}: pos_w[L-1 + j - i].",
        ),
        (
            N - 1,
            f"you centred the offsets on N-1 = {N - 1} (N the length of this batch) instead of the table's middle "
            f"L-1 = {L - 1}: the table is built for the longest length L = (len(pos_w) + 1) // 2 = {L}, whatever N "
            f"a batch has. {use}",
        ),
        (
            N,
            f"you read pos_w[N + j - i] (N = {N}, this batch's length): the centre is the table's middle "
            f"L-1 = {L - 1}, with L = (len(pos_w) + 1) // 2. {use}",
        ),
    ]
    out, seen = [], set()
    for centre, msg in centres:
        if centre in seen:
            continue
        seen.add(centre)
        for sign in (1, -1):
            if msg is None and sign == 1:
                continue  # the right answer
            if sign == 1:
                words = msg
            elif msg is None:
                words = f"{_TRANSPOSED} {use}"
            else:
                words = f"{_TRANSPOSED} Also, {msg}"
            out.append((words, _lookup(pos_w, centre + sign * rel)))
    return out


def _time_variants(
    ts_w: torch.Tensor, t: torch.Tensor, tn: torch.Tensor
) -> list[tuple[str, torch.Tensor | None]]:
    """(message, what the mistake returns `(B, N, N)`) for the time term."""
    nb = ts_w.numel() - 1
    B, N = t.shape

    def lut(gap, no_abs=False):  # no_abs: a bucket that sends every negative gap to bucket 0
        return _lookup(ts_w, _bucket(gap.clamp(min=0) if no_abs else gap, nb))

    def q(x):  # the query side: row i
        return x[:, :, None]

    def k(x):  # the key side: column j
        return x[:, None, :]

    shifted = torch.cat([t[:, 1:], t[:, -1:]], dim=1)  # (B, N)
    shifted0 = torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)  # (B, N)
    use = "Use next_timestamps[:, :, None] - timestamps[:, None, :]."
    own_shift = (
        "you made the next timestamps yourself by shifting `timestamps` one step left: the last row's next time "
        "is the target's (when the prediction is made), which no shift of the history can know. Use the "
        "next_timestamps passed in."
    )
    out = [
        (
            "you measured the gap from the query's own timestamp (timestamps[b, i] - timestamps[b, j]): HSTU "
            "measures it from next_timestamps[b, i], the time of the item that query row i is about to predict. "
            + use,
            lut(q(t) - k(t)),
        ),
        (own_shift, lut(q(shifted) - k(t))),
        (own_shift, lut(q(shifted0) - k(t))),
        (
            "you used next_timestamps on the key side too (next_timestamps[b, i] - next_timestamps[b, j]): the "
            "key is the item that happened at timestamps[b, j]. " + use,
            lut(q(tn) - k(tn)),
        ),
        (
            "the gap is transposed (you built rab^T): row i is the query with its next timestamp, column j the "
            "key with its own timestamp, so entry [b, i, j] buckets next_timestamps[b, i] - timestamps[b, j]; you "
            "bucketed next_timestamps[b, j] - timestamps[b, i]. " + use,
            lut(k(tn) - q(t)),
        ),
        (
            "the gap's sign is flipped (timestamps[b, j] - next_timestamps[b, i]) and your bucket sends negative "
            "gaps to bucket 0, so nearly every past key lands in bucket 0. Use next_timestamps[b, i] - "
            "timestamps[b, j] and bucket |gap| as ops.time_bucket does.",
            lut(k(t) - q(tn), no_abs=True),
        ),
        (
            "negative gaps went to bucket 0: your bucket clamps the gap at 1 without taking |gap| first. The gap "
            "to a key after the query's next item is negative (and ties and padding make more); bucket |gap| as "
            "ops.time_bucket does (run check_time_bucket on your own bucket function).",
            lut(q(tn) - k(t), no_abs=True),
        ),
        (
            "you bucketed each timestamp and subtracted the buckets: bucket the gap instead, "
            "time_bucket(next_timestamps[b, i] - timestamps[b, j]) (a negative difference of buckets even wraps "
            "around to the end of ts_w without an error).",
            _lookup(ts_w, _bucket(q(tn), nb) - _bucket(k(t), nb)),
        ),
    ]
    if B > 1:
        row0 = "index the batch: entry [b, i, j] uses next_timestamps[b, i] and timestamps[b, j] of the same row b."
        out += [
            (
                "every batch row holds the bias of row 0 (the timestamps of row 0 were used for all rows): "
                + row0,
                lut(tn[:1, :, None] - t[:1, None, :]).expand(B, N, N),
            ),
            ("the keys' timestamps of row 0 were used for every row: " + row0, lut(q(tn) - t[:1, None, :])),
            ("the next timestamps of row 0 were used for every row: " + row0, lut(tn[:1, :, None] - k(t))),
        ]
    return out


def _row_mixup(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    """Name a batch row that holds another row's bias."""
    B = expected.shape[0]
    for b in range(B):
        if _matches(got[b], expected[b]):
            continue
        for other in range(B):
            if (
                other != b
                and not _matches(expected[other], expected[b])
                and _matches(got[b], expected[other])
            ):
                return (
                    f"batch row b={b} holds the bias of row {other}: the batch rows are mixed up. Entry "
                    "[b, i, j] uses next_timestamps[b, i] and timestamps[b, j] of the same row b."
                )
    return None


# ---- messages for what no known mistake explains ----------------------------------------------------------


def _which(table: torch.Tensor, value: float) -> int | None:
    """The index of `table` holding `value` (the tables' entries are distinct), else None."""
    d = (table.to(torch.float64) - float(value)).abs()
    k = int(d.argmin())
    return k if float(d[k]) <= 1e-5 * max(1.0, abs(float(value))) else None


def _first_bad(got: torch.Tensor, expected: torch.Tensor) -> tuple[tuple, int]:
    bad = ~torch.isclose(got.detach().to(torch.float64), expected.to(torch.float64), atol=1e-5, rtol=1e-4)
    return tuple(bad.nonzero()[0].tolist()), int(bad.sum())


def _position_entry(pos_w, i, j, value) -> str:
    L = (pos_w.numel() + 1) // 2
    m = L - 1 + j - i
    k = _which(pos_w, value)
    read = f"pos_w[{k}]" if k is not None else "no entry of pos_w (read one entry, unchanged)"
    return (
        f"your value {_fmt_val(value)} is {read}; expected pos_w[L-1 + j - i] = pos_w[{L - 1} + {j} - {i}] = "
        f"pos_w[{m}] = {_fmt_val(pos_w[m])}"
    )


def _time_entry(ts_w, t, tn, b, i, j, value) -> str:
    gap = int(tn[b, i]) - int(t[b, j])
    m = int(_bucket(torch.tensor(gap), ts_w.numel() - 1))
    k = _which(ts_w, value)
    read = f"ts_w[{k}] (bucket {k})" if k is not None else "no entry of ts_w (read one entry, unchanged)"
    return (
        f"the gap next_timestamps[b, i] - timestamps[b, j] = {tn[b, i]} - {t[b, j]} = {gap} s falls in bucket "
        f"time_bucket({gap}) = {m}, so expected ts_w[{m}] = {_fmt_val(ts_w[m])}; your value {_fmt_val(value)} is "
        f"{read}. If your gap is right, compare your bucket function with ops.time_bucket (check_time_bucket)"
    )


def _pos_range_msg(L: int, lead: str = "an index into pos_w was out of range. T") -> str:
    return lead + (
        f"he offsets j - i run from -(N-1) to N-1, so with N = L = {L} "
        f"the index L-1 + j - i runs over 0..2L-2 = 0..{2 * L - 2}, exactly the table: an index of 2L-1 or more "
        "means the centre is too large (L instead of L-1?)."
    )


def _time_range_msg(nb: int, lead: str = "an index into ts_w was out of range: ") -> str:
    return lead + (
        f"a gap beyond the last bucket must land in the last bucket, "
        f"len(ts_w) - 1 = {nb}. ops.time_bucket clamps to [0, {nb}]; a hand-written floor(ln|gap| / 0.301) needs "
        f".clamp(0, {nb}) (every gap over e^(0.301 * {nb + 1}) ~ {math.exp(_LOG_BASE * (nb + 1)):.1e} s overflows)."
    )


def _full_range_msg(text: str, L: int, nb: int) -> str:
    """Which table an out-of-range index hit, from the size PyTorch names in its error."""
    hits_pos = any(f"{w} {2 * L - 1}" in text for w in ("size", "of")) or f"{2 * L - 1} elements" in text
    hits_ts = any(f"{w} {nb + 1}" in text for w in ("size", "of")) or f"{nb + 1} elements" in text
    if hits_pos != hits_ts:
        return _pos_range_msg(L) if hits_pos else _time_range_msg(nb)
    return (
        "one of the two tables was indexed out of range. "
        + _pos_range_msg(L, "For pos_w: t")
        + " "
        + _time_range_msg(nb, "For ts_w: ")
    )
