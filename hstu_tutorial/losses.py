"""Training losses for next-item prediction: sampled softmax (HSTU's), full softmax and BCE, for comparison.

Every position of a history is supervised: the output embedding `q_i` of position `i` (the query) should
score the next item `p_i` higher than other items. With L2-normalised embeddings the score is a cosine
similarity divided by a temperature `tau`.

Sampled softmax (the paper's ML-1M recipe, 128 negatives, tau = 0.05), for one position:

    loss_i = -log( exp(<q_i, e_p>/tau) / (exp(<q_i, e_p>/tau) + sum_r exp(<q_i, e_{n_r}>/tau)) )

with negatives `n_1..n_R` drawn uniformly from the whole catalogue, independently for every position; a
negative that happens to equal the positive ("accidental hit") is left out of the sum. The batch loss is
the mean over supervised positions (optionally weighted: `sum_i w_i loss_i / sum_i w_i`).

All three losses take the same inputs:
    query (M, D)          output embeddings of the supervised positions (L2-normalised here again)
    positive_ids (M,)     the next item of each position (raw item ids)
    item_embed_fn(ids)    -> (..., D) item embeddings (the model's `item_embeddings`), L2-normalised here
                          unless `item_embed_fn.l2_normalized` says they already are
    catalogue (C,)        every valid item id, sorted (the dataset's `catalogue`)
    weights (M,)          optional: 1 for supervised positions, 0 for padding
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

L2_EPS = 1e-6  # the reference clamps the norm at 1e-6 before dividing

__all__ = [
    "LOSSES",
    "bce_loss",
    "full_softmax_loss",
    "get_loss",
    "l2_normalize",
    "sample_negatives",
    "sampled_softmax_loss",
    "sampled_softmax_rows",
]


def l2_normalize(x: torch.Tensor, eps: float = L2_EPS) -> torch.Tensor:
    """x / max(||x||_2, eps) along the last dimension. Shapes: (..., D) -> (..., D).

    The encoders' output postprocessor and the scoring of item embeddings use this one definition."""
    return x / x.norm(dim=-1, keepdim=True).clamp(min=eps)


