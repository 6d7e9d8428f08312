"""The CUDA-graph loss on the supervised positions only (training/loss_rows.py and its use in the Trainer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_runs import TINY_SETS

from hstu_tutorial.training import loss_rows
from hstu_tutorial.training.config import load_config
from hstu_tutorial.training.trainer import Trainer

# the command-line tests' tiny run (a later key wins) with longer histories, hence padding to leave out, in
# the padded layout a CUDA graph uses, and more steps per epoch
TINY = [
    *TINY_SETS, "max_seq_len=50", "batch_size=32", "layout=padded", "save_checkpoints=false", "progress=false",
    "protocol=validation",
]  # fmt: skip


@pytest.fixture(scope="module")
def dataset50(tmp_path_factory):
    from hstu_tutorial.data import get_reco_dataset

    root = tmp_path_factory.mktemp("data")
    return get_reco_dataset("synthetic", max_seq_len=50, data_dir=root, protocol="validation", verbose=False)


def _trainer(dataset, tmp_path, **over) -> Trainer:
    cfg = load_config("synthetic/hstu-small", [*TINY, f"exp_dir={tmp_path}"], **over)
    return Trainer(cfg, dataset=dataset, verbose=False)


# -- the budget ---------------------------------------------------------------------------------------
def test_budget_covers_random_batches_of_a_skewed_distribution():
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(1 / 110, size=3000), 200)  # skewed, a quarter at the cap
    counts = torch.as_tensor(lengths)
    B, N = 128, 200
    budget = loss_rows.row_budget(counts, B, N)
    assert budget is not None and budget % loss_rows.ALIGN == 0
    assert budget < 0.9 * B * N
    worst = max(
        lengths[order[i : i + B]].sum()
        for order in (rng.permutation(len(lengths)) for _ in range(200))
        for i in range(0, len(lengths), B)
    )
    assert worst <= budget, (worst, budget)


def test_no_budget_without_padding_or_users():
    assert loss_rows.row_budget(torch.full((500,), 20), 64, 20) is None  # every row full: nothing to save
    assert loss_rows.row_budget(torch.zeros(0, dtype=torch.int64), 64, 20) is None
    assert loss_rows.row_budget(torch.full((10,), 3), 64, 20) == loss_rows.ALIGN  # 10 users of 3: one block


def test_step_counts_sum_every_batch():
    per_row = torch.tensor([3, 0, 5, 2, 0])  # the last row is the padded layout's empty filler
    order = torch.tensor([2, 0, 4, 3, 1, 4])
    assert loss_rows.step_counts(per_row, order, 2) == [8, 2, 0]
    with pytest.raises(ValueError, match="multiple of batch_size"):
        loss_rows.step_counts(per_row, order[:5], 2)


# -- the compaction -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_compact_rows_keeps_the_supervised_positions_in_order(seed):
    gen = torch.Generator().manual_seed(seed)
    T = 200
    supervised = torch.rand(T, generator=gen) < 0.4
    n = int(supervised.sum())
    for rows in (n, n + 7, max(n - 3, 1)):
        index, valid, overflow = loss_rows.compact_rows(supervised, rows)
        assert index.shape == (rows,) and valid.shape == (rows,)
        kept = min(n, rows)
        assert bool(overflow) == (n > rows)
        assert int(valid.sum()) == kept and bool(valid[:kept].all())
        assert torch.equal(index[:kept], supervised.nonzero().flatten()[:kept])
        assert bool((index[kept:] == 0).all())  # filler rows point at position 0 (weight zero)


def test_compact_rows_of_an_empty_batch():
    index, valid, overflow = loss_rows.compact_rows(torch.zeros(0, dtype=torch.bool), 64)
    assert index.shape == (64,) and not bool(valid.any()) and not bool(overflow)


# -- the trainer's loss ----------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["full_softmax", "bce", "sampled_softmax"])
@pytest.mark.parametrize("model", ["hstu", "sasrec"])
def test_loss_on_the_supervised_rows_equals_the_padded_loss(dataset50, tmp_path, loss, model):
    """Same loss value and gradients with the padded positions left out (float32: the trainer's loss runs
    in it; only the order of the sums differs), negatives fixed per position, inputs unchanged."""
    from hstu_tutorial.losses import get_loss

    tr = _trainer(dataset50, tmp_path, loss=loss, model=model)
    index = torch.arange(tr.cfg.batch_size)
    n = tr.supervised_count(index)
    assert n < tr.cfg.batch_size * tr.train_rows.pad_width, "the test needs padded positions"
    for rows in (
        n,
        n + 64,
        tr.cfg.batch_size * tr.train_rows.pad_width,
    ):  # the last: as many rows as positions
        found = loss_rows.compare_with_all_positions(tr, index, rows, width=8)
        assert found["loss_rel_diff"] < 1e-6 and found["grad_rel_diff"] < 1e-5, found
        assert found["inputs_unchanged"]
    assert tr.model.training and tr.loss_fn is get_loss(loss)  # restored


def test_the_comparison_sees_a_wrong_compaction(dataset50, tmp_path, monkeypatch):
    """compare_with_all_positions is a check that can fail: a compaction that keeps weight on filler rows,
    or loses a supervised row, shows in the loss."""
    tr = _trainer(dataset50, tmp_path)
    index = torch.arange(tr.cfg.batch_size)
    n = tr.supervised_count(index)
    real = loss_rows.compact_rows

    def fillers_count(supervised, rows):
        idx, valid, over = real(supervised, rows)
        return idx, torch.ones_like(valid), over  # filler rows (position 0) keep weight one

    monkeypatch.setattr(loss_rows, "compact_rows", fillers_count)
    assert loss_rows.compare_with_all_positions(tr, index, n + 64, width=8)["loss_rel_diff"] > 1e-3

    def drops_one(supervised, rows):
        idx, valid, over = real(supervised, rows)
        return idx, valid & (torch.arange(rows) != 0), over  # the first supervised row lost

    monkeypatch.setattr(loss_rows, "compact_rows", drops_one)
    found = loss_rows.compare_with_all_positions(tr, index, n, width=8)
    assert found["loss_rel_diff"] > 1e-6 or found["grad_rel_diff"] > 1e-4


def test_loss_counts_a_batch_above_its_rows(dataset50, tmp_path):
    tr = _trainer(dataset50, tmp_path)
    tr._loss_overflow = torch.zeros((), dtype=torch.int64)
    index = torch.arange(tr.cfg.batch_size)
    n = tr.supervised_count(index)
    tr.loss(tr.train_rows.padded_batch(index), rows=n)
    assert int(tr._loss_overflow) == 0
    tr.loss(tr.train_rows.padded_batch(index), rows=n - 1)
    assert int(tr._loss_overflow) == 1


# -- the epoch loop's routing, with a stand-in for the CUDA graph -----------------------------------------
class _GraphStandIn:
    """Replays 'the captured step' eagerly: the loss in `rows` rows, as the real graph's loss is."""

    def __init__(self, tr: Trainer, rows: int):
        self.tr, self.rows, self.replays = tr, rows, 0

    def replay(self, index):
        tr = self.tr
        self.replays += 1
        tr.optimizer.zero_grad(set_to_none=True)
        loss = tr.loss(tr.train_rows.padded_batch(index), rows=self.rows)
        loss.backward()
        tr.optimizer.step()
        return loss.detach()


