"""HSTU's log time buckets: the one PyTorch definition of how a time gap becomes a bucket index.

    bucket(d) = clamp(floor(ln(max(|d|, 1)) / TIME_BUCKET_LOG_BASE), 0, num_buckets)

A bias table for `num_buckets` has `num_buckets + 1` entries (indices 0..num_buckets). The Triton
kernel re-states the formula in Triton (`_rel_bias_index` in ops/triton/hstu_attention_kernels.py) with
the same constant, and the tests check that both give the same buckets.
"""

from __future__ import annotations

import torch

# Width of a bucket in ln(seconds): 0.301 ~ log10(2), so a bucket spans a factor e^0.301 ~ 1.35 in time.
TIME_BUCKET_LOG_BASE = 0.301
# Buckets of the reference's ML-1M model: indices 0..128, so the time-bias table has 129 entries.
NUM_TIME_BUCKETS = 128


def time_bucket(d: torch.Tensor, num_buckets: int = NUM_TIME_BUCKETS) -> torch.Tensor:
    """Log time bucket of a time gap in seconds: `clamp(floor(ln(max(|d|, 1)) / 0.301), 0, num_buckets)`.

    0.301 ~ log10(2), so a bucket spans a factor e^0.301 ~ 1.35 in time: seconds apart and years apart
    both get their own buckets with 129 parameters. Returns int64 of d's shape.
    """
    # float32 as the reference (and the Triton kernel) compute it, so bucket edges agree exactly.
    d = d.abs().clamp(min=1).to(torch.float32)
    return torch.floor(torch.log(d) / TIME_BUCKET_LOG_BASE).to(torch.int64).clamp(0, num_buckets)


__all__ = ["NUM_TIME_BUCKETS", "TIME_BUCKET_LOG_BASE", "time_bucket"]
