"""Autograd wrapper and launch logic of the jagged Triton HSTU attention kernels.

    out = triton_hstu_attention(q, k, v, offsets)                    # (T, H, D_V), like hstu_attention
    out = triton_hstu_attention_rel_bias(q, k, v, offsets, ts, next_ts, pos_w, ts_w)   # bias in-kernel

On a GPU each launch takes the tiles of its shape class (head dims, dtype, causal, bias mode, the next
power of two of the longest sequence) from the table shipped for the GPU family, else this machine's tile
cache, else Triton's autotuner times a few candidates once and the choice is saved (see
`hstu_tutorial.ops.triton.tiles`). In the interpreter one fixed configuration with large tiles is used,
since there every program costs Python time and fewer, larger tiles run faster. Switches (autotune,
tuning, dQ mode, weight-gradient mode, fp32 dot precision, NaN poisoning, interpreter tiles) are read
from `hstu_tutorial.ops.options.get_options()` at each call.

Buffers and the autotuner: while it times the configs, Triton's autotuner zeroes every argument named
in `reset_to_zero` before each run. Those arguments (DQ_G, DRAB of the dK/dV kernel) are therefore
always tensors allocated here for that purpose: an accumulation buffer, or a one-element placeholder
for a pointer the kernel does not read in that mode. Never a caller's tensor: on an H200 (torch 2.11,
Triton 3.6, which re-tunes in every process) passing q as the placeholder zeroed the caller's q.
"""

from __future__ import annotations

import os
import time
import warnings

import torch
import triton
from triton.runtime.errors import OutOfResources

try:  # host-side TMA descriptors (Triton >= 3.4); without them the forward uses pointer loads
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # pragma: no cover - older Triton
    TensorDescriptor = None

from hstu_tutorial.ops.hstu_attention import check_norm
from hstu_tutorial.ops.jagged_tensors import check_floating, check_offsets, jagged_batch_ids, jagged_positions
from hstu_tutorial.ops.options import KernelOptions, get_options
from hstu_tutorial.ops.triton import tiles
from hstu_tutorial.ops.triton.bias import _Bias, _rel_bias_weight_grads
from hstu_tutorial.ops.triton.hstu_attention_kernels import hstu_fwd_kernel, hstu_fwd_tma_kernel
from hstu_tutorial.ops.triton.hstu_bwd_dkdv_kernel import REL_BIAS_GRAD_COPIES, hstu_bwd_dkdv_kernel
from hstu_tutorial.ops.triton.hstu_bwd_dq_kernel import hstu_bwd_dq_kernel

# rel_bias_grad = "auto" takes the in-kernel atomics up to this longest length, the dense gradient
# above. Measured on the H200 (fwd+bwd, benchmarks/bench_rel_bias_grad.py): atomic 0.95 vs 1.65 ms at
# the ML-1M shape (fp32), 2.67 vs 2.88 ms at N = 1024, but 55.8 vs 19.7 ms at N = 8192 (4 sequences x 2
# heads: ~128 key tiles per sequence add onto the same few hundred addresses), where dense needs 9.2 GiB
# against 19 MiB. Measured again in one process on 2026-12-01 (profile_step.py), the CUDA-graph step with
# atomics is faster (ML-1M HSTU 2.89 vs 3.30 ms, HSTU-large 9.03 vs 9.41 ms), so "auto" is the default
# (ops/options.py). With eight copies of each row (REL_BIAS_GRAD_COPIES, later that day) the atomics take
# 2.2-2.3 ms at N = 1024 and 15.1-15.7 ms at N = 8192 in that benchmark (dense 3.0 and 19.5 ms), but a whole
# STU layer of d = 512 and 8 heads (benchmarks/bench_layers.py) is still faster with the dense gradient above
# N = 1024 (12.0 vs 15.2 ms at N = 2048, 42.7 vs 74.1 ms at N = 8192): the threshold stays
# (benchmarks/results/h200_2026-12-01/perf/rel_bias_copies/README.md).
REL_BIAS_ATOMIC_MAX_SEQ_LEN = 1024
# Tiles with autotune off, (BLOCK_M, BLOCK_N, num_warps, num_stages): one compile per kernel.
GPU_DEFAULT_CONFIG = {"fwd": (64, 64, 4, 3), "dkdv": (32, 64, 4, 3), "dq": (64, 64, 4, 3)}
GPU_SMALL_CONFIG = {"fwd": (64, 32, 4, 2), "dkdv": (32, 32, 4, 2), "dq": (64, 32, 4, 2)}
for _fixed in (GPU_DEFAULT_CONFIG, GPU_SMALL_CONFIG):  # the TMA forward takes the forward's fixed tiles
    _fixed["fwd_tma"] = _fixed["fwd"]


