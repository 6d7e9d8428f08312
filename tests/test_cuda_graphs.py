"""The trainer's CUDA graphs (training/cuda_graph.py): which stream the step is captured on, and when the
evaluation is captured and replayed.

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


# -- the evaluation as a CUDA graph: when the trainer captures and replays it ---------------------------
class _CallStandIn:
    """Stands in for CapturedCall on a CPU: runs `fn` at 'capture' and at every replay."""

    made = 0

    def __init__(self, fn, device, watch):
        _CallStandIn.made += 1
        self.fn, self.addresses = fn, [t.data_ptr() for t in watch]

    def still_valid(self, watch):
        return [t.data_ptr() for t in watch] == self.addresses

    def replay(self):
        return self.fn().clone()


@pytest.fixture()
def eval_trainer(dataset, tmp_path, monkeypatch):
    from tiny_runs import TINY_SETS

    from hstu_tutorial.training.config import load_config
    from hstu_tutorial.training.trainer import Trainer

    monkeypatch.setattr(cuda_graph, "CapturedCall", _CallStandIn)
    _CallStandIn.made = 0
    cfg = load_config("synthetic/hstu-small", [*TINY_SETS, "progress=false", f"exp_dir={tmp_path}"])
    tr = Trainer(cfg, dataset=dataset, verbose=False)
    tr._eval_graphs = cuda_graph.SplitGraphs(tr.device)  # as on a GPU with CUDA graphs
    return tr


def test_evaluation_eager_first_then_captured_once_then_replayed(eval_trainer):
    tr = eval_trainer
    eager = tr._ranks_eager("valid")
    first = tr.ranks("valid")
    assert _CallStandIn.made == 0, "the first evaluation must run eagerly (kernels compile, tiles tune)"
    second, third = tr.ranks("valid"), tr.ranks("valid")
    assert _CallStandIn.made == 1, "captured once, on the second evaluation, then replayed"
    for r in (first, second, third):
        assert torch.equal(r, eager)
    tr.ranks("test")
    assert _CallStandIn.made == 1, "each split is warmed up eagerly before its own capture"
    tr.ranks("test")
    assert _CallStandIn.made == 2


def test_evaluation_graph_captured_again_when_a_parameter_is_replaced(eval_trainer):
    tr = eval_trainer
    tr.ranks("valid"), tr.ranks("valid")
    assert _CallStandIn.made == 1
    p = next(tr.model.parameters())
    with torch.no_grad():
        p.add_(0.1)  # in place: the graph reads the new values itself
    tr.ranks("valid")
    assert _CallStandIn.made == 1
    p.data = p.data.clone()  # a new tensor: the captured addresses are stale
    assert torch.equal(tr.ranks("valid"), tr._ranks_eager("valid"))
    assert _CallStandIn.made == 2
    tr.catalogue = tr.catalogue.clone()  # the catalogue is read by the graph too
    tr.ranks("valid")
    assert _CallStandIn.made == 3


def test_evaluation_falls_back_to_eager_when_capture_fails(eval_trainer, monkeypatch, capsys):
    def broken(fn, device, watch):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graph, "CapturedCall", broken)
    tr = eval_trainer
    eager = tr._ranks_eager("valid")
    tr.ranks("valid")
    assert torch.equal(tr.ranks("valid"), eager)
    assert "not permitted" in tr._eval_graphs.failed
    assert torch.equal(tr.ranks("valid"), eager)  # eager from now on, no second attempt
    out = capsys.readouterr()
    assert "evaluation as a CUDA graph failed" in out.out + out.err


def test_graph_streams_check_needs_a_gpu_and_a_known_mode():
    from hstu_tutorial.perf import graph_streams

    with pytest.raises(ValueError, match="mode must be one of"):
        graph_streams.compare_shape("private", graph_streams.SHAPES[0])
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
            graph_streams.compare_shape("own", graph_streams.SHAPES[0])
