"""Full-ranking metrics against brute-force loops (sorting every item for every user)."""

import math

import pytest
import torch

from hstu_tutorial.metrics import evaluate, evaluate_per_user, metric_names, metrics_from_ranks, target_ranks

torch.set_num_threads(2)


def _brute_rank(scores: dict, target: int, seen: set) -> int:
    """Rank of `target` among unseen items; ties in its favour; a seen target is a miss (C + 1)."""
    if target in seen:
        return len(scores) + 1
    candidates = [s for item, s in scores.items() if item not in seen]
    return 1 + sum(1 for s in candidates if s > scores[target])


def test_target_ranks_match_loop_with_seen_items_and_ties():
    g = torch.Generator().manual_seed(0)
    catalogue = torch.tensor([1, 2, 4, 5, 7, 8, 9, 12, 13, 15])
    B, D, N = 40, 4, 6
    table = torch.randn(16, D, generator=g).round(decimals=1)  # rounding creates ties
    table[5] = table[7]  # an exact tie between two items
    query = torch.randn(B, D, generator=g).round(decimals=1)
    history = catalogue[torch.randint(0, len(catalogue), (B, N), generator=g)]
    history[:, 4:] = 0  # padding
    history[::3, 5] = 0
    targets = catalogue[torch.randint(0, len(catalogue), (B,), generator=g)]
    history[0, 0] = targets[0]  # a target seen in the window: a miss, as in the reference
    got = target_ranks(query, table[catalogue], catalogue, targets, history, num_items=15)
    for b in range(B):
        scores = {c: float(query[b] @ table[c]) for c in catalogue.tolist()}
        seen = set(history[b].tolist()) - {0}
        assert int(got[b]) == _brute_rank(scores, int(targets[b]), seen), b
    assert int(got[0]) == len(catalogue) + 1
    # Without filtering, ranks count every item.
    got_all = target_ranks(query, table[catalogue], catalogue, targets)
    for b in range(B):
        scores = {c: float(query[b] @ table[c]) for c in catalogue.tolist()}
        assert int(got_all[b]) == _brute_rank(scores, int(targets[b]), set())


def test_metrics_from_ranks_match_formulas():
    ranks = torch.tensor([1, 2, 10, 11, 50, 51, 200, 201, 3000])
    ks = (1, 10, 50, 200)
    got = metrics_from_ranks(ranks, ks)
    assert list(got) == metric_names(ks)
    r = ranks.tolist()
    for k in ks:
        assert got[f"hr@{k}"] == pytest.approx(sum(x <= k for x in r) / len(r))
        assert got[f"ndcg@{k}"] == pytest.approx(sum(1 / math.log2(x + 1) for x in r if x <= k) / len(r))
    assert got["mrr"] == pytest.approx(sum(1 / x for x in r) / len(r))
    assert got["hr@1"] == pytest.approx(1 / 9) and got["ndcg@1"] == pytest.approx(1 / 9)


class LastItemModel(torch.nn.Module):
    """A stand-in encoder: the query of a position is the embedding of its own item."""

    def __init__(self, num_items: int, dim: int = 8):
        super().__init__()
        self.emb = torch.nn.Embedding(num_items + 1, dim)

    def forward(self, batch):
        return torch.nn.functional.normalize(self.emb(batch.item_ids), dim=-1)  # (T, D)

    def item_embeddings(self, ids):
        return torch.nn.functional.normalize(self.emb(ids), dim=-1)

    def last_embeddings(self, out, batch):
        return out[batch.offsets[1:] - 1]  # (B, D)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from hstu_tutorial.data import get_reco_dataset

    return get_reco_dataset(
        "synthetic", max_seq_len=20, data_dir=tmp_path_factory.mktemp("data"), verbose=False
    )


def test_evaluate_matches_loop_on_synthetic(dataset):
    torch.manual_seed(0)
    model = LastItemModel(dataset.num_items)
    got = evaluate(model, dataset, "test", ks=(1, 10, 50), batch_size=64)
    split = dataset.test
    E = torch.nn.functional.normalize(model.emb.weight.detach(), dim=-1)
    ranks = []
    for history, target in zip(split.histories(), split.target_item_ids.tolist()):
        q = E[history[-1]]
        scores = {c: float(q @ E[c]) for c in dataset.catalogue.tolist()}
        ranks.append(_brute_rank(scores, target, set(history)))
    want = metrics_from_ranks(torch.tensor(ranks), (1, 10, 50))
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    table = evaluate_per_user(model, dataset, "test", batch_size=100)
    assert table["rank"].tolist() == ranks
    assert (table["history_length"] == split.lengths.numpy()).all()
    assert model.training  # evaluation restores the training mode


def test_evaluate_rejects_unknown_split(dataset):
    with pytest.raises(ValueError, match="split"):
        evaluate(LastItemModel(dataset.num_items), dataset, "validation")
