"""Losses against brute-force loops: sampled softmax (both implementations), full softmax, BCE."""

import math

import pytest
import torch

from hstu_tutorial.losses import (
    bce_loss,
    full_softmax_loss,
    get_loss,
    l2_normalize,
    sample_negatives,
    sampled_softmax_loss,
)

torch.set_num_threads(2)


def _setup(M=7, D=5, R=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    catalogue = torch.tensor([2, 3, 5, 8, 9, 11, 12, 20], dtype=torch.int64)  # sorted, with gaps
    table = torch.randn(21, D, generator=g, dtype=torch.float64, requires_grad=True)
    query = torch.randn(M, D, generator=g, dtype=torch.float64, requires_grad=True)
    positives = catalogue[torch.randint(0, len(catalogue), (M,), generator=g)]
    negatives = torch.randint(0, len(catalogue), (M, R), generator=g)
    negatives[0, :3] = torch.searchsorted(catalogue, positives[0])  # force accidental hits
    return catalogue, table, query, positives, negatives


def _brute_sampled(query, positives, negatives, table, catalogue, tau, weights=None):
    query, table = query.detach(), table.detach()
    losses, ws = [], []
    for m in range(query.shape[0]):
        q = query[m] / query[m].norm()
        e = lambda i: table[i] / table[i].norm()
        pos = float(q @ e(int(positives[m]))) / tau
        terms = [math.exp(pos)]
        for r in negatives[m].tolist():
            item = int(catalogue[r])
            if item == int(positives[m]):
                continue  # accidental hit: left out
            terms.append(math.exp(float(q @ e(item)) / tau))
        losses.append(-(pos - math.log(sum(terms))))
        ws.append(1.0 if weights is None else float(weights[m]))
    return sum(w * v for w, v in zip(ws, losses)) / sum(ws)


@pytest.mark.parametrize("impl", ["dense", "gather"])
def test_sampled_softmax_matches_loop(impl):
    catalogue, table, query, positives, negatives = _setup()
    embed = lambda ids: table[ids]
    got = sampled_softmax_loss(
        query, positives, embed, catalogue, temperature=0.5, negatives=negatives, impl=impl
    )
    want = _brute_sampled(query, positives, negatives, table, catalogue, 0.5)
    assert got.item() == pytest.approx(want, rel=1e-10)


def test_sampled_softmax_weights_and_impls_agree_with_gradients():
    catalogue, table, query, positives, negatives = _setup(M=9)
    weights = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1, 0], dtype=torch.float64)
    embed = lambda ids: table[ids]
    grads = []
    for impl in ("dense", "gather"):
        loss = sampled_softmax_loss(
            query,
            positives,
            embed,
            catalogue,
            temperature=0.05,
            negatives=negatives,
            weights=weights,
            impl=impl,
        )
        assert loss.item() == pytest.approx(
            _brute_sampled(query, positives, negatives, table, catalogue, 0.05, weights), rel=1e-9
        )
        grads.append(torch.autograd.grad(loss, (query, table)))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert grads[0][0][1].abs().max() == 0  # a weight-0 position gets no gradient


def test_negatives_uniform_over_catalogue_and_on_device():
    catalogue = torch.tensor([1, 4, 6, 7, 10])
    g = torch.Generator().manual_seed(1)
    neg = sample_negatives(4000, 16, len(catalogue), "cpu", g)  # (M, R) positions into the catalogue
    assert neg.shape == (4000, 16) and neg.min() >= 0 and neg.max() < len(catalogue)
    counts = torch.bincount(neg.flatten(), minlength=5).double() / neg.numel()
    assert (counts - 0.2).abs().max() < 0.01  # 64k draws: uniform within 1%


def test_full_softmax_matches_loop():
    catalogue, table, query, positives, _ = _setup()
    got = full_softmax_loss(query, positives, lambda ids: table[ids], catalogue, temperature=0.2)
    query, table = query.detach(), table.detach()
    total = 0.0
    for m in range(query.shape[0]):
        q = query[m] / query[m].norm()
        logits = [float(q @ (table[c] / table[c].norm())) / 0.2 for c in catalogue.tolist()]
        pos = logits[catalogue.tolist().index(int(positives[m]))]
        total += -(pos - math.log(sum(math.exp(v) for v in logits)))
    assert got.item() == pytest.approx(total / query.shape[0], rel=1e-10)


def test_bce_matches_loop_and_drops_accidental_hits():
    catalogue, table, query, positives, negatives = _setup()
    negatives = negatives[:, :1].clone()  # (M, 1)
    negatives[2, 0] = torch.searchsorted(catalogue, positives[2])  # an accidental hit
    got = bce_loss(query, positives, lambda ids: table[ids], catalogue, temperature=1.0, negatives=negatives)
    sig = lambda x: 1 / (1 + math.exp(-x))
    query, table = query.detach(), table.detach()
    vals = []
    for m in range(query.shape[0]):
        item = int(catalogue[negatives[m, 0]])
        if item == int(positives[m]):
            continue
        q = query[m] / query[m].norm()
        p = float(q @ (table[int(positives[m])] / table[int(positives[m])].norm()))
        n = float(q @ (table[item] / table[item].norm()))
        vals.append(0.5 * (-math.log(sig(p)) - math.log(1 - sig(n))))
    assert got.item() == pytest.approx(sum(vals) / len(vals), rel=1e-10)


def test_temperature_sharpens_and_errors_are_clear():
    catalogue, table, query, positives, negatives = _setup()
    embed = lambda ids: table[ids]
    with pytest.raises(ValueError, match="temperature"):
        sampled_softmax_loss(query, positives, embed, catalogue, temperature=0.0)
    with pytest.raises(ValueError, match="positive_ids"):
        sampled_softmax_loss(query, positives[:3], embed, catalogue)
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("softmax")
    # Perfect queries (equal to the positive's embedding) make the loss vanish as tau -> 0.
    perfect = l2_normalize(table[positives]).detach()
    hot = sampled_softmax_loss(perfect, positives, embed, catalogue, temperature=0.01, negatives=negatives)
    warm = sampled_softmax_loss(perfect, positives, embed, catalogue, temperature=1.0, negatives=negatives)
    assert hot < warm
