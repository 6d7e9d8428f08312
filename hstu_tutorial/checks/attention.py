"""Checks of exercise 02 (attention math): softmax attention, HSTU pointwise attention, time buckets.

Also the padded attention cases (the jagged checks reuse them) and the probes that find a leaked
future or padding position.
"""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._common import (
    CheckFailed,
    _case_text,
    _check_tensor,
    _close,
    _diagnose,
    _fmt_index,
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


def _future_leak_probe(call: Callable, q, k, v, lengths, names=("b", "i", "h", "d")):
    """If changing keys/values at positions > i changes output row i, the causal mask leaked."""
    def probe():
        n = q.shape[1]
        if n < 2:
            return None
        cut = max(1, n // 2)
        k2, v2 = k.detach().clone(), v.detach().clone()
        k2[:, cut:] += 1.5
        v2[:, cut:] -= 2.0
        a = call(q.detach(), k.detach(), v.detach())
        b = call(q.detach(), k2, v2)
        mask = _valid_rows(lengths, n).clone()
        mask[:, cut:] = False
        bad = _close(b, a, mask)
        if bad.any():
            idx = tuple(bad.nonzero()[0].tolist())
            return (f"a future position leaked: output {_fmt_index(idx, names)} changed when only keys and "
                    f"values at positions >= {cut} changed. Apply the causal mask (keep j <= i) before "
                    "summing over keys.")
        return None
    return probe


def _padding_leak_probe(call: Callable, q, k, v, lengths, names=("b", "i", "h", "d")):
    """If changing keys/values at padded positions changes a real output row, the padding mask leaked."""
    def probe():
        n = q.shape[1]
        pad = ~_valid_rows(lengths, n)
        if not pad.any():
            return None
        k2 = k.detach().masked_fill(pad, -4.0)
        v2 = v.detach().masked_fill(pad, 7.0)
        a = call(q.detach(), k.detach(), v.detach())
        b = call(q.detach(), k2, v2)
        bad = _close(b, a, _valid_rows(lengths, n))
        if bad.any():
            idx = tuple(bad.nonzero()[0].tolist())
            return (f"a padding position leaked: output {_fmt_index(idx, names)} changed when only the keys "
                    "and values at padded positions (j >= length) changed. Mask keys j >= lengths[b].")
        return None
    return probe


def _ref_softmax_padded(q, k, v, lengths, scale=None, causal=True):
    """The package's softmax attention on padded inputs (converted to jagged and back)."""
    softmax_attention = _reference("hstu_tutorial.ops", "softmax_attention")
    n = q.shape[1]
    out = softmax_attention(_to_jagged(q, lengths), _to_jagged(k, lengths), _to_jagged(v, lengths),
                            _offsets(lengths), causal=causal, scale=scale)
    return _to_padded(out, lengths, n)


def _attn_runs():
    """(seed, case, causal): every case causal, plus the cases with padding without the causal mask
    (with the causal mask, padding is always in a valid row's future, so only then is it tested)."""
    runs = [(seed, case, True) for seed, case in enumerate(_ATTN_CASES)]
    runs += [(50 + seed, case, False) for seed, case in enumerate(_ATTN_CASES)
             if min(case.lengths) < case.n_max]
    return runs


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
            ct = _case_text(case=case.label, lengths=lengths, H=case.heads, dqk=case.dqk, dv=case.dv,
                            causal=causal)
            expected = _ref_softmax_padded(q, k, v, lengths, causal=causal)
            got = _check_tensor(fn(q.clone(), k.clone(), v.clone(), lengths.clone(), causal=causal),
                                "the output", expected, names)
            mask = _valid_rows(lengths, n)
            d = case.dqk
            call = lambda q_, k_, v_, lengths=lengths, causal=causal: fn(q_, k_, v_, lengths.clone(),
                                                                         causal=causal)
            _diagnose(got, expected, "the output", names, mask, variants=[
                ("wrong scale: your scores are not divided by sqrt(dqk); softmax attention uses "
                 "<q_i, k_j> / sqrt(dqk).",
                 lambda: _ref_softmax_padded(q, k, v, lengths, scale=1.0, causal=causal)),
                ("wrong scale: you divided the scores by dqk; divide by sqrt(dqk).",
                 lambda: _ref_softmax_padded(q, k, v, lengths, scale=1.0 / d, causal=causal)),
                ("the causal mask is applied although causal=False: with causal=False every real "
                 "position j < length attends.",
                 (lambda: _ref_softmax_padded(q, k, v, lengths, causal=True)) if not causal else None),
            ], probes=[_future_leak_probe(call, q, k, v, lengths) if causal else lambda: None,
                       _padding_leak_probe(call, q, k, v, lengths)], case=ct)
        # gradients on one case
        case = _ATTN_CASES[3]
        q, k, v, lengths = _attn_inputs(case, 11, requires_grad=True)
        q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
        got = fn(q2, k2, v2, lengths.clone(), causal=True)
        _grads_match(got, _ref_softmax_padded(q, k, v, lengths), {"q": q2, "k": k2, "v": v2},
                     {"q": q, "k": k, "v": v}, _valid_rows(lengths, case.n_max), _case_text(case=case.label))
        return len(runs) + 1

    return _run("check_softmax_attention", fn, body)


def _ref_hstu_padded(q, k, v, lengths, n, rab=None, alpha=1.0, causal=True, per_seq_norm=False):
    """The package's jagged `hstu_attention` on padded inputs (converted to jagged and back)."""
    hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
    N = q.shape[1]
    if per_seq_norm:  # a known mistake: dividing by each sequence's own length
        outs = []
        for b in range(len(lengths)):
            lb = lengths[b: b + 1]
            outs.append(_ref_hstu_padded(q[b: b + 1], k[b: b + 1], v[b: b + 1], lb, max(int(lb), 1),
                                         None if rab is None else rab[b: b + 1], alpha, causal))
        return torch.cat(outs)
    out = hstu_attention(_to_jagged(q, lengths), _to_jagged(k, lengths), _to_jagged(v, lengths),
                         _offsets(lengths), rab=rab, alpha=alpha, norm=n, causal=causal)
    return _to_padded(out, lengths, N)


def _naive_variant(q, k, v, lengths, n, rab, act, causal=True):
    """Padded attention with another pointwise activation `act` (relu, softmax...) for diagnosis."""
    s = torch.einsum("bihd,bjhd->bhij", q, k)  # (B, H, N, N)
    if rab is not None:
        s = s + rab[:, None] if rab.dim() == 3 else s + rab
    N = q.shape[1]
    keep = (torch.arange(N)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, N)
    if causal:
        keep = keep & torch.ones(N, N, dtype=torch.bool).tril()[None, None]
    if act == "softmax":
        a = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)
    else:
        a = act(s).masked_fill(~keep, 0.0) / n
    return torch.einsum("bhij,bjhd->bihd", a, v)


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
                rab = (0.5 * torch.randn(len(lengths), N, N, generator=torch.Generator().manual_seed(seed),
                                         dtype=torch.float64)) if with_rab else None
                ct = _case_text(case=case.label, lengths=lengths, H=case.heads, dqk=case.dqk, n=n,
                                rab="given" if with_rab else None, causal=causal)
                expected = _ref_hstu_padded(q, k, v, lengths, n, rab, causal=causal)
                got = _check_tensor(fn(q.clone(), k.clone(), v.clone(), lengths.clone(), n,
                                       rab=None if rab is None else rab.clone(), causal=causal),
                                    "the output", expected, names)
                mask = _valid_rows(lengths, N)
                call = (lambda q_, k_, v_, lengths=lengths, n=n, rab=rab, causal=causal:
                        fn(q_, k_, v_, lengths.clone(), n, rab=rab, causal=causal))
                ref = lambda q_=q, n_=n, rab_=rab, causal_=causal, **kw: _ref_hstu_padded(
                    q_, k, v, lengths, n_, rab_, causal=causal_, **kw)
                _diagnose(got, expected, "the output", names, mask, variants=[
                    (f"missing divisor n: your output is exactly n = {n} times too large. HSTU divides "
                     "SiLU(scores) by the constant n (it has no softmax to normalise the row).",
                     lambda: ref(n_=1.0)),
                    ("wrong divisor: you divided by each sequence's own length; HSTU divides by the "
                     "constant n that is passed in, the same for every sequence and row.",
                     lambda: ref(per_seq_norm=True)),
                    ("wrong scale: you divided the scores by sqrt(dqk); HSTU uses the raw <q_i, k_j> "
                     "(no 1/sqrt(d) scaling).",
                     lambda: ref(q_=q / math.sqrt(case.dqk),
                                 rab_=None if rab is None else rab / math.sqrt(case.dqk))),
                    ("the relative attention bias is missing: add rab[b, i, j] to the scores before SiLU.",
                     (lambda: ref(rab_=None)) if with_rab else None),
                    ("the bias was added after SiLU: add rab to the scores, then apply SiLU.",
                     (lambda: ref(rab_=None) + _rab_after(rab, v, lengths, n, causal)) if with_rab else None),
                    ("the causal mask is applied although causal=False: with causal=False every real "
                     "position j < length attends.", (lambda: ref(causal_=True)) if not causal else None),
                    ("you used softmax: HSTU replaces softmax with a pointwise SiLU divided by n.",
                     lambda: _naive_variant(q, k, v, lengths, n, rab, "softmax", causal)),
                    ("you used ReLU: HSTU's pointwise activation is SiLU (x * sigmoid(x)).",
                     lambda: _naive_variant(q, k, v, lengths, n, rab, torch.relu, causal)),
                    ("you used sigmoid: HSTU's pointwise activation is SiLU (x * sigmoid(x)).",
                     lambda: _naive_variant(q, k, v, lengths, n, rab, torch.sigmoid, causal)),
                ], probes=[_future_leak_probe(call, q, k, v, lengths) if causal else lambda: None,
                           _padding_leak_probe(call, q, k, v, lengths)], case=ct)
                count += 1
        case = _ATTN_CASES[3]
        q, k, v, lengths = _attn_inputs(case, 7, requires_grad=True)
        q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
        got = fn(q2, k2, v2, lengths.clone(), 11)
        _grads_match(got, _ref_hstu_padded(q, k, v, lengths, 11), {"q": q2, "k": k2, "v": v2},
                     {"q": q, "k": k, "v": v}, _valid_rows(lengths, case.n_max), _case_text(case=case.label))
        return count + 1

    return _run("check_hstu_attention", fn, body)


def _rab_after(rab, v, lengths, n, causal=True):
    """Output contribution of adding rab *after* SiLU: sum_j rab_ij / n * v_j over allowed j."""
    N = v.shape[1]
    keep = (torch.arange(N)[None, :] < lengths[:, None])[:, None].expand(-1, N, -1)  # (B, N, N)
    if causal:
        keep = keep & torch.ones(N, N, dtype=torch.bool).tril()[None]
    a = rab.masked_fill(~keep, 0.0) / n  # (B, N, N)
    return torch.einsum("bij,bjhd->bihd", a, v)


def check_time_bucket(fn: Callable) -> bool:
    """Check `fn(d) -> buckets`: HSTU's log time buckets of time differences in seconds.

    d: int64 tensor of any shape (may be negative or 0); returns int64 of the same shape,
    `clamp(floor(ln(max(|d|, 1)) / 0.301), 0, 128)`.
    """
    def body(fn):
        time_bucket = _reference("hstu_tutorial.ops", "time_bucket")
        g = torch.Generator().manual_seed(0)
        edge = torch.tensor([0, 1, -1, 2, 3, 59, 60, 61, 3599, 3600, 86_400, -86_400, 10 ** 9, 2 ** 40,
                             -(2 ** 40), 10 ** 18], dtype=torch.int64)
        rand = (torch.rand(200, generator=g, dtype=torch.float64) * 40).exp().to(torch.int64) * torch.where(
            torch.rand(200, generator=g) < 0.3, -1, 1)
        cases = [("edge values (0, ±1, minute, hour, day, huge)", edge),
                 ("random gaps, seconds to years", rand),
                 ("a (B, N, N) matrix of gaps", rand[:18].reshape(2, 3, 3))]
        for label, d in cases:
            expected = time_bucket(d.clone())
            got = fn(d.clone())
            _check_tensor(got, "the buckets", expected)
            if got.is_floating_point():
                raise CheckFailed(f"the buckets are {got.dtype}; they index an embedding table, so return "
                                  "integers (floor, then .long()).")
            dd = d.to(torch.float64)
            variants = [
                ("you used log10 (or log2): the bucket is floor(ln(|d|) / 0.301) with the natural log.",
                 (dd.abs().clamp(min=1).log10() / 0.301).floor().clamp(0, 128)),
                ("you used log2: the bucket is floor(ln(|d|) / 0.301) with the natural log.",
                 (dd.abs().clamp(min=1).log2() / 0.301).floor().clamp(0, 128)),
                ("you rounded instead of taking the floor.",
                 (dd.abs().clamp(min=1).log() / 0.301).round().clamp(0, 128)),
                ("the upper clamp is missing: buckets above 128 must be clamped to 128.",
                 (dd.abs().clamp(min=1).log() / 0.301).floor().clamp(min=0)),
                ("negative gaps go to bucket 0: take |d| first (a query's next timestamp can be earlier "
                 "than a key's after ties and reordering).",
                 (dd.clamp(min=1).log() / 0.301).floor().clamp(0, 128)),
            ]
            # the package computes in float32 (as the reference kernel does); at the few gaps where float32
            # and float64 land in different buckets, either answer is accepted
            exact = (dd.abs().clamp(min=1).log() / 0.301).floor().clamp(0, 128).to(torch.int64)
            either = got.to(torch.int64).eq(exact) & expected.ne(exact)
            mismatch = _mismatch(torch.where(either, expected, got.to(torch.int64)), expected, "the bucket",
                                 None, None, atol=0, rtol=0)
            if mismatch:
                for msg, v in variants:
                    if _matches(got, v, atol=0, rtol=0):
                        raise CheckFailed(msg + _case_text(case=label))
                idx = tuple(((got.to(torch.int64) != expected) & ~either).nonzero()[0].tolist())
                raise CheckFailed(f"bucket of d = {int(d[idx])} at index {list(idx)}: expected "
                                  f"{int(expected[idx])}, got {int(got[idx])}." + _case_text(case=label))
        return len(cases)

    return _run("check_time_bucket", fn, body)
