"""GPU check of the data loader: device-resident and pinned batches equal the CPU ones; loader speed.

Run on a CUDA machine: python benchmarks/check_data_gpu.py [data_dir_with_ml1m_files]
"""

import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial.data import get_reco_dataset  # noqa: E402


def same(a, b):
    return all(
        torch.equal(getattr(a, f).cpu(), getattr(b, f).cpu())
        for f in ("user_ids", "item_ids", "ratings", "timestamps", "offsets", "lengths", "target_item_ids")
    )


def main():
    assert torch.cuda.is_available(), "needs a CUDA GPU"
    folder = sys.argv[1] if len(sys.argv) > 1 else None
    ds = (
        get_reco_dataset("ml-1m", 200, folder, download_ok=False)
        if folder
        else get_reco_dataset("synthetic", 200, tempfile.mkdtemp(), synthetic_size="small")
    )
    for split in ("train", "test"):
        cpu = list(ds.loader(split, 128, shuffle=True, seed=5))
        res = list(ds.loader(split, 128, shuffle=False, device="cuda"))
        ref = list(ds.loader(split, 128, shuffle=False))
        pin = list(ds.loader(split, 128, shuffle=False, device="cuda", resident=False))
        assert all(same(a, b) for a, b in zip(ref, res)) and all(same(a, b) for a, b in zip(ref, pin))
        assert res[0].item_ids.is_cuda and pin[0].item_ids.is_cuda
        users = torch.cat([b.user_ids for b in ds.loader(split, 128, shuffle=True, device="cuda")])
        assert sorted(users.tolist()) == sorted(getattr(ds, split).user_ids.tolist())
        print(
            f"{split}: resident and pinned batches == CPU batches; a shuffled GPU epoch covers every user "
            f"once ({len(cpu)} batches)"
        )
    print("| mode | batches | ms per epoch | batches/s |")
    print("| --- | --- | --- | --- |")
    for label, kw in (
        ("cpu", {}),
        ("cuda resident", {"device": "cuda"}),
        ("cuda pinned copies", {"device": "cuda", "resident": False}),
    ):
        loader = ds.loader("train", 128, shuffle=True, **kw)
        list(loader)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            for _ in loader:
                pass
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / 5
        print(f"| {label} | {len(loader)} | {dt * 1e3:.1f} | {len(loader) / dt:,.0f} |")


if __name__ == "__main__":
    main()
