"""STU layer, HSTU and SASRec encoders against line-by-line naive versions (explicit per-sequence loops)."""

import math

import pytest
import torch
import torch.nn.functional as F

from hstu_tutorial.modules import JaggedLayout, STULayer, hstu_encoder, sasrec_encoder
from hstu_tutorial.perf import random_jagged_batch

DT = torch.float64


def make_batch(lengths, max_len, num_items=30, seed=0):
    """Random histories as a real JaggedBatch, time gaps from seconds to months (many time buckets)."""
    return random_jagged_batch(lengths, max_len, num_items, seed=seed, wide_time_gaps=True)


def bucket(d, num_buckets=128):
    return min(num_buckets, max(0, math.floor(math.log(max(abs(d), 1)) / 0.301)))


def layer_norm(x, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


def naive_stu(layer: STULayer, x, batch):
    """The STU equations (paper eqs. 1-3), one sequence, one query, one head, one key at a time."""
    H, dqk, dv, n = layer.num_heads, layer.dqk, layer.dv, layer.norm
    outs = []
    for b in range(len(batch.lengths)):
        s, e = int(batch.offsets[b]), int(batch.offsets[b + 1])
        xb, ts = x[s:e], batch.timestamps[s:e].tolist()
        nts = ts[1:] + [int(batch.target_timestamps[b])]  # query i looks at the time of item i+1
        uvqk = F.silu(layer_norm(xb, 1e-6) @ layer.uvqk)
        u, v, q, k = torch.split(uvqk, [H * dv, H * dv, H * dqk, H * dqk], dim=-1)
        av = torch.zeros(e - s, H, dv, dtype=x.dtype)
        for i in range(e - s):
            for h in range(H):
                for j in range(i + 1):
                    score = q[i, h * dqk : (h + 1) * dqk] @ k[j, h * dqk : (h + 1) * dqk]
                    if layer.rab is not None:
                        pos_w, ts_w, L = layer.rab.pos_w, layer.rab.ts_w, layer.rab.max_len
                        score = score + pos_w[L - 1 + j - i] + ts_w[bucket(nts[i] - ts[j])]
                    av[i, h] += F.silu(score) / n * v[j, h * dv : (h + 1) * dv]
        o = u * layer_norm(av.reshape(e - s, H * dv), 1e-6)
        outs.append(xb + o @ layer.o.weight.T + layer.o.bias)
    return torch.cat(outs)


STU_CASES = [([3, 1, 5], 2, 4, 3, 6), ([1], 1, 5, 5, 1), ([4, 4], 3, 2, 4, 4)]  # lengths, H, dqk, dv, N


@pytest.mark.parametrize("lengths,H,dqk,dv,N", STU_CASES)
@pytest.mark.parametrize("use_rab", [True, False])
def test_stu_layer_matches_naive(lengths, H, dqk, dv, N, use_rab):
    torch.manual_seed(0)
    D = 6
    layer = STULayer(D, H, dqk, dv, dropout=0.0, norm=9.0, num_positions=8, use_rab=use_rab).double().eval()
    with torch.no_grad():  # larger weights than the init, so every term matters numerically
        layer.uvqk.normal_(0, 0.5)
        if use_rab:
            layer.rab.pos_w.normal_(0, 0.5)
            layer.rab.ts_w.normal_(0, 0.5)
    batch = make_batch(lengths, N)
    x = torch.randn(sum(lengths), D, dtype=DT, requires_grad=True)
    layout = JaggedLayout.from_batch(batch, N, rab=layer.rab)
    out = layer(x, layout)
    want = naive_stu(layer, x, batch)
    torch.testing.assert_close(out, want, rtol=0, atol=1e-10)
    w = torch.randn_like(out)
    params = [x] + list(layer.parameters())
    g1 = torch.autograd.grad((out * w).sum(), params)
    g2 = torch.autograd.grad((want * w).sum(), params)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_stu_layer_gradcheck():
    torch.manual_seed(1)
    layer = STULayer(4, 2, 2, 3, dropout=0.0, norm=5.0, num_positions=4).double().eval()
    batch = make_batch([2, 3], 3, seed=1)
    layout = JaggedLayout.from_batch(batch, 3, rab=layer.rab)
    x = torch.randn(5, 4, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: layer(x, layout), (x, layer.uvqk))


def naive_input(model, batch, b):
    """x0 of sequence b: E[item] * sqrt(D) + P[position], position 0 = oldest (eval: no dropout)."""
    E, P = model.preprocessor.item_emb.weight, model.preprocessor.pos_emb.weight
    s, e = int(batch.offsets[b]), int(batch.offsets[b + 1])
    items = batch.item_ids[s:e].tolist()
    return torch.stack([E[it] * math.sqrt(model.embedding_dim) + P[p] for p, it in enumerate(items)])


def naive_hstu_encoder(model, batch):
    x = torch.cat([naive_input(model, batch, b) for b in range(len(batch.lengths))])
    for layer in model.blocks:
        x = naive_stu(layer, x, batch)
    return x / x.norm(dim=-1, keepdim=True)


def test_hstu_encoder_matches_naive_and_is_pad_invariant():
    torch.manual_seed(2)
    model = (
        hstu_encoder(30, embedding_dim=8, num_blocks=2, num_heads=2, dqk=3, dv=4, max_seq_len=6, dropout=0.2)
        .double()
        .eval()
    )
    assert model.norm == 17.0 and model.blocks[0].rab.max_len == 17  # max_seq_len + 11
    batch = make_batch([3, 1, 6, 2], 6, seed=2)
    out = model(batch)
    assert out.shape == (12, 8)
    torch.testing.assert_close(out, naive_hstu_encoder(model, batch), rtol=0, atol=1e-10)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(12, dtype=DT))
    # padding width is an implementation detail: a wider pad gives the same numbers
    torch.testing.assert_close(model(batch, pad_width=9), out, rtol=0, atol=1e-12)
    last = model.last_embeddings(out, batch)
    torch.testing.assert_close(last, out[torch.tensor([2, 3, 9, 11])])
    emb = model.item_embeddings(torch.tensor([[1, 2], [3, 4]]))
    assert emb.shape == (2, 2, 8)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2, 2, dtype=DT))


