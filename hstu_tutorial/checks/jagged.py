"""Checks of exercise 04 (jagged tensors): lengths -> offsets, jagged -> padded, jagged HSTU attention."""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import (
    CheckFailed,
    _call,
    _case_text,
    _check_tensor,
    _close,
    _diagnose,
    _fmt_index,
    _fmt_pair,
    _fmt_val,
    _grads_match,
    _matches,
    _mismatch,
    _offsets,
    _reference,
    _run,
)
from ._probes import HSTU_NAN_HINT, _boundary_probe, _jagged_future_probe, _jagged_variants
from .attention import _ATTN_CASES

_LENGTH_CASES = [
    ("random lengths", [3, 1, 4, 1, 5]),
    ("one sequence of length 1", [1]),
    ("an empty history among others", [2, 0, 3]),
    ("every sequence at the maximum length", [6, 6, 6]),
    ("no sequences at all (B = 0)", []),
]


def check_lengths_to_offsets(fn: Callable) -> bool:
    """Check `fn(lengths) -> offsets`: lengths `(B,)` int64 -> offsets `(B+1,)` int64, offsets[0] = 0,
    offsets[b+1] = lengths[0] + ... + lengths[b]."""

    def body(fn):
        lengths_to_offsets = _reference("hstu_tutorial.ops", "lengths_to_offsets")
        g = torch.Generator().manual_seed(0)
        cases = _LENGTH_CASES + [("64 random lengths", torch.randint(0, 200, (64,), generator=g).tolist())]
        for label, ls in cases:
            lengths = torch.tensor(ls, dtype=torch.int64)
            expected = lengths_to_offsets(lengths.clone())
            ct = _case_text(case=label, lengths=ls if len(ls) <= 8 else f"{len(ls)} values")
            got = _call(fn, {"lengths": lengths}, case=ct)
            if type(got).__module__ == "numpy" and hasattr(got, "dtype"):
                got = torch.as_tensor(got)  # a numpy answer is fine
            if isinstance(got, torch.Tensor) and got.shape == lengths.shape and len(ls):
                if torch.equal(got.long(), lengths.cumsum(0)):
                    raise CheckFailed(
                        "you returned cumsum(lengths), which has B entries; offsets have B+1: "
                        "a leading 0, then the running sums (offsets[-1] = T)." + ct
                    )
                if torch.equal(got.long(), lengths.cumsum(0) - lengths):
                    raise CheckFailed(
                        "you returned the B start offsets; offsets also end with T = "
                        "sum(lengths), so that sequence b is values[offsets[b]:offsets[b+1]]." + ct
                    )
            got = _check_tensor(got, "offsets", expected, ("B+1",))
            if got.dtype != torch.int64:
                raise CheckFailed(
                    f"offsets have dtype {got.dtype}; use torch.int64 (they index tensors, and "
                    "T can exceed 2^31 at scale)." + ct
                )
            msg = _mismatch(got, expected, "offsets", ("b",), atol=0, rtol=0)
            if msg:
                if len(ls) and int(got[0]) != 0:
                    raise CheckFailed(
                        f"offsets[0] is {int(got[0])}; it must be 0 (the first sequence starts "
                        "at row 0)." + ct
                    )
                raise CheckFailed(msg + ct)
        return len(cases)

    return _run("check_lengths_to_offsets", fn, body)


def _jagged_values(lengths: list[int], d: int, seed: int, dtype=torch.float64) -> tuple:
    g = torch.Generator().manual_seed(seed)
    lengths_t = torch.tensor(lengths, dtype=torch.int64)
    offsets = _offsets(lengths_t)
    values = torch.randn(int(lengths_t.sum()), d, generator=g, dtype=dtype)  # (T, D)
    return values, offsets, lengths_t


