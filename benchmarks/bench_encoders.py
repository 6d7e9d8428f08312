"""Time one training step's forward + backward of the HSTU and SASRec encoders (ML-1M shapes).

    python benchmarks/bench_encoders.py [--batch 128] [--iters 30] [--data data/ml-1m-u2999]

Lengths come from a MovieLens ratings.dat when one is found (histories capped at max_seq_len, as the
training split), otherwise from a log-normal stand-in. Prints a table: ms per step, tokens/s, and
whether the forward pass made a host synchronisation (it must not).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import torch

from hstu_tutorial.modules import hstu_encoder, sasrec_encoder
from hstu_tutorial.perf import random_jagged_batch


def history_lengths(data: Path | None, max_seq_len: int, n: int, seed: int = 0) -> torch.Tensor:
    if data is not None and (data / "ratings.dat").exists():
        with open(data / "ratings.dat", encoding="latin-1") as f:
            counts = Counter(line.split("::", 1)[0] for line in f)
        lengths = torch.tensor([min(c - 2, max_seq_len) for c in counts.values() if c > 2])
    else:
        g = torch.Generator().manual_seed(seed)
        lengths = torch.exp(torch.randn(n, generator=g) * 0.9 + 4.4).long().clamp(1, max_seq_len)
    return lengths


def _autocast(device_type, dtype):
    return torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None)


def step(model, batch, autocast_dtype):
    with _autocast(batch.item_ids.device.type, autocast_dtype):
        out = model(batch)  # (T, D)
        loss = (out * model.item_embeddings(batch.item_ids)).sum()
    loss.backward()


def time_model(model, batches, autocast_dtype, iters):
    dev = batches[0].item_ids.device
    for b in batches[:3]:  # warm-up (kernel selection, Triton compilation)
        step(model, b, autocast_dtype)
    sync_free = True
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with _autocast("cuda", autocast_dtype):
                model(batches[0])
        except RuntimeError:
            sync_free = False
        torch.cuda.set_sync_debug_mode("default")
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(iters):
        step(model, batches[i % len(batches)], autocast_dtype)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / iters, sync_free


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--max-seq-len", type=int, default=200)
    p.add_argument("--data", type=Path, default=Path("data/ml-1m-u2999"))
    p.add_argument("--impls", default="pytorch,triton")
    args = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    all_lengths = history_lengths(args.data, args.max_seq_len, 6040)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(all_lengths.numel(), generator=g)
    batches = [
        random_jagged_batch(all_lengths[perm[i : i + args.batch]], args.max_seq_len, 3952, dev, seed=i)
        for i in range(0, min(all_lengths.numel(), 8 * args.batch), args.batch)
    ]
    steps_per_epoch = -(-all_lengths.numel() // args.batch)
    print(
        f"device: {torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}; {all_lengths.numel()} "
        f"histories, mean length {all_lengths.float().mean():.1f}, pad width {args.max_seq_len}, "
        f"batch {args.batch} ({steps_per_epoch} steps/epoch)"
    )
    print(f"{'model':<28}{'precision':<11}{'ms/step':>9}{'tokens/s':>12}{'epoch fwd+bwd s':>17}  no-sync fwd")
    tokens = sum(int(b.lengths.sum()) for b in batches) / len(batches)
    configs = []
    for impl in args.impls.split(","):
        configs.append((f"HSTU ({impl})", lambda impl=impl: hstu_encoder(3952, attention_impl=impl)))
    large = dict(num_blocks=8, num_heads=2, dqk=25, dv=25)
    configs.append(("HSTU-large (pytorch)", lambda: hstu_encoder(3952, **large)))
    configs.append(("SASRec", lambda: sasrec_encoder(3952)))
    for name, build in configs:
        for dtype in (None, torch.bfloat16):
            torch.manual_seed(0)
            model = build().to(dev).train()
            try:
                sec, sync_free = time_model(model, batches, dtype, args.iters)
            except Exception as e:  # e.g. no Triton kernel yet
                precision = "bf16" if dtype else "fp32"
                print(f"{name:<28}{precision:<11} failed: {type(e).__name__}: {str(e)[:80]}")
                continue
            print(
                f"{name:<28}{'bf16' if dtype else 'fp32/tf32':<11}{sec * 1e3:>9.2f}{tokens / sec:>12.3g}"
                f"{sec * steps_per_epoch:>17.2f}  {sync_free}"
            )


if __name__ == "__main__":
    main()
