"""Stochastic Length (hstu_tutorial/data/stochastic_length.py and the trainer's use of it), on the CPU.

The rule against the paper's numbers, the cut probability (a binomial test with a fixed seed), order,
timestamps and supervision of cut histories, reproducibility, evaluation splits untouched, and SL off
giving today's batches bit for bit."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from hstu_tutorial.data import get_reco_dataset
from hstu_tutorial.data.reco_dataset import SequenceSplit
from hstu_tutorial.data.stochastic_length import (
    cut_users,
    expected_cost,
    keep_whole_probability,
    stochastic_length_split,
    threshold,
)
from hstu_tutorial.errors import ConfigError
from hstu_tutorial.train import load_config
from hstu_tutorial.training.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def _split(lengths, pad_width) -> SequenceSplit:
    """Users whose items are 1000*u + 1, 1000*u + 2, ... (increasing: order is visible), timestamps 10x."""
    items = torch.cat([1000 * u + torch.arange(1, n + 1) for u, n in enumerate(lengths)])  # (T,)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(torch.tensor(lengths), 0)
    U = len(lengths)
    targets = torch.tensor([1000 * u + 999 for u in range(U)])  # (U,)
    return SequenceSplit(
        name="train",
        pad_width=pad_width,
        user_ids=torch.arange(1, U + 1),
        item_ids=items,
        ratings=items % 5 + 1,
        timestamps=items * 10,
        offsets=offsets,
        target_item_ids=targets,
        target_ratings=torch.full((U,), 4),
        target_timestamps=targets * 10,
    )


def test_threshold_and_probability_follow_eq_4():
    assert threshold(1.6, 4096) == 776  # the paper: at alpha = 1.6, a 4096-long history usually becomes 776
    assert threshold(1.6, 200) == 69 and threshold(2.0, 200) == 200
    lengths = torch.tensor([1, 69, 70, 100, 200])
    p = keep_whole_probability(lengths, 1.6, 200)
    assert p[:2].tolist() == [1.0, 1.0]  # at or below the threshold: always whole
    assert p[2:].tolist() == pytest.approx([200**1.6 / n**2 for n in (70, 100, 200)])
    with pytest.raises(ValueError, match=r"\(1, 2\]"):
        threshold(1.0, 200)


@pytest.mark.parametrize("n", [100, 200])
def test_cut_probability_is_one_minus_n_alpha_over_n_squared(n):
    U = 20000
    cut = cut_users(torch.full((U,), n), 1.6, 200, torch.Generator().manual_seed(7))
    p = 1 - 200**1.6 / n**2
    sd = math.sqrt(p * (1 - p) / U)
    assert abs(cut.double().mean().item() - p) < 4 * sd  # fails by chance about once in 15,000 seeds


@pytest.mark.parametrize("selection", ["uniform", "recent"])
def test_cut_histories_keep_order_timestamps_and_targets(selection):
    lengths = [5, 69, 70, 120, 200] * 40
    split = _split(lengths, 200)
    view = stochastic_length_split(
        split, 1.6, generator=torch.Generator().manual_seed(0), selection=selection
    )
    assert torch.equal(view.user_ids, split.user_ids) and torch.equal(
        view.target_item_ids, split.target_item_ids
    )
    assert torch.equal(view.target_timestamps, split.target_timestamps)
    assert torch.equal(view.timestamps, view.item_ids * 10) and torch.equal(
        view.ratings, view.item_ids % 5 + 1
    )
    cut = 0
    for n, old, new in zip(lengths, split.histories(), view.histories()):
        if n <= 69:
            assert new == old  # at or below the threshold: untouched
        elif new != old:
            cut += 1
            assert len(new) == 69 and set(new) <= set(old) and new == sorted(new)  # a subsequence, in order
            if selection == "recent":
                assert new == old[-69:]
    assert cut > 0.5 * 120  # 3 of 5 users are above the threshold, most of them cut


def test_uniform_selection_keeps_every_position_alike():
    split = _split([200] * 4000, 200)
    view = stochastic_length_split(split, 1.6, generator=torch.Generator().manual_seed(3))
    kept = torch.zeros(200)
    rows = 0
    for new in view.histories():
        if len(new) == 69:
            rows += 1
            kept[torch.tensor(new) % 1000 - 1] += 1
    share = kept / rows  # each position is kept with probability 69/200 in a cut row
    assert share.mean().item() == pytest.approx(69 / 200)
    assert (share - 69 / 200).abs().max().item() < 5 * math.sqrt(0.345 * 0.655 / rows)


def test_cut_history_supervision_is_the_next_kept_item():
    split = _split([150, 10], 200)
    view = stochastic_length_split(split, 1.2, generator=torch.Generator().manual_seed(1))  # L = 24
    assert view.lengths.tolist() == [24, 10] or view.lengths.tolist() == [150, 10]
    batch = view.batch(torch.tensor([0, 1]))
    for b, hist in enumerate(view.histories()):
        s, e = batch.offsets[b].item(), batch.offsets[b + 1].item()
        assert batch.next_item_ids[s:e].tolist() == hist[1:] + [batch.target_item_ids[b].item()]


def test_draws_are_reproducible():
    split = _split([120, 200, 90] * 50, 200)

    def draw(seed):
        return stochastic_length_split(split, 1.6, generator=torch.Generator().manual_seed(seed))

    a, b, c = draw(5), draw(5), draw(6)
    assert torch.equal(a.item_ids, b.item_ids) and torch.equal(a.offsets, b.offsets)
    assert not torch.equal(a.item_ids, c.item_ids)


def test_expected_cost_matches_draws():
    split = _split([200] * 3000 + [40] * 1000, 200)
    view = stochastic_length_split(split, 1.6, generator=torch.Generator().manual_seed(2))
    exp = expected_cost(split.lengths, 1.6, 200)
    assert view.num_tokens / split.num_tokens == pytest.approx(exp["tokens_kept"], abs=0.02)
    assert exp["users_above_threshold"] == 0.75 and exp["attention_kept"] < exp["tokens_kept"] < 1


def test_config_keys_are_checked_for_learners():
    assert load_config("synthetic/hstu-small").stochastic_length_alpha == 0.0
    cfg = load_config(
        "synthetic/hstu-small", ["stochastic_length_alpha=1.6", "stochastic_length_selection=recent"]
    )
    assert cfg.stochastic_length_alpha == 1.6 and cfg.stochastic_length_selection == "recent"
    with pytest.raises(ConfigError, match=r"outside the paper's range \(1, 2\]; use 0"):
        load_config("synthetic/hstu-small", stochastic_length_alpha=0.8)
    with pytest.raises(ConfigError, match="did you mean 'recent'"):
        load_config("synthetic/hstu-small", stochastic_length_selection="recnt")


RUN = dict(num_epochs=1, seed=3, tensorboard=False, save_checkpoints=False, progress=False)


@pytest.fixture(scope="module")
def ds():
    return get_reco_dataset("synthetic", 50, protocol="validation", verbose=False)


@pytest.mark.parametrize("layout", ["jagged", "padded"])
def test_off_gives_todays_batches(ds, tmp_path, layout):
    cfg = load_config("synthetic/hstu-small", exp_dir=str(tmp_path), layout=layout, **RUN)
    tr = Trainer(cfg, dataset=ds, verbose=False)
    assert tr.train_rows is tr.splits["train"]
    tr.stochastic_length_draw()
    assert tr.sl_tokens_kept == []
    index = torch.randperm(len(ds.train), generator=torch.Generator().manual_seed(0))[:32]
    got = tr.train_batch(index)
    if layout == "jagged":
        want = ds.train.batch(index)
    else:
        from hstu_tutorial.training.resident import ResidentSplit

        want = ResidentSplit(ds.train, torch.device("cpu")).padded_batch(index)
    for name in (
        "item_ids",
        "timestamps",
        "ratings",
        "offsets",
        "lengths",
        "next_item_ids",
        "target_item_ids",
    ):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


@pytest.mark.parametrize("layout", ["jagged", "padded"])
def test_trainer_cuts_training_batches_only(ds, tmp_path, layout):
    cfg = load_config(
        "synthetic/hstu-small", exp_dir=str(tmp_path), layout=layout, stochastic_length_alpha=1.6, **RUN
    )
    tr = Trainer(cfg, dataset=ds, verbose=False)
    tr.fit()
    whole = ds.train
    assert len(tr.sl_tokens_kept) == 1 and 0.5 < tr.sl_tokens_kept[0] < 0.9  # L = 22 of up to 50
    assert tr.train_rows.split.num_tokens < whole.num_tokens
    assert int(tr.train_rows.lengths[:-1].max()) == 50 and int(tr.train_rows.lengths.sum()) < whole.num_tokens
    for name in ("train", "valid", "test"):  # the splits themselves (evaluation's) stay whole
        kept = tr.splits[name].split
        assert torch.equal(kept.item_ids, ds.split(name).item_ids) and torch.equal(
            kept.offsets, ds.split(name).offsets
        )
    # The same seed draws the same cut; a new epoch draws another.
    again = Trainer(cfg, dataset=ds, verbose=False)
    again.stochastic_length_draw()
    assert torch.equal(again.train_rows.split.item_ids, tr.train_rows.split.item_ids)
    again.epoch = 1
    again.stochastic_length_draw()
    assert not torch.equal(again.train_rows.split.item_ids, tr.train_rows.split.item_ids)
    if layout == "padded":  # rows refilled in place: the padded batch is the cut history, padding after it
        index = torch.arange(8)
        b = tr.train_rows.padded_batch(index)
        cut = tr.train_rows.split.batch(index)
        mask = b.next_item_ids.view(8, 50) != 0
        assert torch.equal(b.item_ids.view(8, 50)[mask], cut.item_ids)
        assert torch.equal(b.next_item_ids.view(8, 50)[mask], cut.next_item_ids)


def test_benchmark_smoke(tmp_path):
    import bench_stochastic_length

    out = bench_stochastic_length.main(["--smoke", "--out", str(tmp_path)])
    payload = json.loads((out / "stochastic_length.json").read_text())
    runs = payload["runs"]
    assert [r["alpha"] for r in runs] == [0.0, 1.6]
    assert runs[0]["tokens_kept"] == 1.0 and runs[1]["tokens_kept"] < 1.0
    assert all(r["train_s"] > 0 and 0 <= r["test"]["hr@10"] <= 1 for r in runs)
    table = (out / "stochastic_length.md").read_text()
    assert "| off |" in table and "| 1.6 |" in table
