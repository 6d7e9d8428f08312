"""Exercise 00's checks: each known mistake fails with its name; correct answers written otherwise pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_helpers import _progress_file, fails_with, passes  # noqa: F401 (an autouse fixture)

from hstu_tutorial import checks, progress

# ---- 1. broadcasting --------------------------------------------------------------------------------------


def scores_einsum(x, y):
    return torch.einsum("bnd,bmd->bnm", x, y) / math.sqrt(x.shape[-1])


def scores_numpy_float64(x, y):
    x, y = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    return x @ y.transpose(0, 2, 1) / np.sqrt(x.shape[-1])


def scores_square_only(x, y):
    out = torch.empty(x.shape[0], x.shape[1], x.shape[1])  # (B, N, N): M taken to be N
    for i in range(x.shape[1]):
        for j in range(x.shape[1]):
            out[:, i, j] = (x[:, i] * y[:, j]).sum(-1) / math.sqrt(x.shape[-1])
    return out


@pytest.mark.parametrize(
    "fn",
    [
        lambda x, y: x @ y.transpose(1, 2) / math.sqrt(x.shape[-1]),
        scores_einsum,
        scores_numpy_float64,
        lambda x, y: (x[:, :, None, :] * y[:, None, :, :]).sum(-1) / x.shape[-1] ** 0.5,
    ],
)
def test_pairwise_scores_correct_ways(fn):
    passes(checks.check_pairwise_scores, fn)


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (lambda x, y: y @ x.transpose(1, 2) / math.sqrt(x.shape[-1]), ("transposed",)),
        (lambda x, y: x @ y.transpose(1, 2) / math.sqrt(x.shape[1]), ("sqrt(N)", "instead of sqrt(D)")),
        (lambda x, y: x @ y.transpose(1, 2), ("scale 1/sqrt(D) is missing",)),
        (lambda x, y: (x * y).sum(-1), ("one score per row",)),
        (lambda x, y: (x[:, :, None, :] * y[:, None, :, :]).sum(1), ("wrong axis",)),
        (lambda x, y: torch.einsum("bnd,cmd->bnm", x, y) / math.sqrt(x.shape[-1]), ("batch rows are mixed",)),
        (scores_square_only, ("works when N == M",)),
    ],
)
def test_pairwise_scores_named_mistakes(fn, fragments):
    fails_with(checks.check_pairwise_scores, fn, *fragments)


# ---- 2. masking -------------------------------------------------------------------------------------------


def masked(
    scores, lengths, strict=False, causal=True, rows=True, fill=float("-inf"), zero=True, invert=False
):
    """Masked softmax with switches for the mistakes; all switches at their defaults = a correct answer."""
    N = scores.shape[-1]
    pos = torch.arange(N)
    keep = (pos[None, None, :] < lengths[:, None, None]).expand(-1, N, -1)  # (B, N, N): real columns
    if rows:
        keep = keep & (pos[None, :, None] < lengths[:, None, None])
    if causal:
        keep = keep & ((pos[None, :] < pos[:, None]) if strict else (pos[None, :] <= pos[:, None]))
    if invert:
        keep = ~keep
    w = torch.softmax(scores.masked_fill(~keep, fill), -1)
    return torch.where(keep, w, 0.0) if zero else w


@pytest.mark.parametrize(
    "fn",
    [
        masked,
        lambda s, lengths: masked(s.double(), lengths).float(),
        lambda s, lengths: masked(s, lengths, zero=False).nan_to_num(0.0) * masked(s, lengths).ne(0),
    ],
)
def test_masked_softmax_correct_ways(fn):
    passes(checks.check_masked_softmax, fn)


@pytest.mark.parametrize(
    "kw, fragments",
    [
        ({"strict": True}, ("diagonal is missing", "j <= i")),
        ({"causal": False}, ("future position leaked",)),
        ({"zero": False}, ("NaN", "0 / 0")),
        ({"fill": -1e9, "zero": False}, ("padding leaked", "uniform row")),
        ({"rows": False}, ("padding leaked", "row i = 3")),
        ({"invert": True}, ("mask is inverted",)),
    ],
)
def test_masked_softmax_named_mistakes(kw, fragments):
    fails_with(checks.check_masked_softmax, lambda s, lengths: masked(s, lengths, **kw), *fragments)


def test_masked_softmax_in_place_fill_is_caught():
    def fn(scores, lengths):
        keep = masked(scores, lengths) > 0
        scores.masked_fill_(~keep, float("-inf"))
        return masked(scores, lengths)

    fails_with(checks.check_masked_softmax, fn, "modified its input `scores` in place")


# ---- 3. autograd ------------------------------------------------------------------------------------------


def grads(model, batches, zero="before", clone=True, reduce="mean", no_grad=False):
    out = []
    for x, y in batches:
        if zero == "before":
            model.zero_grad()
        if no_grad:
            with torch.no_grad():
                pred = model(x)[:, 0]
        else:
            pred = model(x)[:, 0]
        err = (pred - y) ** 2
        (err.mean() if reduce == "mean" else err.sum()).backward()
        out.append(model.weight.grad.clone() if clone else model.weight.grad)
        if zero == "after":
            model.zero_grad(set_to_none=False)
    return out


def grads_autograd_grad(model, batches):
    return [torch.autograd.grad(F.mse_loss(model(x).squeeze(-1), y), model.weight)[0] for x, y in batches]


@pytest.mark.parametrize("fn", [grads, grads_autograd_grad])
def test_batch_gradients_correct_ways(fn):
    passes(checks.check_batch_gradients, fn)


def in_place_on_leaf(model, batches):
    model.weight *= 1.0
    return grads(model, batches)


def aliased(model, batches):
    out = []
    for x, y in batches:
        model.zero_grad(set_to_none=False)
        F.mse_loss(model(x)[:, 0], y).backward()
        out.append(model.weight.grad)
    return out


def steps_too(model, batches):
    out = grads(model, batches)
    with torch.no_grad():
        model.weight -= 0.1 * out[-1]
    return out


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (lambda m, b: grads(m, b, zero="never"), ("gradients accumulate", "zero_grad")),
        (lambda m, b: grads(m, b, zero="after"), ("left on the model before your function ran",)),
        (lambda m, b: grads(m, b, reduce="sum"), ("batch size) times too large",)),
        (lambda m, b: grads(m, b, no_grad=True), ("found no graph", "torch.no_grad()")),
        (in_place_on_leaf, ("in-place operation on a leaf",)),
        (aliased, ("same tensor in memory", ".clone()")),
        (steps_too, ("changed model.weight",)),
    ],
)
def test_batch_gradients_named_mistakes(fn, fragments):
    fails_with(checks.check_batch_gradients, fn, *fragments)


# ---- 4. a training loop -----------------------------------------------------------------------------------


def loop(model, x, y, zero=True, step=True, train=True, sign=1.0, steps=300, lr=1e-2):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if train:
        model.train()
    for _ in range(steps):
        loss = sign * F.mse_loss(model(x), y)
        if zero:
            optimizer.zero_grad()
        loss.backward()
        if step:
            optimizer.step()
    return [0.0]  # a number the check must not believe


def sgd_minibatches(model, x, y):
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(60):
        for i in range(0, len(x), 64):
            optimizer.zero_grad()
            F.mse_loss(model(x[i : i + 64]), y[i : i + 64]).backward()
            optimizer.step()


@pytest.mark.parametrize("fn", [loop, sgd_minibatches])
def test_training_loop_correct_ways(fn):
    passes(checks.check_training_loop, fn)
    assert progress.is_done("basics.pytorch.training_loop")


@pytest.mark.parametrize(
    "kw, fragments",
    [
        ({"zero": False}, ("gradients accumulate", "zero_grad")),
        ({"step": False}, ("optimizer.step() is missing",)),
        ({"train": False}, ("eval mode", "model.train()")),
        ({"sign": -1.0, "steps": 30}, ("loss went up", "not -loss")),
        ({"steps": 3}, ("not below", "measured by the check")),
    ],
)
def test_training_loop_named_mistakes(kw, fragments):
    fails_with(checks.check_training_loop, lambda m, x, y: loop(m, x, y, **kw), *fragments)


def test_all_four_tick_the_item():
    assert not progress.is_done("basics.pytorch")
    passes(checks.check_pairwise_scores, scores_einsum)
    passes(checks.check_masked_softmax, masked)
    passes(checks.check_batch_gradients, grads)
    assert not progress.is_done("basics.pytorch")
    passes(checks.check_training_loop, loop)
    assert progress.is_done("basics.pytorch")


def test_stubs_are_not_attempted():
    def stub(*args):
        raise NotImplementedError

    for check in (
        checks.check_pairwise_scores,
        checks.check_masked_softmax,
        checks.check_batch_gradients,
        checks.check_training_loop,
    ):
        assert not check(stub)
        assert "not attempted yet" in checks.last_report
