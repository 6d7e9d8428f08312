"""The STU layer (Sequential Transduction Unit), HSTU's replacement for a Transformer block.

Paper eqs. (1)-(3), as the reference implementation trains it (x is jagged `(T, D)`):

    x_n        = LayerNorm(x)                                   no affine, eps 1e-6
    u, v, q, k = split(SiLU(x_n W_uvqk))                        W_uvqk (D, 2 H dv + 2 H dqk), no bias
    A_ij       = SiLU(<q_i, k_j> + rab_ij) / n   for j <= i      pointwise, no softmax, n constant
    o          = u * LayerNorm(A v)                             norm over all heads jointly (H dv)
    out        = x + Linear(Dropout(o))                         Linear (H dv -> D) with bias

One layer replaces a Transformer's attention block *and* its FFN: the gate u plays the FFN's role.

Ablation switches (defaults: the layer above): `use_pos_bias` / `use_time_bias` drop a term of rab,
`use_gate=False` gives o = LayerNorm(A v) (no u, so W_uvqk loses u's columns), and
`attention_activation="softmax"` gives A_ij = softmax_j((<q_i, k_j> + rab_ij) / sqrt(dqk)) over j <= i (rows
sum to 1, no n). The Triton kernel covers SiLU with the full bias or none; other combinations run PyTorch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hstu_tutorial.ops.hstu_attention import (
    ACTIVATIONS,
    RelativeAttentionBias,
    last_query_attention,
    padded_hstu_attention,
)
from hstu_tutorial.ops.jagged_tensors import JaggedLayout
from hstu_tutorial.ops.layer_norm import layer_norm

# the ablation switches and their defaults (HSTU as the paper trains it)
SWITCH_DEFAULTS = {
    "use_pos_bias": True,
    "use_time_bias": True,
    "use_gate": True,
    "attention_activation": "silu",
}


def triton_supports(
    use_pos_bias: bool = True, use_time_bias: bool = True, attention_activation: str = "silu"
):
    """True when the Triton kernel computes this attention: SiLU / n with the full bias or none."""
    return attention_activation == "silu" and use_pos_bias == use_time_bias


def switches_text(**switches) -> str:
    """'use_gate=False, attention_activation='softmax'': the switches that differ from the defaults."""
    return ", ".join(f"{k}={v!r}" for k, v in switches.items() if v != SWITCH_DEFAULTS[k])


class STULayer(nn.Module):
    """One STU layer on jagged `x (T, D)` -> `(T, D)`; `forward(x, layout)`.

    `norm` is the attention divisor n (reference: max_seq_len + 11 = 211 on ML-1M); `num_positions` sizes
    the relative attention bias table (the same 211). `attention_impl`: "pytorch" (padded einsum with
    masks) or "triton" (the fused jagged kernel that forms the bias in-kernel). `use_rab=False` is
    `use_pos_bias=use_time_bias=False`; the switches are described in the module docstring.
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
        *,
        use_pos_bias: bool = True,
        use_time_bias: bool = True,
        use_gate: bool = True,
        attention_activation: str = "silu",
    ):
        super().__init__()
        if attention_impl not in ("pytorch", "triton"):
            raise ValueError(f"attention_impl must be 'pytorch' or 'triton', got {attention_impl!r}")
        if attention_activation not in ACTIVATIONS:
            raise ValueError(
                f"attention_activation must be one of {list(ACTIVATIONS)}, got {attention_activation!r}"
            )
        use_pos_bias, use_time_bias = bool(use_pos_bias and use_rab), bool(use_time_bias and use_rab)
        if attention_impl == "triton" and not triton_supports(
            use_pos_bias, use_time_bias, attention_activation
        ):
            raise ValueError(
                "the Triton kernel computes SiLU attention with the full relative bias or none; "
                f"use_pos_bias={use_pos_bias}, use_time_bias={use_time_bias}, "
                f"attention_activation={attention_activation!r} needs attention_impl='pytorch'"
            )
        self.embedding_dim, self.num_heads, self.dqk, self.dv = embedding_dim, num_heads, dqk, dv
        self.dropout, self.norm, self.eps = dropout, float(norm), eps
        self.attention_impl = attention_impl
        self.use_gate, self.attention_activation = bool(use_gate), attention_activation
        # W_uvqk ~ N(0, 0.02^2), no bias; columns ordered u, v, q, k as in the reference (no u without gate).
        width = (2 if use_gate else 1) * num_heads * dv + 2 * num_heads * dqk
        self.uvqk = nn.Parameter(torch.empty(embedding_dim, width).normal_(0.0, 0.02))
        self.o = nn.Linear(num_heads * dv, embedding_dim)
        nn.init.xavier_uniform_(self.o.weight)
        self.rab = None
        if use_pos_bias or use_time_bias:
            self.rab = RelativeAttentionBias(
                num_positions, num_buckets, use_pos=use_pos_bias, use_time=use_time_bias
            )

    def switches(self) -> dict:
        """The ablation switches of this layer, e.g. {"use_pos_bias": True, ..., "attention_activation": "silu"}."""
        rab = self.rab
        return {
            "use_pos_bias": rab is not None and rab.use_pos,
            "use_time_bias": rab is not None and rab.use_time,
            "use_gate": self.use_gate,
            "attention_activation": self.attention_activation,
        }

    def extra_repr(self) -> str:
        off = switches_text(**self.switches())
        return (
            f"D={self.embedding_dim}, H={self.num_heads}, dqk={self.dqk}, dv={self.dv}, n={self.norm:g}, "
            f"dropout={self.dropout}, attention_impl={self.attention_impl!r}" + (f", {off}" if off else "")
        )

    def split_uvqk(self, x: torch.Tensor):
        """`x (T, D)` -> u, v `(T, H*dv)`, q, k `(T, H*dqk)` (eq. 1: SiLU(LayerNorm(x) W_uvqk)); u is None
        without the gate."""
        x_n = layer_norm(x, eps=self.eps)  # (T, D)
        uvqk = F.silu(x_n @ self.uvqk)  # (T, 2*H*dv + 2*H*dqk), or (T, H*dv + 2*H*dqk) without u
        Hdv, Hdqk = self.num_heads * self.dv, self.num_heads * self.dqk
        if not self.use_gate:
            return (None, *torch.split(uvqk, [Hdv, Hdqk, Hdqk], dim=-1))
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
                    lengths=layout.history_lengths,
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
                    lengths=layout.history_lengths,  # padding rows of the padded layout: no FLOPs
                )  # (T, H, dv)
            return out.reshape(T, H * self.dv), None
        # PyTorch path: pad v, q, k together with one scatter, attend with masks, gather back.
        B, N = layout.batch_size, layout.pad_width
        vqk = layout.pad(torch.cat([v, q, k], dim=-1))  # (B, N, H*(dv+2*dqk))
        vp, qp, kp = torch.split(vqk, [H * self.dv, H * self.dqk, H * self.dqk], dim=-1)
        rab = None
        if self.rab is not None and not self.rab.use_time:  # position term only (ablation): no buckets
            rab = self.rab.position_bias(N)[None].expand(B, N, N)  # (B, N, N)
        elif self.rab is not None:
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
            layout.lengths if layout.history_lengths is None else layout.history_lengths,
            rab=rab,
            norm=self.norm,
            causal=True,
            return_attention=True,
            activation=self.attention_activation,
        )  # (B, N, H, dv), (B, H, N, N)
        return layout.unpad(out.reshape(B, N, H * self.dv)), (attn if return_attention else None)

    def forward(self, x: torch.Tensor, layout: JaggedLayout, return_attention: bool = False):
        """`x (T, D)` -> `(T, D)`; with `return_attention`, also A `(B, H, N, N)` (PyTorch path)."""
        u, v, q, k = self.split_uvqk(x)  # (T, H*dv), (T, H*dv), (T, H*dqk), (T, H*dqk)
        av, attn = self.attention(q, k, v, layout, return_attention)  # (T, H*dv)
        # Eq. 3: LayerNorm over all heads jointly, gated elementwise by u (the no-gate ablation keeps the norm).
        o = layer_norm(av, eps=self.eps)  # (T, H*dv)
        if u is not None:
            o = u * o  # (T, H*dv)
        out = x + self.o(F.dropout(o, p=self.dropout, training=self.training))  # (T, D)
        return (out, attn) if return_attention else out

    def forward_last(self, x: torch.Tensor, layout: JaggedLayout) -> torch.Tensor:
        """`forward(x, layout)` at each history's last position only: `x (T, D)` -> `(B, D)`.

        What evaluation needs from the last layer: every position's keys and values, but one query per
        history (the one that scores the target), so the attention costs O(N) per history, not O(N^2).
        Histories must not be empty.
        """
        B, N, H = layout.batch_size, layout.pad_width, self.num_heads
        rows = layout.offsets[1:] - 1  # (B,) the last position of each history in x
        u, v, q, k = self.split_uvqk(x)  # (T, H*dv), (T, H*dv), (T, H*dqk), (T, H*dqk)
        kp, vp = layout.pad(k), layout.pad(v)  # (B, N, H*dqk), (B, N, H*dv)
        rab = None
        if self.rab is not None:
            ts = nts = None
            if self.rab.use_time:
                if layout.timestamps is None:
                    raise ValueError(
                        "this STU layer has a time bias but the layout has no timestamps: "
                        "build it with JaggedLayout.from_batch on a batch with timestamps"
                    )
                ts, nts = layout.pad(layout.timestamps), layout.next_timestamps[rows]  # (B, N), (B,)
            rab = self.rab.query_row(layout.lengths - 1, N, ts, nts)  # (B, N)
        av = last_query_attention(
            q[rows].view(B, H, self.dqk),
            kp.reshape(B, N, H, self.dqk),
            vp.reshape(B, N, H, self.dv),
            layout.lengths,
            rab=rab,
            norm=self.norm,
            activation=self.attention_activation,
        )  # (B, H, dv)
        o = layer_norm(av.reshape(B, H * self.dv), eps=self.eps)  # (B, H*dv)
        if u is not None:
            o = u[rows] * o
        return x[rows] + self.o(F.dropout(o, p=self.dropout, training=self.training))  # (B, D)
