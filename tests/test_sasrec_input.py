"""The fused first half of a SASRec block (Triton; the interpreter on a CPU): the LayerNorm and the q, k, v
products against the same math in float64, forward and backward; the bf16 operands SDPA takes; the block
through the kernels against its spelled-out "sdpa-bf16" path."""

import pytest
import torch
from torch import nn

from hstu_tutorial.ops import use_options

si = pytest.importorskip("hstu_tutorial.ops.triton.sasrec_input")
so = pytest.importorskip("hstu_tutorial.ops.triton.sasrec_output")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-8


def in_proj(D: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    lin = nn.Linear(D, 3 * D)
    nn.init.normal_(lin.bias, std=0.3)  # nonzero biases: their gradients and the padding columns show
    return lin.to(DEV)


def rel_err(got, want) -> float:
    return ((got.double() - want).norm() / want.norm().clamp_min(1e-30)).item()


CASES = [(37, 50), (300, 50), (130, 20), (5, 8), (64, 16)]


@pytest.mark.parametrize("M,D", CASES)
def test_matches_float64_forward_and_backward(M, D, monkeypatch):
    monkeypatch.setattr(so, "INTERPRETER_BLOCK_M", 32)  # several programs and a ragged last tile,
    monkeypatch.setattr(so, "INTERPRETER_BWD_PROGRAMS", 3)  # and backward programs that loop over tiles
    lin = in_proj(D)
    torch.manual_seed(1)
    x = (torch.randn(1, M, D, device=DEV) * 2 + 0.5).requires_grad_()
    P = si.padded_width(D)
    g_xq, g_q, g_k, g_v = torch.randn(M, D, device=DEV), *(torch.randn(M, P, device=DEV) for _ in range(3))
    with use_options(fp32_precision="ieee", poison_outputs=True):
        x_q, q, k, v = si.sasrec_input(x, lin, eps=EPS, dtype=torch.float32)
        assert (x_q.shape, q.shape, k.shape, v.shape) == ((1, M, D), *[(1, 1, M, P)] * 3)
        torch.autograd.backward(
            [x_q, q, k, v], [g_xq.view(1, M, D), *(g.view(1, 1, M, P) for g in (g_q, g_k, g_v))]
        )
    w_q, w_kv = lin.weight.detach().split([D, 2 * D])
    b_q, b_kv = lin.bias.detach().split([D, 2 * D])
    leaves = [t.detach().double().requires_grad_() for t in (x.view(M, D), w_q, b_q, w_kv, b_kv)]
    want = si.spelled_out(*leaves, eps=EPS)
    grads = torch.autograd.grad(want, leaves, [g_xq.double(), g_q.double(), g_k.double(), g_v.double()])
    for got, ref in zip((x_q.view(M, D), q.view(M, P), k.view(M, P), v.view(M, P)), want):
        assert rel_err(got, ref.detach()) < 1e-5
    for t in (q, k, v):  # the padding columns: exactly zero
        assert torch.equal(t[..., D:], torch.zeros_like(t[..., D:]))
    dw = torch.cat([grads[1], grads[3]])  # in_proj's weight: rows q, then k and v
    db = torch.cat([grads[2], grads[4]])
    assert rel_err(x.grad.view(M, D), grads[0]) < 1e-5
    assert rel_err(lin.weight.grad, dw) < 1e-5 and rel_err(lin.bias.grad, db) < 1e-5


def test_bf16_operands_are_the_float32_ones_rounded():
    lin = in_proj(50)
    x = torch.randn(2, 40, 50, device=DEV)
    with use_options(fp32_precision="ieee"):
        _, *exact = si.sasrec_input(x, lin, eps=EPS, dtype=torch.float32)
        x_q, *low = si.sasrec_input(x, lin, eps=EPS)
    for lo, hi in zip(low, exact):
        assert lo.dtype == torch.bfloat16 and lo.shape == (2, 1, 40, 56)
        # one rounding apart at most: the float32 values before the cast may differ in their last bits
        torch.testing.assert_close(lo.float(), hi.to(torch.bfloat16).float(), rtol=8e-3, atol=1e-6)
        assert torch.equal(lo[..., 50:].float(), torch.zeros(2, 1, 40, 6, device=DEV))
    assert x_q.dtype == torch.float32


def test_errors_name_the_problem():
    lin = in_proj(16)
    with pytest.raises(ValueError, match=r"\(B, N, D\)"):
        si.sasrec_input(torch.randn(4, 16, device=DEV), lin, eps=EPS)
    with pytest.raises(ValueError, match="in_proj must be"):
        si.sasrec_input(torch.randn(1, 4, 16, device=DEV), nn.Linear(16, 32).to(DEV), eps=EPS)
    with pytest.raises(ValueError, match="without a bias"):
        si.sasrec_input(torch.randn(1, 4, 16, device=DEV), nn.Linear(16, 48, bias=False).to(DEV), eps=EPS)
    wide = si.MAX_WIDTH + 8
    with pytest.raises(ValueError, match="up to"):
        si.sasrec_input(torch.randn(1, 2, wide, device=DEV), nn.Linear(wide, 3 * wide).to(DEV), eps=EPS)


def test_sasrec_block_takes_the_kernels_with_the_same_math(monkeypatch):
    """SASRecBlock.forward through the first half's kernels (forced on a CPU: the interpreter) against its
    spelled-out "sdpa-bf16" path: the same output and gradients, to bf16's precision (the q, k, v rounded to
    bf16 from float32 values that may differ in their last bits), with padding rows and without."""
    from hstu_tutorial.modules import sasrec

    torch.manual_seed(0)
    model = sasrec.sasrec_encoder(
        40, embedding_dim=24, max_seq_len=12, dropout=0.0, attention_impl="sdpa-bf16"
    )
    block = model.blocks[0].to(DEV)
    x = torch.randn(3, 12, 24, device=DEV)
    g = torch.linspace(-1, 1, x.numel(), device=DEV).view_as(x)
    for lengths in (torch.tensor([12, 5, 1], device=DEV), None):
        results = []
        with use_options(fp32_precision="ieee"):
            for fused in (False, True):
                monkeypatch.setattr(sasrec, "_fused_input", lambda *args, fused=fused: fused)
                block.zero_grad()
                xi = x.clone().requires_grad_()
                out = block(xi, lengths)
                (out * g).sum().backward()
                results.append([out.detach(), xi.grad] + [p.grad.clone() for p in block.parameters()])
        for i, (got, want) in enumerate(zip(results[1], results[0])):
            assert rel_err(got, want.double()) < 2e-2, i
        if lengths is not None:  # padding rows stay zero
            assert torch.equal(results[1][0][1, 5:], torch.zeros_like(results[1][0][1, 5:]))


def test_fused_input_is_chosen_only_where_it_applies(monkeypatch):
    from types import SimpleNamespace

    from hstu_tutorial.modules.sasrec import SASRecBlock, _fused_input

    block = SASRecBlock(50, attention_impl="sdpa-bf16")
    like_cuda = SimpleNamespace(is_cuda=True, dtype=torch.float32)  # what the choice reads of a tensor
    assert _fused_input(like_cuda, block)
    assert not _fused_input(torch.randn(2, 3, 50), block)  # a CPU tensor: spelled out
    assert not _fused_input(SimpleNamespace(is_cuda=True, dtype=torch.float64), block)
    assert not _fused_input(like_cuda, SASRecBlock(50, attention_impl="sdpa"))  # fp32 attention
    assert not _fused_input(like_cuda, SASRecBlock(50, num_heads=2, attention_impl="sdpa-bf16"))
    assert not _fused_input(like_cuda, SASRecBlock(si.MAX_WIDTH + 8, attention_impl="sdpa-bf16"))
    with use_options(fused_sasrec_input=False):
        assert not _fused_input(like_cuda, block)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not _fused_input(like_cuda, block)


def test_maps_still_come_from_the_spelled_out_path(monkeypatch):
    from hstu_tutorial.modules import sasrec

    block = sasrec.SASRecBlock(16, attention_impl="sdpa-bf16").to(DEV)
    monkeypatch.setattr(sasrec, "_fused_input", lambda *args: True)
    out, attn = block(torch.randn(2, 5, 16, device=DEV), None, return_attention=True)
    assert attn.shape == (2, 1, 5, 5) and out.shape == (2, 5, 16)
