"""Which stream a training step's CUDA graph is captured on (training/cuda_graph.py).

Graphs replayed at the same time on different streams (`--seeds`) must not share a cuBLAS workspace, and
PyTorch gives one workspace per capture stream: `StepGraph` must capture on the stream it is replayed on
when that is a side stream, and on a stream of its own otherwise, never on the one stream `torch.cuda.graph`
shares between all graphs when given none. A CPU has no CUDA graphs, so torch.cuda is replaced by a
recorder here; benchmarks/check_graph_streams.py measures the real hazard on a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from hstu_tutorial.training import cuda_graph


class _Stream:
    made = 0

    def __init__(self, device=None, name=None):
        _Stream.made += 1
        self.name = name or f"pool-{_Stream.made}"

    def wait_stream(self, other):
        pass

    def __eq__(self, other):
        return isinstance(other, _Stream) and other.name == self.name

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return self.name


class _FakeCuda:
    """The torch.cuda calls StepGraph makes, recording the capture stream."""

    def __init__(self, current: _Stream):
        self.default = _Stream(name="default")
        self.current = current
        self.captures: list = []

    def install(self, mp: pytest.MonkeyPatch) -> None:
        mp.setattr(torch.cuda, "Stream", _Stream)
        mp.setattr(torch.cuda, "current_stream", lambda device=None: self.current)
        mp.setattr(torch.cuda, "default_stream", lambda device=None: self.default)
        mp.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        mp.setattr(torch.cuda, "synchronize", lambda device=None: None)
        mp.setattr(torch.cuda, "CUDAGraph", lambda: object())

        @contextlib.contextmanager
        def graph(g, pool=None, stream=None, capture_error_mode="global"):
            self.captures.append(stream)
            yield

        mp.setattr(torch.cuda, "graph", graph)


def _step_graph(fake: _FakeCuda, mp: pytest.MonkeyPatch) -> cuda_graph.StepGraph:
    fake.install(mp)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    index = torch.arange(4)
    x = torch.randn(4, 3)
    return cuda_graph.StepGraph(model, opt, lambda idx: model(x[idx]).pow(2).mean(), index, warmup_steps=1)


def test_capture_on_the_replay_stream_when_it_is_a_side_stream(monkeypatch):
    seed_stream = _Stream(name="seed-1")
    fake = _FakeCuda(current=seed_stream)
    g = _step_graph(fake, monkeypatch)
    assert fake.captures == [seed_stream], "the graph must be captured on the stream it replays on"
    assert g.capture_stream == seed_stream


def test_capture_on_a_stream_of_its_own_from_the_default_stream(monkeypatch):
    fake = _FakeCuda(current=None)
    fake.current = fake.default
    first = _step_graph(fake, monkeypatch)
    second = _step_graph(fake, monkeypatch)
    a, b = fake.captures
    assert a is not None and b is not None, "torch.cuda.graph without a stream shares one between all graphs"
    assert a != fake.default and b != fake.default, "a capture cannot run on the default stream"
    assert a != b, "two graphs must not be captured on one stream (one cuBLAS workspace)"
    assert (first.capture_stream, second.capture_stream) == (a, b)


def test_capture_stream_function(monkeypatch):
    fake = _FakeCuda(current=_Stream(name="mine"))
    fake.install(monkeypatch)
    assert cuda_graph.capture_stream(torch.device("cuda", 0)) == _Stream(name="mine")
    fake.current = fake.default
    fresh = cuda_graph.capture_stream(torch.device("cuda", 0))
    assert fresh != fake.default and isinstance(fresh, _Stream)
