"""Evaluation's shortcut: the last block computed for each history's last position only.

`query_embeddings(batch)` must equal `last_embeddings(forward(batch), batch)` for every encoder setting
(ablation switches, heads, widths, pad widths, one-item histories), in values and in gradients, and
`metrics.batch_ranks` must give the same ranks with it as with the full forward.
"""

import pytest
import torch

from hstu_tutorial.metrics import batch_ranks
from hstu_tutorial.modules import hstu_encoder, sasrec_encoder
from hstu_tutorial.ops.hstu_attention import (
    RelativeAttentionBias,
    last_query_attention,
    padded_hstu_attention,
    padded_softmax_attention,
)
from hstu_tutorial.ops.jagged_tensors import jagged_to_padded, next_timestamps
from hstu_tutorial.perf import random_jagged_batch

DT = torch.float64
LENGTHS = [[3, 1, 6, 2], [6], [1, 1], [5, 6, 4, 1, 2, 6, 3]]


def batch_of(lengths, seed=0, max_len=6):
    return random_jagged_batch(lengths, max_len, 30, seed=seed, wide_time_gaps=True)


def full_path(model, batch, pad_width=None):
    return model.last_embeddings(model(batch, pad_width=pad_width), batch)  # (B, D)


HSTU_SWITCHES = [
    {},
    {"use_rab": False},
    {"use_time_bias": False},
    {"use_pos_bias": False},
    {"use_gate": False},
    {"attention_activation": "softmax"},
    {"use_gate": False, "use_time_bias": False, "attention_activation": "softmax"},
]


@pytest.mark.parametrize(
    "switches", HSTU_SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "hstu"
)
@pytest.mark.parametrize("heads", [(1, 5, 5), (2, 3, 4)])
def test_hstu_query_embeddings_equal_full_forward(switches, heads):
    H, dqk, dv = heads
    torch.manual_seed(len(switches) + H)
    model = hstu_encoder(
        30, embedding_dim=8, num_blocks=3, num_heads=H, dqk=dqk, dv=dv, max_seq_len=6, dropout=0.2, **switches
    )
    model = model.double().eval()
    for seed, lengths in enumerate(LENGTHS):
        batch = batch_of(lengths, seed)
        want = full_path(model, batch)
        got = model.query_embeddings(batch)
        assert got.shape == (len(lengths), 8)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        # a wider pad (what a CUDA-graph batch uses) gives the same numbers
        torch.testing.assert_close(model.query_embeddings(batch, pad_width=9), want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("attention_impl", ["sdpa", "pytorch"])
@pytest.mark.parametrize("heads", [1, 2])
def test_sasrec_query_embeddings_equal_full_forward(attention_impl, heads):
    torch.manual_seed(heads)
    model = sasrec_encoder(
        30,
        embedding_dim=8,
        num_blocks=3,
        num_heads=heads,
        ffn_hidden=6,
        max_seq_len=6,
        attention_impl=attention_impl,
    )
    model = model.double().eval()
    for seed, lengths in enumerate(LENGTHS):
        batch = batch_of(lengths, seed)
        got = model.query_embeddings(batch)
        torch.testing.assert_close(got, full_path(model, batch), rtol=0, atol=1e-12)
        torch.testing.assert_close(model.query_embeddings(batch, pad_width=8), got, rtol=0, atol=1e-12)


def test_sasrec_bf16_query_embeddings_close_to_full_forward():
    """With attention_impl="sdpa-bf16" the last block's query-only attention runs in full precision, the full
    forward on bf16 copies of q, k, v: the two agree to bf16's precision."""
    torch.manual_seed(3)
    model = sasrec_encoder(
        30, embedding_dim=16, num_blocks=2, ffn_hidden=6, max_seq_len=6, attention_impl="sdpa-bf16"
    )
    model = model.eval()
    for seed, lengths in enumerate(LENGTHS):
        batch = batch_of(lengths, seed)
        got, want = model.query_embeddings(batch), full_path(model, batch)
        assert ((got - want).norm() / want.norm()).item() < 1e-2


@pytest.mark.parametrize("factory", [hstu_encoder, sasrec_encoder])
def test_query_embeddings_gradients_equal_full_forward(factory):
    """Training mode without dropout: the same loss gives the same gradient on every parameter."""
    torch.manual_seed(5)
    model = factory(30, embedding_dim=8, num_blocks=2, max_seq_len=6, dropout=0.0).double().train()
    batch = batch_of([3, 1, 6, 2, 5], seed=5)
    target = torch.randn(5, 8, dtype=DT)
    grads = []
    for fn in (full_path, lambda m, b: m.query_embeddings(b)):
        model.zero_grad()
        (fn(model, batch) * target).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-12, msg=name)


