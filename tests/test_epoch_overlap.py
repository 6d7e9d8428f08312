"""An epoch's end done while the next epoch's steps run (training/epoch_end.py, `Trainer.overlap_epoch_end`):
the same run, records and files as in turn, what a stop inside an epoch leaves, and when it is on.

On a GPU it is on by default; here, on a CPU, it is forced on, which runs the same bookkeeping in the same
order (the host clock instead of CUDA events)."""

import pytest
import torch

from hstu_tutorial.training.checkpoints import history_of
from hstu_tutorial.training.config import load_config
from hstu_tutorial.training.trainer import Trainer
from tests.test_checkpoints import TINY  # the small configs of the checkpoint tests

torch.set_num_threads(2)


def _trainer(dataset, tmp_path, overlap, config="synthetic/sasrec-small", **kw):
    cfg = load_config(config, **{**TINY, "num_epochs": 3, "exp_dir": str(tmp_path), **kw})
    tr = Trainer(cfg, dataset, verbose=False)
    tr.overlap_epoch_end = overlap
    return tr


def _load(path):
    """A checkpoint file, its history decoded without the epochs' clocks."""
    state = torch.load(path, weights_only=True)
    if "history" in state:
        clocks = ("train_s", "eval_s")
        state["history"] = [{k: v for k, v in r.items() if k not in clocks} for r in history_of(state)]
    return state


def _fit_keeping_files(tr):
    """fit, keeping at every callback: (record epoch, history length, steps the trainer is past the record's,
    ckpt_last.pt, ckpt_best.pt)."""
    seen = []

    def callback(record):
        tr.flush_epoch_files()
        last = _load(tr.run_dir / "ckpt_last.pt") if record["epoch"] < 2 else None
        best = _load(tr.run_dir / "ckpt_best.pt")
        seen.append((record["epoch"], len(tr.history), tr.global_step - record["step"], last, best))

    return tr.fit(callback=callback), seen


def _same(a, b, where="", skip=("elapsed", "exp_dir")):
    """Assert `a` and `b` hold the same values (tensors bit for bit), keys in `skip` left out (the clocks, and
    the run folder each run was given)."""
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) - set(skip) == set(b) - set(skip), where
        for k in set(a) - set(skip):
            _same(a[k], b[k], f"{where}/{k}", skip)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", skip)
    else:
        assert a == b, where


def _records(results):
    return [(r["epoch"], r["loss"], r["valid"], r["test"], r["step"]) for r in results["history"]]


@pytest.mark.parametrize("config", ["synthetic/sasrec-small", "synthetic/hstu-small"])
def test_overlapped_epoch_ends_give_the_same_run_and_files(dataset, tmp_path, config):
    tr_a = _trainer(dataset, tmp_path / "a", False, config)
    res_a, seen_a = _fit_keeping_files(tr_a)
    tr_b = _trainer(dataset, tmp_path / "b", True, config)
    res_b, seen_b = _fit_keeping_files(tr_b)
    assert _records(res_a) == _records(res_b)
    assert res_a["best_by_valid"] == res_b["best_by_valid"]
    # every epoch's callback once, in order, with its record appended; overlapped, the next epoch's steps
    # are queued (here: done) by then, but for the last epoch's
    steps = res_a["history"][0]["step"]
    assert [s[:3] for s in seen_a] == [(0, 1, 0), (1, 2, 0), (2, 3, 0)]
    assert [s[:3] for s in seen_b] == [(0, 1, steps), (1, 2, steps), (2, 3, 0)]
    # each epoch's ckpt_last.pt and ckpt_best.pt: the same weights, optimizer, RNG states, position, history
    for a, b in zip(seen_a, seen_b, strict=True):
        _same(a[3], b[3], f"ckpt_last after epoch {a[0]}")
        _same(a[4], b[4], f"ckpt_best after epoch {a[0]}")
    for name in ("ckpt_last.pt", "ckpt_best.pt"):
        _same(_load(tr_a.run_dir / name), _load(tr_b.run_dir / name), name)
    t = res_b["timing"]
    assert t["epoch_end_overlapped_s"] > 0 and t["epoch_end_s"] >= 0
    assert t["train_eval_s"] == pytest.approx(t["train_s"] + t["eval_s"] + t["epoch_end_s"])
    assert "while the next epoch trained" in (tr_b.run_dir / "results.md").read_text()
    assert res_a["timing"]["epoch_end_overlapped_s"] == 0


def test_a_stop_inside_an_epoch_finishes_the_epoch_before_it(dataset, tmp_path):
    """max_steps cuts the run one step into its second epoch: the first epoch's bookkeeping, left for the next
    steps, still happens; the saved state resumes to the run trained straight through."""
    probe = _trainer(dataset, tmp_path / "p", False)
    steps = -(-probe.splits["train"].num_users // TINY["batch_size"])
    straight = _trainer(dataset, tmp_path / "s", False).fit()
    runs = {}
    for overlap in (False, True):
        tr = _trainer(dataset, tmp_path / f"o{overlap}", overlap, max_steps=steps + 1)
        seen = []
        res = tr.fit(callback=lambda r, seen=seen: seen.append(r["epoch"]))
        assert res["status"] == "stopped" and seen == [0] and len(res["history"]) == 1
        assert (tr.epoch, tr.step_in_epoch) == (1, 1)
        runs[overlap] = (res, _load(tr.run_dir / "ckpt_last.pt"), tr.run_dir)
    assert _records(runs[False][0]) == _records(runs[True][0])
    _same(runs[False][1], runs[True][1], "ckpt_last.pt at the stop")
    resumed = _trainer(dataset, tmp_path / "r", True, resume=str(runs[True][2])).fit()
    assert _records(resumed) == _records(straight)


def test_when_it_is_on(dataset, tmp_path):
    tr = _trainer(dataset, tmp_path, None)
    assert tr.overlap_epoch_end is False  # a CPU: nothing to overlap with
    tr.overlap_epoch_end = True
    assert tr.overlap_epoch_end is True
    # early stopping decides after each epoch whether to train the next: always in turn
    stops = _trainer(dataset, tmp_path, True, early_stopping_patience=2)
    assert stops.overlap_epoch_end is False
    res = stops.fit()
    assert res["timing"]["epoch_end_overlapped_s"] == 0 and len(res["history"]) == 3


def test_stochastic_length_redraw_forgets_the_supervised_counts(dataset, tmp_path):
    """The graph step's per-batch supervised counts come from a per-row table read once; a new draw of the
    histories must drop it (it changes the rows)."""
    tr = _trainer(dataset, tmp_path, True, stochastic_length_alpha=1.6)
    tr._rows_supervised = torch.zeros(3, dtype=torch.int64)
    tr.stochastic_length_draw()
    assert tr._rows_supervised is None
