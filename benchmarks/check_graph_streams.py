"""Do CUDA graphs replayed at the same time on different streams disturb each other's GEMMs?

    PYTHONPATH=. python benchmarks/check_graph_streams.py            # GPU only
    PYTHONPATH=. python benchmarks/check_graph_streams.py --rounds 400 --out DIR

`hstu-train --seeds` replays one CUDA graph per seed, each on the seed's own stream, at the same time. PyTorch
gives cuBLAS a workspace per (handle, stream), and a captured GEMM keeps the workspace address of the stream
it was captured on. Two ways of capturing are compared, each on `--graphs` graphs of `--gemms` GEMMs with the
shapes of the ML-1M step's weight gradients (a long reduction over the batch's 25,600 tokens):

- `shared`: `torch.cuda.graph(g)` with no stream, i.e. every graph on the one capture stream PyTorch keeps
  for the process, hence one cuBLAS workspace for all graphs;
- `own`: every graph captured on the stream it is then replayed on (`training.cuda_graph.capture_stream`,
  what the trainer does).

Each graph is first replayed alone: its outputs are the reference (a replay repeats the same kernels on the
same inputs). Then, `--rounds` times, all graphs are launched together, each on its stream, and every output
is compared to its reference bit for bit. Prints one row per mode and shape: the rounds with any output that
differs, and the largest difference. Exits 1 when `own` shows any difference.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial.training.cuda_graph import capture_stream  # noqa: E402

# (name, K, M, N, dtype): out (M, N) = a (K, M)^T @ b (K, N), as the weight gradients of the ML-1M step
SHAPES = [
    ("item table grad (25600 x 3883)^T (25600 x 64), fp32", 25_600, 3_883, 64, torch.float32),
    ("linear grad (25600 x 64)^T (25600 x 256), fp32", 25_600, 64, 256, torch.float32),
    ("linear grad (25600 x 64)^T (25600 x 256), bf16", 25_600, 64, 256, torch.bfloat16),
]


def build(mode: str, shape: tuple, graphs: int, gemms: int, device: torch.device, seed: int):
    """`graphs` captured graphs of `gemms` GEMMs each; returns (graph, replay stream, outputs) per graph."""
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
            if mode == "shared":
                with torch.cuda.graph(graph):
                    outs = [a.t() @ b for a, b in ins]
            else:
                with torch.cuda.graph(graph, stream=capture_stream(device)):
                    outs = [a.t() @ b for a, b in ins]
        built.append((graph, stream, outs, ins))
    torch.cuda.synchronize(device)
    return built


def run(mode: str, shape: tuple, args, device: torch.device) -> dict:
    built = build(mode, shape, args.graphs, args.gemms, device, args.seed)
    refs = []
    for graph, stream, outs, _ in built:  # alone: one graph at a time
        with torch.cuda.stream(stream):
            graph.replay()
        torch.cuda.synchronize(device)
        refs.append([o.clone() for o in outs])
    bad_rounds, worst, bad_outputs = 0, 0.0, 0
    for _ in range(args.rounds):
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
        "rounds": args.rounds,
        "rounds_with_a_difference": bad_rounds,
        "outputs_differing": bad_outputs,
        "outputs_compared": args.rounds * args.graphs * args.gemms,
        "max_abs_diff": worst,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graphs", type=int, default=4, help="graphs replayed at once (the seeds)")
    ap.add_argument("--gemms", type=int, default=6, help="GEMMs per graph")
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="", help="write check_graph_streams.json and .md here")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("check_graph_streams: needs a CUDA GPU (CUDA graphs); nothing to check here")
        return 0
    torch.backends.cuda.matmul.allow_tf32 = True
    device = torch.device("cuda", torch.cuda.current_device())
    rows = [run(mode, shape, args, device) for shape in SHAPES for mode in ("shared", "own")]
    lines = [
        f"# Concurrent CUDA-graph replays: {args.graphs} graphs of {args.gemms} GEMMs, {args.rounds} rounds",
        "",
        f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}.",
        "",
        "| capture | GEMM | rounds with a difference | outputs differing / compared | max abs diff |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['shape']} | {r['rounds_with_a_difference']} / {r['rounds']} | "
            f"{r['outputs_differing']} / {r['outputs_compared']} | {r['max_abs_diff']:.3g} |"
        )
    own_bad = sum(r["outputs_differing"] for r in rows if r["mode"] == "own")
    verdict = "PASS" if own_bad == 0 else "FAIL"
    lines += ["", f"{verdict}: graphs captured on their own replay stream differ in {own_bad} outputs."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "check_graph_streams.json").write_text(json.dumps(rows, indent=1))
        (out / "check_graph_streams.md").write_text(text)
    return 0 if own_bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
