"""HSTU / softmax attention and the relative attention bias against explicit per-sequence loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from hstu_tutorial.ops import (
    RelativeAttentionBias,
    fused_softmax_attention,
    hstu_attention,
    jagged_to_padded,
    lengths_to_offsets,
    padded_hstu_attention,
    padded_softmax_attention,
    softmax_attention,
    time_bucket,
)
from hstu_tutorial.ops.hstu_attention import table_lookup

DT = torch.float64


def naive_hstu(q, k, v, lengths, rab=None, alpha=1.0, norm=None, causal=True):
    """One sequence at a time, one query row at a time: the formula as written."""
    n = max(lengths) if norm is None else norm
    outs, start = [], 0
    for b, L in enumerate(lengths):
        for i in range(L):
            row = []
            for h in range(q.shape[1]):
                acc = torch.zeros(v.shape[-1], dtype=v.dtype)
                for j in range(L if not causal else i + 1):
                    s = alpha * (q[start + i, h] * k[start + j, h]).sum()
                    if rab is not None:
                        s = s + (rab[b, i, j] if rab.dim() == 3 else rab[b, h, i, j])
                    acc = acc + F.silu(s) / n * v[start + j, h]
                row.append(acc)
            outs.append(torch.stack(row))
        start += L
    return torch.stack(outs)  # (T, H, dv)


def naive_softmax(q, k, v, lengths, causal=True, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    outs, start = [], 0
    for L in lengths:
        qb, kb, vb = (t[start : start + L].transpose(0, 1) for t in (q, k, v))  # (H, L, d)
        s = qb @ kb.transpose(1, 2) * scale  # (H, L, L)
        if causal:
            s = s.masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1), float("-inf"))
        outs.append((torch.softmax(s, -1) @ vb).transpose(0, 1))  # (L, H, dv)
        start += L
    return torch.cat(outs)


def make_inputs(lengths, H, dqk, dv, seed=0, rab_kind=None, pad_extra=2):
    g = torch.Generator().manual_seed(seed)
    T, B, N = sum(lengths), len(lengths), max(lengths) + pad_extra
    q = torch.randn(T, H, dqk, generator=g, dtype=DT)
    k = torch.randn(T, H, dqk, generator=g, dtype=DT)
    v = torch.randn(T, H, dv, generator=g, dtype=DT)
    rab = None
    if rab_kind == "shared":
        rab = torch.randn(B, N, N, generator=g, dtype=DT)
    elif rab_kind == "per_head":
        rab = torch.randn(B, H, N, N, generator=g, dtype=DT)
    return q, k, v, lengths_to_offsets(torch.tensor(lengths)), rab


CASES = [
    # (lengths, H, dqk, dv)
    ([1], 1, 4, 4),
    ([3, 1, 5], 2, 4, 3),
    ([5, 5], 3, 2, 5),  # every sequence at the maximum
    ([1, 4, 1, 2], 1, 3, 2),
]


@pytest.mark.parametrize("lengths,H,dqk,dv", CASES)
@pytest.mark.parametrize("rab_kind", [None, "shared", "per_head"])
@pytest.mark.parametrize("causal", [True, False])
def test_hstu_attention_matches_loop_forward_and_grad(lengths, H, dqk, dv, rab_kind, causal):
    q, k, v, offsets, rab = make_inputs(lengths, H, dqk, dv, rab_kind=rab_kind)
    tensors = [t.requires_grad_() for t in (q, k, v) + ((rab,) if rab is not None else ())]
    kw = dict(alpha=0.7, causal=causal)
    out = hstu_attention(q, k, v, offsets, rab=rab, **kw)
    want = naive_hstu(q, k, v, lengths, rab=rab, **kw)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-8)
    w = torch.randn_like(out)
    g1 = torch.autograd.grad((out * w).sum(), tensors)
    g2 = torch.autograd.grad((want * w).sum(), tensors)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-8)


def test_hstu_attention_norm_default_and_explicit():
    q, k, v, offsets, _ = make_inputs([2, 4], 1, 3, 3)
    out_default = hstu_attention(q, k, v, offsets)
    torch.testing.assert_close(out_default, naive_hstu(q, k, v, [2, 4], norm=4), rtol=0, atol=1e-10)
    out_211 = hstu_attention(q, k, v, offsets, norm=211)
    torch.testing.assert_close(out_211 * 211, out_default * 4, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rab_kind", [None, "shared", "per_head"])
@pytest.mark.parametrize("causal", [True, False])
def test_hstu_attention_gradcheck(rab_kind, causal):
    q, k, v, offsets, rab = make_inputs([2, 1, 3], 2, 2, 3, rab_kind=rab_kind, pad_extra=0)
    args = (q, k, v) + ((rab,) if rab is not None else ())
    for t in args:
        t.requires_grad_()

    def f(q, k, v, rab=None):
        return hstu_attention(q, k, v, offsets, rab=rab, alpha=1.3, norm=3.0, causal=causal)

    assert torch.autograd.gradcheck(f, args)


@pytest.mark.parametrize("lengths,H,dqk,dv", CASES)
def test_padded_equals_jagged(lengths, H, dqk, dv):
    q, k, v, offsets, rab = make_inputs(lengths, H, dqk, dv, rab_kind="shared", pad_extra=3)
    N = max(lengths) + 3
    lt = torch.tensor(lengths)
    out_p, attn = padded_hstu_attention(
        *(jagged_to_padded(t, offsets, N) for t in (q, k, v)), lt, rab=rab, norm=7.0, return_attention=True
    )  # (B, N, H, dv)
    out_j = hstu_attention(q, k, v, offsets, rab=rab, norm=7.0)
    torch.testing.assert_close(out_p, jagged_to_padded(out_j, offsets, N), rtol=0, atol=1e-12)
    assert attn.shape == (len(lengths), H, N, N)
    for b, L in enumerate(lengths):  # padding rows and columns carry no attention
        assert attn[b, :, L:, :].abs().max() == 0 and attn[b, :, :, L:].abs().max() == 0
        assert attn[b].triu(1).abs().max() == 0  # causal


@pytest.mark.parametrize("lengths,H,dqk,dv", CASES)
@pytest.mark.parametrize("causal", [True, False])
def test_softmax_attention_matches_loop(lengths, H, dqk, dv, causal):
    q, k, v, offsets, _ = make_inputs(lengths, H, dqk, dv, seed=4)
    for t in (q, k, v):
        t.requires_grad_()
    out = softmax_attention(q, k, v, offsets, causal=causal)
    want = naive_softmax(q, k, v, lengths, causal=causal)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    g1 = torch.autograd.grad(out.sum(), (q, k, v))
    g2 = torch.autograd.grad(want.sum(), (q, k, v))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_softmax_attention_gradcheck_and_padding_rows():
    q, k, v, offsets, _ = make_inputs([2, 3], 2, 3, 2, pad_extra=0)
    for t in (q, k, v):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda q, k, v: softmax_attention(q, k, v, offsets, scale=0.5), (q, k, v))
    padded = [jagged_to_padded(t, offsets, 5) for t in (q, k, v)]  # (B, 5, H, d)
    out = padded_softmax_attention(*padded, torch.tensor([2, 3]))
    assert torch.isfinite(out).all() and out[0, 2:].abs().max() == 0


@pytest.mark.parametrize("heads,dqk,dv", [(1, 5, 5), (2, 8, 3), (3, 4, 12)])
def test_fused_softmax_attention_matches_spelled_out(heads, dqk, dv):
    """SDPA path (head widths padded to 8 inside) = the explicit padded path, forward and backward."""
    torch.manual_seed(heads + dqk)
    B, N = 4, 7
    lengths = torch.tensor([7, 3, 1, 0])
    q, k = (torch.randn(B, N, heads, dqk, dtype=DT, requires_grad=True) for _ in range(2))
    v = torch.randn(B, N, heads, dv, dtype=DT, requires_grad=True)
    want = padded_softmax_attention(q, k, v, lengths)
    got = fused_softmax_attention(q, k, v, lengths)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert got[1, 3:].abs().max() == 0 and got[3].abs().max() == 0  # padding rows are zeros
    grad = torch.randn_like(want)
    g_want = torch.autograd.grad((want * grad).sum(), (q, k, v))
    g_got = torch.autograd.grad((got * grad).sum(), (q, k, v))
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_fused_softmax_attention_dropout_keeps_expectation():
    """With dropout the output is random but unbiased: the mean over many draws approaches no-dropout."""
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 6, 1, 4) for _ in range(3))
    lengths = torch.tensor([6])
    clean = fused_softmax_attention(q, k, v, lengths)
    draws = torch.stack([fused_softmax_attention(q, k, v, lengths, dropout=0.5) for _ in range(4000)])
    assert not torch.equal(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), clean, rtol=0, atol=0.06)


def test_softmax_attention_matches_torch_nested_sdpa():
    """Non-causal: torch's scaled_dot_product_attention on a jagged-layout nested tensor agrees."""
    q, k, v, offsets, _ = make_inputs([3, 1, 4], 2, 4, 4, seed=5)
    q, k, v = (t.float() for t in (q, k, v))
    nj = lambda t: torch.nested.nested_tensor_from_jagged(t, offsets, max_seqlen=4).transpose(1, 2)
    want = F.scaled_dot_product_attention(nj(q), nj(k), nj(v)).transpose(1, 2).values()
    torch.testing.assert_close(softmax_attention(q, k, v, offsets, causal=False), want, rtol=1e-5, atol=1e-5)


