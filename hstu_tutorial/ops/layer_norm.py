"""LayerNorm without affine parameters, as both HSTU and SASRec use it: one call, two implementations.

    layer_norm(x, eps) == F.layer_norm(x, (x.shape[-1],), eps=eps)

On a CUDA tensor it runs the fused Triton kernel of `hstu_tutorial.ops.triton.layer_norm` (PyTorch's own
kernel is slow for rows of 50 values, the width of every norm in the ML-1M models); elsewhere, or with
the option `fused_layer_norm=False` (`use_options`, or `HSTU_FUSED_LAYER_NORM=0` in the environment for
the default), it is `F.layer_norm`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hstu_tutorial.ops.options import get_options

_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise the last dimension of `x (..., D)` to mean 0, variance 1 (no scale, no shift)."""
    if x.is_cuda and x.dtype in _FUSED_DTYPES and get_options().fused_layer_norm:
        from hstu_tutorial.ops.triton.layer_norm import triton_layer_norm

        return triton_layer_norm(x, eps)
    return F.layer_norm(x, (x.shape[-1],), eps=eps)
