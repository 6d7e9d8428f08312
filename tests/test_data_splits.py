"""Leave-one-out splits on a hand-made dataset, jagged batches, padded view, loader coverage."""

import pytest
import torch

from hstu_tutorial.data import JaggedBatch, get_reco_dataset

# user 1: file order 10@100, 20@50, 30@300, 40@200, 50@400 -> time order 20, 10, 40, 30, 50
# user 2: 11@5, 12@5 (tie), 13@7 -> 11, 12, 13 (stable keeps the tie in file order)
# user 3: 14@1, 15@2;  user 4: 16@1 (one rating: no history in any split)
RATINGS = """1::10::5::100
1::20::4::50
1::30::3::300
1::40::2::200
1::50::1::400
2::11::5::5
2::12::4::5
2::13::3::7
3::14::5::1
3::15::4::2
4::16::3::1
"""
MOVIES = "".join(f"{i}::Movie {i} (1999)::Drama\n" for i in (10, 11, 12, 13, 14, 15, 16, 20, 30, 40, 50, 99))
USERS = "".join(f"{u}::M::25::1::12345\n" for u in (1, 2, 3, 4, 5))


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "ratings.dat").write_text(RATINGS)
    (tmp_path / "movies.dat").write_text(MOVIES)
    (tmp_path / "users.dat").write_text(USERS)
    return tmp_path


def split_table(split):
    return {
        u: (h, t)
        for u, h, t in zip(split.user_ids.tolist(), split.histories(), split.target_item_ids.tolist())
    }


def test_catalogue_and_sequences(tiny):
    ds = get_reco_dataset("ml-1m", 200, tiny, verbose=False)
    assert ds.catalogue.tolist() == [10, 11, 12, 13, 14, 15, 16, 20, 30, 40, 50, 99]
    assert ds.num_items == 99 and ds.num_users == 4
    seqs = ds.sequences.set_index("user_id")
    assert seqs.loc[1, "sequence_item_ids"] == [20, 10, 40, 30, 50]
    assert seqs.loc[1, "sequence_ratings"] == [4, 5, 2, 3, 1]
    assert seqs.loc[1, "sequence_timestamps"] == [50, 100, 200, 300, 400]
    assert seqs.loc[2, "sequence_item_ids"] == [11, 12, 13]
    assert ds.ratings_df["item_id"].tolist()[:3] == [10, 20, 30]  # file order


def test_reference_protocol(tiny):
    ds = get_reco_dataset("ml-1m", 200, tiny, verbose=False)
    assert split_table(ds.test) == {1: ([20, 10, 40, 30], 50), 2: ([11, 12], 13), 3: ([14], 15)}
    assert split_table(ds.valid) == {1: ([20, 10, 40], 30), 2: ([11], 12)}
    assert split_table(ds.train) == split_table(ds.valid)  # reference trains on all but the test item
    assert ds.test.target_timestamps.tolist() == [400, 7, 2]
    assert ds.test.target_ratings.tolist() == [1, 3, 4]
    assert ds.test.timestamps.tolist() == [50, 100, 200, 300, 5, 5, 1]


def test_validation_protocol(tiny):
    ds = get_reco_dataset("ml-1m", 200, tiny, protocol="validation", verbose=False)
    assert split_table(ds.train) == {1: ([20, 10], 40)}
    assert split_table(ds.valid) == {1: ([20, 10, 40], 30), 2: ([11], 12)}
    assert split_table(ds.test) == {1: ([20, 10, 40, 30], 50), 2: ([11, 12], 13), 3: ([14], 15)}
    with pytest.raises(ValueError, match="protocol"):
        get_reco_dataset("ml-1m", 200, tiny, protocol="future", verbose=False)


def test_truncation_keeps_most_recent(tiny):
    ds = get_reco_dataset("ml-1m", 2, tiny, verbose=False)
    assert split_table(ds.test) == {1: ([40, 30], 50), 2: ([11, 12], 13), 3: ([14], 15)}
    assert split_table(ds.valid)[1] == ([10, 40], 30)
    assert ds.test.offsets.tolist() == [0, 2, 4, 5]


def test_batch_fields_shapes_and_padded_view(tiny):
    ds = get_reco_dataset("ml-1m", 6, tiny, verbose=False)
    b = next(iter(ds.loader("test", batch_size=3)))
    assert isinstance(b, JaggedBatch)
    assert b.offsets.tolist() == [0, 4, 6, 7] and b.lengths.tolist() == [4, 2, 1]
    assert torch.equal(b.lengths, b.offsets.diff()) and b.max_len == 6
    for name in ("user_ids", "target_item_ids", "target_ratings", "target_timestamps", "lengths"):
        assert getattr(b, name).shape == (3,) and getattr(b, name).dtype == torch.int64
    for name in ("item_ids", "ratings", "timestamps"):
        assert getattr(b, name).shape == (7,) and getattr(b, name).dtype == torch.int64
    p = b.padded("item_ids")
    assert p.shape == (3, 6)
    assert p.tolist() == [[20, 10, 40, 30, 0, 0], [11, 12, 0, 0, 0, 0], [14, 0, 0, 0, 0, 0]]
    assert b.padded("timestamps", max_len=4).shape == (3, 4)
    assert b.mask().sum().item() == 7
    emb = torch.randn(7, 5)  # (T, D): any jagged tensor aligned with the batch pads the same way
    pe = b.padded(emb)
    assert pe.shape == (3, 6, 5) and torch.equal(pe[0, :4], emb[:4]) and torch.equal(pe[2, 0], emb[6])
    with pytest.raises(ValueError, match="max_len"):
        b.padded("item_ids", max_len=3)


