"""The switches of the Triton kernels and the fused LayerNorm, in one options object read at call time.

    from hstu_tutorial.ops import get_options, set_options, use_options

    with use_options(autotune=False, poison_outputs=True):   # scoped: restored on exit
        out = triton_hstu_attention(q, k, v, offsets)
    set_options(dq_mode="atomic")                             # process-wide default from now on

Every kernel wrapper reads `get_options()` when it is called, never at import, so a change applies to
the next call. The process default comes from the environment the first time it is needed
(`KernelOptions.from_env`, the only place these variables are read):

    HSTU_FUSED_LAYER_NORM=0                       fused_layer_norm = False
    HSTU_FUSED_LOSS=0                             fused_loss = False
    HSTU_FUSED_SASREC_OUTPUT=0                    fused_sasrec_output = False
    HSTU_FUSED_SASREC_INPUT=0                     fused_sasrec_input = False
    HSTU_TRITON_REL_BIAS_GRAD=dense|atomic|auto   rel_bias_grad
    HSTU_TRITON_DQ_MODE=kernel|atomic             dq_mode
    HSTU_TRITON_FP32_PRECISION=tf32|tf32x3|ieee   fp32_precision
    HSTU_TRITON_TUNING=table|tune                 tuning
    HSTU_TRITON_TMA=auto|on|off                   tma
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

_CHOICES = {
    "rel_bias_grad": ("dense", "atomic", "auto"),
    "dq_mode": ("kernel", "atomic"),
    "fp32_precision": (None, "tf32", "tf32x3", "ieee"),
    "tuning": ("table", "tune"),
    "tma": ("auto", "on", "off"),
}
_SWITCHES = (
    "fused_layer_norm",
    "fused_loss",
    "fused_sasrec_output",
    "fused_sasrec_input",
)  # on/off options: "0" turns one off
_ENV = {  # field -> environment variable that gives its process default
    "fused_layer_norm": "HSTU_FUSED_LAYER_NORM",
    "fused_loss": "HSTU_FUSED_LOSS",
    "fused_sasrec_output": "HSTU_FUSED_SASREC_OUTPUT",
    "fused_sasrec_input": "HSTU_FUSED_SASREC_INPUT",
    "rel_bias_grad": "HSTU_TRITON_REL_BIAS_GRAD",
    "dq_mode": "HSTU_TRITON_DQ_MODE",
    "fp32_precision": "HSTU_TRITON_FP32_PRECISION",
    "tuning": "HSTU_TRITON_TUNING",
    "tma": "HSTU_TRITON_TMA",
}


@dataclass(frozen=True)
class KernelOptions:
    """How the Triton attention kernels and the LayerNorm run (validated on construction)."""

    # On a GPU: tiles chosen per shape class (True, as `tuning` says) or one default tile set for every
    # shape (False: no lookup, no tuning). The interpreter always uses `interpreter_block`.
    autotune: bool = True
    # Where the per-shape tiles come from (hstu_tutorial.ops.triton.tiles): "table" = the table shipped
    # for this GPU family, else this machine's tile cache, else tune once and save to the cache; "tune" =
    # time every shape class once in this process, ignoring table and cache, and save the choices.
    tuning: str = "table"
    # LayerNorm through the fused Triton kernel on CUDA tensors (False: F.layer_norm everywhere).
    fused_layer_norm: bool = True
    # The sampled softmax loss through its Triton kernels on CUDA tensors (losses.sampled_softmax_loss,
    # impl="auto"; False: the "dense" matrix products, or "gather" for a large catalogue).
    fused_loss: bool = True
    # The second half of a SASRec block (output projection, residual LayerNorm, FFN) through one Triton
    # kernel each way on CUDA float32 tensors (hstu_tutorial.ops.triton.sasrec_output; False: nn.Linear,
    # layer_norm and F.dropout, spelled out).
    fused_sasrec_output: bool = True
    # The first half of a one-head SASRec block with bf16 attention (the query's LayerNorm, the q, k, v products,
    # the bf16 copies padded for SDPA) through one Triton kernel each way on CUDA float32 tensors
    # (hstu_tutorial.ops.triton.sasrec_input; False: spelled out).
    fused_sasrec_input: bool = True
    # How the gradients of the relative bias's weights (pos_w, ts_w) are formed: "dense" (the kernel
    # writes the (B, H, N, N) bias gradient, PyTorch reduces it), "atomic" (the kernel adds onto the two
    # vectors directly) or "auto" (atomic up to N = 1024, dense above: the atomics collide more and more
    # as sequences grow). "auto" is the faster one at ML-1M sizes (H200, 2026-12-01,
    # benchmarks/profile_step.py: HSTU step 2.89 against 3.30 ms, HSTU-large 9.03 against 9.41 ms).
    rel_bias_grad: str = "auto"
    # How dQ is formed in the backward: "kernel" (a second kernel, no atomics) or "atomic" (the dK/dV
    # kernel adds its share with fp32 atomics).
    dq_mode: str = "kernel"
    # tl.dot precision for fp32 operands: None follows torch.backends.cuda.matmul.allow_tf32 ("tf32" when
    # on, else "tf32x3"), or "tf32" | "tf32x3" | "ieee".
    fp32_precision: str | None = None
    # How the forward kernel reads key and value tiles: "off" = by pointer loads; "auto" = through TMA tensor
    # descriptors (Hopper's Tensor Memory Accelerator) for causal bf16/fp16 attention on a GPU of compute
    # capability 9 or more whose k and v have 16-byte aligned addresses and strides, else by pointers;
    # "on" = TMA whenever the tensors allow it, any dtype, the interpreter included (tests; on a GPU still
    # compute capability 9 or more). "auto" by default: the TMA forward took 0.90x the pointer forward's time
    # (bf16, head size 128, jagged-1024 and dense-4096; H200, 2026-12-01, benchmarks/attention_host_time.py)
    # and passed the GPU self-check (benchmarks/check_kernels_gpu.py). The ML-1M configs (fp32, or bf16 rows
    # of 50 values: not 16-byte aligned) stay on pointer loads.
    tma: str = "auto"
    # Fill kernel outputs with NaN before launch (tests: an element never written shows up as NaN).
    poison_outputs: bool = False
    # (BLOCK_M, BLOCK_N) under TRITON_INTERPRET=1; tests shrink them to cross many tiles.
    interpreter_block: tuple[int, int] = (64, 64)

    def __post_init__(self):
        for name in ("autotune", "poison_outputs", *_SWITCHES):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"KernelOptions.{name} must be True or False; got {getattr(self, name)!r}")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                got = getattr(self, name)
                raise ValueError(f"KernelOptions.{name} must be one of {allowed}; got {got!r}")
        block = self.interpreter_block
        ok = (
            isinstance(block, (tuple, list))
            and len(block) == 2
            and all(isinstance(b, int) and b >= 16 and b & (b - 1) == 0 for b in block)
        )
        if not ok:
            raise ValueError(
                "KernelOptions.interpreter_block must be two powers of two >= 16 (tl.dot's "
                f"smallest tile), (BLOCK_M, BLOCK_N); got {block!r}"
            )
        object.__setattr__(self, "interpreter_block", tuple(block))

    @classmethod
    def from_env(cls) -> KernelOptions:
        """The defaults, with the HSTU_* environment variables applied (see the module docstring)."""
        changes = {}
        for name, var in _ENV.items():
            value = os.environ.get(var)
            if value is None or value == "":
                continue
            changes[name] = value != "0" if name in _SWITCHES else value
        try:
            return cls(**changes)
        except ValueError as e:
            raise ValueError(
                f"{e} (from the environment: "
                f"{', '.join(f'{_ENV[n]}={os.environ[_ENV[n]]}' for n in changes)})"
            ) from None

    def replace(self, **changes) -> KernelOptions:
        """A copy with `changes` applied; an unknown name is a TypeError, a bad value a ValueError."""
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - fields)
        if unknown:
            raise TypeError(
                f"KernelOptions has no option {', '.join(unknown)}; the options are "
                f"{', '.join(sorted(fields))}"
            )
        return dataclasses.replace(self, **changes)


_process_default: KernelOptions | None = None  # read from the environment on first use
_scoped: contextvars.ContextVar[KernelOptions | None] = contextvars.ContextVar(
    "hstu_kernel_options", default=None
)


def _default() -> KernelOptions:
    global _process_default
    if _process_default is None:
        _process_default = KernelOptions.from_env()
    return _process_default


def get_options() -> KernelOptions:
    """The options in force: the innermost `use_options` scope, else the process default."""
    scoped = _scoped.get()
    return scoped if scoped is not None else _default()


def set_options(**changes) -> KernelOptions:
    """Change the process-wide default (an enclosing `use_options` scope still wins); returns the
    previous default, so `set_options(**dataclasses.asdict(prev))` undoes it."""
    global _process_default
    previous = _default()
    _process_default = previous.replace(**changes)
    return previous


@contextmanager
def use_options(**changes) -> Iterator[KernelOptions]:
    """Apply `changes` to the options in force for the body of a `with` block (this thread/task only)."""
    token = _scoped.set(get_options().replace(**changes))
    try:
        yield _scoped.get()
    finally:
        _scoped.reset(token)


__all__ = ["KernelOptions", "get_options", "set_options", "use_options"]
