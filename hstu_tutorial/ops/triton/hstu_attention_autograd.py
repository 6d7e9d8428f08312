"""Autograd wrapper and launch logic of the jagged Triton HSTU attention kernels.

    out = triton_hstu_attention(q, k, v, offsets)                    # (T, H, dv), like hstu_attention
    out = triton_hstu_attention_rel_bias(q, k, v, offsets, ts, next_ts, pos_w, ts_w)   # bias in-kernel

On a GPU each kernel is autotuned over a few tile shapes (keyed by head dims, dtype and the next power
of two of the longest sequence); in the interpreter one fixed configuration with large tiles is used,
since there every program costs Python time and fewer, larger tiles run faster.
"""

from __future__ import annotations

import inspect
import os

import torch
import triton
from triton.runtime.errors import OutOfResources

from hstu_tutorial.ops.triton.hstu_attention_kernels import (
    hstu_bwd_dkdv_kernel,
    hstu_bwd_dq_kernel,
    hstu_fwd_kernel,
)

# Tile sizes used under TRITON_INTERPRET=1 (tests may shrink them to exercise many tiles).
INTERPRETER_CONFIG = {"BLOCK_M": 64, "BLOCK_N": 64}
# How the gradient of the relative bias's two weight vectors (pos_w, ts_w) is formed in the backward pass:
# "atomic" (the dK/dV kernel adds every score gradient onto per-(sequence, head) rows of the two vectors:
# O(P + NB) memory), "dense" (the kernel writes the (B, H, N, N) bias gradient, PyTorch reduces it: O(N^2)
# memory), or "auto": atomic up to REL_BIAS_ATOMIC_MAX_LEN, dense above. Measured on the H200 (fwd+bwd,
# benchmarks/bench_rel_bias_grad.py): atomic 0.95 vs 1.65 ms at the ML-1M shape (fp32), 2.67 vs 2.88 ms at
# N = 1024, but 55.8 vs 19.7 ms at N = 8192 (4 sequences x 2 heads: ~128 key tiles per sequence add onto the
# same few hundred addresses), where dense needs 9.2 GiB against 19 MiB. End to end on ML-1M the atomics
# showed no gain (HSTU-large 36.9 s against 35.0-35.2 s with dense, across machine instances), so the
# default stays "dense", the mode every published training figure used.
REL_BIAS_GRAD = os.environ.get("HSTU_TRITON_REL_BIAS_GRAD", "dense")
REL_BIAS_ATOMIC_MAX_LEN = 1024
# How dQ is computed in the backward pass: "kernel" (a second kernel walks keys per query tile, no
# atomics) or "atomic" (the dK/dV kernel adds its share of dQ with fp32 atomics).
DQ_MODE = os.environ.get("HSTU_TRITON_DQ_MODE", "kernel")
# tl.dot precision for fp32 inputs on a GPU: "tf32" (fastest), "tf32x3" or "ieee"; None (the default)
# follows PyTorch's own switch for fp32 matrix products: "tf32" when torch.backends.cuda.matmul.allow_tf32
# is on (the trainer's `tf32 = true`, the reference's setting), else "tf32x3". Measured on the H200
# (2026-11-28): plain tf32 gave 1.6e-3 relative error on fp32 inputs, tf32x3 5e-7 (three tf32 products,
# about fp32 accuracy). HSTU_TRITON_FP32_PRECISION in the environment fixes the choice.
FP32_DOT_PRECISION = os.environ.get("HSTU_TRITON_FP32_PRECISION") or None
# On a GPU: autotune (True) or use GPU_DEFAULT_CONFIG (False; one compile per kernel, for quick checks).
AUTOTUNE = True
GPU_DEFAULT_CONFIG = {"fwd": (64, 64, 4, 3), "dkdv": (32, 64, 4, 3), "dq": (64, 64, 4, 3)}
GPU_SMALL_CONFIG = {"fwd": (64, 32, 4, 2), "dkdv": (32, 32, 4, 2), "dq": (64, 32, 4, 2)}
# Tests set this to fill outputs with NaN before the kernels run: an element a kernel forgets to write
# then shows up as NaN instead of as whatever the allocator left there.
POISON_OUTPUTS = False


