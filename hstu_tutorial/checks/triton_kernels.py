"""Checks of exercise 05 (Triton): a jagged -> padded kernel, then the HSTU attention forward.

The kernels run on CUDA, or on the CPU through the Triton interpreter (TRITON_INTERPRET=1).
"""

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
    _diagnose,
    _mismatch,
    _offsets,
    _reference,
    _run,
)
from ._load_recorder import LoadRecorder
from ._probes import HSTU_NAN_HINT, _boundary_probe, _jagged_future_probe, _jagged_variants
from .jagged import _jagged_to_padded_cases


def _triton_device(device: str | None) -> str:
    """Where a learner's kernel runs: CUDA when there is a GPU and Triton is not in interpreter mode."""
    import os

    if device is not None:
        return device
    interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
    return "cuda" if torch.cuda.is_available() and not interpret else "cpu"


def check_triton_jagged_to_padded(fn: Callable, device: str | None = None) -> bool:
    """Check a Triton jagged -> padded: `fn(values, offsets, max_len, padding_value=0.0) -> padded`, values
    `(T, D)` float32 (D not always a power of two), the same contract as `check_jagged_to_padded`. Runs
    on CUDA, or on the CPU through the Triton interpreter (TRITON_INTERPRET=1)."""

    def body(fn):
        return _jagged_to_padded_cases(fn, torch.float32, _triton_device(device), dims=(3, 16))

    return _run("check_triton_jagged_to_padded", fn, body)


def check_triton_hstu_forward(fn: Callable, device: str | None = None) -> bool:
    """Check a Triton HSTU attention forward: `fn(q, k, v, offsets, n, causal=True) -> out` with q, k
    `(T, H, dqk)`, v `(T, H, dv)` float32 jagged, offsets `(B+1,)` -> `(T, H, dv)`, the same result as
    `hstu_tutorial.ops.hstu_attention(q, k, v, offsets, norm=n, causal=causal)`; with causal=True, key tiles
    that lie entirely after a query block are not loaded (causal tile skipping)."""
    names = ("t", "h", "d")

    def body(fn):
        hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
        softmax_attention = _reference("hstu_tutorial.ops", "softmax_attention")
        dev = _triton_device(device)
        # the interpreter computes tl.dot in float32 exactly; a GPU uses tf32 for float32 tl.dot by default
        tol = 1e-4 if dev == "cpu" else 1e-2
        cases = [
            ("lengths that are not block multiples", [37, 5, 20], 1, 16, 16),
            ("length 1", [1], 1, 16, 16),
            ("several heads, dqk != dv", [12, 30], 2, 16, 32),
            ("an empty history, a long one", [0, 70, 3], 1, 8, 8),
        ]
        count = 0
        for seed, (label, ls, h, dqk, dv) in enumerate(cases):
            for causal in (True, False):
                q, k, v, offsets, n = _triton_inputs(ls, h, dqk, dv, 600 + seed)
                expected = hstu_attention(q.double(), k.double(), v.double(), offsets, norm=n, causal=causal)
                ct = _case_text(case=label, lengths=ls, H=h, dqk=dqk, dv=dv, n=n, causal=causal)
                run_fn = lambda q_, k_, v_, c=causal, offsets=offsets, n=n: fn(
                    q_.to(dev).contiguous(),
                    k_.to(dev).contiguous(),
                    v_.to(dev).contiguous(),
                    offsets.to(dev),
                    n,
                    causal=c,
                ).cpu()
                got = _call(
                    fn,
                    {"q": q.to(dev), "k": k.to(dev), "v": v.to(dev), "offsets": offsets.to(dev), "n": n},
                    {"causal": causal},
                    ct,
                )
                got = _check_tensor(
                    got.cpu() if isinstance(got, torch.Tensor) else got, "the output", expected, names
                )
                qd, kd, vd = q.double(), k.double(), v.double()
                _diagnose(
                    got,
                    expected,
                    "the output",
                    names,
                    None,
                    variants=_jagged_variants(
                        qd, kd, vd, offsets, n, causal, expected, hstu_attention, softmax_attention
                    ),
                    probes=[
                        _boundary_probe(run_fn, q, k, v, offsets),
                        _jagged_future_probe(run_fn, q, k, v, offsets) if causal else lambda: None,
                    ],
                    atol=tol,
                    rtol=tol,
                    case=ct,
                    nan_hint=_TRITON_NAN_HINT,
                )
                count += 1
        return count + _check_tile_skipping(fn, dev, tol, hstu_attention)

    return _run("check_triton_hstu_forward", fn, body)


_TRITON_NAN_HINT = (
    "Either a load without a mask (or without other=0.0) read outside the sequence, or "
    "-inf met SiLU: " + HSTU_NAN_HINT
)


def _triton_inputs(ls, h, dqk, dv, seed):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(ls)
    offsets = _offsets(lengths)
    T = int(lengths.sum())
    q = torch.randn(T, h, dqk, generator=g) * 0.5  # (T, H, dqk) float32
    k = torch.randn(T, h, dqk, generator=g) * 0.5  # (T, H, dqk)
    v = torch.randn(T, h, dv, generator=g)  # (T, H, dv)
    return q, k, v, offsets, float(max(ls) + 11)


def _check_tile_skipping(fn, dev, tol, hstu_attention) -> int:
    """One long causal sequence, run with the interpreter's loads recorded: a program must not load a key
    or value tile that lies entirely after its last query row (the diagonal tile, partly masked, is fine).
    On a GPU (compiled kernels, nothing recorded) only the values are compared."""
    ls = [300, 45]  # longer than any sensible BLOCK_M, so that most query blocks have future tiles
    q, k, v, offsets, n = _triton_inputs(ls, 1, 16, 16, 650)
    q, k, v, offsets = q.to(dev), k.to(dev), v.to(dev), offsets.to(dev)
    ct = _case_text(case="tile skipping: a long sequence", lengths=ls, H=1, dqk=16, dv=16, n=n, causal=True)
    with LoadRecorder({"q": q, "k": k, "v": v}) as rec:
        got = fn(q, k, v, offsets, n, causal=True)
    expected = hstu_attention(q.cpu().double(), k.cpu().double(), v.cpu().double(), offsets.cpu(), norm=n)
    got = _check_tensor(
        got.cpu() if isinstance(got, torch.Tensor) else got, "the output", expected, ("t", "h", "d")
    )
    msg = _mismatch(got, expected, "the output", ("t", "h", "d"), atol=tol, rtol=tol)
    if msg:
        raise CheckFailed(msg + ct)
    future, _seen = rec.loads_after_queries("q", ("k", "v"))
    if future is not None:
        q0, q1, k0, k1 = future
        raise CheckFailed(
            f"no causal tile skipping: the program for query rows {q0}..{q1} loaded key/value rows "
            f"{k0}..{k1}, a tile that starts after its last query row, so every score in it is masked. The "
            "output is right, but about half of the work is wasted: with CAUSAL, stop the key loop at the "
            "query block's end, "
            "hi = tl.minimum(length, (block_m + 1) * BLOCK_M)." + ct
        )
    return 1