def test_batch_to_and_pin(tiny):
    ds = get_reco_dataset("ml-1m", 6, tiny, verbose=False)
    b = ds.test.batch(torch.tensor([2, 0]))
    assert b.user_ids.tolist() == [3, 1] and b.item_ids.tolist() == [14, 20, 10, 40, 30]
    c = b.to("cpu", non_blocking=True)
    assert torch.equal(c.item_ids, b.item_ids) and c.max_len == b.max_len


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return get_reco_dataset("synthetic", 20, tmp_path_factory.mktemp("syn"), verbose=False)


@pytest.mark.parametrize("drop_last", [False, True])
def test_loader_covers_every_user_once(syn, drop_last):
    loader = syn.loader("train", batch_size=64, shuffle=True, seed=3, drop_last=drop_last)
    n = len(syn.train)
    assert len(loader) == (n // 64 if drop_last else -(-n // 64))
    epochs = []
    for _ in range(2):
        seen = torch.cat([b.user_ids for b in loader])
        assert len(seen) == (len(loader) * 64 if drop_last else n)
        assert len(set(seen.tolist())) == len(seen)  # no user twice
        epochs.append(seen)
    if not drop_last:
        assert sorted(epochs[0].tolist()) == syn.train.user_ids.tolist()
    assert not torch.equal(epochs[0], epochs[1])  # a new order each epoch
    again = torch.cat(
        [b.user_ids for b in syn.loader("train", 64, shuffle=True, seed=3, drop_last=drop_last)]
    )
    assert torch.equal(again, epochs[0])  # same seed, same order


def test_loader_batches_match_split(syn):
    """The vectorised gather returns exactly the split's histories and targets."""
    hist = dict(zip(syn.valid.user_ids.tolist(), syn.valid.histories()))
    tgt = dict(zip(syn.valid.user_ids.tolist(), syn.valid.target_item_ids.tolist()))
    for b in syn.loader("valid", 100, shuffle=True):
        assert b.offsets[0] == 0 and b.offsets[-1] == b.item_ids.shape[0]
        assert (b.lengths <= 20).all()
        for k, u in enumerate(b.user_ids.tolist()):
            assert b.item_ids[b.offsets[k] : b.offsets[k + 1]].tolist() == hist[u]
            assert b.target_item_ids[k].item() == tgt[u]
    # every position i of a train history is followed by the item at i+1 (the target for the last one)
    seqs = dict(zip(syn.sequences.user_id, syn.sequences.sequence_item_ids))
    b = syn.train.batch(torch.arange(5))
    for k, u in enumerate(b.user_ids.tolist()):
        h = b.item_ids[b.offsets[k] : b.offsets[k + 1]].tolist() + [b.target_item_ids[k].item()]
        s = seqs[u][:-1]  # reference protocol: all but the test item
        assert h == s[-len(h) :]


def test_bad_arguments(syn):
    with pytest.raises(ValueError, match="split"):
        syn.loader("dev")
    with pytest.raises(ValueError, match="batch_size"):
        syn.loader("train", 0)
    with pytest.raises(ValueError, match="unknown dataset"):
        get_reco_dataset("ml-2m")


def test_padded_with_empty_sequences():
    t = torch.tensor
    b = JaggedBatch(
        user_ids=t([1, 2, 3]),
        item_ids=t([5, 6, 7]),
        ratings=t([1, 1, 1]),
        timestamps=t([1, 2, 3]),
        offsets=t([0, 2, 2, 3]),
        lengths=t([2, 0, 1]),
        max_len=3,
        target_item_ids=t([0, 0, 0]),
        target_ratings=t([0, 0, 0]),
        target_timestamps=t([0, 0, 0]),
    )
    assert b.padded().tolist() == [[5, 6, 0], [0, 0, 0], [7, 0, 0]]


def test_padded_view_agrees_with_ops(syn):
    """The batch's padded view and hstu_tutorial.ops.jagged_to_padded are the same layout."""
    from hstu_tutorial.ops import jagged_to_padded

    b = next(iter(syn.loader("train", 32, shuffle=True)))
    assert torch.equal(b.padded("item_ids"), jagged_to_padded(b.item_ids, b.offsets, b.max_len).long())
