"""Checks of exercise 02 (attention math): softmax attention, HSTU pointwise attention, time buckets.

Also the padded attention cases (the jagged checks reuse them); the probes and the known-mistake builders
live in `_probes`.
"""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._common import (
    CheckFailed,
    _call,
    _case_text,
    _check_tensor,
    _diagnose,
    _grads_match,
    _matches,
    _mismatch,
    _offsets,
    _reference,
    _run,
    _to_jagged,
    _to_padded,
    _valid_rows,
)
from ._probes import (
    HSTU_NAN_HINT,
    _divisor_variants,
    _future_leak_probe,
    _naive_variant,
    _padding_leak_probe,
    _rab_after,
)

# ---- cases ------------------------------------------------------------------------------------------------


@dataclass
class _AttnCase:
    label: str
    lengths: list[int]
    n_max: int
    heads: int
    dqk: int
    dv: int


_ATTN_CASES = [
    _AttnCase("random lengths", [5, 2, 7], 7, 1, 4, 4),
    _AttnCase("length 1", [1], 1, 1, 3, 3),
    _AttnCase("every sequence at the maximum length", [6, 6], 6, 2, 4, 4),
    _AttnCase("several heads, dqk != dv", [3, 8, 1, 5], 8, 3, 4, 6),
    _AttnCase("an empty history, padding past the longest", [4, 0, 2], 6, 1, 4, 4),
]


def _attn_inputs(case: _AttnCase, seed: int, requires_grad: bool = False):
    g = torch.Generator().manual_seed(seed)
    b, n, h = len(case.lengths), case.n_max, case.heads
    q = torch.randn(b, n, h, case.dqk, generator=g, dtype=torch.float64)  # (B, N, H, dqk)
    k = torch.randn(b, n, h, case.dqk, generator=g, dtype=torch.float64)  # (B, N, H, dqk)
    v = torch.randn(b, n, h, case.dv, generator=g, dtype=torch.float64)  # (B, N, H, dv)
    lengths = torch.tensor(case.lengths, dtype=torch.int64)  # (B,)
    # non-zero junk in the padding, so that a solution that forgets the padding mask cannot pass by luck
    pad = ~_valid_rows(lengths, n)
    q, k, v = (t.masked_fill(pad, 3.0) for t in (q, k, v))
    if requires_grad:
        q, k, v = (t.requires_grad_() for t in (q, k, v))
    return q, k, v, lengths


def _ref_softmax_padded(q, k, v, lengths, scale=None, causal=True):
    """The package's softmax attention on padded inputs (converted to jagged and back)."""
    softmax_attention = _reference("hstu_tutorial.ops", "softmax_attention")
    n = q.shape[1]
    out = softmax_attention(
        _to_jagged(q, lengths),
        _to_jagged(k, lengths),
        _to_jagged(v, lengths),
        _offsets(lengths),
        causal=causal,
        scale=scale,
    )
    return _to_padded(out, lengths, n)


def _attn_runs():
    """(seed, case, causal): every case causal, plus the cases with padding without the causal mask
    (with the causal mask, padding is always in a valid row's future, so only then is it tested)."""
    runs = [(seed, case, True) for seed, case in enumerate(_ATTN_CASES)]
    runs += [
        (50 + seed, case, False) for seed, case in enumerate(_ATTN_CASES) if min(case.lengths) < case.n_max
    ]
    return runs


_SOFTMAX_NAN_HINT = (
    "A row whose keys are all masked gives softmax(all -inf) = NaN. If the NaN is in "
    "row i = 0, the diagonal was masked out: keep j <= i (each position sees itself), "
    "not j < i."
)


