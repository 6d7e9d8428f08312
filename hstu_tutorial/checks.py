"""Exercise checks: run a learner's function on seeded random and edge cases, compare with the package.

Every exercise notebook calls one `check_<thing>(fn)` per exercise. A check

* builds seeded random cases plus edge cases (length 1, the maximum length, several heads, an empty
  history where that is legal),
* compares `fn` with the package's reference implementation (imported lazily, so a part of the package
  that is missing gives a clear message instead of an ImportError when this module is imported),
* says precisely what is wrong: wrong shape (expected vs got), the first mismatching index and both
  values, a masked (future or padding) position that leaked into the output, a known mistake recognised
  by name (missing divisor n, wrong scale, ...), gradients that differ,
* prints "not attempted yet" and returns False when `fn` still raises `NotImplementedError`, so that a
  notebook always runs top to bottom,
* on success prints a tick, ticks the learning-checklist items wired to it (`hstu_tutorial.progress`)
  and returns True.

Checks never raise for a wrong answer: they print and return a bool. The last report is kept in
`last_report` (used by the tests).
"""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

import importlib
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NOT_ATTEMPTED = "not attempted yet"
last_report: str = ""


class CheckFailed(Exception):
    """A learner's answer is wrong; the message says how."""


class ReferenceMissing(Exception):
    """The package part a check compares with is not importable."""


def _reference(module: str, name: str):
    """Import `module.name` lazily, turning a missing part into a message a learner can act on."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ReferenceMissing(
            f"the package's reference `{module}.{name}` is not available ({type(exc).__name__}: {exc}). "
            "Update your copy of the repository (git pull) and reinstall it (make setup)."
        ) from None


def _is_not_implemented(exc: BaseException) -> bool:
    """True for NotImplementedError, also when Triton's interpreter wraps it in its own error."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NotImplementedError):
            return True
        if type(exc).__module__.startswith("triton") and "NotImplementedError" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _where(exc: BaseException) -> str:
    """The innermost frame outside this file and torch: usually the learner's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.endswith("checks.py") and "site-packages" not in f.filename]
    if not frames:
        return ""
    f = frames[-1]
    line = f" ({f.line.strip()})" if f.line else ""
    return f" at line {f.lineno}{line}"


def _report(text: str) -> None:
    global last_report
    last_report = text
    print(text)


def _run(name: str, fn: Callable, body: Callable[[Callable], int]) -> bool:
    """Run `body(fn)` (which raises CheckFailed with a message) and turn the outcome into a report."""
    if not callable(fn):
        _report(f"✗ {name}: expected a function, got {type(fn).__name__}. Pass the function itself "
                f"(`{name}(my_function)`), without calling it.")
        return False
    try:
        n_cases = body(fn)
    except CheckFailed as exc:
        _report(f"✗ {name}: {exc}")
        return False
    except ReferenceMissing as exc:
        _report(f"? {name}: cannot check yet: {exc}")
        return False
    except Exception as exc:  # noqa: BLE001 - a learner's bug must not stop the notebook
        if _is_not_implemented(exc):
            _report(f"○ {name}: {NOT_ATTEMPTED} (the stub still raises NotImplementedError). "
                    "Fill it in and re-run the cell; the notebook goes on with the package's version.")
            return False
        _report(f"✗ {name}: your function raised {type(exc).__name__}: {exc}{_where(exc)}")
        return False
    from hstu_tutorial import progress

    ticked = progress.mark_done(name)
    tick = f"; checklist: ticked {', '.join(ticked)}" if ticked else ""
    _report(f"✓ {name}: passed ({n_cases} cases){tick}")
    return True


# ---- comparison helpers ----------------------------------------------------------------------------------

def _shape(t) -> tuple:
    return tuple(t.shape)


def _fmt_index(idx: tuple, names: tuple | None) -> str:
    if names and len(names) == len(idx):
        return "[" + ", ".join(f"{n}={i}" for n, i in zip(names, idx)) + "]"
    return str(list(idx))


def _fmt_val(x) -> str:
    x = float(x)
    return f"{x:.6g}"


def _check_tensor(got, what: str, expected: torch.Tensor, names: tuple | None = None) -> torch.Tensor:
    """Type and shape, with the names of the dimensions in the message."""
    if isinstance(got, tuple | list) and len(got) == 1 and isinstance(got[0], torch.Tensor):
        raise CheckFailed(f"{what} should be a tensor, got a {type(got).__name__} holding one tensor: "
                          "return the tensor itself.")
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(got).__name__}.")
    if _shape(got) != _shape(expected):
        dims = f" = ({', '.join(names)})" if names and len(names) == expected.dim() else ""
        raise CheckFailed(f"wrong shape of {what}: expected {_shape(expected)}{dims}, got {_shape(got)}.")
    return got


def _close(got: torch.Tensor, expected: torch.Tensor, mask: torch.Tensor | None = None,
           atol: float = 1e-5, rtol: float = 1e-4) -> torch.Tensor:
    """Boolean tensor of the entries that differ (restricted to `mask`)."""
    g = got.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    bad = ~torch.isclose(g, e, atol=atol, rtol=rtol)
    if mask is not None:
        bad &= mask.expand_as(bad)
    return bad


def _matches(got, expected, mask=None, atol=1e-5, rtol=1e-4) -> bool:
    return (isinstance(got, torch.Tensor) and _shape(got) == _shape(expected)
            and not bool(_close(got, expected, mask, atol, rtol).any()))


def _mismatch(got: torch.Tensor, expected: torch.Tensor, what: str, names: tuple | None = None,
              mask: torch.Tensor | None = None, atol: float = 1e-5, rtol: float = 1e-4) -> str | None:
    """None when equal, else 'what differs at [b=0, i=3]: expected x, got y (k of n entries differ)'."""
    bad = _close(got, expected, mask, atol, rtol)
    if not bad.any():
        return None
    idx = tuple(bad.nonzero()[0].tolist())
    total = int(mask.expand_as(bad).sum()) if mask is not None else bad.numel()
    return (f"{what} differs at {_fmt_index(idx, names)}: expected {_fmt_val(expected[idx])}, "
            f"got {_fmt_val(got.detach()[idx])} ({int(bad.sum())} of {total} entries differ).")


def _diagnose(got, expected, what, names, mask, variants, probes=(), atol=1e-5, rtol=1e-4, case=""):
    """Raise CheckFailed with the most specific message: a known mistake, a probe, else the first index."""
    msg = _mismatch(got, expected, what, names, mask, atol, rtol)
    if msg is None:
        return
    for variant_msg, variant in variants:
        v = variant() if callable(variant) else variant
        if v is not None and _matches(got, v, mask, atol, rtol):
            raise CheckFailed(f"{variant_msg}{case}")
    for probe in probes:
        probe_msg = probe()
        if probe_msg:
            raise CheckFailed(f"{probe_msg}{case}")
    raise CheckFailed(f"{msg}{case}")


def _grads_match(fn_out: torch.Tensor, ref_out: torch.Tensor, ours: dict, theirs: dict,
                 mask: torch.Tensor | None, case: str, seed: int = 0) -> None:
    """Backpropagate the same random upstream gradient through both outputs and compare input grads."""
    g = torch.Generator().manual_seed(seed)
    up = torch.randn(ref_out.shape, generator=g, dtype=ref_out.dtype)
    if mask is not None:
        up = up * mask.expand_as(up).to(up.dtype)
    if not fn_out.requires_grad:
        raise CheckFailed("your output does not require grad, so no gradient can flow back to the inputs: "
                          "did you use .detach(), .item(), .numpy() or torch.no_grad()?" + case)
    got_grads = torch.autograd.grad(fn_out, list(ours.values()), up.to(fn_out.dtype), allow_unused=True)
    ref_grads = torch.autograd.grad(ref_out, list(theirs.values()), up, allow_unused=True)
    for (name, _), gg, rg in zip(ours.items(), got_grads, ref_grads):
        if rg is None:
            continue
        if gg is None:
            raise CheckFailed(f"no gradient reaches {name}: your output does not depend on it through "
                              "autograd (a .detach() or a copy through Python numbers?)" + case)
        msg = _mismatch(gg, rg, f"the gradient of {name}", None, None, atol=1e-4, rtol=1e-3)
        if msg:
            raise CheckFailed(msg + " The forward values match, so look for in-place edits or a "
                              "detached piece." + case)


def _case_text(**kw) -> str:
    parts = []
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.tolist()
        parts.append(f"{k}={v}")
    return " (case: " + ", ".join(parts) + ")"


# ---- padded / jagged conversions used to call the package's jagged references ----------------------------

def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int64)


def _to_jagged(padded: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, N, ...) -> (T, ...) keeping the first lengths[b] rows of each sequence."""
    return torch.cat([padded[b, : int(n)] for b, n in enumerate(lengths.tolist())], dim=0)


