"""The training section of hstu_tutorial.viz: curves, live callback, result tables, where-the-model-wins."""

import numpy as np
import pandas as pd
import pytest

from hstu_tutorial import viz
from hstu_tutorial.train import PAPER_ML1M, REFERENCE_ML1M_U2999


def _history(n=4, base=0.1):
    return [
        {
            "epoch": e,
            "loss": 5.0 - e,
            "valid": {"hr@10": base + 0.02 * e, "ndcg@10": base / 2 + 0.01 * e},
            "test": {"hr@10": base + 0.01 * e, "ndcg@10": base / 2 + 0.005 * e},
        }
        for e in range(n)
    ]


def test_training_curves_draw_the_histories():
    fig, data = viz.plot_training_curves(
        {"HSTU": _history(), "SASRec": {"history": _history(3, 0.05)}}, anchors={"HSTU": {"hr@10": 0.2}}
    )
    assert data["HSTU"]["epoch"] == [0, 1, 2, 3] and data["SASRec"]["loss"] == [5.0, 4.0, 3.0]
    assert data["HSTU"]["test/hr@10"] == pytest.approx([0.1, 0.11, 0.12, 0.13])
    assert len(fig.axes) == 3


def test_live_curves_collect_records_outside_jupyter():
    live = viz.LiveCurves("HSTU")
    for r in _history(2):
        live(r)
    live.new_run("SASRec")(_history(1)[0])
    assert list(live.runs) == ["HSTU", "SASRec"] and len(live.runs["HSTU"]) == 2


def test_results_frame_puts_ours_next_to_the_references():
    res = {
        "reference_protocol": {"epochs": [91, 100], "test_mean": {"hr@10": 0.3, "ndcg@10": 0.17}},
        "best_by_valid": {"epoch": 50, "test": {"hr@10": 0.31, "ndcg@10": 0.18}},
    }
    frame = viz.results_frame(
        {"HSTU": res}, metrics=("hr@10", "ndcg@10"), reference=REFERENCE_ML1M_U2999, paper=PAPER_ML1M
    )
    assert list(frame["source"]) == [
        "ours: test, mean of epochs 91-100",
        "ours: test at best validation epoch 50",
        "official implementation, same data (NVIDIA H200, 2026-11-28)",
        "paper (full ML-1M)",
    ]
    assert frame["hr@10"].tolist() == [0.3, 0.31, 0.2957, 0.3097]
    fig, table = viz.plot_results_bars(frame, "ndcg@10")
    assert table.loc["HSTU"].tolist() == [0.17, 0.18, 0.1666, 0.1720]


def test_seed_spread_draws_every_run_and_the_reference():
    runs = pd.DataFrame(
        {
            "model": ["HSTU", "HSTU", "HSTU", "SASRec"],
            "precision": ["tf32", "tf32", "bf16", "tf32"],
            "seed": [1, 2, 1, 1],
            "HR@10": [0.30, 0.29, 0.31, 0.28],
            "NDCG@10": [0.17, 0.16, 0.18, 0.15],
            "reference HR@10": [0.2957] * 3 + [0.2832],
            "reference NDCG@10": [0.1666] * 3 + [0.1597],
        }
    )
    fig = viz.plot_seed_spread(runs)
    ax = fig.axes[0]
    from matplotlib.collections import LineCollection, PathCollection

    dots = sorted(
        float(y) for c in ax.collections if isinstance(c, PathCollection) for _, y in c.get_offsets()
    )
    assert dots == pytest.approx([0.28, 0.29, 0.30, 0.31])  # every run is a dot
    refs = sorted(
        float(seg[0][1]) for c in ax.collections if isinstance(c, LineCollection) for seg in c.get_segments()
    )
    assert refs == pytest.approx([0.2832, 0.2957])  # one reference bar per model


def test_where_model_wins_groups_hits():
    per_user = {
        "A": pd.DataFrame(
            {"history_length": [5, 30, 30, 150], "target_item_id": [1, 2, 3, 4], "rank": [1, 20, 3, 9]}
        ),
        "B": pd.DataFrame(
            {"history_length": [5, 30, 30, 150], "target_item_id": [1, 2, 3, 4], "rank": [50, 2, 3, 1]}
        ),
    }
    popularity = np.array([0, 100, 10, 10, 1])
    by_len, by_pop = viz.where_model_wins(per_user, popularity, k=10, length_bins=(0, 20, 100, 10**9))
    assert by_len["users"].tolist() == [1, 2, 1]
    assert by_len["A HR@10"].tolist() == [1.0, 0.5, 1.0] and by_len["B HR@10"].tolist() == [0.0, 1.0, 1.0]
    assert by_pop["users"].sum() == 4
    fig, data = viz.plot_where_model_wins(per_user, popularity, k=10, length_bins=(0, 20, 100, 10**9))
    assert data["by_length"].equals(by_len)
