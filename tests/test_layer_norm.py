"""The fused Triton LayerNorm (interpreter on a CPU) against F.layer_norm, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

from hstu_tutorial.ops import use_options
from hstu_tutorial.ops.layer_norm import layer_norm

tln = pytest.importorskip("hstu_tutorial.ops.triton.layer_norm")
DEV = "cuda" if torch.cuda.is_available() else "cpu"  # the interpreter on a CPU, the kernels on a GPU


SHAPES = [((37, 50), 1e-6), ((2, 9, 50), 1e-8), ((5, 3), 1e-5), ((300, 64), 1e-6)]


@pytest.mark.parametrize("shape,eps", SHAPES)
def test_triton_layer_norm_matches_torch(shape, eps, monkeypatch):
    monkeypatch.setattr(tln, "INTERPRETER_TILE_ELEMENTS", 1024)  # several programs, a ragged last tile
    torch.manual_seed(sum(shape))
    x = (torch.randn(*shape, device=DEV) * 3 + 1).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    y = tln.triton_layer_norm(x, eps)
    want = F.layer_norm(x_ref, (shape[-1],), eps=eps)
    assert y.shape == want.shape and y.dtype == want.dtype
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(want)
    (y * grad).sum().backward()
    (want * grad).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def test_triton_layer_norm_strided_input_and_bf16():
    torch.manual_seed(1)
    base = torch.randn(20, 120, device=DEV)
    x = base[:, 10:60]  # rows of 50 with a row stride of 120
    torch.testing.assert_close(
        tln.triton_layer_norm(x, 1e-6), F.layer_norm(x, (50,), eps=1e-6), rtol=1e-5, atol=1e-5
    )
    xb = x.to(torch.bfloat16)
    y = tln.triton_layer_norm(xb, 1e-6)  # loads and stores bf16, computes in fp32
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), F.layer_norm(xb.float(), (50,), eps=1e-6), rtol=0, atol=2e-2)
    with torch.autocast(DEV, dtype=torch.bfloat16):  # autocast's policy: norms give float32
        assert tln.triton_layer_norm(xb, 1e-6).dtype == torch.float32


def test_triton_layer_norm_empty_and_too_wide():
    assert tln.triton_layer_norm(torch.randn(0, 50, device=DEV), 1e-6).shape == (0, 50)
    with pytest.raises(ValueError, match="rows of up to"):
        tln.triton_layer_norm(torch.randn(2, tln.MAX_WIDTH + 1), 1e-6)


def test_dispatch():
    x = torch.randn(4, 50, dtype=torch.float64)  # CPU and float64: F.layer_norm itself
    assert torch.equal(layer_norm(x, 1e-6), F.layer_norm(x, (50,), eps=1e-6))
    if torch.cuda.is_available():
        x = torch.randn(1000, 50, device="cuda")
        want = F.layer_norm(x, (50,), eps=1e-6)
        torch.testing.assert_close(layer_norm(x, 1e-6), want, rtol=1e-5, atol=1e-5)
        with use_options(fused_layer_norm=False):  # read at call time: PyTorch's kernel, bit for bit
            assert torch.equal(layer_norm(x, 1e-6), want)