def catalogue_index(catalogue: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Position of each id inside the sorted `catalogue`. catalogue (C,), ids (...) -> (...) int64.

    Ids that are not in the catalogue (padding 0) get some valid position; callers give them weight 0.
    """
    # Searching all but the last item gives the same positions as searching the whole catalogue and
    # clamping at C - 1 (the last item, and anything above it, land on C - 1), in one kernel instead of two.
    return torch.searchsorted(catalogue[:-1], ids)


def sample_negatives(
    num_rows: int,
    num_negatives: int,
    catalogue_size: int,
    device: torch.device | str,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform negatives, as positions into the catalogue: (num_rows, num_negatives) int64.

    Drawn on `device` (no host round trip per step). The reference draws `all_item_ids[randint(0, C)]`;
    positions into the sorted catalogue are the same draw.
    """
    return torch.randint(
        0, catalogue_size, (num_rows, num_negatives), device=device, generator=generator
    )  # (M, R)


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 (bf16 logits / 0.05 lose too many digits); float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _item_vectors(item_embed_fn: Callable[[torch.Tensor], torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """L2-normalised item embeddings (..., D) of `ids` (...).

    A function whose `l2_normalized` attribute is True (the encoders' `item_embeddings`) already returns
    unit vectors: normalising them again would only add kernels (and rounding)."""
    emb = item_embed_fn(ids)  # (..., D)
    return emb if getattr(item_embed_fn, "l2_normalized", False) else l2_normalize(emb)


GEMM_ALIGN = 8  # the dense loss pads D and C to a multiple of this: see _SampledColumns


def _pad_to(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`x (R, K)` with zero rows and columns appended up to `(rows, cols)` (x itself when already that shape)."""
    if x.shape == (rows, cols):
        return x
    return F.pad(x, (0, cols - x.shape[1], 0, rows - x.shape[0]))


def _aligned(n: int) -> int:
    """n rounded up to a multiple of GEMM_ALIGN."""
    return -(-n // GEMM_ALIGN) * GEMM_ALIGN


class _SampledColumns(torch.autograd.Function):
    """logits = (query @ items^T).gather(1, columns) with hits at -inf, / tau, in at least float32.

    The (M, C) score matrix lives only inside the forward. The backward builds one zeroed (M, C)
    gradient, adds the (M, 1 + R) logit gradient into its columns (a column drawn twice adds up) and
    runs the two matrix products dQ = G @ E and dE = G^T @ Q. Autograd through two `gather`s would
    build two (M, C) gradients and add them. Hit logits are -inf, so log_softmax gives them exactly
    zero gradient: nothing needs masking in the backward.

    The three matrix products read or write an (M, C) matrix and are bound by memory traffic. Their
    rows must start on 16-byte boundaries for the GPU's vector loads: with D = 50 and C = 3,883 floats
    (ML-1M) they do not, and cuBLAS falls back to kernels that load one element at a time. So query and
    items are padded with zeros to D and C multiples of `GEMM_ALIGN` (56 and 3,888): the padded columns
    add exact zeros to every dot product, no sampled column points at a padded item, and the gradients
    are cut back to the inputs' shapes.
    """

    @staticmethod
    def forward(ctx, query, items, columns, hits, temperature):
        (M, D), C = query.shape, items.shape[0]
        Dp, Cp = _aligned(D), _aligned(C)
        query_p, items_p = _pad_to(query, M, Dp), _pad_to(items, Cp, Dp)  # (M, Dp), (Cp, Dp)
        scores = query_p @ items_p.t()  # (M, Cp) cosine similarity with every item (and 0 for padding)
        logits = _fp32(scores.gather(1, columns))  # (M, 1 + R) a fresh tensor: edited in place below
        ctx.save_for_backward(query_p, items_p, columns)
        ctx.temperature, ctx.shapes = temperature, (D, C)
        del scores
        # An accidental hit would push the positive away from itself: drop it from the normaliser.
        logits[:, 1:].masked_fill_(hits, float("-inf"))
        return logits.div_(temperature)  # (M, 1 + R)

    @staticmethod
    def backward(ctx, dlogits):
        query_p, items_p, columns = ctx.saved_tensors
        D, C = ctx.shapes
        # In the inputs' dtype (under autocast the forward's scores may have been narrower): autograd
        # casts each gradient back to its input's dtype.
        dtype = torch.promote_types(query_p.dtype, items_p.dtype)
        query_p, items_p = query_p.to(dtype), items_p.to(dtype)
        dlogits = (dlogits / ctx.temperature).to(dtype)  # (M, 1 + R)
        dscores = dlogits.new_zeros(query_p.shape[0], items_p.shape[0])  # (M, Cp)
        dscores.scatter_add_(1, columns, dlogits)  # duplicate negatives add up
        dquery = (dscores @ items_p)[:, :D] if ctx.needs_input_grad[0] else None  # (M, D)
        ditems = (dscores.t() @ query_p)[:C, :D] if ctx.needs_input_grad[1] else None  # (C, D)
        return dquery, ditems, None, None, None


class _SparseSampledColumns(torch.autograd.Function):
    """The same logits as `_SampledColumns`, with the sampled columns as a sparse (M, C) pattern instead of a
    dense (M, C) score matrix.

    Forward: one sampled dense-dense product (`torch.sparse.sampled_addmm`, SDDMM) computes <q_m, e_c> only for
    the M x (1 + R) sampled pairs. Backward: the logit gradient G is a sparse (M, C) matrix with 1 + R entries
    per row (a column drawn twice is two entries, which the products add), and dQ = G E, dE = G^T Q are two
    sparse-dense products (SpMM). No (M, C) matrix is ever written: what is read is the sampled items' rows.
    """

    @staticmethod
    def forward(ctx, query, items, columns, hits, temperature):
        (M, width), C = columns.shape, items.shape[0]
        dtype = torch.promote_types(torch.promote_types(query.dtype, items.dtype), torch.float32)
        query, items = query.to(dtype), items.to(dtype)
        crow = torch.arange(0, M * width + 1, width, dtype=torch.int32, device=columns.device)  # (M + 1,)
        col = columns.reshape(-1).to(torch.int32)  # (M * width,)
        pattern = _csr(crow, col, query.new_zeros(M * width), (M, C))
        logits = torch.sparse.sampled_addmm(pattern, query, items.t(), beta=0.0).values().view(M, width)
        logits = logits.clone()  # (M, 1 + R) edited in place below
        ctx.save_for_backward(query, items, crow, col)
        ctx.temperature = temperature
        logits[:, 1:].masked_fill_(hits, float("-inf"))
        return logits.div_(temperature)

    @staticmethod
    def backward(ctx, dlogits):
        query, items, crow, col = ctx.saved_tensors
        g = (dlogits / ctx.temperature).to(query.dtype).reshape(-1)  # (M * (1 + R),)
        grad = _csr(crow, col, g, (query.shape[0], items.shape[0]))  # (M, C) sparse
        dquery = grad @ items if ctx.needs_input_grad[0] else None  # (M, D)
        ditems = grad.t() @ query if ctx.needs_input_grad[1] else None  # (C, D)
        return dquery, ditems, None, None, None


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix (the beta-state warning of sparse CSR tensors silenced; the indices are built here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size=size, check_invariants=False)


# What "auto" picks for a catalogue of at most 64 * R items: "dense" or "sparse" (benchmarks/bench_loss.py).
SMALL_CATALOGUE_IMPL = "dense"
# A catalogue of at most this many items per negative is "small": an (M, C) matrix is then affordable.
SMALL_CATALOGUE_ITEMS_PER_NEGATIVE = 64
IMPLS = ("dense", "sparse", "gather", "fused")


def _auto_impl(query: torch.Tensor, catalogue_size: int, num_negatives: int) -> str:
    """The sampled softmax's implementation for impl="auto" (see `sampled_softmax_loss`)."""
    from hstu_tutorial.ops.options import get_options

    if query.is_cuda and query.dtype != torch.float64 and get_options().fused_loss:
        return "fused"
    small = catalogue_size <= SMALL_CATALOGUE_ITEMS_PER_NEGATIVE * num_negatives
    return SMALL_CATALOGUE_IMPL if small else "gather"


def sampled_softmax_rows(
    query: torch.Tensor, items: torch.Tensor, columns: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Each row's sampled softmax loss in plain PyTorch, (M,): `query (M, D)` against the rows `columns (M, 1 + R)`
    of `items (C, D)`, column 0 the positive, negatives equal to it dropped, a negative drawn twice counted twice.

    What the fused kernels compute (`ops.triton.sampled_softmax`); their checks compare them with it in float64.
    Memory grows with M * (1 + R) * D, like the "gather" implementation."""
    scores = (query[:, None, :] * items[columns]).sum(-1) / temperature  # (M, 1 + R)
    drop = torch.zeros_like(scores, dtype=torch.bool)
    drop[:, 1:] = columns[:, 1:] == columns[:, :1]  # accidental hits
    return torch.logsumexp(scores.masked_fill(drop, float("-inf")), dim=1) - scores[:, 0]


def _weighted_mean(per_position: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum_i w_i l_i / sum_i w_i (plain mean without weights). The reference averages this way."""
    if weights is None:
        return per_position.mean()
    weights = weights.to(per_position.dtype)
    return (per_position * weights).sum() / weights.sum().clamp(min=1.0)


def sampled_softmax_loss(
    query: torch.Tensor,
    positive_ids: torch.Tensor,
    item_embed_fn: Callable[[torch.Tensor], torch.Tensor],
    catalogue: torch.Tensor,
    num_negatives: int = 128,
    temperature: float = 0.05,
    generator: torch.Generator | None = None,
    *,
    weights: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Sampled softmax with uniform negatives from the whole catalogue (HSTU's ML-1M loss). Returns ().

    query (M, D), positive_ids (M,), catalogue (C,) sorted; `negatives` (M, R) positions into the
    catalogue may be given (tests); otherwise R = `num_negatives` are drawn with `generator`.

    Four implementations give the same numbers:
      * "gather": look up the R negative embeddings of every position, (M, R, D), and take dot products;
        what the reference does. Memory grows with M * R * D.
      * "dense": score every position against the whole catalogue with one matrix product, (M, C), and
        pick the positive and the R sampled columns with one gather. Dense matrix products are what a GPU
        does best, and the backward pass avoids scattering M * R gradient rows into the embedding table.
      * "sparse": the sampled columns as a sparse (M, C) pattern: one sampled product (SDDMM) forward, two
        sparse-dense products backward, and no (M, C) matrix at all ("dense" when 1 + R > C).
      * "fused": the "gather" formula in Triton kernels (`ops.triton.sampled_softmax`): every row reads
        its 1 + R item vectors from the table and keeps only its running logsumexp; no (M, R, D) or (M, C)
        tensor. fp32 arithmetic whatever the inputs' dtype (float64 inputs: "gather").
    "auto" picks "fused" on a CUDA tensor when the option `fused_loss` is on (the default; `use_options`, or
    `HSTU_FUSED_LOSS=0`) and the inputs are float32 or narrower; otherwise `SMALL_CATALOGUE_IMPL` ("dense")
    when the catalogue has at most 64 * R items (ML-1M: 3,883 <= 8,192), else "gather".
    """
    if query.dim() != 2:
        raise ValueError(f"query must be (M, D), got shape {tuple(query.shape)}")
    if positive_ids.shape != query.shape[:1]:
        raise ValueError(
            f"positive_ids must be (M,) = ({query.shape[0]},) to match query, got {tuple(positive_ids.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    num_rows = query.shape[0]
    if negatives is None:
        negatives = sample_negatives(num_rows, num_negatives, catalogue.numel(), query.device, generator)
    if impl == "auto":
        impl = _auto_impl(query, catalogue.numel(), negatives.shape[1])
    if impl not in IMPLS:
        raise ValueError(f"impl must be 'auto' or one of {', '.join(map(repr, IMPLS))}, got {impl!r}")
    if impl == "fused" and query.dtype == torch.float64:
        impl = "gather"  # the kernels compute in float32
    query = l2_normalize(query)  # (M, D)
    pos_index = catalogue_index(catalogue, positive_ids)  # (M,)
    if impl == "fused":
        from hstu_tutorial.ops.triton.sampled_softmax import triton_sampled_softmax

        items = _item_vectors(item_embed_fn, catalogue)  # (C, D)
        columns = torch.cat([pos_index[:, None], negatives], dim=1)  # (M, 1 + R) positive first
        return _weighted_mean(triton_sampled_softmax(query, items, columns, temperature), weights)
    hits = negatives == pos_index[:, None]  # (M, R) accidental hits
    if impl in ("dense", "sparse"):
        items = _item_vectors(item_embed_fn, catalogue)  # (C, D)
        columns = torch.cat([pos_index[:, None], negatives], dim=1)  # (M, 1 + R) positive first
        # torch's sparse products need no more entries per row than the matrix has columns
        sparse = impl == "sparse" and columns.shape[1] <= items.shape[0]
        sampled = _SparseSampledColumns if sparse else _SampledColumns
        logits = sampled.apply(query, items, columns, hits, temperature)  # (M, 1 + R)
    else:  # "gather": the readable reference
        pos_emb = _item_vectors(item_embed_fn, positive_ids)  # (M, D)
        neg_emb = _item_vectors(item_embed_fn, catalogue[negatives])  # (M, R, D)
        pos_logits = (query * pos_emb).sum(-1, keepdim=True)  # (M, 1)
        neg_logits = torch.einsum("md,mrd->mr", query, neg_emb)  # (M, R)
        # An accidental hit would push the positive away from itself: drop it from the normaliser.
        neg_logits = neg_logits.masked_fill(hits, float("-inf"))  # (M, R)
        logits = _fp32(torch.cat([pos_logits, neg_logits], dim=1)) / temperature  # (M, 1 + R)
    per_position = -torch.log_softmax(logits, dim=1)[:, 0]  # (M,)
    return _weighted_mean(per_position, weights)


def full_softmax_loss(
    query: torch.Tensor,
    positive_ids: torch.Tensor,
    item_embed_fn: Callable[[torch.Tensor], torch.Tensor],
    catalogue: torch.Tensor,
    num_negatives: int = 0,
    temperature: float = 0.05,
    generator: torch.Generator | None = None,
    *,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over the whole catalogue (every other item is a negative). Returns ().

    loss_i = -log softmax_c(<q_i, e_c> / tau)[p_i]. query (M, D), positive_ids (M,), catalogue (C,).
    `num_negatives` and `generator` are accepted (and unused) so that all losses share one signature.
    """
    query = l2_normalize(query)  # (M, D)
    items = _item_vectors(item_embed_fn, catalogue)  # (C, D)
    logits = _fp32(query @ items.t()) / temperature  # (M, C)
    per_position = F.cross_entropy(logits, catalogue_index(catalogue, positive_ids), reduction="none")  # (M,)
    return _weighted_mean(per_position, weights)


def bce_loss(
    query: torch.Tensor,
    positive_ids: torch.Tensor,
    item_embed_fn: Callable[[torch.Tensor], torch.Tensor],
    catalogue: torch.Tensor,
    num_negatives: int = 1,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    weights: torch.Tensor | None = None,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy with one uniform negative per position (SASRec's original loss). Returns ().

    loss_i = (BCE(<q_i, e_p>/tau, 1) + BCE(<q_i, e_n>/tau, 0)) / 2; positions whose negative equals the
    positive are left out, as the reference does. query (M, D), positive_ids (M,), negatives (M, 1).
    """
    if negatives is None:
        negatives = sample_negatives(query.shape[0], 1, catalogue.numel(), query.device, generator)  # (M, 1)
    query = l2_normalize(query)  # (M, D)
    pos_emb = _item_vectors(item_embed_fn, positive_ids)  # (M, D)
    neg_emb = _item_vectors(item_embed_fn, catalogue[negatives[:, 0]])  # (M, D)
    pos_logits = _fp32((query * pos_emb).sum(-1)) / temperature  # (M,)
    neg_logits = _fp32((query * neg_emb).sum(-1)) / temperature  # (M,)
    per_position = 0.5 * (
        F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits), reduction="none")
        + F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits), reduction="none")
    )  # (M,)
    valid = (negatives[:, 0] != catalogue_index(catalogue, positive_ids)).to(per_position.dtype)  # (M,)
    weights = valid if weights is None else weights.to(per_position.dtype) * valid
    return _weighted_mean(per_position, weights)


LOSSES = {
    "sampled_softmax": sampled_softmax_loss,
    "full_softmax": full_softmax_loss,
    "bce": bce_loss,
}


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """The loss function called `name` (one of LOSSES)."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name]
