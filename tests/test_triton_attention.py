"""The jagged Triton HSTU attention kernels against a float64 per-sequence loop (CPU: Triton interpreter).

Small shapes and small tiles, so that one batch crosses several tiles, diagonal tiles, partial tiles and
empty ones. Outputs and gradients are NaN-filled before each run, so an element a kernel forgets to
write fails the comparison.
"""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
from hstu_tutorial.ops import RelativeAttentionBias, hstu_attention, time_bucket, use_options
from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias

# triton through the package, which sets TRITON_INTERPRET on a CPU before importing it
from hstu_tutorial.ops.triton.hstu_attention_kernels import time_bucket_kernel, triton

torch.set_num_threads(2)

DEVICE = "cuda" if torch.cuda.is_available() and not tha.is_interpreter() else "cpu"
FP32_TOL = 1e-3  # tf32 is allowed on a GPU
BF16_TOL = 1e-2


@pytest.fixture(autouse=True)
def _poison_and_small_tiles():
    with use_options(poison_outputs=True, interpreter_block=(32, 16)):
        yield


def offsets_of(lengths):
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    return torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]).to(DEVICE)


def loop_reference(q, k, v, offsets, rab=None, alpha=1.0, norm=None, causal=True):
    """float64, one sequence at a time: out_i = sum_{j(<=i)} SiLU(alpha <q_i,k_j> + rab_ij) / n v_j."""
    q, k, v = q.double(), k.double(), v.double()
    rab = None if rab is None else rab.double()
    bounds = offsets.tolist()
    n = norm if norm is not None else max(e - s for s, e in zip(bounds[:-1], bounds[1:]))
    outs = []
    for b, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        L = e - s
        scores = alpha * torch.einsum("ihd,jhd->hij", q[s:e], k[s:e])  # (H, L, L)
        if rab is not None:
            scores = scores + rab[b][..., :L, :L]  # (L, L) or (H, L, L)
        attn = F.silu(scores) / n
        if causal:
            attn = attn * torch.ones(L, L, dtype=torch.float64, device=q.device).tril()
        outs.append(torch.einsum("hij,jhd->ihd", attn, v[s:e]))  # (L, H, dv)
    return torch.cat(outs)


def loop_rel_bias(timestamps, next_timestamps, offsets, pos_w, ts_w, N):
    """Padded (B, N, N) bias from the formula, in float64, one sequence at a time."""
    P, NB = (pos_w.numel() + 1) // 2, ts_w.numel()
    bounds = offsets.tolist()
    rabs = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        L = e - s
        i = torch.arange(L, device=pos_w.device)
        pos = pos_w.double()[(P - 1 + i[None, :] - i[:, None]).clamp(0, 2 * P - 2)]  # (L, L)
        gap = (next_timestamps[s:e, None] - timestamps[None, s:e]).abs().clamp(min=1)
        # the formula itself, not the package's time_bucket
        bucket = torch.floor(torch.log(gap.float()) / 0.301).long().clamp(0, NB - 1)
        rabs.append(F.pad(pos + ts_w.double()[bucket], (0, N - L, 0, N - L)))
    return torch.stack(rabs)  # (B, N, N)


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def random_qkv(T, H, dqk, dv, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(T, H, dqk, generator=g) for _ in range(2))
    v = torch.randn(T, H, dv, generator=g)
    return [x.to(DEVICE, dtype).requires_grad_() for x in (q, k, v)]


def check_all(outs, refs, tol, names):
    for out, ref, name in zip(outs, refs, names):
        assert not torch.isnan(out).any(), f"{name}: NaN left in the output (an element never written)"
        err = rel_err(out, ref)
        assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"


LENGTHS = [1, 37, 0, 16, 50, 5]  # length 1, empty, a tile multiple, partial tiles


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("bias", ["none", "shared", "per_head"])
def test_forward_and_gradients_match_float64_loop(causal, bias):
    offsets = offsets_of(LENGTHS)
    T, H, dqk, dv = int(offsets[-1]), 2, 24, 12  # dqk != dv, neither a power of two
    q, k, v = random_qkv(T, H, dqk, dv, seed=1)
    N = 53
    rab = None
    if bias != "none":
        shape = (len(LENGTHS), N, N) if bias == "shared" else (len(LENGTHS), H, N, N)
        rab = torch.randn(shape, device=DEVICE).requires_grad_()
    inputs = [q, k, v] + ([rab] if rab is not None else [])
    out = triton_hstu_attention(q, k, v, offsets, rab=rab, alpha=0.7, causal=causal)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, inputs, grad_out)
    ref_inputs = [x.detach().double().requires_grad_() for x in inputs]
    ref_rab = ref_inputs[3] if rab is not None else None
    ref = loop_reference(*ref_inputs[:3], offsets, rab=ref_rab, alpha=0.7, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad_out.double())
    names = ["out", "dq", "dk", "dv", "drab"]
    check_all([out, *grads], [ref, *ref_grads], FP32_TOL, names)


