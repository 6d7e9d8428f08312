"""Attention math: SASRec's softmax attention and HSTU's pointwise SiLU attention, in pure PyTorch.

Softmax attention (SASRec, a Transformer):   out_i = sum_j softmax_j(<q_i, k_j> / sqrt(d)) v_j
HSTU pointwise attention (paper eq. 2):      out_i = sum_{j<=i} SiLU(alpha <q_i, k_j> + rab_ij) / n * v_j

The softmax normalises each row to sum to 1, so "how much" the history matters is lost; SiLU keeps
the raw intensity and `n` is a constant (the reference uses max_seq_len + 11 = 211 on ML-1M), so the
output scales with the amount of relevant history. `rab` is the relative attention bias (position
and time), `RelativeAttentionBias` below.

Conventions: jagged inputs are `q, k (T, H, dqk)`, `v (T, H, dv)`, `offsets (B+1,)`; padded ones are
`(B, N, H, d)` with `lengths (B,)`. The jagged functions pad once to the batch's longest sequence,
run the padded version with masks and gather back: the result is exact (masked entries are zeros).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hstu_tutorial.ops.jagged_tensors import (
    check_floating,
    check_offsets,
    jagged_to_padded,
    offsets_to_lengths,
    padded_to_jagged,
    padding_mask,
)
from hstu_tutorial.ops.time_buckets import NUM_TIME_BUCKETS, time_bucket

ACTIVATIONS = ("silu", "softmax")  # HSTU's pointwise SiLU / n, and the softmax of the ablation


def attention_mask(lengths: torch.Tensor, max_len: int, causal: bool = True) -> torch.Tensor:
    """`(B, N, N)` bool: True where query i may attend to key j (both real items, and j <= i if causal)."""
    valid = padding_mask(lengths, max_len)  # (B, N)
    mask = valid[:, :, None] & valid[:, None, :]  # (B, N, N)
    if causal:
        mask = mask & torch.ones(max_len, max_len, dtype=torch.bool, device=lengths.device).tril()
    return mask


def _check_qkv(q, k, v, padded: bool):
    want = 4 if padded else 3
    layout = "(B, N, H, d)" if padded else "(T, H, d)"
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_floating(t, name)
        if t.dim() != want:
            raise ValueError(f"{name} must be {want}-D {layout}, got shape {tuple(t.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(
            f"v must match q in every dim but the last (dv may differ from dqk): "
            f"q {tuple(q.shape)}, v {tuple(v.shape)}"
        )


def check_norm(norm) -> None:
    """ValueError unless the divisor n is positive (n <= 0 would give inf/NaN or flip every sign).

    A Python number, or a tensor on the CPU, is checked; a GPU tensor is not (reading it would stall)."""
    if norm is None:
        return
    if isinstance(norm, torch.Tensor):
        if norm.device.type != "cpu":
            return
        bad = bool((norm <= 0).any()) if norm.numel() else False
    else:
        bad = not norm > 0
    if bad:
        raise ValueError(
            f"norm (the divisor n of the attention) must be > 0; got {norm}. Leave it None for "
            "the longest length in the batch, or pass e.g. max_seq_len + 11 as the reference."
        )


def _rab_bhnn(rab: torch.Tensor, B: int, H: int, N: int) -> torch.Tensor:
    """Bring a padded bias `(B, M, M)` or `(B, H, M, M)` (M >= N) to a broadcastable `(B, H|1, N, N)`."""
    if rab.dim() == 3:
        rab = rab.unsqueeze(1)  # (B, 1, M, M): one bias shared by all heads
    if rab.dim() != 4 or rab.shape[0] != B or rab.shape[1] not in (1, H):
        raise ValueError(f"rab must be (B, N, N) or (B, H, N, N) with B={B}, H={H}; got {tuple(rab.shape)}")
    if rab.shape[-1] < N or rab.shape[-2] < N:
        raise ValueError(f"rab is {tuple(rab.shape)} but the sequences need N >= {N}; pad the bias wider")
    return rab[:, :, :N, :N]


def padded_hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    *,
    rab: torch.Tensor | None = None,
    alpha: float = 1.0,
    norm: float | torch.Tensor | None = None,
    causal: bool = True,
    return_attention: bool = False,
    activation: str = "silu",
):
    """HSTU pointwise attention on padded tensors.

    q, k `(B, N, H, dqk)`, v `(B, N, H, dv)`, lengths `(B,)`; rab `(B, M, M)` or `(B, H, M, M)`, M >= N.
    Returns `(B, N, H, dv)` (zeros on padding rows) with
    `out_i = sum_j mask_ij * SiLU(alpha <q_i, k_j> + rab_ij) / n * v_j`, and also the attention
    `A (B, H, N, N)` if `return_attention`. `norm` is n; default: the longest length in the batch.
    `activation="softmax"` (an ablation) replaces SiLU(.) / n by a softmax over each row's allowed keys of
    `(alpha <q_i, k_j> + rab_ij) / sqrt(dqk)`: rows sum to 1 and n is not used.
    """
    _check_qkv(q, k, v, padded=True)
    check_norm(norm)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    B, N, H, dqk = q.shape
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * alpha  # (B, H, N, N)
    if rab is not None:
        scores = scores + _rab_bhnn(rab, B, H, N)
    mask = attention_mask(lengths, N, causal).unsqueeze(1)  # (B, 1, N, N)
    attn = _attention_weights(scores, mask, lengths, dqk, norm, activation)  # (B, H, N, N)
    out = torch.einsum("bhij,bjhd->bihd", attn.to(v.dtype), v)  # (B, N, H, dv)
    return (out, attn) if return_attention else out


def _attention_weights(scores, mask, lengths, dqk: int, norm, activation: str) -> torch.Tensor:
    """Scores `(B, H, [Nq,] N)` + allowed keys `mask (B, 1, [Nq,] N)` -> attention weights, masked entries 0:
    SiLU(s) / n (n = the longest of `lengths` when `norm` is None), or the "softmax" ablation's
    softmax(s / sqrt(dqk)) over the allowed keys."""
    if activation == "softmax":
        # A padding row has no allowed key: a finite fill keeps its softmax finite, the mask zeroes it.
        scores = (scores / math.sqrt(dqk)).masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) * mask  # each real row sums to 1
    # n stays a tensor when it is derived from lengths, so a GPU never waits for the host.
    n = lengths.max().clamp(min=1) if norm is None else norm
    return F.silu(scores) * mask / n  # masked entries are exact zeros


def hstu_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    *,
    rab: torch.Tensor | None = None,
    alpha: float = 1.0,
    norm: float | torch.Tensor | None = None,
    causal: bool = True,
) -> torch.Tensor:
    """HSTU pointwise attention, jagged reference (paper eq. 2, the A(X)V(X) term).

    q, k `(T, H, dqk)`, v `(T, H, dv)`, offsets `(B+1,)`; rab, if given, is padded `(B, N, N)` or
    `(B, H, N, N)` with `N >= max length`; `norm` is the divisor n (default: the longest sequence
    length in the batch). Returns `(T, H, dv)`; inside each sequence
    `out_i = sum_{j<=i} SiLU(alpha <q_i, k_j> + rab_ij) / n * v_j` (all j when not causal).
    """
    _check_qkv(q, k, v, padded=False)
    check_norm(norm)
    T = q.shape[0]
    N = max(check_offsets(offsets, T, read_values=True), 1)  # a reference: one host sync is fine
    lengths = offsets_to_lengths(offsets)  # (B,)
    qp = jagged_to_padded(q, offsets, N)  # (B, N, H, dqk)
    kp = jagged_to_padded(k, offsets, N)  # (B, N, H, dqk)
    vp = jagged_to_padded(v, offsets, N)  # (B, N, H, dv)
    out = padded_hstu_attention(qp, kp, vp, lengths, rab=rab, alpha=alpha, norm=norm, causal=causal)
    return padded_to_jagged(out, offsets, T)  # (T, H, dv)


def last_query_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    *,
    rab: torch.Tensor | None = None,
    norm: float | torch.Tensor | None = None,
    activation: str = "silu",
    dropout: float = 0.0,
) -> torch.Tensor:
    """The attention of one query per sequence, its last position i = lengths - 1 (what scores a target).

    q `(B, H, dqk)` (the queries at the last positions), k `(B, N, H, dqk)`, v `(B, N, H, dv)`, lengths
    `(B,)`; rab `(B, N)` or `(B, H, N)`: the bias row of that query. Returns `(B, H, dv)`, equal to row
    lengths - 1 of `padded_hstu_attention(..., causal=True)` (`activation` "silu" or "softmax", the same
    `norm`) and, with activation "softmax" and no rab, of `padded_softmax_attention`. `dropout` drops
    attention weights (training only). Keys j <= i are exactly the sequence's real items.
    """
    if q.dim() != 3 or k.dim() != 4 or v.dim() != 4 or k.shape[0] != q.shape[0] or k.shape[2:] != q.shape[1:]:
        raise ValueError(
            f"q must be (B, H, dqk) and k (B, N, H, dqk), v (B, N, H, dv); got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    check_norm(norm)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}")
    B, N, H, dqk = k.shape
    # matmul on (B, H, N, d) views: batched matrix-vector products, no copy of k or v with one head
    scores = torch.matmul(k.transpose(1, 2), q.unsqueeze(-1)).squeeze(-1)  # (B, H, N)
    if rab is not None:
        scores = scores + (rab.unsqueeze(1) if rab.dim() == 2 else rab)
    mask = padding_mask(lengths, N).unsqueeze(1)  # (B, 1, N): j <= lengths - 1
    attn = _attention_weights(scores, mask, lengths, dqk, norm, activation)  # (B, H, N)
    if dropout > 0.0:
        attn = F.dropout(attn, p=dropout, training=True)
    return torch.matmul(attn.to(v.dtype).unsqueeze(2), v.transpose(1, 2)).squeeze(2)  # (B, H, dv)


def padded_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
    dropout: float = 0.0,
    return_attention: bool = False,
):
    """Scaled dot-product (softmax) attention on padded tensors, padding-aware (SASRec's math).

    q, k `(B, N, H, dqk)`, v `(B, N, H, dv)`, lengths `(B,)` -> `(B, N, H, dv)` (zeros on padding
    rows): `out_i = sum_j softmax_j(scale <q_i, k_j>) v_j` over allowed j, scale = 1/sqrt(dqk).
    `dropout` drops attention weights (training only, as torch.nn.MultiheadAttention does).
    """
    _check_qkv(q, k, v, padded=True)
    B, N, H, dqk = q.shape
    scale = 1.0 / math.sqrt(dqk) if scale is None else scale
    scores = torch.einsum("bihd,bjhd->bhij", q, k) * scale  # (B, H, N, N)
    mask = attention_mask(lengths, N, causal).unsqueeze(1)  # (B, 1, N, N)
    # A padding row has no allowed key: a finite fill keeps its softmax finite, the mask zeroes it.
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    attn = torch.softmax(scores, dim=-1) * mask  # (B, H, N, N)
    if dropout > 0.0:
        attn = F.dropout(attn, p=dropout, training=True)
    out = torch.einsum("bhij,bjhd->bihd", attn.to(v.dtype), v)  # (B, N, H, dv)
    return (out, attn) if return_attention else out


def fused_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lengths: torch.Tensor | None,
    *,
    scale: float | None = None,
    dropout: float = 0.0,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """`padded_softmax_attention(..., causal=True)` through PyTorch's fused kernel (SDPA), no maps.

    q, k `(B, N, H, dqk)`, v `(B, N, H, dv)`, lengths `(B,)` -> `(B, N, H, dv)` (zeros on padding
    rows; `lengths=None`: every row is real, nothing is masked). Histories are right-padded, so the causal
    mask alone keeps every real query off the padding keys. Head widths are zero-padded to a multiple of 8
    (what the fused GPU kernels accept; zeros change no dot product). `dropout` drops attention weights, as in `padded_softmax_attention`.

    `dtype`: compute the attention in this dtype (q, k, v go in as copies in it, the output comes back in
    q's dtype, and gradients flow through both casts). `torch.bfloat16` lets SDPA use its flash kernel on a
    GPU; in fp32 it takes the slower memory-efficient one.
    """
    _check_qkv(q, k, v, padded=True)
    B, N, H, dqk = q.shape
    dv = v.shape[-1]
    scale = 1.0 / math.sqrt(dqk) if scale is None else scale
    out_dtype = q.dtype

    def heads_first(t: torch.Tensor) -> torch.Tensor:  # (B, N, H, d) -> (B, H, N, d8)
        t = t.transpose(1, 2)
        if dtype is not None:
            t = t.to(dtype)
        pad = -t.shape[-1] % 8
        return F.pad(t, (0, pad)) if pad else t

    out = F.scaled_dot_product_attention(
        heads_first(q), heads_first(k), heads_first(v), dropout_p=dropout, is_causal=True, scale=scale
    )  # (B, H, N, dv8)
    out = out[..., :dv].transpose(1, 2).to(out_dtype)  # (B, N, H, dv)
    if lengths is None:
        return out
    return out * padding_mask(lengths, N)[:, :, None, None].to(out.dtype)


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: torch.Tensor,
    *,
    causal: bool = True,
    scale: float | None = None,
) -> torch.Tensor:
    """Softmax attention on jagged tensors (the SASRec/Transformer counterpart of `hstu_attention`).

    q, k `(T, H, dqk)`, v `(T, H, dv)`, offsets `(B+1,)` -> `(T, H, dv)`; inside each sequence
    `out_i = sum_{j<=i} softmax_j(scale <q_i, k_j>) v_j` (all j when not causal), scale = 1/sqrt(dqk).
    """
    _check_qkv(q, k, v, padded=False)
    T = q.shape[0]
    N = max(check_offsets(offsets, T, read_values=True), 1)  # one host sync
    lengths = offsets_to_lengths(offsets)  # (B,)
    out = padded_softmax_attention(
        jagged_to_padded(q, offsets, N),
        jagged_to_padded(k, offsets, N),
        jagged_to_padded(v, offsets, N),
        lengths,
        causal=causal,
        scale=scale,
    )  # (B, N, H, dv)
    return padded_to_jagged(out, offsets, T)  # (T, H, dv)


class _TableLookup(torch.autograd.Function):
    """`table[index]` for a small 1-D table read by a large index tensor, with a fast backward.

    Autograd's own backward for `table[index]` accumulates every element into one of ~129 slots with
    a sort-based kernel: on a GPU that took ~110 ms per call for a (128, 200, 200) bias. Here each
    row of the index first builds its own small histogram (`scatter_add_` over rows: little
    contention), then the rows are summed: the same gradient in well under a millisecond.
    """

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.table_size, ctx.table_dtype = table.numel(), table.dtype
        return table[index]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        width = index.shape[-1] if index.dim() else 1
        rows_index = index.reshape(-1, width)  # (R, W)
        acc = torch.promote_types(grad.dtype, torch.float32)  # fp32 sums even for bf16 gradients
        rows_grad = grad.reshape(-1, width).to(acc)  # (R, W)
        per_row = rows_grad.new_zeros(rows_index.shape[0], ctx.table_size)  # (R, table)
        per_row.scatter_add_(1, rows_index.to(torch.int64), rows_grad)
        return per_row.sum(0).to(ctx.table_dtype), None


def table_lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`table[index]` (1-D table, int64/int32 index of any shape), differentiable in `table`, GPU-friendly."""
    return _TableLookup.apply(table, index)


class RelativeAttentionBias(nn.Module):
    """HSTU's relative attention bias: learned position-offset and time-gap terms, shared by all heads.

    `rab[b, i, j] = pos_w[L-1 + j - i] + ts_w[time_bucket(t_next[b, i] - t[b, j])]` with L = `max_len`
    (211 on ML-1M = max_seq_len + 10 + 1), `pos_w (2L-1,)`, `ts_w (num_buckets+1,)`, both N(0, 0.02^2).
    Query row i uses the timestamp of the item *after* i (the one it predicts).
    Ablations: `use_pos=False` or `use_time=False` drops that term (its weight vector is then None).
    """

    def __init__(
        self,
        max_len: int = 211,
        num_buckets: int = NUM_TIME_BUCKETS,
        *,
        max_seq_len_with_target: int | None = None,
        use_pos: bool = True,
        use_time: bool = True,
    ):
        super().__init__()
        if not (use_pos or use_time):
            raise ValueError(
                "a RelativeAttentionBias with neither the position nor the time term adds nothing; "
                "build the layer without a bias (rab=None / use_rab=False) instead"
            )
        max_len = max_seq_len_with_target if max_seq_len_with_target is not None else max_len
        self.max_len = max_len
        self.num_buckets = num_buckets
        self.use_pos, self.use_time = bool(use_pos), bool(use_time)
        if use_pos:
            self.pos_w = nn.Parameter(torch.empty(2 * max_len - 1).normal_(0.0, 0.02))  # (2L-1,)
        else:
            self.register_parameter("pos_w", None)
        if use_time:
            self.ts_w = nn.Parameter(torch.empty(num_buckets + 1).normal_(0.0, 0.02))  # (num_buckets+1,)
        else:
            self.register_parameter("ts_w", None)

    def extra_repr(self) -> str:
        off = "".join(f", {name}=False" for name in ("use_pos", "use_time") if not getattr(self, name))
        return f"max_len={self.max_len}, num_buckets={self.num_buckets}{off}"

    def buckets(self, timestamps: torch.Tensor, next_timestamps: torch.Tensor) -> torch.Tensor:
        """Padded `(B, N)` timestamps -> `(B, N, N)` int64 buckets of `t_next[b, i] - t[b, j]`."""
        gap = next_timestamps[:, :, None] - timestamps[:, None, :]  # (B, N, N)
        return time_bucket(gap, self.num_buckets)

    def position_bias(self, N: int) -> torch.Tensor:
        """`(N, N)` position term `pos_w[L-1 + j - i]`."""
        if self.pos_w is None:
            raise ValueError("this bias was built with use_pos=False: it has no position term")
        if N > self.max_len:
            raise ValueError(
                f"sequences padded to N={N} exceed the bias table's max_len={self.max_len}; "
                f"build RelativeAttentionBias(max_len >= {N})"
            )
        ar = torch.arange(N, device=self.pos_w.device)
        return table_lookup(self.pos_w, self.max_len - 1 + ar[None, :] - ar[:, None])  # (N, N)

    def query_row(
        self,
        query_pos: torch.Tensor,
        N: int,
        timestamps: torch.Tensor | None = None,
        next_timestamp: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One bias row per sequence, `rab[b, i_b, :]` `(B, N)` for the query position `i_b = query_pos[b]`;
        the time term needs the padded `timestamps (B, N)` and the query's next timestamp
        `next_timestamp (B,)`. Used when only the last position's output is needed."""
        if N > self.max_len:
            raise ValueError(
                f"sequences padded to N={N} exceed the bias table's max_len={self.max_len}; "
                f"build RelativeAttentionBias(max_len >= {N})"
            )
        out = None
        if self.pos_w is not None:
            j = torch.arange(N, device=self.pos_w.device)
            index = self.max_len - 1 + j[None, :] - query_pos[:, None]  # (B, N)
            out = table_lookup(self.pos_w, index.clamp(0, 2 * self.max_len - 2))  # (B, N)
        if self.ts_w is not None:
            if timestamps is None or next_timestamp is None:
                raise ValueError("this bias has a time term: query_row needs timestamps and next_timestamp")
            buckets = time_bucket(next_timestamp[:, None] - timestamps, self.num_buckets)  # (B, N)
            ts = table_lookup(self.ts_w, buckets)  # (B, N)
            out = ts if out is None else out + ts
        return out

    def from_buckets(self, buckets: torch.Tensor) -> torch.Tensor:
        """`(B, N, N)` int64 or int32 buckets -> `(B, N, N)` bias (lets several layers share one bucketing;
        int32 halves the memory the backward keeps for them)."""
        N = buckets.shape[-1]
        if self.pos_w is None:  # time term only (ablation)
            return table_lookup(self.ts_w, buckets)  # (B, N, N)
        if self.ts_w is None:  # position term only (ablation)
            return self.position_bias(N)[None].expand(buckets.shape[0], N, N)  # (B, N, N)
        return self.position_bias(N)[None] + table_lookup(self.ts_w, buckets)  # (B, N, N)

    def forward(self, timestamps: torch.Tensor, next_timestamps: torch.Tensor) -> torch.Tensor:
        """Padded `timestamps (B, N)`, `next_timestamps (B, N)` (N <= max_len) -> rab `(B, N, N)`."""
        if timestamps.dim() != 2 or timestamps.shape != next_timestamps.shape:
            raise ValueError(
                f"timestamps and next_timestamps must both be padded (B, N); got {tuple(timestamps.shape)} "
                f"and {tuple(next_timestamps.shape)} (for jagged inputs use .jagged(...))"
            )
        return self.from_buckets(self.buckets(timestamps, next_timestamps))

    def jagged(
        self, timestamps: torch.Tensor, next_timestamps: torch.Tensor, offsets: torch.Tensor, max_len: int
    ) -> torch.Tensor:
        """Jagged `timestamps (T,)`, `next_timestamps (T,)`, offsets `(B+1,)` -> padded rab `(B, N, N)`
        with N = `max_len` (entries on padding are finite and masked by the attention)."""
        t = jagged_to_padded(timestamps, offsets, max_len)  # (B, N)
        tn = jagged_to_padded(next_timestamps, offsets, max_len)  # (B, N)
        return self(t, tn)


__all__ = [
    "ACTIVATIONS",
    "RelativeAttentionBias",
    "attention_mask",
    "check_norm",
    "fused_softmax_attention",
    "hstu_attention",
    "last_query_attention",
    "padded_hstu_attention",
    "padded_softmax_attention",
    "softmax_attention",
    "table_lookup",
    "time_bucket",
]
