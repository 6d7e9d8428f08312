"""What every check shares: the report (tick, cross, not attempted), the comparison helpers that
name the first mismatching index, and padded <-> jagged conversions for calling the package."""

from __future__ import annotations

import importlib
import os
import traceback
from collections.abc import Callable

import torch

NOT_ATTEMPTED = "not attempted yet"
last_report: str = ""  # read it as `hstu_tutorial.checks.last_report`
_HERE = os.path.dirname(os.path.abspath(__file__))  # frames in here are the checks, not the learner


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
    """The innermost frame outside this package and torch: usually the learner's line."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if os.path.dirname(os.path.abspath(f.filename)) != _HERE and "site-packages" not in f.filename
    ]
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
        _report(
            f"✗ {name}: expected a function, got {type(fn).__name__}. Pass the function itself "
            f"(`{name}(my_function)`), without calling it."
        )
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
            _report(
                f"○ {name}: {NOT_ATTEMPTED} (the stub still raises NotImplementedError). "
                "Fill it in and re-run the cell; the notebook goes on with the package's version."
            )
            return False
        case = getattr(exc, "check_case", "")
        _report(f"✗ {name}: your function raised {type(exc).__name__}: {exc}{_where(exc)}{case}")
        return False
    from hstu_tutorial import progress

    ticked = progress.mark_done(name)
    tick = f"; checklist: ticked {', '.join(ticked)}" if ticked else ""
    _report(f"✓ {name}: passed ({n_cases} case{'' if n_cases == 1 else 's'}){tick}")
    return True


# ---- calling the learner's function on copies ------------------------------------------------------------


def _copy(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if hasattr(x, "copy") and type(x).__module__.split(".")[0] in ("numpy", "pandas"):
        return x.copy()
    if isinstance(x, list | dict):
        import copy

        return copy.deepcopy(x)
    return x


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and torch.equal(a.nan_to_num(0.5), b.detach().nan_to_num(0.5))
        )
    if type(a).__module__.split(".")[0] == "pandas":
        return a.equals(b) and list(a.index) == list(b.index)
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return True  # not comparable: nothing to report


def _storage(t) -> int:
    return t.untyped_storage().data_ptr() if isinstance(t, torch.Tensor) and t.numel() else 0


def _call(fn: Callable, args: dict, kwargs: dict | None = None, case: str = ""):
    """`fn(*args.values(), **kwargs)` on copies of the inputs. Fails when `fn` changed an input in place or
    returned a view of one (both would corrupt the caller's data); the originals stay untouched."""
    kwargs = kwargs or {}
    passed = {name: _copy(x) for name, x in {**args, **kwargs}.items()}
    try:
        out = fn(*(passed[n] for n in args), **{n: passed[n] for n in kwargs})
    except Exception as exc:
        exc.check_case = case  # `_run` names the case that crashed
        raise
    for name, original in {**args, **kwargs}.items():
        if not _same(original, passed[name]):
            where = ""
            if isinstance(original, torch.Tensor) and passed[name].shape == original.shape:
                diff = (original.nan_to_num(0.5) != passed[name].detach().nan_to_num(0.5)).nonzero()
                where = f" (first change at index {diff[0].tolist()})" if len(diff) else ""
            raise CheckFailed(
                f"your function modified its input `{name}` in place{where}: the caller's data "
                "is changed behind its back. Work on a copy (x = x.clone(), or out-of-place "
                "ops "
                "such as masked_fill instead of masked_fill_ / x[...] = ...)." + case
            )
    outs = out if isinstance(out, tuple | list) else (out,)
    for o in outs:
        for name, x in passed.items():
            if _storage(o) and _storage(o) == _storage(x):
                raise CheckFailed(
                    f"your output is a view of the input `{name}` (they share memory), so "
                    "writing into one changes the other. Return a new tensor (.clone(), or "
                    "build the result with torch.zeros / new_full and fill it)." + case
                )
    return out


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


def _fmt_pair(expected, got) -> str:
    """'expected 10.16853, got 10.16849 (difference 4e-05)': enough digits that the two numbers differ."""
    e, g = float(expected), float(got)
    k = 6
    while k < 17 and f"{e:.{k}g}" == f"{g:.{k}g}":
        k += 1
    diff = abs(e - g)
    tail = f" (difference {diff:.2g})" if diff == diff and diff not in (0.0, float("inf")) else ""
    return f"expected {e:.{k}g}, got {g:.{k}g}{tail}"


def _check_tensor(got, what: str, expected: torch.Tensor, names: tuple | None = None) -> torch.Tensor:
    """Type and shape, with the names of the dimensions in the message."""
    if isinstance(got, tuple | list) and len(got) == 1 and isinstance(got[0], torch.Tensor):
        raise CheckFailed(
            f"{what} should be a tensor, got a {type(got).__name__} holding one tensor: "
            "return the tensor itself."
        )
    if type(got).__module__ == "numpy" and hasattr(got, "dtype"):  # a numpy answer is fine for values
        got = torch.as_tensor(got)
    if not isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(got).__name__}.")
    if getattr(got, "is_nested", False):
        raise CheckFailed(
            f"{what} is a nested tensor; convert it to a regular tensor "
            "(e.g. .to_padded_tensor(...) or torch.cat of its pieces)."
        )
    if _shape(got) != _shape(expected):
        dims = f" = ({', '.join(names)})" if names and len(names) == expected.dim() else ""
        hint = ""
        if sorted(_shape(got)) == sorted(_shape(expected)) and expected.dim() > 1:
            hint = " The same sizes in another order: a transpose or permute is missing or extra."
        raise CheckFailed(
            f"wrong shape of {what}: expected {_shape(expected)}{dims}, got {_shape(got)}.{hint}"
        )
    if expected.is_floating_point():
        if not (got.is_floating_point() or got.is_complex()):
            raise CheckFailed(
                f"{what} has dtype {got.dtype}; it holds real numbers, so keep a floating "
                f"dtype ({expected.dtype} like the inputs): did an integer tensor start the "
                "computation, or a .long() / .int() slip in?"
            )
        half = (torch.float16, torch.bfloat16)
        if got.dtype in half and expected.dtype not in half:
            raise CheckFailed(
                f"{what} has dtype {got.dtype}, the inputs are {expected.dtype}: half "
                "precision "
                "loses the digits the comparison needs; compute in float32 or float64."
            )
    return got


