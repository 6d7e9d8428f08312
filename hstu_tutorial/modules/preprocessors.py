"""Input preprocessing: item ids of a jagged history -> the first layer's input x0.

    x0 = Dropout(E[item] * sqrt(D) + P[position])      (padding rows masked to 0)

`E` is the item embedding table (also used to score candidate items), `P` a learnable position
embedding with position 0 = the oldest item of the window. The sqrt(D) scale lets item embeddings
initialised with a small std (0.02) dominate the position term, as in SASRec and the HSTU reference.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn

from hstu_tutorial.losses import l2_normalize
from hstu_tutorial.ops.embedding import embedding_lookup
from hstu_tutorial.ops.jagged_tensors import jagged_positions


class InputPreprocessor(nn.Module):
    """Item embedding * sqrt(D) + learnable position embedding, dropout, padding masked.

    `num_items` is the largest item id (ids are 1..num_items, 0 = padding). `max_positions` is the size
    of the position table (the reference uses max_seq_len + 11). `position_init`: "xavier_normal" (what
    the HSTU reference ends up with: its encoder re-initialises the preprocessor with xavier normal) or
    "truncated_normal" (std sqrt(1/D), what the SASRec reference keeps).
    """

    def __init__(
        self,
        num_items: int,
        embedding_dim: int = 50,
        max_positions: int = 211,
        dropout: float = 0.2,
        position_init: str = "xavier_normal",
    ):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.max_positions = max_positions
        self.dropout = dropout
        self.item_emb = nn.Embedding(num_items + 1, embedding_dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_positions, embedding_dim)
        with torch.no_grad():
            # Reference: item embeddings ~ N(0, 0.02^2) truncated at 2 std; the padding row stays 0.
            nn.init.trunc_normal_(self.item_emb.weight, std=0.02, a=-0.04, b=0.04)
            self.item_emb.weight[0].zero_()
            if position_init == "xavier_normal":
                nn.init.xavier_normal_(self.pos_emb.weight)
            elif position_init == "truncated_normal":
                std = math.sqrt(1.0 / embedding_dim)
                nn.init.trunc_normal_(self.pos_emb.weight, std=std, a=-2 * std, b=2 * std)
            else:
                raise ValueError(
                    f"position_init must be 'xavier_normal' or 'truncated_normal', got {position_init!r}"
                )

    def forward(self, item_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Jagged `item_ids (T,)`, `offsets (B+1,)` -> `x0 (T, D)`."""
        T = item_ids.shape[0]
        positions = jagged_positions(offsets, total_length=T)  # (T,) 0 = oldest item
        # Positions past the table (histories longer than max_positions) would index out of range.
        positions = positions.clamp(max=self.max_positions - 1)
        # embedding_lookup: nn.Embedding's values and gradients, without sorting the ids in the backward.
        item = embedding_lookup(item_ids, self.item_emb.weight, self.item_emb.padding_idx)  # (T, D)
        pos = embedding_lookup(positions, self.pos_emb.weight)  # (T, D)
        x = item * math.sqrt(self.embedding_dim) + pos  # (T, D)
        x = F.dropout(x, p=self.dropout, training=self.training)
        return x * (item_ids != 0).unsqueeze(-1).to(x.dtype)  # (T, D) padding ids give 0


# What each size argument of the encoders means, for error messages.
_SIZES = {
    "num_items": "the largest item id",
    "embedding_dim": "D, the width of every embedding",
    "num_blocks": "how many blocks to stack",
    "num_heads": "H, the number of attention heads",
    "dqk": "the width of q and k per head",
    "dv": "the width of v per head",
    "ffn_hidden": "the width of the FFN's hidden layer",
    "max_seq_len": "the longest history the tables are sized for",
}


def check_encoder_args(factory: str, dropout, **sizes) -> None:
    """Raise a `ValueError` naming the first argument of `factory` that cannot build a model."""
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{factory}: {name} ({_SIZES[name]}) must be an integer >= 1, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, Real) or not 0.0 <= dropout < 1.0:
        raise ValueError(
            f"{factory}: dropout must be a probability in [0, 1) (0 turns it off), got {dropout!r}"
        )


def count_parameters(module: nn.Module) -> int:
    """Number of scalar trainable parameters of `module`."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class SequentialEncoder(nn.Module):
    """What every encoder (HSTU, SASRec) offers the trainer: item embeddings, the last position's output
    and parameter counts. Subclasses set `self.preprocessor` (an `InputPreprocessor`) and hold their
    stack of blocks in `self.blocks` (an `nn.ModuleList`)."""

    preprocessor: InputPreprocessor
    blocks: nn.ModuleList

    def item_embeddings(self, ids: torch.Tensor) -> torch.Tensor:
        """Item ids `(...)` -> L2-normalised embeddings `(..., D)` (the same table as the input)."""
        emb = self.preprocessor.item_emb
        return l2_normalize(embedding_lookup(ids, emb.weight, emb.padding_idx))  # (..., D)

    # The losses read this flag and skip normalising these embeddings a second time.
    item_embeddings.l2_normalized = True

    @staticmethod
    def last_embeddings(out: torch.Tensor, batch) -> torch.Tensor:
        """Jagged output `(T, D)` -> `(B, D)`: each history's last position (it scores the target)."""
        return out[batch.offsets[1:] - 1]

    def query_embeddings(self, batch, pad_width: int | None = None) -> torch.Tensor:
        """`batch` -> `(B, D)`: the output at each history's last position (the query that scores its target).
        HSTU and SASRec compute their last block for that position only; this default runs every position."""
        return self.last_embeddings(self(batch, pad_width=pad_width), batch)

    def num_parameters(self) -> dict:
        """Trainable parameters per part: item/position embeddings, each block, and the total."""
        counts = {
            "item_embedding": count_parameters(self.preprocessor.item_emb),
            "position_embedding": count_parameters(self.preprocessor.pos_emb),
        }
        for i, block in enumerate(self.blocks):
            counts[f"block_{i}"] = count_parameters(block)
        counts["total"] = count_parameters(self)
        return counts