def is_interpreter() -> bool:
    """True when Triton runs its kernels in the CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _cfg(bm, bn, warps, stages):
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)


# Small config sets for Hopper-class GPUs; (BLOCK_M, BLOCK_N, num_warps, num_stages).
# The last entry of each list is small enough for fp32 operands with head dims up to 128 (the others can
# ask for more than the 227 KiB of shared memory a Hopper SM has; the autotuner skips those).
_FWD_CONFIGS = [
    _cfg(*c)
    for c in [
        (64, 64, 4, 3),
        (64, 64, 4, 4),
        (128, 64, 4, 3),
        (128, 64, 8, 3),
        (128, 64, 8, 4),
        (128, 128, 8, 3),
        (64, 32, 4, 2),
    ]
]
_DKDV_CONFIGS = [
    _cfg(*c) for c in [(32, 64, 4, 3), (64, 64, 4, 3), (64, 128, 8, 3), (32, 128, 8, 3), (32, 32, 4, 2)]
]
_DQ_CONFIGS = [_cfg(*c) for c in [(64, 64, 4, 3), (128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 2)]]
_KEY = ["MAX_SEQ_LEN_KEY", "D_QK", "D_V", "CAUSAL", "BIAS", "DOT_PREC"]


def _bench(fn, quantiles):
    """Time one config for the autotuner: short runs on a GPU (a shape class missing from the tile table
    and the cache pays for one sweep, once per machine)."""
    if is_interpreter():  # only when a test forces tuning in the interpreter: one host-timed run
        t0 = time.perf_counter()
        fn()
        return [(time.perf_counter() - t0) * 1e3] * len(quantiles)
    return triton.testing.do_bench(fn, warmup=5, rep=20, quantiles=quantiles)


# The autotuners only time candidates; their choices are kept by hstu_tutorial.ops.triton.tiles (shipped
# table, then the project's cache file), which works with any Triton version (Triton 3.6's autotuner
# cannot cache results across processes).
_fwd_tuned = triton.autotune(_FWD_CONFIGS, key=_KEY, do_bench=_bench)(hstu_fwd_kernel)


def _tma_blocks(nargs: dict) -> None:
    """Give the K and V descriptors the key tile of the config about to run: (BLOCK_N, 1, BLOCK_D)."""
    for name, width in (("K", "BLOCK_D_QK"), ("V", "BLOCK_D_V")):
        nargs[name].block_shape = [nargs["BLOCK_N"], 1, nargs[width]]


# The same tiles for the TMA forward; each config first sets the descriptors' block to its BLOCK_N.
_FWD_TMA_CONFIGS = [
    triton.Config(c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages, pre_hook=_tma_blocks)
    for c in _FWD_CONFIGS
]
_fwd_tma_tuned = triton.autotune(_FWD_TMA_CONFIGS, key=_KEY, do_bench=_bench)(hstu_fwd_tma_kernel)
# DQ_G (atomic dQ) and DRAB (bias gradients) accumulate with atomics, so every timing run starts from
# zero. Both are always buffers allocated by the backward for this call (see the module docstring).
_dkdv_tuned = triton.autotune(
    _DKDV_CONFIGS, key=_KEY + ["RAB_GRAD", "ATOMIC_DQ"], do_bench=_bench, reset_to_zero=["DQ_G", "DRAB"]
)(hstu_bwd_dkdv_kernel)
_dq_tuned = triton.autotune(_DQ_CONFIGS, key=_KEY, do_bench=_bench)(hstu_bwd_dq_kernel)
_TUNED = {"fwd": _fwd_tuned, "fwd_tma": _fwd_tma_tuned, "dkdv": _dkdv_tuned, "dq": _dq_tuned}


def _tune(opts: KernelOptions) -> bool:
    # Tiles per shape class on a GPU only; the interpreter takes opts.interpreter_block (tests may patch
    # this to drive the autotuner itself through the interpreter).
    return opts.autotune and not is_interpreter()


def _tile_store(device: torch.device) -> tiles.TileStore | None:
    # The interpreter keeps no tiles (a test that forces tuning there runs the autotuner every time
    # its own cache is cleared); tests patch this to give the interpreter a store in a temporary folder.
    return None if is_interpreter() else tiles.store_for(device)


def _launch(kind, grid_dim, max_seq_len, num_bh, args, consts, opts: KernelOptions):
    """Launch kernel `kind` ("fwd", "fwd_tma", "dkdv", "dq"): tiles of its shape class, or fixed tiles."""
    tuned = _TUNED[kind]
    kernel = tuned.fn  # the @triton.jit kernel the autotuner wraps

    def grid_of(meta):  # programs along the sequence (query or key tiles) x (sequence, head) pairs
        return (-(-max_seq_len // meta[grid_dim]), num_bh)  # ceil division

    def run(chosen):  # the kernel with these tiles (the autotuner's configs fit the descriptors in a hook)
        if kind == "fwd_tma":
            _tma_blocks({"K": args[1], "V": args[2], **consts, **chosen})
        kernel[grid_of(chosen)](*args, **consts, **chosen)

    if _tune(opts):
        store = _tile_store(args[0].device)  # args[0] is q for every kernel
        key = tiles.shape_class(kind, args[0].dtype, consts, max_seq_len)
        if store is not None:
            found, source = store.lookup(key, use_saved=opts.tuning == "table")
            if found is not None:
                try:
                    run(found)
                    return
                except OutOfResources as err:  # raised before the kernel runs: nothing written yet
                    warnings.warn(
                        f"tiles {found} of the {source} for {key} do not fit this GPU ({err}); "
                        "tuning this shape class instead",
                        stacklevel=2,
                    )
                    store.forget(key)
        t0 = time.perf_counter()
        tuned[grid_of](*args, **consts)  # times the candidates (first use of this shape), then runs the best
        tiles.add_tuning_time(time.perf_counter() - t0)
        if store is not None:
            store.save(key, tiles.tiles_of_config(tuned.best_config))
    elif is_interpreter():
        run(dict(zip(("BLOCK_M", "BLOCK_N"), opts.interpreter_block)))
    else:
        fixed = dict(zip(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), GPU_DEFAULT_CONFIG[kind]))
        try:
            run(fixed)
        except OutOfResources:
            # fp32 operands with a large head dim overflow shared memory at the default tiles: the launch
            # fails before the kernel runs, so retry with the small config every kernel supports.
            fixed = dict(zip(("BLOCK_M", "BLOCK_N", "num_warps", "num_stages"), GPU_SMALL_CONFIG[kind]))
            run(fixed)


def _tma_aligned(x: torch.Tensor) -> bool:
    """What a TMA descriptor over x (T, H, D) needs: unit last stride, 16-byte aligned address and strides,
    32-bit token coordinates, a head dim the copy engine's box can span (<= 256)."""
    size = x.element_size()
    return (
        x.stride(-1) == 1
        and x.data_ptr() % 16 == 0
        and (x.stride(0) * size) % 16 == 0
        and (x.stride(1) * size) % 16 == 0
        and 0 < x.shape[0] < 2**31
        and x.shape[-1] <= 256
    )