def _to_padded(values: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
    out = values.new_zeros((len(lengths), n) + tuple(values.shape[1:]))
    start = 0
    for b, ln in enumerate(lengths.tolist()):
        out[b, :ln] = values[start: start + ln]
        start += ln
    return out


def _valid_rows(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, 1, 1) boolean: True at the non-padded positions."""
    return (torch.arange(n)[None, :] < lengths[:, None])[:, :, None, None]


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


# ============================================================================================================
# 02 attention math
# ============================================================================================================

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


# ============================================================================================================
# 04 jagged tensors
# ============================================================================================================

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
            got = fn(lengths.clone())
            ct = _case_text(case=label, lengths=ls if len(ls) <= 8 else f"{len(ls)} values")
            if isinstance(got, torch.Tensor) and got.shape == lengths.shape and len(ls):
                if torch.equal(got.long(), lengths.cumsum(0)):
                    raise CheckFailed("you returned cumsum(lengths), which has B entries; offsets have B+1: "
                                      "a leading 0, then the running sums (offsets[-1] = T)." + ct)
                if torch.equal(got.long(), lengths.cumsum(0) - lengths):
                    raise CheckFailed("you returned the B start offsets; offsets also end with T = "
                                      "sum(lengths), so that sequence b is values[offsets[b]:offsets[b+1]]."
                                      + ct)
            _check_tensor(got, "offsets", expected, ("B+1",))
            if got.dtype != torch.int64:
                raise CheckFailed(f"offsets have dtype {got.dtype}; use torch.int64 (they index tensors, and "
                                  "T can exceed 2^31 at scale)." + ct)
            msg = _mismatch(got, expected, "offsets", ("b",), atol=0, rtol=0)
            if msg:
                if len(ls) and int(got[0]) != 0:
                    raise CheckFailed(f"offsets[0] is {int(got[0])}; it must be 0 (the first sequence starts "
                                      "at row 0)." + ct)
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
            got = fn(values.clone().to(device), offsets.clone().to(device), max_len, padding_value=pad)
            if isinstance(got, torch.Tensor):
                got = got.cpu()
            ct = _case_text(case=label, lengths=ls, max_len=max_len, padding_value=pad, D=d)
            if isinstance(got, torch.Tensor) and got.dim() == 3 and got.shape[1] == max(ls) > max_len:
                raise CheckFailed(f"the output is {tuple(got.shape)}: it must be max_len = {max_len} wide "
                                  "even when a sequence is longer (keep its first max_len rows)." + ct)
            _check_tensor(got, "the padded tensor", expected, ("B", "max_len", "D"))
            clipped = lengths.clamp(max=max_len)
            real = (torch.arange(max_len)[None, :] < clipped[:, None])[:, :, None]  # (B, N, 1)
            variants = [
                ("the padding is 0 but padding_value was given: fill the padded positions with "
                 "padding_value.", jagged_to_padded(values, offsets, max_len) if pad != 0.0 else None),
                ("long sequences kept their *last* max_len rows; jagged_to_padded keeps the first max_len "
                 "(truncate histories before, when building them).",
                 _last_rows_padded(values, lengths, max_len, pad) if max(ls) > max_len else None),
                ("row b holds sequence b+1: an off-by-one in the offsets (sequence b is "
                 "values[offsets[b]:offsets[b+1]]).",
                 _shifted_rows(values, lengths, max_len, pad)),
            ]
            msg = _mismatch(got, expected, "the padded tensor", names, atol=0, rtol=0)
            if msg:
                for vmsg, v in variants:
                    if v is not None and _matches(got, v, atol=0, rtol=0):
                        raise CheckFailed(vmsg + ct)
                wrong_pad = _close(got, expected, ~real, atol=0, rtol=0)
                if wrong_pad.any() and not _close(got, expected, real, atol=0, rtol=0).any():
                    idx = tuple(wrong_pad.nonzero()[0].tolist())
                    raise CheckFailed("the real rows are right but the padding is not: at "
                                      f"{_fmt_index(idx, names)} expected {_fmt_val(expected[idx])}, got "
                                      f"{_fmt_val(got[idx])} (every padded slot must be written)." + ct)
                raise CheckFailed(msg + ct)
            count += 1
    return count


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
        _grads_match(fn(v1, offsets.clone(), 5), jagged_to_padded(v2, offsets, 5), {"values": v1},
                     {"values": v2}, None, _case_text(case="gradient"))
        return count + 1

    return _run("check_jagged_to_padded", fn, body)


def _last_rows_padded(values, lengths, max_len, pad):
    out = values.new_full((len(lengths), max_len, values.shape[1]), pad)
    start = 0
    for b, ln in enumerate(lengths.tolist()):
        seq = values[start: start + ln][-max_len:] if ln else values[:0]
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
        seq = values[int(offsets[b + 1]): int(offsets[b + 2])][:max_len]
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
                ref = lambda norm=n, c=causal, q=q: hstu_attention(q, k, v, offsets, norm=norm, causal=c)
                expected = ref()
                got = _check_tensor(fn(q.clone(), k.clone(), v.clone(), offsets.clone(), n, causal=causal),
                                    "the output", expected, names)
                call = lambda q_, k_, v_, c=causal: fn(q_, k_, v_, offsets.clone(), n, causal=c)
                _diagnose(got, expected, "the output", names, None, variants=[
                    (f"missing divisor n: your output is exactly n = {n} times too large.",
                     lambda: ref(norm=1.0)),
                    ("wrong scale: HSTU uses the raw <q_i, k_j>, with no 1/sqrt(dqk).",
                     lambda: ref(q=q / math.sqrt(dqk))),
                    ("the causal mask is applied although causal=False.",
                     (lambda: ref(c=True)) if not causal else None),
                ], probes=[_boundary_probe(call, q, k, v, offsets),
                           _jagged_future_probe(call, q, k, v, offsets) if causal else lambda: None], case=ct)
                count += 1
        lengths = torch.tensor([3, 5, 1])
        offsets = _offsets(lengths)
        g = torch.Generator().manual_seed(5)
        q, k, v = (torch.randn(9, 2, 4, generator=g, dtype=torch.float64) for _ in range(3))
        q2, k2, v2 = (t.clone().requires_grad_() for t in (q, k, v))
        q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
        _grads_match(fn(q2, k2, v2, offsets.clone(), 8), hstu_attention(q, k, v, offsets, norm=8),
                     {"q": q2, "k": k2, "v": v2}, {"q": q, "k": k, "v": v}, None,
                     _case_text(case="gradients"))
        return count + 1

    return _run("check_jagged_hstu_attention", fn, body)


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
                return (f"attention crossed a sequence boundary: row t={t} (sequence {row_seq}) changed when "
                        f"only sequence {seq}'s keys and values changed. Each row attends only to rows of "
                        "its own sequence (offsets[b] <= j < offsets[b+1]).")
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
            return (f"a future position leaked: row t={t} changed when only the *last* row of each sequence "
                    "changed. Keep j <= i inside each sequence.")
        return None
    return probe


# ============================================================================================================
# 01 data: per-user sequences and the leave-one-out split
# ============================================================================================================

_SEQ_COLUMNS = ["user_id", "sequence_item_ids", "sequence_ratings", "sequence_timestamps"]


def _ratings_cases():
    import numpy as np
    import pandas as pd

    hand = pd.DataFrame({  # users out of order, same-second ties, a user with one rating
        "user_id": [2, 1, 2, 1, 3, 2, 1, 2],
        "item_id": [10, 20, 11, 21, 30, 12, 22, 13],
        "rating": [5, 4, 3, 2, 1, 4, 5, 3],
        "timestamp": [100, 50, 100, 40, 70, 90, 50, 100],
    })
    rng = np.random.default_rng(0)
    n = 400
    rnd = pd.DataFrame({  # many ties: timestamps drawn from few values
        "user_id": rng.integers(1, 40, n), "item_id": rng.integers(1, 500, n),
        "rating": rng.integers(1, 6, n), "timestamp": rng.integers(0, 30, n) * 60 + 978_300_000,
    })
    synthetic = importlib.import_module("hstu_tutorial.data").get_reco_dataset(
        "synthetic", max_seq_len=50, verbose=False).ratings_df
    return [("a hand-made table with ties and a one-rating user", hand),
            ("400 random ratings, many ties", rnd),
            (f"the synthetic dataset ({len(synthetic)} ratings)", synthetic)]


def check_user_sequences(fn: Callable) -> bool:
    """Check `fn(ratings_df) -> sequences_df`: one row per user (sorted by user_id) with columns user_id,
    sequence_item_ids, sequence_ratings, sequence_timestamps (Python lists, oldest first; same-second ties
    keep their file order)."""
    def body(fn):
        ml = importlib.import_module("hstu_tutorial.data.movielens")
        _reference("hstu_tutorial.data.movielens", "sort_sequences")
        cases = _ratings_cases()
        for label, df in cases:
            expected = ml.sequences_frame(ml.sort_sequences(df.copy(), stable=True))
            got = fn(df.copy())
            ct = _case_text(case=label)
            import pandas as pd

            if not isinstance(got, pd.DataFrame):
                raise CheckFailed(f"return a pandas DataFrame, got {type(got).__name__}." + ct)
            missing = [c for c in _SEQ_COLUMNS if c not in got.columns]
            if missing:
                raise CheckFailed(f"missing column(s) {missing}; expected columns {_SEQ_COLUMNS}, got "
                                  f"{list(got.columns)}." + ct)
            got = got.reset_index(drop=True)
            if len(got) != len(expected):
                raise CheckFailed(f"expected one row per user ({len(expected)} users), got {len(got)} rows."
                                  + ct)
            users = [int(u) for u in got["user_id"]]
            if users != [int(u) for u in expected["user_id"]]:
                if sorted(users) == [int(u) for u in expected["user_id"]]:
                    raise CheckFailed(f"the rows are not sorted by user_id (got users {users[:8]}...)." + ct)
                raise CheckFailed(f"wrong users: expected {expected['user_id'].tolist()[:8]}..., got "
                                  f"{users[:8]}..." + ct)
            for r in range(len(expected)):
                want, have = expected.iloc[r], got.iloc[r]
                u = int(want["user_id"])
                w_items = list(want["sequence_item_ids"])
                h_items = [int(x) for x in have["sequence_item_ids"]]
                w_ts, h_ts = list(want["sequence_timestamps"]), [int(x) for x in have["sequence_timestamps"]]
                if sorted(w_items) != sorted(h_items):
                    raise CheckFailed(f"user {u}: expected the items {sorted(w_items)} (in some order), got "
                                      f"{sorted(h_items)}: items are missing, repeated or from another user."
                                      + ct)
                if h_ts == sorted(w_ts, reverse=True) and h_ts != w_ts:
                    raise CheckFailed(f"user {u}: the sequence is newest first; sequences are oldest first "
                                      "(sort by timestamp ascending)." + ct)
                if h_ts != w_ts:
                    raise CheckFailed(f"user {u}: timestamps {h_ts[:10]} are not in time order; expected "
                                      f"{w_ts[:10]} (sort each user's ratings by timestamp)." + ct)
                if h_items != w_items:
                    i = next(i for i, (a, b) in enumerate(zip(w_items, h_items)) if a != b)
                    raise CheckFailed(
                        f"user {u}: items with the same timestamp ({w_ts[i]}) are in a different order: at "
                        f"position {i} expected item {w_items[i]}, got {h_items[i]}. Keep ties in file order "
                        "with a stable sort (kind='stable' / 'mergesort'); the default quicksort is not "
                        "stable, and the reference's unstable sort is one of its pitfalls." + ct)
                for col in ("sequence_ratings",):
                    if [int(x) for x in have[col]] != list(want[col]):
                        raise CheckFailed(f"user {u}: {col} is not aligned with the items: expected "
                                          f"{list(want[col])[:10]}, got {list(have[col])[:10]}." + ct)
        return len(cases)

    return _run("check_user_sequences", fn, body)


def _split_reference(sequences: list[list[int]], max_len: int, protocol: str) -> dict:
    """The package's `make_split` on these sequences -> {split: list of (history, target) or None}."""
    import numpy as np

    ml = importlib.import_module("hstu_tutorial.data.movielens")
    make_split = _reference("hstu_tutorial.data.reco_dataset", "make_split")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    items = np.array([x for s in sequences for x in s], dtype=np.int64)
    flat = ml.FlatSequences(user_ids=np.arange(1, len(sequences) + 1), offsets=np.r_[0, lengths.cumsum()],
                            item_ids=items, ratings=np.ones_like(items), timestamps=np.arange(len(items)),
                            order=np.arange(len(items)))
    drops = {"test": 1, "valid": 2, "train": 2 if protocol == "reference" else 3}
    out = {}
    for name, drop in drops.items():
        split = make_split(flat, name, drop, max_len)
        by_user = {int(u): (h, int(t)) for u, h, t in zip(split.user_ids, split.histories(),
                                                         split.target_item_ids)}
        out[name] = [by_user.get(u) for u in range(1, len(sequences) + 1)]
    return out


def check_leave_one_out(fn: Callable) -> bool:
    """Check `fn(items, max_len, protocol="reference") -> {"train": ..., "valid": ..., "test": ...}` for one
    user's time-sorted item list; each value is `(history list, target)` or None when the history would be
    empty. test: history s[:-1], target s[-1]; valid: s[:-2] -> s[-2]; train: like valid with protocol
    "reference", s[:-3] -> s[-3] with protocol "validation"; histories keep their most recent max_len items.
    """
    def body(fn):
        import random

        rnd = random.Random(0)
        seqs = [[5], [5, 6], [5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]]
        seqs += [[rnd.randint(1, 99) for _ in range(rnd.randint(1, 15))] for _ in range(30)]
        n_cases = 0
        for protocol in ("reference", "validation"):
            for max_len in (4, 50):
                ref = _split_reference(seqs, max_len, protocol)
                for u, s in enumerate(seqs):
                    got = fn(list(s), max_len, protocol=protocol)
                    ct = _case_text(items=s, max_len=max_len, protocol=protocol)
                    if not isinstance(got, dict) or sorted(got) != ["test", "train", "valid"]:
                        raise CheckFailed("return a dict with the keys 'train', 'valid' and 'test', got "
                                          f"{got!r:.80}." + ct)
                    for name in ("test", "valid", "train"):
                        want, have = ref[name][u], got[name]
                        _compare_example(name, want, have, s, max_len, protocol, ct)
                    n_cases += 1
        return n_cases

    return _run("check_leave_one_out", fn, body)


def _train_mistake(name, have, s, protocol, ct):
    """Recognise a train example that uses an item held out for evaluation."""
    if name != "train" or not isinstance(have, tuple | list) or len(have) != 2:
        return
    try:
        target = int(have[1])
    except (TypeError, ValueError):
        return
    if target == s[-1]:
        raise CheckFailed("train: the target is the user's last item, which is the *test* item: training "
                          "on it leaks the answer. Train stops before it." + ct)
    if protocol == "validation" and len(s) >= 2 and target == s[-2]:
        raise CheckFailed("train with protocol='validation' must also hold out the valid item: target "
                          "s[-3], history s[:-3]." + ct)


def _compare_example(name, want, have, s, max_len, protocol, ct):
    try:
        differs = have is not None and (want is None or int(have[1]) != want[1])
    except (TypeError, ValueError, IndexError):
        differs = False  # malformed: reported below
    if differs:
        _train_mistake(name, have, s, protocol, ct)
    if want is None:
        if have is not None:
            raise CheckFailed(f"{name}: this user has too few items for a {name} example (the history would "
                              f"be empty); return None, got {have!r}." + ct)
        return
    if have is None:
        raise CheckFailed(f"{name}: expected (history, target) = ({want[0]}, {want[1]}), got None." + ct)
    try:
        history, target = have
        history, target = [int(x) for x in history], int(target)
    except (TypeError, ValueError):
        raise CheckFailed(f"{name}: return a pair (history list, target item), got {have!r:.80}."
                          + ct) from None
    w_hist, w_target = want
    if target != w_target:
        raise CheckFailed(f"{name}: expected target {w_target}, got {target}." + ct)
    if w_target in history[-1:] and history == (w_hist + [w_target])[-max_len:]:
        raise CheckFailed(f"{name}: the target {w_target} is inside its own history: the history stops "
                          "just before the target." + ct)
    if history != w_hist:
        full = s[: len(s) - {"test": 1, "valid": 2}.get(name, 2 if protocol == "reference" else 3)]
        if history == full[:max_len] and len(full) > max_len:
            raise CheckFailed(f"{name}: you kept the *oldest* {max_len} items; keep the most recent ones "
                              f"(history[-max_len:]): expected {w_hist}, got {history}." + ct)
        if len(history) != len(w_hist) and history[-1:] == w_hist[-1:]:
            raise CheckFailed(f"{name}: history window of {len(history)} items, expected {len(w_hist)} "
                              f"(at most max_len = {max_len}): expected {w_hist}, got {history}." + ct)
        raise CheckFailed(f"{name}: expected history {w_hist}, got {history}." + ct)


# ============================================================================================================
# 03 STU layer
# ============================================================================================================

def _stu_naive(x, offsets, w_uvqk, w_o, b_o, H, dqk, dv, n, rab=None, *, input_norm=True, proj_silu=True,
               order="uvqk", gate=True, out_norm="joint", residual=True):
    """STU forward built from the package's attention, with switches for the known mistakes."""
    hstu_attention = _reference("hstu_tutorial.ops", "hstu_attention")
    T, D = x.shape
    x_n = F.layer_norm(x, (D,), eps=1e-6) if input_norm else x  # (T, D)
    proj = x_n @ w_uvqk  # (T, 2*H*dv + 2*H*dqk)
    proj = F.silu(proj) if proj_silu else proj
    sizes = {"u": H * dv, "v": H * dv, "q": H * dqk, "k": H * dqk}
    parts = dict(zip(order, torch.split(proj, [sizes[c] for c in order], dim=-1)))
    u, v, q, k = parts["u"], parts["v"], parts["q"], parts["k"]
    av = hstu_attention(q.reshape(T, H, dqk), k.reshape(T, H, dqk), v.reshape(T, H, dv), offsets, rab=rab,
                        norm=n)  # (T, H, dv)
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
        cases = [("random lengths", [4, 2, 6], 8, 1, 8, 8), ("length 1", [1], 6, 1, 6, 6),
                 ("several heads, dqk != dv", [5, 3], 12, 2, 4, 6),
                 ("every sequence at the maximum length", [5, 5], 8, 2, 4, 4)]
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
                    layout = stu.JaggedLayout(offsets=offsets, lengths=lengths, pad_width=N, num_tokens=T,
                                              index=ops.padded_index(offsets, N, T))
                    with torch.no_grad():
                        expected = layer(x, layout)
                else:
                    expected = _stu_naive(x, offsets, w, wo, bo, H, dqk, dv, n, rab)
                ct = _case_text(case=label, lengths=ls, D=D, H=H, dqk=dqk, dv=dv, n=n,
                                rab="given" if with_rab else None)
                out = fn(x.clone(), offsets.clone(), w.clone(), wo.clone(), bo.clone(), H, dqk, dv, n,
                         rab=None if rab is None else rab.clone())
                got = _check_tensor(out, "the output", expected, names)
                naive = lambda **kw: _stu_naive(x, offsets, w, wo, bo, H, dqk, dv, n, rab, **kw)
                _diagnose(got, expected, "the output", names, None, variants=[
                    ("the residual is missing: the layer returns x + Linear(o).",
                     lambda: naive(residual=False)),
                    ("the gate is missing: o = u * LayerNorm(A v) (u gates elementwise).",
                     lambda: naive(gate=False)),
                    ("the LayerNorm of A v is missing: o = u * LayerNorm(A v).",
                     lambda: naive(out_norm=None)),
                    ("LayerNorm of A v was taken per head; HSTU normalises all heads jointly (over H*dv).",
                     (lambda: naive(out_norm="per_head")) if H > 1 else None),
                    ("the input LayerNorm is missing: project LayerNorm(x), not x.",
                     lambda: naive(input_norm=False)),
                    ("SiLU is missing on the projections: u, v, q, k = split(SiLU(LayerNorm(x) W_uvqk)).",
                     lambda: naive(proj_silu=False)),
                    ("the split order is wrong: the columns of W_uvqk are u, v, q, k (in that order).",
                     lambda: naive(order="qkvu")),
                    ("the split order is wrong: the columns of W_uvqk are u, v, q, k (in that order).",
                     lambda: naive(order="vuqk")),
                    ("the relative attention bias was not passed to the attention.",
                     (lambda: _stu_naive(x, offsets, w, wo, bo, H, dqk, dv, n, None)) if with_rab else None),
                ], case=ct)
                count += 1
        # gradients with respect to x and the weights
        ls, D, H, dqk, dv, n = [3, 4], 8, 2, 4, 4, 9
        offsets = _offsets(torch.tensor(ls))
        g = torch.Generator().manual_seed(1)
        tensors = {"x": torch.randn(7, D, generator=g, dtype=torch.float64),
                   "w_uvqk": 0.5 * torch.randn(D, 2 * H * (dv + dqk), generator=g, dtype=torch.float64),
                   "w_o": 0.5 * torch.randn(D, H * dv, generator=g, dtype=torch.float64),
                   "b_o": torch.randn(D, generator=g, dtype=torch.float64)}
        ours = {k: t.clone().requires_grad_() for k, t in tensors.items()}
        theirs = {k: t.clone().requires_grad_() for k, t in tensors.items()}
        got = fn(ours["x"], offsets, ours["w_uvqk"], ours["w_o"], ours["b_o"], H, dqk, dv, n)
        ref = _stu_naive(theirs["x"], offsets, theirs["w_uvqk"], theirs["w_o"], theirs["b_o"], H, dqk, dv, n)
        _grads_match(got, ref, ours, theirs, None, _case_text(case="gradients"))
        return count + 1

    return _run("check_stu_forward", fn, body)


# ============================================================================================================
# 06 training: sampled softmax loss, HR@K and NDCG@K
# ============================================================================================================

def check_sampled_softmax_loss(fn: Callable) -> bool:
    """Check `fn(query, positive_ids, negative_ids, item_table, temperature=0.05) -> loss ()`:
    query `(M, D)`, positive_ids `(M,)`, negative_ids `(M, R)` raw item ids, item_table `(num_items+1, D)`
    (row = item id). L2-normalise query and item embeddings, logits = cosine / temperature, drop negatives
    equal to the positive, loss = mean over rows of -log softmax(positive among [positive, negatives]).
    """
    def body(fn):
        sampled_softmax_loss = _reference("hstu_tutorial.losses", "sampled_softmax_loss")
        cases = [("random", 16, 8, 30, 12), ("one row (M = 1)", 1, 8, 30, 5),
                 ("one negative (R = 1)", 10, 4, 20, 1),
                 ("a tiny catalogue: many accidental hits", 12, 6, 4, 16)]
        for seed, (label, M, D, C, R) in enumerate(cases):
            g = torch.Generator().manual_seed(400 + seed)
            table = torch.randn(C + 1, D, generator=g, dtype=torch.float64) * 3  # not normalised on purpose
            query = torch.randn(M, D, generator=g, dtype=torch.float64) * 2
            pos = torch.randint(1, C + 1, (M,), generator=g)
            neg = torch.randint(1, C + 1, (M, R), generator=g)
            if R > 1:
                neg[0, 0] = pos[0]  # at least one accidental hit
            tau = 0.05 if seed % 2 == 0 else 0.2
            catalogue = torch.arange(1, C + 1)
            ref = lambda q=query, t=table, tau=tau, negs=neg: sampled_softmax_loss(
                q, pos, lambda ids: t[ids], catalogue, temperature=tau, negatives=negs - 1)
            expected = ref()
            got = fn(query.clone(), pos.clone(), neg.clone(), table.clone(), temperature=tau)
            ct = _case_text(case=label, M=M, D=D, R=R, temperature=tau)
            if isinstance(got, torch.Tensor) and got.dim() == 1 and got.shape[0] == M:
                raise CheckFailed(f"you returned one loss per row, shape {tuple(got.shape)}; return their "
                                  "mean "
                                  "(a scalar)." + ct)
            _check_tensor(got, "the loss", expected)
            naive = lambda **kw: _ssm_naive(query, pos, neg, table, tau, **kw)
            _diagnose(got, expected, "the loss", None, None, variants=[
                ("the embeddings are not L2-normalised: normalise the query and every item embedding "
                 "(F.normalize(x, dim=-1)) so that scores are cosines.", lambda: naive(normalize=False)),
                ("only the query is L2-normalised: normalise the item embeddings too.",
                 lambda: naive(normalize="query")),
                ("only the item embeddings are L2-normalised: normalise the query too.",
                 lambda: naive(normalize="items")),
                ("the temperature is missing: divide the cosines by the temperature.",
                 lambda: naive(temp="none")),
                ("the temperature multiplies the cosines; divide by it.", lambda: naive(temp="mul")),
                ("accidental hits are not masked: a negative equal to the positive must be left out of the "
                 "softmax (set its logit to -inf).", lambda: naive(mask_hits=False)),
                ("you summed the per-row losses; take their mean.", lambda: naive(reduce="sum")),
                ("the softmax excludes the positive: normalise over [positive, negatives] together.",
                 lambda: naive(include_pos=False)),
            ], atol=1e-6, rtol=1e-6, case=ct)
        # gradients
        g = torch.Generator().manual_seed(7)
        table = torch.randn(21, 6, generator=g, dtype=torch.float64)
        query = torch.randn(9, 6, generator=g, dtype=torch.float64)
        pos, neg = torch.randint(1, 21, (9,), generator=g), torch.randint(1, 21, (9, 5), generator=g)
        ours = {"query": query.clone().requires_grad_(), "item_table": table.clone().requires_grad_()}
        theirs = {"query": query.clone().requires_grad_(), "item_table": table.clone().requires_grad_()}
        got = fn(ours["query"], pos, neg, ours["item_table"], temperature=0.05)
        ref = sampled_softmax_loss(theirs["query"], pos, lambda ids: theirs["item_table"][ids],
                                   torch.arange(1, 21), temperature=0.05, negatives=neg - 1)
        _grads_match(got, ref, ours, theirs, None, _case_text(case="gradients"))
        return len(cases) + 1

    return _run("check_sampled_softmax_loss", fn, body)


def _ssm_naive(query, pos, neg, table, tau, normalize="both", temp="div", mask_hits=True, reduce="mean",
               include_pos=True):
    q, p, n = query, table[pos], table[neg]  # (M, D), (M, D), (M, R, D)
    if normalize in ("both", "query"):
        q = F.normalize(q, dim=-1)
    if normalize in ("both", "items"):
        p, n = F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    pl = (q * p).sum(-1, keepdim=True)  # (M, 1)
    nl = torch.einsum("md,mrd->mr", q, n)  # (M, R)
    if mask_hits:
        nl = nl.masked_fill(neg == pos[:, None], float("-inf"))
    logits = torch.cat([pl, nl], 1)
    logits = logits / tau if temp == "div" else (logits * tau if temp == "mul" else logits)
    if include_pos:
        per_row = -torch.log_softmax(logits, 1)[:, 0]
    else:
        per_row = -(logits[:, 0] - torch.logsumexp(logits[:, 1:], 1))
    return per_row.sum() if reduce == "sum" else per_row.mean()


def check_hr_ndcg(fn: Callable) -> bool:
    """Check `fn(scores, target_ids, history_ids, k) -> (hr, ndcg)`: scores `(B, C+1)` (column = item id;
    column 0 is padding, never a candidate), target_ids `(B,)`, history_ids `(B, N)` zero-padded items to
    remove from the ranking; returns per-user `hr (B,)` and `ndcg (B,)` floats. rank = 1 + number of unseen
    items scored strictly higher than the target; HR@K = [rank <= K]; NDCG@K = [rank <= K] / log2(rank + 1);
    a target inside the history counts as a miss.
    """
    def body(fn):
        target_ranks = _reference("hstu_tutorial.metrics", "target_ranks")
        cases = [("random", 8, 40, 6, 10), ("one user", 1, 20, 3, 5), ("K = 1", 6, 30, 4, 1),
                 ("ties in the scores", 10, 25, 5, 10), ("empty histories", 5, 30, 0, 10),
                 ("a target already in its history", 4, 15, 4, 10)]
        for seed, (label, B, C, N, K) in enumerate(cases):
            g = torch.Generator().manual_seed(500 + seed)
            if "ties" in label:
                scores = torch.randint(0, 4, (B, C + 1), generator=g).double()
            else:
                scores = torch.randn(B, C + 1, generator=g, dtype=torch.float64)
            # the padding column: a trap for code that ranks it (only every other row, so that this mistake
            # and an off-by-one in NDCG give different numbers)
            scores[:, 0] = torch.where(torch.arange(B) % 2 == 0, 50.0, -50.0)
            targets = torch.randint(1, C + 1, (B,), generator=g)
            history = (torch.randint(1, C + 1, (B, N), generator=g) if N
                       else torch.zeros(B, 1, dtype=torch.int64))
            if N > 1:
                history[:, -1] = 0  # some padding in the histories
                history[history == targets[:, None]] = 0
            if "already" in label:
                history[0, 0] = targets[0]
            catalogue = torch.arange(1, C + 1)
            ranks = target_ranks(scores[:, 1:].float(), torch.eye(C), catalogue, targets, history, C).double()
            hr_ref = (ranks <= K).double()
            ndcg_ref = torch.where(ranks <= K, 1.0 / torch.log2(ranks + 1.0), 0.0)
            got = fn(scores.clone(), targets.clone(), history.clone(), K)
            ct = _case_text(case=label, B=B, C=C, K=K)
            if not (isinstance(got, tuple | list) and len(got) == 2):
                raise CheckFailed(f"return a pair (hr, ndcg) of (B,) tensors, got {type(got).__name__}." + ct)
            hr, ndcg = got
            _check_tensor(hr, "hr", hr_ref, ("B",))
            _check_tensor(ndcg, "ndcg", ndcg_ref, ("B",))
            per_user = lambda r: ((r <= K).double(), torch.where(r <= K, 1.0 / torch.log2(r + 1.0), 0.0))
            unfiltered = target_ranks(scores[:, 1:].float(), torch.eye(C), catalogue, targets).double()
            higher_eq = _ranks_ge(scores, targets, history)
            msg_hr = _mismatch(hr, hr_ref, "hr", ("b",), atol=1e-6, rtol=1e-6)
            msg_ndcg = _mismatch(ndcg, ndcg_ref, "ndcg", ("b",), atol=1e-6, rtol=1e-6)
            if msg_hr or msg_ndcg:
                variants = [
                    ("the items already in the history were not removed: set their scores to -inf before "
                     "ranking (a seen item cannot be recommended again).", per_user(unfiltered)),
                    ("ties: count only items scored *strictly* higher than the target "
                     "(rank = 1 + #{s > s_t}).",
                     per_user(higher_eq)),
                    ("the padding column 0 was ranked as an item: exclude column 0 (it is no item).",
                     per_user(ranks + (scores[:, :1] > scores.gather(1, targets[:, None])).double()[:, 0])),
                    ("NDCG uses log2: 1 / log2(rank + 1) with 1-based ranks (you used the natural log).",
                     (hr_ref, torch.where(ranks <= K, 1.0 / torch.log(ranks + 1.0), 0.0))),
                    ("off by one in NDCG: with 1-based ranks it is 1 / log2(rank + 1) (rank 1 scores 1).",
                     (hr_ref, torch.where(ranks <= K, 1.0 / torch.log2(ranks + 2.0), 0.0))),
                    ("HR@K counts rank <= K (1-based): you used rank < K.",
                     ((ranks < K).double(), torch.where(ranks < K, 1.0 / torch.log2(ranks + 1.0), 0.0))),
                ]
                for vmsg, (vh, vn) in variants:
                    if _matches(hr, vh, atol=1e-6, rtol=1e-6) and _matches(ndcg, vn, atol=1e-6, rtol=1e-6):
                        raise CheckFailed(vmsg + ct)
                raise CheckFailed((msg_hr or msg_ndcg) + f" (the target's rank is {int(ranks[0])} for user 0)"
                                  + ct)
        return len(cases)

    return _run("check_hr_ndcg", fn, body)


def _ranks_ge(scores, targets, history):
    """Pessimistic ranks (ties counted as above the target), seen items removed, column 0 excluded."""
    s = scores.clone()
    s[:, 0] = float("-inf")
    s.scatter_(1, history, float("-inf"))
    s[:, 0] = float("-inf")
    t = scores.gather(1, targets[:, None])
    seen = (history == targets[:, None]).any(1)
    r = (s >= t).sum(1).double()  # the target itself counts once
    return torch.where(seen, torch.full_like(r, scores.shape[1]), r)


# ============================================================================================================
# 05 Triton: a jagged kernel, then the HSTU attention forward tile loop
# ============================================================================================================

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


# ============================================================================================================
# 07 project: a new dataset
# ============================================================================================================

def _write_ml100k_folder(folder, ratings) -> None:
    """u.data from `ratings` plus minimal u.item / u.user, so the package's ML-100K reader can read it."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ratings[["user_id", "item_id", "rating", "timestamp"]].itertuples(index=False)
    lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in rows]
    (folder / "u.data").write_text("\n".join(lines) + "\n", encoding="latin-1")
    flags = "|".join(["0"] * 18 + ["1"])
    items = sorted(set(int(i) for i in ratings["item_id"]))
    (folder / "u.item").write_text(
        "".join(f"{i}|Movie {i} (1995)|01-Jan-1995||http://example.org|{flags}\n" for i in items),
        encoding="latin-1")
    users = sorted(set(int(u) for u in ratings["user_id"]))
    (folder / "u.user").write_text("".join(f"{u}|30|M|other|00000\n" for u in users), encoding="latin-1")


def check_ratings_table(fn: Callable) -> bool:
    """Check `fn(path) -> ratings_df` reading an ML-100K style `u.data` file (tab-separated
    `user id, item id, rating, timestamp`, no header) into a DataFrame with int64 columns user_id, item_id,
    rating, timestamp, rows in file order."""
    def body(fn):
        import tempfile
        from pathlib import Path

        import numpy as np
        import pandas as pd

        read_ml100k = _reference("hstu_tutorial.data.movielens", "read_ml100k")
        rng = np.random.default_rng(7)
        n = 300
        tables = [
            ("300 random ratings (file order is not sorted)", pd.DataFrame({
                "user_id": rng.integers(1, 30, n), "item_id": rng.integers(1, 200, n),
                "rating": rng.integers(1, 6, n), "timestamp": rng.integers(874_724_710, 893_286_638, n)})),
            ("a single rating", pd.DataFrame({"user_id": [196], "item_id": [242], "rating": [3],
                                              "timestamp": [881250949]})),
        ]
        cols = ["user_id", "item_id", "rating", "timestamp"]
        for label, table in tables:
            ct = _case_text(case=label)
            with tempfile.TemporaryDirectory() as tmp:
                _write_ml100k_folder(tmp, table)
                expected = read_ml100k(tmp)[0]
                got = fn(Path(tmp) / "u.data")
            if not isinstance(got, pd.DataFrame):
                raise CheckFailed(f"return a pandas DataFrame, got {type(got).__name__}." + ct)
            if list(got.columns[:4]) != cols:
                raise CheckFailed(f"expected the columns {cols} (in that order), got {list(got.columns)}."
                                  + ct)
            if len(got) != len(expected):
                hint = (" The file has no header line: pass header=None (or names=...)."
                        if len(got) == len(expected) - 1 else "")
                raise CheckFailed(f"expected {len(expected)} rows (one per line), got {len(got)}.{hint}" + ct)
            for c in cols:
                if not pd.api.types.is_integer_dtype(got[c]):
                    raise CheckFailed(f"column {c} has dtype {got[c].dtype}; ids, ratings and timestamps are "
                                      "integers (int64)." + ct)
            g = got[cols].reset_index(drop=True).astype("int64")
            e = expected[cols].reset_index(drop=True).astype("int64")
            if not g.equals(e):
                if sorted(map(tuple, g.to_numpy().tolist())) == sorted(map(tuple, e.to_numpy().tolist())):
                    raise CheckFailed("the rows are all there but reordered: keep the file order (sorting "
                                      "happens later, per user and by time)." + ct)
                swapped = g[["item_id", "user_id"]].to_numpy().tolist()
                if swapped == e[["user_id", "item_id"]].to_numpy().tolist():
                    raise CheckFailed("user_id and item_id are swapped: u.data is user, item, rating, "
                                      "timestamp." + ct)
                bad = (g != e).any(axis=1).to_numpy().nonzero()[0][0]
                raise CheckFailed(f"row {bad} differs: expected {e.iloc[bad].tolist()}, got "
                                  f"{g.iloc[bad].tolist()}." + ct)
        return len(tables)

    return _run("check_ratings_table", fn, body)


def check_project_results(results: dict, baseline: dict | None = None) -> bool:
    """Check the open project's outcome: `results` maps a model name to its test metrics (a dict with
    "hr@10" and "ndcg@10", e.g. `train(...)["best_by_valid"]["test"]`), `baseline` the popularity
    baseline's. Passes when every value is a valid metric and the best model beats the baseline."""
    def body(results):
        if not isinstance(results, dict) or not results:
            raise CheckFailed("pass a dict {model name: test metrics}, e.g. {'HSTU': run['best_by_valid']"
                              "['test']}.")
        for name, m in results.items():
            if not isinstance(m, dict) or "hr@10" not in m or "ndcg@10" not in m:
                raise CheckFailed(f"{name!r}: expected a dict of metrics with 'hr@10' and 'ndcg@10', got "
                                  f"{m!r:.80}.")
            for key in ("hr@10", "ndcg@10"):
                if not 0.0 <= float(m[key]) <= 1.0:
                    raise CheckFailed(f"{name!r}: {key} = {m[key]} is not in [0, 1].")
            if float(m["ndcg@10"]) > float(m["hr@10"]) + 1e-9:
                raise CheckFailed(f"{name!r}: NDCG@10 ({m['ndcg@10']:.4f}) cannot exceed HR@10 "
                                  f"({m['hr@10']:.4f}): check how the metrics were computed.")
        if baseline is not None:
            best = max(results, key=lambda k: float(results[k]["ndcg@10"]))
            if float(results[best]["hr@10"]) <= float(baseline["hr@10"]):
                raise CheckFailed(f"no model beats the popularity baseline yet (best {best!r}: HR@10 "
                                  f"{float(results[best]['hr@10']):.3f} vs {float(baseline['hr@10']):.3f}). "
                                  "Train longer, check the split, or look at the learning rate and the "
                                  "history window.")
        return len(results)

    return _run("check_project_results", lambda: None, lambda _fn: body(results))
