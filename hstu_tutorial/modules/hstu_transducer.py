"""The HSTU encoder: input preprocessor -> a stack of STU layers -> L2-normalised outputs.

    x0 = Dropout(E[item] * sqrt(D) + P[position]);  x_{l+1} = STU_l(x_l);  out = x_L / ||x_L||

Every position of a history gets an output embedding; position i is trained to score item i+1 (the
last one scores the target) by a dot product with the L2-normalised item embeddings. No final
LayerNorm, as in the reference.
"""

from __future__ import annotations

from torch import nn

from hstu_tutorial.memory import enable_recompute, saved_activation_bytes  # noqa: F401 (re-export)
from hstu_tutorial.modules.preprocessors import (  # noqa: F401 (count_parameters: re-export)
    InputPreprocessor,
    SequentialEncoder,
    count_parameters,
    l2_normalize,
)
from hstu_tutorial.modules.stu import JaggedLayout, STULayer


class HSTUEncoder(SequentialEncoder):
    """HSTU encoder on a `JaggedBatch`; see `hstu_encoder` for the arguments."""

    def __init__(
        self,
        num_items: int,
        *,
        embedding_dim: int = 50,
        num_blocks: int = 2,
        num_heads: int = 1,
        dqk: int = 50,
        dv: int = 50,
        max_seq_len: int = 200,
        dropout: float = 0.2,
        attention_impl: str = "pytorch",
        norm: float | None = None,
        use_rab: bool = True,
    ):
        super().__init__()
        self.num_items, self.embedding_dim, self.max_seq_len = num_items, embedding_dim, max_seq_len
        # The reference sizes position and bias tables, and n, as max_seq_len + 10 (generation
        # length) + 1 (the target): 211 on ML-1M.
        self.max_len = max_seq_len + 11
        self.norm = float(self.max_len if norm is None else norm)
        self.attention_impl = attention_impl
        self.preprocessor = InputPreprocessor(
            num_items, embedding_dim, self.max_len, dropout, position_init="xavier_normal"
        )
        self.layers = nn.ModuleList(
            STULayer(embedding_dim, num_heads, dqk, dv, dropout, norm=self.norm, max_len=self.max_len,
                     use_rab=use_rab, attention_impl=attention_impl)
            for _ in range(num_blocks)
        )

    def layout(self, batch, max_len: int | None = None, return_attention: bool = False) -> JaggedLayout:
        """The per-batch layout shared by all layers (pad width `batch.max_len` unless given)."""
        N = int(batch.max_len if max_len is None else max_len)
        if N > self.max_len:
            raise ValueError(
                f"the batch is padded to N={N} but this encoder was built for max_seq_len={self.max_seq_len} "
                f"(tables of {self.max_len}); build it with max_seq_len >= {N}"
            )
        # The Triton kernel forms the bias in-kernel; the PyTorch path (also used for attention maps)
        # needs the time buckets, computed once here for all layers.
        rab = self.layers[0].rab if len(self.layers) else None
        need_buckets = rab is not None and (self.attention_impl == "pytorch" or return_attention)
        return JaggedLayout.from_batch(batch, N, rab=rab if need_buckets else None)

    def forward(self, batch, return_attention: bool = False, max_len: int | None = None):
        """`batch: JaggedBatch` -> L2-normalised `(T, D)` (one row per history position).

        With `return_attention=True` also returns a list (one per layer) of A `(B, H, N, N)`
        (computed by the PyTorch path, whatever `attention_impl` is).
        """
        layout = self.layout(batch, max_len, return_attention)
        x = self.preprocessor(batch.item_ids, batch.offsets)  # (T, D)
        maps = []
        for layer in self.layers:
            if return_attention:
                x, attn = layer(x, layout, return_attention=True)  # (T, D), (B, H, N, N)
                maps.append(attn)
            else:
                x = layer(x, layout)  # (T, D)
        out = l2_normalize(x)  # (T, D)
        return (out, maps) if return_attention else out

    def set_recompute(self, enabled: bool = True) -> HSTUEncoder:
        """Activation recomputation: store only each STU layer's input in training, recompute the rest
        in backward (less memory, ~one extra forward of compute). See `hstu_tutorial.memory`."""
        return enable_recompute(self, enabled)

    def parameter_breakdown(self) -> dict:
        """Finer counts inside one STU layer (all layers are alike): W_uvqk, output Linear, rab."""
        layer = self.layers[0]
        parts = {"W_uvqk": layer.uvqk.numel(), "o (Linear + bias)": count_parameters(layer.o)}
        if layer.rab is not None:
            parts["rab pos_w"] = layer.rab.pos_w.numel()
            parts["rab ts_w"] = layer.rab.ts_w.numel()
        return parts


def hstu_encoder(
    num_items: int,
    *,
    embedding_dim: int = 50,
    num_blocks: int = 2,
    num_heads: int = 1,
    dqk: int = 50,
    dv: int = 50,
    max_seq_len: int = 200,
    dropout: float = 0.2,
    attention_impl: str = "pytorch",
    norm: float | None = None,
) -> HSTUEncoder:
    """Build the HSTU encoder (defaults: the reference's ML-1M model: D=50, 2 blocks, 1 head, dqk=dv=50).

    `num_items`: largest item id. `norm`: the attention divisor n (default max_seq_len + 11, the
    reference's 211). `attention_impl`: "pytorch" or "triton". HSTU-large: num_blocks=8, num_heads=2,
    dqk=dv=25.
    """
    return HSTUEncoder(
        num_items, embedding_dim=embedding_dim, num_blocks=num_blocks, num_heads=num_heads, dqk=dqk, dv=dv,
        max_seq_len=max_seq_len, dropout=dropout, attention_impl=attention_impl, norm=norm,
    )
