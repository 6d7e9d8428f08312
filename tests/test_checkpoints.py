"""Checkpoints: tagged files written atomically every epoch, exact resume, one-line errors for bad files."""

import os
import pickle
import shutil

import pytest
import torch

from hstu_tutorial.errors import CheckpointError
from hstu_tutorial.training import checkpoints
from hstu_tutorial.training.checkpoints import FORMAT, VERSION, atomic_save, read_checkpoint
from hstu_tutorial.training.config import load_config
from hstu_tutorial.training.trainer import Trainer, train

torch.set_num_threads(2)

TINY = dict(
    max_seq_len=20,
    embedding_dim=16,
    dqk=16,
    dv=16,
    ffn_hidden=16,
    num_negatives=16,
    batch_size=64,
    eval_batch_size=512,
    tensorboard=False,
    progress=False,
    device="cpu",
    timestamp_run_dir=False,
)


@pytest.fixture(scope="module")
def run(dataset, tmp_path_factory):
    """A finished two-epoch HSTU run: its folder holds ckpt_last.pt and ckpt_best.pt."""
    exp = tmp_path_factory.mktemp("exps")
    res = train(
        "synthetic/hstu-small", dataset=dataset, verbose=False, num_epochs=2, exp_dir=str(exp), **TINY
    )
    return res["trainer"].run_dir


def _trainer(dataset, config="synthetic/hstu-small", **kw):
    return Trainer(load_config(config, **{**TINY, "num_epochs": 2, **kw}), dataset, verbose=False)


def _one_line_error(call, *must_contain):
    with pytest.raises(CheckpointError) as info:
        call()
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert "weights_only=False" not in msg, msg
    for part in must_contain:
        assert part in msg, (part, msg)
    return msg


# ---- what is written ---------------------------------------------------------------------------------


def test_files_are_tagged_and_load_with_weights_only(run):
    last = torch.load(run / "ckpt_last.pt", weights_only=True)
    best = torch.load(run / "ckpt_best.pt", weights_only=True)
    for state in (last, best):
        assert state["format"] == FORMAT and state["version"] == VERSION
        assert isinstance(state["config"], dict) and state["config"]["model"] == "hstu"
    assert last["kind"] == "resume" and {"optimizer", "rng", "history", "best", "bad_epochs"} <= set(last)
    assert best["kind"] == "weights" and "optimizer" not in best
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind


