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
differs, and the largest difference. Exits 1 when `own` shows any difference. The measuring code is
`hstu_tutorial.perf.graph_streams` (notebook 07 runs it on a GPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial.perf import save_results  # noqa: E402
from hstu_tutorial.perf.graph_streams import compare  # noqa: E402


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
    device = torch.device("cuda", torch.cuda.current_device())
    rows = compare(args.graphs, args.gemms, args.rounds, args.seed)
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
    save_results(rows, "check_graph_streams", [args.out], text)  # a list of rows, as notebook 07 reads it
    return 0 if own_bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
