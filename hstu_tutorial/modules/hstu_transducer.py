"""The HSTU encoder: input preprocessor -> a stack of STU blocks -> L2-normalised outputs.

    x0 = Dropout(E[item] * sqrt(D) + P[position]);  x_{l+1} = STU_l(x_l);  out = x_L / ||x_L||

Every position of a history gets an output embedding; position i is trained to score item i+1 (the
last one scores the target) by a dot product with the L2-normalised item embeddings. No final
LayerNorm, as in the reference.
"""

from __future__ import annotations

import torch
from torch import nn

from hstu_tutorial.memory import enable_recompute, saved_activation_bytes  # noqa: F401 (re-export)
from hstu_tutorial.modules.preprocessors import (  # noqa: F401 (count_parameters: re-export)
    InputPreprocessor,
    SequentialEncoder,
    check_encoder_args,
    count_parameters,
    l2_normalize,
)
from hstu_tutorial.modules.stu import STULayer, switches_text
from hstu_tutorial.ops.jagged_tensors import JaggedLayout


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
        use_pos_bias: bool = True,
        use_time_bias: bool = True,
        use_gate: bool = True,
        attention_activation: str = "silu",
    ):
        super().__init__()
        check_encoder_args(
            "hstu_encoder",
            dropout,
            num_items=num_items,
            embedding_dim=embedding_dim,
            num_blocks=num_blocks,
            num_heads=num_heads,
            dqk=dqk,
            dv=dv,
            max_seq_len=max_seq_len,
        )
        self.num_items, self.embedding_dim, self.max_seq_len = num_items, embedding_dim, max_seq_len
        # The reference sizes position and bias tables, and n, as max_seq_len + 10 (generation
        # length) + 1 (the target): 211 on ML-1M.
        self.num_positions = max_seq_len + 11
        self.norm = float(self.num_positions if norm is None else norm)
        self.attention_impl = attention_impl
        self.preprocessor = InputPreprocessor(
            num_items, embedding_dim, self.num_positions, dropout, position_init="xavier_normal"
        )
        self.blocks = nn.ModuleList(
            STULayer(
                embedding_dim,
                num_heads,
                dqk,
                dv,
                dropout,
                norm=self.norm,
                num_positions=self.num_positions,
                use_rab=use_rab,
                attention_impl=attention_impl,
                use_pos_bias=use_pos_bias,
                use_time_bias=use_time_bias,
                use_gate=use_gate,
                attention_activation=attention_activation,
            )
            for _ in range(num_blocks)
        )
        self.register_load_state_dict_pre_hook(_rename_layers_to_blocks)

    def switches(self) -> dict:
        """The ablation switches (all blocks are alike): use_pos_bias, use_time_bias, use_gate, attention_activation."""
        return self.blocks[0].switches()

    def extra_repr(self) -> str:
        return switches_text(**self.switches())  # only the switches that differ from HSTU's defaults

    def layout(self, batch, pad_width: int | None = None, return_attention: bool = False) -> JaggedLayout:
        """The per-batch layout shared by all blocks (pad width N = `batch.max_len` unless given)."""
        N = int(batch.max_len if pad_width is None else pad_width)
        if N > self.num_positions:
            raise ValueError(
                f"the batch is padded to N={N} but this encoder was built for max_seq_len={self.max_seq_len} "
                f"(tables of {self.num_positions}); build it with max_seq_len >= {N}"
            )
        # The Triton kernel forms the bias in-kernel; the PyTorch path (also used for attention maps)
        # needs the time buckets, computed once here for all blocks.
        rab = self.blocks[0].rab
        need_buckets = (
            rab is not None and rab.use_time and (self.attention_impl == "pytorch" or return_attention)
        )
        return JaggedLayout.from_batch(batch, N, rab=rab if need_buckets else None)

    def forward(self, batch, return_attention: bool = False, pad_width: int | None = None):
        """`batch: JaggedBatch` -> L2-normalised `(T, D)` (one row per history position).

        With `return_attention=True` also returns a list (one per block) of A `(B, H, N, N)`
        (computed by the PyTorch path, whatever `attention_impl` is).
        """
        layout = self.layout(batch, pad_width, return_attention)
        x = self.preprocessor(batch.item_ids, batch.offsets)  # (T, D)
        maps = []
        for block in self.blocks:
            if return_attention:
                x, attn = block(x, layout, return_attention=True)  # (T, D), (B, H, N, N)
                maps.append(attn)
            else:
                x = block(x, layout)  # (T, D)
        out = l2_normalize(x)  # (T, D)
        return (out, maps) if return_attention else out

    def query_embeddings(self, batch, pad_width: int | None = None) -> torch.Tensor:
        """`batch: JaggedBatch` -> L2-normalised `(B, D)`: the output at each history's last position, as
        `last_embeddings(forward(batch), batch)`, with the last block computed for that position only."""
        layout = self.layout(batch, pad_width)
        x = self.preprocessor(batch.item_ids, batch.offsets)  # (T, D)
        for block in self.blocks[:-1]:
            x = block(x, layout)  # (T, D)
        return l2_normalize(self.blocks[-1].forward_last(x, layout))  # (B, D)

    def set_recompute(self, enabled: bool = True) -> HSTUEncoder:
        """Activation recomputation: store only each STU block's input in training, recompute the rest
        in backward (less memory, ~one extra forward of compute). See `hstu_tutorial.memory`."""
        return enable_recompute(self, enabled)

    def parameter_breakdown(self) -> dict:
        """Finer counts inside one STU block (all blocks are alike): W_uvqk, output Linear, rab."""
        block = self.blocks[0]
        parts = {"W_uvqk": block.uvqk.numel(), "o (Linear + bias)": count_parameters(block.o)}
        if block.rab is not None and block.rab.pos_w is not None:
            parts["rab pos_w"] = block.rab.pos_w.numel()
        if block.rab is not None and block.rab.ts_w is not None:
            parts["rab ts_w"] = block.rab.ts_w.numel()
        return parts


def _rename_layers_to_blocks(module, state_dict, prefix, *args) -> None:
    # Checkpoints written before the stack was called `blocks` name it `layers.<i>...`: load them too.
    old = prefix + "layers."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "blocks." + key[len(old) :]] = state_dict.pop(key)


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
    use_rab: bool = True,
    use_pos_bias: bool = True,
    use_time_bias: bool = True,
    use_gate: bool = True,
    attention_activation: str = "silu",
) -> HSTUEncoder:
    """Build the HSTU encoder (defaults: the reference's ML-1M model: D=50, 2 blocks, 1 head, dqk=dv=50).

    `num_items`: largest item id. `norm`: the attention divisor n (default max_seq_len + 11, the
    reference's 211). `attention_impl`: "pytorch" or "triton". `use_rab=False` drops the relative
    attention bias (positions and time gaps then reach attention only through the position embedding).
    Ablations (see hstu_tutorial.modules.stu): `use_pos_bias`, `use_time_bias`, `use_gate` and
    `attention_activation` ("silu" or "softmax"). HSTU-large: num_blocks=8, num_heads=2, dqk=dv=25.
    """
    return HSTUEncoder(
        num_items,
        embedding_dim=embedding_dim,
        num_blocks=num_blocks,
        num_heads=num_heads,
        dqk=dqk,
        dv=dv,
        max_seq_len=max_seq_len,
        dropout=dropout,
        attention_impl=attention_impl,
        norm=norm,
        use_rab=use_rab,
        use_pos_bias=use_pos_bias,
        use_time_bias=use_time_bias,
        use_gate=use_gate,
        attention_activation=attention_activation,
    )
