"""The one-gather dense sampled softmax equals the gather reference and the two-gather formula it replaced."""

import pytest
import torch
from test_losses import _setup

from hstu_tutorial.losses import (
    bce_loss,
    catalogue_index,
    full_softmax_loss,
    l2_normalize,
    sampled_softmax_loss,
)

torch.set_num_threads(2)


def _case(M=11, D=6, R=9, seed=0):
    """test_losses' case (same draws), with repeated accidental hits, one repeated column and zero weights."""
    catalogue, table, query, positives, negatives = _setup(M, D, R, seed)
    negatives[0, :3] = catalogue_index(catalogue, positives[0])  # accidental hits, repeated
    negatives[1, 4:] = 2  # one column drawn five times (8 items, 9 draws: duplicates elsewhere too)
    weights = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1], dtype=torch.float64)[:M]
    return catalogue, table, query, positives, negatives, weights


def _two_gathers(query, positives, embed, catalogue, negatives, tau, weights):
    """The former dense formula: (M, C) scores, one gather for the positive and one for the negatives."""
    query = l2_normalize(query)  # (M, D)
    pos_index = torch.searchsorted(catalogue, positives).clamp(max=catalogue.numel() - 1)  # (M,)
    items = l2_normalize(embed(catalogue))  # (C, D)
    scores = query @ items.t()  # (M, C)
    pos_logits = scores.gather(1, pos_index[:, None])  # (M, 1)
    neg_logits = scores.gather(1, negatives)  # (M, R)
    neg_logits = neg_logits.masked_fill(negatives == pos_index[:, None], float("-inf"))  # (M, R)
    logits = torch.cat([pos_logits, neg_logits], dim=1) / tau  # (M, 1 + R)
    per_position = -torch.log_softmax(logits, dim=1)[:, 0]  # (M,)
    return (per_position * weights).sum() / weights.sum().clamp(min=1.0)


def _normalised_embed(table):
    """What the encoders pass: unit vectors, flagged so that the loss does not normalise them again."""

    def embed(ids):
        return l2_normalize(table[ids])

    embed.l2_normalized = True
    return embed