def test_hstu_encoder_attention_maps_and_errors():
    torch.manual_seed(3)
    model = hstu_encoder(30, embedding_dim=8, num_blocks=3, num_heads=2, dqk=4, dv=4, max_seq_len=5).eval()
    batch = make_batch([2, 5], 5)
    out, maps = model(batch, return_attention=True)
    torch.testing.assert_close(out, model(batch))
    assert len(maps) == 3 and maps[0].shape == (2, 2, 5, 5)
    assert maps[0][0, :, 2:, :].abs().max() == 0 and maps[0][1].triu(1).abs().max() == 0
    with pytest.raises(ValueError, match="max_seq_len"):
        model(make_batch([2], 40))


def test_dropout_only_in_training():
    torch.manual_seed(4)
    model = hstu_encoder(30, embedding_dim=8, max_seq_len=6, dropout=0.5)
    batch = make_batch([3, 4], 6)
    model.train()
    assert not torch.allclose(model(batch), model(batch))
    model.eval()
    torch.testing.assert_close(model(batch), model(batch))


def test_parameter_counts_ml1m():
    """The reference ML-1M models: 3,952 movie ids + padding, D=50, max_seq_len 200 (tables of 211)."""
    hstu = hstu_encoder(3952).num_parameters()
    per_layer = 50 * 4 * 50 + (50 * 50 + 50) + (2 * 211 - 1) + 129  # W_uvqk, o, pos_w, ts_w
    assert hstu == {
        "item_embedding": 3953 * 50,
        "position_embedding": 211 * 50,
        "block_0": per_layer,
        "block_1": per_layer,
        "total": 3953 * 50 + 211 * 50 + 2 * per_layer,
    }
    large = hstu_encoder(3952, num_blocks=8, num_heads=2, dqk=25, dv=25).num_parameters()
    assert large["block_7"] == per_layer and large["total"] == 3953 * 50 + 211 * 50 + 8 * per_layer
    sas = sasrec_encoder(3952).num_parameters()
    per_block = (3 * 50 * 50 + 150) + (50 * 50 + 50) + 2 * (50 * 50 + 50)
    assert sas["block_0"] == per_block and sas["total"] == 3953 * 50 + 211 * 50 + 2 * per_block


def test_initialisation_follows_the_reference():
    torch.manual_seed(5)
    model = hstu_encoder(3952)
    item = model.preprocessor.item_emb.weight
    assert item[0].abs().max() == 0 and item[1:].abs().max() <= 0.04 + 1e-7
    assert 0.015 < item[1:].std().item() < 0.02  # truncated N(0, 0.02^2) has std 0.0176
    pos_std = model.preprocessor.pos_emb.weight.std().item()
    assert abs(pos_std - math.sqrt(2 / (211 + 50))) < 0.01  # xavier normal
    assert abs(model.blocks[0].uvqk.std().item() - 0.02) < 0.002
    sas = sasrec_encoder(3952)
    assert abs(sas.preprocessor.pos_emb.weight.std().item() - 0.88 * math.sqrt(1 / 50)) < 0.02