def _use_tma(k: torch.Tensor, v: torch.Tensor, causal: bool, opts: KernelOptions) -> bool:
    """Whether the forward reads k and v through TMA descriptors (`KernelOptions.tma`): never when
    non-causal (a tile past a sequence's end holds the next one's keys, which only the causal mask drops)."""
    if opts.tma == "off" or not causal or TensorDescriptor is None:
        return False
    if k.is_cuda and torch.cuda.get_device_capability(k.device)[0] < 9:  # TMA arrived with Hopper
        return False
    if opts.tma == "auto" and (is_interpreter() or k.dtype not in (torch.bfloat16, torch.float16)):
        return False
    return _tma_aligned(k) and _tma_aligned(v)


def _descriptor(x: torch.Tensor):
    """A TMA descriptor over x (T, H, D); its block (BLOCK_N, 1, BLOCK_D) is set per launch (_tma_blocks)."""
    return TensorDescriptor(x, list(x.shape), list(x.stride()), [16, 1, _block_dim(x.shape[-1])])


def _dot_precision(x: torch.Tensor, opts: KernelOptions) -> str:
    # Only fp32 operands have a choice; bf16/fp16 dots are exact products with fp32 accumulation.
    # With fp32_precision None: "tf32" if torch.backends.cuda.matmul.allow_tf32 (the trainer's
    # `tf32 = true`, the reference's setting), else "tf32x3". Measured on the H200 (2026-11-28): plain
    # tf32 gave 1.6e-3 relative error on fp32 inputs, tf32x3 5e-7 (three tf32 products, about fp32).
    if x.dtype != torch.float32:
        return "tf32"
    if opts.fp32_precision is not None:
        return opts.fp32_precision
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


