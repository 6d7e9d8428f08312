"""Checks of exercise 02, section 4: HSTU's relative attention bias (the position term, the time term, both).

    rab[b, i, j] = pos_w[L-1 + j - i] + ts_w[time_bucket(next_timestamps[b, i] - timestamps[b, j])],
    L = (len(pos_w) + 1) // 2, ts_w of 129 entries.

The tables of every case have distinct entries, so a wrong value can be traced back to the entry it was read
from: besides the known mistakes recognised by name, a message says which entry was read and which was due.
Only `check_relative_attention_bias` ticks the checklist step; the two part checks report on their part.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._common import CheckFailed, _call, _case_text, _check_tensor, _fmt_val, _matches, _reference, _run

_LOG_BASE = 0.301
_STEP = "core.attention.relative_bias"

# ---- tables, histories, the package's answer -------------------------------------------------------------


def _table(n: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    """`(n,)` distinct values in about [-2, 2], shuffled: each value names the index it sits at."""
    g = torch.Generator().manual_seed(seed)
    step = 4.0 / max(n - 1, 1)
    vals = torch.linspace(-2.0, 2.0, n, dtype=torch.float64) + torch.rand(
        n, generator=g, dtype=torch.float64
    ) * (0.5 * step)
    return vals[torch.randperm(n, generator=g)].to(dtype)  # (n,)


def _history(B: int, N: int, seed: int, kind: str = "random", dtype=torch.int64):
    """Padded `timestamps (B, N)` and `next_timestamps (B, N)` (each row's own history; the last next time is
    the target's, which a shift of the row cannot know)."""
    g = torch.Generator().manual_seed(seed)
    start = 956_703_932 + (torch.rand(B, 1, generator=g) * 3e7).to(
        torch.int64
    )  # ML-1M's first day, 2000-04-25
    gaps = (torch.rand(B, N, generator=g, dtype=torch.float64) * 17).exp().to(torch.int64)  # 1 s .. ~9 months
    if kind == "equal":  # row 0: every item at the same second; row 1: ties and a few gaps
        gaps[0] = 0
        gaps[1:, ::2] = 0
    elif kind == "huge":  # gaps past the last bucket: e^(0.301 * 128) ~ 5e16 s
        gaps = torch.tensor([0, 10**17, 7, 9 * 10**17], dtype=torch.int64)[:N].repeat(B, 1)
        gaps[1:, 1] = 3
        start = start * 0
    t = start + gaps.cumsum(1) - gaps[:, :1]  # (B, N): the first item at `start`
    target = t[:, -1] + (torch.rand(B, generator=g, dtype=torch.float64) * 15).exp().to(torch.int64)  # (B,)
    if kind == "huge":
        target = t[:, -1] + 10**18
    tn = torch.cat([t[:, 1:], target[:, None]], dim=1)  # (B, N)
    if kind == "padded":  # the last two positions of row 0 are padding (zeros), as a padded batch holds them
        t[0, -2:] = 0
        tn[0, -3:] = torch.tensor([tn[0, -3], 0, 0])
    return t.to(dtype), tn.to(dtype)


def _module(pos_w: torch.Tensor, ts_w: torch.Tensor):
    """The package's `RelativeAttentionBias` holding these two tables."""
    RelativeAttentionBias = _reference("hstu_tutorial.ops", "RelativeAttentionBias")
    m = RelativeAttentionBias(max_len=(pos_w.numel() + 1) // 2, num_buckets=ts_w.numel() - 1).to(pos_w.dtype)
    with torch.no_grad():
        m.pos_w.copy_(pos_w)
        m.ts_w.copy_(ts_w)
    return m


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


# ---- calling -----------------------------------------------------------------------------------------------


def _call_reading_tables(fn, args: dict, case: str, out_of_range: str):
    """`_call`, turning an index out of a table's range into a message that says why it happened."""
    from ._common import _where

    try:
        return _call(fn, args, case=case)
    except (IndexError, RuntimeError) as exc:
        text = str(exc)
        if "out of bounds" in text or "out of range" in text:
            why = out_of_range(text) if callable(out_of_range) else out_of_range
            raise CheckFailed(
                f"{why} (your function raised {type(exc).__name__}: {text}{_where(exc)}){case}"
            ) from None
        raise


def _pos_range_msg(L: int, lead: str = "an index into pos_w was out of range. T") -> str:
    return lead + (
        f"he offsets j - i run from -(N-1) to N-1, so with N = L = {L} "
        f"the index L-1 + j - i runs over 0..2L-2 = 0..{2 * L - 2}, exactly the table: an index of 2L-1 or more "
        "means the centre is too large (L instead of L-1?)."
    )


def _time_range_msg(nb: int, lead: str = "an index into ts_w was out of range: ") -> str:
    import math

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


def _float_answer(got, expected, what: str, names: tuple) -> torch.Tensor:
    got = _check_tensor(got, what, expected, names)
    return got.detach().to(torch.float64)


def _accept_float64_buckets(got, expected, expected64):
    """At the few gaps on a bucket edge where float32 and float64 disagree, accept either answer."""
    e32, e64 = expected.to(torch.float64), expected64.to(torch.float64)
    either = ~torch.isclose(e32, e64) & torch.isclose(got, e64, atol=1e-6, rtol=1e-5)
    return torch.where(either, e32, got)


def _part_passed(ok: bool) -> bool:
    if ok:
        print(f"  (a part: the checklist step {_STEP} ticks when check_relative_attention_bias passes)")
    return ok


# ---- cases ------------------------------------------------------------------------------------------------


@dataclass
class _Case:
    label: str
    L: int
    B: int
    N: int
    kind: str = "random"
    table_dtype: torch.dtype = torch.float32
    time_dtype: torch.dtype = torch.int64


_CASES = [  # random cases first: they tell the known mistakes apart; then the edges
    _Case("random histories", 8, 3, 6),
    _Case("int32 timestamps, float64 tables", 9, 2, 5, time_dtype=torch.int32, table_dtype=torch.float64),
    _Case("N = 1", 4, 2, 1),
    _Case("N = L: every entry of pos_w is read", 5, 2, 5),
    _Case("equal timestamps (gaps of 0 s, ties)", 6, 2, 4, kind="equal"),
    _Case("gaps beyond the last bucket (up to 10^18 s)", 6, 2, 4, kind="huge"),
    _Case("a padded row (timestamps 0 after the history)", 7, 2, 5, kind="padded"),
    _Case("the reference's table, L = 211", 211, 2, 7),
]


def _inputs(case: _Case, seed: int):
    pos_w = _table(2 * case.L - 1, 1000 + seed, case.table_dtype)  # (2L-1,)
    ts_w = _table(129, 2000 + seed, case.table_dtype)  # (129,)
    t, tn = _history(case.B, case.N, 3000 + seed, case.kind, case.time_dtype)  # (B, N) each
    return pos_w, ts_w, t, tn


_POS_CASES = [  # (label, L, N, table dtype)
    ("random table", 8, 5, torch.float32),
    ("a table longer than the sequence", 12, 4, torch.float32),
    ("N = 1", 5, 1, torch.float32),
    ("N = L: every entry of pos_w is read", 6, 6, torch.float32),
    ("float64 table, the reference's L = 211", 211, 9, torch.float64),
]


def _time_case_text(case: _Case, **more) -> str:
    return _case_text(
        case=case.label,
        B=case.B,
        N=case.N,
        timestamps=str(case.time_dtype).replace("torch.", ""),
        tables=str(case.table_dtype).replace("torch.", ""),
        **more,
    )


# ---- the checks -------------------------------------------------------------------------------------------


def check_position_bias(fn: Callable) -> bool:
    """Check `fn(pos_w, N) -> (N, N)`: the position term `pos_w[L-1 + j - i]`, L = (len(pos_w) + 1) // 2.

    pos_w `(2L-1,)` float, N <= L an int; row i is the query, column j the key.
    """

    def body(fn):
        for seed, (label, L, N, dtype) in enumerate(_POS_CASES):
            pos_w = _table(2 * L - 1, 10 + seed, dtype)  # (2L-1,)
            ct = _case_text(case=label, L=L, N=N, pos_w=f"({2 * L - 1},) {str(dtype).replace('torch.', '')}")
            with torch.no_grad():
                expected = _module(pos_w, torch.zeros(129, dtype=dtype)).position_bias(N)  # (N, N)
            got = _call_reading_tables(fn, {"pos_w": pos_w, "N": N}, ct, _pos_range_msg(L))
            got = _float_answer(got, expected, "the position bias", ("i", "j"))
            if _matches(got, expected):
                continue
            for msg, variant in _position_variants(pos_w, N):
                if variant is not None and _matches(got, variant):
                    raise CheckFailed(msg + ct)
            (i, j), n_bad = _first_bad(got, expected)
            raise CheckFailed(
                f"the position bias differs at [i={i}, j={j}] (offset j - i = {j - i}): "
                f"{_position_entry(pos_w, i, j, got[i, j])} ({n_bad} of {N * N} entries differ)." + ct
            )
        return len(_POS_CASES)

    return _part_passed(_run("check_position_bias", fn, body))


def check_time_bias(fn: Callable) -> bool:
    """Check `fn(ts_w, timestamps, next_timestamps) -> (B, N, N)`: the time term
    `ts_w[time_bucket(next_timestamps[b, i] - timestamps[b, j])]`.

    ts_w `(129,)` float; timestamps, next_timestamps `(B, N)` int64 or int32 seconds (padded histories).
    """

    def body(fn):
        for seed, case in enumerate(_CASES):
            pos_w, ts_w, t, tn = _inputs(case, seed)
            ct = _time_case_text(case)
            gap = tn[:, :, None] - t[:, None, :]  # (B, N, N)
            expected = ts_w[_module(pos_w, ts_w).buckets(t, tn)]  # (B, N, N)
            args = {"ts_w": ts_w, "timestamps": t, "next_timestamps": tn}
            got = _call_reading_tables(fn, args, ct, _time_range_msg(ts_w.numel() - 1))
            got = _float_answer(got, expected, "the time bias", ("b", "i", "j"))
            got = _accept_float64_buckets(got, expected, ts_w[_bucket64(gap)])
            if _matches(got, expected):
                continue
            for msg, variant in _time_variants(ts_w, t, tn):
                if variant is not None and _matches(got, variant):
                    raise CheckFailed(msg + ct)
            mixup = _row_mixup(got, expected)
            if mixup:
                raise CheckFailed(mixup + ct)
            (b, i, j), n_bad = _first_bad(got, expected)
            raise CheckFailed(
                f"the time bias differs at [b={b}, i={i}, j={j}]: {_time_entry(ts_w, t, tn, b, i, j, got[b, i, j])} "
                f"({n_bad} of {expected.numel()} entries differ)." + ct
            )
        return len(_CASES)

    return _part_passed(_run("check_time_bias", fn, body))


def check_relative_attention_bias(fn: Callable) -> bool:
    """Check `fn(pos_w, ts_w, timestamps, next_timestamps) -> rab (B, N, N)`:
    `rab[b, i, j] = pos_w[L-1 + j - i] + ts_w[time_bucket(next_timestamps[b, i] - timestamps[b, j])]`.

    pos_w `(2L-1,)`, ts_w `(129,)` float; timestamps, next_timestamps `(B, N)` int64 or int32, N <= L.
    """

    def body(fn):
        for seed, case in enumerate(_CASES):
            pos_w, ts_w, t, tn = _inputs(case, 50 + seed)
            ct = _time_case_text(case, L=case.L)
            B, N = t.shape
            m = _module(pos_w, ts_w)
            with torch.no_grad():
                expected = m(t, tn)  # (B, N, N)
                P = m.position_bias(N)  # (N, N)
            T = expected - P[None]  # (B, N, N)
            gap = tn[:, :, None] - t[:, None, :]  # (B, N, N)
            args = {"pos_w": pos_w, "ts_w": ts_w, "timestamps": t, "next_timestamps": tn}
            got = _call_reading_tables(
                fn,
                args,
                ct,
                functools.partial(_full_range_msg, L=case.L, nb=128),
            )
            if isinstance(got, torch.Tensor) and got.dim() == 2 and tuple(got.shape) == (N, N):
                raise CheckFailed(
                    f"your bias is (N, N) = {(N, N)}, the shape of the position term alone: the full bias is "
                    f"(B, N, N) = {(B, N, N)}, the position term (the same for every row) plus the time term "
                    "(one matrix per batch row)." + ct
                )
            got = _float_answer(got, expected, "the bias", ("b", "i", "j"))
            got = _accept_float64_buckets(got, expected, P[None] + ts_w[_bucket64(gap)])
            if _matches(got, expected):
                continue
            variants = [
                (
                    "your bias is the time term alone: add the position term pos_w[L-1 + j - i] (an (N, N) "
                    "matrix, the same for every batch row).",
                    T,
                ),
                (
                    "your bias is the position term alone (repeated over the batch): add the time term "
                    "ts_w[time_bucket(next_timestamps[b, i] - timestamps[b, j])], which differs per row.",
                    P[None].expand(B, N, N),
                ),
                (
                    "the bias is transposed (you built rab^T): rab[b, i, j] belongs to query i (row) and key j "
                    "(column); transpose back, or build both terms with i as rows.",
                    expected.transpose(1, 2),
                ),
            ]
            variants += [
                ("in the position term: " + msg, None if v is None else v[None] + T)
                for msg, v in _position_variants(pos_w, N)
            ]
            variants += [
                ("in the time term: " + msg, None if v is None else P[None] + v)
                for msg, v in _time_variants(ts_w, t, tn)
            ]
            for msg, variant in variants:
                if variant is not None and _matches(got, variant):
                    raise CheckFailed(msg + ct)
            mixup = _row_mixup(got, expected)
            if mixup:
                raise CheckFailed(mixup + ct)
            (b, i, j), n_bad = _first_bad(got, expected)
            where = (
                f"the bias differs at [b={b}, i={i}, j={j}] ({n_bad} of {expected.numel()} entries differ): "
            )
            if _which(ts_w, got[b, i, j] - P[i, j]) is not None:
                detail = "the position term is right there, the time term is not: " + _time_entry(
                    ts_w, t, tn, b, i, j, got[b, i, j] - P[i, j]
                )
            elif _which(pos_w, got[b, i, j] - T[b, i, j]) is not None:
                detail = "the time term is right there, the position term is not: " + _position_entry(
                    pos_w, i, j, got[b, i, j] - T[b, i, j]
                )
            else:
                detail = (
                    f"expected {_fmt_val(expected[b, i, j])} = pos_w[L-1 + j - i] + ts_w[bucket], got "
                    f"{_fmt_val(got[b, i, j])}, which is neither the right position term plus an entry of ts_w "
                    "nor the right time term plus an entry of pos_w: run check_position_bias and check_time_bias "
                    "on your two parts"
                )
            raise CheckFailed(where + detail + "." + ct)
        return len(_CASES)

    return _run("check_relative_attention_bias", fn, body)


__all__ = ["check_position_bias", "check_relative_attention_bias", "check_time_bias"]
