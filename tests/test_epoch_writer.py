"""The epoch writer: it copies at submission, writes in order, reports failures, and the
trainer's epoch files, lines and timings stay what they promise."""

import threading
import time

import pytest
import torch

from hstu_tutorial.training import checkpoints, epoch_writer
from hstu_tutorial.training.config import load_config
from hstu_tutorial.training.epoch_writer import EpochWriter, snapshot, to_host
from hstu_tutorial.training.trainer import Trainer
from tests.test_checkpoints import TINY  # the small HSTU of the checkpoint tests

torch.set_num_threads(2)


def _trainer(dataset, tmp_path, **kw):
    cfg = load_config("synthetic/hstu-small", **{**TINY, "num_epochs": 3, "exp_dir": str(tmp_path), **kw})
    return Trainer(cfg, dataset, verbose=False)


def _load(path):
    return torch.load(path, weights_only=True)


def test_snapshot_copies_every_tensor_and_keeps_the_rest():
    w = torch.arange(6.0).reshape(2, 3)
    state = {"model": {"w": w, "b": [w[0], (w[1], 7)]}, "epoch": 3, "name": "x", "none": None}
    snap, ready = snapshot(state)
    assert ready == []  # nothing on a GPU: nothing to wait for
    w.add_(100.0)  # the training goes on: the snapshot must not move
    assert torch.equal(snap["model"]["w"], torch.arange(6.0).reshape(2, 3))
    assert torch.equal(snap["model"]["b"][0], torch.arange(3.0))
    assert torch.equal(snap["model"]["b"][1][0], torch.arange(3.0, 6.0))
    assert isinstance(snap["model"]["b"], list) and isinstance(snap["model"]["b"][1], tuple)
    assert (
        snap["model"]["b"][1][1] == 7 and snap["epoch"] == 3 and snap["name"] == "x" and snap["none"] is None
    )
    assert snap["model"]["w"].data_ptr() != w.data_ptr()
    host = to_host(snap, ready)
    assert torch.equal(host["model"]["w"], snap["model"]["w"]) and host["epoch"] == 3


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.uint8) if x.dtype.is_floating_point else x


def test_snapshot_is_bit_exact_for_every_dtype_and_layout():
    special = torch.tensor([-0.0, float("nan"), float("inf"), 1e-42, -3.5])  # a negative zero, a subnormal
    t = torch.randn(4, 6)
    state = {
        "f32": special,
        "bf16": torch.randn(5).to(torch.bfloat16),
        "step": torch.tensor(12, dtype=torch.int64),
        "mask": torch.tensor([True, False]),
        "strided": t.t(),  # not contiguous
        "empty": torch.empty(0, 3),
    }
    snap, _ = snapshot(state)
    for k, v in state.items():
        assert snap[k].dtype == v.dtype and snap[k].shape == v.shape, k
        assert snap[k].stride() == v.stride() or not v.numel(), k
        assert torch.equal(_bits(snap[k]), _bits(v)), k
        assert snap[k].data_ptr() != v.data_ptr() or not v.numel(), k


def test_a_gated_writer_runs_jobs_only_inside_a_window_or_a_flush(tmp_path):
    writer = EpochWriter(gated=True)
    ran = []
    writer.later(lambda: ran.append(1))
    time.sleep(0.1)
    assert ran == [] and writer.pending == 1  # the training thread is queueing work: hold off
    with writer.window():
        writer._jobs.join()  # inside the window the job runs
    assert ran == [1]
    writer.later(lambda: ran.append(2))
    time.sleep(0.05)
    assert ran == [1]
    writer.flush()  # a flush opens the gate for as long as it waits
    assert ran == [1, 2] and not writer._open.is_set()
    writer.allow()  # the trainer: the next epoch's first steps are queued
    writer.later(lambda: ran.append(3))
    writer._jobs.join()
    assert ran == [1, 2, 3]
    with writer.window():  # the trainer's wait for the epoch's steps: after it, hold off again
        pass
    writer.later(lambda: ran.append(4))
    time.sleep(0.05)
    assert ran == [1, 2, 3]
    writer.close()


