"""embedding_lookup: nn.Embedding's values and gradients with an index_add_ backward (no sort of the ids)."""

import pytest
import torch
from torch import nn

from hstu_tutorial.modules import hstu_encoder
from hstu_tutorial.ops import embedding_lookup

torch.set_num_threads(2)


@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
def test_matches_nn_embedding_values_and_gradients(padding_idx):
    g = torch.Generator().manual_seed(0)
    emb = nn.Embedding(9, 4, padding_idx=padding_idx).double()
    with torch.no_grad():
        emb.weight.copy_(torch.randn(9, 4, generator=g, dtype=torch.float64))  # padding row non-zero too
    ids = torch.tensor([[1, 3, 3, 0], [8, 3, 1, 1], [0, 0, 5, 8]])  # (2, 4) repeated ids and paddings
    dy = torch.randn(3, 4, 4, generator=g, dtype=torch.float64)
    weight = emb.weight.detach().clone().requires_grad_()
    got = embedding_lookup(ids, weight, emb.padding_idx)  # (3, 4, D)
    want = emb(ids)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    got.backward(dy)
    want.backward(dy)
    torch.testing.assert_close(weight.grad, emb.weight.grad)
    if emb.padding_idx is not None:
        assert weight.grad[emb.padding_idx].abs().max() == 0  # the padding row gets no gradient
    assert weight.grad[1].abs().max() > 0  # a repeated, non-padding id does


def test_gradcheck_and_int32_ids():
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([0, 2, 2, 5, 0, 1], dtype=torch.int32)
    assert torch.autograd.gradcheck(lambda w: embedding_lookup(ids.long(), w), (weight,))
    # With padding_idx the padding row is a constant by definition (nn.Embedding: no gradient), so the
    # numerical check needs outputs that do not depend on it: the padded positions are masked, as the
    # input preprocessor does.
    keep = (ids != 0).unsqueeze(-1).double()  # (T, 1)
    assert torch.autograd.gradcheck(lambda w: embedding_lookup(ids, w, 0) * keep, (weight,))
    assert torch.autograd.gradgradcheck(lambda w: embedding_lookup(ids, w, 0).pow(2) * keep, (weight,))


def test_errors_speak_to_the_learner():
    weight = torch.zeros(5, 2)
    with pytest.raises(TypeError, match="int32 or int64"):
        embedding_lookup(torch.tensor([0.0, 1.0]), weight)
    with pytest.raises(ValueError, match="padding_idx"):
        embedding_lookup(torch.tensor([0, 1]), weight, padding_idx=5)
    with pytest.raises(ValueError, match=r"\(rows, D\)"):
        embedding_lookup(torch.tensor([0, 1]), torch.zeros(5))


def test_encoder_keeps_state_dict_names_and_gradients():
    """The preprocessor still owns its nn.Embedding tables; gradients equal a plain nn.Embedding lookup."""
    torch.manual_seed(0)
    model = hstu_encoder(num_items=30, embedding_dim=8, num_blocks=1, max_seq_len=10, dropout=0.0).double()
    names = set(model.state_dict())
    assert {"preprocessor.item_emb.weight", "preprocessor.pos_emb.weight"} <= names
    ids = torch.tensor([0, 4, 4, 7, 30, 0])  # (T,) repeated ids and paddings
    pre = model.preprocessor
    emb = model.item_embeddings(ids)  # (T, D)
    want = nn.functional.normalize(pre.item_emb(ids), dim=-1, eps=1e-6)
    torch.testing.assert_close(emb, want)
    offsets = torch.tensor([0, 2, 6])
    x0 = pre(ids, offsets)  # (T, D)
    (x0.pow(2).sum() + emb.sum()).backward()
    got = pre.item_emb.weight.grad.clone(), pre.pos_emb.weight.grad.clone()
    model.zero_grad()
    positions = torch.tensor([0, 1, 0, 1, 2, 3])
    ref_x0 = pre.item_emb(ids) * 8**0.5 + pre.pos_emb(positions)  # (T, D) nn.Embedding's own backward
    ref_x0 = ref_x0 * (ids != 0).unsqueeze(-1).double()
    torch.testing.assert_close(ref_x0, x0.detach())
    (ref_x0.pow(2).sum() + want.sum()).backward()
    torch.testing.assert_close(got[0], pre.item_emb.weight.grad)
    torch.testing.assert_close(got[1], pre.pos_emb.weight.grad)
    assert got[0][0].abs().max() == 0