def naive_sasrec(model, batch):
    """Per sequence, with torch.nn.MultiheadAttention holding the block's weights (the reference's layer)."""
    D = model.embedding_dim
    outs = []
    for b in range(len(batch.lengths)):
        x = naive_input(model, batch, b)[None]  # (1, L, D)
        L = x.shape[1]
        for blk in model.blocks:
            mha = torch.nn.MultiheadAttention(D, blk.num_heads, batch_first=True, dtype=x.dtype)
            with torch.no_grad():
                mha.in_proj_weight.copy_(blk.in_proj.weight)
                mha.in_proj_bias.copy_(blk.in_proj.bias)
                mha.out_proj.weight.copy_(blk.out_proj.weight)
                mha.out_proj.bias.copy_(blk.out_proj.bias)
            mha.eval()
            q = F.layer_norm(x, (D,), eps=1e-8)
            causal = torch.ones(L, L, dtype=torch.bool).triu(1)
            a, _ = mha(q, x, x, attn_mask=causal)
            y = F.layer_norm(q + a, (D,), eps=1e-8)
            x = y + blk.ffn2(F.relu(blk.ffn1(y)))
        outs.append(x[0])
    x = torch.cat(outs)
    return x / x.norm(dim=-1, keepdim=True)


@pytest.mark.parametrize("num_heads", [1, 2])
def test_sasrec_matches_multihead_attention_per_sequence(num_heads):
    torch.manual_seed(6)
    model = (
        sasrec_encoder(30, embedding_dim=8, num_blocks=2, num_heads=num_heads, ffn_hidden=5, max_seq_len=6)
        .double()
        .eval()
    )
    batch = make_batch([3, 1, 6], 6)
    out, maps = model(batch, return_attention=True)
    torch.testing.assert_close(out, naive_sasrec(model, batch), rtol=0, atol=1e-10)
    torch.testing.assert_close(model(batch, pad_width=8), out, rtol=0, atol=1e-12)
    assert maps[1].shape == (3, num_heads, 6, 6)
    torch.testing.assert_close(maps[0][0, :, :3, :3].sum(-1), torch.ones(num_heads, 3, dtype=DT))


@pytest.mark.parametrize("num_heads", [1, 2])
def test_sasrec_fused_attention_matches_spelled_out(num_heads):
    """attention_impl="sdpa" (the default) and "pytorch" give the same encoder, forward and backward."""
    torch.manual_seed(16)
    kw = dict(embedding_dim=10, num_blocks=2, num_heads=num_heads, ffn_hidden=6, max_seq_len=6)
    fused = sasrec_encoder(30, **kw).double().eval()
    spelled = sasrec_encoder(30, attention_impl="pytorch", **kw).double().eval()
    spelled.load_state_dict(fused.state_dict())
    batch = make_batch([3, 1, 6], 6)
    out = fused(batch)
    torch.testing.assert_close(out, spelled(batch), rtol=0, atol=1e-12)
    torch.testing.assert_close(out, naive_sasrec(fused, batch), rtol=0, atol=1e-10)
    g1 = torch.autograd.grad(out.sum(), list(fused.parameters()), allow_unused=True)
    g2 = torch.autograd.grad(spelled(batch).sum(), list(spelled.parameters()), allow_unused=True)
    for a, b in zip(g1, g2):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="attention_impl"):
        sasrec_encoder(30, attention_impl="triton")


def _norm_rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.parametrize("num_heads", [1, 2])
def test_sasrec_bf16_attention_matches_spelled_out_to_bf16_precision(num_heads):
    """attention_impl="sdpa-bf16": the same encoder as the spelled-out fp64 one, to bf16's precision (q, k, v
    rounded to 8 bits), forward and every gradient; a mask, scale or weight mistake would be off by far more."""
    torch.manual_seed(17)
    kw = dict(embedding_dim=16, num_blocks=2, num_heads=num_heads, ffn_hidden=12, max_seq_len=8)
    bf16 = sasrec_encoder(40, attention_impl="sdpa-bf16", **kw).eval()
    ref = sasrec_encoder(40, attention_impl="pytorch", **kw).double().eval()
    ref.load_state_dict(bf16.state_dict())
    batch = make_batch([3, 1, 8, 6, 8], 8)
    out, want = bf16(batch), ref(batch)
    assert out.dtype == torch.float32
    assert 1e-5 < _norm_rel(out, want) < 1e-2  # really rounded to bf16, and only that
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    grads = torch.autograd.grad((out * w).sum(), list(bf16.parameters()))
    ref_grads = torch.autograd.grad((want * w.double()).sum(), list(ref.parameters()))
    for (name, _), g, r in zip(bf16.named_parameters(), grads, ref_grads):
        assert _norm_rel(g, r) < 5e-2, name
    # dropout=0 in eval mode: the same call twice gives the same numbers
    torch.testing.assert_close(bf16(batch), out, rtol=0, atol=0)


