"""The fused second half of a SASRec block (Triton; the interpreter on a CPU) against the same math in float64,
forward and backward, with and without dropout (the kernels' own masks, read back through `dropout_masks`)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hstu_tutorial.ops import use_options

so = pytest.importorskip("hstu_tutorial.ops.triton.sasrec_output")
DEV = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-8


def layers(D: int, H: int, seed: int = 0):
    torch.manual_seed(seed)
    out_proj, ffn1, ffn2 = nn.Linear(D, D), nn.Linear(D, H), nn.Linear(H, D)
    for lin in (out_proj, ffn1, ffn2):
        nn.init.normal_(lin.bias, std=0.3)  # nonzero biases: their gradients and the padding columns show
    return [lin.to(DEV) for lin in (out_proj, ffn1, ffn2)]


def params_of(mods):
    return [t for m in mods for t in (m.weight, m.bias)]  # W_o, b_o, W_1, b_1, W_2, b_2


def ref_grads(a, x_q, mods, g, **kw):
    """`so.spelled_out` in float64 on the same values: the output and the gradients of a, x_q and the weights."""
    leaves = [t.detach().double().requires_grad_() for t in [a, x_q, *params_of(mods)]]
    out = so.spelled_out(*leaves, eps=EPS, **kw)
    return out.detach(), torch.autograd.grad(out, leaves, g.double())


CASES = [(37, 50, 50), (300, 50, 50), (130, 20, 36), (5, 16, 64)]


@pytest.mark.parametrize("M,D,H", CASES)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_matches_float64_forward_and_backward(M, D, H, p, monkeypatch):
    monkeypatch.setattr(so, "INTERPRETER_BLOCK_M", 32)  # several programs and a ragged last tile,
    monkeypatch.setattr(so, "INTERPRETER_BWD_PROGRAMS", 3)  # and backward programs that loop over tiles
    mods = layers(D, H, seed=M + D)
    torch.manual_seed(M)
    a = torch.randn(M, D, device=DEV).requires_grad_()
    x_q = F.layer_norm(torch.randn(M, D, device=DEV), (D,)).requires_grad_()
    a0, x0 = a.detach().clone(), x_q.detach().clone()
    weights0 = [t.detach().clone() for t in params_of(mods)]
    g = torch.randn(M, D, device=DEV)
    with use_options(fp32_precision="ieee", poison_outputs=True):  # every output element must be written
        torch.manual_seed(123)
        out = so.sasrec_output(a, x_q, *mods, dropout=p, eps=EPS)
        params = params_of(mods)
        (out * g).sum().backward()
    got = [a.grad, x_q.grad] + [t.grad for t in params]
    keep = {}
    if p:
        torch.manual_seed(123)  # the draw the forward made
        seed = torch.randint(0, 2**31 - 1, (1,), device=DEV)
        keep1, keep2 = so.dropout_masks(seed, M, D, H, p)
        keep = {"keep1": keep1, "keep2": keep2, "p": p}
        # both masks drop about p of their elements, independently of each other
        for k in (keep1, keep2):
            assert abs(k.float().mean().item() - (1 - p)) < 4 * (p * (1 - p) / k.numel()) ** 0.5 + 1e-3
    want, want_grads = ref_grads(a, x_q, mods, g, **keep)
    assert out.dtype == torch.float32 and out.shape == (M, D)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    names = ["a", "x_q", "W_o", "b_o", "W_1", "b_1", "W_2", "b_2"]
    for name, x, w in zip(names, got, want_grads):
        assert x.shape == w.shape, name
        torch.testing.assert_close(x.double(), w, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"{n}: {m}")
    assert torch.equal(a.detach(), a0) and torch.equal(x_q.detach(), x0)  # inputs come back unchanged
    assert all(torch.equal(t.detach(), w) for t, w in zip(params, weights0))


def test_dropout_draws_new_masks_each_call_and_none_in_eval():
    mods = layers(50, 50)
    a, x_q = torch.randn(200, 50, device=DEV), torch.randn(200, 50, device=DEV)
    one = so.sasrec_output(a, x_q, *mods, dropout=0.5, eps=EPS)
    two = so.sasrec_output(a, x_q, *mods, dropout=0.5, eps=EPS)
    assert not torch.equal(one, two)  # a new seed per call
    torch.manual_seed(5)
    three = so.sasrec_output(a, x_q, *mods, dropout=0.5, eps=EPS)
    torch.manual_seed(5)
    assert torch.equal(three, so.sasrec_output(a, x_q, *mods, dropout=0.5, eps=EPS))  # seeded: reproducible
    plain = so.sasrec_output(a, x_q, *mods, dropout=0.0, eps=EPS)
    assert torch.equal(plain, so.sasrec_output(a, x_q, *mods, dropout=0.0, eps=EPS))
    with torch.no_grad():
        want = so.spelled_out(*[t.double() for t in [a, x_q, *params_of(mods)]], eps=EPS)
        torch.testing.assert_close(plain.double(), want, rtol=2e-3, atol=2e-3)


def test_keeps_shape_and_empty():
    mods = layers(50, 50)
    x = torch.randn(3, 7, 50, device=DEV)
    assert so.sasrec_output(x, x, *mods, dropout=0.0, eps=EPS).shape == (3, 7, 50)
    empty = torch.zeros(0, 50, device=DEV, requires_grad=True)
    out = so.sasrec_output(empty, empty, *mods, dropout=0.2, eps=EPS)
    out.sum().backward()
    assert out.shape == (0, 50) and torch.equal(mods[0].weight.grad, torch.zeros_like(mods[0].weight))


def test_bad_inputs_are_refused():
    mods = layers(50, 50)
    x = torch.randn(4, 50, device=DEV)
    with pytest.raises(ValueError, match="one shape"):
        so.sasrec_output(x, x[:, :40], *mods, dropout=0.0, eps=EPS)
    with pytest.raises(ValueError, match="dropout"):
        so.sasrec_output(x, x, *mods, dropout=1.0, eps=EPS)
    with pytest.raises(ValueError, match="layers must be"):
        so.sasrec_output(x, x, mods[0], mods[1], nn.Linear(50, 40).to(DEV), dropout=0.0, eps=EPS)
    wide = layers(so.MAX_WIDTH + 2, 8)
    y = torch.randn(2, so.MAX_WIDTH + 2, device=DEV)
    with pytest.raises(ValueError, match="up to"):
        so.sasrec_output(y, y, *wide, dropout=0.0, eps=EPS)


def test_sasrec_block_takes_the_kernels_with_the_same_math(monkeypatch):
    """SASRecBlock._output through the kernels (forced on a CPU: the interpreter) against its spelled-out path:
    the same output and gradients without dropout (eval and forward_last too), and in training a run that
    drops about the configured share."""
    from hstu_tutorial.modules import sasrec

    torch.manual_seed(0)
    model = sasrec.sasrec_encoder(40, embedding_dim=24, max_seq_len=12, dropout=0.0).to(DEV)
    block = model.blocks[0]
    x = torch.randn(3, 12, 24, device=DEV)
    lengths = torch.tensor([12, 5, 1], device=DEV)
    with use_options(fp32_precision="ieee"):
        results = []
        for fused in (False, True):
            monkeypatch.setattr(sasrec, "_fused_output", lambda *args, fused=fused: fused)
            block.zero_grad()
            xi = x.clone().requires_grad_()
            out = block(xi, lengths)
            (out * torch.linspace(-1, 1, out.numel(), device=DEV).view_as(out)).sum().backward()
            last = block.forward_last(x, lengths)
            results.append(
                [out.detach(), xi.grad, last.detach()] + [p.grad.clone() for p in block.parameters()]
            )
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(sasrec, "_fused_output", lambda *args: True)
    block.dropout = 0.5
    a, x_q = torch.randn(1000, 24, device=DEV), torch.randn(1000, 24, device=DEV)
    with torch.no_grad(), use_options(fp32_precision="ieee"):
        y = F.layer_norm(x_q + block.out_proj(a), (24,), eps=1e-8)  # what is left where Dropout_2 drops
        dropped = ((block.train()._output(x_q, a) - y).abs() < 1e-5).float().mean().item()
        assert 0.45 < dropped < 0.55  # about half of the FFN's outputs dropped in training
        assert ((block.eval()._output(x_q, a) - y).abs() < 1e-5).float().mean().item() < 0.01  # none in eval


def test_fused_output_is_chosen_only_where_it_applies(monkeypatch):
    from types import SimpleNamespace

    from hstu_tutorial.modules.sasrec import _fused_output

    x = torch.randn(2, 50)
    assert not _fused_output(x, 50, 50)  # a CPU tensor: spelled out
    like_cuda = SimpleNamespace(is_cuda=True, dtype=torch.float32)  # what the choice reads of a tensor
    assert _fused_output(like_cuda, 50, 50) and not _fused_output(like_cuda, 50, so.MAX_WIDTH + 1)
    with use_options(fused_sasrec_output=False):
        assert not _fused_output(like_cuda, 50, 50)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)  # torch.compile tracing the model
    assert not _fused_output(like_cuda, 50, 50)
    if torch.cuda.is_available():
        xc = x.cuda()
        assert _fused_output(xc, 50, 50) and not _fused_output(xc.double(), 50, 50)
        assert not _fused_output(xc, so.MAX_WIDTH + 1, 50)
        with use_options(fused_sasrec_output=False):
            assert not _fused_output(xc, 50, 50)
