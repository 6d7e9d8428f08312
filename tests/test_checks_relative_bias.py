"""The relative-attention-bias checks (exercise 02, section 4): every known slip written the way a learner
would write it must fail with its named diagnosis; correct solutions written another way must pass."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from check_helpers import _progress_file, fails_with, passes  # noqa: F401 (an autouse fixture)

from hstu_tutorial import checks, progress
from hstu_tutorial.ops import time_bucket

# ---- correct solutions, written several ways -------------------------------------------------------------


def position_bias(pos_w, N):
    L = (len(pos_w) + 1) // 2
    pos = torch.arange(N)
    return pos_w[L - 1 + pos[None, :] - pos[:, None]]  # (N, N)


def time_bias(ts_w, timestamps, next_timestamps):
    gap = next_timestamps[:, :, None] - timestamps[:, None, :]  # (B, N, N)
    return ts_w[time_bucket(gap)]


def relative_attention_bias(pos_w, ts_w, timestamps, next_timestamps):
    return position_bias(pos_w, timestamps.shape[1])[None] + time_bias(ts_w, timestamps, next_timestamps)


def position_bias_loops(pos_w, N):
    L = (pos_w.shape[0] + 1) // 2
    out = torch.zeros(N, N, dtype=pos_w.dtype)
    for i in range(N):
        for j in range(N):
            out[i, j] = pos_w[L - 1 + j - i]
    return out


def bucket_loop(d):  # a learner's own scalar bucket, in float64
    return min(128, max(0, math.floor(math.log(max(abs(d), 1)) / 0.301)))


def time_bias_loops(ts_w, timestamps, next_timestamps):
    B, N = timestamps.shape
    out = torch.zeros(B, N, N, dtype=ts_w.dtype)
    for b in range(B):
        for i in range(N):
            for j in range(N):
                out[b, i, j] = ts_w[bucket_loop(int(next_timestamps[b, i]) - int(timestamps[b, j]))]
    return out


def position_bias_take(pos_w, N):
    L = (pos_w.numel() + 1) // 2
    idx = torch.arange(N).view(1, N) - torch.arange(N).view(N, 1) + (L - 1)
    return torch.take(pos_w, idx)


def position_bias_gather(pos_w, N):
    L = (pos_w.numel() + 1) // 2
    idx = (L - 1 + torch.arange(N)[None, :] - torch.arange(N)[:, None]).reshape(-1)
    return torch.gather(pos_w, 0, idx).reshape(N, N)


def position_bias_flip(pos_w, N):  # reversed-table trick: row i is a window of the flipped table
    L = (pos_w.numel() + 1) // 2
    return torch.stack([pos_w[L - 1 - i : L - 1 - i + N] for i in range(N)])


def time_bias_gather(ts_w, timestamps, next_timestamps):
    gap = next_timestamps.long().unsqueeze(2) - timestamps.long().unsqueeze(1)  # (B, N, N)
    buckets = (gap.abs().clamp(min=1).double().log() / 0.301).floor().long().clamp(0, len(ts_w) - 1)
    return torch.gather(ts_w, 0, buckets.flatten()).view_as(buckets)


def bias_numpy(pos_w, ts_w, timestamps, next_timestamps):
    pos_w, ts_w = np.asarray(pos_w), np.asarray(ts_w)
    t, tn = np.asarray(timestamps, dtype=np.int64), np.asarray(next_timestamps, dtype=np.int64)
    N = t.shape[1]
    L = (len(pos_w) + 1) // 2
    i, j = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
    gap = np.abs(tn[:, :, None] - t[:, None, :]).astype(np.float64)
    buckets = np.clip(np.floor(np.log(np.maximum(gap, 1)) / 0.301), 0, 128).astype(np.int64)
    return pos_w[L - 1 + j - i][None] + ts_w[buckets]


def bias_package_module(pos_w, ts_w, timestamps, next_timestamps):
    from hstu_tutorial.ops import RelativeAttentionBias

    m = RelativeAttentionBias(max_len=(len(pos_w) + 1) // 2).to(pos_w.dtype)
    with torch.no_grad():
        m.pos_w.copy_(pos_w)
        m.ts_w.copy_(ts_w)
        return m(timestamps, next_timestamps)


def bias_sign_flipped_abs(pos_w, ts_w, timestamps, next_timestamps):
    """t[j] - t_next[i] with a bucket of |gap|: the same buckets, so the same bias."""
    gap = timestamps[:, None, :] - next_timestamps[:, :, None]
    return position_bias(pos_w, timestamps.shape[1])[None] + ts_w[time_bucket(gap)]


@pytest.mark.parametrize(
    "fn",
    [
        position_bias,
        position_bias_loops,
        position_bias_take,
        position_bias_gather,
        position_bias_flip,
        lambda p, N: np.asarray(position_bias(p, N)),
    ],
)
def test_position_bias_correct_variants_pass(fn):
    passes(checks.check_position_bias, fn)


@pytest.mark.parametrize("fn", [time_bias, time_bias_loops, time_bias_gather])
def test_time_bias_correct_variants_pass(fn):
    passes(checks.check_time_bias, fn)


@pytest.mark.parametrize(
    "fn",
    [
        relative_attention_bias,
        bias_numpy,
        bias_package_module,
        bias_sign_flipped_abs,
        lambda p, w, t, tn: position_bias_loops(p, t.shape[1])[None] + time_bias_loops(w, t, tn),
    ],
)
def test_full_bias_correct_variants_pass_and_tick_the_step(fn):
    passes(checks.check_relative_attention_bias, fn)
    assert progress.is_done("core.attention.relative_bias")


def test_part_checks_tick_nothing():
    passes(checks.check_position_bias, position_bias)
    passes(checks.check_time_bias, time_bias)
    assert not progress.is_done("core.attention.relative_bias")


def test_not_attempted():
    def stub(*a):
        raise NotImplementedError("exercise")

    for check in (checks.check_position_bias, checks.check_time_bias, checks.check_relative_attention_bias):
        fails_with(check, stub, "not attempted yet")


# ---- position slips --------------------------------------------------------------------------------------


def pos_center(centre, sign=1, L_from=None):
    def fn(pos_w, N):
        L = (len(pos_w) + 1) // 2
        c = {"L": L, "L-2": L - 2, "N-1": N - 1, "0": 0, "L-1": L - 1}[centre]
        pos = torch.arange(N)
        return pos_w[c + sign * (pos[None, :] - pos[:, None])]

    return fn


def pos_half_len(pos_w, N):
    L = len(pos_w) // 2  # already L-1
    pos = torch.arange(N)
    return pos_w[L - 1 + pos[None, :] - pos[:, None]]


def pos_plus_one(pos_w, N):
    L = (len(pos_w) + 1) // 2
    out = torch.empty(N, N)
    for i in range(N):
        for j in range(N):
            out[i, j] = pos_w[L - 1 + j - i + 1]
    return out


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (pos_center("L"), ["off by one", "pos_w[L + j - i]"]),
        (pos_plus_one, ["off by one", "L-1 + j - i + 1"]),
        (pos_half_len, ["off by one", "len(pos_w) // 2"]),
        (pos_center("L-1", -1), ["transposed", "j - i"]),
        (pos_center("N-1"), ["centred the offsets on N-1"]),
        (pos_center("0"), ["without the offset L-1", "wraps around"]),
        (pos_center("0", -1), ["transposed", "without the offset L-1"]),
        (pos_center("L", -1), ["transposed", "off by one"]),
    ],
)
def test_position_slips_are_named(fn, fragments):
    fails_with(checks.check_position_bias, fn, *fragments)


def test_position_out_of_range_is_explained():
    def only_square(pos_w, N):  # off by one that only shows when N = L (first cases skipped by a guard)
        L = (len(pos_w) + 1) // 2
        c = L if N == L else L - 1
        pos = torch.arange(N)
        return pos_w[c + pos[None, :] - pos[:, None]]

    fails_with(checks.check_position_bias, only_square, "out of range", "L instead of L-1", "IndexError")


def test_position_unknown_slip_names_the_entry_read():
    def scaled(pos_w, N):
        return position_bias(pos_w, N).clone().index_put_((torch.tensor([1]), torch.tensor([0])), pos_w[0])

    fails_with(checks.check_position_bias, scaled, "[i=1, j=0]", "is pos_w[0]", "expected pos_w[L-1 + j - i]")


# ---- time slips ------------------------------------------------------------------------------------------


def bucket_no_abs(d):
    return (d.clamp(min=1).double().log() / 0.301).floor().long().clamp(0, 128)


def t_current(ts_w, t, tn):
    return ts_w[time_bucket(t[:, :, None] - t[:, None, :])]


def t_sign_no_abs(ts_w, t, tn):
    return ts_w[bucket_no_abs(t[:, None, :] - tn[:, :, None])]


def t_no_abs(ts_w, t, tn):
    return ts_w[bucket_no_abs(tn[:, :, None] - t[:, None, :])]


def t_transposed(ts_w, t, tn):
    return ts_w[time_bucket(tn[:, None, :] - t[:, :, None])]


def t_row0(ts_w, t, tn):
    B, N = t.shape
    out = torch.empty(B, N, N, dtype=ts_w.dtype)
    for b in range(B):
        out[b] = ts_w[time_bucket(tn[0][:, None] - t[0][None, :])]
    return out


def t_own_shift(ts_w, t, tn):
    nxt = torch.cat([t[:, 1:], t[:, -1:]], dim=1)
    return ts_w[time_bucket(nxt[:, :, None] - t[:, None, :])]


def t_bucket_difference(ts_w, t, tn):
    return ts_w[time_bucket(tn)[:, :, None] - time_bucket(t)[:, None, :]]


def t_next_both(ts_w, t, tn):
    return ts_w[time_bucket(tn[:, :, None] - tn[:, None, :])]


def t_no_clamp(ts_w, t, tn):
    gap = (tn[:, :, None] - t[:, None, :]).abs().clamp(min=1).double()
    return ts_w[(gap.log() / 0.301).floor().long()]


def t_log10(ts_w, t, tn):
    gap = (tn[:, :, None] - t[:, None, :]).abs().clamp(min=1).double()
    return ts_w[(gap.log10() / 0.301).floor().long().clamp(0, 128)]


def t_rows_swapped(ts_w, t, tn):
    return time_bias(ts_w, t, tn).flip(0)


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (t_current, ["query's own timestamp", "next_timestamps[b, i]"]),
        (t_sign_no_abs, ["sign is flipped", "bucket 0"]),
        (t_no_abs, ["negative gaps went to bucket 0", "|gap|"]),
        (t_transposed, ["transposed", "rab^T"]),
        (t_row0, ["row 0", "same row b"]),
        (t_own_shift, ["shifting", "target"]),
        (t_bucket_difference, ["subtracted the buckets"]),
        (t_next_both, ["key side"]),
        (t_no_clamp, ["out of range", "last bucket", "clamp(0, 128)"]),
        (t_log10, ["is ts_w[", "check_time_bucket"]),
        (t_rows_swapped, ["batch row b=0 holds the bias of row"]),
    ],
)
def test_time_slips_are_named(fn, fragments):
    fails_with(checks.check_time_bias, fn, *fragments)


# ---- full-bias slips -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (lambda p, w, t, tn: time_bias(w, t, tn), ["time term alone"]),
        (lambda p, w, t, tn: position_bias(p, t.shape[1]), ["(N, N)", "position term alone"]),
        (
            lambda p, w, t, tn: position_bias(p, t.shape[1]).expand(t.shape[0], -1, -1).clone(),
            ["position term alone"],
        ),
        (lambda p, w, t, tn: relative_attention_bias(p, w, t, tn).transpose(1, 2), ["transposed", "rab^T"]),
        (
            lambda p, w, t, tn: pos_center("L")(p, t.shape[1])[None] + time_bias(w, t, tn),
            ["position term", "off by one"],
        ),
        (
            lambda p, w, t, tn: pos_center("0")(p, t.shape[1])[None] + time_bias(w, t, tn),
            ["position term", "wraps"],
        ),
        (
            lambda p, w, t, tn: pos_center("L-1", -1)(p, t.shape[1])[None] + time_bias(w, t, tn),
            ["position term", "transposed"],
        ),
        (
            lambda p, w, t, tn: position_bias(p, t.shape[1])[None] + t_current(w, t, tn),
            ["time term", "own timestamp"],
        ),
        (
            lambda p, w, t, tn: position_bias(p, t.shape[1])[None] + t_sign_no_abs(w, t, tn),
            ["time term", "sign is flipped"],
        ),
        (lambda p, w, t, tn: position_bias(p, t.shape[1])[None] + t_row0(w, t, tn), ["time term", "row 0"]),
        (
            lambda p, w, t, tn: position_bias(p, t.shape[1])[None] + t_transposed(w, t, tn),
            ["time term", "transposed"],
        ),
        (
            lambda p, w, t, tn: position_bias(p, t.shape[1])[None] + t_log10(w, t, tn),
            ["time term is not", "is ts_w["],
        ),
        (
            lambda p, w, t, tn: position_bias(p, t.shape[1])[None] + t_no_clamp(w, t, tn),
            ["an index into ts_w was out of range", "last bucket"],
        ),
        (lambda p, w, t, tn: relative_attention_bias(p, w, t, tn).flip(0), ["holds the bias of row"]),
    ],
)
def test_full_bias_slips_are_named(fn, fragments):
    fails_with(checks.check_relative_attention_bias, fn, *fragments)


def test_full_bias_unknown_slip_points_at_the_parts():
    def halved(p, w, t, tn):
        return relative_attention_bias(p, w, t, tn) * 0.5

    fails_with(checks.check_relative_attention_bias, halved, "differs at [b=", "check_position_bias")


def test_inputs_are_left_untouched():
    def in_place(p, w, t, tn):
        t -= t[:, :1].clone()  # "normalise" the timestamps in place
        return relative_attention_bias(p, w, t, tn + 0)

    fails_with(checks.check_relative_attention_bias, in_place, "modified its input `timestamps`")
