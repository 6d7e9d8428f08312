"""Tensor operations of HSTU: jagged tensors, attention (PyTorch reference) and Triton kernels.

The kernels' switches live in one options object: `get_options()`, `set_options(...)`,
`with use_options(...)` (see hstu_tutorial.ops.options)."""

from hstu_tutorial.ops.embedding import embedding_lookup  # noqa: F401
from hstu_tutorial.ops.hstu_attention import (  # noqa: F401
    RelativeAttentionBias,
    attention_mask,
    fused_softmax_attention,
    hstu_attention,
    padded_hstu_attention,
    padded_softmax_attention,
    softmax_attention,
)
from hstu_tutorial.ops.jagged_tensors import (  # noqa: F401
    check_floating,
    check_lengths,
    check_offsets,
    dense_to_jagged,
    jagged_batch_ids,
    jagged_positions,
    jagged_to_padded,
    lengths_to_offsets,
    next_timestamps,
    offsets_to_lengths,
    padded_index,
    padded_to_jagged,
    padding_mask,
)
from hstu_tutorial.ops.options import KernelOptions, get_options, set_options, use_options  # noqa: F401
from hstu_tutorial.ops.time_buckets import NUM_TIME_BUCKETS, TIME_BUCKET_LOG_BASE, time_bucket  # noqa: F401


def __getattr__(name):
    # Triton is imported on first use only: importing it costs seconds, and on a CPU it must start in
    # interpreter mode (hstu_tutorial.ops.triton sets TRITON_INTERPRET=1 before defining any kernel).
    if name == "triton_hstu_attention":
        from hstu_tutorial.ops.triton import triton_hstu_attention

        return triton_hstu_attention
    raise AttributeError(f"module 'hstu_tutorial.ops' has no attribute {name!r}")