def test_atomic_save_replaces_whole_files(tmp_path):
    path = tmp_path / "ckpt_last.pt"
    atomic_save({"x": torch.zeros(3)}, path)
    atomic_save({"x": torch.ones(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt_last.pt"]


def test_ckpt_last_is_written_after_every_epoch(dataset, tmp_path):
    seen = []

    def after_epoch(record):  # the epoch's checkpoint is handed to its writer: wait for it, then read it
        tr.flush_epoch_files()
        state = torch.load(tr.run_dir / "ckpt_last.pt", weights_only=True)
        seen.append((record["epoch"], state["epoch"], len(checkpoints.history_of(state))))

    tr = _trainer(dataset, num_epochs=3, exp_dir=str(tmp_path))
    tr.fit(callback=after_epoch)
    assert seen == [(0, 1, 1), (1, 2, 2), (2, 2, 2)]  # the last epoch's file is written when fit ends
    assert torch.load(tr.run_dir / "ckpt_last.pt", weights_only=True)["epoch"] == 3


# ---- exact resume ---------------------------------------------------------------------------------------


def test_resume_from_every_epoch_boundary_is_exact(dataset, tmp_path):
    common = dict(num_epochs=3, early_stopping_patience=5)
    straight = _trainer(dataset, exp_dir=str(tmp_path / "a"), **common).fit()
    copies = []

    def keep(record):
        tr.flush_epoch_files()
        copy = tmp_path / f"after{record['epoch']}.pt"
        shutil.copy(tr.run_dir / "ckpt_last.pt", copy)
        copies.append(copy)

    tr = _trainer(dataset, exp_dir=str(tmp_path / "b"), **common)
    tr.fit(callback=keep)
    for copy in copies[:-1]:
        res = _trainer(dataset, exp_dir=str(tmp_path / "c"), resume=str(copy), **common).fit()
        for a, b in zip(straight["history"], res["history"], strict=True):
            assert (a["loss"], a["valid"], a["test"], a["step"]) == (
                b["loss"],
                b["valid"],
                b["test"],
                b["step"],
            )
        assert res["best_by_valid"] == straight["best_by_valid"]


def test_resume_keeps_early_stopping_state(dataset, tmp_path):
    tr = _trainer(dataset, num_epochs=1, exp_dir=str(tmp_path), early_stopping_patience=2)
    tr.fit()
    tr.bad_epochs = 2  # as if the kill struck right after the epoch that spent the patience
    tr.save(tr.run_dir / "ckpt_last.pt")
    res = _trainer(dataset, num_epochs=5, early_stopping_patience=2, resume=str(tr.run_dir)).fit()
    assert res["status"] == "early_stopped" and res["epochs_run"] == 1


def test_tensorboard_continues_without_duplicate_epochs(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    kw = dict(num_epochs=3, exp_dir=str(tmp_path), tensorboard=True)
    saved = tmp_path / "after0.pt"
    tr = _trainer(dataset, **kw)
    tr.fit(
        callback=lambda r: (
            r["epoch"] == 0 and (tr.flush_epoch_files(), shutil.copy(tr.run_dir / "ckpt_last.pt", saved))
        )
    )
    shutil.copy(saved, tr.run_dir / "ckpt_last.pt")  # the kill: epochs 1-2 are lost but logged
    res = _trainer(dataset, **{**kw, "resume": str(tr.run_dir)}).fit()
    acc = EventAccumulator(str(tr.run_dir))
    acc.Reload()
    logged = [(e.step, e.value) for e in acc.Scalars("loss/train")]
    assert [s for s, _ in logged] == [0, 1, 2]
    assert [v for _, v in logged] == pytest.approx([h["loss"] for h in res["history"]])


def test_init_from_takes_the_weights_only(dataset, run, tmp_path):
    tr = _trainer(dataset, exp_dir=str(tmp_path), init_from=str(run / "ckpt_best.pt"))
    assert checkpoints.resume_or_init(tr) is False
    best = torch.load(run / "ckpt_best.pt", weights_only=True)["model"]
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, best[k]), k
    assert tr.epoch == 0 and not tr.optimizer.state  # a new run, not a resume


# ---- bad files: one line naming the file and the problem ------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    _one_line_error(lambda: read_checkpoint(tmp_path / "nope.pt"), "nope.pt", "no such checkpoint file")
    (tmp_path / "ckpt_best.pt").write_bytes(b"x")
    msg = _one_line_error(lambda: read_checkpoint(tmp_path), str(tmp_path), "no ckpt_last.pt")
    assert "ckpt_best.pt" in msg  # says what the folder holds


@pytest.mark.parametrize(
    "damage, words",
    [
        (lambda b: b"", "empty"),
        (lambda b: b[: len(b) // 2], "truncated or corrupt"),
        (lambda b: b[:-10], "truncated or corrupt"),
        (lambda b: b"this is not a checkpoint\n" * 20, "not a checkpoint of this project"),
        (lambda b: pickle.dumps({"model": 1}), "not a checkpoint of this project"),
    ],
    ids=["empty", "half", "last-bytes-cut", "text", "plain-pickle"],
)
def test_damaged_files(run, tmp_path, damage, words):
    bad = tmp_path / "ckpt_last.pt"
    bad.write_bytes(damage((run / "ckpt_last.pt").read_bytes()))
    _one_line_error(lambda: read_checkpoint(bad), str(bad), words)


class Opaque:
    """Not a tensor, not a plain value: a weights_only load refuses it."""


@pytest.mark.parametrize(
    "content, words",
    [
        ({"model": {}}, "no format"),
        ({"format": "other-project", "model": {}}, "format = 'other-project'"),
        ({"format": FORMAT, "version": VERSION + 1, "kind": "resume"}, "newer"),
        ({"format": FORMAT, "version": VERSION, "opaque": Opaque()}, "Python objects"),
    ],
    ids=["no-tag", "other-format", "future-version", "pickled-object"],
)
def test_files_that_are_not_ours(tmp_path, content, words):
    path = tmp_path / "x.pt"
    torch.save(content, path)
    _one_line_error(
        lambda: read_checkpoint(path), "x.pt", "not a checkpoint" if words != "newer" else "", words
    )


def test_weights_file_cannot_be_resumed(run):
    msg = _one_line_error(lambda: read_checkpoint(run / "ckpt_best.pt"), "ckpt_best.pt", "weights only")
    assert str(run / "ckpt_last.pt") in msg and "init_from" in msg


def test_checkpoint_of_another_model(dataset, run):
    tr = _trainer(dataset, "synthetic/sasrec-small", resume=str(run))
    msg = _one_line_error(
        lambda: checkpoints.load_checkpoint(tr, run),
        "ckpt_last.pt",
        "another model",
        "parameter names differ",
    )
    assert "model = 'hstu' in the checkpoint, 'sasrec' in the config" in msg
    wide = _trainer(dataset, embedding_dim=24)
    _one_line_error(
        lambda: wide.load_weights(run / "ckpt_best.pt"), "ckpt_best.pt", "parameter shapes differ"
    )
    # an ablated model has other weights: the message names the switch that differs, whichever it is
    for switch, words in [
        ("use_time_bias", "parameter names differ"),
        ("use_gate", "parameter shapes differ"),
    ]:
        ablated = _trainer(dataset, attention_impl="pytorch", **{switch: False})
        msg = _one_line_error(lambda m=ablated: m.load_weights(run / "ckpt_best.pt"), "ckpt_best.pt", words)
        assert f"{switch} = True in the checkpoint, False in the config" in msg, msg


def test_checkpoint_of_another_config(dataset, run):
    tr = _trainer(dataset, learning_rate=3e-3)
    msg = _one_line_error(lambda: tr.load(run), "another config", "learning_rate = 0.001 in the checkpoint")
    assert "--resume" in msg
    _trainer(dataset, num_epochs=4, exp_dir="elsewhere").load(run)  # more epochs: a resume may change it


def test_legacy_files_still_load(run, tmp_path):
    state = torch.load(run / "ckpt_best.pt", weights_only=True)
    old = {
        "format": "hstu_tutorial.train/best",
        "config": state["config"],
        "epoch": 0,
        "model": state["model"],
    }
    torch.save(old, tmp_path / "ckpt_best.pt")
    loaded, _ = read_checkpoint(tmp_path / "ckpt_best.pt", "weights")
    assert loaded["kind"] == "weights"
    _one_line_error(lambda: read_checkpoint(tmp_path / "ckpt_best.pt"), "weights only")
    assert os.path.getsize(tmp_path / "ckpt_best.pt") > 0
