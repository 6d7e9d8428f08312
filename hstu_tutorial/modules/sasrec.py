"""SASRec (Kang & McAuley, ICDM 2018), the Transformer baseline HSTU is compared against.

One block, as the HSTU reference's SASRec runs it (x padded `(B, N, D)`):

    x_q = LayerNorm(x)                                 no affine, eps 1e-8
    a   = MultiHeadAttention(query=x_q, key=x, value=x) causal softmax attention, dropout on weights
    y   = LayerNorm(x_q + a)                           residual from the *normalised* query (SASRec's)
    out = y + Dropout(W2 Dropout(ReLU(W1 y + b1)) + b2) position-wise FFN (the reference's 1x1 convs)

Outputs are L2-normalised, no final LayerNorm; every 2-D weight is xavier-normal, attention biases 0.

The block's second half (out_proj, the residual LayerNorm, the FFN and its two dropouts) runs on CUDA float32
tensors as one Triton kernel each way (`hstu_tutorial.ops.triton.sasrec_output`, option `fused_sasrec_output`),
the same math with dropout masks from its own generator; elsewhere it is spelled out as above. With bf16
attention and one head, the first half (the LayerNorm and the q, k, v products, written as SDPA's padded bf16
operands) is one Triton kernel each way too (`hstu_tutorial.ops.triton.sasrec_input`, option
`fused_sasrec_input`).

`attention_impl`: "sdpa" runs the attention through PyTorch's fused kernel (one kernel instead of a
dozen passes over `(B, H, N, N)`); "sdpa-bf16" does the same on bf16 copies of q, k, v (on a GPU, SDPA's
flash kernel, measured by benchmarks/bench_sasrec_step.py; the rest of the block stays fp32); "pytorch"
spells it out. All compute the same function (the bf16 one to bf16's precision); attention maps
(`return_attention=True`) always come from the spelled-out path. `forward_last` (evaluation's last block)
computes its one query's attention in full precision whatever the choice.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hstu_tutorial.modules.preprocessors import (
    InputPreprocessor,
    SequentialEncoder,
    check_encoder_args,
    count_parameters,
    l2_normalize,
)
from hstu_tutorial.ops.hstu_attention import (
    fused_softmax_attention,
    last_query_attention,
    padded_softmax_attention,
)
from hstu_tutorial.ops.jagged_tensors import JaggedLayout, padding_mask
from hstu_tutorial.ops.layer_norm import layer_norm
from hstu_tutorial.ops.options import get_options

ATTENTION_IMPLS = ("sdpa", "sdpa-bf16", "pytorch")


class SASRecBlock(nn.Module):
    """Pre-LayerNorm causal multi-head softmax attention + ReLU FFN on padded `(B, N, D)`."""

    def __init__(
        self,
        embedding_dim: int = 50,
        num_heads: int = 1,
        ffn_hidden: int = 50,
        dropout: float = 0.2,
        attention_impl: str = "sdpa",
    ):
        super().__init__()
        if attention_impl not in ATTENTION_IMPLS:
            raise ValueError(
                f"SASRec attention_impl must be one of {list(ATTENTION_IMPLS)}, got {attention_impl!r}"
            )
        self.attention_impl = attention_impl
        if embedding_dim % num_heads:
            raise ValueError(f"embedding_dim={embedding_dim} must be divisible by num_heads={num_heads}")
        self.embedding_dim, self.num_heads, self.dropout = embedding_dim, num_heads, dropout
        D = embedding_dim
        self.in_proj = nn.Linear(D, 3 * D)  # q, k, v (packed as torch.nn.MultiheadAttention packs them)
        self.out_proj = nn.Linear(D, D)
        self.ffn1 = nn.Linear(D, ffn_hidden)
        self.ffn2 = nn.Linear(ffn_hidden, D)
        # Reference: xavier normal on every matrix (in_proj as one (3D, D) matrix), MHA biases zero,
        # FFN biases keep PyTorch's default.
        for lin in (self.in_proj, self.out_proj, self.ffn1, self.ffn2):
            nn.init.xavier_normal_(lin.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None, return_attention: bool = False):
        """`x (B, N, D)`, `lengths (B,)` -> `(B, N, D)` (padding rows 0); A `(B, H, N, N)` if asked.
        `lengths=None`: every row is a position of its history (no padding to mask)."""
        B, N, D = x.shape
        H = self.num_heads
        p_attn = self.dropout if self.training else 0.0
        if not return_attention and _fused_input(x, self):
            out = self._output(*self._fused_first_half(x, p_attn))  # (B, N, D)
            return out if lengths is None else out * padding_mask(lengths, N).unsqueeze(-1).to(out.dtype)
        x_q = layer_norm(x, eps=1e-8)  # (B, N, D)
        q, k, v = (t.unflatten(-1, (H, D // H)) for t in self._project(x_q, x))  # each (B, N, H, D/H)
        if return_attention or self.attention_impl == "pytorch":
            every = torch.full((B,), N, dtype=torch.int64, device=x.device) if lengths is None else lengths
            a, attn = padded_softmax_attention(
                q, k, v, every, causal=True, dropout=p_attn, return_attention=True
            )  # (B, N, H, D/H), (B, H, N, N)
        else:
            dtype = torch.bfloat16 if self.attention_impl == "sdpa-bf16" else None
            a = fused_softmax_attention(q, k, v, lengths, dropout=p_attn, dtype=dtype)  # (B, N, H, D/H)
            attn = None
        out = self._output(x_q, a.reshape(B, N, D))  # (B, N, D)
        if lengths is not None:
            out = out * padding_mask(lengths, N).unsqueeze(-1).to(out.dtype)
        return (out, attn) if return_attention else out

    def _fused_first_half(self, x: torch.Tensor, p_attn: float):
        """x_q and the attention output `a (B, N, D)` through the Triton kernels of `ops.triton.sasrec_input` (the
        LayerNorm and the q, k, v products, written as SDPA's bf16 operands) and SDPA: the same math as
        `forward`'s "sdpa-bf16" path with one head. Padding rows are not zeroed here: the second half works row by
        row, and `forward` zeroes them in its output (and so their gradients)."""
        from hstu_tutorial.ops.triton.sasrec_input import sasrec_input

        B, N, D = x.shape
        x_q, q, k, v = sasrec_input(x, self.in_proj, eps=1e-8)  # (B, N, D); (B, 1, N, P) bf16 each
        a = F.scaled_dot_product_attention(
            q, k, v, dropout_p=p_attn, is_causal=True, scale=1.0 / math.sqrt(D)
        )
        return x_q, a[..., :D].transpose(1, 2).to(x.dtype).reshape(B, N, D)

    def _project(self, x_q: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from the normalised input `x_q (..., D)`, keys and values from the raw input `x (B, N, D)`
        (one matrix product for both) -> q `(..., D)`, k, v `(B, N, D)` (views)."""
        D = self.embedding_dim
        # split, not two slices: its backward is one concatenation (a slice's fills a zeroed copy of the weight)
        w_q, w_kv = self.in_proj.weight.split([D, 2 * D])  # (D, D), (2D, D): rows q, then k and v
        b_q, b_kv = self.in_proj.bias.split([D, 2 * D])
        q = F.linear(x_q, w_q, b_q)
        k, v = F.linear(x, w_kv, b_kv).chunk(2, dim=-1)
        return q, k, v

    def forward_last(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """`forward(x, lengths)` at each history's last position only: `x (B, N, D)` -> `(B, D)`.

        Keys and values come from every position, the query from the last one (what evaluation scores
        with), so the attention costs O(N) per history and the FFN runs on B rows. Histories must not be
        empty.
        """
        B, N, D = x.shape
        H = self.num_heads
        x_last = x[torch.arange(B, device=x.device), lengths - 1]  # (B, D)
        x_q = layer_norm(x_last, eps=1e-8)  # (B, D)
        q, k, v = (t.unflatten(-1, (H, D // H)) for t in self._project(x_q, x))  # (B, H, .), (B, N, H, .)
        p_attn = self.dropout if self.training else 0.0
        a = last_query_attention(q, k, v, lengths, activation="softmax", dropout=p_attn)  # (B, H, D/H)
        return self._output(x_q, a.reshape(B, D))  # (B, D)

    def _output(self, x_q: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The block's second half on `x_q, a (..., D)` (attention output before its projection) -> `(..., D)`:
        y = LayerNorm(x_q + W_o a + b_o), out = y + Dropout(W_2 Dropout(ReLU(W_1 y + b_1)) + b_2).

        On CUDA float32 tensors it runs as one Triton kernel each way (`ops.triton.sasrec_output`; the option
        `fused_sasrec_output`), with dropout masks of its own generator; elsewhere spelled out as here."""
        p = self.dropout if self.training else 0.0
        if _fused_output(x_q, self.embedding_dim, self.ffn1.out_features):
            from hstu_tutorial.ops.triton.sasrec_output import sasrec_output

            return sasrec_output(a, x_q, self.out_proj, self.ffn1, self.ffn2, dropout=p, eps=1e-8)
        y = layer_norm(x_q + self.out_proj(a), eps=1e-8)  # (..., D)
        h = F.dropout(F.relu(self.ffn1(y)), p=p, training=self.training)  # (..., hidden)
        return y + F.dropout(self.ffn2(h), p=p, training=self.training)  # (..., D)


def _fused_input(x: torch.Tensor, block: SASRecBlock) -> bool:
    """Whether `SASRecBlock.forward` takes the first half's Triton kernels: CUDA float32 input, bf16 attention
    ("sdpa-bf16"), one head, a width that fits, the option on, and not while `torch.compile` traces the model."""
    if not (x.is_cuda and x.dtype == torch.float32 and block.attention_impl == "sdpa-bf16"):
        return False
    if block.num_heads != 1 or not get_options().fused_sasrec_input or torch.compiler.is_compiling():
        return False
    from hstu_tutorial.ops.triton.sasrec_input import MAX_WIDTH, padded_width

    return padded_width(block.embedding_dim) <= MAX_WIDTH


def _fused_output(x: torch.Tensor, D: int, hidden: int) -> bool:
    """Whether `SASRecBlock._output` takes the Triton kernels: CUDA float32 inputs, the option on, widths that fit,
    and not while `torch.compile` traces the model (the trainer's `compile = true` lets the compiler fuse the
    spelled-out half itself, as before the kernels existed)."""
    if not (x.is_cuda and x.dtype == torch.float32 and get_options().fused_sasrec_output):
        return False
    if torch.compiler.is_compiling():
        return False
    from hstu_tutorial.ops.triton.sasrec_output import MAX_WIDTH

    return max(D, hidden) <= MAX_WIDTH


class SASRecEncoder(SequentialEncoder):
    """SASRec encoder on a `JaggedBatch`; see `sasrec_encoder` for the arguments."""

    def __init__(
        self,
        num_items: int,
        *,
        embedding_dim: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        ffn_hidden: int = 50,
        max_seq_len: int = 200,
        dropout: float = 0.2,
        attention_impl: str = "sdpa",
    ):
        super().__init__()
        check_encoder_args(
            "sasrec_encoder",
            dropout,
            num_items=num_items,
            embedding_dim=embedding_dim,
            num_blocks=num_blocks,
            num_heads=num_heads,
            ffn_hidden=ffn_hidden,
            max_seq_len=max_seq_len,
        )
        if embedding_dim % num_heads:
            raise ValueError(
                f"sasrec_encoder: embedding_dim must be divisible by num_heads (each head gets D/H "
                f"dimensions), got embedding_dim={embedding_dim}, num_heads={num_heads}"
            )
        self.num_items, self.embedding_dim, self.max_seq_len = num_items, embedding_dim, max_seq_len
        self.attention_impl = attention_impl
        self.num_positions = max_seq_len + 11  # position table size, as the reference
        self.preprocessor = InputPreprocessor(
            num_items, embedding_dim, self.num_positions, dropout, position_init="truncated_normal"
        )
        self.blocks = nn.ModuleList(
            SASRecBlock(embedding_dim, num_heads, ffn_hidden, dropout, attention_impl)
            for _ in range(num_blocks)
        )

    def forward(self, batch, return_attention: bool = False, pad_width: int | None = None):
        """`batch: JaggedBatch` -> L2-normalised `(T, D)`; with `return_attention`, also the per-block
        attention maps `(B, H, N, N)`. Pad width N = `batch.max_len` unless `pad_width` is given."""
        N = int(batch.max_len if pad_width is None else pad_width)
        layout = JaggedLayout.from_batch(batch, N)  # no bias: SASRec has no timestamps in its math
        x = self.preprocessor(batch.item_ids, batch.offsets)  # (T, D)
        x = layout.pad(x)  # (B, N, D): SASRec works padded throughout, as the reference does
        # Every row of a uniform batch (the trainer's padded layout) is a row of the model's input, masked by
        # the preprocessor where its id is 0: nothing to pad, unpad or mask, the same numbers with fewer kernels.
        lengths = None if layout.uniform else layout.lengths
        maps = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, lengths, return_attention=True)
                maps.append(attn)
            else:
                x = block(x, lengths)  # (B, N, D)
        out = l2_normalize(layout.unpad(x))  # (T, D)
        return (out, maps) if return_attention else out

    def query_embeddings(self, batch, pad_width: int | None = None) -> torch.Tensor:
        """`batch: JaggedBatch` -> L2-normalised `(B, D)`: the output at each history's last position, as
        `last_embeddings(forward(batch), batch)`, with the last block computed for that position only."""
        x, lengths = self._last_block_input(batch, pad_width)  # (B, N, D), (B,)
        return l2_normalize(self.blocks[-1].forward_last(x, lengths))  # (B, D)

    def _last_block_input(self, batch, pad_width: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """What the last block reads: every block but the last on the padded batch -> `(B, N, D)`, lengths `(B,)`."""
        N = int(batch.max_len if pad_width is None else pad_width)
        layout = JaggedLayout.from_batch(batch, N)
        x = layout.pad(self.preprocessor(batch.item_ids, batch.offsets))  # (B, N, D)
        for block in self.blocks[:-1]:
            x = block(x, layout.lengths)  # (B, N, D)
        return x, layout.lengths

    def query_embeddings_and_previous(self, batch, pad_width: int | None = None):
        """`query_embeddings(batch)` and, from the same pass, each history's query without its last item:
        two L2-normalised `(B, D)`. Exact for SASRec: positions count from the oldest item and attention is
        causal, so no position before the last sees it (training/prefix_eval.py uses it for validation).
        The second is meaningless for one-item histories."""
        x, lengths = self._last_block_input(batch, pad_width)  # (B, N, D), (B,)
        last = self.blocks[-1]
        previous = (lengths - 1).clamp(min=1)  # (B,)
        return l2_normalize(last.forward_last(x, lengths)), l2_normalize(last.forward_last(x, previous))

    def parameter_breakdown(self) -> dict:
        """Counts inside one block: attention projections and FFN."""
        b = self.blocks[0]
        return {
            "attention in_proj (q, k, v)": count_parameters(b.in_proj),
            "attention out_proj": count_parameters(b.out_proj),
            "FFN W1": count_parameters(b.ffn1),
            "FFN W2": count_parameters(b.ffn2),
        }


def sasrec_encoder(
    num_items: int,
    *,
    embedding_dim: int = 50,
    num_blocks: int = 2,
    num_heads: int = 1,
    ffn_hidden: int = 50,
    max_seq_len: int = 200,
    dropout: float = 0.2,
    attention_impl: str = "sdpa",
) -> SASRecEncoder:
    """Build the SASRec baseline (defaults: the reference's ML-1M config: D=50, 2 blocks, 1 head, FFN 50).
    `attention_impl`: "sdpa" (PyTorch's fused attention kernel), "sdpa-bf16" (the same on bf16 copies of
    q, k, v) or "pytorch" (spelled out)."""
    return SASRecEncoder(
        num_items,
        embedding_dim=embedding_dim,
        num_blocks=num_blocks,
        num_heads=num_heads,
        ffn_hidden=ffn_hidden,
        max_seq_len=max_seq_len,
        dropout=dropout,
        attention_impl=attention_impl,
    )
