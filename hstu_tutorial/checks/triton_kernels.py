"""Checks of exercise 05 (Triton): a jagged -> padded kernel, then the HSTU attention forward.

The kernels run on CUDA, or on the CPU through the Triton interpreter (TRITON_INTERPRET=1).
"""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._common import (
    CheckFailed,
    _case_text,
    _check_tensor,
    _diagnose,
    _fmt_index,
    _offsets,
    _reference,
    _run,
)
from .jagged import _boundary_probe, _jagged_future_probe, _jagged_to_padded_cases


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


def _strictly_causal(q, k, v, offsets, n, ref):
    """The reference minus each row's own (diagonal) term: what a kernel that skips j = i computes."""
    diag = F.silu((q * k).sum(-1, keepdim=True)) / n  # (T, H, 1)
    return ref - diag * v


def check_triton_hstu_forward(fn: Callable, device: str | None = None) -> bool:
    """Check a Triton HSTU attention forward: `fn(q, k, v, offsets, n, causal=True) -> out` with q, k
    `(T, H, dqk)`, v `(T, H, dv)` float32 jagged, offsets `(B+1,)` -> `(T, H, dv)`, the same result as
    `hstu_tutorial.ops.hstu_attention(q, k, v, offsets, norm=n, causal=causal)`."""
    names = ("t", "h", "d")

    def body(fn):
        hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
        dev = _triton_device(device)
        # the interpreter computes tl.dot in float32 exactly; a GPU uses tf32 for float32 tl.dot by default
        tol = 1e-4 if dev == "cpu" else 1e-2
        cases = [("lengths that are not block multiples", [37, 5, 20], 1, 16, 16),
                 ("length 1", [1], 1, 16, 16),
                 ("several heads, dqk != dv", [12, 30], 2, 16, 32),
                 ("an empty history, a long one", [0, 70, 3], 1, 8, 8)]
        count = 0
        for seed, (label, ls, h, dqk, dv) in enumerate(cases):
            for causal in (True, False):
                g = torch.Generator().manual_seed(600 + seed)
                lengths = torch.tensor(ls)
                offsets = _offsets(lengths)
                T = int(lengths.sum())
                q = torch.randn(T, h, dqk, generator=g) * 0.5  # (T, H, dqk) float32
                k = torch.randn(T, h, dqk, generator=g) * 0.5
                v = torch.randn(T, h, dv, generator=g)  # (T, H, dv)
                n = float(max(ls) + 11)
                expected = hstu_attention(q.double(), k.double(), v.double(), offsets, norm=n, causal=causal)
                ct = _case_text(case=label, lengths=ls, H=h, dqk=dqk, dv=dv, n=n, causal=causal)
                run_fn = lambda q_, k_, v_, c=causal: fn(q_.to(dev).contiguous(), k_.to(dev).contiguous(),
                                                         v_.to(dev).contiguous(), offsets.to(dev), n,
                                                         causal=c).cpu()
                got = _check_tensor(run_fn(q, k, v), "the output", expected, names)
                if got.isnan().any():
                    idx = tuple(got.isnan().nonzero()[0].tolist())
                    raise CheckFailed(f"NaN in the output at {_fmt_index(idx, names)}: a load without a mask "
                                      "(or without other=0.0) read outside the sequence." + ct)
                qd, kd, vd = q.double(), k.double(), v.double()
                _diagnose(got, expected, "the output", names, None, variants=[
                    (f"missing divisor n: your output is exactly n = {n:g} times too large.",
                     lambda: hstu_attention(qd, kd, vd, offsets, norm=1.0, causal=causal)),
                    ("the diagonal is missing: position i attends to itself (j <= i). Check the tile loop's "
                     "upper bound (include the query block's own tile) and the mask (<=, not <).",
                     (lambda: _strictly_causal(qd, kd, vd, offsets, n, expected)) if causal else None),
                    ("the causal mask is applied although causal=False: with CAUSAL false, loop over every "
                     "key tile and mask only the sequence end.",
                     (lambda: hstu_attention(qd, kd, vd, offsets, norm=n, causal=True))
                     if not causal else None),
                    ("wrong scale: HSTU uses the raw <q_i, k_j>, with no 1/sqrt(dqk).",
                     lambda: hstu_attention(qd / math.sqrt(dqk), kd, vd, offsets, norm=n, causal=causal)),
                ], probes=[_boundary_probe(run_fn, q, k, v, offsets),
                           _jagged_future_probe(run_fn, q, k, v, offsets) if causal else lambda: None],
                    atol=tol, rtol=tol, case=ct)
                count += 1
        return count

    return _run("check_triton_hstu_forward", fn, body)