def test_bf16_autocast_runs():
    torch.manual_seed(7)
    kw = dict(embedding_dim=8, max_seq_len=6)
    for model in (hstu_encoder(30, **kw), sasrec_encoder(30, **kw)):
        batch = make_batch([3, 6], 6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
        assert torch.isfinite(out.float()).all()
        out.float().sum().backward()


def test_triton_dispatch_matches_pytorch():
    pytest.importorskip("triton")
    torch.manual_seed(8)
    model = hstu_encoder(30, embedding_dim=8, num_blocks=1, num_heads=1, dqk=8, dv=8, max_seq_len=6).eval()
    batch = make_batch([3, 1, 6], 6)
    ref = model(batch)
    for layer in model.blocks:
        layer.attention_impl = "triton"
    model.attention_impl = "triton"
    torch.testing.assert_close(model(batch), ref, rtol=1e-4, atol=1e-4)


def test_recompute_gives_the_same_gradients():
    torch.manual_seed(9)
    model = hstu_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=6, dropout=0.0).double().train()
    batch = make_batch([3, 6, 2], 6)
    model(batch).pow(2).sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_recompute(True)(batch).pow(2).sum().backward()
    for p, g in zip(model.parameters(), want):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-12)


def test_saved_activation_bytes_counts_what_backward_keeps():
    from hstu_tutorial.modules import saved_activation_bytes

    w = torch.nn.Parameter(torch.randn(4, 4))
    x = torch.randn(10, 4, requires_grad=True)
    out, nbytes = saved_activation_bytes(lambda x: torch.tanh(x @ w), x)
    assert out.shape == (10, 4)
    assert nbytes == 2 * 10 * 4 * 4  # x (for the weight's grad) and tanh's output; w not counted


def test_use_rab_false_builds_a_model_without_relative_bias():
    torch.manual_seed(10)
    kw = dict(embedding_dim=8, num_blocks=2, num_heads=2, dqk=3, dv=4, max_seq_len=6, dropout=0.0)
    plain = hstu_encoder(30, use_rab=False, **kw).double().eval()
    assert all(layer.rab is None for layer in plain.blocks)
    assert not any("rab" in name for name, _ in plain.named_parameters())
    with_rab = hstu_encoder(30, **kw).double().eval()
    assert all(layer.rab is not None for layer in with_rab.blocks)
    # Same weights apart from the bias tables: zeroing the tables gives the model without bias.
    with_rab.load_state_dict(plain.state_dict(), strict=False)
    batch = make_batch([3, 1, 6], 6)
    assert not torch.allclose(with_rab(batch), plain(batch))
    with torch.no_grad():
        for layer in with_rab.blocks:
            layer.rab.pos_w.zero_()
            layer.rab.ts_w.zero_()
    torch.testing.assert_close(with_rab(batch), plain(batch), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "factory, kwargs, words",
    [
        (hstu_encoder, dict(num_blocks=0), ["hstu_encoder", "num_blocks", ">= 1", "got 0"]),
        (hstu_encoder, dict(num_heads=-1), ["num_heads", "got -1"]),
        (hstu_encoder, dict(num_heads=0), ["num_heads", "got 0"]),
        (hstu_encoder, dict(dqk=0), ["dqk", "got 0"]),
        (hstu_encoder, dict(embedding_dim=2.5), ["embedding_dim", "integer", "got 2.5"]),
        (hstu_encoder, dict(dropout=1.0), ["dropout", "[0, 1)", "got 1.0"]),
        (hstu_encoder, dict(dropout=-0.1), ["dropout", "got -0.1"]),
        (hstu_encoder, dict(max_seq_len=0), ["max_seq_len", "got 0"]),
        (sasrec_encoder, dict(num_blocks=0), ["sasrec_encoder", "num_blocks", "got 0"]),
        (sasrec_encoder, dict(num_heads=0), ["sasrec_encoder", "num_heads", "got 0"]),
        (sasrec_encoder, dict(embedding_dim=50, num_heads=3), ["divisible", "=50", "num_heads=3"]),
        (sasrec_encoder, dict(dropout=1.5), ["sasrec_encoder", "dropout", "got 1.5"]),
        (sasrec_encoder, dict(ffn_hidden=0), ["ffn_hidden", "got 0"]),
    ],
)
def test_bad_sizes_name_the_argument(factory, kwargs, words):
    with pytest.raises(ValueError) as e:
        factory(30, **kwargs)
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_state_dict_names_blocks_and_loads_older_layers_names():
    torch.manual_seed(11)
    model = hstu_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=6).eval()
    state = model.state_dict()
    assert "blocks.1.uvqk" in state and not any(k.startswith("layers.") for k in state)
    older = {k.replace("blocks.", "layers.", 1): v for k, v in state.items()}  # the stack's former name
    fresh = hstu_encoder(30, embedding_dim=8, num_blocks=2, max_seq_len=6).eval()
    fresh.load_state_dict(older)
    batch = make_batch([3, 5], 6)
    torch.testing.assert_close(fresh(batch), model(batch), rtol=0, atol=0)