def check_softmax_attention(fn: Callable) -> bool:
    """Check `fn(q, k, v, lengths, causal=True) -> out`: padding-aware scaled dot-product attention.

    q, k `(B, N, H, dqk)`, v `(B, N, H, dv)`, lengths `(B,)`; out `(B, N, H, dv)` with
    `out_i = sum_{j<len, j<=i if causal} softmax_j(<q_i, k_j> / sqrt(dqk)) v_j`. Rows at padded
    positions are not compared.
    """
    names = ("b", "i", "h", "d")

    def body(fn):
        runs = _attn_runs()
        for seed, case, causal in runs:
            q, k, v, lengths = _attn_inputs(case, seed)
            n = case.n_max
            ct = _case_text(
                case=case.label, lengths=lengths, H=case.heads, dqk=case.dqk, dv=case.dv, causal=causal
            )
            expected = _ref_softmax_padded(q, k, v, lengths, causal=causal)
            out = _call(fn, {"q": q, "k": k, "v": v, "lengths": lengths}, {"causal": causal}, ct)
            got = _check_tensor(out, "the output", expected, names)
            mask = _valid_rows(lengths, n)
            d = case.dqk
            call = lambda q_, k_, v_, lengths=lengths, causal=causal: fn(
                q_, k_, v_, lengths.clone(), causal=causal
            )
            naive = lambda **kw: _naive_variant(
                q, k, v, lengths, 1.0, None, "softmax", causal, **{"scale": 1 / math.sqrt(d), **kw}
            )
            _diagnose(
                got,
                expected,
                "the output",
                names,
                mask,
                variants=[
                    (
                        "wrong scale: your scores are not divided by sqrt(dqk); softmax attention uses "
                        "<q_i, k_j> / sqrt(dqk).",
                        lambda: _ref_softmax_padded(q, k, v, lengths, scale=1.0, causal=causal),
                    ),
                    (
                        "wrong scale: you divided the scores by dqk; divide by sqrt(dqk).",
                        lambda: _ref_softmax_padded(q, k, v, lengths, scale=1.0 / d, causal=causal),
                    ),
                    (
                        "wrong scale: you divided the scores by sqrt(dv), the value size; the scale is 1/sqrt(dqk).",
                        (lambda: _ref_softmax_padded(q, k, v, lengths, scale=case.dv**-0.5, causal=causal))
                        if case.dv != d
                        else None,
                    ),
                    (
                        "the causal mask is applied although causal=False: with causal=False every real "
                        "position j < length attends.",
                        (lambda: _ref_softmax_padded(q, k, v, lengths, causal=True)) if not causal else None,
                    ),
                    (
                        "the diagonal is missing: position i attends to itself too (keep j <= i, not j < i).",
                        (lambda: naive(strict=True)) if causal else None,
                    ),
                    (
                        "softmax over the wrong axis: normalise over the keys j (the last axis of the (B, H, N, N) "
                        "scores), so that each output row's weights sum to 1.",
                        lambda: naive(dim=-2),
                    ),
                    (
                        "q and k are swapped: the score of query i and key j is <q_i, k_j> (scores[i, j]); you "
                        "computed <k_i, q_j>.",
                        lambda: _ref_softmax_padded(k, q, v, lengths, causal=causal),
                    ),
                ],
                probes=[
                    _future_leak_probe(call, q, k, v, lengths) if causal else lambda: None,
                    _padding_leak_probe(call, q, k, v, lengths),
                ],
                case=ct,
                nan_hint=_SOFTMAX_NAN_HINT,
            )
        # gradients on one case
        case = _ATTN_CASES[3]
        q, k, v, lengths = _attn_inputs(case, 11, requires_grad=True)
        q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
        got = fn(q2, k2, v2, lengths.clone(), causal=True)
        _grads_match(
            got,
            _ref_softmax_padded(q, k, v, lengths),
            {"q": q2, "k": k2, "v": v2},
            {"q": q, "k": k, "v": v},
            _valid_rows(lengths, case.n_max),
            _case_text(case=case.label),
        )
        return len(runs) + 1

    return _run("check_softmax_attention", fn, body)


def _ref_hstu_padded(q, k, v, lengths, n, rab=None, alpha=1.0, causal=True):
    """The package's jagged `hstu_attention` on padded inputs (converted to jagged and back)."""
    hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
    N = q.shape[1]
    out = hstu_attention(
        _to_jagged(q, lengths),
        _to_jagged(k, lengths),
        _to_jagged(v, lengths),
        _offsets(lengths),
        rab=rab,
        alpha=alpha,
        norm=n,
        causal=causal,
    )
    return _to_padded(out, lengths, N)


