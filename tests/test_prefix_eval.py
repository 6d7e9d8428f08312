"""One pass for validation and test (training/prefix_eval.py): the pairing is read from the data, and the ranks
equal those of separate passes."""

import pytest
import torch

from hstu_tutorial.metrics import batch_ranks
from hstu_tutorial.modules import sasrec_encoder
from hstu_tutorial.training.prefix_eval import paired_ranks, prefix_pairs
from hstu_tutorial.training.resident import ResidentSplit

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def short_windows(tmp_path_factory):
    """Windows of 45 items: half the histories are cut, so some validation users are not covered."""
    from hstu_tutorial.data import get_reco_dataset

    root = tmp_path_factory.mktemp("data")
    return get_reco_dataset("synthetic", max_seq_len=45, data_dir=root, protocol="validation", verbose=False)


def _splits(ds):
    return ResidentSplit(ds.split("valid"), torch.device("cpu")), ResidentSplit(
        ds.split("test"), torch.device("cpu")
    )


def test_pairs_are_the_users_whose_validation_history_is_the_test_one_cut_by_one(short_windows):
    valid, test = _splits(short_windows)
    pairs = prefix_pairs(valid, test, batch_size=64)
    v_hist, t_hist = valid.split.histories(), test.split.histories()
    t_row = {int(u): i for i, u in enumerate(test.user_ids[: test.num_users])}
    expected = {
        i
        for i, u in enumerate(valid.user_ids[: valid.num_users].tolist())
        if u in t_row and t_hist[t_row[u]][:-1] == v_hist[i]
    }
    covered = {int(v) for v in pairs.valid_of_test if v < valid.num_users}
    assert covered == expected and pairs.covered == len(expected)
    assert set(pairs.rest.tolist()) == set(range(valid.num_users)) - expected
    assert 0 < len(expected) < valid.num_users  # both kinds occur here
    for t, v in enumerate(pairs.valid_of_test.tolist()):
        if v < valid.num_users:
            assert valid.user_ids[v] == test.user_ids[t]
    assert sum(pairs.rest_totals) == int(valid.lengths[pairs.rest].sum())


@pytest.mark.parametrize("batch_size", [64, 4096])
def test_paired_ranks_equal_separate_passes(short_windows, batch_size):
    torch.manual_seed(0)
    ds = short_windows
    model = sasrec_encoder(ds.num_items, embedding_dim=16, num_blocks=2, max_seq_len=45, dropout=0.2).double()
    model.train()  # paired_ranks must switch dropout off itself, and restore the mode
    valid, test = _splits(ds)
    catalogue = torch.arange(1, ds.num_items + 1)
    pairs = prefix_pairs(valid, test, batch_size)
    got_valid, got_test = paired_ranks(model, valid, test, pairs, catalogue, ds.num_items)
    assert model.training
    want_valid = batch_ranks(model, valid.batches(batch_size), catalogue, ds.num_items)
    want_test = batch_ranks(model, test.batches(batch_size), catalogue, ds.num_items)
    assert torch.equal(got_test, want_test)
    assert torch.equal(got_valid, want_valid)


def test_trainer_uses_one_pass_for_sasrec_only(short_windows):
    from hstu_tutorial.train import Trainer, load_config

    dataset = short_windows
    common = dict(
        max_seq_len=45, protocol="validation", num_epochs=1, device="cpu", progress=False, tensorboard=False
    )
    sas = Trainer(load_config("synthetic/sasrec-small", common), dataset=dataset, verbose=False)
    assert sas._pairs() is not None and sas._pairs().covered > 0
    paired = sas.evaluate()
    sas._prefix_pairs = False  # separate passes
    separate = sas.evaluate()
    assert paired == separate
    hstu = Trainer(load_config("synthetic/hstu-small", common), dataset=dataset, verbose=False)
    assert hstu._pairs() is None  # its time bias reads the next item's timestamp
