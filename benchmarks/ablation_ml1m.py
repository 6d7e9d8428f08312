"""The ablation study of exercise 09 at full size: the paper's ML-1M HSTU and four variants, on one GPU.

    PYTHONPATH=. python benchmarks/ablation_ml1m.py --data-dir data/ml-1m-u2999 \
        --out benchmarks/results/h200_2026-12-01/ablation

Variants (`hstu_tutorial.checks.ablation.VARIANTS`): the default HSTU, no positional bias, no time bias, no
gate (`o = LayerNorm(A v)`), softmax instead of SiLU. Each is trained with the same seeds and budget under
the validation protocol (the test split is never used for choosing); the table reports the test metrics at
the epoch with the best validation NDCG@10, mean and standard deviation over seeds, and the change against
the default. Writes `ablation.json` (per run: variant, seed, overrides, metrics, seconds) and `ablation.md`.
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


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data/ml-1m-u2999")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/h200_2026-12-01/ablation"))
    p.add_argument("--seeds", default="42,1")
    p.add_argument("--epochs", type=int, default=101)
    p.add_argument("--smoke", action="store_true", help="synthetic data, 1 epoch, one seed, CPU")
    args = p.parse_args(argv)

    from hstu_tutorial.checks.ablation import VARIANTS
    from hstu_tutorial.data import get_reco_dataset
    from hstu_tutorial.train import load_config, train

    config = "synthetic/hstu-small" if args.smoke else CONFIG
    seeds = [42] if args.smoke else [int(s) for s in args.seeds.split(",")]
    epochs = 1 if args.smoke else args.epochs
    cfg = load_config(config)
    if args.smoke:
        ds = get_reco_dataset("synthetic", cfg.max_seq_len, protocol="validation", verbose=False)
    else:
        ds = get_reco_dataset("ml-1m", cfg.max_seq_len, args.data_dir, protocol="validation", verbose=False)
    common = dict(
        num_epochs=epochs,
        protocol="validation",
        progress=False,
        tensorboard=False,
        save_checkpoints=False,
        exp_dir=str(Path(args.out) / "exps"),
    )
    runs = []
    for seed in seeds:
        for variant, overrides in VARIANTS.items():
            t0 = time.perf_counter()
            r = train(
                config,
                dataset=ds,
                seed=seed,
                name=f"ablation-{variant}-s{seed}",
                verbose=False,
                **common,
                **overrides,
            )
            best = r["best_by_valid"]
            runs.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "overrides": overrides,
                    "epochs": r["epochs_run"],
                    "best_epoch": best.get("epoch"),
                    "test": best["test"],
                    "valid": best["valid"],
                    "attention_impl": r.get("attention_impl"),
                    "seconds": round(time.perf_counter() - t0, 1),
                }
            )
            print(
                f"{variant:>13} seed {seed}: test HR@10 {best['test']['hr@10']:.4f} NDCG@10 "
                f"{best['test']['ndcg@10']:.4f} ({runs[-1]['attention_impl']}, {runs[-1]['seconds']} s)",
                flush=True,
            )
    out = write(runs, args, argv, config, seeds, epochs)
    print((out / "ablation.md").read_text())
    return out


def write(runs, args, argv, config, seeds, epochs) -> Path:
    """Write ablation.json and ablation.md from the runs so far (called after every run)."""
    import torch

    from hstu_tutorial.checks.ablation import VARIANTS

    machine = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "torch": torch.__version__,
        "config": config,
        "data": "synthetic" if args.smoke else args.data_dir,
        "protocol": "validation",
        "epochs": epochs,
        "seeds": seeds,
        "runs_done": len(runs),
        "metrics": "test at the epoch of best validation ndcg@10",
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({**meta, "runs": runs}, indent=1))
    lines = [
        f"# HSTU ablations ({machine}, {meta['date']})",
        "",
        f"{config} on {meta['data']}, validation protocol, {epochs} epochs, seeds {seeds}; {meta['metrics']}.",
        "",
        "| variant | HR@10 | NDCG@10 | ΔHR@10 | ΔNDCG@10 | seconds per run |",
        "|---|---|---|---|---|---|",
    ]

    def stats(variant, key):
        vals = [r["test"][key] for r in runs if r["variant"] == variant]
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    for variant in VARIANTS:
        if not any(r["variant"] == variant for r in runs):
            continue
        (h, hs), (n, ns) = stats(variant, "hr@10"), stats(variant, "ndcg@10")
        h0, n0 = stats("default", "hr@10")[0], stats("default", "ndcg@10")[0]
        secs = statistics.mean(r["seconds"] for r in runs if r["variant"] == variant)
        lines.append(
            f"| {variant} | {h:.4f} ± {hs:.4f} | {n:.4f} ± {ns:.4f} | {h - h0:+.4f} | {n - n0:+.4f} | {secs:.1f} |"
        )
    lines += ["", "Command:", "", "    python benchmarks/ablation_ml1m.py " + " ".join(argv or sys.argv[1:])]
    (out / "ablation.md").write_text("\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    main()
