"""The command behind sparse_kernel_time.txt (run on the H200 as `PYTHONPATH=. python3 -`, 2026-12-01): the summed
GPU time of the kernels of one eager call of the dense (padded) and the sparse sampled softmax, at the step's
shape. `benchmarks/bench_loss.py` now reports the same figure for every variant (its `kernel ms` column)."""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, "benchmarks")
import bench_loss  # noqa: E402

torch.backends.cuda.matmul.allow_tf32 = True
inp = bench_loss.make_inputs(17344, 50, 3883, 128, torch.device("cuda"))
for v in ("dense, padded", "sparse"):
    for _ in range(3):
        bench_loss.run(v, inp)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            bench_loss.run(v, inp)
        torch.cuda.synchronize()
    ev = [e for e in prof.key_averages() if e.self_device_time_total > 0]
    tot = sum(e.self_device_time_total for e in ev) / 10 / 1e3
    top = sorted(ev, key=lambda e: -e.self_device_time_total)[:5]
    print(f"{v}: GPU kernel time per call {tot:.3f} ms; top:",
          [(e.key[:40], round(e.self_device_time_total / 10 / 1e3, 3)) for e in top])  # fmt: skip
