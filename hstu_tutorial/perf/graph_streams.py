"""CUDA graphs replayed at the same time on different streams: do they disturb each other's GEMMs?

`hstu-train --seeds` replays one CUDA graph per seed, each on the seed's own stream, at the same time.
PyTorch gives cuBLAS a workspace per (handle, stream), and a captured GEMM keeps the workspace address of the
stream it was captured on. `compare` captures `graphs` graphs of `gemms` GEMMs with the shapes of the ML-1M
step's weight gradients two ways:

- `shared`: `torch.cuda.graph(g)` with no stream, i.e. every graph on the one capture stream PyTorch keeps for
  the process, hence one cuBLAS workspace for all graphs;
- `own`: every graph captured on the stream it is then replayed on (`training.cuda_graph.capture_stream`,
  what the trainer does).

Each graph is first replayed alone: its outputs are the reference (a replay repeats the same kernels on the
same inputs). Then, `rounds` times, all graphs are launched together, each on its stream, and every output is
compared to its reference bit for bit. `benchmarks/check_graph_streams.py` is the command line; notebook 07
shows the result. Needs a CUDA GPU.
"""

from __future__ import annotations

import torch

from hstu_tutorial.training.cuda_graph import capture_stream

__all__ = ["MODES", "SHAPES", "compare", "compare_shape"]

MODES = ("shared", "own")
# (name, K, M, N, dtype): out (M, N) = a (K, M)^T @ b (K, N), as the weight gradients of the ML-1M step
SHAPES = [
    ("item table grad (25600 x 3883)^T (25600 x 64), fp32", 25_600, 3_883, 64, torch.float32),
    ("linear grad (25600 x 64)^T (25600 x 256), fp32", 25_600, 64, 256, torch.float32),
    ("linear grad (25600 x 64)^T (25600 x 256), bf16", 25_600, 64, 256, torch.bfloat16),
]


def _build(mode: str, shape: tuple, graphs: int, gemms: int, device: torch.device, seed: int) -> list:
    """`graphs` captured graphs of `gemms` GEMMs each: (graph, replay stream, outputs) per graph."""
    _, K, M, N, dtype = shape
    gen = torch.Generator(device=device).manual_seed(seed)
    built = []
    for _ in range(graphs):
        stream = torch.cuda.Stream(device)
        ins = [
            (
                torch.randn(K, M, device=device, dtype=dtype, generator=gen),
                torch.randn(K, N, device=device, dtype=dtype, generator=gen),
            )
            for _ in range(gemms)
        ]
        with torch.cuda.stream(stream):
            for a, b in ins:  # warm-up on the replay stream: cuBLAS picks its algorithm and workspace
                a.t() @ b
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            where = {} if mode == "shared" else {"stream": capture_stream(device)}
            with torch.cuda.graph(graph, **where):
                outs = [a.t() @ b for a, b in ins]
        built.append((graph, stream, outs, ins))
    torch.cuda.synchronize(device)
    return built


def compare_shape(
    mode: str, shape: tuple, graphs: int = 4, gemms: int = 6, rounds: int = 200, seed: int = 0
) -> dict:
    """One mode and shape: rounds with any output that differs from its graph replayed alone, and how much."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("graph_streams needs a CUDA GPU (CUDA graphs)")
    device = torch.device("cuda", torch.cuda.current_device())
    built = _build(mode, shape, graphs, gemms, device, seed)
    refs = []
    for graph, stream, outs, _ in built:  # alone: one graph at a time
        with torch.cuda.stream(stream):
            graph.replay()
        torch.cuda.synchronize(device)
        refs.append([o.clone() for o in outs])
    bad_rounds, worst, bad_outputs = 0, 0.0, 0
    for _ in range(rounds):
        for graph, stream, _, _ in built:  # together: every graph on its own stream at once
            with torch.cuda.stream(stream):
                graph.replay()
        torch.cuda.synchronize(device)
        bad = 0
        for (_, _, outs, _), ref in zip(built, refs):
            for o, r in zip(outs, ref):
                if not torch.equal(o, r):
                    bad += 1
                    worst = max(worst, (o.float() - r.float()).abs().max().item())
        bad_rounds += bad > 0
        bad_outputs += bad
    return {
        "mode": mode,
        "shape": shape[0],
        "rounds": rounds,
        "rounds_with_a_difference": bad_rounds,
        "outputs_differing": bad_outputs,
        "outputs_compared": rounds * graphs * gemms,
        "max_abs_diff": worst,
    }


def compare(graphs: int = 4, gemms: int = 6, rounds: int = 200, seed: int = 0) -> list[dict]:
    """`compare_shape` for every shape of SHAPES and both modes (TF32 on, as the trainer runs)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        return [compare_shape(mode, shape, graphs, gemms, rounds, seed) for shape in SHAPES for mode in MODES]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
