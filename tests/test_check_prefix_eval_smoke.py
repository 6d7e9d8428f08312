"""benchmarks/check_prefix_eval.py on a CPU (synthetic data): it passes on the package, and fails when the
one-pass ranks are wrong."""

import torch

import hstu_tutorial.training.prefix_eval as prefix_eval
import hstu_tutorial.training.trainer as trainer_module
from benchmarks import check_prefix_eval as cpe

CONFIG = "synthetic/sasrec-small"
OVERRIDES = dict(progress=False, tensorboard=False, save_checkpoints=False, max_seq_len=45, device="cpu")


def test_passes_on_the_package():
    r = cpe.run(CONFIG, OVERRIDES, steps=2)
    assert r["ok"] and r["unchanged"] and 0 < r["covered"] < r["valid_users"]
    assert all(row["ranks_differ"] == 0 for row in r["rows"])


def test_fails_when_one_pass_ranks_are_off(monkeypatch):
    original = prefix_eval.paired_ranks

    def off_by_some(*args, **kwargs):
        valid, test = original(*args, **kwargs)
        return valid + (torch.arange(valid.numel()) % 2), test  # every other validation user one place lower

    monkeypatch.setattr(prefix_eval, "paired_ranks", off_by_some)
    monkeypatch.setattr(trainer_module, "paired_ranks", off_by_some)
    r = cpe.run(CONFIG, OVERRIDES, steps=1)
    assert not r["ok"]
    assert any(row["split"].startswith("valid") and row["ranks_differ"] > 0 for row in r["rows"])
