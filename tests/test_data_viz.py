"""Data plots return (fig, data), and the data is what the dataset says."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hstu_tutorial import viz  # noqa: E402
from hstu_tutorial.data import get_reco_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return get_reco_dataset("synthetic", 30, tmp_path_factory.mktemp("syn"), verbose=False)


def test_time_bucket_formula():
    d = np.array([0, 1, 2, -2, 60, 3600, 86400, 10**12])
    want = [0, 0, 2, 2, 13, 27, 37, 91]  # floor(ln(max(|d|,1)) / 0.301)
    assert viz.hstu_time_bucket(d).tolist() == want
    assert viz.hstu_time_bucket(np.array([1e300])).item() == 128  # clamped


def test_data_plots(ds):
    fig, data = viz.plot_sequence_lengths(ds)
    assert data["lengths"].sum() == len(ds.ratings_df) and data["summary"]["users"] == ds.num_users
    plt.close(fig)
    fig, data = viz.plot_item_popularity(ds)
    assert data["counts"].sum() == len(ds.ratings_df) and len(data["counts"]) == len(ds.catalogue)
    assert (np.diff(data["counts"]) <= 0).all() and 0.1 < data["top_10pct_share"] < 1
    plt.close(fig)
    fig, per = viz.plot_ratings_over_time(ds)
    assert per.sum() == len(ds.ratings_df)
    plt.close(fig)
    fig, data = viz.plot_time_gaps(ds)
    assert len(data["gaps"]) == len(ds.ratings_df) - ds.num_users and (data["gaps"] >= 0).all()
    assert data["bucket_counts"].sum() == len(data["gaps"]) and data["bucket_counts"].shape == (129,)
    assert data["zero_share"] == pytest.approx((data["gaps"] == 0).mean())
    plt.close(fig)
    batch = next(iter(ds.loader("test", 8)))
    fig, data = viz.plot_padded_vs_jagged(batch)
    assert data["padded"].shape == (8, 30) and len(data["values"]) == batch.lengths.sum()
    assert data["padding_share"] == pytest.approx(1 - batch.lengths.sum().item() / (8 * 30))
    plt.close(fig)
