"""The forward kernel with key/value tiles read through TMA tensor descriptors (`KernelOptions.tma`), in the
Triton interpreter: the same outputs and gradients as the pointer kernel, bias modes and fused-projection
views included, chosen only where it is safe (causal, aligned), and the caller's tensors left unchanged."""

import pytest
import torch

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
from hstu_tutorial.ops import KernelOptions, use_options
from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias

pytestmark = pytest.mark.skipif(
    tha.TensorDescriptor is None, reason="this Triton has no host TMA descriptors"
)


@pytest.fixture
def kinds(monkeypatch):
    """The kernel kinds each call launches."""
    seen = []
    original = tha._launch

    def spy(kind, *args):
        seen.append(kind)
        return original(kind, *args)

    monkeypatch.setattr(tha, "_launch", spy)
    return seen


def _inputs(lengths, H, D, fused, seed=0):
    g = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, *lengths]).cumsum(0)
    T = int(offsets[-1])
    if fused:  # q, k, v as views of one projection, as the STU layer makes them
        x = torch.randn(T, H, 3 * D, generator=g)
        q, k, v = x[..., :D], x[..., D : 2 * D], x[..., 2 * D :]
    else:
        q, k, v = (torch.randn(T, H, D, generator=g) for _ in range(3))
    return [t.detach().requires_grad_() for t in (q, k, v)], offsets


@pytest.mark.parametrize("bias", ["none", "rab", "rel"])
@pytest.mark.parametrize(
    "lengths,H,D,fused",
    [([5, 33, 1, 20], 1, 12, False), ([40, 7], 2, 16, True), ([17], 3, 8, True), ([1, 1, 48], 2, 20, False)],
)
def test_tma_forward_equals_the_pointer_forward(bias, lengths, H, D, fused, kinds):
    (q, k, v), offsets = _inputs(lengths, H, D, fused)
    N = max(lengths)
    g = torch.Generator().manual_seed(2)
    if bias == "rab":
        rab = torch.randn(len(lengths), H, N, N, generator=g)

        def call(q_, k_, v_):
            return triton_hstu_attention(q_, k_, v_, offsets, rab=rab, alpha=0.3)
    elif bias == "rel":
        ts = torch.randint(0, 10**6, (q.shape[0],), generator=g).cumsum(0)
        pos_w, ts_w = torch.randn(2 * N - 1, generator=g), torch.randn(9, generator=g)

        def call(q_, k_, v_):
            return triton_hstu_attention_rel_bias(q_, k_, v_, offsets, ts, ts + 5, pos_w, ts_w, alpha=0.3)
    else:

        def call(q_, k_, v_):
            return triton_hstu_attention(q_, k_, v_, offsets, alpha=0.3)

    before = [t.detach().clone() for t in (q, k, v)]
    dout = torch.randn(q.shape[0], H, D, generator=g)
    outs, grads = [], []
    for mode in ("off", "on"):
        kinds.clear()
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        with use_options(tma=mode, interpreter_block=(16, 16)):
            out = call(*leaves)
        grads.append(torch.autograd.grad(out, leaves, dout))
        outs.append(out.detach())
        assert kinds[0] == ("fwd_tma" if mode == "on" else "fwd")
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(before, (q.detach(), k.detach(), v.detach())))


def test_tma_only_where_it_is_safe(kinds):
    (q, k, v), offsets = _inputs([9, 30], 2, 8, fused=False)
    cases = [
        ("on", True, q, k, v, "fwd_tma"),
        ("off", True, q, k, v, "fwd"),
        ("auto", True, q, k, v, "fwd"),  # auto: bf16/fp16 on a Hopper GPU only, never the interpreter
        (
            "on",
            False,
            q,
            k,
            v,
            "fwd",
        ),  # non-causal: a tile past a sequence's end would hold its neighbour's keys
    ]
    (q5, k5, v5), off5 = _inputs([9, 30], 1, 5, fused=True)  # rows of 15 floats: 60 bytes, not 16-aligned
    cases.append(("on", True, q5, k5, v5, "fwd"))
    for mode, causal, q_, k_, v_, want in cases:
        kinds.clear()
        with use_options(tma=mode, interpreter_block=(16, 16)):
            triton_hstu_attention(q_, k_, v_, offsets if q_ is q else off5, causal=causal)
        assert kinds == [want], (mode, causal, q_.shape)


def test_tma_alignment_rules():
    x = torch.randn(10, 2, 8)
    assert tha._tma_aligned(x)
    assert not tha._tma_aligned(torch.randn(10, 2, 24)[..., 1:9])  # address 4 bytes past an aligned one
    assert not tha._tma_aligned(torch.randn(10, 2, 5))  # head rows of 20 bytes
    assert not tha._tma_aligned(torch.randn(10, 2, 16)[..., ::2])  # last stride 2
    assert not tha._tma_aligned(torch.randn(10, 1, 512))  # a head dim past the copy engine's 256
    opts = KernelOptions(tma="on")
    assert tha._use_tma(x, x, True, opts) and not tha._use_tma(x, x, False, opts)
    assert not tha._use_tma(x, x, True, KernelOptions(tma="off"))


def test_descriptor_blocks_follow_the_tiles():
    x = torch.randn(10, 2, 12)
    k, v = tha._descriptor(x), tha._descriptor(torch.randn(10, 2, 40))
    tha._tma_blocks({"K": k, "V": v, "BLOCK_N": 64, "BLOCK_D_QK": 16, "BLOCK_D_V": 64})
    assert k.block_shape == [64, 1, 16] and v.block_shape == [64, 1, 64]
    with pytest.raises(ValueError, match="tma"):
        KernelOptions(tma="sometimes")
