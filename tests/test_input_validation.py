"""The jagged and attention entry points reject what they cannot compute, with errors that name the
argument, what was expected and what was given (instead of an allocator message, zeros or NaN)."""

import pytest
import torch

from hstu_tutorial.ops import (
    check_offsets,
    dense_to_jagged,
    hstu_attention,
    jagged_to_padded,
    lengths_to_offsets,
    softmax_attention,
)
from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias

T, H, D = 7, 2, 8


def _qkv(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(T, H, D, generator=g).to(dtype) for _ in range(3)]


def _rel_bias(q, k, v, offsets, **kw):
    ts = torch.arange(q.shape[0])
    return triton_hstu_attention_rel_bias(q, k, v, offsets, ts, ts + 1, torch.zeros(9), torch.zeros(5), **kw)


ATTENTION = {
    "hstu_attention": hstu_attention,
    "softmax_attention": softmax_attention,
    "triton_hstu_attention": triton_hstu_attention,
    "triton_hstu_attention_rel_bias": _rel_bias,
}
BAD_OFFSETS = [  # (offsets for T = 7 rows, error type, message part)
    (torch.tensor([0, 3, 6]), ValueError, r"offsets\[-1\] = 6 must equal the number of jagged rows T = 7"),
    (torch.tensor([0.0, 3.0, 7.0]), TypeError, "offsets must hold integers"),
    (torch.tensor([0, 5, 3, 7]), ValueError, "offsets must not decrease"),
    (torch.tensor([1, 3, 7]), ValueError, r"offsets\[0\] must be 0 .*; got 1"),
    (torch.tensor([[0, 3, 7]]), ValueError, "offsets must be 1-D"),
]
BAD_IDS = ["sum", "float", "decreasing", "start", "2d"]


@pytest.mark.parametrize("fn", ATTENTION.values(), ids=ATTENTION.keys())
@pytest.mark.parametrize("offsets,error,match", BAD_OFFSETS, ids=BAD_IDS)
def test_attention_rejects_bad_offsets(fn, offsets, error, match):
    with pytest.raises(error, match=match):
        fn(*_qkv(), offsets)


@pytest.mark.parametrize("offsets,error,match", BAD_OFFSETS, ids=BAD_IDS)
def test_jagged_to_padded_rejects_bad_offsets(offsets, error, match):
    with pytest.raises(error, match=match):
        jagged_to_padded(torch.randn(T, 3), offsets, 5)


@pytest.mark.parametrize("fn", ATTENTION.values(), ids=ATTENTION.keys())
def test_attention_rejects_integer_inputs(fn):
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="k must be a floating-point tensor"):
        fn(q, k.long(), v, torch.tensor([0, 3, 7]))


@pytest.mark.parametrize(
    "fn",
    [ATTENTION[n] for n in ("hstu_attention", "triton_hstu_attention", "triton_hstu_attention_rel_bias")],
)
@pytest.mark.parametrize("norm", [0, -2.0, torch.tensor(0.0)])
def test_attention_rejects_non_positive_norm(fn, norm):
    with pytest.raises(ValueError, match=r"norm .* must be > 0"):
        fn(*_qkv(), torch.tensor([0, 3, 7]), norm=norm)


def test_triton_fast_path_checks_shape_and_dtype_only():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="offsets must hold integers"):  # max_len given: no value read...
        triton_hstu_attention(q, k, v, torch.tensor([0.0, 3.0, 7.0]), max_len=4)
    out = triton_hstu_attention(q, k, v, torch.tensor([0, 3, 7]), max_len=4)  # ...but a valid batch runs
    assert out.shape == (T, H, D)


@pytest.mark.parametrize("lengths", [torch.tensor([2.0, 3.0]), torch.tensor([True, False])])
def test_lengths_must_be_integers(lengths):
    with pytest.raises(TypeError, match="lengths must hold integers"):
        lengths_to_offsets(lengths)
    with pytest.raises(TypeError, match="lengths must hold integers"):
        dense_to_jagged(torch.randn(2, 4, 3), lengths)


@pytest.mark.parametrize("lengths", [torch.tensor([2, -1]), torch.tensor([5, 1])])
def test_dense_to_jagged_rejects_lengths_outside_the_padded_width(lengths):
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, N=4\]"):
        dense_to_jagged(torch.randn(2, 4, 3), lengths)


def test_valid_batches_still_pass():
    assert check_offsets(torch.tensor([0, 3, 3, 7], dtype=torch.int32), 7) == 4
    assert check_offsets(torch.tensor([0]), 0) == 0  # an empty batch
    assert check_offsets(torch.tensor([5, 1]), 7, read_values=False) is None  # values not read: no sync
    values, offsets = dense_to_jagged(torch.randn(3, 4, 2), torch.tensor([4, 0, 2], dtype=torch.int32))
    assert values.shape == (6, 2) and offsets.tolist() == [0, 4, 4, 6]
