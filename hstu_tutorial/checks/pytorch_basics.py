"""Checks of exercise 00 (PyTorch warm-up): broadcasting, masking, autograd, a training loop."""

# The known-mistake variants are lambdas built inside loops and evaluated in the same iteration (by
# `_diagnose`), so the late binding ruff's B023 warns about cannot bite here.
# ruff: noqa: B023

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._common import (
    CheckFailed,
    _call,
    _case_text,
    _check_tensor,
    _diagnose,
    _fmt_index,
    _is_not_implemented,
    _matches,
    _mismatch,
    _run,
    _storage,
)

# ---- 1. broadcasting: pairwise scores -----------------------------------------------------------------


def _pairwise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x @ y.transpose(1, 2) / math.sqrt(x.shape[-1])  # (B, N, M)


def check_pairwise_scores(fn: Callable) -> bool:
    """Check `fn(x, y) -> scores`: x `(B, N, D)`, y `(B, M, D)` -> `(B, N, M)`, scores[b, i, j] =
    <x[b, i], y[b, j]> / sqrt(D). Cases with N = M and with N != M."""

    def body(fn):
        cases = [(2, 5, 5, 4), (3, 4, 6, 8), (2, 7, 3, 5), (1, 1, 3, 2)]  # (B, N, M, D); square first
        square_passed = False
        for seed, (B, N, M, D) in enumerate(cases):
            g = torch.Generator().manual_seed(10 + seed)
            x = torch.randn(B, N, D, generator=g)  # (B, N, D)
            y = torch.randn(B, M, D, generator=g)  # (B, M, D)
            expected = _pairwise(x, y)  # (B, N, M)
            ct = _case_text(B=B, N=N, M=M, D=D)
            only_square = (
                f"it works when N == M but not here, where x has N = {N} rows and y has M = {M}: somewhere "
                "the length of one input stands for the other's (x.shape[1] where y.shape[1] belongs, or "
                "an output built as (B, N, N))."
            )
            try:
                got = _call(fn, {"x": x, "y": y}, case=ct)
            except CheckFailed:
                raise
            except Exception as exc:
                if square_passed and not _is_not_implemented(exc):
                    raise CheckFailed(
                        f"your function raised {type(exc).__name__}: {exc}; {only_square}{ct}"
                    ) from None
                raise
            if hasattr(got, "shape") and tuple(got.shape) != (B, N, M):
                shape = tuple(got.shape)
                if N != M and shape == (B, M, N):
                    raise CheckFailed(
                        f"your scores are transposed: expected (B, N, M) = {(B, N, M)}, got (B, M, N) = {shape}. "
                        "scores[b, i, j] pairs row i of x with row j of y: x @ y.transpose(1, 2)." + ct
                    )
                if shape == (B, N) or shape == (B, M):
                    raise CheckFailed(
                        f"one score per row (shape {shape}): x * y pairs row i of x with row i of y only. "
                        "All pairs need a new axis each: x[:, :, None, :] * y[:, None, :, :] summed over "
                        "the last axis (or x @ y.transpose(1, 2))." + ct
                    )
                if shape in ((B, N, D), (B, M, D)) and D not in (N, M):
                    raise CheckFailed(
                        f"summed over the wrong axis (shape {shape}): the dot product reduces D, the last "
                        "axis of x[:, :, None, :] * y[:, None, :, :], i.e. .sum(-1)." + ct
                    )
                if square_passed:
                    raise CheckFailed(f"wrong shape: expected {(B, N, M)}, got {shape}; {only_square}{ct}")
            got = _check_tensor(got, "your scores", expected, ("B", "N", "M"))
            variants = [
                (
                    "your scores are transposed: scores[b, i, j] must be <x[b, i], y[b, j]>, yours is "
                    "<x[b, j], y[b, i]> (y @ x.transpose(1, 2) instead of x @ y.transpose(1, 2)).",
                    lambda: expected.transpose(1, 2) if N == M else None,
                ),
                (
                    "the scale 1/sqrt(D) is missing: divide the dot products by sqrt(x.shape[-1]).",
                    lambda: expected * math.sqrt(D),
                ),
                (
                    f"divided by D = {D} instead of sqrt(D).",
                    lambda: expected / math.sqrt(D),
                ),
                (
                    f"divided by sqrt(N) = sqrt({N}) (the number of rows) instead of sqrt(D) = sqrt({D}) "
                    "(the embedding width, x.shape[-1]).",
                    lambda: expected * math.sqrt(D) / math.sqrt(N) if N != D else None,
                ),
                (
                    f"divided by sqrt(M) = sqrt({M}) (y's number of rows) instead of sqrt(D) = sqrt({D}) "
                    "(the embedding width, x.shape[-1]).",
                    lambda: expected * math.sqrt(D) / math.sqrt(M) if M != D else None,
                ),
                (
                    "batch rows are mixed: each score sums over every sequence of the batch (an einsum "
                    "like 'bnd,cmd->bnm', or a reshape that merged B with N). Keep b the same on both "
                    "sides: 'bnd,bmd->bnm'.",
                    lambda: torch.einsum("bnd,cmd->bnm", x, y) / math.sqrt(D) if B > 1 else None,
                ),
            ]
            _diagnose(got, expected, "your scores", ("b", "i", "j"), None, variants, case=ct)
            square_passed = square_passed or N == M
        return len(cases)

    return _run("check_pairwise_scores", fn, body)


