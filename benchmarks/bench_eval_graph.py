"""The evaluation as a CUDA graph against the eager evaluation: same ranks? how much faster?

    PYTHONPATH=. python benchmarks/bench_eval_graph.py --data-dir data/ml-1m-u2999 [--out DIR]   # GPU
    PYTHONPATH=. python benchmarks/bench_eval_graph.py --smoke                                  # CPU

The trainer evaluates every epoch: the validation and test splits, each one batch of all users, ranked
against the whole catalogue. Their shapes never change, so from the second epoch on the trainer replays each
split's evaluation as a CUDA graph (`Trainer.ranks`). For the ML-1M HSTU and SASRec configs, after a few
training steps (so the weights are not the initial ones): the eager evaluation and the graph's, alternately,
`--rounds` times each (median ms of valid + test, read back to the host as the trainer does), and whether
every user's rank is the same. Then a few more training steps and the comparison again (the graph must read
the new weights). `--smoke`: CPU, synthetic, no graph (logic only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_loss_rows import config_name, trainer_for  # noqa: E402

from hstu_tutorial.perf import machine_info, save_results  # noqa: E402
from hstu_tutorial.perf.measure import sync  # noqa: E402
from hstu_tutorial.training.trainer import Trainer  # noqa: E402

SPLITS = ("valid", "test")


def _train(tr: Trainer, steps: int) -> None:
    """`steps` eager training steps, over as many epochs (new shuffles) as that takes."""
    B = tr.cfg.batch_size
    done = 0
    while done < steps:
        order = tr.epoch_order().to(tr.device)
        for s in range(min(steps - done, max(order.numel() // B, 1))):
            tr.step(order[s * B : (s + 1) * B], use_graph=False)
            done += 1
    sync(tr.device)


def _timed(fn, device) -> tuple[float, dict]:
    sync(device)
    t0 = time.perf_counter()
    ranks = fn()
    for r in ranks.values():
        r.tolist()  # read back, as the trainer's evaluation does
    return 1e3 * (time.perf_counter() - t0), ranks


def measure(model: str, args) -> dict:
    tr = trainer_for(model, args, seed=0)
    graphs_on = tr._eval_graphs is not None
    _train(tr, args.steps)

    def eager():
        return {s: tr._ranks_eager(s) for s in SPLITS}

    def graph():
        return {s: tr.ranks(s) for s in SPLITS}

    graph(), graph()  # warm-up: eager, then captured
    checks = []
    times = {"eager": [], "graph": []}
    for _phase in range(2):
        for _ in range(args.rounds):
            for name, fn in (("eager", eager), ("graph", graph)):
                ms, ranks = _timed(fn, tr.device)
                times[name].append(ms)
                if name == "eager":
                    want = ranks
                else:
                    checks.append(sum(int((ranks[s] != want[s]).sum()) for s in SPLITS))
        _train(tr, args.steps)  # new weights: the graph must follow them
    users = sum(tr.splits[s].num_users for s in SPLITS)
    return {
        "model": model,
        "config": config_name(model, args),
        "graph": graphs_on and bool(tr._eval_graphs),
        "users_ranked": users,
        "eager_ms": statistics.median(times["eager"]),
        "graph_ms": statistics.median(times["graph"]),
        "comparisons": len(checks),
        "ranks_differing": sum(checks),
    }


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"# The evaluation (valid + test) as a CUDA graph ({machine})",
        "",
        "| model | users ranked | graph | eager ms | graph ms | saved | ranks differing (comparisons) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['users_ranked']} | {'yes' if r['graph'] else 'no'} | {r['eager_ms']:.2f} | "
            f"{r['graph_ms']:.2f} | {1 - r['graph_ms'] / r['eager_ms']:.0%} | "
            f"{r['ranks_differing']} ({r['comparisons']}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="", help="the ML-1M folder, e.g. data/ml-1m-u2999")
    ap.add_argument("--models", default="hstu,sasrec")
    ap.add_argument("--rounds", type=int, default=15, help="timed evaluations per variant and phase")
    ap.add_argument("--steps", type=int, default=10, help="training steps before each phase")
    ap.add_argument("--smoke", action="store_true", help="CPU, synthetic data, logic only")
    ap.add_argument("--out", default="", help="write bench_eval_graph.json and .md here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.steps = 2, 2
    rows = [measure(m, args) for m in args.models.split(",")]
    info = machine_info()
    text = markdown(rows, f"{info['device']}, {info['date_utc'][:10]}")
    print(text)
    save_results({"machine": info, "rows": rows}, "bench_eval_graph", [args.out], text)
    return 1 if any(r["ranks_differing"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
