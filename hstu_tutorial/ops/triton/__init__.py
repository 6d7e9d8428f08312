"""Triton kernels for HSTU's pointwise (SiLU) attention on jagged batches, with autograd wrappers.

Public entry points (same math as `hstu_tutorial.ops.hstu_attention`):

* `triton_hstu_attention(q, k, v, offsets, *, rab=None, alpha=1.0, norm=None, causal=True)`
* `triton_hstu_attention_rel_bias(q, k, v, offsets, timestamps, next_timestamps, pos_w, ts_w, ...)`:
  the relative attention bias is formed inside the kernel from its two weight vectors.

On a machine without CUDA, Triton runs its kernels in the interpreter (numpy on the CPU). The variable
must be set before `triton` is imported, since `@triton.jit` reads it when a kernel is decorated.
"""

import os

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"

from hstu_tutorial.ops.triton.hstu_attention_autograd import (  # noqa: E402, F401
    is_interpreter,
    triton_hstu_attention,
    triton_hstu_attention_rel_bias,
)