@pytest.mark.parametrize("factory", [hstu_encoder, sasrec_encoder])
def test_batch_ranks_use_query_embeddings_with_the_same_ranks(factory):
    torch.manual_seed(7)
    model = factory(30, embedding_dim=8, num_blocks=2, max_seq_len=6).double().train()
    batches = [batch_of(lengths, seed) for seed, lengths in enumerate(LENGTHS)]
    calls = []
    original = model.query_embeddings
    model.query_embeddings = lambda batch: calls.append(1) or original(batch)
    catalogue = torch.arange(1, 31)
    ranks = batch_ranks(model, batches, catalogue, 30)
    assert len(calls) == len(batches)  # the shortcut is what ran
    want = batch_ranks(model, batches, catalogue, 30, forward=model)  # every position, then the last
    assert torch.equal(ranks, want)
    assert model.training  # the training mode is restored


def test_bias_query_row_is_a_row_of_the_full_bias():
    torch.manual_seed(0)
    batch = batch_of([3, 1, 6, 2], seed=3)
    N = 6
    ts = jagged_to_padded(batch.timestamps, batch.offsets, N)  # (B, N)
    nts_jagged = next_timestamps(batch)
    nts = jagged_to_padded(nts_jagged, batch.offsets, N)  # (B, N)
    for use_pos, use_time in ((True, True), (True, False), (False, True)):
        rab = RelativeAttentionBias(17, use_pos=use_pos, use_time=use_time).double()
        full = rab.from_buckets(rab.buckets(ts, nts))  # (B, N, N)
        for i in range(N):  # any query position, not only the last
            pos = torch.full((4,), i)
            got = rab.query_row(pos, N, ts, nts[:, i])
            torch.testing.assert_close(got, full[:, i], rtol=0, atol=0)
    with pytest.raises(ValueError, match="max_len"):
        RelativeAttentionBias(5).query_row(torch.zeros(1, dtype=torch.long), 6, ts[:1], nts[:1, 0])
    with pytest.raises(ValueError, match="timestamps"):
        RelativeAttentionBias(17).query_row(torch.zeros(1, dtype=torch.long), 6)


@pytest.mark.parametrize("activation", ["silu", "softmax"])
def test_last_query_attention_is_the_last_row_of_the_padded_attention(activation):
    torch.manual_seed(1)
    B, N, H, dqk, dv = 5, 7, 2, 3, 4
    lengths = torch.tensor([7, 1, 4, 2, 5])
    q, k = torch.randn(B, N, H, dqk, dtype=DT), torch.randn(B, N, H, dqk, dtype=DT)
    v = torch.randn(B, N, H, dv, dtype=DT)
    rab = torch.randn(B, N, N, dtype=DT)
    rows = lengths - 1
    ar = torch.arange(B)
    full = padded_hstu_attention(q, k, v, lengths, rab=rab, norm=3.0, activation=activation)  # (B, N, H, dv)
    got = last_query_attention(q[ar, rows], k, v, lengths, rab=rab[ar, rows], norm=3.0, activation=activation)
    torch.testing.assert_close(got, full[ar, rows], rtol=0, atol=1e-12)
    # norm None: the batch's longest history, as the padded attention
    full = padded_hstu_attention(q, k, v, lengths)
    torch.testing.assert_close(
        last_query_attention(q[ar, rows], k, v, lengths), full[ar, rows], rtol=0, atol=1e-12
    )
    soft = padded_softmax_attention(q, k, v, lengths)
    got = last_query_attention(q[ar, rows], k, v, lengths, activation="softmax")
    torch.testing.assert_close(got, soft[ar, rows], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="q must be"):
        last_query_attention(q, k, v, lengths)
    with pytest.raises(ValueError, match="activation"):
        last_query_attention(q[ar, rows], k, v, lengths, activation="relu")


def test_hstu_query_embeddings_match_the_triton_forward():
    """The Triton kernel forms the bias in-kernel; the shortcut forms the last row in PyTorch: same numbers."""
    sizes = dict(embedding_dim=16, num_blocks=2, num_heads=2, dqk=8, dv=8, max_seq_len=6)
    torch.manual_seed(11)
    plain = hstu_encoder(30, **sizes).eval()
    triton = hstu_encoder(30, attention_impl="triton", **sizes).eval()
    triton.load_state_dict(plain.state_dict())
    batch = batch_of([3, 1, 6, 2, 5], seed=11)
    want = full_path(triton, batch)  # the Triton kernel in every block
    torch.testing.assert_close(full_path(plain, batch), want, rtol=0, atol=2e-5)
    torch.testing.assert_close(triton.query_embeddings(batch), want, rtol=0, atol=2e-5)