# ---- 2. masking: causal + padding, then softmax ---------------------------------------------------------


def _keep(lengths: torch.Tensor, n: int, strict: bool = False) -> torch.Tensor:
    """(B, N, N) True where row i may attend column j: both real positions and j <= i (j < i if strict)."""
    pos = torch.arange(n)
    real = pos[None, :] < lengths[:, None]  # (B, N)
    causal = pos[None, :] < pos[:, None] if strict else pos[None, :] <= pos[:, None]  # (N, N)
    return real[:, :, None] & real[:, None, :] & causal[None]


def _softmax_where(scores: torch.Tensor, keep: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over the kept entries along `dim`, 0 elsewhere and on rows with nothing kept."""
    w = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=dim)
    return torch.where(keep, w, torch.zeros_like(w)).nan_to_num(0.0)


def check_masked_softmax(fn: Callable) -> bool:
    """Check `fn(scores, lengths) -> weights`: scores `(B, N, N)`, lengths `(B,)` -> `(B, N, N)`, the
    softmax over j of the entries where i and j are real positions (< length) and j <= i; every other
    entry 0, so a padding row (or a whole empty sequence) is all zeros, never NaN."""

    def body(fn):
        cases = [(5, [5, 3, 1, 0]), (6, [6, 4]), (1, [1, 0])]  # (N, lengths)
        for seed, (N, lens) in enumerate(cases):
            g = torch.Generator().manual_seed(20 + seed)
            lengths = torch.tensor(lens)
            B = len(lens)
            scores = torch.randn(B, N, N, generator=g) * 2  # (B, N, N)
            keep = _keep(lengths, N)
            expected = _softmax_where(scores, keep)  # (B, N, N)
            ct = _case_text(N=N, lengths=lengths)
            got = _call(fn, {"scores": scores, "lengths": lengths}, case=ct)
            got = _check_tensor(got, "your weights", expected, ("B", "N", "N"))
            if _matches(got, expected):
                continue
            g64 = got.detach().double()
            real = torch.arange(N)[None, :] < lengths[:, None]  # (B, N)
            if _matches(got, _softmax_where(scores, ~keep)):
                raise CheckFailed(
                    "your mask is inverted: the weights sit where attention is forbidden and are 0 where it "
                    "is allowed. masked_fill(mask, -inf) fills where mask is True: pass ~keep (the "
                    "forbidden entries), or use torch.where(keep, scores, -inf)." + ct
                )
            diag = g64.diagonal(dim1=1, dim2=2)  # (B, N)
            if bool(real.any()) and bool(((diag.abs() < 1e-7) | diag.isnan())[real].all()):
                raise CheckFailed(
                    "the diagonal is missing: every real position has weight 0 (or NaN) on itself. The "
                    "causal mask keeps j <= i (an item sees itself and its past), not j < i: use "
                    "torch.ones(N, N).tril() (diagonal included) or pos[None, :] <= pos[:, None]." + ct
                )
            nan = g64.isnan()
            if nan.any():
                idx = tuple(nan.nonzero()[0].tolist())
                b, i = idx[0], idx[1]
                row = "a padding row" if i >= int(lengths[b]) else "a row"
                raise CheckFailed(
                    f"NaN at {_fmt_index(idx, ('b', 'i', 'j'))} ({row}; lengths[{b}] = {int(lengths[b])}): "
                    "when every entry of a row is masked with -inf, softmax computes 0 / 0 = NaN. Keep the "
                    "-inf for the softmax but zero the masked entries afterwards (torch.where(keep, w, 0.0)), "
                    "or apply .nan_to_num(0.0) to the softmax's output." + ct
                )
            future = torch.ones(N, N, dtype=torch.bool).triu(1)[None] & real[:, :, None] & real[:, None, :]
            leaked = (g64.abs() > 1e-7) & future
            if leaked.any():
                idx = tuple(leaked.nonzero()[0].tolist())
                raise CheckFailed(
                    f"a future position leaked: weight {g64[idx]:.4g} at {_fmt_index(idx, ('b', 'i', 'j'))}, "
                    "where j > i. Position i may only attend j <= i: add the causal mask "
                    "(torch.ones(N, N, dtype=torch.bool).tril())." + ct
                )
            padding = ~(real[:, :, None] & real[:, None, :])  # (B, N, N): row or column is padding
            leaked = (g64.abs() > 1e-7) & padding
            if leaked.any():
                idx = tuple(leaked.nonzero()[0].tolist())
                b, i, j = idx
                which = f"row i = {i}" if i >= int(lengths[b]) else f"column j = {j}"
                raise CheckFailed(
                    f"padding leaked: weight {g64[idx]:.4g} at {_fmt_index(idx, ('b', 'i', 'j'))}, but "
                    f"{which} is padding (lengths[{b}] = {int(lengths[b])}). Mask with the lengths too "
                    "(pos < lengths[:, None], on rows and columns), and make a row with nothing left all "
                    "zeros: a finite fill such as -1e9 turns it into a uniform row instead." + ct
                )
            if _matches(got, _softmax_where(scores, keep, dim=1)):
                raise CheckFailed(
                    "softmax over the wrong axis: each row i (dim=-1, over j) must sum to 1; yours "
                    "normalises each column (dim=1)." + ct
                )
            msg = _mismatch(got, expected, "your weights", ("b", "i", "j"))
            raise CheckFailed(f"{msg} Rows over j should be a softmax of the kept scores.{ct}")
        return len(cases)

    return _run("check_masked_softmax", fn, body)


# ---- 3. autograd: per-batch gradients --------------------------------------------------------------------


def _linear_model(d: int, seed: int) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(d, 1)


def _analytic_grad(model: torch.nn.Linear, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d/dW of mean((x W^T + b - y)^2) = 2/M (x W^T + b - y)^T x, shape (1, D)."""
    with torch.no_grad():
        w, b = model.weight.double(), model.bias.double()
        r = x.double() @ w.T + b - y.double()[:, None]  # (M, 1)
        return (2.0 / x.shape[0]) * r.T @ x.double()  # (1, D)


_CUT = "does not require grad and does not have a grad_fn"
_LEAF = "leaf Variable that requires grad is being used in an in-place operation"


def check_batch_gradients(fn: Callable) -> bool:
    """Check `fn(model, batches) -> grads`: model a `torch.nn.Linear(D, 1)`, batches a list of `(x, y)`
    with x `(M, D)`, y `(M,)`; grads a list with, per batch, the gradient `(1, D)` of the loss
    mean((model(x)[:, 0] - y) ** 2) with respect to `model.weight`, each computed with backward()
    on its own (no gradient of an earlier batch added in). The weights must not change."""

    def body(fn):
        cases = [(3, [4, 5, 2], False), (2, [3, 3], True)]  # (D, batch sizes, stale grad left on the model)
        for seed, (D, sizes, stale) in enumerate(cases):
            model = _linear_model(D, 30 + seed)
            g = torch.Generator().manual_seed(40 + seed)
            batches = [(torch.randn(M, D, generator=g), torch.randn(M, generator=g)) for M in sizes]
            expected = [_analytic_grad(model, x, y).float() for x, y in batches]  # (1, D) each
            w0 = model.weight.detach().clone()
            leftover = torch.full_like(model.weight, 0.5) if stale else None
            if stale:  # as after an earlier backward that nobody cleared
                model.weight.grad = leftover.clone()
            ct = _case_text(
                D=D, batch_sizes=sizes, model_weight_grad_on_entry="0.5 everywhere" if stale else None
            )
            passed = [(x.clone(), y.clone()) for x, y in batches]  # the learner may not spoil ours
            try:
                got = fn(model, passed)
            except RuntimeError as exc:
                exc.check_case = ct
                if _CUT in str(exc):
                    raise CheckFailed(
                        "backward() found no graph: the loss was computed under torch.no_grad(), or from "
                        "a .detach()-ed output (or via .item() / numpy), so autograd cannot reach the "
                        f"weights ({exc})." + ct
                    ) from None
                if _LEAF in str(exc):
                    raise CheckFailed(
                        "an in-place operation on a leaf tensor that requires grad (model.weight += ..., "
                        "w.mul_(...)): autograd forbids it. Compute gradients with backward() and leave the "
                        f"weights alone ({exc})." + ct
                    ) from None
                raise
            except Exception as exc:
                exc.check_case = ct  # `_run` names the case that crashed
                raise
            if not torch.equal(model.weight.detach(), w0):
                raise CheckFailed(
                    "your function changed model.weight: only compute gradients here (no optimizer.step(), "
                    "no update of the weights)." + ct
                )
            if not isinstance(got, list | tuple):
                raise CheckFailed(
                    f"return a list with one gradient per batch, got {type(got).__name__}." + ct
                )
            if len(got) != len(batches):
                raise CheckFailed(f"expected {len(batches)} gradients (one per batch), got {len(got)}." + ct)
            if any(gr is None for gr in got):
                raise CheckFailed(
                    "a gradient is None: model.weight.grad stays None when backward() was not called, or "
                    "when the loss does not depend on model.weight through autograd (a .detach() on the "
                    "weights?)." + ct
                )
            ptrs = [_storage(gr) for gr in got]
            if len(got) > 1 and len(set(ptrs)) < len(ptrs):
                raise CheckFailed(
                    "two of your gradients are the same tensor in memory: model.weight.grad is one tensor "
                    "that backward() keeps updating, so every entry of your list shows its last value. "
                    "Append model.weight.grad.clone()." + ct
                )
            running = leftover.double() if stale else torch.zeros_like(expected[0], dtype=torch.float64)
            for k, (gr, want) in enumerate(zip(got, expected)):
                cb = f"{ct[:-1]}, batch {k})"
                gr = _check_tensor(gr, f"the gradient of batch {k}", want, ("1", "D"))
                running = running + want.double()
                M = sizes[k]
                variants = [
                    (
                        "the gradient left on the model before your function ran is added to the first "
                        "batch: zero model.weight.grad before the first backward() too.",
                        lambda: want.double() + leftover.double() if stale and k == 0 else None,
                    ),
                    (
                        "the gradients accumulate: backward() adds into model.weight.grad, and the "
                        "gradient left by earlier backward() calls (or by whoever called backward() before "
                        "your function) is still in it. Call model.zero_grad() (or set model.weight.grad = "
                        "None) before each backward().",
                        lambda: running,
                    ),
                    (
                        "the gradients accumulate from batch to batch: call model.zero_grad() before each "
                        "backward(), since backward() adds into model.weight.grad.",
                        lambda: running - leftover.double() if stale else None,
                    ),
                    (
                        f"the gradient is {M} (the batch size) times too large: the loss is summed over "
                        "the batch; take the mean.",
                        lambda: want * M,
                    ),
                    ("the gradient has the wrong sign: the loss is (prediction - y) ** 2.", lambda: -want),
                    (
                        "the gradient is half the right one: the square's factor 2 is missing.",
                        lambda: want / 2,
                    ),
                ]
                _diagnose(gr, want, f"the gradient of batch {k}", ("0", "d"), None, variants, case=cb)
        return len(cases)

    return _run("check_batch_gradients", fn, body)


# ---- 4. a training loop -------------------------------------------------------------------------------


class _WatchedDropout(torch.nn.Dropout):
    """Dropout that notes, on every forward pass with gradients on, whether the model was in train mode."""

    def __init__(self, p: float, log: list):
        super().__init__(p)
        self._log = log

    def forward(self, x):
        if torch.is_grad_enabled():
            self._log.append(self.training)
        return super().forward(x)


LOOP_THRESHOLD = 0.1  # mean squared error the trained model must reach on the data (noise variance 0.01)
LOOP_MAX_FORWARDS = 5000  # training forward passes allowed (a few hundred are enough)


def _loop_data(seed: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 4, generator=g)  # (256, 4)
    w = torch.tensor([[1.5], [-2.0], [0.5], [1.0]])  # (4, 1)
    y = x @ w + 0.5 * torch.sin(2 * x[:, :1]) + 0.1 * torch.randn(256, 1, generator=g)  # (256, 1)
    return x, y


def _loop_model(log: list, seed: int = 51) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 32), torch.nn.ReLU(), _WatchedDropout(0.1, log), torch.nn.Linear(32, 1)
    )
    return model.eval()  # handed over in eval mode, as after an evaluation


