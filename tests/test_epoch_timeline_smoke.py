"""benchmarks/epoch_timeline.py on a CPU (synthetic data): its clocks add up, and its checkpoint check fails
when the file written in the background does not hold the epoch's weights."""

import torch

from benchmarks import epoch_timeline as et
from hstu_tutorial.training import epoch_writer

OVERRIDES = dict(progress="false", device="cpu", num_epochs="3", timestamp_run_dir="false", max_seq_len="45")


def _run(tmp_path, **extra):
    over = {**OVERRIDES, "exp_dir": str(tmp_path), "data_dir": str(tmp_path / "data"), "name": "t", **extra}
    return et.timeline("synthetic/sasrec-small", over)


def test_clocks_add_up_and_the_checkpoint_holds_the_weights(tmp_path):
    r = _run(tmp_path)
    assert r["epochs"] == 3 and r["checkpoint_equals_weights"] is True
    parts = r["steady_train_s"] + r["steady_eval_s"] + r["steady_after_epoch_s"]
    assert 0 < parts <= r["steady_wall_s"] * 1.05 + 0.05
    assert r["epoch_end_s"] > 0 and r["reported_total_s"] <= r["fit_wall_s"]
    r["model"] = "sasrec"
    md = et.markdown([r], {"device": "cpu"})
    assert "| sasrec |" in md and "| yes |" in md


def test_the_check_sees_a_checkpoint_of_other_weights(tmp_path, monkeypatch):
    real = epoch_writer.snapshot

    def stale(obj):  # a writer that lets the weights drift from the epoch's
        out, ready = real(obj)
        for v in out.get("model", {}).values():
            if torch.is_floating_point(v):
                v.add_(1.0)
        return out, ready

    monkeypatch.setattr(epoch_writer, "snapshot", stale)
    r = _run(tmp_path)
    assert r["checkpoint_equals_weights"] is False
    assert "| NO |" in et.markdown([dict(r, model="sasrec")], {"device": "cpu"})


def test_no_check_without_checkpoints(tmp_path):
    assert _run(tmp_path, save_checkpoints="false")["checkpoint_equals_weights"] is None