# Plain integer arithmetic on the host: triton.next_power_of_2 and triton.cdiv are constexpr functions
# whose Python calls cost microseconds each, and every launch makes several (benchmarks/attention_host_time.py).
def _block_dim(d: int) -> int:
    return tiles.length_class(d)  # the next power of two, at least 16


def _seq_len_key(max_seq_len: int) -> int:
    # What the autotuner keys on: nearby lengths share one tuning.
    return tiles.length_class(max_seq_len)


def _new(shape, dtype, device, opts: KernelOptions):
    if opts.poison_outputs:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


def _new_rows(shape, dtype, offsets: torch.Tensor, lengths: torch.Tensor | None, opts: KernelOptions):
    """An output buffer (T, ...) for the kernels. With `lengths`, the rows past each sequence's first
    lengths[b] are zeros (no kernel writes them); under `poison_outputs` the rows the kernels must write are
    NaN, so a row they skip shows."""
    if lengths is None:
        return _new(shape, dtype, offsets.device, opts)
    if not opts.poison_outputs:
        return torch.zeros(shape, dtype=dtype, device=offsets.device)
    out = _new(shape, dtype, offsets.device, opts)
    return out.masked_fill_(~attended_rows(offsets, lengths, shape[0]).view(-1, *[1] * (len(shape) - 1)), 0.0)


def attended_rows(offsets: torch.Tensor, lengths: torch.Tensor, total: int) -> torch.Tensor:
    """(T,) bool: True on the rows of each sequence (`offsets` (B+1,)) among its first `lengths[b]`."""
    seq = jagged_batch_ids(offsets, total)  # (T,)
    return jagged_positions(offsets, total) < lengths.to(offsets.device)[seq]


_PLACEHOLDERS: dict[torch.device, torch.Tensor] = {}


def _placeholder(device: torch.device) -> torch.Tensor:
    """A one-element tensor for pointer arguments the kernels do not read in this mode: allocated here,
    once per device, so a tuner that zeroes it touches nothing of the caller's (and no call pays for
    an allocation). Never read, so sharing it between calls and streams is harmless."""
    t = _PLACEHOLDERS.get(device)
    if t is None:
        t = _PLACEHOLDERS[device] = torch.zeros(1, dtype=torch.float32, device=device)
    return t