def test_time_bucket_formula():
    d = torch.tensor([0, 1, -1, 2, 3, -10, 60, 3600, 86400, 10**8, -(10**12)])
    want = [min(128, max(0, math.floor(math.log(max(abs(int(x)), 1)) / 0.301))) for x in d]
    assert time_bucket(d).tolist() == want
    assert time_bucket(torch.tensor([10**18])).item() == 128  # clamped at num_buckets
    assert time_bucket(torch.tensor([1000]), num_buckets=5).item() == 5


def naive_rab(module, ts, ts_next):
    """rab[b,i,j] = pos_w[L-1 + j - i] + ts_w[bucket(t_next[b,i] - t[b,j])], with explicit loops."""
    B, N = ts.shape
    L = module.max_len
    out = torch.zeros(B, N, N, dtype=module.pos_w.dtype)
    for b in range(B):
        for i in range(N):
            for j in range(N):
                gap = int(ts_next[b, i]) - int(ts[b, j])
                bucket = min(module.num_buckets, max(0, math.floor(math.log(max(abs(gap), 1)) / 0.301)))
                out[b, i, j] = module.pos_w[L - 1 + j - i] + module.ts_w[bucket]
    return out


@pytest.mark.parametrize("N,L", [(4, 4), (3, 7), (1, 5)])
def test_relative_attention_bias_matches_loops(N, L):
    torch.manual_seed(0)
    module = RelativeAttentionBias(max_len=L, num_buckets=20).double()
    assert module.pos_w.shape == (2 * L - 1,) and module.ts_w.shape == (21,)
    g = torch.Generator().manual_seed(6)
    ts = torch.cumsum(torch.randint(0, 5000, (2, N), generator=g), dim=1)
    ts_next = ts + torch.randint(0, 5000, (2, N), generator=g)
    torch.testing.assert_close(module(ts, ts_next), naive_rab(module, ts, ts_next), rtol=0, atol=0)