def _jagged_to_padded_cases(fn: Callable, dtype=torch.float64, device: str = "cpu", dims=(3,)) -> int:
    """The cases of the jagged -> padded checks (PyTorch and Triton). Returns the number run."""
    names = ("b", "i", "d")
    jagged_to_padded = _reference("hstu_tutorial.ops", "jagged_to_padded")
    cases = [
        ("random lengths", [3, 1, 4], 5, 0.0),
        ("length 1", [1], 1, 0.0),
        ("an empty history among others", [2, 0, 3], 4, 0.0),
        ("every sequence at the maximum length", [4, 4], 4, 0.0),
        ("a padding value of -1", [2, 5, 1], 6, -1.0),
        ("sequences longer than max_len (truncated)", [7, 2, 9], 5, 0.0),
        ("many sequences, lengths not multiples of a block", [19, 33, 1, 0, 40, 17], 40, -2.0),
    ]
    count = 0
    for d in dims:
        for seed, (label, ls, max_len, pad) in enumerate(cases):
            values, offsets, lengths = _jagged_values(ls, d, seed, dtype)
            expected = jagged_to_padded(values, offsets, max_len, padding_value=pad)
            ct = _case_text(case=label, lengths=ls, max_len=max_len, padding_value=pad, D=d)
            got = _call(
                fn,
                {"values": values.to(device), "offsets": offsets.to(device), "max_len": max_len},
                {"padding_value": pad},
                ct,
            )
            if isinstance(got, torch.Tensor):
                got = got.cpu()
            if isinstance(got, torch.Tensor) and got.dim() == 3 and got.shape[1] == max(ls) > max_len:
                raise CheckFailed(
                    f"the output is {tuple(got.shape)}: it must be max_len = {max_len} wide "
                    "even when a sequence is longer (keep its first max_len rows)." + ct
                )
            got = _check_tensor(got, "the padded tensor", expected, ("B", "max_len", "D"))
            if got.dtype != values.dtype:
                raise CheckFailed(
                    f"the padded tensor is {got.dtype} but values are {values.dtype}: keep the "
                    "dtype of values (values.new_full(...) or dtype=values.dtype)." + ct
                )
            clipped = lengths.clamp(max=max_len)
            real = (torch.arange(max_len)[None, :] < clipped[:, None])[:, :, None]  # (B, N, 1)
            variants = [
                (
                    "the padding is 0 but padding_value was given: fill the padded positions with "
                    "padding_value.",
                    jagged_to_padded(values, offsets, max_len) if pad != 0.0 else None,
                ),
                (
                    "long sequences kept their *last* max_len rows; jagged_to_padded keeps the first max_len "
                    "(truncate histories before, when building them).",
                    _last_rows_padded(values, lengths, max_len, pad) if max(ls) > max_len else None,
                ),
                (
                    "row b holds sequence b+1: an off-by-one in the offsets (sequence b is "
                    "values[offsets[b]:offsets[b+1]]).",
                    _shifted_rows(values, lengths, max_len, pad),
                ),
            ]
            msg = _mismatch(got, expected, "the padded tensor", names, atol=0, rtol=0)
            if msg:
                for vmsg, v in variants:
                    if v is not None and _matches(got, v, atol=0, rtol=0):
                        raise CheckFailed(vmsg + ct)
                wrong_pad = _close(got, expected, ~real, atol=0, rtol=0)
                if wrong_pad.any() and not _close(got, expected, real, atol=0, rtol=0).any():
                    idx = tuple(wrong_pad.nonzero()[0].tolist())
                    raise CheckFailed(
                        "the real rows are right but the padding is not: at "
                        f"{_fmt_index(idx, names)} {_fmt_pair(expected[idx], got[idx])} (every "
                        "padded slot must be written)." + ct
                    )
                raise CheckFailed((_row_source(got, values, offsets, lengths, max_len, real) or msg) + ct)
            count += 1
    return count


def _row_source(got, values, offsets, lengths, max_len, real) -> str | None:
    """Name where the first wrong real slot [b, i] was read from: values[offsets[b] + i] is right."""
    bad = torch.zeros(got.shape[:2], dtype=torch.bool)
    for b, ln in enumerate(lengths.clamp(max=max_len).tolist()):
        want = values[int(offsets[b]) : int(offsets[b]) + ln]  # (ln, D)
        bad[b, :ln] = (got[b, :ln] != want).any(-1)
    if not bad.any():
        return None
    b, i = bad.nonzero()[0].tolist()
    right = int(offsets[b]) + i
    hits = (values == got[b, i]).all(-1).nonzero()[:, 0].tolist()  # (r,) rows of values equal to the slot
    where = f"slot [b={b}, i={i}] must hold values[offsets[{b}] + {i}] = values[{right}]"
    if not hits:
        if bool((got[b, i] == got[b, i].flatten()[0]).all()) and len(values):
            return (
                f"{where} (sequence {b} has {int(lengths[b])} items), but it holds the constant "
                f"{_fmt_val(got[b, i].flatten()[0])}: a real position was treated as padding."
            )
        return None
    if b * max_len + i in hits:
        return (
            f"the offsets were ignored: {where}, but it holds values[{b * max_len + i}] = "
            f"values[b * max_len + i], as if every sequence were max_len = {max_len} rows long. "
            f"Sequence b is values[offsets[b]:offsets[b+1]] (offsets[{b}] = {int(offsets[b])})."
        )
    return (
        f"{where} (sequence {b} starts at offsets[{b}] = {int(offsets[b])}), but it holds "
        f"values[{hits[0]}]: read sequence b from values[offsets[b]:offsets[b+1]]."
    )