def test_matches_package_reference_with_norm():
    offsets = offsets_of([3, 41, 20])
    q, k, v = random_qkv(int(offsets[-1]), 3, 16, 40, seed=2)
    out = triton_hstu_attention(q, k, v, offsets, norm=211, alpha=1.3)
    ref = hstu_attention(q, k, v, offsets, norm=211, alpha=1.3)
    assert rel_err(out, ref) <= FP32_TOL


def test_bf16_inputs_loose_tolerance():
    offsets = offsets_of([1, 45, 30])
    q, k, v = random_qkv(int(offsets[-1]), 2, 32, 32, dtype=torch.bfloat16, seed=3)
    out = triton_hstu_attention(q, k, v, offsets)
    assert out.dtype == torch.bfloat16
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)
    assert all(g.dtype == torch.bfloat16 for g in grads)
    ref_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = loop_reference(*ref_inputs, offsets)
    ref_grads = torch.autograd.grad(ref, ref_inputs, grad_out.double())
    check_all([out, *grads], [ref, *ref_grads], BF16_TOL, ["out", "dq", "dk", "dv"])


@pytest.mark.parametrize("grad_mode", ["atomic", "dense", "auto"])
@pytest.mark.parametrize("causal", [True, False])
def test_in_kernel_relative_bias_matches_explicit_rab(causal, grad_mode):
    with use_options(rel_bias_grad=grad_mode):  # weight gradients inside the kernel, or dense
        _check_in_kernel_relative_bias(causal)


def _check_in_kernel_relative_bias(causal):
    lengths = [1, 37, 12, 20] if causal else [1, 20, 12]
    offsets = offsets_of(lengths)
    T, H = int(offsets[-1]), 2
    q, k, v = random_qkv(T, H, 20, 20, seed=4)
    g = torch.Generator().manual_seed(5)
    # gaps from seconds to years, so many buckets are used
    ts = torch.cumsum(torch.randint(1, 10**6, (T,), generator=g), 0).to(DEVICE)
    nts = ts + torch.randint(0, 10**7, (T,), generator=g).to(DEVICE)
    bias = RelativeAttentionBias(max_len=48, num_buckets=32).to(DEVICE)
    with torch.no_grad():
        bias.pos_w.normal_(0, 0.5)
        bias.ts_w.normal_(0, 0.5)
    out = triton_hstu_attention_rel_bias(
        q, k, v, offsets, ts, nts, bias.pos_w, bias.ts_w, norm=50.0, causal=causal
    )
    grad_out = torch.randn_like(out)
    params = (q, k, v, bias.pos_w, bias.ts_w)
    grads = torch.autograd.grad(out, params, grad_out)
    ref_params = [x.detach().double().requires_grad_() for x in params]
    rab = loop_rel_bias(ts, nts, offsets, ref_params[3], ref_params[4], N=max(lengths))
    ref = loop_reference(*ref_params[:3], offsets, rab=rab, norm=50.0, causal=causal)
    ref_grads = torch.autograd.grad(ref, ref_params, grad_out.double())
    check_all([out, *grads], [ref, *ref_grads], FP32_TOL, ["out", "dq", "dk", "dv", "dpos_w", "dts_w"])
    # ...and the package's own bias module gives the same tensor the kernel formed
    rab_pkg = bias.jagged(ts, nts, offsets, max(lengths))
    out_tensor = triton_hstu_attention(q, k, v, offsets, rab=rab_pkg, norm=50.0, causal=causal)
    assert rel_err(out_tensor, out) <= FP32_TOL


def test_atomic_dq_mode():
    offsets = offsets_of([7, 40, 1])
    q, k, v = random_qkv(int(offsets[-1]), 2, 20, 8, seed=6)
    with use_options(dq_mode="atomic"):
        out = triton_hstu_attention(q, k, v, offsets)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), grad_out)  # the forward's options hold for its backward
    ref_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref_grads = torch.autograd.grad(loop_reference(*ref_inputs, offsets), ref_inputs, grad_out.double())
    check_all(grads, ref_grads, FP32_TOL, ["dq", "dk", "dv"])


def test_non_contiguous_views_of_a_fused_projection():
    # The STU layer splits one (T, 2*H*dv + 2*H*dqk) projection into u, v, q, k views.
    offsets = offsets_of([9, 30])
    T, H, d = int(offsets[-1]), 2, 12
    uvqk = torch.randn(T, 4 * H * d, device=DEVICE)
    _, v, q, k = (t.reshape(T, H, d) for t in uvqk.split(H * d, dim=1))
    assert not q.is_contiguous()
    out = triton_hstu_attention(q, k, v, offsets)
    assert rel_err(out, loop_reference(q, k, v, offsets)) <= FP32_TOL