def _mse(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = float(((model(x) - y) ** 2).mean())
    model.train(was)
    return out


def check_training_loop(fn: Callable) -> bool:
    """Check `fn(model, x, y)`: train `model` (a small MLP with dropout, handed over in eval mode) in place
    on x `(256, 4)`, y `(256, 1)` with the mean squared error, until the check's own measurement of the
    loss (eval mode, after `fn` returns) is below LOOP_THRESHOLD. Whatever `fn` returns or prints is ignored."""

    def body(fn):
        x, y = _loop_data()
        log: list = []
        model = _loop_model(log)
        stale = []  # per backward: did a parameter still hold a non-zero gradient from before?

        def seen(p):
            def hook(grad):  # runs before the new gradient is added into p.grad
                stale.append(p.grad is not None and bool(p.grad.abs().sum() > 0))
                return grad

            return hook

        for p in model.parameters():
            p.register_hook(seen(p))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        loss0 = _mse(model, x, y)
        torch.manual_seed(52)  # dropout masks: the same on every run of the check
        _call(fn, {"model": model, "x": x, "y": y})
        loss1 = _mse(model, x, y)
        n_params = len(before)
        backwards = len(stale) // n_params
        if all(torch.equal(before[n], p.detach()) for n, p in model.named_parameters()):
            if backwards == 0:
                raise CheckFailed(
                    "the weights did not change and no gradient was computed: call loss.backward() and "
                    "optimizer.step() in every step."
                )
            raise CheckFailed(
                f"the weights did not change although backward() ran {backwards} times: optimizer.step() "
                "is missing (or the optimizer holds other parameters than model.parameters(), or lr = 0)."
            )
        if len(log) > LOOP_MAX_FORWARDS:
            raise CheckFailed(
                f"{len(log)} training forward passes, more than the {LOOP_MAX_FORWARDS} allowed: a few "
                "hundred steps of Adam (lr 1e-2) on the full batch are enough."
            )
        if log and not any(log):
            raise CheckFailed(
                "the model was in eval mode during training (dropout off in every forward pass): the "
                "model arrives in eval mode, as after an evaluation; call model.train() before the loop."
            )
        if not log:
            raise CheckFailed(
                "the model never ran with gradients on: the forward pass is under torch.no_grad() (or the "
                "weights were changed without autograd). Compute the loss with gradients, then backward()."
            )
        if backwards > 1 and sum(stale[n_params:]) > n_params * (backwards - 1) // 2:
            raise CheckFailed(
                "the gradients accumulate from step to step: before each backward() the parameters still "
                "hold the previous step's gradient (backward() adds to .grad). Call optimizer.zero_grad() "
                "in every step, before loss.backward()."
            )
        if loss1 > loss0:
            raise CheckFailed(
                f"the loss went up, from {loss0:.3g} to {loss1:.3g} (measured by the check): the steps climb "
                "the loss instead of descending it. Minimise the loss itself (not -loss), with a positive "
                "learning rate."
            )
        if not loss1 < LOOP_THRESHOLD:
            raise CheckFailed(
                f"after training the mean squared error is {loss1:.3g} (measured by the check, in eval mode; "
                f"it was {loss0:.3g} before), not below {LOOP_THRESHOLD}: train longer or with a larger "
                "learning rate (Adam with lr 1e-2 for about 300 full-batch steps is enough)."
            )
        return 1

    return _run("check_training_loop", fn, body)