def test_relative_attention_bias_init_jagged_and_errors():
    torch.manual_seed(0)
    module = RelativeAttentionBias()  # ML-1M: 211 positions, 128 buckets
    assert module.pos_w.numel() == 421 and module.ts_w.numel() == 129
    assert 0.015 < module.pos_w.std().item() < 0.025
    offsets = lengths_to_offsets(torch.tensor([2, 3]))
    ts = torch.tensor([10, 20, 5, 50, 500])
    nts = torch.tensor([20, 90, 50, 500, 900])
    padded = module.jagged(ts, nts, offsets, max_len=4)
    assert padded.shape == (2, 4, 4)
    want = module(jagged_to_padded(ts, offsets, 4), jagged_to_padded(nts, offsets, 4))
    torch.testing.assert_close(padded, want)
    with pytest.raises(ValueError, match="max_len"):
        zeros = torch.zeros(1, 4, dtype=torch.long)
        RelativeAttentionBias(max_len=3)(zeros, zeros)
    # the bias is differentiable in both tables
    padded.sum().backward()
    assert module.pos_w.grad is not None and module.ts_w.grad is not None


def test_errors_speak_to_a_learner():
    q, k, v, offsets, _ = make_inputs([2, 2], 1, 3, 3)
    with pytest.raises(ValueError, match=r"\(T, H, d\)"):
        hstu_attention(q[:, 0], k[:, 0], v[:, 0], offsets)
    with pytest.raises(ValueError, match="rab"):
        hstu_attention(q, k, v, offsets, rab=torch.zeros(2, 1, 1, dtype=DT))


@pytest.mark.parametrize("shape", [(3, 4, 4), (5, 5), (7,)])
def test_table_lookup_matches_indexing(shape):
    g = torch.Generator().manual_seed(7)
    table = torch.randn(9, dtype=DT, generator=g, requires_grad=True)
    index = torch.randint(0, 9, shape, generator=g)
    out = table_lookup(table, index)
    torch.testing.assert_close(out, table[index])
    w = torch.randn(shape, dtype=DT, generator=g)
    (grad,) = torch.autograd.grad((out * w).sum(), table)
    (want,) = torch.autograd.grad((table[index] * w).sum(), table)
    torch.testing.assert_close(grad, want, rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: table_lookup(t, index), (table,))
