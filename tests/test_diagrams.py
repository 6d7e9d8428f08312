"""The code-drawn diagrams: they render, carry the labels of what they show, and their numbers agree
with the code they describe (the dataset's split and batches, the forward kernel's tile bounds)."""

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from hstu_tutorial import viz  # noqa: E402
from hstu_tutorial.data import get_reco_dataset  # noqa: E402


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def _render(fig):
    fig.canvas.draw()  # raises if anything cannot be drawn
    width, height = fig.canvas.get_width_height()
    assert width > 100 and height > 100


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return get_reco_dataset(
        "synthetic", 50, tmp_path_factory.mktemp("syn"), synthetic_size="ci", seed=0, verbose=False
    )


def test_stu_layer_diagram_has_every_step_and_no_ffn():
    import matplotlib.pyplot as plt

    fig, data = viz.plot_stu_layer()
    _render(fig)
    text = " ".join(_texts(fig))
    for label in (
        "LayerNorm",
        "W_{uvqk}",
        "SiLU",
        "split",
        "q k^\\top$ + rab",
        "A = SiLU",
        "/ n",
        "A · v",
        "⊙ u",
        "W_o",
        "+ x",
        "the bias enters here",
        "residual",
    ):
        assert label in text, label
    assert text.count("LayerNorm") == 2  # on the input and on A v
    for name in "uvqk":
        assert name in data["labels"]
    assert "FFN" not in " ".join(data["labels"]) and data["ffn"] is False  # no FFN box, only the note
    assert data["rab_enters_at"] in data["labels"]
    plt.close(fig)


def test_jagged_pipeline_draws_the_first_users_of_the_dataset(ds):
    import matplotlib.pyplot as plt

    fig, data = viz.plot_jagged_pipeline(ds, num_users=3)
    _render(fig)
    text = _texts(fig)
    first = ds.sequences.head(3)
    assert data["users"] == [int(u) for u in first["user_id"]]
    raw = (ds.folder / "ratings.dat").read_text(encoding="latin-1").splitlines()
    assert data["raw_lines"] == raw[:5] and raw[0] in text
    for ids, (valid, test) in zip(first["sequence_item_ids"], data["valid_test_ids"]):
        assert (valid, test) == (ids[-2], ids[-1])  # leave-one-out: the last two, in time order
        assert str(test) in text and str(ids[0]) in text
    test_targets = dict(zip(ds.test.user_ids.tolist(), ds.test.target_item_ids.tolist()))
    assert [test_targets[u] for u in data["users"]] == [t for _, t in data["valid_test_ids"]]
    # the batch drawn is the loader's: offsets = exclusive cumsum of the train histories' lengths
    train_len = dict(zip(ds.train.user_ids.tolist(), (len(h) for h in ds.train.histories())))
    assert data["lengths"] == [train_len[u] for u in data["users"]]
    assert data["offsets"] == [0, *np.cumsum(data["lengths"]).tolist()]
    assert any(str(data["offsets"]) in t for t in text)
    assert any(viz.dataset_label(ds) in t for t in text)
    plt.close(fig)


def test_dataset_label_names_the_data(ds):
    label = viz.dataset_label(ds)
    assert label.startswith("synthetic look-alike") and "500 users" in label


def test_tile_walk_matches_the_kernel_bounds_by_hand():
    # L = 100, BLOCK_M = 64, BLOCK_N = 32: query tile 0 (rows 0-63): key tiles 0, 1 straddle or touch
    # the diagonal -> masked; tiles 2, 3 right of it -> skipped. Query tile 1 (rows 64-99): keys 0-63
    # wholly before row 64 -> no mask; key tiles 2, 3 (64-127) -> masked.
    (st,) = viz.tile_walk([100], 64, 32)
    assert st.tolist() == [[2, 2, 1, 1], [3, 3, 2, 2]]
    short, long_ = viz.tile_walk([10, 100], 64, 32)
    assert short.tolist() == [[2, 0, 0, 0], [0, 0, 0, 0]]  # the second query tile's program returns at once


def test_tile_walk_agrees_with_the_tile_map_and_the_causal_cells():
    lengths = [5, 37, 64, 20, 130]
    walk = viz.tile_walk(lengths, 16, 16)
    _, tile_map = viz.plot_tile_map(lengths, block_m=16, block_n=16, max_plots=1)
    for a, b in zip(walk, tile_map["status"]):
        assert (a == b).all()
    # every causal cell (i, j <= i < L) lies in a loaded tile, and no loaded tile is wholly above the diagonal
    for L, st in zip(lengths, walk):
        for i in range(L):
            for j in range(i + 1):
                assert st[i // 16, j // 16] >= 2


def test_kernel_tile_walk_uses_the_shipped_tiles_and_counts_in_the_title():
    import matplotlib.pyplot as plt

    bm, bn, source = viz.kernel_fwd_tiles(max_seq_len=200)
    assert "tiles_sm90.json" in source and (bm, bn) == (64, 32)
    fig, data = viz.plot_kernel_tile_walk([51, 127, 49, 19], max_len=200)
    _render(fig)
    assert (data["block_m"], data["block_n"]) == (bm, bn)
    assert all(st.shape == (4, 7) for st in data["status"])  # cdiv(200, 64) query x cdiv(200, 32) key tiles
    title = fig._suptitle.get_text()
    c = data["counts"]
    assert f"BLOCK_M={bm}" in title and f"{c['masked (diagonal)']} masked" in title
    assert f"{c['skipped (causal)']} skipped" in title
    assert sum(c.values()) == 4 * 4 * 7
    text = " ".join(_texts(fig))
    assert "(3, 0)" in text and "(0, 3)" in text  # program ids: query tiles in reverse, then b * H + h
    plt.close(fig)


def test_seaborn_distributions_and_padding_fraction(ds):
    import matplotlib.pyplot as plt

    pytest.importorskip("seaborn", reason="seaborn comes with the notebooks extra")
    fig, data = viz.plot_distributions(ds)
    _render(fig)
    assert len(data["lengths"]) == len(ds.sequences) and data["lengths"].sum() == len(ds.ratings_df)
    assert len(data["gaps"]) == len(ds.ratings_df) - len(ds.sequences) and (data["gaps"] >= 0).all()
    assert data["per_item"].sum() == len(ds.ratings_df) and len(data["per_item"]) == len(ds.catalogue)
    assert viz.dataset_label(ds) in fig._suptitle.get_text()
    plt.close(fig)
    fig, frame = viz.plot_padding_fraction(ds, batch_sizes=(8, 64))
    _render(fig)
    for _size, part in frame.groupby("batch size"):
        assert part["tokens"].sum() == sum(len(h) for h in ds.train.histories())  # one epoch per size
    assert (
        (frame["to the longest"] >= 0) & (frame["to the longest"] <= frame["to the window"] + 1e-12)
    ).all()
    plt.close(fig)