def check_hstu_attention(fn: Callable) -> bool:
    """Check `fn(q, k, v, lengths, n, rab=None, causal=True) -> out`: HSTU pointwise attention, padded.

    q, k `(B, N, H, dqk)`, v `(B, N, H, dv)`, lengths `(B,)`, n a number, rab `(B, N, N)` or None;
    `out_i = sum_{j<len, j<=i if causal} SiLU(<q_i, k_j> + rab_ij) / n * v_j` (no 1/sqrt(d));
    out `(B, N, H, dv)`, padded rows not compared.
    """
    names = ("b", "i", "h", "d")

    def body(fn):
        count = 0
        for seed, case, causal in _attn_runs():
            for with_rab in (False, True):
                q, k, v, lengths = _attn_inputs(case, 100 + seed)
                N = case.n_max
                n = N + 3  # a constant larger than every length, like the reference's 211
                rab = (
                    (
                        0.5
                        * torch.randn(
                            len(lengths),
                            N,
                            N,
                            generator=torch.Generator().manual_seed(seed),
                            dtype=torch.float64,
                        )
                    )
                    if with_rab
                    else None
                )
                ct = _case_text(
                    case=case.label,
                    lengths=lengths,
                    H=case.heads,
                    dqk=case.dqk,
                    n=n,
                    rab="given" if with_rab else None,
                    causal=causal,
                )
                expected = _ref_hstu_padded(q, k, v, lengths, n, rab, causal=causal)
                got = _check_tensor(
                    _call(
                        fn,
                        {"q": q, "k": k, "v": v, "lengths": lengths, "n": n},
                        {"rab": rab, "causal": causal},
                        ct,
                    ),
                    "the output",
                    expected,
                    names,
                )
                mask = _valid_rows(lengths, N)
                call = lambda q_, k_, v_, lengths=lengths, n=n, rab=rab, causal=causal: fn(
                    q_, k_, v_, lengths.clone(), n, rab=rab, causal=causal
                )
                ref = lambda q_=q, k_=k, n_=n, rab_=rab, causal_=causal: _ref_hstu_padded(
                    q_, k_, v, lengths, n_, rab_, causal=causal_
                )
                naive = lambda act, **kw: _naive_variant(q, k, v, lengths, n, rab, act, causal, **kw)
                d = case.dqk
                rows_len = lengths[:, None, None, None].expand(-1, N, 1, 1)  # (B, N, 1, 1)
                rows_pos = torch.arange(N)[None, :, None, None].expand(len(lengths), -1, 1, 1)
                divisors = [
                    (msg, (lambda m=m: expected * n / m))
                    for msg, m in _divisor_variants(n, rows_len, rows_pos, causal, pad_width=N)
                ]
                _diagnose(
                    got,
                    expected,
                    "the output",
                    names,
                    mask,
                    variants=divisors
                    + [
                        (
                            "wrong scale: you divided the scores by sqrt(dqk); HSTU uses the raw <q_i, k_j> "
                            "(no 1/sqrt(d) scaling).",
                            lambda: ref(
                                q_=q / math.sqrt(d), rab_=None if rab is None else rab / math.sqrt(d)
                            ),
                        ),
                        (
                            "wrong scale: you divided the scores by sqrt(dqk) (before adding rab); HSTU uses the "
                            "raw <q_i, k_j> (no 1/sqrt(d) scaling).",
                            (lambda: ref(q_=q / math.sqrt(d))) if with_rab else None,
                        ),
                        (
                            "the relative attention bias is missing: add rab[b, i, j] to the scores before SiLU.",
                            (lambda: ref(rab_=None)) if with_rab else None,
                        ),
                        (
                            "the bias was added after SiLU: add rab to the scores, then apply SiLU.",
                            (lambda: ref(rab_=None) + _rab_after(rab, v, lengths, n, causal))
                            if with_rab
                            else None,
                        ),
                        (
                            "rab is transposed: the bias of query i and key j is rab[b, i, j] (row = query).",
                            (lambda: ref(rab_=rab.transpose(1, 2))) if with_rab else None,
                        ),
                        (
                            "the causal mask is applied although causal=False: with causal=False every real "
                            "position j < length attends.",
                            (lambda: ref(causal_=True)) if not causal else None,
                        ),
                        (
                            "the diagonal is missing: position i attends to itself too (keep j <= i, not j < i).",
                            (lambda: naive(F.silu, strict=True)) if causal else None,
                        ),
                        (
                            "q and k are swapped: the score of query i and key j is <q_i, k_j>; you computed "
                            "<k_i, q_j> (a transposed score matrix).",
                            lambda: ref(q_=k, k_=q),
                        ),
                        (
                            "you used SASRec's softmax attention (softmax of <q_i, k_j> / sqrt(dqk)): HSTU replaces "
                            "the softmax with a pointwise SiLU divided by n, and has no 1/sqrt(d).",
                            lambda: naive("softmax", scale=1 / math.sqrt(d)),
                        ),
                        (
                            "you used softmax: HSTU replaces softmax with a pointwise SiLU divided by n.",
                            lambda: naive("softmax"),
                        ),
                        (
                            "you used ReLU: HSTU's pointwise activation is SiLU (x * sigmoid(x)).",
                            lambda: naive(torch.relu),
                        ),
                        (
                            "you used sigmoid: HSTU's pointwise activation is SiLU (x * sigmoid(x)).",
                            lambda: naive(torch.sigmoid),
                        ),
                    ],
                    probes=[
                        _future_leak_probe(call, q, k, v, lengths) if causal else lambda: None,
                        _padding_leak_probe(call, q, k, v, lengths),
                    ],
                    case=ct,
                    nan_hint=HSTU_NAN_HINT,
                )
                count += 1
        case = _ATTN_CASES[3]
        q, k, v, lengths = _attn_inputs(case, 7, requires_grad=True)
        q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
        got = fn(q2, k2, v2, lengths.clone(), 11)
        _grads_match(
            got,
            _ref_hstu_padded(q, k, v, lengths, 11),
            {"q": q2, "k": k2, "v": v2},
            {"q": q, "k": k, "v": v},
            _valid_rows(lengths, case.n_max),
            _case_text(case=case.label),
        )
        return count + 1

    return _run("check_hstu_attention", fn, body)


