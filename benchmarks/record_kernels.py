"""Record the Triton kernel specialisations each shipped ML-1M config launches, for `hstu_tutorial.precompile`.

Each config runs one epoch (graph capture, steps, evaluation) in a fresh process with the shipped tile
table, and every kernel of the package compiled there is recorded. The table is written to
`hstu_tutorial/ops/triton/kernels_<gpu>.json` (and to `--out`), keyed by the config name a command line
gives, for this GPU family and Triton version only:

    PYTHONPATH=. python3 benchmarks/record_kernels.py --data-dir data/ml-1m-u2999 [--out DIR]
    PYTHONPATH=. python3 benchmarks/record_kernels.py --data-dir data/ml-1m-u2999 --check   # exit 1 if stale

Re-record after changing a kernel or how it is launched (a new argument, a width that becomes a multiple of 16):
a stale entry only costs time, the kernel then compiles inside the run (~2 s on an H200), so nothing else
notices it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = [
    "ml-1m/hstu-sampled-softmax-n128-final",
    "ml-1m/hstu-sampled-softmax-n128-large-final",
    "ml-1m/sasrec-sampled-softmax-n128-final",
]


def record_one(config: str, data_dir: str, out_json: str) -> None:
    """One epoch of `config` in this process, recording every compile of the package's kernels."""
    from hstu_tutorial.precompile import Recorder
    from hstu_tutorial.train import Trainer, load_config

    overrides = {
        "data_dir": data_dir,
        "num_epochs": 1,
        "progress": False,
        "tensorboard": False,
        "save_checkpoints": False,
        "exp_dir": tempfile.mkdtemp(),
    }
    with Recorder() as rec:
        Trainer(load_config(config, overrides), verbose=False).fit()
    Path(out_json).write_text(json.dumps(rec.entries))


def stale_configs(shipped: dict | None, recorded: dict) -> dict[str, str]:
    """{config: why} for each recorded config whose kernels the shipped table does not list exactly (a run
    of it then compiles those kernels inside the process, as without a table)."""
    if shipped is None:
        return {config: "no table" for config in recorded["runs"]}
    if shipped.get("triton") != recorded["triton"]:
        return {config: f"Triton {shipped.get('triton')} in the table" for config in recorded["runs"]}
    stale = {}
    for config, entries in recorded["runs"].items():
        old = shipped.get("runs", {}).get(config)
        if old is None:
            stale[config] = "not in the table"
        elif old != entries:
            changed = {e["kernel"].rsplit(".", 1)[1] for e in entries if e not in old}
            changed |= {e["kernel"].rsplit(".", 1)[1] for e in old if e not in entries}
            stale[config] = "specialisations differ: " + ", ".join(sorted(changed))
    return stale


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="data/ml-1m-u2999")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: record this config
    ap.add_argument("--json", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=os.environ.get("OUT", ""))
    ap.add_argument(
        "--check",
        action="store_true",
        help="compare with the shipped table instead of writing it; exit 1 when a config's kernels differ",
    )
    args = ap.parse_args()
    if args.one:
        record_one(args.one, args.data_dir, args.json)
        return 0
    import torch
    import triton

    from hstu_tutorial.ops.triton.tiles import gpu_family
    from hstu_tutorial.precompile import FORMAT, TABLE_DIR

    gpu = gpu_family(0)
    runs = {}
    for config in args.configs.split(","):
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            path = f.name
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "--one", config, "--json", path, "--data-dir", args.data_dir]
        subprocess.run(cmd, check=True)
        runs[config] = json.loads(Path(path).read_text())
        names = sorted({e["kernel"].rsplit(".", 1)[1] for e in runs[config]})
        print(
            f"| {config} | {len(runs[config])} compiles | {', '.join(names)} | {time.perf_counter() - t0:.1f} s |"
        )
    table = {
        "format": FORMAT,
        "gpu": gpu,
        "device": torch.cuda.get_device_name(0),
        "triton": triton.__version__,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "written_by": "benchmarks/record_kernels.py",
        "runs": runs,
    }
    text = json.dumps(table, indent=1) + "\n"
    shipped = TABLE_DIR / f"kernels_{gpu}.json"
    stale = stale_configs(json.loads(shipped.read_text()) if shipped.is_file() else None, table)
    for config, why in stale.items():
        print(f"{config}: the shipped table is stale ({why})")
    if args.check:
        print("shipped kernel table: " + ("STALE (run this script without --check)" if stale else "current"))
        return 1 if stale else 0
    shipped.write_text(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"kernels_{gpu}.json").write_text(text)
    print(f"wrote {TABLE_DIR / f'kernels_{gpu}.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
