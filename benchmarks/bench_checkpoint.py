"""What the per-epoch `ckpt_last.pt` costs: milliseconds per atomic write and file size, next to an epoch.

    python benchmarks/bench_checkpoint.py                       # synthetic/hstu-small on the CPU
    python benchmarks/bench_checkpoint.py --config ml-1m/hstu-sampled-softmax-n128-final --device cuda

The trainer writes ckpt_last.pt after every epoch (temporary file, flush + fsync, os.replace), so that a
hard kill loses at most one epoch. This script trains one epoch of the config, then times `--repeats`
writes of the resume checkpoint and of the best-weights file, and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from hstu_tutorial.training.checkpoints import save_best, save_checkpoint
from hstu_tutorial.training.config import load_config
from hstu_tutorial.training.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="synthetic/hstu-small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            args.config,
            num_epochs=1,
            device=args.device,
            exp_dir=tmp,
            tensorboard=False,
            progress=False,
            save_checkpoints=False,
            timestamp_run_dir=False,
        )
        trainer = Trainer(cfg, verbose=False)
        res = trainer.fit()  # one epoch: the optimizer state exists, as it does after every epoch
        epoch_s = res["timing"]["train_eval_s"]
        rows = []
        for label, write, name in (
            (
                "ckpt_last.pt (resume)",
                lambda: save_checkpoint(trainer, trainer.run_dir / "ckpt_last.pt"),
                "ckpt_last.pt",
            ),
            ("ckpt_best.pt (weights)", lambda: save_best(trainer, 0), "ckpt_best.pt"),
        ):
            write()  # warm-up (first write allocates the file)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                write()
                times.append((time.perf_counter() - t0) * 1e3)
            size = (trainer.run_dir / name).stat().st_size
            rows.append((label, statistics.median(times), min(times), size))
    device = (
        torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"config {args.config}, device {device}, one epoch (train + eval) {epoch_s * 1e3:.0f} ms, "
        f"{args.repeats} writes\n"
    )
    print("| file | median ms / write | min ms | size | share of an epoch |")
    print("|---|---|---|---|---|")
    for label, med, best, size in rows:
        print(f"| {label} | {med:.1f} | {best:.1f} | {size / 1024:.0f} KiB | {med / (epoch_s * 1e3):.1%} |")


if __name__ == "__main__":
    main()