def check_time_bucket(fn: Callable) -> bool:
    """Check `fn(d) -> buckets`: HSTU's log time buckets of time differences in seconds.

    d: int64 tensor of any shape (may be negative or 0); returns int64 of the same shape,
    `clamp(floor(ln(max(|d|, 1)) / 0.301), 0, 128)`.
    """

    def body(fn):
        time_bucket = _reference("hstu_tutorial.ops", "time_bucket")
        g = torch.Generator().manual_seed(0)
        edge = torch.tensor(
            [0, 1, -1, 2, 3, 59, 60, 61, 3599, 3600, 86_400, -86_400, 10**9, 2**40, -(2**40), 10**18],
            dtype=torch.int64,
        )
        rand = (torch.rand(200, generator=g, dtype=torch.float64) * 40).exp().to(torch.int64) * torch.where(
            torch.rand(200, generator=g) < 0.3, -1, 1
        )
        cases = [
            ("edge values (0, ±1, minute, hour, day, huge)", edge),
            ("random gaps, seconds to years", rand),
            ("a (B, N, N) matrix of gaps", rand[:18].reshape(2, 3, 3)),
        ]
        for label, d in cases:
            expected = time_bucket(d.clone())
            got = _check_tensor(_call(fn, {"d": d}, case=_case_text(case=label)), "the buckets", expected)
            if got.is_floating_point():
                raise CheckFailed(
                    f"the buckets are {got.dtype}; they index an embedding table, so return "
                    "integers (floor, then .long())."
                )
            dd = d.to(torch.float64)
            variants = [
                (
                    "you used log10 (or log2): the bucket is floor(ln(|d|) / 0.301) with the natural log.",
                    (dd.abs().clamp(min=1).log10() / 0.301).floor().clamp(0, 128),
                ),
                (
                    "you used log2: the bucket is floor(ln(|d|) / 0.301) with the natural log.",
                    (dd.abs().clamp(min=1).log2() / 0.301).floor().clamp(0, 128),
                ),
                (
                    "you rounded instead of taking the floor.",
                    (dd.abs().clamp(min=1).log() / 0.301).round().clamp(0, 128),
                ),
                (
                    "the upper clamp is missing: buckets above 128 must be clamped to 128.",
                    (dd.abs().clamp(min=1).log() / 0.301).floor().clamp(min=0),
                ),
                (
                    "negative gaps go to bucket 0: take |d| first (a query's next timestamp can be earlier "
                    "than a key's after ties and reordering).",
                    (dd.clamp(min=1).log() / 0.301).floor().clamp(0, 128),
                ),
            ]
            # the package computes in float32 (as the reference kernel does); at the few gaps where float32
            # and float64 land in different buckets, either answer is accepted
            exact = (dd.abs().clamp(min=1).log() / 0.301).floor().clamp(0, 128).to(torch.int64)
            either = got.to(torch.int64).eq(exact) & expected.ne(exact)
            mismatch = _mismatch(
                torch.where(either, expected, got.to(torch.int64)),
                expected,
                "the bucket",
                None,
                None,
                atol=0,
                rtol=0,
            )
            if mismatch:
                for msg, v in variants:
                    if _matches(got, v, atol=0, rtol=0):
                        raise CheckFailed(msg + _case_text(case=label))
                idx = tuple(((got.to(torch.int64) != expected) & ~either).nonzero()[0].tolist())
                raise CheckFailed(
                    f"bucket of d = {int(d[idx])} at index {list(idx)}: expected "
                    f"{int(expected[idx])}, got {int(got[idx])}." + _case_text(case=label)
                )
        return len(cases)

    return _run("check_time_bucket", fn, body)
