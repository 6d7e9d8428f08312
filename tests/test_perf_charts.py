"""Performance charts draw what the benchmarks saved; the scaling fit recovers known cost terms."""

import json
from pathlib import Path

import numpy as np
import pytest

from hstu_tutorial import viz
from hstu_tutorial.perf import fit_terms

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def _points(a, b, c, lengths=(256, 512, 1024, 2048, 4096), tokens=None, d=50):
    """Points of a padded series; B = tokens // N (fixed positions per batch, as the benchmark) or B = 8."""
    pts = []
    for N in lengths:
        B = tokens // N if tokens else 8
        x2, x1 = B * N * N * d, B * N * d
        pts.append(
            {
                "series": "s",
                "sweep": "length",
                "N": N,
                "blocks": 2,
                "B": B,
                "sum_L2_d": float(x2),
                "sum_L_d": float(x1),
                "ms": a * x2 + b * x1 + c,
                "peak_mib": 1.0,
                "activations_mib": 2.0,
            }
        )
    return pts


def test_fit_recovers_the_quadratic_and_linear_terms():
    pts = _points(a=2e-9, b=3e-6, c=1.5)
    fit = fit_terms(pts)
    assert fit["a_ms_per_L2d"] == pytest.approx(2e-9, rel=1e-6)
    assert fit["b_ms_per_Ld"] == pytest.approx(3e-6, rel=1e-6)
    assert fit["c_ms"] == pytest.approx(1.5, rel=1e-6)
    assert fit["rel_rmse"] < 1e-9
    # A term that the data does not need comes out as 0, never negative.
    only_quadratic = fit_terms(_points(a=2e-9, b=0.0, c=0.0))
    assert only_quadratic["b_ms_per_Ld"] >= 0 and only_quadratic["c_ms"] >= 0
    assert only_quadratic["quadratic_share_at_max_N"] == pytest.approx(1.0, abs=1e-6)
    # With a fixed number of padded positions per batch (the benchmark's design) sum(L) d is the same at
    # every N: the N d term cannot be told from the constant, but their sum and the N^2 term are exact.
    fixed = _points(a=2e-9, b=3e-6, c=1.5, tokens=32768)
    fit = fit_terms(fixed)
    assert fit["a_ms_per_L2d"] == pytest.approx(2e-9, rel=1e-6)
    x1 = fixed[0]["sum_L_d"]
    assert fit["b_ms_per_Ld"] * x1 + fit["c_ms"] == pytest.approx(3e-6 * x1 + 1.5, rel=1e-6)


def test_plot_scaling_draws_points_and_fitted_terms():
    pts = _points(a=2e-9, b=3e-6, c=1.5, tokens=32768)
    payload = {"points": pts, "fits": {"s": fit_terms(pts)}, "machine": {"device": "X", "date_utc": "d"}}
    fig, data = viz.plot_scaling(payload)
    np.testing.assert_array_equal(data["s"]["x"], [p["N"] for p in pts])
    np.testing.assert_allclose(data["s"]["y"], [p["ms"] for p in pts])
    np.testing.assert_allclose(data["s"]["quadratic"] + data["s"]["linear"], data["s"]["y"], rtol=1e-6)
    np.testing.assert_allclose(data["s"]["quadratic"], [2e-9 * p["sum_L2_d"] for p in pts], rtol=1e-6)


def test_plot_levers_and_remedies_draw_the_rows():
    rows = [
        {
            "id": "a",
            "group": "g",
            "setting": "one",
            "tokens_per_s": 2000.0,
            "mem_mib": 10.0,
            "activations_mib": 5.0,
        },
        {
            "id": "b",
            "group": "g",
            "setting": "two",
            "tokens_per_s": 4000.0,
            "mem_mib": None,
            "activations_mib": 1.0,
        },
        {"id": "c", "group": "g", "setting": "three", "skipped": "time budget"},
    ]
    fig, data = viz.plot_levers({"rows": rows, "machine": {}, "data": "x"})
    assert data["labels"] == ["g: one", "g: two"]
    np.testing.assert_allclose(data["speed"], [2000.0, 4000.0])
    assert data["memory"][0] == 10.0 and np.isnan(data["memory"][1])
    fig, data = viz.plot_remedies([{"remedy": "base", "m": 8.0}, {"remedy": "half", "m": 4.0}], "m")
    np.testing.assert_allclose(data["ratios"], [1.0, 0.5])


@pytest.mark.parametrize("name", ["h200_2026-11-28/levers.json", "h200_2026-11-28/scaling.json"])
def test_saved_h200_results_are_labelled_with_machine_and_date(name):
    payload = json.loads((RESULTS / name).read_text())
    assert "H200" in payload["machine"]["device"] and payload["machine"]["date_utc"].startswith("20")
    rows = payload["rows"] if "rows" in payload else payload["points"]
    assert len(rows) >= 10