def _hand_over(buf: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`buf` (a buffer the autotuner may reset) as a gradient for the caller, in `dtype`: copied when the
    cast or reshape would return the buffer itself, so no returned tensor is ever a tuner's buffer."""
    out = buf.to(dtype)
    return out.clone() if out.untyped_storage().data_ptr() == buf.untyped_storage().data_ptr() else out


def _last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    # Kernels take any token/head strides (views of a fused projection are fine) but a unit last stride.
    return x if x.stride(-1) == 1 else x.contiguous()


class _HSTUAttentionFunction(torch.autograd.Function):
    """Forward and backward through the kernels; the options in force at the forward apply to its
    backward too (kept on ctx: the backward may run on another thread, outside any use_options scope)."""

    @staticmethod
    def forward(ctx, q, k, v, offsets, lengths, rab, ts, nts, pos_w, ts_w, alpha, inv_n, causal, max_seq_len):
        opts = get_options()
        T, H, D_QK = q.shape
        D_V = v.shape[-1]
        B = offsets.numel() - 1
        bias = _Bias(rab, ts, nts, pos_w, ts_w, max_seq_len, _placeholder(q.device))
        out = _new_rows((T, H, D_V), q.dtype, offsets, lengths, opts)  # (T, H, D_V)
        if T > 0:
            args = (
                q,
                k,
                v,
                out,
                offsets,
                _placeholder(q.device) if lengths is None else lengths,
                *bias.args,
                q.stride(0),
                q.stride(1),
                k.stride(0),
                k.stride(1),
                v.stride(0),
                v.stride(1),
                out.stride(0),
                out.stride(1),
                *bias.strides,
                H,
                bias.P,
                bias.NB,
                float(alpha),
                float(inv_n),
                _seq_len_key(max_seq_len),
            )
            consts = dict(
                D_QK=D_QK,
                D_V=D_V,
                BLOCK_D_QK=_block_dim(D_QK),
                BLOCK_D_V=_block_dim(D_V),
                CAUSAL=causal,
                BIAS=bias.mode,
                DOT_PREC=_dot_precision(q, opts),
                HAS_LENGTHS=lengths is not None,
            )
            if _use_tma(k, v, causal, opts):  # k, v as TMA descriptors; their blocks follow the tiles
                args = (args[0], _descriptor(k), _descriptor(v), *args[3:])
                _launch("fwd_tma", "BLOCK_M", max_seq_len, B * H, args, consts, opts)
            else:
                _launch("fwd", "BLOCK_M", max_seq_len, B * H, args, consts, opts)
        ctx.save_for_backward(q, k, v, offsets, lengths, rab, ts, nts, pos_w, ts_w)
        ctx.alpha, ctx.inv_n, ctx.causal, ctx.max_seq_len, ctx.opts = alpha, inv_n, causal, max_seq_len, opts
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, offsets, lengths, rab, ts, nts, pos_w, ts_w = ctx.saved_tensors
        opts = ctx.opts
        T, H, D_QK = q.shape
        D_V = v.shape[-1]
        B = offsets.numel() - 1
        max_seq_len = ctx.max_seq_len
        unused = _placeholder(q.device)
        bias = _Bias(rab, ts, nts, pos_w, ts_w, max_seq_len, unused)
        dout = _last_dim_contiguous(dout)  # (T, H, D_V)
        atomic_dq = opts.dq_mode == "atomic"
        if atomic_dq:  # (T, H, D_QK) fp32: the dK/dV kernel's atomics accumulate into it
            dq_acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        else:  # (T, H, D_QK), written by the dQ kernel; the dK/dV kernel gets the placeholder
            dq, dq_acc = _new_rows(q.shape, q.dtype, offsets, lengths, opts), unused
        dk = _new_rows(k.shape, k.dtype, offsets, lengths, opts)  # (T, H, D_QK)
        dv = _new_rows(v.shape, v.dtype, offsets, lengths, opts)  # (T, H, D_V)
        rab_grad = (rab is not None and ctx.needs_input_grad[5]) or (
            pos_w is not None and (ctx.needs_input_grad[8] or ctx.needs_input_grad[9])
        )
        short = max_seq_len <= REL_BIAS_ATOMIC_MAX_SEQ_LEN
        atomic_weights = opts.rel_bias_grad == "atomic" or (opts.rel_bias_grad == "auto" and short)
        weights_in_kernel = rab_grad and bias.mode == 2 and atomic_weights
        if weights_in_kernel:  # (B*H, copies * (2P-1 + NB)) fp32: copies of [dpos_w | dts_w] per (seq., head)
            drab_w = REL_BIAS_GRAD_COPIES.value * (2 * bias.P - 1 + bias.NB)
            drab = torch.zeros((B * H, drab_w), dtype=torch.float32, device=q.device)
        elif rab_grad:  # (B, H, N, N) fp32 bias gradient; entries the kernel skips (masked, padding) read 0
            drab_w = bias.pad_width
            drab = torch.zeros((B, H, drab_w, drab_w), dtype=torch.float32, device=q.device)
        else:
            drab_w, drab = 1, unused
        rab_grad_mode = 2 if weights_in_kernel else int(rab_grad)
        if T > 0:
            common = dict(
                D_QK=D_QK,
                D_V=D_V,
                BLOCK_D_QK=_block_dim(D_QK),
                BLOCK_D_V=_block_dim(D_V),
                CAUSAL=ctx.causal,
                BIAS=bias.mode,
                DOT_PREC=_dot_precision(q, opts),
                HAS_LENGTHS=lengths is not None,
            )
            lengths_arg = unused if lengths is None else lengths
            tail = (H, bias.P, bias.NB, float(ctx.alpha), float(ctx.inv_n), _seq_len_key(max_seq_len))
            qkv_strides = (
                q.stride(0),
                q.stride(1),
                k.stride(0),
                k.stride(1),
                v.stride(0),
                v.stride(1),
                dout.stride(0),
                dout.stride(1),
            )
            dq_strides = (H * D_QK, D_QK)  # dq and dq_acc are both contiguous (T, H, D_QK)
            args = (
                q,
                k,
                v,
                dout,
                dq_acc,
                dk,
                dv,
                drab,
                offsets,
                lengths_arg,
                *bias.args,
                *qkv_strides,
                *dq_strides,
                dk.stride(0),
                dk.stride(1),
                dv.stride(0),
                dv.stride(1),
                *bias.strides,
                drab_w,
                *tail,
            )
            _launch(
                "dkdv",
                "BLOCK_N",
                max_seq_len,
                B * H,
                args,
                dict(common, RAB_GRAD=rab_grad_mode, ATOMIC_DQ=atomic_dq),
                opts,
            )
            if not atomic_dq:
                args = (
                    q,
                    k,
                    v,
                    dout,
                    dq,
                    offsets,
                    lengths_arg,
                    *bias.args,
                    *qkv_strides,
                    *dq_strides,
                    *bias.strides,
                    *tail,
                )
                _launch("dq", "BLOCK_M", max_seq_len, B * H, args, common, opts)
        if atomic_dq:
            dq = _hand_over(dq_acc, q.dtype)
        grad_rab = grad_pos = grad_ts = None
        if rab_grad and bias.mode == 1:
            grad_rab = _hand_over(drab.sum_to_size(bias.rab4_shape).reshape(rab.shape), rab.dtype)
        elif weights_in_kernel:
            # (2P-1 + NB,): summed over the copies, sequences and heads (the weights are shared)
            w = drab.view(-1, 2 * bias.P - 1 + bias.NB).sum(0)
            grad_pos, grad_ts = w[: 2 * bias.P - 1], w[2 * bias.P - 1 :]
            grad_pos, grad_ts = grad_pos.to(pos_w.dtype), grad_ts.to(ts_w.dtype)
        elif rab_grad and bias.mode == 2:
            grad_pos, grad_ts = _rel_bias_weight_grads(drab.sum(1), offsets, ts, nts, bias.P, bias.NB)
            grad_pos, grad_ts = grad_pos.to(pos_w.dtype), grad_ts.to(ts_w.dtype)
        return dq, dk, dv, None, None, grad_rab, None, None, grad_pos, grad_ts, None, None, None, None


def _prepare(q, k, v, offsets, norm, max_seq_len):
    """Check the inputs and bring them to the kernels' form; returns ([q, k, v], offsets, 1/n, longest)."""
    if q.dim() != 3 or k.shape != q.shape or v.dim() != 3 or v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"triton_hstu_attention expects jagged q, k of shape (T, H, dqk) and v of shape (T, H, dv); "
            f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}. Flatten a padded (B, N, H, d) "
            "batch with hstu_tutorial.ops.dense_to_jagged first."
        )
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_floating(t, name)
    check_norm(norm)
    if not (q.is_cuda or is_interpreter()):
        raise RuntimeError(
            "the Triton kernel needs CUDA tensors, or TRITON_INTERPRET=1 set before triton is "
            "imported (hstu_tutorial.ops.triton does this on machines without CUDA); "
            f"got tensors on {q.device}"
        )
    if max_seq_len is None:
        # One host sync: the grid size needs the longest sequence; the offsets are checked on the way.
        max_seq_len = check_offsets(offsets, q.shape[0], read_values=True)
    else:
        # The caller knows the longest length (the trainer's fast path): shape and dtype only, no sync.
        check_offsets(offsets, q.shape[0], read_values=False)
        if int(max_seq_len) < 0:
            raise ValueError(f"max_len (the longest sequence length) must be >= 0; got {max_seq_len}")
    offsets = offsets.to(torch.int64)
    norm = max_seq_len if norm is None else norm
    inv_n = 1.0 / norm if norm else 0.0  # n = 0 only for a batch of empty sequences: nothing to scale
    return [_last_dim_contiguous(x) for x in (q, k, v)], offsets, inv_n, int(max_seq_len)


