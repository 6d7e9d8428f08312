"""Preprocessing and loading speed of hstu_tutorial.data: prints a table.

Run: python benchmarks/bench_data.py

For each dataset present: parse the raw files, sort per user, build the three splits (one `get_reco_dataset`
call, the best of 3), then one pass of the train loader (batch 128, shuffled) on the CPU and, when a GPU is
there, with the split resident on the GPU. MovieLens copies are looked up in data/ (never downloaded here).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hstu_tutorial.data import generate_synthetic, get_reco_dataset  # noqa: E402


def best_of(fn, n=3):
    best, out = float("inf"), None
    for _ in range(n):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def loader_pass(ds, device):
    loader = ds.loader("train", 128, shuffle=True, device=device)
    next(iter(loader))  # warm-up (and the one-time copy of the split to the device)
    if device != "cpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    tokens = 0
    for b in loader:
        tokens += b.num_tokens
    if device != "cpu":
        torch.cuda.synchronize()
    return len(loader), tokens, time.perf_counter() - t0


def main():
    torch.set_num_threads(2)
    cases = []
    for name, folder in (
        ("ml-1m", ROOT / "data" / "ml-1m"),
        ("ml-1m", ROOT / "data" / "ml-1m-u2999"),
        ("ml-100k", ROOT / "data" / "ml-100k"),
    ):
        if folder.is_dir():
            cases.append((name, folder, {}))
    tmp = Path(tempfile.mkdtemp())
    for size in ("ci", "small", "ml-1m"):
        t0 = time.perf_counter()
        generate_synthetic(size, 0, tmp, verbose=False)
        print(f"generate synthetic-{size}: {time.perf_counter() - t0:.2f} s")
        cases.append(("synthetic", tmp, {"synthetic_size": size}))
    rows = []
    for name, folder, kw in cases:
        load = lambda name=name, folder=folder, kw=kw: get_reco_dataset(
            name, 200, folder, verbose=False, download_ok=False, **kw
        )
        sec, ds = best_of(load)
        s = ds.stats()
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        speed = []
        for dev in devices:
            nb, tok, t = loader_pass(ds, dev)
            speed.append(f"{dev}: {nb} batches {t * 1e3:.0f} ms ({nb / t:,.0f} batch/s)")
        label = folder.name if name != "synthetic" else f"synthetic-{kw['synthetic_size']}"
        rows.append(
            (
                label,
                s["users"],
                s["rated_items"],
                s["interactions"],
                s["catalogue"],
                s["num_items"],
                sec,
                "; ".join(speed),
            )
        )
    print(
        f"\nmachine: {torch.get_num_threads()} torch threads, "
        f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}"
    )
    print("| data | users | rated items | interactions | catalogue | max id | load s | train loader pass |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r[0]} | {r[1]:,} | {r[2]:,} | {r[3]:,} | {r[4]:,} | {r[5]} | {r[6]:.2f} | {r[7]} |")


if __name__ == "__main__":
    main()
