"""The bias of one attention call in the form the kernels take, and the reduction of the dense bias
gradient onto the relative bias's two weight vectors (pos_w, ts_w)."""

from __future__ import annotations

import torch

from hstu_tutorial.ops.time_buckets import time_bucket


class _Bias:
    """The bias of one call in the form the kernels take: mode, pointer arguments, strides, sizes."""

    def __init__(self, rab, ts, nts, pos_w, ts_w, max_seq_len, unused):
        self.strides = (0, 0, 0, 0)  # rab's batch, head, row, column strides
        self.P, self.NB = 1, 1  # pos_w has 2P-1 entries, ts_w has NB
        if rab is not None:
            self.mode = 1
            r = rab if rab.dim() == 4 else rab.unsqueeze(1)  # (B|1, H|1, N, N)
            self.rab4_shape = r.shape
            self.strides = (
                r.stride(0) if r.size(0) > 1 else 0,
                r.stride(1) if r.size(1) > 1 else 0,
                r.stride(2),
                r.stride(3),
            )
            self.pad_width = r.size(-1)  # N of the padded bias (and of its dense gradient)
        elif pos_w is not None:
            self.mode = 2
            self.P, self.NB = (pos_w.numel() + 1) // 2, ts_w.numel()
            self.pad_width = max_seq_len  # the dense gradient of the formed bias is padded to the longest
        else:
            self.mode = 0
            self.pad_width = 1
        # Pointers the kernels read in this mode, the placeholder for the others (never dereferenced).
        self.args = tuple(unused if t is None else t for t in (rab, ts, nts, pos_w, ts_w))


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
    bucket = time_bucket(nt[:, :, None] - t[:, None, :], NB - 1)  # (B, N, N); ts_w has NB entries
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