def _close(
    got: torch.Tensor,
    expected: torch.Tensor,
    mask: torch.Tensor | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> torch.Tensor:
    """Boolean tensor of the entries that differ (restricted to `mask`)."""
    g = got.detach().to(torch.float64)
    e = expected.detach().to(torch.float64)
    finite = e[e.isfinite()]
    # atol scales with the size of the answer: float32 arithmetic inside a solution is fine
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    bad = ~torch.isclose(g, e, atol=atol * scale, rtol=rtol)
    if mask is not None:
        bad &= mask.expand_as(bad)
    return bad


def _matches(got, expected, mask=None, atol=1e-5, rtol=1e-4) -> bool:
    return (
        isinstance(got, torch.Tensor)
        and _shape(got) == _shape(expected)
        and not bool(_close(got, expected, mask, atol, rtol).any())
    )


def _mismatch(
    got: torch.Tensor,
    expected: torch.Tensor,
    what: str,
    names: tuple | None = None,
    mask: torch.Tensor | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> str | None:
    """None when equal, else 'what differs at [b=0, i=3]: expected x, got y (k of n entries differ)'."""
    bad = _close(got, expected, mask, atol, rtol)
    if not bad.any():
        return None
    idx = tuple(bad.nonzero()[0].tolist())
    total = int(mask.expand_as(bad).sum()) if mask is not None else bad.numel()
    return (
        f"{what} differs at {_fmt_index(idx, names)}: {_fmt_pair(expected[idx], got.detach()[idx])} "
        f"({int(bad.sum())} of {total} entries differ)."
    )


def _nan_message(got: torch.Tensor, expected: torch.Tensor, what: str, names, mask, hint: str) -> str | None:
    """A message naming the first NaN / inf of `got` where the expected value is finite, else None."""
    g = got.detach()
    if not (g.is_floating_point() or g.is_complex()):
        return None
    bad = ~g.isfinite() & expected.detach().isfinite()
    if mask is not None:
        bad &= mask.expand_as(bad)
    if not bad.any():
        return None
    idx = tuple(bad.nonzero()[0].tolist())
    kind = "NaN" if bool(g[idx].isnan()) else "inf"
    return (
        f"{kind} in {what} at {_fmt_index(idx, names)} (expected {_fmt_val(expected[idx])}; "
        f"{int(bad.sum())} non-finite entries). {hint}"
    )


_NAN_HINT = (
    "Look for a division by zero, a log or sqrt of a non-positive number, or -inf meeting a 0 "
    "(-inf * 0 = NaN)."
)


def _diagnose(
    got, expected, what, names, mask, variants, probes=(), atol=1e-5, rtol=1e-4, case="", nan_hint=_NAN_HINT
):
    """Raise CheckFailed with the most specific message: non-finite values, a known mistake, a probe, else
    the first index."""
    msg = _mismatch(got, expected, what, names, mask, atol, rtol)
    if msg is None:
        return
    for variant_msg, variant in variants:  # a known mistake first: some of them produce NaN themselves
        v = variant() if callable(variant) else variant
        if v is not None and _matches(got, v, mask, atol, rtol):
            raise CheckFailed(f"{variant_msg}{case}")
    nan_msg = _nan_message(got, expected, what, names, mask, nan_hint)
    if nan_msg:
        raise CheckFailed(nan_msg + case)
    for probe in probes:
        probe_msg = probe()
        if probe_msg:
            raise CheckFailed(f"{probe_msg}{case}")
    raise CheckFailed(f"{msg}{case}")


def _grads_match(
    fn_out: torch.Tensor,
    ref_out: torch.Tensor,
    ours: dict,
    theirs: dict,
    mask: torch.Tensor | None,
    case: str,
    seed: int = 0,
) -> None:
    """Backpropagate the same random upstream gradient through both outputs and compare input grads."""
    g = torch.Generator().manual_seed(seed)
    up = torch.randn(ref_out.shape, generator=g, dtype=ref_out.dtype)
    if mask is not None:
        up = up * mask.expand_as(up).to(up.dtype)
    if not isinstance(fn_out, torch.Tensor):
        raise CheckFailed(
            f"your output is a {type(fn_out).__name__}, not a torch tensor, so no gradient can "
            "flow back to the inputs: compute with torch operations (numpy cuts the graph)." + case
        )
    if not fn_out.requires_grad:
        raise CheckFailed(
            "your output does not require grad, so no gradient can flow back to the inputs: "
            "did you use .detach(), .item(), .numpy() or torch.no_grad()?" + case
        )
    got_grads = torch.autograd.grad(fn_out, list(ours.values()), up.to(fn_out.dtype), allow_unused=True)
    ref_grads = torch.autograd.grad(ref_out, list(theirs.values()), up, allow_unused=True)
    for (name, _), gg, rg in zip(ours.items(), got_grads, ref_grads):
        if rg is None:
            continue
        if gg is None:
            raise CheckFailed(
                f"no gradient reaches {name}: your output does not depend on it through "
                "autograd (a .detach() or a copy through Python numbers?)" + case
            )
        msg = _mismatch(gg, rg, f"the gradient of {name}", None, None, atol=1e-4, rtol=1e-3)
        if msg:
            raise CheckFailed(
                msg + " The forward values match, so look for in-place edits or a detached piece." + case
            )


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
        out[b, :ln] = values[start : start + ln]
        start += ln
    return out


def _valid_rows(lengths: torch.Tensor, n: int) -> torch.Tensor:
    """(B, N, 1, 1) boolean: True at the non-padded positions."""
    return (torch.arange(n)[None, :] < lengths[:, None])[:, :, None, None]