def _check_lengths(lengths: torch.Tensor | None, offsets: torch.Tensor) -> torch.Tensor | None:
    """`lengths` (B,) as the kernels read it (shape, dtype and device checked; values not: no host sync)."""
    if lengths is None:
        return None
    B = offsets.numel() - 1
    if lengths.shape != (B,) or lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise ValueError(
            f"lengths must be (B,) = ({B},) integers, one per sequence of offsets; got {tuple(lengths.shape)} "
            f"{lengths.dtype}"
        )
    if lengths.device != offsets.device:
        raise ValueError(f"lengths is on {lengths.device}, offsets on {offsets.device}")
    return lengths.contiguous()


def _fp32_in_interpreter(tensors):
    # The interpreter's bf16 arithmetic is not faithful; there we compute in fp32 and cast back.
    dtype = tensors[0].dtype
    if is_interpreter() and dtype != torch.float32:
        return [t.float() if t is not None and t.is_floating_point() else t for t in tensors], dtype
    return tensors, None


def triton_hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    *,
    rab: torch.Tensor | None = None,
    alpha: float = 1.0,
    norm: float | torch.Tensor | None = None,
    causal: bool = True,
    max_len: int | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """HSTU pointwise attention on a jagged batch, fused in Triton (forward and backward).

    q, k: (T, H, dqk); v: (T, H, dv); offsets: (B+1,) int64 with offsets[0] = 0, offsets[-1] = T.
    rab: optional padded bias (B, N, N) or (B, H, N, N), N >= longest length (differentiable).
    norm: the divisor n > 0 (default: the longest length in the batch); max_len: the longest sequence
    length, if known (saves the host sync; the offsets' values are then not checked).
    lengths: optional (B,) integers: sequence b attends over its first lengths[b] rows only (queries and
    keys); its other rows get zero outputs and gradients and cost no FLOPs (a padded batch stored as
    sequences of N rows). norm still defaults to the longest row count.
    Returns (T, H, dv): inside each sequence, for query i,
        out_i = sum_{j <= i} SiLU(alpha <q_i, k_j> + rab_ij) / n * v_j      (all j if not causal)
    which is Eq. (2) of the HSTU paper with the pointwise (not softmax) normalisation.
    """
    (q, k, v), offsets, inv_n, max_seq_len = _prepare(q, k, v, offsets, norm, max_len)
    if rab is not None:
        check_floating(rab, "rab")
        if rab.dim() not in (3, 4) or rab.shape[-1] < max_seq_len or rab.shape[-2] != rab.shape[-1]:
            raise ValueError(
                f"rab must be padded (B, N, N) or (B, H, N, N) with N >= the longest length "
                f"{max_seq_len}; got shape {tuple(rab.shape)}"
            )
        rab = _last_dim_contiguous(rab) if rab.stride(-1) not in (0, 1) else rab
    (q, k, v, rab), cast_back = _fp32_in_interpreter([q, k, v, rab])
    lengths = _check_lengths(lengths, offsets)
    out = _HSTUAttentionFunction.apply(
        q, k, v, offsets, lengths, rab, None, None, None, None, alpha, inv_n, causal, max_seq_len
    )
    return out if cast_back is None else out.to(cast_back)


