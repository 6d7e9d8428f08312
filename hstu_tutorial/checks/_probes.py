"""Probes and known-mistake builders shared by the attention checks (padded, jagged, Triton).

A probe changes only inputs that must not matter (future keys, padding, another sequence) and reports the
first output that moved; a builder computes what a known mistake would return, so that a check can name it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._common import _close, _fmt_index, _valid_rows


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
            return (
                f"a future position leaked: output {_fmt_index(idx, names)} changed when only keys and "
                f"values at positions >= {cut} changed. Apply the causal mask (keep j <= i) before "
                "summing over keys."
            )
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
            return (
                f"a padding position leaked: output {_fmt_index(idx, names)} changed when only the keys "
                "and values at padded positions (j >= length) changed. Mask keys j >= lengths[b]."
            )
        return None

    return probe


def _naive_variant(q, k, v, lengths, n, rab, act, causal=True, scale=1.0, strict=False, dim=-1):
    """Padded attention built another way, for diagnosis: pointwise `act` (relu, sigmoid...) / n, or
    "softmax" over `dim`; `scale` multiplies the scores; `strict` drops the diagonal (j < i)."""
    s = torch.einsum("bihd,bjhd->bhij", q, k) * scale  # (B, H, N, N)
    if rab is not None:
        s = s + rab[:, None] if rab.dim() == 3 else s + rab
    N = q.shape[1]
    keep = (torch.arange(N)[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, N)
    if causal:
        keep = keep & torch.ones(N, N, dtype=torch.bool).tril(-1 if strict else 0)[None, None]
    if act == "softmax":
        a = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=dim).nan_to_num(0.0)
    else:
        a = act(s).masked_fill(~keep, 0.0) / n
    return torch.einsum("bhij,bjhd->bihd", a, v)


HSTU_NAN_HINT = (
    "SiLU(-inf) = -inf * sigmoid(-inf) = -inf * 0 = NaN: masking the scores with -inf before "
    "SiLU (the softmax habit) poisons the sum. Apply SiLU first, then zero the masked entries "
    "(multiply by the mask, or torch.where(keep, a, 0.0))."
)


def _divisor_variants(n, rows_len, rows_pos, causal, pad_width=None):
    """(message, divisor) pairs of the known wrong divisors; the output with divisor m is expected * n / m.
    rows_len / rows_pos: each output row's sequence length and position, shaped to broadcast."""
    longest = int(rows_len.max()) if rows_len.numel() else 0
    seen = torch.minimum(rows_pos + 1, rows_len) if causal else rows_len
    out = [
        (
            f"missing divisor n: your output is exactly n = {n:g} times too large. HSTU divides "
            "SiLU(scores) by the constant n (it has no softmax to normalise the row).",
            1.0,
        )
    ]
    if pad_width is not None and pad_width != n:
        also = " (here also the longest length)" if longest == pad_width else ""
        out.append(
            (
                f"wrong divisor: you divided by the pad width N = q.shape[1] = {pad_width}{also}; HSTU "
                f"divides by the n that is passed in ({n:g}), which need not be the pad width.",
                float(pad_width),
            )
        )
    if longest not in (n, pad_width, 0):
        out.append(
            (
                f"wrong divisor: you divided by the longest length ({longest}); divide by the n that is "
                f"passed in ({n:g}).",
                float(longest),
            )
        )
    out += [
        (f"wrong divisor: you divided by n + 1 = {n + 1:g}; divide by n itself.", n + 1.0),
        (f"wrong divisor: you divided by n - 1 = {n - 1:g}; divide by n itself.", n - 1.0),
        (
            "wrong divisor: you divided by each sequence's own length; HSTU divides by the constant n that "
            "is passed in, the same for every sequence and row.",
            rows_len.clamp(min=1).double(),
        ),
        (
            "wrong divisor: you divided each row by the number of keys it attends to (a row count, like a "
            "mean); HSTU divides every row by the same constant n.",
            seen.clamp(min=1).double(),
        ),
        (
            "wrong divisor: you divided row i by i + 1 (its position count); HSTU divides every row by the "
            "same constant n.",
            (rows_pos + 1).double(),
        ),
    ]
    return out


def _rab_after(rab, v, lengths, n, causal=True):
    """Output contribution of adding rab *after* SiLU: sum_j rab_ij / n * v_j over allowed j."""
    N = v.shape[1]
    keep = (torch.arange(N)[None, :] < lengths[:, None])[:, None].expand(-1, N, -1)  # (B, N, N)
    if causal:
        keep = keep & torch.ones(N, N, dtype=torch.bool).tril()[None]
    a = rab.masked_fill(~keep, 0.0) / n  # (B, N, N)
    return torch.einsum("bij,bjhd->bihd", a, v)


