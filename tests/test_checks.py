"""The exercise checks: each passes a correct solution and rejects known-wrong variants with the right
message; an unsolved stub reports "not attempted yet" without raising."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hstu_tutorial import checks, progress


@pytest.fixture(autouse=True)
def _progress_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(tmp_path / "progress.json"))


def run(check, fn):
    ok = check(fn)
    return ok, checks.last_report


def expect_fail(check, fn, *fragments):
    ok, report = run(check, fn)
    assert not ok, report
    for frag in fragments:
        assert frag in report, f"expected {frag!r} in: {report}"
    return report


def stub(*args, **kwargs):
    raise NotImplementedError("exercise")


# ---- 02 attention ------------------------------------------------------------------------------------

def _mask(lengths, N, causal=True, pad=True):
    i = torch.arange(N)
    keep = torch.ones(N, N, dtype=torch.bool)
    if causal:
        keep = keep & (i[None, :] <= i[:, None])
    if pad:
        keep = keep[None] & (i[None, None, :] < lengths[:, None, None])
    else:
        keep = keep[None].expand(len(lengths), N, N)
    return keep[:, None]  # (B, 1, N, N)


def softmax_attn(q, k, v, lengths, scale=None, causal=True, pad=True):
    d = q.shape[-1]
    scale = 1 / math.sqrt(d) if scale is None else scale
    s = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    s = s.masked_fill(~_mask(lengths, q.shape[1], causal, pad), float("-inf"))
    a = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("bhij,bjhd->bihd", a, v)


def test_softmax_attention_passes_reference():
    ok, report = run(checks.check_softmax_attention, softmax_attn)
    assert ok, report
    assert "passed" in report


def test_softmax_attention_stub_not_attempted():
    ok, report = run(checks.check_softmax_attention, stub)
    assert not ok and checks.NOT_ATTEMPTED in report


def softmax_variant(post=None, **kw):
    """A wrong softmax attention: `kw` overrides the correct settings, `post` edits the output."""
    def fn(q, k, v, lengths, causal=True):
        args = {"causal": causal, **kw}
        out = softmax_attn(q, k, v, lengths, **args)
        return post(out) if post else out
    return fn


@pytest.mark.parametrize("wrong, fragments", [
    (softmax_variant(scale=1.0), ("wrong scale", "sqrt(dqk)")),
    (softmax_variant(causal=False), ("future position leaked",)),
    (softmax_variant(pad=False), ("padding position leaked",)),
    (softmax_variant(post=lambda out: out[:, :, 0]), ("wrong shape", "expected (3, 7, 1, 4)")),
    (softmax_variant(post=lambda out: out.detach()), ("does not require grad",)),
])
def test_softmax_attention_wrong_variants(wrong, fragments):
    expect_fail(checks.check_softmax_attention, wrong, *fragments)


def hstu_attn(q, k, v, lengths, n, rab=None, act=F.silu, causal=True, pad=True, scale=1.0, rab_after=False):
    s = torch.einsum("bihd,bjhd->bhij", q, k) * scale
    if rab is not None and not rab_after:
        s = s + rab[:, None]
    a = act(s)
    if rab is not None and rab_after:
        a = a + rab[:, None]
    a = a * _mask(lengths, q.shape[1], causal, pad) / n
    return torch.einsum("bhij,bjhd->bihd", a, v)


def test_hstu_attention_passes_reference():
    ok, report = run(checks.check_hstu_attention, hstu_attn)
    assert ok, report
    assert progress.is_done("core.hstu_attention")


def hstu_variant(divisor=None, use_rab=True, **kw):
    """A wrong HSTU attention: `divisor` replaces n (a callable of lengths), `kw` other settings."""
    def fn(q, k, v, lengths, n, rab=None, causal=True):
        args = {"causal": causal, **kw}
        n = n if divisor is None else divisor(lengths)
        return hstu_attn(q, k, v, lengths, n, rab if use_rab else None, **args)
    return fn


@pytest.mark.parametrize("wrong, fragment", [
    (hstu_variant(divisor=lambda lengths: 1.0), "missing divisor n"),
    (hstu_variant(divisor=lambda lengths: lengths.max().item()), "differs at [b="),
    (hstu_variant(scale=0.5), "wrong scale"),
    (hstu_variant(causal=False), "future position leaked"),
    (hstu_variant(pad=False), "padding position leaked"),
    (hstu_variant(use_rab=False), "bias is missing"),
    (hstu_variant(rab_after=True), "after SiLU"),
    (hstu_variant(act=torch.relu), "ReLU"),
])
def test_hstu_attention_wrong_variants(wrong, fragment):
    expect_fail(checks.check_hstu_attention, wrong, fragment)


def test_hstu_attention_softmax_recognised():
    def wrong(q, k, v, l, n, rab=None, causal=True):
        s = torch.einsum("bihd,bjhd->bhij", q, k)
        if rab is not None:
            s = s + rab[:, None]
        s = s.masked_fill(~_mask(l, q.shape[1], causal), float("-inf"))
        return torch.einsum("bhij,bjhd->bihd", torch.softmax(s, -1).nan_to_num(0.0), v)
    expect_fail(checks.check_hstu_attention, wrong, "softmax")


def time_bucket(d):
    return torch.floor(torch.log(d.abs().clamp(min=1).double()) / 0.301).long().clamp(0, 128)


def test_time_bucket_passes_reference():
    ok, report = run(checks.check_time_bucket, time_bucket)
    assert ok, report


@pytest.mark.parametrize("wrong, fragment", [
    (lambda d: torch.floor(torch.log10(d.abs().clamp(min=1).double()) / 0.301).long().clamp(0, 128),
     "log10"),
    (lambda d: torch.floor(torch.log(d.abs().clamp(min=1).double()) / 0.301).long().clamp(min=0),
     "upper clamp"),
    (lambda d: torch.round(torch.log(d.abs().clamp(min=1).double()) / 0.301).long().clamp(0, 128),
     "rounded"),
    (lambda d: torch.floor(torch.log(d.clamp(min=1).double()) / 0.301).long().clamp(0, 128), "|d|"),
    (lambda d: torch.floor(torch.log(d.abs().clamp(min=1).double()) / 0.301).clamp(0, 128), "integers"),
    (lambda d: time_bucket(d).flatten(), "wrong shape"),
])
def test_time_bucket_wrong_variants(wrong, fragment):
    expect_fail(checks.check_time_bucket, wrong, fragment)


def test_check_never_raises_on_a_crashing_function():
    def crash(*a, **k):
        return 1 / 0
    ok, report = run(checks.check_time_bucket, crash)
    assert not ok and "ZeroDivisionError" in report


def test_passing_a_call_result_instead_of_a_function():
    ok, report = run(checks.check_time_bucket, 3)
    assert not ok and "expected a function" in report
