"""The training step as a CUDA graph: captured once (forward, backward, AdamW), then replayed per batch.

A graph replays the recorded kernels on the same memory, so the step's inputs must keep their shapes and
addresses: the batch is named by a fixed-size index tensor `(B,)` that every replay overwrites in place,
and the trainer's padded layout gives every batch the same B*N positions.

Which stream a graph is captured on matters once several graphs run at the same time (`--seeds`, one seed
per CUDA stream). PyTorch gives cuBLAS a workspace per (handle, stream) and a captured GEMM keeps the
address of the workspace of its capture stream. `torch.cuda.graph` captures on one stream shared by every
graph of the process unless told otherwise, so graphs replayed at once on different streams would share
one workspace: GEMMs that use it (the weight gradients, with their long reduction over the batch's tokens,
among them) then write their intermediate results into the same memory and come out wrong, at random
(benchmarks/check_graph_streams.py: every round of four graphs on an H200).
So a graph is captured on the stream it is replayed on (`capture_stream`): every other user of that
workspace is queued on the same stream, one after the other.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable

import torch

from hstu_tutorial.training.log import note

__all__ = [
    "CAPTURE_LOCK",
    "CapturedCall",
    "SplitGraphs",
    "StepGraph",
    "capture_stream",
    "restore_optimizer_in_place",
]

# Held for every capture here. While a graph is captured, a CUDA call that waits for the device (a copy to
# pageable host memory, an event's synchronize) invalidates the capture from whatever thread it comes:
# a thread making such calls while the training thread may capture (the epoch writer's copies of a
# checkpoint to the host, training/epoch_writer.py) holds this lock around them.
CAPTURE_LOCK = threading.RLock()


def restore_optimizer_in_place(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """Copy a saved `optimizer.state_dict()` back into the optimizer's own state tensors (no new tensors:
    a captured graph keeps pointing at them). State the save did not hold is zeroed."""
    saved_state = saved["state"]
    for i, p in enumerate([p for g in optimizer.param_groups for p in g["params"]]):
        state = optimizer.state.get(p)
        if not state:
            continue
        old = saved_state.get(i, {})
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                if key in old:
                    value.copy_(old[key])
                else:
                    value.zero_()


def capture_stream(device: torch.device) -> torch.cuda.Stream:
    """The stream to capture a graph on that will be replayed on the current stream of `device`.

    The current stream itself when it is a side stream (a `--seeds` seed's own): the graph's GEMMs then use
    that stream's cuBLAS workspace, which nothing on another stream touches. A capture cannot run on the
    default stream, so there a new side stream is taken; replays on the default stream are serialised with
    everything else on it, and no other graph is ever captured on that side stream's workspace while this
    one can run (the trainer replays one graph at a time outside `--seeds`)."""
    current = torch.cuda.current_stream(device)
    if current != torch.cuda.default_stream(device):
        return current
    return torch.cuda.Stream(device)


class StepGraph:
    """One optimisation step recorded as a CUDA graph; `replay(index)` runs it on the users `index (B,)`.

    `batch_loss(index)` must build the batch of `index` and return its mean loss (the forward pass). A
    few warm-up steps run first on a side stream (kernels pick their algorithms, the optimizer creates its
    state); their effect on the weights and the optimizer state is undone before the capture.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        batch_loss: Callable[[torch.Tensor], torch.Tensor],
        static_index: torch.Tensor,
        warmup_steps: int = 3,
    ):
        device = static_index.device
        self.static_index = static_index  # (B,) overwritten in place before every replay
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        opt_state = copy.deepcopy(optimizer.state_dict())
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                optimizer.zero_grad(set_to_none=True)
                batch_loss(static_index).backward()
                optimizer.step()
        torch.cuda.current_stream(device).wait_stream(side)
        # Undo the warm-up: weights and optimizer state back to where they were, in place.
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(params[k])
        restore_optimizer_in_place(optimizer, opt_state)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        self.capture_stream = capture_stream(device)
        with CAPTURE_LOCK, torch.cuda.graph(self.graph, stream=self.capture_stream):
            loss = batch_loss(static_index)
            loss.backward()
            optimizer.step()
        self.loss = loss.detach()  # () refreshed by every replay
        torch.cuda.synchronize(device)

    def replay(self, index: torch.Tensor) -> torch.Tensor:
        """One step on the users `index (B,)` (same B as the capture); returns the step's loss (device)."""
        self.static_index.copy_(index)
        self.graph.replay()
        return self.loss


class CapturedCall:
    """A function of no arguments recorded as a CUDA graph once (`fn` must have run eagerly before: kernels
    compiled, algorithms chosen), then `replay()`ed: the evaluation's ranking of a whole split, whose shapes
    never change. `replay` returns a copy of the output (the graph overwrites its own at every replay).

    `watch`: tensors whose addresses the graph reads (the model's parameters and buffers, the catalogue);
    `still_valid(watch)` is False once one of them was replaced by a new tensor, and the graph must then be
    captured again."""

    def __init__(self, fn: Callable[[], torch.Tensor], device: torch.device, watch: list[torch.Tensor]):
        self.addresses = [t.data_ptr() for t in watch]
        self.graph = torch.cuda.CUDAGraph()
        self.capture_stream = capture_stream(device)
        with CAPTURE_LOCK, torch.cuda.graph(self.graph, stream=self.capture_stream):
            self.out = fn()
        torch.cuda.synchronize(device)

    def still_valid(self, watch: list[torch.Tensor]) -> bool:
        return [t.data_ptr() for t in watch] == self.addresses

    def replay(self) -> torch.Tensor:
        self.graph.replay()
        return self.out.clone()


class SplitGraphs:
    """Each split's evaluation as a CUDA graph: eager the first time (its kernels compile, tiles tune), captured
    the second time, replayed from then on; captured again when a watched tensor was replaced. A capture that
    fails (an operation a graph cannot hold) is reported once and the evaluation stays eager from then on."""

    def __init__(self, device: torch.device):
        self.device = device
        self.graphs: dict[str, CapturedCall] = {}
        self.warm: set[str] = set()
        self.failed: str | None = None  # why the capture failed; then every call runs eagerly

    def run(self, split: str, fn: Callable[[], torch.Tensor], watch: list[torch.Tensor]) -> torch.Tensor:
        """`fn()` for `split`, eagerly or by replaying its graph (the output is a copy either way)."""
        if self.failed is not None:
            return fn()
        graph = self.graphs.get(split)
        if graph is not None and graph.still_valid(watch):
            return graph.replay()
        if split not in self.warm:
            self.warm.add(split)
            return fn()
        try:
            graph = self.graphs[split] = CapturedCall(fn, self.device, watch)
        except Exception as err:  # noqa: BLE001 - evaluate eagerly from now on, loudly
            self.failed = f"{type(err).__name__}: {err}"
            self.graphs.clear()
            note(f"evaluation as a CUDA graph failed ({self.failed}); evaluating eagerly")
            return fn()
        return graph.replay()
