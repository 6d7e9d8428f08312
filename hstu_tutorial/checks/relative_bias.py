"""Checks of exercise 02, section 4: HSTU's relative attention bias (the position term, the time term, both).

    rab[b, i, j] = pos_w[L-1 + j - i] + ts_w[time_bucket(next_timestamps[b, i] - timestamps[b, j])],
    L = (len(pos_w) + 1) // 2, ts_w of 129 entries.

The tables of every case have distinct entries, so a wrong value can be traced back to the entry it was read
from: besides the known mistakes recognised by name, a message says which entry was read and which was due.
Only `check_relative_attention_bias` ticks the checklist step; the two part checks report on their part.
The known mistakes and the messages live in `_relative_bias_slips`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._common import (
    CheckFailed,
    _call,
    _case_text,
    _check_tensor,
    _fmt_val,
    _matches,
    _reference,
    _run,
    _where,
)
from ._relative_bias_slips import (
    _bucket64,
    _first_bad,
    _full_range_msg,
    _pos_range_msg,
    _position_entry,
    _position_variants,
    _row_mixup,
    _time_entry,
    _time_range_msg,
    _time_variants,
    _which,
)

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


# ---- calling -----------------------------------------------------------------------------------------------


def _call_reading_tables(fn, args: dict, case: str, out_of_range: str | Callable[[str], str]):
    """`_call`, turning an index out of a table's range into a message that says why it happened
    (`out_of_range` is the message, or makes it from PyTorch's error text)."""
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


def _raise_named_slip(got: torch.Tensor, variants, ct: str) -> None:
    """CheckFailed with the message of the first (message, wrong answer) pair `got` matches, if any."""
    for msg, variant in variants:
        if variant is not None and _matches(got, variant):
            raise CheckFailed(msg + ct)


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
            _raise_named_slip(got, _position_variants(pos_w, N), ct)
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
            _raise_named_slip(got, _time_variants(ts_w, t, tn), ct)
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
            _raise_named_slip(got, variants, ct)
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