@pytest.mark.parametrize("tau", [0.05, 0.7])
@pytest.mark.parametrize("flagged", [False, True])
def test_dense_equals_gather_and_two_gathers(tau, flagged):
    catalogue, table, query, positives, negatives, weights = _case()
    embed = _normalised_embed(table) if flagged else (lambda ids: table[ids])
    results = []
    for impl in ("dense", "gather", "two gathers"):
        if impl == "two gathers":
            loss = _two_gathers(query, positives, lambda ids: table[ids], catalogue, negatives, tau, weights)
        else:
            loss = sampled_softmax_loss(
                query,
                positives,
                embed,
                catalogue,
                temperature=tau,
                negatives=negatives,
                weights=weights,
                impl=impl,
            )
        results.append((loss, *torch.autograd.grad(loss, (query, table))))
    dense, gather, old = results
    for want in (gather, old):
        for a, b in zip(dense, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert dense[1][1].abs().max() == 0 and dense[1][4].abs().max() == 0  # weight-0 rows: no gradient
    assert torch.isfinite(dense[1]).all() and torch.isfinite(dense[2]).all()  # -inf hits stay out of grads


def test_dense_gradcheck_with_hits_and_duplicates():
    catalogue, table, query, positives, negatives, weights = _case(M=5, D=3, R=6, seed=3)

    def loss(q, t):
        return sampled_softmax_loss(
            q,
            positives,
            lambda ids: t[ids],
            catalogue,
            temperature=0.3,
            negatives=negatives,
            weights=weights,
            impl="dense",
        )

    assert torch.autograd.gradcheck(loss, (query, table))


def test_dense_only_query_or_only_table_needs_grad():
    catalogue, table, query, positives, negatives, _ = _case()
    kw = dict(temperature=0.1, negatives=negatives, impl="dense")
    ref = torch.autograd.grad(
        sampled_softmax_loss(query, positives, lambda i: table[i], catalogue, **kw), query
    )[0]
    frozen = table.detach()
    got = torch.autograd.grad(
        sampled_softmax_loss(query, positives, lambda i: frozen[i], catalogue, **kw), query
    )
    torch.testing.assert_close(got[0], ref)
    with torch.no_grad():
        value = sampled_softmax_loss(query, positives, lambda i: table[i], catalogue, **kw)
    assert torch.isfinite(value)


def test_catalogue_index_is_searchsorted_clamped():
    catalogue = torch.tensor([2, 3, 5, 8, 20])
    ids = torch.tensor([[0, 2, 3, 4], [5, 8, 20, 21]])  # padding 0, gaps, the last item, past the end
    want = torch.searchsorted(catalogue, ids).clamp(max=catalogue.numel() - 1)
    assert torch.equal(catalogue_index(catalogue, ids), want)
    assert torch.equal(
        catalogue_index(torch.tensor([7]), torch.tensor([0, 7, 9])), torch.zeros(3, dtype=torch.long)
    )


@pytest.mark.parametrize("loss_fn", [full_softmax_loss, bce_loss])
def test_flagged_embeddings_give_the_same_losses(loss_fn):
    catalogue, table, query, positives, negatives, weights = _case()
    kw = dict(temperature=0.2, weights=weights)
    if loss_fn is bce_loss:
        kw["negatives"] = negatives[:, :1]
    plain = loss_fn(query, positives, lambda ids: table[ids], catalogue, **kw)
    flagged = loss_fn(query, positives, _normalised_embed(table), catalogue, **kw)
    torch.testing.assert_close(flagged, plain, rtol=1e-12, atol=1e-12)


def test_padding_for_aligned_matrix_products_changes_no_number(monkeypatch):
    """D = 50 and C = 301 (not multiples of 8): the padded dense loss equals the unpadded one and the gather
    reference, in float64, and its gradients have the inputs' shapes."""
    from hstu_tutorial import losses

    gen = torch.Generator().manual_seed(3)
    M, D, C, R = 37, 50, 301, 16
    catalogue = torch.arange(1, C + 1)
    table = torch.randn(C + 1, D, generator=gen, dtype=torch.float64)
    query = torch.randn(M, D, generator=gen, dtype=torch.float64)
    positives = torch.randint(1, C + 1, (M,), generator=gen)
    negatives = torch.randint(0, C, (M, R), generator=gen)
    found = {}
    for name, align, impl in (("padded", 8, "dense"), ("unpadded", 1, "dense"), ("gather", 8, "gather")):
        monkeypatch.setattr(losses, "GEMM_ALIGN", align)
        q, t = query.clone().requires_grad_(True), table.clone().requires_grad_(True)
        loss = sampled_softmax_loss(
            q, positives, lambda ids, t=t: t[ids], catalogue, negatives=negatives, impl=impl
        )
        loss.backward()
        assert q.grad.shape == (M, D) and t.grad.shape == (C + 1, D)
        found[name] = (loss.detach(), q.grad, t.grad)
    for name in ("unpadded", "gather"):
        for a, b in zip(found["padded"], found[name]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_padded_operands_are_aligned_and_zero_filled(monkeypatch):
    from hstu_tutorial import losses

    monkeypatch.setattr(losses, "GEMM_ALIGN", 8)
    query = torch.randn(5, 50, requires_grad=True)
    items = torch.randn(301, 50, requires_grad=True)
    columns = torch.randint(0, 301, (5, 4))
    hits = torch.zeros(5, 3, dtype=torch.bool)
    logits = losses._SampledColumns.apply(query, items, columns, hits, 0.05)
    query_p, items_p, _ = logits.grad_fn.saved_tensors
    assert query_p.shape == (5, 56) and items_p.shape == (304, 56)
    assert torch.equal(query_p[:, :50], query.detach()) and not query_p[:, 50:].any()
    assert (
        torch.equal(items_p[:301, :50], items.detach())
        and not items_p[301:].any()
        and not items_p[:, 50:].any()
    )
    # already aligned: no copy
    aligned = torch.randn(8, 16)
    assert losses._pad_to(aligned, 8, 16) is aligned


def _sparse_case(seed=1):
    """40 items, 9 negatives: repeated accidental hits, one column drawn five times, zero weights (float64)."""
    catalogue, table, query, positives, negatives, weights = _case()
    gen = torch.Generator().manual_seed(seed)
    catalogue = torch.arange(1, 41)
    table = torch.randn(41, table.shape[1], generator=gen, dtype=torch.float64)
    positives = torch.randint(1, 41, positives.shape, generator=gen)
    negatives = torch.randint(0, 40, negatives.shape, generator=gen)
    negatives[0, :3] = catalogue_index(catalogue, positives[0])  # accidental hits, repeated
    negatives[1, 4:] = 2  # one column drawn five times
    return catalogue, table, query, positives, negatives, weights


@pytest.mark.parametrize("tau", [0.05, 0.7])
def test_sparse_equals_dense_and_gather(tau):
    """The sparse sampled columns (SDDMM + SpMM) give the dense loss and gradients (float64)."""
    catalogue, table, query, positives, negatives, weights = _sparse_case()
    found = {}
    for impl in ("sparse", "dense", "gather"):
        q, t = query.detach().clone().requires_grad_(True), table.detach().clone().requires_grad_(True)
        loss = sampled_softmax_loss(q, positives, lambda ids, t=t: t[ids], catalogue, temperature=tau,
                                    weights=weights, negatives=negatives, impl=impl)  # fmt: skip
        loss.backward()
        found[impl] = (loss.detach(), q.grad, t.grad)
    assert all(g is not None for g in found["sparse"])
    for other in ("dense", "gather"):
        for a, b in zip(found["sparse"], found[other]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_sparse_with_more_columns_than_items_is_dense(monkeypatch):
    """1 + R > C (8 items, 9 negatives): torch's sparse products cannot hold the rows; the dense path runs."""
    from hstu_tutorial import losses

    catalogue, table, query, positives, negatives, weights = _case()
    monkeypatch.setattr(losses._SparseSampledColumns, "apply", lambda *a: pytest.fail("sparse path taken"))
    sparse = sampled_softmax_loss(
        query, positives, lambda ids: table[ids], catalogue, negatives=negatives, impl="sparse"
    )
    dense = sampled_softmax_loss(
        query, positives, lambda ids: table[ids], catalogue, negatives=negatives, impl="dense"
    )
    assert torch.equal(sparse, dense)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sparse_gradients_keep_the_inputs_dtype(dtype):
    catalogue, table, query, positives, negatives, weights = _sparse_case()
    q = query.detach().to(dtype).requires_grad_(True)
    t = table.detach().to(dtype).requires_grad_(True)
    loss = sampled_softmax_loss(
        q, positives, lambda ids: t[ids], catalogue, negatives=negatives, impl="sparse"
    )
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert q.grad.dtype == dtype and t.grad.dtype == dtype and q.grad.shape == q.shape


def test_auto_follows_the_small_catalogue_setting(monkeypatch):
    from hstu_tutorial import losses

    catalogue, table, query, positives, negatives, weights = _sparse_case()
    used = []
    for name, cls in (("dense", losses._SampledColumns), ("sparse", losses._SparseSampledColumns)):
        monkeypatch.setattr(
            cls, "apply", (lambda real, n: lambda *a: used.append(n) or real(*a))(cls.apply, name)
        )
    for setting in ("dense", "sparse"):
        monkeypatch.setattr(losses, "SMALL_CATALOGUE_IMPL", setting)
        sampled_softmax_loss(query, positives, lambda ids: table[ids], catalogue, negatives=negatives)
    assert used == ["dense", "sparse"]
    with pytest.raises(ValueError, match="impl must be"):
        sampled_softmax_loss(
            query, positives, lambda ids: table[ids], catalogue, negatives=negatives, impl="csr"
        )
