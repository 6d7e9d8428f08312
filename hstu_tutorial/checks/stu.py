"""Checks of exercise 03: the STU layer's forward pass (and its gradients)."""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._common import (
    _call,
    _case_text,
    _check_tensor,
    _diagnose,
    _grads_match,
    _offsets,
    _reference,
    _run,
)
from ._probes import HSTU_NAN_HINT


def _stu_naive(
    x,
    offsets,
    w_uvqk,
    w_o,
    b_o,
    H,
    dqk,
    dv,
    n,
    rab=None,
    *,
    input_norm=True,
    proj_silu=True,
    order="uvqk",
    gate=True,
    out_norm="joint",
    residual=True,
):
    """STU forward built from the package's attention, with switches for the known mistakes."""
    hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
    T, D = x.shape
    x_n = F.layer_norm(x, (D,), eps=1e-6) if input_norm else x  # (T, D)
    proj = x_n @ w_uvqk  # (T, 2*H*dv + 2*H*dqk)
    proj = F.silu(proj) if proj_silu else proj
    sizes = {"u": H * dv, "v": H * dv, "q": H * dqk, "k": H * dqk}
    parts = dict(zip(order, torch.split(proj, [sizes[c] for c in order], dim=-1)))
    u, v, q, k = parts["u"], parts["v"], parts["q"], parts["k"]
    av = hstu_attention(
        q.reshape(T, H, dqk), k.reshape(T, H, dqk), v.reshape(T, H, dv), offsets, rab=rab, norm=n
    )  # (T, H, dv)
    if out_norm == "joint":
        av = F.layer_norm(av.reshape(T, H * dv), (H * dv,), eps=1e-6)  # (T, H*dv)
    elif out_norm == "per_head":
        av = F.layer_norm(av, (dv,), eps=1e-6).reshape(T, H * dv)
    else:
        av = av.reshape(T, H * dv)
    o = u * av if gate else av  # (T, H*dv)
    y = o @ w_o.t() + b_o  # (T, D)
    return x + y if residual else y


