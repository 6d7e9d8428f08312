"""benchmarks/profile_seeds.py's per-kernel slow-down table, on made-up traces (no GPU needed)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import profile_seeds  # noqa: E402


def test_slowdown_rows_rank_kernels_by_the_time_they_add():
    alone = {
        "gemm": {"calls": 10, "sum_s": 1.0},
        "attn": {"calls": 10, "sum_s": 2.0},
        "fill": {"calls": 5, "sum_s": 0.5},
    }
    together = {
        "gemm": {"calls": 40, "sum_s": 4.0},  # same mean: adds nothing
        "attn": {"calls": 40, "sum_s": 16.0},  # twice as slow: adds 8 s
        "fill": {"calls": 20, "sum_s": 4.0},  # twice as slow: adds 2 s
        "only_together": {"calls": 3, "sum_s": 1.0},  # not in the lone trace: left out
    }
    rows = profile_seeds.slowdown_rows(alone, together)
    assert [r["kernel"] for r in rows] == ["attn", "fill", "gemm"]
    assert rows[0]["ratio"] == pytest.approx(2.0) and rows[0]["extra_s"] == pytest.approx(8.0)
    assert rows[0]["extra_share"] == pytest.approx(0.8) and rows[1]["extra_share"] == pytest.approx(0.2)
    assert rows[2]["extra_share"] == 0.0 and rows[0]["mean_us_alone"] == pytest.approx(2e5)
    assert profile_seeds.slowdown_rows(alone, together, top=1)[0]["kernel"] == "attn"
