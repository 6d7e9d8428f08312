"""Embedding lookup whose backward adds rows with `index_add_` instead of sorting the ids.

`nn.Embedding`'s backward (`embedding_dense_backward`) sorts the T looked-up ids so that it can sum the
gradient rows of equal ids without atomics: on a GPU that is a radix sort of dozens of kernels, every
training step, for each table. Here the gradient of the table is built the direct way,

    dW = zeros(num_rows, D);  dW[ids[t]] += dy[t]  for every t     (index_add_)

which is one fill and one scatter kernel (atomic adds on CUDA). The forward is the same row lookup.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["embedding_lookup"]


class _EmbeddingLookup(torch.autograd.Function):
    """y = weight[ids]; dweight = zeros.index_add_(0, ids, dy) with the padding row left at zero."""

    @staticmethod
    def forward(ctx, ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.num_rows = weight.shape[0]
        ctx.padding_idx = padding_idx
        return F.embedding(ids, weight)  # (..., D)

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        (ids,) = ctx.saved_tensors
        if not ctx.needs_input_grad[1]:
            return None, None, None
        D = dy.shape[-1]
        dw = dy.new_zeros(ctx.num_rows, D)  # (num_rows, D)
        dw.index_add_(0, ids.reshape(-1), dy.reshape(-1, D))  # repeated ids add up
        if ctx.padding_idx is not None:
            dw[ctx.padding_idx].zero_()  # nn.Embedding: the padding row never receives a gradient
        return None, dw, None


def embedding_lookup(ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None = None) -> torch.Tensor:
    """`F.embedding(ids, weight, padding_idx)` with a sort-free backward. ids (...) int, weight (R, D) -> (..., D).

    Same values and gradients as `nn.Embedding` (repeated ids sum their gradients; row `padding_idx` gets
    none), so a module can keep its `nn.Embedding` and call `embedding_lookup(ids, emb.weight,
    emb.padding_idx)`. On CUDA, `index_add_` adds with atomics: the order of the additions into one row
    varies from run to run, so the table's gradient is not bitwise reproducible (differences of a few
    float ulps; `torch.use_deterministic_algorithms(True)` makes PyTorch switch to a reproducible, sorting
    path). No host sync and no data-dependent shape: the lookup can be captured in a CUDA graph.
    """
    if ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"embedding_lookup: ids must be int32 or int64 item ids, got {ids.dtype}")
    if weight.dim() != 2:
        raise ValueError(
            f"embedding_lookup: weight must be a (rows, D) table, got shape {tuple(weight.shape)}"
        )
    if padding_idx is not None:
        if not -weight.shape[0] <= padding_idx < weight.shape[0]:
            raise ValueError(
                f"embedding_lookup: padding_idx must index a row of the {weight.shape[0]}-row table, "
                f"got {padding_idx}"
            )
        padding_idx %= weight.shape[0]  # -1 means the last row, as in nn.Embedding
    return _EmbeddingLookup.apply(ids, weight, padding_idx)