def test_long_single_sequence_crosses_many_tiles():
    offsets = offsets_of([70])
    q, k, v = random_qkv(70, 1, 16, 16, seed=7)
    with use_options(interpreter_block=(16, 32)):  # BLOCK_N > BLOCK_M this time
        out = triton_hstu_attention(q, k, v, offsets)
        grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_inputs = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = loop_reference(*ref_inputs, offsets)
    ref_grads = torch.autograd.grad(ref.sum(), ref_inputs)
    check_all([out, *grads], [ref, *ref_grads], FP32_TOL, ["out", "dq", "dk", "dv"])


def test_errors_speak_to_the_learner():
    offsets = offsets_of([4, 4])
    q, k, v = random_qkv(8, 1, 8, 8)
    with pytest.raises(ValueError, match="jagged q, k of shape"):
        triton_hstu_attention(q.reshape(2, 4, 1, 8), k, v, offsets)
    with pytest.raises(ValueError, match="offsets"):
        triton_hstu_attention(q, k, v, offsets_of([4, 5]))
    with pytest.raises(ValueError, match="N >= the longest length"):
        triton_hstu_attention(q, k, v, offsets, rab=torch.zeros(2, 3, 3, device=DEVICE))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_package_sets_interpreter_before_importing_triton():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = (
        "import os, hstu_tutorial.ops.triton as t; "
        "print(os.environ.get('TRITON_INTERPRET'), t.is_interpreter())"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["1", "True"]


def test_flop_free_padding_programs_return_early():
    # A batch whose longest sequence is much longer than the rest: the short ones' extra query tiles
    # must leave nothing unwritten and nothing wrong.
    offsets = offsets_of([2, 1, 60])
    q, k, v = random_qkv(63, 1, 8, 8, seed=8)
    out = triton_hstu_attention(q, k, v, offsets)
    assert rel_err(out, loop_reference(q, k, v, offsets)) <= FP32_TOL
    assert math.isfinite(out.sum().item())


def bucket_gaps(seed=9):
    """Time gaps for the bucket comparison: 0, +-1, huge, random, and integers next to every bucket edge
    e^(0.301 b); the second tensor marks the gaps whose ln(|d|)/0.301 lies within 1e-5 of an integer."""
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor(
        [0, 1, -1, 2, -2, 3, 4, 59, 60, 61, 3600, 86400, 10**9, -(10**9), 2**40, 2**62, -(2**62)],
        dtype=torch.int64,
    )
    edges = torch.tensor([math.exp(0.301 * b) for b in range(1, 140)], dtype=torch.float64)
    near_edges = (edges.floor().long()[:, None] + torch.arange(-1, 3)[None, :]).reshape(-1)
    signs = torch.randint(0, 2, (2000,), generator=g) * 2 - 1
    gaps = torch.cat(
        [
            special,
            near_edges,
            -near_edges,
            torch.randint(-(10**6), 10**6, (2000,), generator=g),
            (torch.rand(2000, generator=g) * 40).exp().long() * signs,
        ]
    )
    x = gaps.abs().clamp(min=1).double().log() / 0.301
    return gaps, ((x - x.round()).abs() < 1e-5) & (gaps.abs() > 1)  # |d| <= 1 is bucket 0 exactly


@pytest.mark.parametrize("num_buckets", [128, 20])
def test_kernel_time_buckets_equal_pytorch_time_bucket(num_buckets):
    gaps, on_edge = bucket_gaps()
    out = torch.empty(gaps.numel(), dtype=torch.int32, device=DEVICE)
    nb = num_buckets + 1  # ts_w has num_buckets + 1 entries
    ts, nts = torch.zeros_like(gaps).to(DEVICE), gaps.to(DEVICE)  # gap = nts - ts
    time_bucket_kernel[(triton.cdiv(gaps.numel(), 1024),)](ts, nts, out, gaps.numel(), nb, BLOCK=1024)
    got, want = out.cpu().long(), time_bucket(gaps, num_buckets)
    assert want[:5].tolist() == [0, 0, 0, 2, 2] and want.max() == num_buckets
    # Everywhere but within 1e-5 of a bucket edge: the same bucket. On an edge itself float32 logs of
    # different libraries (numpy in the interpreter, libdevice on a GPU, PyTorch's) may differ by one
    # ulp, so one bucket either way.
    mismatch = (got != want) & ~on_edge
    assert not mismatch.any(), (
        f"gaps {gaps[mismatch][:5].tolist()}: kernel {got[mismatch][:5].tolist()}, "
        f"time_bucket {want[mismatch][:5].tolist()}"
    )
    assert ((got - want).abs() <= 1).all()
    assert (~on_edge).sum() > 4000  # most gaps are compared exactly