def triton_hstu_attention_rel_bias(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    timestamps: torch.Tensor,
    next_timestamps: torch.Tensor,
    pos_w: torch.Tensor,
    ts_w: torch.Tensor,
    *,
    alpha: float = 1.0,
    norm: float | torch.Tensor | None = None,
    causal: bool = True,
    max_len: int | None = None,
    lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """HSTU attention with the relative attention bias formed inside the kernel (no (B, N, N) tensor).

    timestamps, next_timestamps: jagged (T,) int64 (next_timestamps[i] is the time of the item after i,
    the target's for the last one); pos_w: (2P-1,); ts_w: (NB,). Inside each sequence
        rab_ij = pos_w[P - 1 + j - i] + ts_w[bucket(next_ts_i - ts_j)],
        bucket(d) = time_bucket(d, NB - 1) = clamp(floor(ln(max(|d|, 1)) / 0.301), 0, NB - 1),
    with positions i, j counted from each sequence's start (relative offsets past +-(P-1) clamp to the
    end entries). Gradients flow to q, k, v, pos_w and ts_w. Other arguments as triton_hstu_attention.
    """
    (q, k, v), offsets, inv_n, max_seq_len = _prepare(q, k, v, offsets, norm, max_len)
    check_floating(pos_w, "pos_w")
    check_floating(ts_w, "ts_w")
    if pos_w.dim() != 1 or pos_w.numel() % 2 != 1 or ts_w.dim() != 1:
        raise ValueError(
            f"pos_w must be 1-D with 2P-1 entries and ts_w 1-D; got {tuple(pos_w.shape)} and "
            f"{tuple(ts_w.shape)}"
        )
    if timestamps.shape != (q.shape[0],) or next_timestamps.shape != (q.shape[0],):
        raise ValueError(
            f"timestamps and next_timestamps must be jagged (T,) = ({q.shape[0]},); got "
            f"{tuple(timestamps.shape)} and {tuple(next_timestamps.shape)}"
        )
    ts, nts = timestamps.to(torch.int64).contiguous(), next_timestamps.to(torch.int64).contiguous()
    (q, k, v, pos_w, ts_w), cast_back = _fp32_in_interpreter([q, k, v, pos_w.contiguous(), ts_w.contiguous()])
    lengths = _check_lengths(lengths, offsets)
    out = _HSTUAttentionFunction.apply(
        q, k, v, offsets, lengths, None, ts, nts, pos_w, ts_w, alpha, inv_n, causal, max_seq_len
    )
    return out if cast_back is None else out.to(cast_back)
