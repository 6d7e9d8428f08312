"""The padded layout's batches (every history stored in exactly N rows) take the layout's reshape path: padding,
unpadding and SASRec's masks become no-ops. It must change no number: each check runs the same batch with the
path switched off (the general scatter, gather and masks) and compares, in values and gradients."""

import pytest
import torch

from hstu_tutorial.modules import hstu_encoder, sasrec_encoder
from hstu_tutorial.ops.jagged_tensors import JaggedLayout
from hstu_tutorial.perf import random_jagged_batch

N = 6


def uniform_batch(B=4, seed=0):
    """B histories of exactly N rows: the first few rows items, the rest id 0 (the padded layout)."""
    batch = random_jagged_batch([N] * B, N, 30, seed=seed, wide_time_gaps=True)
    items = torch.tensor([1, N, 3, 2][:B])
    keep = torch.arange(N)[None, :] < items[:, None]  # (B, N)
    batch.item_ids = torch.where(keep.reshape(-1), batch.item_ids, 0)
    batch.history_lengths = items
    return batch


def test_layout_knows_a_uniform_batch_from_shapes():
    assert JaggedLayout.from_batch(uniform_batch()).uniform
    jagged = random_jagged_batch([3, 1, 6, 2], N, 30, seed=1)
    assert not JaggedLayout.from_batch(jagged).uniform
    assert not JaggedLayout.from_batch(uniform_batch(), pad_width=N + 2).uniform  # wider than the rows
    # a batch that breaks the rule "no history longer than max_len" is not taken for uniform (checked on a CPU)
    broken = random_jagged_batch([N + 2, N - 2], N + 2, 30, seed=2)
    broken.max_len = N
    assert not JaggedLayout.from_batch(broken).uniform


def test_uniform_pad_and_unpad_equal_the_scatter_and_gather():
    batch = uniform_batch()
    layout = JaggedLayout.from_batch(batch)
    general = JaggedLayout.from_batch(batch)
    general.uniform = False
    x = torch.randn(batch.num_tokens, 5, requires_grad=True)
    padded = layout.pad(x)
    assert torch.equal(padded, general.pad(x)) and padded.data_ptr() == x.data_ptr()  # a view
    assert torch.equal(layout.unpad(padded), general.unpad(general.pad(x)))
    assert torch.equal(layout.index, general.index)  # computed when read


FACTORIES = {
    "sasrec": lambda: sasrec_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=N, dropout=0.0),
    "sasrec-pytorch": lambda: sasrec_encoder(
        30, embedding_dim=8, num_blocks=2, max_seq_len=N, dropout=0.0, attention_impl="pytorch"
    ),
    "hstu": lambda: hstu_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=N, dropout=0.0),
}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_encoders_give_the_same_numbers_on_the_reshape_path(name, monkeypatch):
    torch.manual_seed(0)
    model = FACTORIES[name]().double()
    batch = uniform_batch()

    def run():
        model.zero_grad()
        out = model(batch)  # (T, D)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out, grads = run()
    original = JaggedLayout.from_batch

    def general(*args, **kwargs):
        layout = original(*args, **kwargs)
        assert layout.uniform  # the batch is uniform: switched off here on purpose
        layout.uniform = False
        return layout

    monkeypatch.setattr(JaggedLayout, "from_batch", staticmethod(general))
    ref_out, ref_grads = run()
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)
    assert grads.keys() == ref_grads.keys() and len(grads) > 4
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-12, atol=1e-12, msg=name)
