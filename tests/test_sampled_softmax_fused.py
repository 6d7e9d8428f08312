"""The sampled softmax's Triton kernels (interpreter on a CPU) against the float64 "gather" formula.

Loss, query gradient and item-table gradient, with accidental hits, negatives drawn twice, rows of weight 0,
strided queries, bf16 inputs, tiny temperatures, and the GPU's tiling (several tiles of negatives per row)."""

import pytest
import torch

from hstu_tutorial import losses

tss = pytest.importorskip("hstu_tutorial.ops.triton.sampled_softmax")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(params=tss.BACKWARDS, autouse=True)
def backward(request, monkeypatch):
    """Every test runs with every backward pass."""
    monkeypatch.setattr(tss, "BACKWARD", request.param)
    return request.param


def make_case(M, D, C, R, seed, hits=True, dups=True):
    g = torch.Generator().manual_seed(seed)
    case = {
        "query": torch.randn(M, D, generator=g, dtype=torch.float64),
        "table": torch.randn(C + 1, D, generator=g, dtype=torch.float64),  # row 0: padding id
        "catalogue": torch.arange(1, C + 1),
        "positive_ids": torch.randint(1, C + 1, (M,), generator=g),
        "negatives": torch.randint(0, C, (M, R), generator=g),
        "weights": (torch.rand(M, generator=g) > 0.25).double(),
    }
    if hits and M > 1:  # row 0: some negatives are the positive; row 1 (R >= 2): every negative is
        case["negatives"][0, : max(1, R // 3)] = case["positive_ids"][0] - 1
        case["negatives"][1, :] = case["positive_ids"][1] - 1
    if dups and M > 2 and R >= 2:  # row 2: one negative drawn twice
        case["negatives"][2, 1] = case["negatives"][2, 0]
    return case


def run(case, impl, dtype, temperature=0.05, items_grad=True, query_view=None):
    """loss, dquery, dtable of one forward + backward, as float64 on the CPU."""
    query = case["query"].to(DEV, dtype)
    if query_view is not None:
        query = query_view(query)
    query = query.detach().requires_grad_()
    table = case["table"].to(DEV, dtype).detach().requires_grad_(items_grad)
    loss = losses.sampled_softmax_loss(
        query,
        case["positive_ids"].to(DEV),
        lambda ids: table[ids],
        case["catalogue"].to(DEV),
        temperature=temperature,
        weights=case["weights"].to(DEV),
        negatives=case["negatives"].to(DEV),
        impl=impl,
    )
    loss.backward()
    dtable = table.grad.double().cpu() if items_grad else None
    return loss.double().cpu(), query.grad.double().cpu(), dtable


def assert_matches(got, want, tol):
    for name, a, b in zip(("loss", "dquery", "dtable"), got, want):
        scale = b.abs().max().clamp(min=1e-12)
        err = ((a - b).abs().max() / scale).item()
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


SHAPES = [  # (M, D, C, R): widths that are no power of two, R not a multiple of a tile, R = 1, one row
    (37, 10, 23, 9),
    (64, 50, 97, 128),
    (5, 3, 4, 1),
    (1, 16, 7, 5),
    (20, 33, 11, 40),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gpu_tiles", [False, True])
def test_fused_matches_float64_gather(shape, gpu_tiles, monkeypatch):
    if gpu_tiles and DEV == "cpu":  # the GPU's tiling in the interpreter: several tiles of negatives per row
        monkeypatch.setattr(tss, "is_interpreter", lambda: False)
        monkeypatch.setattr(tss, "GPU_BLOCK_R", 4)
        monkeypatch.setattr(tss, "GPU_SEGMENT_BLOCK", 4)  # several tiles per item's segment
    case = make_case(*shape, seed=sum(shape))
    want = run(case, "gather", torch.float64)
    got = run(case, "fused", torch.float32)
    assert_matches(got, want, 2e-6)


def test_inputs_unchanged_and_unit_weight_rows_only():
    case = make_case(30, 12, 17, 16, seed=3)
    case["weights"][5:12] = 0.0
    before = {k: v.clone() for k, v in case.items()}
    query = case["query"].float().requires_grad_()
    table = case["table"].float().requires_grad_()
    q0, t0 = query.detach().clone(), table.detach().clone()
    loss = losses.sampled_softmax_loss(
        query, case["positive_ids"], lambda ids: table[ids], case["catalogue"],
        weights=case["weights"], negatives=case["negatives"], impl="fused",
    )  # fmt: skip
    loss.backward()
    assert torch.equal(query.detach(), q0) and torch.equal(table.detach(), t0)
    for k, v in before.items():
        assert torch.equal(case[k], v), f"{k} changed"
    # rows of weight 0 get exactly zero gradient (the backward skips them)
    assert torch.count_nonzero(query.grad[5:12]) == 0
    assert torch.count_nonzero(query.grad[:5]) > 0


@pytest.mark.parametrize("gpu_tiles", [False, True])
def test_every_item_row_written_and_direct_call_matches_float64(gpu_tiles, monkeypatch):
    """A catalogue mostly unsampled (their dE rows must be written as zeros: outputs start NaN-poisoned), a
    popular item sampled by most rows, columns repeated within a row, accidental hits, rows of zero gradient."""
    from hstu_tutorial.ops import use_options

    if gpu_tiles and DEV == "cpu":
        monkeypatch.setattr(tss, "is_interpreter", lambda: False)
        monkeypatch.setattr(tss, "GPU_BLOCK_R", 4)
        monkeypatch.setattr(tss, "GPU_SEGMENT_BLOCK", 4)
    g = torch.Generator().manual_seed(11)
    M, D, C, R = 9, 6, 60, 7
    q = torch.randn(M, D, generator=g, dtype=torch.float64)
    e = torch.randn(C, D, generator=g, dtype=torch.float64)
    cols = torch.randint(0, 10, (M, 1 + R), generator=g)  # items 10 .. 59 never sampled
    cols[:, 3] = 4  # item 4 in every row, the positive of row 0 too
    cols[0, 0] = 4
    cols[1, 2] = cols[1, 1]  # a negative drawn twice
    dloss = torch.rand(M, generator=g, dtype=torch.float64)
    dloss[[2, 5]] = 0.0
    ref_q, ref_e = q.clone().requires_grad_(), e.clone().requires_grad_()
    want = losses.sampled_softmax_rows(ref_q, ref_e, cols, 0.1)
    want_dq, want_de = torch.autograd.grad(want, [ref_q, ref_e], dloss)
    qf, ef = (t.float().to(DEV).requires_grad_() for t in (q, e))
    with use_options(poison_outputs=True):
        got = tss.triton_sampled_softmax(qf, ef, cols.to(DEV), 0.1)
        dq, de = torch.autograd.grad(got, [qf, ef], dloss.float().to(DEV))
    for a, b in ((got, want), (dq, want_dq), (de, want_de)):
        assert torch.isfinite(a).all()
        assert ((a.double().cpu() - b).abs().max() / b.abs().max()).item() < 2e-6
    assert torch.count_nonzero(de[10:]) == 0 and torch.count_nonzero(dq[[2, 5]]) == 0


def test_tiny_temperature_is_stable():
    # scores up to 1 / 0.002 = 500: exp would overflow without the running max
    case = make_case(25, 8, 13, 20, seed=11)
    want = run(case, "gather", torch.float64, temperature=0.002)
    got = run(case, "fused", torch.float32, temperature=0.002)
    assert all(torch.isfinite(t).all() for t in got)
    assert_matches(got, want, 2e-5)


def test_strided_query_bf16_and_no_item_grad():
    case = make_case(24, 20, 15, 12, seed=5)
    want = run(case, "gather", torch.float64)
    # a query that is a column slice of a wider matrix (row stride 40)
    wide = lambda q: torch.cat([q, torch.zeros_like(q)], dim=1)[:, :20]  # noqa: E731
    assert_matches(run(case, "fused", torch.float32, query_view=wide), want, 2e-6)
    got = run(case, "fused", torch.float32, items_grad=False)
    assert got[2] is None
    assert_matches(got[:2], want[:2], 2e-6)
    # bf16 inputs, fp32 arithmetic: the kernel's loss is the float64 loss of the same bf16 values
    cols = torch.cat(
        [losses.catalogue_index(case["catalogue"], case["positive_ids"])[:, None], case["negatives"]], 1
    )
    qb = case["query"].to(DEV, torch.bfloat16).requires_grad_()
    eb = case["table"][1:].to(DEV, torch.bfloat16).requires_grad_()
    got = tss.triton_sampled_softmax(qb, eb, cols.to(DEV), 0.05)
    dl = torch.rand(got.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (got * dl.to(DEV).float()).sum().backward()
    assert got.dtype == torch.float32 and qb.grad.dtype == eb.grad.dtype == torch.bfloat16
    q64 = qb.detach().double().cpu().requires_grad_()
    e64 = eb.detach().double().cpu().requires_grad_()
    want = losses.sampled_softmax_rows(q64, e64, cols, 0.05)
    (want * dl).sum().backward()
    assert_matches(
        (got.double().cpu(), qb.grad.double().cpu(), eb.grad.double().cpu()), (want, q64.grad, e64.grad), 1e-2
    )
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=1e-6, atol=1e-5)


def test_direct_call_per_row_losses_and_errors(monkeypatch):
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(6, 5), dim=1)
    e = torch.nn.functional.normalize(torch.randn(9, 5), dim=1)
    cols = torch.tensor([[0, 1, 2], [3, 3, 3], [4, 5, 4], [8, 0, 1], [2, 2, 7], [6, 7, 8]])
    got = tss.triton_sampled_softmax(q, e, cols, 0.5)
    torch.testing.assert_close(got, losses.sampled_softmax_rows(q, e, cols, 0.5), rtol=1e-6, atol=1e-6)
    assert got[1].item() == 0.0  # every negative is the positive: the loss is log(1)
    with pytest.raises(ValueError, match="shapes do not match"):
        tss.triton_sampled_softmax(q, e[:, :4], cols, 0.5)
    with pytest.raises(ValueError, match="shapes do not match"):
        tss.triton_sampled_softmax(q, e, cols[:5], 0.5)
    with pytest.raises(ValueError, match=r"query \(M, D\)"):
        tss.triton_sampled_softmax(q[0], e, cols, 0.5)
    with pytest.raises(ValueError, match="temperature"):
        tss.triton_sampled_softmax(q, e, cols, 0.0)
    with pytest.raises(ValueError, match="backward must be"):
        tss.triton_sampled_softmax(q, e, cols, 0.5, backward="sparse")
    if DEV == "cpu":
        with pytest.raises(ValueError, match="one device"):
            tss.triton_sampled_softmax(q, e.to("meta"), cols, 0.5)
        with monkeypatch.context() as m:  # a CPU tensor outside the interpreter: a clear error, no launch
            m.delenv("TRITON_INTERPRET")
            with pytest.raises(ValueError, match="runs on CUDA tensors"):
                tss.triton_sampled_softmax(q, e, cols, 0.5)
    assert tss.triton_sampled_softmax(q[:0], e, cols[:0], 0.5).shape == (0,)


def test_auto_backward_is_segments(monkeypatch):
    assert tss.backward_for("auto") == "segments"
    assert all(tss.backward_for(b) == b for b in tss.BACKWARDS)
    with pytest.raises(ValueError, match="backward must be"):
        tss.backward_for("fast")
    seen = []
    real = tss._SampledSoftmax.apply
    monkeypatch.setattr(tss._SampledSoftmax, "apply", lambda *a: seen.append(a[-1]) or real(*a))
    monkeypatch.setattr(tss, "BACKWARD", "auto")
    q, e = torch.randn(4, 3), torch.randn(200, 3)
    tss.triton_sampled_softmax(q, e, torch.randint(0, 200, (4, 5)), 0.5)
    tss.triton_sampled_softmax(q, e, torch.randint(0, 200, (4, 5)), 0.5, backward="matrix")
    assert seen == ["segments", "matrix"]
    with pytest.raises(ValueError, match="up to"):
        wide = torch.zeros(2, tss.MAX_WIDTH + 1)
        tss.triton_sampled_softmax(wide, wide, torch.zeros(2, 2, dtype=torch.long), 0.5)


def test_impl_choice(monkeypatch):
    case = make_case(10, 6, 9, 4, seed=2)
    with pytest.raises(ValueError, match="impl must be"):
        run(case, "fast", torch.float32)
    # float64 inputs: the kernels compute in float32, so "fused" hands them to "gather"
    assert_matches(run(case, "fused", torch.float64), run(case, "gather", torch.float64), 1e-12)
    if DEV == "cpu":  # on a CPU "auto" never launches the kernels
        called = []
        monkeypatch.setattr(tss, "triton_sampled_softmax", lambda *a: called.append(1))
        run(case, "auto", torch.float32)
        assert not called
    assert losses._auto_impl(torch.zeros(2, 2), 100, 4) == "dense"
    assert losses._auto_impl(torch.zeros(2, 2), 10_000, 4) == "gather"


def test_plain_per_row_formula_is_the_gather_loss():
    # the checks' float64 reference, `losses.sampled_softmax_rows`, against the loss's "gather" implementation
    case = make_case(19, 7, 11, 6, seed=4)
    norm = losses.l2_normalize
    cols = torch.cat(
        [losses.catalogue_index(case["catalogue"], case["positive_ids"])[:, None], case["negatives"]], 1
    )
    rows = losses.sampled_softmax_rows(norm(case["query"]), norm(case["table"][1:]), cols, 0.05)
    want = run(case, "gather", torch.float64)[0]
    got = (rows * case["weights"]).sum() / case["weights"].sum()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
