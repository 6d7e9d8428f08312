"""`lengths` of the Triton HSTU attention: a sequence of `offsets` that holds more rows than items (the trainer's
padded layout) attends over its first lengths[b] rows only; its other rows get zero outputs and gradients.

Checked against the float64 loop of test_triton_attention on the same items stored jagged, forward and every
gradient, with outputs NaN-filled before each run (a row a kernel must write and skips shows as NaN).
"""

import pytest
import torch

from hstu_tutorial.ops import RelativeAttentionBias, use_options
from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias
from hstu_tutorial.ops.triton.hstu_attention_autograd import attended_rows
from tests.test_triton_attention import DEVICE, FP32_TOL, check_all, loop_reference, loop_rel_bias, offsets_of

ROWS = 40  # rows per sequence, like the padded layout's N
ITEMS = [0, 1, 17, 32, 40, 23]  # empty, one item, partial tiles, a tile multiple, full


@pytest.fixture(autouse=True)
def _poison_and_small_tiles():
    with use_options(poison_outputs=True, interpreter_block=(16, 16)):
        yield


def _padded_case(seed, H=2, dqk=12, dv=20):
    B = len(ITEMS)
    g = torch.Generator().manual_seed(seed)
    T = B * ROWS
    q, k = (torch.randn(T, H, dqk, generator=g) for _ in range(2))
    v = torch.randn(T, H, dv, generator=g)
    offsets = (torch.arange(B + 1) * ROWS).to(DEVICE)
    lengths = torch.tensor(ITEMS).to(DEVICE)
    real = attended_rows(offsets, lengths, T)  # (T,) the rows that hold items
    ts = torch.cumsum(torch.randint(1, 10**6, (T,), generator=g), 0).to(DEVICE)
    nts = ts + torch.randint(0, 10**7, (T,), generator=g).to(DEVICE)
    qkv = [x.to(DEVICE).requires_grad_() for x in (q, k, v)]
    return qkv, offsets, lengths, real, ts, nts


def test_attended_rows():
    offsets = torch.tensor([0, 3, 3, 7])
    lengths = torch.tensor([2, 0, 4])
    assert attended_rows(offsets, lengths, 7).tolist() == [True, True, False, True, True, True, True]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("dq_mode", ["kernel", "atomic"])
def test_lengths_equal_the_items_alone(causal, dq_mode):
    (q, k, v), offsets, lengths, real, _, _ = _padded_case(seed=1)
    with use_options(dq_mode=dq_mode):
        out = triton_hstu_attention(q, k, v, offsets, norm=ROWS, causal=causal, lengths=lengths)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    for name, t in zip(["out", "dq", "dk", "dv"], [out, *grads]):
        assert not torch.isnan(t).any(), f"{name}: NaN left in a row"
        assert (t[~real] == 0).all(), f"{name}: rows past a sequence's items must be zero"
    ref_in = [x.detach()[real].double().requires_grad_() for x in (q, k, v)]
    ref = loop_reference(*ref_in, offsets_of(ITEMS), norm=ROWS, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_in, grad_out[real].double())
    check_all([out[real], *(g[real] for g in grads)], [ref, *ref_grads], FP32_TOL, ["out", "dq", "dk", "dv"])


@pytest.mark.parametrize("grad_mode", ["atomic", "dense"])
def test_lengths_with_the_relative_bias(grad_mode):
    (q, k, v), offsets, lengths, real, ts, nts = _padded_case(seed=2)
    bias = RelativeAttentionBias(max_len=ROWS, num_buckets=32).to(DEVICE)
    with torch.no_grad():
        bias.pos_w.normal_(0, 0.5)
        bias.ts_w.normal_(0, 0.5)
    with use_options(rel_bias_grad=grad_mode):
        out = triton_hstu_attention_rel_bias(
            q, k, v, offsets, ts, nts, bias.pos_w, bias.ts_w, norm=ROWS, lengths=lengths
        )
    params = (q, k, v, bias.pos_w, bias.ts_w)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, params, grad_out)
    for name, t in zip(["out", "dq", "dk", "dv"], [out, *grads[:3]]):
        assert (t[~real] == 0).all(), f"{name}: rows past a sequence's items must be zero"
    ref_in = [x.detach()[real].double().requires_grad_() for x in (q, k, v)]
    ref_w = [w.detach().double().requires_grad_() for w in (bias.pos_w, bias.ts_w)]
    items = offsets_of(ITEMS)
    rab = loop_rel_bias(ts[real], nts[real], items, *ref_w, N=ROWS)
    ref = loop_reference(*ref_in, items, rab=rab, norm=ROWS)
    ref_grads = torch.autograd.grad(ref, [*ref_in, *ref_w], grad_out[real].double())
    got = [out[real], *(g[real] for g in grads[:3]), *grads[3:]]
    check_all(got, [ref, *ref_grads], FP32_TOL, ["out", "dq", "dk", "dv", "dpos_w", "dts_w"])


def test_lengths_must_be_one_integer_per_sequence():
    (q, k, v), offsets, lengths, _, _, _ = _padded_case(seed=3)
    with pytest.raises(ValueError, match="lengths must be"):
        triton_hstu_attention(q, k, v, offsets, lengths=lengths[:-1])
    with pytest.raises(ValueError, match="lengths must be"):
        triton_hstu_attention(q, k, v, offsets, lengths=lengths.float())


@pytest.mark.parametrize("impl", ["triton", "pytorch"])
def test_padded_layout_step_equals_the_jagged_one(dataset, impl, monkeypatch):
    """The trainer's padded layout hands each history's item count to the attention, and its step's loss and
    gradients equal the jagged layout's (which stores no padding at all)."""
    import hstu_tutorial.ops.triton as triton_ops
    from tests.test_accumulation import _trainer_grads

    seen = []
    original = triton_ops.triton_hstu_attention_rel_bias

    def spy(*args, **kwargs):
        seen.append(kwargs.get("lengths"))
        return original(*args, **kwargs)

    monkeypatch.setattr(triton_ops, "triton_hstu_attention_rel_bias", spy)
    kw = dict(dropout=0.0, loss="full_softmax", attention_impl=impl)
    padded, loss_padded = _trainer_grads(dataset, layout="padded", **kw)
    jagged, loss_jagged = _trainer_grads(dataset, layout="jagged", **kw)
    if impl == "triton":
        assert seen and seen[0] is not None, "the padded layout's item counts never reached the kernel"
        assert all(s is None for s in seen[len(seen) // 2 :]), "a jagged batch needs no lengths"
    assert padded.keys() == jagged.keys() and len(padded) > 5
    for name in padded:
        torch.testing.assert_close(padded[name], jagged[name], rtol=1e-4, atol=1e-6, msg=name)
    assert loss_padded == pytest.approx(loss_jagged, rel=1e-5)