def is_interpreter() -> bool:
    """True when Triton runs its kernels in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# Small config sets for Hopper-class GPUs; (BLOCK_M, BLOCK_N, num_warps, num_stages).
# The last entry of each list is small enough for fp32 operands with head dims up to 128 (the others can
# ask for more than the 227 KiB of shared memory a Hopper SM has; the autotuner skips those).
_FWD_CONFIGS = [_cfg(*c) for c in [(64, 64, 4, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3),
                                   (64, 32, 4, 2)]]
_DKDV_CONFIGS = [_cfg(*c) for c in [(32, 64, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3), (32, 128, 8, 3),
                                    (32, 32, 4, 2)]]
_DQ_CONFIGS = [_cfg(*c) for c in [(64, 64, 4, 3), (128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 2)]]
_KEY = ["MAX_LEN_KEY", "DQ", "DV", "CAUSAL", "BIAS", "DOT_PREC"]


def _bench(fn, quantiles):
    # Short tuning runs: each new shape pays for one sweep over the configs.
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


# Tuning results are kept in Triton's on-disk cache where this Triton supports it: the first run on a
# machine pays the sweep (about a minute for the three kernels at one shape), later runs read the choice.
_CACHE = {"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters else {}
_fwd_tuned = triton.autotune(_FWD_CONFIGS, key=_KEY, do_bench=_bench, **_CACHE)(hstu_fwd_kernel)
_dkdv_tuned = triton.autotune(_DKDV_CONFIGS, key=_KEY + ["RAB_GRAD", "ATOMIC_DQ"], do_bench=_bench,
                              reset_to_zero=["DQ_G", "DRAB"], **_CACHE)(hstu_bwd_dkdv_kernel)
_dq_tuned = triton.autotune(_DQ_CONFIGS, key=_KEY, do_bench=_bench, **_CACHE)(hstu_bwd_dq_kernel)


def _launch(kernel, tuned, grid_dim, max_len, num_bh, args, consts, kind):
    """Launch `kernel` with a fixed config in the interpreter, or its autotuned wrapper on a GPU."""
    if is_interpreter():
        cfg = dict(INTERPRETER_CONFIG)
        grid = (triton.cdiv(max_len, cfg[grid_dim]), num_bh)
        kernel[grid](*args, **consts, **cfg)
    elif not AUTOTUNE:
        bm, bn, warps, stages = GPU_DEFAULT_CONFIG[kind]
        try:
            grid = (triton.cdiv(max_len, bm if grid_dim == "BLOCK_M" else bn), num_bh)
            kernel[grid](*args, **consts, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
        except OutOfResources:
            # fp32 operands with a large head dim overflow shared memory at the default tiles: the launch
            # fails before the kernel runs, so retry with the small config every kernel supports.
            bm, bn, warps, stages = GPU_SMALL_CONFIG[kind]
            grid = (triton.cdiv(max_len, bm if grid_dim == "BLOCK_M" else bn), num_bh)
            kernel[grid](*args, **consts, BLOCK_M=bm, BLOCK_N=bn, num_warps=warps, num_stages=stages)
    else:
        tuned[lambda meta: (triton.cdiv(max_len, meta[grid_dim]), num_bh)](*args, **consts)


def _dot_precision(x: torch.Tensor) -> str:
    # Only fp32 operands have a choice; bf16/fp16 dots are exact products with fp32 accumulation.
    if x.dtype != torch.float32:
        return "tf32"
    if FP32_DOT_PRECISION is not None:
        return FP32_DOT_PRECISION
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def _block_dim(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _new(shape, dtype, device):
    if POISON_OUTPUTS:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    # Kernels take any token/head strides (views of a fused projection are fine) but a unit last stride.
    return x if x.stride(-1) == 1 else x.contiguous()


class _Bias:
    """The bias of one call in the form the kernels take: mode, tensors, strides."""

    def __init__(self, q, rab, ts, nts, pos_w, ts_w, num_heads, max_len):
        self.rab, self.ts, self.nts, self.pos_w, self.ts_w = rab, ts, nts, pos_w, ts_w
        self.strides = (0, 0, 0, 0)
        self.P, self.NB = 1, 1
        if rab is not None:
            self.mode = 1
            r = rab if rab.dim() == 4 else rab.unsqueeze(1)  # (B|1, H|1, N, N)
            self.rab4_shape = r.shape
            self.strides = (r.stride(0) if r.size(0) > 1 else 0, r.stride(1) if r.size(1) > 1 else 0,
                            r.stride(2), r.stride(3))
            self.nr = r.size(-1)
        elif pos_w is not None:
            self.mode = 2
            self.P, self.NB = (pos_w.numel() + 1) // 2, ts_w.numel()
            self.nr = max_len
        else:
            self.mode = 0
            self.nr = 1
        dummy = q
        self.args = (rab if rab is not None else dummy, ts if ts is not None else dummy,
                     nts if nts is not None else dummy, pos_w if pos_w is not None else dummy,
                     ts_w if ts_w is not None else dummy)


class _HSTUAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, offsets, rab, ts, nts, pos_w, ts_w, alpha, inv_n, causal, max_len):
        T, H, DQ = q.shape
        DV = v.shape[-1]
        B = offsets.numel() - 1
        bias = _Bias(q, rab, ts, nts, pos_w, ts_w, H, max_len)
        out = _new((T, H, DV), q.dtype, q.device)  # (T, H, DV)
        if T > 0:
            args = (q, k, v, out, offsets, *bias.args,
                    q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                    out.stride(0), out.stride(1), *bias.strides, H, bias.P, bias.NB, float(alpha),
                    float(inv_n), max(16, triton.next_power_of_2(max_len)))
            consts = dict(DQ=DQ, DV=DV, BLOCK_DQ=_block_dim(DQ), BLOCK_DV=_block_dim(DV), CAUSAL=causal,
                          BIAS=bias.mode, DOT_PREC=_dot_precision(q))
            _launch(hstu_fwd_kernel, _fwd_tuned, "BLOCK_M", max_len, B * H, args, consts, "fwd")
        ctx.save_for_backward(q, k, v, offsets, rab, ts, nts, pos_w, ts_w)
        ctx.alpha, ctx.inv_n, ctx.causal, ctx.max_len = alpha, inv_n, causal, max_len
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, offsets, rab, ts, nts, pos_w, ts_w = ctx.saved_tensors
        T, H, DQ = q.shape
        DV = v.shape[-1]
        B = offsets.numel() - 1
        max_len = ctx.max_len
        bias = _Bias(q, rab, ts, nts, pos_w, ts_w, H, max_len)
        dout = _last_dim_contiguous(dout)  # (T, H, DV)
        atomic = DQ_MODE == "atomic"
        # (T, H, DQ); atomics accumulate into a zeroed fp32 buffer
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device) if atomic else _new(q.shape, q.dtype,
                                                                                             q.device)
        dk = _new(k.shape, k.dtype, k.device)  # (T, H, DQ)
        dv = _new(v.shape, v.dtype, v.device)  # (T, H, DV)
        rab_grad = (rab is not None and ctx.needs_input_grad[4]) or (
            pos_w is not None and (ctx.needs_input_grad[7] or ctx.needs_input_grad[8]))
        short = max_len <= REL_BIAS_ATOMIC_MAX_LEN
        atomic_weights = REL_BIAS_GRAD == "atomic" or (REL_BIAS_GRAD == "auto" and short)
        weights_in_kernel = rab_grad and bias.mode == 2 and atomic_weights
        if weights_in_kernel:  # (B*H, 2P-1 + NB) fp32: per (sequence, head) [dpos_w | dts_w]
            nr = 2 * bias.P - 1 + bias.NB
            drab = torch.zeros((B * H, nr), dtype=torch.float32, device=q.device)
        else:  # (B, H, NR, NR) fp32 bias gradient; entries the kernel skips (masked, padding) must read 0
            nr = bias.nr if rab_grad else 1
            drab = torch.zeros((B, H, nr, nr), dtype=torch.float32, device=q.device) if rab_grad else q
        rab_grad_mode = 2 if weights_in_kernel else int(rab_grad)
        if T > 0:
            common = dict(DQ=DQ, DV=DV, BLOCK_DQ=_block_dim(DQ), BLOCK_DV=_block_dim(DV), CAUSAL=ctx.causal,
                          BIAS=bias.mode, DOT_PREC=_dot_precision(q))
            tail = (H, bias.P, bias.NB, float(ctx.alpha), float(ctx.inv_n),
                    max(16, triton.next_power_of_2(max_len)))
            qkv_strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                           dout.stride(0), dout.stride(1))
            args = (q, k, v, dout, dq, dk, dv, drab, offsets, *bias.args, *qkv_strides,
                    dq.stride(0), dq.stride(1), dk.stride(0), dk.stride(1), dv.stride(0), dv.stride(1),
                    *bias.strides, nr, *tail)
            _launch(hstu_bwd_dkdv_kernel, _dkdv_tuned, "BLOCK_N", max_len, B * H, args,
                    dict(common, RAB_GRAD=rab_grad_mode, ATOMIC_DQ=atomic), "dkdv")
            if not atomic:
                args = (q, k, v, dout, dq, offsets, *bias.args, *qkv_strides, dq.stride(0), dq.stride(1),
                        *bias.strides, *tail)
                _launch(hstu_bwd_dq_kernel, _dq_tuned, "BLOCK_M", max_len, B * H, args, common, "dq")
        dq = dq.to(q.dtype)
        grad_rab = grad_pos = grad_ts = None
        if rab_grad and bias.mode == 1:
            grad_rab = drab.sum_to_size(bias.rab4_shape).reshape(rab.shape).to(rab.dtype)
        elif weights_in_kernel:
            w = drab.sum(0)  # (2P-1 + NB,): summed over sequences and heads (the weights are shared)
            grad_pos, grad_ts = w[: 2 * bias.P - 1], w[2 * bias.P - 1 :]
            grad_pos, grad_ts = grad_pos.to(pos_w.dtype), grad_ts.to(ts_w.dtype)
        elif rab_grad and bias.mode == 2:
            grad_pos, grad_ts = _rel_bias_weight_grads(drab.sum(1), offsets, ts, nts, bias.P, bias.NB)
            grad_pos, grad_ts = grad_pos.to(pos_w.dtype), grad_ts.to(ts_w.dtype)
        return dq, dk, dv, None, grad_rab, None, None, grad_pos, grad_ts, None, None, None, None


def time_bucket_index(d: torch.Tensor, num_buckets: int) -> torch.Tensor:
    """bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets - 1), as the kernel computes it."""
    b = torch.floor(torch.log(d.abs().clamp(min=1).float()) / 0.301).long()
    return b.clamp(0, num_buckets - 1)


def _rel_bias_weight_grads(drab, offsets, ts, nts, P, NB):
    """Reduce the bias gradient drab (B, N, N) onto pos_w (2P-1,) and ts_w (NB,): the weights are
    gathered by index in the forward, so their gradient is a scatter-add of drab by the same index."""
    B, N, _ = drab.shape
    ar = torch.arange(N, device=drab.device)
    lengths = offsets.diff()  # (B,)
    tok = (offsets[:-1, None] + ar[None, :]).clamp(max=max(ts.numel() - 1, 0))  # (B, N) token index
    valid = ar[None, :] < lengths[:, None]  # (B, N)
    t = torch.where(valid, ts[tok], 0)  # (B, N)
    nt = torch.where(valid, nts[tok], 0)
    bucket = time_bucket_index(nt[:, :, None] - t[:, None, :], NB)  # (B, N, N)
    # A weighted histogram. One flat index_add_ sends millions of atomics to the same ~129 addresses,
    # which serialise (measured on the H200: ~3.5 ms of a 4.6 ms step at ML-1M); a histogram per query
    # row first (at most N adds per address), then a sum over rows, has no such hot spot, and unlike
    # torch.bincount it needs no host sync (so it can be captured in a CUDA graph).
    rows = torch.zeros(B * N, NB, dtype=torch.float32, device=drab.device)  # (B*N, NB)
    rows.scatter_add_(1, bucket.reshape(B * N, N), drab.reshape(B * N, N))
    grad_ts = rows.sum(0)  # (NB,)
    pos = (P - 1 + ar[None, :] - ar[:, None]).clamp(0, 2 * P - 2)  # (N, N)
    grad_pos = torch.zeros(2 * P - 1, dtype=torch.float32, device=drab.device)
    grad_pos.index_add_(0, pos.reshape(-1), drab.sum(0).reshape(-1))
    return grad_pos, grad_ts


def _check(q, k, v, offsets):
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"triton_hstu_attention expects jagged q, k of shape (T, H, dqk) and v of shape (T, H, dv); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}. Flatten a padded (B, N, H, d) "
            "batch with hstu_tutorial.ops.dense_to_jagged first.")
    if offsets.dim() != 1 or offsets.numel() < 1 or offsets.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"offsets must be a 1-D integer tensor (B+1,) starting at 0; got shape "
                         f"{tuple(offsets.shape)} and dtype {offsets.dtype}")
    if not (q.is_cuda or is_interpreter()):
        raise RuntimeError("the Triton kernel needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is "
                           "imported (hstu_tutorial.ops.triton does this on machines without CUDA); "
                           f"got tensors on {q.device}")


def _prepare(q, k, v, offsets, norm, max_len):
    _check(q, k, v, offsets)
    offsets = offsets.to(torch.int64)
    if max_len is None:
        # One host sync: the grid size needs the longest sequence.
        max_len, total = (torch.stack([offsets.diff().max(), offsets[-1]]).tolist() if offsets.numel() > 1
                          else (0, 0))
        if total != q.shape[0]:
            raise ValueError(f"offsets[-1] = {total} must equal the number of tokens T = {q.shape[0]} of q")
    norm = max_len if norm is None else norm
    inv_n = 1.0 / norm if norm else 0.0
    return [_last_dim_contiguous(x) for x in (q, k, v)], offsets, inv_n, int(max_len)


def _fp32_in_interpreter(tensors):
    # The interpreter's bf16 arithmetic is not faithful; there we compute in fp32 and cast back.
    dtype = tensors[0].dtype
    if is_interpreter() and dtype != torch.float32:
        return [t.float() if t is not None and t.is_floating_point() else t for t in tensors], dtype
    return tensors, None


def triton_hstu_attention(q, k, v, offsets, *, rab=None, alpha=1.0, norm=None, causal=True, max_len=None):
    """HSTU pointwise attention on a jagged batch, fused in Triton (forward and backward).

    q, k: (T, H, dqk); v: (T, H, dv); offsets: (B+1,) int64 with offsets[0] = 0, offsets[-1] = T.
    rab: optional padded bias (B, N, N) or (B, H, N, N), N >= longest length (differentiable).
    norm: the divisor n (default: the longest length in the batch); max_len: the longest length, if
    known (saves a host sync). Returns (T, H, dv): inside each sequence, for query i,
        out_i = sum_{j <= i} SiLU(alpha <q_i, k_j> + rab_ij) / n * v_j      (all j if not causal)
    which is Eq. (2) of the HSTU paper with the pointwise (not softmax) normalisation.
    """
    (q, k, v), offsets, inv_n, max_len = _prepare(q, k, v, offsets, norm, max_len)
    if rab is not None:
        if rab.dim() not in (3, 4) or rab.shape[-1] < max_len or rab.shape[-2] != rab.shape[-1]:
            raise ValueError(f"rab must be padded (B, N, N) or (B, H, N, N) with N >= the longest length "
                             f"{max_len}; got shape {tuple(rab.shape)}")
        rab = _last_dim_contiguous(rab) if rab.stride(-1) not in (0, 1) else rab
    (q, k, v, rab), cast_back = _fp32_in_interpreter([q, k, v, rab])
    out = _HSTUAttentionFunction.apply(q, k, v, offsets, rab, None, None, None, None, alpha, inv_n, causal,
                                       max_len)
    return out if cast_back is None else out.to(cast_back)


def triton_hstu_attention_rel_bias(q, k, v, offsets, timestamps, next_timestamps, pos_w, ts_w, *, alpha=1.0,
                                   norm=None, causal=True, max_len=None):
    """HSTU attention with the relative attention bias formed inside the kernel (no (B, N, N) tensor).

    timestamps, next_timestamps: jagged (T,) int64 (next_timestamps[i] is the time of the item after i,
    the target's for the last one); pos_w: (2P-1,); ts_w: (NB,). Inside each sequence
        rab_ij = pos_w[P - 1 + j - i] + ts_w[bucket(next_ts_i - ts_j)],
        bucket(d) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, NB - 1),
    with positions i, j counted from each sequence's start (relative offsets past +-(P-1) clamp to the
    end entries). Gradients flow to q, k, v, pos_w and ts_w. Other arguments as triton_hstu_attention.
    """
    (q, k, v), offsets, inv_n, max_len = _prepare(q, k, v, offsets, norm, max_len)
    if pos_w.dim() != 1 or pos_w.numel() % 2 != 1 or ts_w.dim() != 1:
        raise ValueError(f"pos_w must be 1-D with 2P-1 entries and ts_w 1-D; got {tuple(pos_w.shape)} and "
                         f"{tuple(ts_w.shape)}")
    if timestamps.shape != (q.shape[0],) or next_timestamps.shape != (q.shape[0],):
        raise ValueError(f"timestamps and next_timestamps must be jagged (T,) = ({q.shape[0]},); got "
                         f"{tuple(timestamps.shape)} and {tuple(next_timestamps.shape)}")
    ts, nts = timestamps.to(torch.int64).contiguous(), next_timestamps.to(torch.int64).contiguous()
    (q, k, v, pos_w, ts_w), cast_back = _fp32_in_interpreter([q, k, v, pos_w.contiguous(), ts_w.contiguous()])
    out = _HSTUAttentionFunction.apply(q, k, v, offsets, None, ts, nts, pos_w, ts_w, alpha, inv_n, causal,
                                       max_len)
    return out if cast_back is None else out.to(cast_back)