def _boundary_probe(call, q, k, v, offsets):
    """Change only one sequence's keys and values (the first, then the last): any change in another
    sequence means attention crossed a boundary (reading backwards or forwards)."""

    def probe():
        lengths = offsets[1:] - offsets[:-1]
        nonempty = (lengths > 0).nonzero()[:, 0].tolist()
        if len(nonempty) < 2:
            return None
        base = call(q.detach(), k.detach(), v.detach())
        for seq in (nonempty[0], nonempty[-1]):
            s, e = int(offsets[seq]), int(offsets[seq + 1])
            k2, v2 = k.detach().clone(), v.detach().clone()
            k2[s:e] += 1.0
            v2[s:e] -= 3.0
            other = torch.ones(q.shape[0], dtype=torch.bool)
            other[s:e] = False
            bad = _close(call(q.detach(), k2, v2), base, other[:, None, None])
            if bad.any():
                t = int(bad.nonzero()[0, 0])
                row_seq = int(torch.searchsorted(offsets, torch.tensor(t), right=True)) - 1
                return (
                    f"attention crossed a sequence boundary: row t={t} (sequence {row_seq}) changed when "
                    f"only sequence {seq}'s keys and values changed. Each row attends only to rows of "
                    "its own sequence (offsets[b] <= j < offsets[b+1])."
                )
        return None

    return probe


def _jagged_future_probe(call, q, k, v, offsets):
    """Change the last row of every sequence: no other row of that sequence may change."""

    def probe():
        lasts = offsets[1:][offsets[1:] > offsets[:-1]] - 1
        k2, v2 = k.detach().clone(), v.detach().clone()
        k2[lasts] += 1.0
        v2[lasts] -= 3.0
        a, b = call(q.detach(), k.detach(), v.detach()), call(q.detach(), k2, v2)
        keep = torch.ones(q.shape[0], dtype=torch.bool)
        keep[lasts] = False
        bad = _close(b, a, keep[:, None, None])
        if bad.any():
            t = int(bad.nonzero()[0, 0])
            return (
                f"a future position leaked: row t={t} changed when only the *last* row of each sequence "
                "changed. Keep j <= i inside each sequence."
            )
        return None

    return probe


def _jagged_rows(offsets: torch.Tensor):
    """(T, 1, 1) sequence length and position of every jagged row, for `_divisor_variants`."""
    lengths = offsets[1:] - offsets[:-1]  # (B,)
    rows_len = torch.repeat_interleave(lengths, lengths)  # (T,)
    rows_pos = torch.arange(int(lengths.sum())) - torch.repeat_interleave(offsets[:-1], lengths)  # (T,)
    return rows_len[:, None, None], rows_pos[:, None, None]


def _strictly_causal(q, k, v, n, ref):
    """The jagged reference minus each row's own (diagonal) term: what a kernel that keeps j < i computes."""
    diag = torch.nn.functional.silu((q * k).sum(-1, keepdim=True)) / n  # (T, H, 1)
    return ref - diag * v


def _jagged_variants(q, k, v, offsets, n, causal, expected, hstu_attention, softmax_attention):
    """(message, builder) pairs of the known mistakes of a jagged HSTU attention (PyTorch or Triton)."""
    import math

    rows_len, rows_pos = _jagged_rows(offsets)
    dqk = q.shape[-1]
    ref = lambda q_=q, k_=k, norm=n, c=causal: hstu_attention(q_, k_, v, offsets, norm=norm, causal=c)  # noqa: E731
    out = [
        (msg, (lambda m=m: expected * n / m)) for msg, m in _divisor_variants(n, rows_len, rows_pos, causal)
    ]
    return out + [
        (
            "wrong scale: HSTU uses the raw <q_i, k_j>, with no 1/sqrt(dqk).",
            lambda: ref(q_=q / math.sqrt(dqk)),
        ),
        (
            "the causal mask is applied although causal=False: with causal=False every position of the "
            "sequence attends (mask only the sequence end).",
            (lambda: ref(c=True)) if not causal else None,
        ),
        (
            "the diagonal is missing: position i attends to itself (j <= i). Check the mask (<=, not <) and, "
            "in a tile loop, the loop's upper bound (include the query block's own tile).",
            (lambda: _strictly_causal(q, k, v, n, expected)) if causal else None,
        ),
        (
            "q and k are swapped: the score of query i and key j is <q_i, k_j>; you computed <k_i, q_j>.",
            lambda: ref(q_=k, k_=q),
        ),
        (
            "you used SASRec's softmax attention (softmax of <q_i, k_j> / sqrt(dqk)): HSTU replaces the softmax "
            "with a pointwise SiLU divided by n, and has no 1/sqrt(d).",
            lambda: softmax_attention(q, k, v, offsets, causal=causal),
        ),
    ]
