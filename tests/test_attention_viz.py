"""The model-core plots in hstu_tutorial.viz: tested on the data they return."""

import matplotlib
import numpy as np
import pytest
import torch

from hstu_tutorial import viz
from hstu_tutorial.modules import hstu_encoder, sasrec_encoder
from hstu_tutorial.ops import time_bucket

matplotlib.use("Agg")

from test_modules import make_batch  # noqa: E402  (the local JaggedBatch stand-in)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_plot_masks_data():
    fig, data = viz.plot_masks([3, 1, 2], max_len=4)
    assert data["causal"].shape == (4, 4) and data["causal"][0, 1] == 0 and data["causal"][3, 0] == 1
    assert data["padded"].shape == (3, 4, 4)
    assert data["padded"][1].sum() == 1  # a length-1 sequence attends only to itself
    jag = data["jagged"]
    assert jag.shape == (6, 6) and jag.sum() == 6 + 1 + 3  # causal triangles of 3, 1, 2 tokens
    assert not jag[3, 2]  # sequence 1 never sees sequence 0


def test_plot_jagged_layout_data():
    fig, data = viz.plot_jagged_layout([2, 3, 1], max_len=4)
    assert data["offsets"].tolist() == [0, 2, 5, 6]
    assert data["padded_index"].tolist() == [[0, 1, -1, -1], [2, 3, 4, -1], [5, -1, -1, -1]]


def test_plot_time_buckets_matches_op():
    fig, data = viz.plot_time_buckets(10**7)
    assert (np.diff(data["buckets"]) >= 0).all()
    np.testing.assert_array_equal(data["buckets"], time_bucket(torch.from_numpy(data["gaps"])).numpy())


@pytest.mark.parametrize(
    "build",
    [
        lambda: hstu_encoder(30, embedding_dim=8, num_blocks=2, num_heads=2, dqk=4, dv=4, max_seq_len=8),
        lambda: sasrec_encoder(30, embedding_dim=8, num_blocks=2, num_heads=2, max_seq_len=8),
    ],
)
def test_attention_maps_for_one_user(build):
    torch.manual_seed(0)
    model = build()
    batch = make_batch([3, 7], 8)
    titles = {i: f"Movie number {i} (1999)" for i in range(1, 31)}
    fig, data = viz.plot_attention_maps(model, batch, user_index=1, item_titles=titles, max_items=5)
    assert data["maps"].shape == (2, 2, 5, 5) and data["length"] == 7
    assert data["item_ids"].tolist() == batch.item_ids[5:10].tolist()  # the last 5 of user 1's 7 items
    assert data["labels"][0].startswith("Movie number")
    _, maps = model.eval()(batch, return_attention=True)
    np.testing.assert_allclose(data["maps"][1, 0], maps[1][1, 0, 2:7, 2:7].detach().numpy(), rtol=1e-6)
    assert np.triu(data["maps"][0, 0], 1).max() == 0 and np.triu(data["maps"][0, 0], 1).min() == 0


def test_attention_explorer_draws_and_redraws():
    torch.manual_seed(1)
    model = hstu_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=8)
    batch = make_batch([3, 4], 8)
    fig, data = viz.attention_explorer(model, batch)
    assert data["maps"]["maps"].shape == (2, 1, 3, 3)
    fig2 = data["draw"](1, 1, 0)
    assert fig2 is not None
    assert fig2.axes[0].get_title() == "user 1, layer 1, head 0"


def test_attention_explorer_controls_redraw():
    pytest.importorskip("ipywidgets")
    torch.manual_seed(1)
    model = hstu_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=8)
    batch = make_batch([3, 4], 8)
    _, data = viz.attention_explorer(model, batch)
    box = data["widget"]
    assert "hstu-attention-explorer" in box._dom_classes
    (user_w, layer_w, head_w), caption, image = box.children[0].children, box.children[1], box.children[2]
    assert caption.value == "user 0 · layer 0 · head 0 · last 3 of 3 items"
    assert head_w.disabled and head_w.max == 0  # one head: the slider shows it but cannot move
    first = image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n"  # PNG bytes, whatever the matplotlib backend
    user_w.value = 1
    assert caption.value == "user 1 · layer 0 · head 0 · last 4 of 4 items"
    assert image.value != first
    second = image.value
    layer_w.value = 1
    assert caption.value == "user 1 · layer 1 · head 0 · last 4 of 4 items"
    assert image.value not in (first, second)
    user_w.value, layer_w.value = 0, 0
    assert image.value == first  # the drawing depends only on the controls
