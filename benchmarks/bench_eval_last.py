"""Evaluation with the last block on the last position only, against the full forward: same ranks? faster?

    PYTHONPATH=. python benchmarks/bench_eval_last.py --data-dir data/ml-1m-u2999 [--out DIR]   # GPU
    PYTHONPATH=. python benchmarks/bench_eval_last.py --smoke                                  # CPU

A history's query is the model's output at its last position. The full forward computes every block at every
position and keeps the last; `query_embeddings` computes the last block for the last position only (its keys
and values still come from every position). For the ML-1M HSTU and SASRec configs, after `--steps` training
steps: both evaluations of valid + test, eagerly and alternately, `--rounds` times each (median ms, ranks
read back to the host as the trainer does), then the trainer's own evaluation (`Trainer.ranks`: the shortcut,
replayed as a CUDA graph on a GPU). Reported: the largest difference between the two paths' queries (in fp32,
and in the config's precision: TF32 rounds the two paths' products differently), how many users' ranks differ
and HR@10 / NDCG@10 both ways. Exits 1 when the fp32 queries differ by more than `--tol`.
`--smoke`: CPU, synthetic data, logic only.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eval_graph import _timed, _train  # noqa: E402
from bench_loss_rows import config_name, trainer_for  # noqa: E402

from hstu_tutorial.metrics import batch_ranks, metrics_from_ranks  # noqa: E402
from hstu_tutorial.perf import machine_info, save_results  # noqa: E402

SPLITS = ("valid", "test")


@contextlib.contextmanager
def matmul_tf32(enabled: bool | None):
    """Inside: TF32 matrix products on or off (None: as they are); the process's switches restored after."""
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if enabled is not None:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


@torch.no_grad()
def _queries(tr, split: str, full: bool) -> torch.Tensor:
    """(U, D) queries of `split` by the full forward or by the shortcut, in the trainer's precision."""
    model = tr.model
    model.eval()
    try:
        out = []
        for batch in tr.splits[split].batches(tr.cfg.eval_batch_size):
            with tr.autocast:
                q = model.last_embeddings(model(batch), batch) if full else model.query_embeddings(batch)
            out.append(q.float())
        return torch.cat(out)
    finally:
        model.train()


def measure(model_name: str, args) -> dict:
    tr = trainer_for(model_name, args, seed=0)
    _train(tr, args.steps)

    def ranks_of(full: bool) -> dict:
        def run():
            return {
                s: batch_ranks(
                    tr.model,
                    tr.splits[s].batches(tr.cfg.eval_batch_size),
                    tr.catalogue,
                    tr.dataset.num_items,
                    forward=tr.model if full else None,  # the model itself: every position, then the last
                    autocast=tr.autocast,
                )
                for s in SPLITS
            }

        return run

    variants = {
        "full": ranks_of(True),
        "last": ranks_of(False),
        "trainer": lambda: {s: tr.ranks(s) for s in SPLITS},
    }
    for fn in variants.values():  # warm-up (the trainer's: eager, then captured as a graph on a GPU)
        fn(), fn()
    times = {name: [] for name in variants}
    ranks = {}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            ms, ranks[name] = _timed(fn, tr.device)
            times[name].append(ms)
    query_diff = {}
    for precision, tf32 in (("fp32", False), ("as trained", None)):
        with matmul_tf32(tf32):
            query_diff[precision] = max(
                float((_queries(tr, s, True) - _queries(tr, s, False)).abs().max()) for s in SPLITS
            )
    metrics = {name: {s: metrics_from_ranks(r[s].cpu(), (10,)) for s in SPLITS} for name, r in ranks.items()}
    graphs = tr._eval_graphs
    return {
        "model": model_name,
        "trainer_graph": bool(graphs is not None and graphs.failed is None and graphs.graphs),
        "graph_failure": None if graphs is None else graphs.failed,
        "config": config_name(model_name, args),
        "steps_trained": args.steps,
        "users_ranked": sum(tr.splits[s].num_users for s in SPLITS),
        "ms": {name: statistics.median(t) for name, t in times.items()},
        # fp32: TF32 off (the verdict); as trained: the config's TF32, whose 10-bit products round the two
        # paths' GEMMs (different row counts, so different kernels) differently
        "query_max_abs_diff": query_diff["fp32"],
        "query_max_abs_diff_as_trained": query_diff["as trained"],
        "ranks_differing": {
            name: sum(int((ranks[name][s] != ranks["full"][s]).sum()) for s in SPLITS)
            for name in ("last", "trainer")
        },
        "metrics": metrics,
    }


def markdown(rows: list[dict], machine: str, tol: float) -> str:
    lines = [
        f"# Evaluation (valid + test): the last block on the last position only ({machine})",
        "",
        "| model | users ranked | full forward ms | last position ms | saved | trainer (graph) ms | "
        "max query diff fp32 / as trained | ranks differing | test HR@10 full / last | test NDCG@10 full / last |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms, m = r["ms"], r["metrics"]
        lines.append(
            f"| {r['model']} | {r['users_ranked']} | {ms['full']:.2f} | {ms['last']:.2f} | "
            f"{1 - ms['last'] / ms['full']:.0%} | {ms['trainer']:.2f} | "
            f"{r['query_max_abs_diff']:.1e} / {r['query_max_abs_diff_as_trained']:.1e} | "
            f"{r['ranks_differing']['last']} | {m['full']['test']['hr@10']:.4f} / {m['last']['test']['hr@10']:.4f} | "
            f"{m['full']['test']['ndcg@10']:.4f} / {m['last']['test']['ndcg@10']:.4f} |"
        )
    worst = max(r["query_max_abs_diff"] for r in rows)
    lines += [
        "",
        f"Queries in fp32 (TF32 off) agree within {tol:g}: {'PASS' if worst <= tol else 'FAIL'} (largest "
        f"difference {worst:.1e}). Ranks differing: users whose rank in the config's precision differs between "
        "the two paths (near-ties; compare the metrics).",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default="", help="the ML-1M folder, e.g. data/ml-1m-u2999")
    ap.add_argument("--models", default="hstu,sasrec")
    ap.add_argument("--rounds", type=int, default=15, help="timed evaluations per variant")
    ap.add_argument("--steps", type=int, default=1000, help="training steps before measuring")
    ap.add_argument("--tol", type=float, default=1e-5, help="largest allowed fp32 |query difference|")
    ap.add_argument("--smoke", action="store_true", help="CPU, synthetic data, logic only")
    ap.add_argument("--out", default="", help="write bench_eval_last.json and .md here")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rounds, args.steps = 2, 2
    rows = [measure(m, args) for m in args.models.split(",")]
    info = machine_info()
    text = markdown(rows, f"{info['device']}, {info['date_utc'][:10]}", args.tol)
    print(text)
    save_results({"machine": info, "tol": args.tol, "rows": rows}, "bench_eval_last", [args.out], text)
    return 1 if any(r["query_max_abs_diff"] > args.tol for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
