"""Memory levers that leave the maths unchanged: gradient accumulation and activation recomputation.

Gradient accumulation. A batch of B histories is split into k micro-batches that run one after the
other; their gradients add up in `.grad` before one optimizer step. The loss of a batch is a *mean over
supervised positions*, so each micro-batch's mean must be weighted by its share of the positions,

    L = sum_m (n_m / n) * L_m,      n_m = supervised positions of micro-batch m,  n = sum_m n_m,

not by 1/k: micro-batches of histories have different numbers of positions, and 1/k would give long
histories a different weight than the large batch gives them. Peak activation memory falls about k-fold.

Activation recomputation (`torch.utils.checkpoint`). Each block's forward keeps only its input; the
backward pass runs the block's forward again to rebuild what it needs. Memory for a block's activations
is traded for one more forward pass (about a third more compute). With the RNG state preserved, the
recomputed dropout masks are the ones of the first pass: outputs and gradients are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "SavedBytes",
    "accumulated_backward",
    "blocks_of",
    "enable_recompute",
    "is_recomputing",
    "saved_activation_bytes",
]
MIB = 2**20


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The stack of blocks of an encoder: `model.layers` (HSTU's STU layers) or `model.blocks` (SASRec)."""
    for name in ("layers", "blocks"):
        blocks = getattr(model, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise TypeError(
        f"{type(model).__name__} has neither a `layers` nor a `blocks` ModuleList, so there is no block to "
        "recompute; pass an HSTU or SASRec encoder (hstu_tutorial.modules)"
    )


def _checkpointed_forward(block: nn.Module, plain_forward: Callable):
    def forward(*args, return_attention: bool = False, **kwargs):
        # Attention maps are for inspection (no backward needed), and eval has no backward at all.
        if return_attention or not (block.training and torch.is_grad_enabled()):
            return plain_forward(*args, return_attention=return_attention, **kwargs)
        # Non-reentrant checkpointing: works with keyword arguments and inputs that need no grad, and
        # preserve_rng_state replays the same dropout masks in the recomputation.
        return checkpoint(plain_forward, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)

    return forward


def enable_recompute(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn activation recomputation on (or off) for every block of `model`; returns `model`.

    The block objects and their parameter names are unchanged (state_dicts and checkpoints still load);
    only their `forward` is wrapped in `torch.utils.checkpoint.checkpoint` while training.
    """
    for block in blocks_of(model):
        plain = block.__dict__.get("_plain_forward")
        if enabled and plain is None:
            block._plain_forward = block.forward  # the bound class method
            block.forward = _checkpointed_forward(block, block._plain_forward)
        elif not enabled and plain is not None:
            del block.__dict__["forward"]  # the class's forward shows through again
            del block.__dict__["_plain_forward"]
    return model


def is_recomputing(model: nn.Module) -> bool:
    """True when `enable_recompute(model)` is in effect."""
    return any("_plain_forward" in b.__dict__ for b in blocks_of(model))


def accumulated_backward(
    micro_loss: Callable[[object], torch.Tensor],
    micro_batches: Sequence,
    counts: Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """Backward over `micro_batches` so that `.grad` equals the gradient of the whole batch's mean loss.

    `micro_loss(mb)` returns the mean loss over micro-batch `mb`'s supervised positions; `counts[m]` is
    how many positions micro-batch m supervises (known before any forward pass, e.g. from the history
    lengths). Each backward is scaled by `n_m / n` (see the module docstring), and each micro-batch's
    graph is freed before the next one is built: that is where the memory goes down. The caller zeroes
    the gradients before and steps the optimizer after. Returns the batch's mean loss (detached).
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)  # (k,) stays on its device
    if counts.numel() != len(micro_batches):
        raise ValueError(f"got {len(micro_batches)} micro-batches but {counts.numel()} counts; give one each")
    # Counts on a GPU are not read back (a device->host sync per step); on the CPU they are checked.
    if counts.device.type == "cpu" and float(counts.sum()) <= 0:
        raise ValueError(f"the micro-batches supervise no position (counts {counts.tolist()})")
    shares = counts / counts.sum()  # (k,) n_m / n
    loss = None
    for m, mb in enumerate(micro_batches):
        mean = micro_loss(mb)  # () mean over this micro-batch's positions
        part = mean * shares[m].to(mean.dtype)  # () this micro-batch's share of the batch mean
        part.backward()
        loss = part.detach() if loss is None else loss + part.detach()
    return loss


class SavedBytes:
    """Context manager: bytes of the tensors autograd keeps for the backward pass (parameters excluded).

    Storages are counted once (views of one tensor share a storage). What activation recomputation
    saves shows up here: inside a checkpointed block autograd keeps nothing.
    """

    def __init__(self, model: torch.nn.Module | None = None):
        self.skip = (
            {p.untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
        )
        self.seen: dict[int, int] = {}

    def _pack(self, t: torch.Tensor):
        try:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            if not isinstance(t, nn.Parameter) and ptr not in self.skip and ptr not in self.seen:
                self.seen[ptr] = st.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage (meta, sparse)
            pass
        return t

    def __enter__(self):
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.seen.values()) / MIB


def saved_activation_bytes(fn, *args, **kwargs) -> tuple[object, int]:
    """Run `fn(*args, **kwargs)` and count the bytes autograd keeps for the backward pass (activation
    memory), parameters excluded and each storage counted once. Returns `(result, bytes)`."""
    with SavedBytes() as saved:
        result = fn(*args, **kwargs)
    return result, sum(saved.seen.values())
