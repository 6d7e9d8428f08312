"""benchmarks/seeds_alone_vs_together.py: the divergence finder, and a CPU smoke run where seeds alone and
together must agree to the bit (one thread: the turns cannot overlap)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import seeds_alone_vs_together as sat  # noqa: E402


def _history(losses, hr=0.3):
    return [{"loss": x, "valid": {"hr@10": hr}, "test": {"hr@10": hr}} for x in losses]


def test_first_apart_finds_the_first_epoch_beyond_the_tolerance():
    a = _history([3.0, 2.0, 1.0, 0.5])
    assert sat.first_apart(a, _history([3.0, 2.0, 1.0, 0.5]), 1e-4) is None
    assert sat.first_apart(a, _history([3.0, 2.00005, 1.1, 0.5]), 1e-4) == 2  # within tol at epoch 1
    b = _history([3.0, 2.0, 1.0, 0.5])
    b[0]["test"]["hr@10"] = 0.31  # a metric, not only the loss
    assert sat.first_apart(a, b, 1e-4) == 0
    assert sat.first_apart(a, a[:2], 1e-4) == 2  # the shorter run stopped there


def test_smoke_runs_alone_and_together_agree_on_a_cpu(tmp_path):
    assert sat.main(["--smoke", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "seeds_alone_vs_together.json").read_text())
    assert payload["device"] == "cpu" and payload["seeds"] == [1, 2] and not payload["failed"]
    assert len(payload["pairs"]) == 2
    for pair in payload["pairs"]:
        assert pair["first_apart"] is None and pair["d_hr@10"] == 0 and pair["d_ndcg@10"] == 0
    text = (tmp_path / "seeds_alone_vs_together.md").read_text()
    assert "| 1 |" in text and "never" in text and "lower together in 0 of 2" in text
