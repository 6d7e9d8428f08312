"""Wrong solutions written the way a learner would: each check must fail AND name the mistake; correct
solutions written another way (matmul, float32 inside, SDPA, torch.nested, numpy) must pass."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from check_helpers import _progress_file, fails_with, passes  # noqa: F401 (an autouse fixture)

from hstu_tutorial import checks

# ---- 02: padded HSTU attention ---------------------------------------------------------------------------


def keep_mask(lengths, N, causal=True, strict=False):
    pos = torch.arange(N)
    keep = (pos[None, :] < lengths[:, None])[:, None, None, :]  # (B, 1, 1, N)
    if causal:
        keep = keep & (pos[None, :] < pos[:, None] if strict else pos[None, :] <= pos[:, None])
    return keep  # (B, 1, N, N)


def hstu(
    q,
    k,
    v,
    lengths,
    n,
    rab=None,
    causal=True,
    *,
    divisor=None,
    strict=False,
    swap=False,
    rab_t=False,
    neg_inf=False,
    softmax_scale=None,
):
    """HSTU attention with switches for the mistakes; all switches off = a correct solution."""
    N = q.shape[1]
    if swap:
        q, k = k, q
    s = torch.einsum("bihd,bjhd->bhij", q, k)  # (B, H, N, N)
    if rab is not None:
        s = s + (rab.transpose(1, 2) if rab_t else rab)[:, None]
    keep = keep_mask(lengths, N, causal, strict)
    if softmax_scale is not None:  # SASRec's attention
        a = torch.softmax((s * softmax_scale).masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
    elif neg_inf:  # the softmax habit: -inf before the activation
        a = F.silu(s.masked_fill(~keep, float("-inf"))) / n
    else:
        d = n if divisor is None else divisor(lengths, N, n)
        a = F.silu(s) * keep / d
    return torch.einsum("bhij,bjhd->bihd", a, v)


def wrong_hstu(**kw):
    return lambda q, k, v, lengths, n, rab=None, causal=True: hstu(q, k, v, lengths, n, rab, causal, **kw)


def attended(lengths, N, n):
    """(B, 1, N, 1): how many keys row i sees (a row count)."""
    return torch.minimum(torch.arange(N)[None, :] + 1, lengths[:, None]).clamp(min=1)[:, None, :, None]


@pytest.mark.parametrize(
    "kw, fragments",
    [
        ({"neg_inf": True}, ("NaN in the output", "SiLU(-inf)", "Apply SiLU first")),
        ({"softmax_scale": 0.5}, ("SASRec's softmax attention",)),
        ({"strict": True}, ("the diagonal is missing", "j <= i")),
        ({"divisor": lambda lengths, N, n: N}, ("pad width N = q.shape[1] = 7",)),
        ({"divisor": lambda lengths, N, n: n + 1}, ("n + 1 = 11",)),
        ({"divisor": lambda lengths, N, n: attended(lengths, N, n)}, ("number of keys it attends to",)),
        (
            {"divisor": lambda lengths, N, n: lengths.clamp(min=1)[:, None, None, None]},
            ("each sequence's own length",),
        ),
        ({"swap": True}, ("q and k are swapped",)),
        ({"rab_t": True}, ("rab is transposed",)),
    ],
)
def test_hstu_attention_named_mistakes(kw, fragments):
    fails_with(checks.check_hstu_attention, wrong_hstu(**kw), *fragments)


def test_hstu_attention_longest_length_when_it_is_not_the_pad_width():
    # the first case has longest length = pad width; with that mistake corrected there, the case with
    # padding past the longest sequence still separates the two
    def fn(q, k, v, lengths, n, rab=None, causal=True):
        longest = int(lengths.max())
        d = q.shape[1] if longest == q.shape[1] else longest
        return hstu(q, k, v, lengths, n, rab, causal, divisor=lambda *a: d)

    fails_with(checks.check_hstu_attention, fn, "wrong divisor")


def test_hstu_attention_in_place_edit_of_an_input():
    def fn(q, k, v, lengths, n, rab=None, causal=True):
        v.masked_fill_((torch.arange(q.shape[1])[None, :] >= lengths[:, None])[:, :, None, None], 0.0)
        return hstu(q, k, v, lengths, n, rab, causal)

    fails_with(checks.check_hstu_attention, fn, "modified its input `v` in place")


@pytest.mark.parametrize(
    "post, fragments",
    [
        (lambda out: out.half(), ("torch.float16", "half")),
        (lambda out: out.round().long(), ("dtype torch.int64",)),
        (lambda out: out.transpose(1, 2), ("wrong shape", "transpose")),
    ],
)
def test_hstu_attention_dtype_and_layout(post, fragments):
    fails_with(
        checks.check_hstu_attention,
        lambda q, k, v, lengths, n, rab=None, causal=True: post(hstu(q, k, v, lengths, n, rab, causal)),
        *fragments,
    )


def hstu_matmul_float32(q, k, v, lengths, n, rab=None, causal=True):
    """Correct, written differently: (B, H, N, d) layout, matmul, float32 inside, torch.where."""
    dtype = q.dtype
    qh, kh, vh = (t.float().permute(0, 2, 1, 3) for t in (q, k, v))  # (B, H, N, d)
    s = qh @ kh.transpose(-1, -2)  # (B, H, N, N)
    if rab is not None:
        s = s + rab.float().unsqueeze(1)
    a = torch.where(keep_mask(lengths, q.shape[1], causal), F.silu(s), torch.zeros(()))
    return ((a / n) @ vh).permute(0, 2, 1, 3).to(dtype)


def hstu_numpy(q, k, v, lengths, n, rab=None, causal=True):
    """Correct, in numpy, returning a numpy array (the check converts it)."""
    qn, kn, vn = (t.detach().numpy() for t in (q, k, v))
    s = np.einsum("bihd,bjhd->bhij", qn, kn)
    if rab is not None:
        s = s + rab.numpy()[:, None]
    keep = keep_mask(lengths, q.shape[1], causal).numpy()
    a = s / (1 + np.exp(-s)) * keep / n
    return np.einsum("bhij,bjhd->bihd", a, vn)


def test_hstu_attention_correct_variants_pass():
    passes(checks.check_hstu_attention, hstu)
    passes(checks.check_hstu_attention, hstu_matmul_float32)


def test_hstu_attention_numpy_inside_reaches_the_gradient_check():
    # numpy inside gives the right values, but no gradient: named, not a crash
    fails_with(checks.check_hstu_attention, hstu_numpy, "not a torch tensor", "numpy cuts the graph")


# ---- 02: softmax attention -------------------------------------------------------------------------------


def softmax_attn(q, k, v, lengths, causal=True, strict=False, dim=-1):
    s = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~keep_mask(lengths, q.shape[1], causal, strict), float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", torch.softmax(s, dim).nan_to_num(0.0), v)


def softmax_sdpa(q, k, v, lengths, causal=True):
    """Correct, with F.scaled_dot_product_attention (padded rows come out NaN: they are not compared)."""
    keep = keep_mask(lengths, q.shape[1], causal)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=keep
    )
    return out.transpose(1, 2)


def test_softmax_attention_correct_variants_pass():
    passes(checks.check_softmax_attention, softmax_sdpa)
    passes(
        checks.check_softmax_attention,
        lambda q, k, v, lengths, causal=True: softmax_attn(
            q.float(), k.float(), v.float(), lengths, causal
        ).double(),
    )


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (
            lambda q, k, v, lengths, causal=True: softmax_attn(q, k, v, lengths, causal, strict=True),
            ("the diagonal is missing",),
        ),
        (
            lambda q, k, v, lengths, causal=True: softmax_attn(q, k, v, lengths, causal, dim=-2),
            ("wrong axis",),
        ),
        (
            lambda q, k, v, lengths, causal=True: softmax_attn(k, q, v, lengths, causal),
            ("q and k are swapped",),
        ),
    ],
)
def test_softmax_attention_named_mistakes(fn, fragments):
    fails_with(checks.check_softmax_attention, fn, *fragments)


def test_softmax_attention_diagonal_dropped_without_nan_to_num_is_named():
    def fn(q, k, v, lengths, causal=True):
        s = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(q.shape[-1])
        s = s.masked_fill(~keep_mask(lengths, q.shape[1], causal, strict=True), float("-inf"))
        return torch.einsum("bhij,bjhd->bihd", torch.softmax(s, -1), v)  # row 0: all -inf -> NaN

    fails_with(checks.check_softmax_attention, fn, "NaN in the output at [b=0, i=0", "diagonal")


# ---- digits in the messages ------------------------------------------------------------------------------


def test_values_are_printed_with_enough_digits_to_differ():
    def ssm(query, positive_ids, negative_ids, item_table, temperature=0.05):
        q = F.normalize(query, dim=-1)
        p, n = F.normalize(item_table[positive_ids], dim=-1), F.normalize(item_table[negative_ids], dim=-1)
        neg = torch.einsum("md,mrd->mr", q, n).masked_fill(negative_ids == positive_ids[:, None], -math.inf)
        logits = torch.cat([(q * p).sum(-1, keepdim=True), neg], 1) / temperature
        return -torch.log_softmax(logits, 1)[:, 0].mean() * (1 + 3e-6)  # off in the 6th digit

    report = fails_with(checks.check_sampled_softmax_loss, ssm, "differs")
    expected, got = re.search(r"expected (\S+), got (\S+)", report).groups()
    assert expected != got.rstrip(","), report
    assert "difference" in report


# ---- 04: jagged -------------------------------------------------------------------------------------------


def j2p(values, offsets, max_len, padding_value=0.0):
    B = offsets.numel() - 1
    out = values.new_full((B, max_len) + tuple(values.shape[1:]), padding_value)
    for b in range(B):
        seq = values[offsets[b] : offsets[b + 1]][:max_len]
        out[b, : len(seq)] = seq
    return out


def j2p_ignoring_offsets(values, offsets, max_len, padding_value=0.0):
    B = offsets.numel() - 1
    lengths = offsets[1:] - offsets[:-1]
    out = values.new_full((B, max_len) + tuple(values.shape[1:]), padding_value)
    for b in range(B):
        # as if the sequences were max_len rows apart
        seq = values[b * max_len : b * max_len + min(int(lengths[b]), max_len)]
        out[b, : len(seq)] = seq
    return out


def j2p_nested(values, offsets, max_len, padding_value=0.0):
    """Correct, with torch.nested (pieces cut to max_len first)."""
    pieces = [values[offsets[b] : offsets[b + 1]][:max_len] for b in range(offsets.numel() - 1)]
    nt = torch.nested.as_nested_tensor(pieces, layout=torch.strided)
    return nt.to_padded_tensor(padding_value, (len(pieces), max_len, values.shape[1]))


def j2p_view_when_full(values, offsets, max_len, padding_value=0.0):
    lengths = offsets[1:] - offsets[:-1]
    if bool((lengths == max_len).all()):
        return values.view(len(lengths), max_len, -1)  # a view of the input
    return j2p(values, offsets, max_len, padding_value)


def j2p_in_place(values, offsets, max_len, padding_value=0.0):
    values.clamp_(-1.0, 1.0)  # "tidy" the input
    return j2p(values, offsets, max_len, padding_value)


@pytest.mark.parametrize(
    "fn, fragments",
    [
        (j2p_ignoring_offsets, ("the offsets were ignored", "values[offsets[b]:offsets[b+1]]")),
        (j2p_view_when_full, ("a view of the input `values`",)),
        (j2p_in_place, ("modified its input `values` in place",)),
        (lambda v, o, n, padding_value=0.0: j2p(v, o, n, padding_value).float(), ("torch.float32",)),
    ],
)
def test_jagged_to_padded_named_mistakes(fn, fragments):
    fails_with(checks.check_jagged_to_padded, fn, *fragments)


def test_jagged_to_padded_correct_variants_pass():
    passes(checks.check_jagged_to_padded, j2p)
    passes(checks.check_jagged_to_padded, j2p_nested)


def test_lengths_to_offsets_numpy_and_in_place():
    passes(checks.check_lengths_to_offsets, lambda lengths: np.concatenate([[0], np.cumsum(lengths.numpy())]))

    def in_place(lengths):
        lengths.cumsum_(0)
        return torch.cat([torch.zeros(1, dtype=torch.int64), lengths])

    fails_with(checks.check_lengths_to_offsets, in_place, "modified its input `lengths`")


def jagged(q, k, v, offsets, n, causal=True, *, strict=False, neg_inf=False, divisor=None):
    pieces = []
    for b in range(offsets.numel() - 1):
        s, e = int(offsets[b]), int(offsets[b + 1])
        if e == s:
            continue
        scores = torch.einsum("ihd,jhd->hij", q[s:e], k[s:e])  # (H, L, L)
        keep = torch.ones(e - s, e - s, dtype=torch.bool)
        if causal:
            keep = keep.tril(-1 if strict else 0)
        if neg_inf:
            a = F.silu(scores.masked_fill(~keep, float("-inf"))) / n
        else:
            a = F.silu(scores) * keep / (n if divisor is None else divisor(keep))
        pieces.append(torch.einsum("hij,jhd->ihd", a, v[s:e]))
    return torch.cat(pieces) if pieces else q.new_zeros(0, q.shape[1], v.shape[2])


@pytest.mark.parametrize(
    "kw, fragments",
    [
        ({"strict": True}, ("the diagonal is missing",)),
        ({"neg_inf": True}, ("NaN", "SiLU(-inf)")),
        (
            {"divisor": lambda keep: keep.sum(-1, keepdim=True).clamp(min=1)},
            ("number of keys it attends to",),
        ),
    ],
)
def test_jagged_hstu_attention_named_mistakes(kw, fragments):
    fails_with(
        checks.check_jagged_hstu_attention,
        lambda q, k, v, offsets, n, causal=True: jagged(q, k, v, offsets, n, causal, **kw),
        *fragments,
    )


def test_jagged_hstu_attention_via_padding_passes():
    from hstu_tutorial import ops

    def fn(q, k, v, offsets, n, causal=True):
        lengths = offsets[1:] - offsets[:-1]
        N = max(int(lengths.max()), 1)
        pad = lambda t: ops.jagged_to_padded(t.flatten(1), offsets, N).unflatten(-1, t.shape[1:])  # noqa: E731
        out = hstu(pad(q), pad(k), pad(v), lengths, n, causal=causal)  # (B, N, H, dv)
        values, _ = ops.dense_to_jagged(out.flatten(2), lengths)
        return values.unflatten(-1, out.shape[2:])

    passes(checks.check_jagged_hstu_attention, fn)


# ---- 06: HR@K, NDCG@K -------------------------------------------------------------------------------------


def hr_ndcg(scores, target_ids, history_ids, k, hit_rule=lambda r, k: r <= k, cutoff=True):
    s = scores.clone().double()
    t = s.gather(1, target_ids[:, None])
    seen = torch.zeros_like(s, dtype=torch.bool).scatter_(1, history_ids, True)
    seen[:, 0] = True
    rank = 1 + (s.masked_fill(seen, -math.inf) > t).sum(1).double()
    hit = hit_rule(rank, k) & ~seen.gather(1, target_ids[:, None])[:, 0]
    ndcg = 1.0 / torch.log2(rank + 1.0)
    return hit.double(), torch.where(hit, ndcg, 0.0) if cutoff else torch.where(
        seen.gather(1, target_ids[:, None])[:, 0], 0.0, ndcg
    )


@pytest.mark.parametrize(
    "kw, fragments",
    [
        ({"hit_rule": lambda r, k: r <= k + 1}, ("HR@K counts rank <= K", "rank K + 1")),
        ({"hit_rule": lambda r, k: r < k}, ("HR@K counts rank <= K", "rank < K")),
        ({"cutoff": False}, ("NDCG@K is 0 when rank > K",)),
    ],
)
def test_hr_ndcg_rank_boundaries(kw, fragments):
    fails_with(checks.check_hr_ndcg, lambda *a: hr_ndcg(*a, **kw), *fragments)


def test_hr_ndcg_message_quotes_the_user_that_differs():
    def fn(scores, target_ids, history_ids, k):
        hr, ndcg = hr_ndcg(scores, target_ids, history_ids, k)
        if len(hr) > 2:
            hr = hr.clone()
            hr[2] = 1.0 - hr[2]  # wrong for user 2 only
        return hr, ndcg

    report = fails_with(checks.check_hr_ndcg, fn, "user b=2: the target has rank")
    rank = int(re.search(r"user b=2: the target has rank (\d+)", report).group(1))
    assert rank >= 1


def test_hr_ndcg_mean_instead_of_per_user():
    fails_with(checks.check_hr_ndcg, lambda *a: tuple(x.mean() for x in hr_ndcg(*a)), "averaged over users")


def test_hr_ndcg_numpy_answer_passes():
    def fn(scores, target_ids, history_ids, k):
        s = scores.numpy().copy()
        rows = np.arange(len(s))
        t = s[rows, target_ids.numpy()]
        seen = np.zeros_like(s, dtype=bool)
        seen[rows[:, None], history_ids.numpy()] = True
        seen[:, 0] = True
        rank = 1 + (np.where(seen, -np.inf, s) > t[:, None]).sum(1)
        hit = (rank <= k) & ~seen[rows, target_ids.numpy()]
        return hit.astype(np.float64), np.where(hit, 1 / np.log2(rank + 1), 0.0)

    passes(checks.check_hr_ndcg, fn)


# ---- 01: data: inputs modified in place -----------------------------------------------------------------


def test_user_sequences_sorting_the_input_in_place():
    import pandas as pd

    def fn(df):
        df.sort_values(["user_id", "timestamp"], kind="stable", inplace=True)
        rows = [
            {
                "user_id": u,
                "sequence_item_ids": g["item_id"].tolist(),
                "sequence_ratings": g["rating"].tolist(),
                "sequence_timestamps": g["timestamp"].tolist(),
            }
            for u, g in df.groupby("user_id")
        ]
        return pd.DataFrame(rows)

    fails_with(checks.check_user_sequences, fn, "modified its input `ratings_df` in place")


def test_leave_one_out_popping_the_input_list():
    def fn(items, max_len, protocol="reference"):
        def ex(drop):
            return (items[: len(items) - drop][-max_len:], items[-drop]) if len(items) > drop else None

        out = {"test": ex(1), "valid": ex(2), "train": ex(2 if protocol == "reference" else 3)}
        items.pop()  # "done with the test item"
        return out

    fails_with(checks.check_leave_one_out, fn, "modified its input `items` in place")


# ---- 03: STU -----------------------------------------------------------------------------------------------


def test_stu_forward_in_place_residual():
    from hstu_tutorial import ops

    def fn(x, offsets, w_uvqk, w_o, b_o, num_heads, dqk, dv, n, rab=None):
        T, D = x.shape
        H = num_heads
        u, v, q, k = torch.split(
            F.silu(F.layer_norm(x, (D,), eps=1e-6) @ w_uvqk), [H * dv, H * dv, H * dqk, H * dqk], -1
        )
        av = ops.hstu_attention(
            q.reshape(T, H, dqk), k.reshape(T, H, dqk), v.reshape(T, H, dv), offsets, rab=rab, norm=n
        )
        o = u * F.layer_norm(av.reshape(T, H * dv), (H * dv,), eps=1e-6)
        x += o @ w_o.t() + b_o  # the residual, in place
        return x

    fails_with(checks.check_stu_forward, fn, "modified its input `x` in place")


def test_not_attempted_stubs_still_say_so():
    def stub(*a, **k):
        raise NotImplementedError

    for check in (
        checks.check_hstu_attention,
        checks.check_jagged_to_padded,
        checks.check_hr_ndcg,
        checks.check_user_sequences,
        checks.check_leave_one_out,
        checks.check_lengths_to_offsets,
    ):
        fails_with(check, stub, checks.NOT_ATTEMPTED)