def _with_stand_in(tr: Trainer, rows: int, routed_budget: int) -> _GraphStandIn:
    tr.graph = _GraphStandIn(tr, rows)
    tr.loss_rows = routed_budget
    tr._loss_overflow = torch.zeros((), dtype=torch.int64)
    return tr.graph


def test_batches_above_the_budget_run_eagerly(dataset50, tmp_path):
    tr = _trainer(dataset50, tmp_path, num_epochs=2)
    rs = tr.train_rows
    per_row = loss_rows.supervised_per_row(rs.padded_next_ids[: rs.num_users])
    B = tr.cfg.batch_size
    mean = int(per_row.double().mean() * B)
    graph = _with_stand_in(tr, rows=mean, routed_budget=mean)  # about half the batches are above it
    res = tr.fit()
    steps = 2 * (-(-rs.num_users // B))
    assert res["status"] == "completed"
    assert graph.replays + tr.eager_steps_above_budget == steps
    assert graph.replays > 0 and tr.eager_steps_above_budget > 0
    assert int(tr._loss_overflow) == 0
    assert res["eager_steps_above_budget"] == tr.eager_steps_above_budget and res["loss_rows"] == mean


def test_a_graph_replayed_above_its_rows_stops_the_run(dataset50, tmp_path):
    """The device counter catches a batch the routing let through above the graph's rows."""
    tr = _trainer(dataset50, tmp_path, num_epochs=1)
    rs = tr.train_rows
    per_row = loss_rows.supervised_per_row(rs.padded_next_ids[: rs.num_users])
    mean = int(per_row.double().mean() * tr.cfg.batch_size)
    _with_stand_in(tr, rows=mean, routed_budget=10**9)  # the routing believes every batch fits
    with pytest.raises(RuntimeError, match="more supervised positions than the loss's"):
        tr.fit()


def test_step_counts_its_batch_when_not_told(dataset50, tmp_path):
    tr = _trainer(dataset50, tmp_path)
    index = torch.arange(tr.cfg.batch_size)
    n = tr.supervised_count(index)
    graph = _with_stand_in(tr, rows=n, routed_budget=n)
    tr.step(index)
    assert graph.replays == 1 and tr.eager_steps_above_budget == 0
    graph.rows = tr.loss_rows = n - 1
    tr.step(index)
    assert graph.replays == 1 and tr.eager_steps_above_budget == 1