def check_stu_forward(fn: Callable) -> bool:
    """Check `fn(x, offsets, w_uvqk, w_o, b_o, num_heads, dqk, dv, n, rab=None) -> out` (eval mode, no
    dropout): x `(T, D)` jagged, w_uvqk `(D, 2*H*dv + 2*H*dqk)` (columns u, v, q, k), w_o `(D, H*dv)`,
    b_o `(D,)`, rab `(B, N, N)` or None -> `(T, D)`:
    x_n = LayerNorm(x); u, v, q, k = split(SiLU(x_n W)); o = u * LayerNorm(A v); out = x + o W_o^T + b_o.
    """
    names = ("t", "d")

    def body(fn):
        STULayer = _reference("hstu_tutorial.modules.stu", "STULayer")
        stu = importlib.import_module("hstu_tutorial.modules.stu")
        ops = importlib.import_module("hstu_tutorial.ops")
        cases = [
            ("random lengths", [4, 2, 6], 8, 1, 8, 8),
            ("length 1", [1], 6, 1, 6, 6),
            ("several heads, dqk != dv", [5, 3], 12, 2, 4, 6),
            ("every sequence at the maximum length", [5, 5], 8, 2, 4, 4),
        ]
        count = 0
        for seed, (label, ls, D, H, dqk, dv) in enumerate(cases):
            for with_rab in (False, True):
                torch.manual_seed(300 + seed)
                lengths = torch.tensor(ls)
                offsets = _offsets(lengths)
                T, N = int(lengths.sum()), max(ls)
                n = N + 4
                layer = STULayer(D, H, dqk, dv, dropout=0.0, norm=n, num_positions=N, use_rab=False)
                layer = layer.double().eval()
                with torch.no_grad():  # larger weights than the N(0, 0.02^2) init, so mistakes show
                    layer.uvqk.normal_(0.0, 0.5)
                    layer.o.bias.normal_(0.0, 0.5)
                x = torch.randn(T, D, dtype=torch.float64)  # (T, D)
                rab = 0.3 * torch.randn(len(ls), N, N, dtype=torch.float64) if with_rab else None
                w, wo, bo = layer.uvqk.detach(), layer.o.weight.detach(), layer.o.bias.detach()
                if rab is None:  # the package's own layer
                    layout = stu.JaggedLayout(
                        offsets=offsets,
                        lengths=lengths,
                        pad_width=N,
                        num_tokens=T,
                        index=ops.padded_index(offsets, N, T),
                    )
                    with torch.no_grad():
                        expected = layer(x, layout)
                else:
                    expected = _stu_naive(x, offsets, w, wo, bo, H, dqk, dv, n, rab)
                ct = _case_text(
                    case=label, lengths=ls, D=D, H=H, dqk=dqk, dv=dv, n=n, rab="given" if with_rab else None
                )
                out = _call(
                    fn,
                    {
                        "x": x,
                        "offsets": offsets,
                        "w_uvqk": w,
                        "w_o": wo,
                        "b_o": bo,
                        "num_heads": H,
                        "dqk": dqk,
                        "dv": dv,
                        "n": n,
                    },
                    {"rab": rab},
                    ct,
                )
                got = _check_tensor(out, "the output", expected, names)
                naive = lambda **kw: _stu_naive(x, offsets, w, wo, bo, H, dqk, dv, n, rab, **kw)
                _diagnose(
                    got,
                    expected,
                    "the output",
                    names,
                    None,
                    variants=[
                        (
                            "the residual is missing: the layer returns x + Linear(o).",
                            lambda: naive(residual=False),
                        ),
                        (
                            "the gate is missing: o = u * LayerNorm(A v) (u gates elementwise).",
                            lambda: naive(gate=False),
                        ),
                        (
                            "the LayerNorm of A v is missing: o = u * LayerNorm(A v).",
                            lambda: naive(out_norm=None),
                        ),
                        (
                            "LayerNorm of A v was taken per head; HSTU normalises all heads jointly (over H*dv).",
                            (lambda: naive(out_norm="per_head")) if H > 1 else None,
                        ),
                        (
                            "the input LayerNorm is missing: project LayerNorm(x), not x.",
                            lambda: naive(input_norm=False),
                        ),
                        (
                            "SiLU is missing on the projections: u, v, q, k = split(SiLU(LayerNorm(x) W_uvqk)).",
                            lambda: naive(proj_silu=False),
                        ),
                        (
                            "the split order is wrong: the columns of W_uvqk are u, v, q, k (in that order).",
                            lambda: naive(order="qkvu"),
                        ),
                        (
                            "the split order is wrong: the columns of W_uvqk are u, v, q, k (in that order).",
                            lambda: naive(order="vuqk"),
                        ),
                        (
                            "the relative attention bias was not passed to the attention.",
                            (lambda: _stu_naive(x, offsets, w, wo, bo, H, dqk, dv, n, None))
                            if with_rab
                            else None,
                        ),
                        (
                            "the output projection is transposed: y = o @ w_o.T + b_o (w_o is (D, H*dv), like "
                            "nn.Linear's weight).",
                            (lambda: _stu_naive(x, offsets, w, wo.t(), bo, H, dqk, dv, n, rab))
                            if wo.shape[0] == wo.shape[1]
                            else None,
                        ),
                    ],
                    case=ct,
                    nan_hint=HSTU_NAN_HINT,
                )
                count += 1
        # gradients with respect to x and the weights
        ls, D, H, dqk, dv, n = [3, 4], 8, 2, 4, 4, 9
        offsets = _offsets(torch.tensor(ls))
        g = torch.Generator().manual_seed(1)
        tensors = {
            "x": torch.randn(7, D, generator=g, dtype=torch.float64),
            "w_uvqk": 0.5 * torch.randn(D, 2 * H * (dv + dqk), generator=g, dtype=torch.float64),
            "w_o": 0.5 * torch.randn(D, H * dv, generator=g, dtype=torch.float64),
            "b_o": torch.randn(D, generator=g, dtype=torch.float64),
        }
        ours = {k: t.clone().requires_grad_() for k, t in tensors.items()}
        theirs = {k: t.clone().requires_grad_() for k, t in tensors.items()}
        got = fn(ours["x"], offsets, ours["w_uvqk"], ours["w_o"], ours["b_o"], H, dqk, dv, n)
        ref = _stu_naive(theirs["x"], offsets, theirs["w_uvqk"], theirs["w_o"], theirs["b_o"], H, dqk, dv, n)
        _grads_match(got, ref, ours, theirs, None, _case_text(case="gradients"))
        return count + 1

    return _run("check_stu_forward", fn, body)
