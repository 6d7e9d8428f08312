"""The exercise checks: each passes a correct solution and rejects known-wrong variants with the right
message; an unsolved stub reports "not attempted yet" without raising."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from check_helpers import _progress_file  # noqa: F401 (an autouse fixture)

from hstu_tutorial import checks, progress


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


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (softmax_variant(scale=1.0), ("wrong scale", "sqrt(dqk)")),
        (softmax_variant(causal=False), ("future position leaked",)),
        (softmax_variant(pad=False), ("padding position leaked",)),
        (softmax_variant(post=lambda out: out[:, :, 0]), ("wrong shape", "expected (3, 7, 1, 4)")),
        (softmax_variant(post=lambda out: out.detach()), ("does not require grad",)),
    ],
)
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


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (hstu_variant(divisor=lambda lengths: 1.0), "missing divisor n"),
        (hstu_variant(divisor=lambda lengths: lengths.max().item()), "longest length"),
        (hstu_variant(scale=0.5), "wrong scale"),
        (hstu_variant(causal=False), "future position leaked"),
        (hstu_variant(pad=False), "padding position leaked"),
        (hstu_variant(use_rab=False), "bias is missing"),
        (hstu_variant(rab_after=True), "after SiLU"),
        (hstu_variant(act=torch.relu), "ReLU"),
    ],
)
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


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (
            lambda d: torch.floor(torch.log10(d.abs().clamp(min=1).double()) / 0.301).long().clamp(0, 128),
            "log10",
        ),
        (
            lambda d: torch.floor(torch.log(d.abs().clamp(min=1).double()) / 0.301).long().clamp(min=0),
            "upper clamp",
        ),
        (
            lambda d: torch.round(torch.log(d.abs().clamp(min=1).double()) / 0.301).long().clamp(0, 128),
            "rounded",
        ),
        (lambda d: torch.floor(torch.log(d.clamp(min=1).double()) / 0.301).long().clamp(0, 128), "|d|"),
        (lambda d: torch.floor(torch.log(d.abs().clamp(min=1).double()) / 0.301).clamp(0, 128), "integers"),
        (lambda d: time_bucket(d).flatten(), "wrong shape"),
    ],
)
def test_time_bucket_wrong_variants(wrong, fragment):
    expect_fail(checks.check_time_bucket, wrong, fragment)


def test_check_never_raises_on_a_crashing_function():
    def crash(*a, **k):
        return 1 / 0

    ok, report = run(checks.check_time_bucket, crash)
    assert not ok and "ZeroDivisionError" in report


def test_a_crash_report_names_the_learners_line():
    def crash(d):
        x = d.float()
        return x[10**6]  # out of range

    ok, report = run(checks.check_time_bucket, crash)
    assert not ok and "IndexError" in report
    assert "(return x[10**6]  # out of range)" in report, report  # the learner's frame, not a check's


def test_every_check_of_every_module_is_exported_by_the_package():
    import importlib
    import pkgutil

    found = set()
    for info in pkgutil.iter_modules(checks.__path__):
        mod = importlib.import_module(f"hstu_tutorial.checks.{info.name}")
        found |= {
            n
            for n in vars(mod)
            if n.startswith("check_")
            and callable(getattr(mod, n))
            and getattr(mod, n).__module__ == mod.__name__
        }
    assert len(found) == 27 and found == {n for n in checks.__all__ if n.startswith("check_")}
    for name in checks.__all__:
        assert hasattr(checks, name), name
    from hstu_tutorial.checks import CheckFailed, ReferenceMissing, check_hstu_attention  # noqa: F401


def test_last_report_follows_every_check():
    checks.check_time_bucket(3)
    first = checks.last_report
    checks.check_lengths_to_offsets(4)
    assert "check_time_bucket" in first and "check_lengths_to_offsets" in checks.last_report


def test_passing_a_call_result_instead_of_a_function():
    ok, report = run(checks.check_time_bucket, 3)
    assert not ok and "expected a function" in report


# ---- 04 jagged ---------------------------------------------------------------------------------------


def offsets_ok(lengths):
    return torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])


def test_lengths_to_offsets():
    ok, report = run(checks.check_lengths_to_offsets, offsets_ok)
    assert ok, report
    expect_fail(checks.check_lengths_to_offsets, lambda l: l.cumsum(0), "cumsum(lengths)", "B+1")
    expect_fail(checks.check_lengths_to_offsets, lambda l: l.cumsum(0) - l, "start offsets")
    expect_fail(checks.check_lengths_to_offsets, lambda l: offsets_ok(l).int(), "dtype torch.int32")
    expect_fail(checks.check_lengths_to_offsets, lambda l: offsets_ok(l) + 1, "offsets[0] is 1")
    expect_fail(checks.check_lengths_to_offsets, stub, "not attempted yet")


def j2p(values, offsets, max_len, padding_value=0.0, keep="first", shift=0, pad_override=None):
    B = len(offsets) - 1
    pad = padding_value if pad_override is None else pad_override
    out = values.new_full((B, max_len) + tuple(values.shape[1:]), pad)
    for b in range(B):
        src = b + shift
        if src >= B:
            continue
        seq = values[offsets[src] : offsets[src + 1]]
        seq = seq[:max_len] if keep == "first" else seq[-max_len:] if len(seq) else seq
        out[b, : len(seq)] = seq
    return out


def test_jagged_to_padded():
    ok, report = run(checks.check_jagged_to_padded, j2p)
    assert ok, report


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (lambda v, o, n, padding_value=0.0: j2p(v, o, n, padding_value, pad_override=0.0), "padding_value"),
        (lambda v, o, n, padding_value=0.0: j2p(v, o, n, padding_value, keep="last"), "*last* max_len"),
        (lambda v, o, n, padding_value=0.0: j2p(v, o, n, padding_value, shift=1), "off-by-one"),
        (lambda v, o, n, padding_value=0.0: j2p(v, o, n + 1, padding_value), "wrong shape"),
        (lambda v, o, n, padding_value=0.0: j2p(v, o, n, padding_value).detach(), "does not require grad"),
    ],
)
def test_jagged_to_padded_wrong_variants(wrong, fragment):
    expect_fail(checks.check_jagged_to_padded, wrong, fragment)


def jagged_attn(q, k, v, offsets, n, causal=True, cross=False, scale=1.0):
    out = torch.zeros(q.shape[0], q.shape[1], v.shape[2], dtype=q.dtype)
    bounds = (
        [(0, q.shape[0])]
        if cross
        else [(int(offsets[b]), int(offsets[b + 1])) for b in range(len(offsets) - 1)]
    )
    outs = []
    for s, e in bounds:
        if e == s:
            continue
        qs, ks, vs = q[s:e], k[s:e], v[s:e]
        a = F.silu(torch.einsum("ihd,jhd->hij", qs, ks) * scale)
        if causal:
            a = a * torch.ones(e - s, e - s, dtype=torch.bool).tril()
        outs.append((s, e, torch.einsum("hij,jhd->ihd", a / n, vs)))
    if not outs:
        return out
    return torch.cat([o for _, _, o in outs]) if not cross else outs[0][2]


def test_jagged_hstu_attention():
    ok, report = run(checks.check_jagged_hstu_attention, jagged_attn)
    assert ok, report


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (
            lambda q, k, v, o, n, causal=True: jagged_attn(q, k, v, o, n, causal, cross=True),
            "sequence boundary",
        ),
        (lambda q, k, v, o, n, causal=True: jagged_attn(q, k, v, o, n, False), "future position leaked"),
        (lambda q, k, v, o, n, causal=True: jagged_attn(q, k, v, o, 1.0, causal), "missing divisor n"),
        (
            lambda q, k, v, o, n, causal=True: jagged_attn(q, k, v, o, n, causal, scale=q.shape[-1] ** -0.5),
            "wrong scale",
        ),
    ],
)
def test_jagged_hstu_attention_wrong_variants(wrong, fragment):
    expect_fail(checks.check_jagged_hstu_attention, wrong, fragment)


# ---- 01 data -------------------------------------------------------------------------------------------


def sequences(df, kind="stable", ascending=True, sort_users=True, by_time=True):
    if by_time:
        df = df.sort_values("timestamp", kind=kind, ascending=ascending)
    rows = []
    for u, g in df.groupby("user_id", sort=sort_users):
        rows.append(
            {
                "user_id": u,
                "sequence_item_ids": g["item_id"].tolist(),
                "sequence_ratings": g["rating"].tolist(),
                "sequence_timestamps": g["timestamp"].tolist(),
            }
        )
    import pandas as pd

    return pd.DataFrame(rows)


def test_user_sequences():
    ok, report = run(checks.check_user_sequences, sequences)
    assert ok, report


def _unstable(df):
    # ties reversed: what an unstable sort can do (deterministically here)
    df = df.iloc[::-1].sort_values("timestamp", kind="stable")
    return sequences(df)


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (_unstable, "stable sort"),
        (lambda df: sequences(df, ascending=False), "newest first"),
        (lambda df: sequences(df, sort_users=False).iloc[::-1], "not sorted by user_id"),
        (lambda df: sequences(df).drop(columns=["sequence_ratings"]), "missing column"),
        (lambda df: sequences(df, by_time=False), "not in time order"),
    ],
)
def test_user_sequences_wrong_variants(wrong, fragment):
    expect_fail(checks.check_user_sequences, wrong, fragment)


def loo(items, max_len, protocol="reference", leak=False, oldest=False, train_on_test=False, empty=None):
    def ex(drop):
        if len(items) - drop < 1:
            return empty
        hist = items[: len(items) - drop + (1 if leak else 0)]
        hist = hist[:max_len] if oldest else hist[-max_len:]
        return hist, items[-drop]

    train_drop = 1 if train_on_test else (2 if protocol == "reference" else 3)
    return {"test": ex(1), "valid": ex(2), "train": ex(train_drop)}


def test_leave_one_out():
    ok, report = run(checks.check_leave_one_out, loo)
    assert ok, report


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"leak": True}, "inside its own history"),
        ({"oldest": True}, "*oldest*"),
        ({"train_on_test": True}, "*test* item"),
        ({"empty": ([], 0)}, "return None"),
    ],
)
def test_leave_one_out_wrong_variants(kw, fragment):
    expect_fail(
        checks.check_leave_one_out,
        lambda items, max_len, protocol="reference": loo(items, max_len, protocol, **kw),
        fragment,
    )


def test_leave_one_out_validation_protocol_mistake():
    expect_fail(
        checks.check_leave_one_out,
        lambda items, max_len, protocol="reference": loo(items, max_len, "reference"),
        "hold out the valid item",
    )


# ---- 03 STU ---------------------------------------------------------------------------------------------


def stu(
    x,
    offsets,
    w_uvqk,
    w_o,
    b_o,
    num_heads,
    dqk,
    dv,
    n,
    rab=None,
    gate=True,
    ln_out=True,
    residual=True,
    order=("u", "v", "q", "k"),
):
    from hstu_tutorial import ops

    T, D = x.shape
    H = num_heads
    proj = F.silu(F.layer_norm(x, (D,), eps=1e-6) @ w_uvqk)
    sizes = {"u": H * dv, "v": H * dv, "q": H * dqk, "k": H * dqk}
    parts = dict(zip(order, torch.split(proj, [sizes[c] for c in order], -1)))
    av = ops.hstu_attention(
        parts["q"].reshape(T, H, dqk),
        parts["k"].reshape(T, H, dqk),
        parts["v"].reshape(T, H, dv),
        offsets,
        rab=rab,
        norm=n,
    ).reshape(T, H * dv)
    if ln_out:
        av = F.layer_norm(av, (H * dv,), eps=1e-6)
    o = parts["u"] * av if gate else av
    y = o @ w_o.t() + b_o
    return x + y if residual else y


def test_stu_forward():
    ok, report = run(checks.check_stu_forward, stu)
    assert ok, report


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"gate": False}, "gate is missing"),
        ({"ln_out": False}, "LayerNorm of A v is missing"),
        ({"residual": False}, "residual is missing"),
        ({"order": ("q", "k", "v", "u")}, "split order"),
    ],
)
def test_stu_forward_wrong_variants(kw, fragment):
    expect_fail(checks.check_stu_forward, lambda *a, **k: stu(*a, **k, **kw), fragment)


# ---- 06 training ----------------------------------------------------------------------------------------


def ssm(
    query,
    positive_ids,
    negative_ids,
    item_table,
    temperature=0.05,
    normalize=True,
    mask=True,
    reduce="mean",
    temp_mul=False,
):
    q, p, n = query, item_table[positive_ids], item_table[negative_ids]
    if normalize:
        q, p, n = F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(n, dim=-1)
    pos = (q * p).sum(-1, keepdim=True)
    neg = torch.einsum("md,mrd->mr", q, n)
    if mask:
        neg = neg.masked_fill(negative_ids == positive_ids[:, None], float("-inf"))
    logits = torch.cat([pos, neg], 1)
    logits = logits * temperature if temp_mul else logits / temperature
    loss = -torch.log_softmax(logits, 1)[:, 0]
    return loss.sum() if reduce == "sum" else loss.mean() if reduce == "mean" else loss


def test_sampled_softmax_loss():
    ok, report = run(checks.check_sampled_softmax_loss, ssm)
    assert ok, report


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"normalize": False}, "not L2-normalised"),
        ({"mask": False}, "accidental hits"),
        ({"reduce": "sum"}, "summed"),
        ({"reduce": None}, "one loss per row"),
        ({"temp_mul": True}, "multiplies"),
    ],
)
def test_sampled_softmax_loss_wrong_variants(kw, fragment):
    expect_fail(checks.check_sampled_softmax_loss, lambda *a, **k: ssm(*a, **k, **kw), fragment)


def hr_ndcg(
    scores,
    target_ids,
    history_ids,
    k,
    filter_seen=True,
    ge=False,
    log=torch.log2,
    plus=1.0,
    include_pad=False,
):
    s = scores.clone().double()
    if not include_pad:
        s[:, 0] = float("-inf")
    seen = torch.zeros_like(s, dtype=torch.bool).scatter_(1, history_ids, True)
    seen[:, 0] = False
    if filter_seen:
        s = s.masked_fill(seen, float("-inf"))
    t = scores.double().gather(1, target_ids[:, None])
    rank = 1 + ((s >= t).sum(1) - 1 if ge else (s > t).sum(1)).double()
    if filter_seen:
        rank = torch.where(seen.gather(1, target_ids[:, None])[:, 0], torch.full_like(rank, 1e9), rank)
    hit = (rank <= k).double()
    return hit, hit / log(rank + plus)


def test_hr_ndcg():
    ok, report = run(checks.check_hr_ndcg, hr_ndcg)
    assert ok, report


@pytest.mark.parametrize(
    "kw, fragment",
    [
        ({"filter_seen": False}, "not removed"),
        ({"ge": True}, "strictly"),
        ({"log": torch.log}, "log2"),
        ({"plus": 2.0}, "off by one"),
        ({"include_pad": True}, "padding column 0"),
    ],
)
def test_hr_ndcg_wrong_variants(kw, fragment):
    expect_fail(checks.check_hr_ndcg, lambda *a, **k: hr_ndcg(*a, **k, **kw), fragment)


# ---- 07 project -------------------------------------------------------------------------------------------


def read_u_data(path, header=None, names=("user_id", "item_id", "rating", "timestamp"), dtype="int64"):
    import pandas as pd

    return pd.read_csv(path, sep="\t", header=header, names=list(names) if names else None, dtype=dtype)


def test_ratings_table():
    ok, report = run(checks.check_ratings_table, read_u_data)
    assert ok, report


@pytest.mark.parametrize(
    "wrong, fragment",
    [
        (lambda p: read_u_data(p).sort_values(["user_id", "timestamp"]), "keep the file order"),
        (
            lambda p: read_u_data(p, names=("item_id", "user_id", "rating", "timestamp"))[
                ["user_id", "item_id", "rating", "timestamp"]
            ],
            "swapped",
        ),
        (lambda p: read_u_data(p, dtype="float64"), "dtype float64"),
        (lambda p: read_u_data(p).iloc[1:], "no header"),
        (lambda p: read_u_data(p).rename(columns={"item_id": "movie_id"}), "expected the columns"),
    ],
)
def test_ratings_table_wrong_variants(wrong, fragment):
    expect_fail(checks.check_ratings_table, wrong, fragment)


def test_project_results_refuses_hand_typed_metrics():
    # the earlier call, check_project_results({name: metrics}, baseline_metrics), could be fooled by typed
    # numbers: it is refused with the new call to make (runs are checked in tests/test_checks_analysis.py)
    good = {"HSTU": {"hr@10": 0.3, "ndcg@10": 0.15}, "SASRec": {"hr@10": 0.25, "ndcg@10": 0.12}}
    expect_fail(
        lambda _: checks.check_project_results(good, {"hr@10": 0.1, "ndcg@10": 0.05}),
        None,
        "numbers alone cannot be checked",
        "check_project_results(run, dataset)",
    )
    assert not progress.is_done("advanced.new_dataset")
    expect_fail(lambda _: checks.check_project_results({}), None, "expected a run")