def check_jagged_to_padded(fn: Callable) -> bool:
    """Check `fn(values, offsets, max_len, padding_value=0.0) -> padded`: values `(T, D)`, offsets `(B+1,)`
    -> `(B, max_len, D)`, sequence b left-aligned in row b, then `padding_value`; a sequence longer than
    max_len keeps its first max_len rows."""

    def body(fn):
        jagged_to_padded = _reference("hstu_tutorial.ops", "jagged_to_padded")
        count = _jagged_to_padded_cases(fn)
        # differentiable in values
        values, offsets, _ = _jagged_values([3, 1, 4], 2, 99)
        v1, v2 = values.clone().requires_grad_(), values.clone().requires_grad_()
        _grads_match(
            fn(v1, offsets.clone(), 5),
            jagged_to_padded(v2, offsets, 5),
            {"values": v1},
            {"values": v2},
            None,
            _case_text(case="gradient"),
        )
        return count + 1

    return _run("check_jagged_to_padded", fn, body)


def _last_rows_padded(values, lengths, max_len, pad):
    out = values.new_full((len(lengths), max_len, values.shape[1]), pad)
    start = 0
    for b, ln in enumerate(lengths.tolist()):
        seq = values[start : start + ln][-max_len:] if ln else values[:0]
        out[b, : len(seq)] = seq
        start += ln
    return out


def _shifted_rows(values, lengths, max_len, pad):
    """Row b filled with sequence b+1 (the off-by-one of reading offsets[b+1]:offsets[b+2])."""
    if len(lengths) < 2:
        return None
    offsets = _offsets(lengths)
    out = values.new_full((len(lengths), max_len, values.shape[1]), pad)
    for b in range(len(lengths) - 1):
        seq = values[int(offsets[b + 1]) : int(offsets[b + 2])][:max_len]
        out[b, : len(seq)] = seq
    return out


def check_jagged_hstu_attention(fn: Callable) -> bool:
    """Check `fn(q, k, v, offsets, n, causal=True) -> out`: HSTU attention on jagged tensors.

    q, k `(T, H, dqk)`, v `(T, H, dv)`, offsets `(B+1,)`; inside each sequence
    `out_i = sum_{j<=i} SiLU(<q_i, k_j>) / n * v_j`; out `(T, H, dv)`. No position may attend across a
    sequence boundary.
    """
    names = ("t", "h", "d")

    def body(fn):
        hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
        softmax_attention = _reference("hstu_tutorial.ops", "softmax_attention")
        cases = [(c.label, c.lengths, c.heads, c.dqk, c.dv) for c in _ATTN_CASES]
        cases.append(("an empty history among others", [3, 0, 2], 2, 4, 4))
        count = 0
        for seed, (label, ls, h, dqk, dv) in enumerate(cases):
            for causal in (True, False):
                g = torch.Generator().manual_seed(200 + seed)
                lengths = torch.tensor(ls, dtype=torch.int64)
                offsets = _offsets(lengths)
                T = int(lengths.sum())
                q = torch.randn(T, h, dqk, generator=g, dtype=torch.float64)  # (T, H, dqk)
                k = torch.randn(T, h, dqk, generator=g, dtype=torch.float64)  # (T, H, dqk)
                v = torch.randn(T, h, dv, generator=g, dtype=torch.float64)  # (T, H, dv)
                n = max(ls) + 5
                ct = _case_text(case=label, lengths=ls, H=h, dqk=dqk, dv=dv, n=n, causal=causal)
                expected = hstu_attention(q, k, v, offsets, norm=n, causal=causal)
                got = _check_tensor(
                    _call(fn, {"q": q, "k": k, "v": v, "offsets": offsets, "n": n}, {"causal": causal}, ct),
                    "the output",
                    expected,
                    names,
                )
                call = lambda q_, k_, v_, c=causal: fn(q_, k_, v_, offsets.clone(), n, causal=c)
                _diagnose(
                    got,
                    expected,
                    "the output",
                    names,
                    None,
                    variants=_jagged_variants(
                        q, k, v, offsets, n, causal, expected, hstu_attention, softmax_attention
                    ),
                    probes=[
                        _boundary_probe(call, q, k, v, offsets),
                        _jagged_future_probe(call, q, k, v, offsets) if causal else lambda: None,
                    ],
                    case=ct,
                    nan_hint=HSTU_NAN_HINT,
                )
                count += 1
        lengths = torch.tensor([3, 5, 1])
        offsets = _offsets(lengths)
        g = torch.Generator().manual_seed(5)
        q, k, v = (torch.randn(9, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
        q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
        q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
        _grads_match(
            fn(q2, k2, v2, offsets.clone(), 8),
            hstu_attention(q, k, v, offsets, norm=8),
            {"q": q2, "k": k2, "v": v2},
            {"q": q, "k": k, "v": v},
            None,
            _case_text(case="gradients"),
        )
        return count + 1

    return _run("check_jagged_hstu_attention", fn, body)
