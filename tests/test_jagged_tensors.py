"""Jagged tensor helpers against explicit per-sequence loops and torch.nested (jagged layout)."""

import pytest
import torch

from hstu_tutorial.ops import (
    dense_to_jagged,
    jagged_batch_ids,
    jagged_positions,
    jagged_to_padded,
    lengths_to_offsets,
    next_timestamps,
    offsets_to_lengths,
    padded_to_jagged,
    padding_mask,
)

LENGTH_CASES = [[1], [3, 1, 4], [5, 5, 5], [1, 1], [2, 7, 1, 7, 3], [4, 0, 2]]


def naive_offsets(lengths):
    out = [0]
    for n in lengths:
        out.append(out[-1] + n)
    return out


def naive_to_padded(values, lengths, N, pad=0.0):
    out = torch.full((len(lengths), N, *values.shape[1:]), pad, dtype=values.dtype)
    start = 0
    for b, n in enumerate(lengths):
        for i in range(min(n, N)):
            out[b, i] = values[start + i]
        start += n
    return out


@pytest.mark.parametrize("lengths", LENGTH_CASES)
def test_offsets_roundtrip(lengths):
    lt = torch.tensor(lengths)
    offsets = lengths_to_offsets(lt)
    assert offsets.dtype == torch.int64
    assert offsets.tolist() == naive_offsets(lengths)
    assert offsets_to_lengths(offsets).tolist() == lengths


@pytest.mark.parametrize("lengths", LENGTH_CASES)
def test_positions_and_batch_ids(lengths):
    offsets = lengths_to_offsets(torch.tensor(lengths))
    want_pos = [i for n in lengths for i in range(n)]
    want_b = [b for b, n in enumerate(lengths) for _ in range(n)]
    assert jagged_positions(offsets).tolist() == want_pos
    assert jagged_batch_ids(offsets).tolist() == want_b
    assert jagged_positions(offsets, total_length=sum(lengths)).tolist() == want_pos


@pytest.mark.parametrize("lengths", LENGTH_CASES)
@pytest.mark.parametrize("feature_shape", [(), (3,), (2, 4)])
def test_jagged_to_padded_matches_loop(lengths, feature_shape):
    g = torch.Generator().manual_seed(0)
    values = torch.randn(sum(lengths), *feature_shape, generator=g, dtype=torch.float64)
    offsets = lengths_to_offsets(torch.tensor(lengths))
    N = max(lengths) + 2
    for pad in (0.0, -1.5):
        got = jagged_to_padded(values, offsets, N, padding_value=pad)
        torch.testing.assert_close(got, naive_to_padded(values, lengths, N, pad), rtol=0, atol=0)
    # Narrower than the longest sequence: keep the first max_len items (fbgemm's convention).
    Nt = max(1, max(lengths) - 1)
    torch.testing.assert_close(jagged_to_padded(values, offsets, Nt), naive_to_padded(values, lengths, Nt))


@pytest.mark.parametrize("lengths", LENGTH_CASES)
def test_dense_to_jagged_inverts_padding(lengths):
    g = torch.Generator().manual_seed(1)
    N = max(lengths)
    padded = torch.randn(len(lengths), N, 3, generator=g, dtype=torch.float64)
    values, offsets = dense_to_jagged(padded, torch.tensor(lengths))
    want = torch.cat([padded[b, :n] for b, n in enumerate(lengths)])
    torch.testing.assert_close(values, want, rtol=0, atol=0)
    assert offsets.tolist() == naive_offsets(lengths)
    torch.testing.assert_close(padded_to_jagged(jagged_to_padded(values, offsets, N), offsets), values)


def test_dense_to_jagged_rejects_too_long_lengths():
    with pytest.raises(ValueError, match="padded width"):
        dense_to_jagged(torch.zeros(2, 3), torch.tensor([2, 4]))


def test_gradcheck_conversions():
    lengths = [2, 1, 3]
    offsets = lengths_to_offsets(torch.tensor(lengths))
    values = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: jagged_to_padded(v, offsets, 4, padding_value=0.5), (values,))
    padded = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda p: dense_to_jagged(p, torch.tensor(lengths))[0], (padded,))


@pytest.mark.parametrize("lengths", LENGTH_CASES)
def test_next_timestamps_matches_loop(lengths):
    g = torch.Generator().manual_seed(2)
    ts = torch.randint(0, 10**9, (sum(lengths),), generator=g)
    target = torch.randint(0, 10**9, (len(lengths),), generator=g)
    offsets = lengths_to_offsets(torch.tensor(lengths))
    want = []
    start = 0
    for b, n in enumerate(lengths):
        seq = ts[start : start + n].tolist()
        want += seq[1:] + [int(target[b])] if n else []
        start += n
    assert next_timestamps(ts, offsets, target).tolist() == want


def test_next_timestamps_accepts_a_batch():
    class B:  # the JaggedBatch fields next_timestamps reads
        timestamps = torch.tensor([1, 2, 3])
        offsets = torch.tensor([0, 2, 3])
        target_timestamps = torch.tensor([9, 8])

    assert next_timestamps(B()).tolist() == [2, 9, 8]


def test_padding_mask():
    m = padding_mask(torch.tensor([0, 2, 3]), 3)
    assert m.tolist() == [[False, False, False], [True, True, False], [True, True, True]]


@pytest.mark.parametrize("lengths", [[3, 1, 4], [2, 2], [1]])
def test_agrees_with_torch_nested_jagged(lengths):
    """torch.nested's jagged layout stores the same (values, offsets) pair; padding must agree."""
    g = torch.Generator().manual_seed(3)
    values = torch.randn(sum(lengths), 5, generator=g)
    offsets = lengths_to_offsets(torch.tensor(lengths))
    # Without max_seqlen, to_padded_tensor pads to T, not to the longest sequence.
    nt = torch.nested.nested_tensor_from_jagged(values, offsets, max_seqlen=max(lengths))
    torch.testing.assert_close(nt.offsets(), offsets)
    want = torch.nested.to_padded_tensor(nt, 0.0)  # (B, max_len, 5)
    torch.testing.assert_close(jagged_to_padded(values, offsets, max(lengths)), want)
    back = torch.nested.nested_tensor_from_jagged(padded_to_jagged(want, offsets), offsets)
    torch.testing.assert_close(back.values(), nt.values())