def test_a_gated_trainer_writes_an_epochs_files_once_the_next_epochs_first_steps_are_queued(
    dataset, tmp_path, monkeypatch
):
    tr = _trainer(dataset, tmp_path, num_epochs=3, batch_size=16)
    tr.epoch_writer = EpochWriter(gated=True)  # as on a GPU (where the wait for the steps also opens it)
    real = epoch_writer.atomic_save
    seen = []

    def record(obj, path):
        seen.append((path.name, obj.get("epoch"), tr.epoch, tr.step_in_epoch))
        return real(obj, path)

    monkeypatch.setattr(epoch_writer, "atomic_save", record)
    allowed = []
    real_allow = tr.epoch_writer.allow

    def allow():
        if not allowed or allowed[-1][0] != tr.epoch:
            allowed.append((tr.epoch, tr.step_in_epoch))
        real_allow()

    tr.epoch_writer.allow = allow
    tr.fit()
    steps = -(-tr.splits["train"].num_users // 16)
    first = min(epoch_writer.STEPS_QUEUED_FIRST, steps)
    assert steps > first and allowed == [(e, first) for e in range(3)]  # from each epoch's first steps on
    lasts = [s for s in seen if s[0] == "ckpt_last.pt" and s[1] < 3]  # written in the background
    assert [s[1] for s in lasts] == [1, 2]
    for (
        _,
        done,
        epoch,
        step,
    ) in lasts:  # the file of the epochs done: once the next one's first steps are queued
        assert (epoch, step) >= (done, first), seen


def test_a_submitted_state_is_the_one_written_even_if_the_tensors_change_after(tmp_path):
    writer = EpochWriter()
    t = torch.zeros(4)
    writer.submit({"t": t}, tmp_path / "a.pt")
    t.fill_(5.0)
    writer.submit({"t": t}, tmp_path / "b.pt")
    t.fill_(9.0)
    writer.close()
    assert torch.equal(_load(tmp_path / "a.pt")["t"], torch.zeros(4))
    assert torch.equal(_load(tmp_path / "b.pt")["t"], torch.full((4,), 5.0))
    assert writer.pending == 0


def test_files_land_in_submission_order_and_a_direct_save_waits_for_them(tmp_path, monkeypatch):
    real = epoch_writer.atomic_save

    def slow(obj, path):
        time.sleep(0.05)  # the worker is still busy when the next file comes
        return real(obj, path)

    monkeypatch.setattr(epoch_writer, "atomic_save", slow)
    writer = EpochWriter()
    path = tmp_path / "ckpt_last.pt"
    for value in range(3):
        writer.submit({"v": torch.tensor(value)}, path)
    writer.flush()
    assert int(_load(path)["v"]) == 2

    class Owner:  # what checkpoints._write needs of a trainer
        epoch_writer = writer

    writer.submit({"v": torch.tensor(10)}, path)
    checkpoints._write(Owner(), {"v": torch.tensor(11)}, path, background=False)  # written now, last
    assert writer.pending == 0 and int(_load(path)["v"]) == 11
    writer.close()


def test_then_runs_after_the_file_is_in_place_and_not_after_a_failure(tmp_path):
    writer = EpochWriter()
    seen = []
    path = tmp_path / "ok.pt"
    writer.submit({"v": torch.tensor(1)}, path, then=lambda: seen.append(int(_load(path)["v"])))
    writer.flush()
    assert seen == [1]
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    writer.submit({"v": torch.tensor(2)}, blocker / "x.pt", then=lambda: seen.append("ran"))
    with pytest.raises(OSError):
        writer.flush()
    assert seen == [1]
    writer.close()


def test_a_failed_write_is_raised_by_the_next_submit_then_writing_resumes(tmp_path):
    writer = EpochWriter()
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    writer.submit({"v": torch.tensor(0)}, blocker / "x.pt")
    writer._jobs.join()  # the failure has happened, not yet reported
    with pytest.raises(OSError):
        writer.submit({"v": torch.tensor(1)}, tmp_path / "y.pt")
    writer.submit({"v": torch.tensor(2)}, tmp_path / "y.pt")  # reported once: the writer goes on
    writer.close()
    assert int(_load(tmp_path / "y.pt")["v"]) == 2


def test_later_jobs_run_in_order_with_the_files(tmp_path):
    writer = EpochWriter()
    order = []
    path = tmp_path / "a.pt"
    writer.later(lambda: order.append("first"))
    writer.submit({"v": torch.tensor(1)}, path, then=lambda: order.append("file"))
    writer.later(lambda: order.append(path.exists()))
    writer.close()
    assert order == ["first", "file", True]


def test_close_ends_the_thread_and_a_later_submit_starts_another(tmp_path):
    writer = EpochWriter()
    writer.submit({"v": torch.tensor(0)}, tmp_path / "a.pt")
    thread = writer._thread
    writer.close()
    assert not thread.is_alive() and writer._thread is None
    writer.submit({"v": torch.tensor(1)}, tmp_path / "a.pt")
    writer.close()
    assert int(_load(tmp_path / "a.pt")["v"]) == 1


def test_fit_writes_every_epoch_file_times_the_epoch_ends_and_leaves_no_thread(dataset, tmp_path):
    before = {t for t in threading.enumerate() if t.name == "epoch-writer"}
    tr = _trainer(dataset, tmp_path)
    files = []

    def callback(record):  # the epoch's files go to the writer; flushing makes them readable
        tr.flush_epoch_files()
        state = _load(tr.run_dir / "ckpt_last.pt")
        files.append(state["epoch"])
        if state["epoch"] == record["epoch"] + 1:  # the file of this epoch holds its weights
            for name, value in tr.model.state_dict().items():
                assert torch.equal(state["model"][name], value), name

    res = tr.fit(callback=callback)
    assert files == [1, 2, 2]  # the last epoch's file is written as fit ends
    assert _load(tr.run_dir / "ckpt_last.pt")["epoch"] == 3
    best = _load(tr.run_dir / "ckpt_best.pt")
    assert best["epoch"] == res["best_by_valid"]["epoch"]
    t = res["timing"]
    assert t["epoch_end_s"] > 0
    assert t["train_eval_s"] == pytest.approx(t["train_s"] + t["eval_s"] + t["epoch_end_s"])
    assert "epoch ends" in (tr.run_dir / "results.md").read_text()
    assert tr.epoch_writer._thread is None
    assert {t for t in threading.enumerate() if t.name == "epoch-writer"} <= before


def test_a_checkpoint_write_that_fails_mid_run_stops_the_run_with_its_error(dataset, tmp_path, monkeypatch):
    real = epoch_writer.atomic_save
    calls = []

    def fails_second(obj, path):
        calls.append(path.name)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(obj, path)

    monkeypatch.setattr(epoch_writer, "atomic_save", fails_second)
    tr = _trainer(dataset, tmp_path, num_epochs=4)
    with pytest.raises(OSError, match="No space left"):
        tr.fit()
    assert tr.epoch < 4  # stopped at the next epoch end, not after the whole run
    assert (tr.run_dir / calls[0]).exists()
    assert tr.epoch_writer._thread is None


def test_printed_epoch_lines_come_after_their_checkpoint(dataset, tmp_path, monkeypatch):
    from hstu_tutorial.training import progress_bars

    seen = []
    real_line = progress_bars.epoch_line

    def line(record, num_epochs):  # what a kill right after this line would find on disk
        last = tr.run_dir / "ckpt_last.pt"
        seen.append((record["epoch"], _load(last)["epoch"] if last.exists() else None))
        real_line(record, num_epochs)

    monkeypatch.setattr(progress_bars, "epoch_line", line)
    monkeypatch.setattr(progress_bars, "epoch_bar", lambda cfg, initial: None)  # lines, as in a log file
    tr = Trainer(
        load_config(
            "synthetic/hstu-small", **{**TINY, "num_epochs": 3, "exp_dir": str(tmp_path), "progress": True}
        ),
        dataset,
        verbose=True,
    )
    tr.fit()
    # every epoch's line printed once ckpt_last.pt holds it, the last one after fit's final save
    assert seen == [(0, 1), (1, 2), (2, 3)]
