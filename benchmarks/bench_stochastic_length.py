"""Stochastic Length on ML-1M: the paper's HSTU trained with SL off and at a few alphas, on one GPU.

    PYTHONPATH=. python benchmarks/bench_stochastic_length.py --data-dir data/ml-1m-u2999 \
        --out benchmarks/results/h200_2026-12-01/stochastic_length

Every run is `ml-1m/hstu-sampled-softmax-n128-final` (reference protocol, 101 epochs) with
`stochastic_length_alpha` set (0 = off); seeds 42 and 1. Per run: training time (the trainer's train_s:
the epochs' steps, the per-epoch SL draw included, evaluation excluded), the share of training tokens the
draws kept, and the test HR@10 / NDCG@10 the trainer reports (mean of epochs 91-100). The table also gives
the expected shares from the rule (tokens, and attention cost: the sum of squared lengths). Writes
`stochastic_length.json` and `stochastic_length.md`. `--smoke`: synthetic data, 2 epochs, CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG = "ml-1m/hstu-sampled-softmax-n128-final"
DEFAULT_OUT = ROOT / "benchmarks/results/h200_2026-12-01/stochastic_length"


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data/ml-1m-u2999")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--alphas", default="0,1.6,1.8,1.9", help="0 = SL off")
    p.add_argument("--seeds", default="42,1")
    p.add_argument("--epochs", type=int, default=101)
    p.add_argument(
        "--layout", default="auto", help="the trainer's layout: auto (padded + CUDA graph on a GPU)"
    )
    p.add_argument(
        "--smoke", action="store_true", help="synthetic data, 2 epochs, seed 42, alphas 0 and 1.6, CPU"
    )
    args = p.parse_args(argv)

    from hstu_tutorial.data import get_reco_dataset
    from hstu_tutorial.data.stochastic_length import expected_cost
    from hstu_tutorial.train import load_config, train

    config = "synthetic/hstu-small" if args.smoke else CONFIG
    alphas = [0.0, 1.6] if args.smoke else [float(a) for a in args.alphas.split(",")]
    seeds = [42] if args.smoke else [int(s) for s in args.seeds.split(",")]
    epochs = 2 if args.smoke else args.epochs
    cfg = load_config(config)
    if args.smoke:
        ds = get_reco_dataset("synthetic", cfg.max_seq_len, protocol=cfg.protocol, verbose=False)
    else:
        ds = get_reco_dataset(
            "ml-1m",
            cfg.max_seq_len,
            args.data_dir,
            protocol=cfg.protocol,
            stable_sort=cfg.stable_sort,
            verbose=False,
        )
    lengths = ds.train.lengths
    expected = {a: expected_cost(lengths, a, cfg.max_seq_len) for a in alphas if a}
    common = dict(
        num_epochs=epochs,
        layout=args.layout,
        progress=False,
        tensorboard=False,
        save_checkpoints=False,
        exp_dir=str(Path(args.out) / "exps"),
    )
    if args.smoke:
        common["device"] = "cpu"
    runs = []
    for seed in seeds:
        for alpha in alphas:
            t0 = time.perf_counter()
            r = train(
                config,
                dataset=ds,
                seed=seed,
                stochastic_length_alpha=alpha,
                name=f"sl-{alpha:g}-s{seed}",
                verbose=False,
                **common,
            )
            kept = r["trainer"].sl_tokens_kept
            ref = r["reference_protocol"]
            runs.append(
                {
                    "alpha": alpha,
                    "seed": seed,
                    "epochs": r["epochs_run"],
                    "window": ref["epochs"],
                    "test": {k: ref["test_mean"][k] for k in ("hr@10", "ndcg@10")},
                    "tokens_kept": statistics.mean(kept) if kept else 1.0,
                    "train_s": round(r["timing"]["train_s"], 2),
                    "train_eval_s": round(r["timing"]["train_eval_s"], 2),
                    "run_s": round(time.perf_counter() - t0, 1),
                    "layout": r["layout"],
                    "cuda_graphs": r["cuda_graphs"],
                    "device": r["device"],
                }
            )
            x = runs[-1]
            print(
                f"alpha {alpha:g} seed {seed}: HR@10 {x['test']['hr@10']:.4f} NDCG@10 {x['test']['ndcg@10']:.4f}, "
                f"tokens kept {x['tokens_kept']:.3f}, train {x['train_s']} s",
                flush=True,
            )
    out = write(runs, expected, args, argv, config, seeds, epochs, ds)
    print((out / "stochastic_length.md").read_text())
    return out


def write(runs, expected, args, argv, config, seeds, epochs, ds) -> Path:
    """stochastic_length.json (every run, the expected shares) and stochastic_length.md (the table)."""
    import torch

    machine = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "CPU"
    lengths = ds.train.lengths
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "torch": torch.__version__,
        "config": config,
        "data": "synthetic" if args.smoke else args.data_dir,
        "epochs": epochs,
        "seeds": seeds,
        "train_users": len(ds.train),
        "train_tokens": ds.train.num_tokens,
        "users_at_cap": float((lengths == ds.max_seq_len).double().mean()),
        "max_seq_len": ds.max_seq_len,
        "metrics": "test, mean of epochs {}-{} (the trainer's reference protocol)".format(*runs[0]["window"]),
        "expected": {str(a): e for a, e in expected.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stochastic_length.json").write_text(json.dumps({**meta, "runs": runs}, indent=1))
    first = runs[0]
    lines = [
        f"# Stochastic Length on {meta['data']} ({machine}, {meta['date']})",
        "",
        f"{config}, {epochs} epochs, seeds {seeds}, layout {first['layout']} "
        f"(CUDA graph: {'on' if first['cuda_graphs'] else 'off'}); {meta['metrics']}, mean ± std over seeds. "
        f"N = max_seq_len = {ds.max_seq_len}; {meta['train_users']} training users, {meta['train_tokens']} "
        f"training tokens, {meta['users_at_cap']:.0%} of the histories at the cap N.",
        "",
        "| alpha | L = floor(N^(alpha/2)) | users above L | tokens kept (expected) | tokens kept (drawn) "
        "| attention cost kept (expected) | HR@10 | NDCG@10 | train s per run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ms(vals):
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    for alpha in dict.fromkeys(r["alpha"] for r in runs):
        rs = [r for r in runs if r["alpha"] == alpha]
        (h, hs), (n, ns) = ms([r["test"]["hr@10"] for r in rs]), ms([r["test"]["ndcg@10"] for r in rs])
        t, ts = ms([r["train_s"] for r in rs])
        drawn = statistics.mean(r["tokens_kept"] for r in rs)
        e = expected.get(alpha)
        cols = (
            [f"{e['threshold']}", f"{e['users_above_threshold']:.0%}", f"{e['tokens_kept']:.3f}"]
            if e
            else ["-", "-", "1"]
        )
        att = f"{e['attention_kept']:.3f}" if e else "1"
        name = f"{alpha:g}" if alpha else "off"
        lines.append(
            f"| {name} | {' | '.join(cols)} | {drawn:.3f} | {att} | {h:.4f} ± {hs:.4f} | {n:.4f} ± {ns:.4f} "
            f"| {t:.1f} ± {ts:.1f} |"
        )
    lines += [
        "",
        "Notes:",
        "",
        "- tokens kept (drawn): the share of training tokens the per-epoch draws kept, averaged over epochs and "
        "seeds; expected: from the rule (`hstu_tutorial.data.stochastic_length.expected_cost`).",
        "- ML-1M histories are capped at N = max_seq_len, so alpha acts on short sequences: the attention cost "
        "SL saves is that of sequences of at most N tokens. In the padded layout (the trainer's default on a GPU, "
        "needed by the CUDA graph) every batch keeps its B x N shape, so a cut history saves no time there; the "
        "jagged layout (`--layout jagged`) computes only the kept tokens.",
        "",
        "Command:",
        "",
        "    python benchmarks/bench_stochastic_length.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    ]
    (out / "stochastic_length.md").write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
