"""The STU layer (Sequential Transduction Unit), HSTU's replacement for a Transformer block.

Paper eqs. (1)-(3), as the reference implementation trains it (x is jagged `(T, D)`):

    x_n        = LayerNorm(x)                                   no affine, eps 1e-6
    u, v, q, k = split(SiLU(x_n W_uvqk))                        W_uvqk (D, 2 H dv + 2 H dqk), no bias
    A_ij       = SiLU(<q_i, k_j> + rab_ij) / n   for j <= i      pointwise, no softmax, n constant
    o          = u * LayerNorm(A v)                             norm over all heads jointly (H dv)
    out        = x + Linear(Dropout(o))                         Linear (H dv -> D) with bias

One layer replaces a Transformer's attention block *and* its FFN: the gate u plays the FFN's role.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hstu_tutorial.ops.hstu_attention import RelativeAttentionBias, padded_hstu_attention
from hstu_tutorial.ops.jagged_tensors import JaggedLayout
from hstu_tutorial.ops.layer_norm import layer_norm


class STULayer(nn.Module):
    """One STU layer on jagged `x (T, D)` -> `(T, D)`; `forward(x, layout)`.

    `norm` is the attention divisor n (reference: max_seq_len + 11 = 211 on ML-1M); `num_positions` sizes
    the relative attention bias table (the same 211). `attention_impl`: "pytorch" (padded einsum with
    masks) or "triton" (the fused jagged kernel that forms the bias in-kernel).
    """

    def __init__(
        self,
        embedding_dim: int = 50,
        num_heads: int = 1,
        dqk: int = 50,
        dv: int = 50,
        dropout: float = 0.2,
        norm: float = 211.0,
        num_positions: int = 211,
        num_buckets: int = 128,
        use_rab: bool = True,
        attention_impl: str = "pytorch",
        eps: float = 1e-6,
    ):
        super().__init__()
        if attention_impl not in ("pytorch", "triton"):
            raise ValueError(f"attention_impl must be 'pytorch' or 'triton', got {attention_impl!r}")
        self.embedding_dim, self.num_heads, self.dqk, self.dv = embedding_dim, num_heads, dqk, dv
        self.dropout, self.norm, self.eps = dropout, float(norm), eps
        self.attention_impl = attention_impl
        # W_uvqk ~ N(0, 0.02^2), no bias; columns ordered u, v, q, k as in the reference.
        self.uvqk = nn.Parameter(torch.empty(embedding_dim, 2 * num_heads * (dv + dqk)).normal_(0.0, 0.02))
        self.o = nn.Linear(num_heads * dv, embedding_dim)
        nn.init.xavier_uniform_(self.o.weight)
        self.rab = RelativeAttentionBias(num_positions, num_buckets) if use_rab else None

    def extra_repr(self) -> str:
        return (
            f"D={self.embedding_dim}, H={self.num_heads}, dqk={self.dqk}, dv={self.dv}, n={self.norm:g}, "
            f"dropout={self.dropout}, attention_impl={self.attention_impl!r}"
        )

    def split_uvqk(self, x: torch.Tensor):
        """`x (T, D)` -> u, v `(T, H*dv)`, q, k `(T, H*dqk)` (eq. 1: SiLU(LayerNorm(x) W_uvqk))."""
        x_n = layer_norm(x, eps=self.eps)  # (T, D)
        uvqk = F.silu(x_n @ self.uvqk)  # (T, 2*H*dv + 2*H*dqk)
        Hdv, Hdqk = self.num_heads * self.dv, self.num_heads * self.dqk
        return torch.split(uvqk, [Hdv, Hdv, Hdqk, Hdqk], dim=-1)

    def attention(self, q, k, v, layout: JaggedLayout, return_attention: bool = False):
        """Jagged `q, k (T, H*dqk)`, `v (T, H*dv)` -> `(T, H*dv)` = A v, and A `(B, H, N, N)` if asked."""
        T, H = q.shape[0], self.num_heads
        if self.attention_impl == "triton" and not return_attention:
            from hstu_tutorial.ops.triton import triton_hstu_attention_rel_bias

            if self.rab is None:
                from hstu_tutorial.ops.triton import triton_hstu_attention

                out = triton_hstu_attention(
                    q.view(T, H, self.dqk),
                    k.view(T, H, self.dqk),
                    v.view(T, H, self.dv),
                    layout.offsets,
                    norm=self.norm,
                    causal=True,
                    max_len=layout.pad_width,
                )
            else:
                out = triton_hstu_attention_rel_bias(
                    q.view(T, H, self.dqk),
                    k.view(T, H, self.dqk),
                    v.view(T, H, self.dv),
                    layout.offsets,
                    layout.timestamps,
                    layout.next_timestamps,
                    self.rab.pos_w,
                    self.rab.ts_w,
                    norm=self.norm,
                    causal=True,
                    max_len=layout.pad_width,
                )  # (T, H, dv)
            return out.reshape(T, H * self.dv), None
        # PyTorch path: pad v, q, k together with one scatter, attend with masks, gather back.
        B, N = layout.batch_size, layout.pad_width
        vqk = layout.pad(torch.cat([v, q, k], dim=-1))  # (B, N, H*(dv+2*dqk))
        vp, qp, kp = torch.split(vqk, [H * self.dv, H * self.dqk, H * self.dqk], dim=-1)
        rab = None
        if self.rab is not None:
            if layout.buckets is None:
                raise ValueError(
                    "this STU layer has a relative attention bias but the layout has no time buckets: "
                    "use JaggedLayout.from_batch(batch, N, rab=layer.rab) on a batch with timestamps"
                )
            rab = self.rab.from_buckets(layout.buckets)  # (B, N, N)
        out, attn = padded_hstu_attention(
            qp.reshape(B, N, H, self.dqk),
            kp.reshape(B, N, H, self.dqk),
            vp.reshape(B, N, H, self.dv),
            layout.lengths,
            rab=rab,
            norm=self.norm,
            causal=True,
            return_attention=True,
        )  # (B, N, H, dv), (B, H, N, N)
        return layout.unpad(out.reshape(B, N, H * self.dv)), (attn if return_attention else None)

    def forward(self, x: torch.Tensor, layout: JaggedLayout, return_attention: bool = False):
        """`x (T, D)` -> `(T, D)`; with `return_attention`, also A `(B, H, N, N)` (PyTorch path)."""
        u, v, q, k = self.split_uvqk(x)  # (T, H*dv), (T, H*dv), (T, H*dqk), (T, H*dqk)
        av, attn = self.attention(q, k, v, layout, return_attention)  # (T, H*dv)
        # Eq. 3: LayerNorm over all heads jointly, gated elementwise by u.
        o = u * layer_norm(av, eps=self.eps)  # (T, H*dv)
        out = x + self.o(F.dropout(o, p=self.dropout, training=self.training))  # (T, D)
        return (out, attn) if return_attention else out
