"""Tune the Triton attention tiles of every shape class the shipped configs and the benchmarks use on
this GPU, and write the tile table the package ships for its GPU family.

    PYTHONPATH=. python benchmarks/tune_tiles.py --data-dir data/ml-1m-u2999 --budget 240   # on a GPU
    PYTHONPATH=. python benchmarks/tune_tiles.py --small --out /tmp/tiles.json              # CPU check

Work units, in this order until the time budget is spent (a started unit finishes):
  * each config of --configs (`name[:key=value,...]`): the trainer is built as the config says, runs one
    eager training step (forward + backward) and one evaluation pass over the validation users, so every
    shape class a real run of that config launches is tuned;
  * the benchmark shapes of benchmarks/bench_attention.py (bf16, causal, H=4, d=128, N in --lengths,
    ~65k tokens per call, dQ by kernel and by atomics): one forward + backward each.
Every shape class is timed in this process (`tuning="tune"`: table and cache ignored). The table is
rewritten after every unit (atomically), so a run cut short still leaves what it tuned; entries of an
existing table at --out that were not tuned again are kept unless --fresh.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CONFIGS = [
    "ml-1m/hstu-sampled-softmax-n128-final",  # the README's command first
    "ml-1m/hstu-sampled-softmax-n128-large-final",
    "synthetic/hstu-small",
    "ml-1m/hstu-sampled-softmax-n128-final:bf16=true",
    "ml-1m/hstu-sampled-softmax-n128-large-final:bf16=true",
]


def parse_config_spec(spec: str) -> tuple[str, dict]:
    """ "name:key=value,key=value" -> (name, {key: value as a TOML-ish literal string})."""
    name, _, rest = spec.partition(":")
    overrides = [kv for kv in rest.split(",") if kv]
    return name, overrides


def config_unit(spec: str, data_dir: str, device: torch.device, exp_dir: str, small: bool) -> str:
    """Build the trainer of one config, one eager step and one validation pass; returns a note."""
    from hstu_tutorial.training.config import load_config
    from hstu_tutorial.training.trainer import Trainer

    name, overrides = parse_config_spec(spec)
    base = dict(
        device=device.type, progress=False, tensorboard=False, save_checkpoints=False, exp_dir=exp_dir
    )
    if small:  # tiny model and lengths: the interpreter runs every candidate tile
        base.update(
            max_seq_len=20,
            embedding_dim=16,
            dqk=16,
            dv=16,
            ffn_hidden=16,
            attention_impl="triton",
            batch_size=8,
            eval_batch_size=64,
        )
    cfg = load_config(name, overrides)
    if data_dir and cfg.dataset != "synthetic":
        base["data_dir"] = data_dir
    cfg = load_config(name, list(overrides) + [f"{k}={_toml(v)}" for k, v in base.items()])
    if cfg.model != "hstu":
        return "not an HSTU config: no Triton attention"
    tr = Trainer(cfg, verbose=False)
    if tr.attention_impl != "triton":
        return f"attention_impl={tr.attention_impl}: nothing to tune"
    users = tr.splits["train"].num_users
    index = torch.arange(min(cfg.batch_size, users), device=tr.device)  # (B,)
    tr.step(index).item()
    tr.ranks("valid")
    return f"layout {tr.layout}, one step + validation"


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v) if isinstance(v, (int, float)) else f'"{v}"'


def bench_unit(N: int, dq_mode: str, device: torch.device, tokens: int, H: int, d: int, dtype) -> str:
    """One forward + backward at a benchmark shape (all sequences of length N, causal, no bias)."""
    from hstu_tutorial.ops import use_options
    from hstu_tutorial.ops.triton import triton_hstu_attention

    B = max(1, tokens // N)
    offsets = torch.arange(B + 1, device=device, dtype=torch.int64) * N  # (B+1,)
    q, k, v = (torch.randn(B * N, H, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    with use_options(dq_mode=dq_mode):
        out = triton_hstu_attention(q, k, v, offsets, max_len=N)  # (B*N, H, d)
        out.float().sum().backward()
    return f"B={B} N={N} H={H} d={d} {str(dtype).removeprefix('torch.')} dq_mode={dq_mode}"


def write_table(path: Path, store, keep: dict, device_name: str) -> int:
    """Tuned entries of this process plus `keep` (older ones not tuned again), written atomically."""
    import triton

    from hstu_tutorial.ops.triton import tiles

    tuned = {k: t for k, (t, src) in store.chosen.items() if src == "tuned"}
    header = {
        "gpu": store.gpu,
        "device": device_name,
        "triton": triton.__version__,
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        "written_by": "benchmarks/tune_tiles.py",
    }
    tiles.write_tile_file(path, {**keep, **tuned}, header)
    return len(tuned)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="", help="table file (default: the package's tiles_<gpu>.json)")
    ap.add_argument("--data-dir", default="", help="data_dir of the ML-1M configs, e.g. data/ml-1m-u2999")
    ap.add_argument(
        "--configs", default=";".join(DEFAULT_CONFIGS), help="';'-separated config specs name[:key=value,...]"
    )
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192", help="benchmark lengths ('' = none)")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per benchmark call")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds; no unit starts after that")
    ap.add_argument("--fresh", action="store_true", help="drop the entries of an existing table")
    ap.add_argument(
        "--small",
        action="store_true",
        help="CPU, Triton interpreter: tiny shapes (checks this script; the tiles it writes mean nothing)",
    )
    args = ap.parse_args(argv)
    t_start = time.perf_counter()

    from hstu_tutorial.ops import set_options
    from hstu_tutorial.ops.triton import hstu_attention_autograd as tha
    from hstu_tutorial.ops.triton import tiles

    if args.small:
        if not tha.is_interpreter():
            raise SystemExit("--small runs in the Triton interpreter: set TRITON_INTERPRET=1")
        if not args.out:
            raise SystemExit("--small needs --out (its tiles must not replace a real table)")
        device, device_name = torch.device("cpu"), "cpu (Triton interpreter)"
        store = tiles.TileStore("interpreter", device_name, "interpreter", table_dir=None, cache_dir=None)
        tha._tune = lambda opts: opts.autotune  # drive the autotuner through the interpreter
        tha._tile_store = lambda dev: store
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA GPU: tune_tiles.py times tiles on a GPU (--small checks it on a CPU)")
        device = torch.device("cuda")
        device_name = torch.cuda.get_device_name(device)
        store = tiles.store_for(device)
    out = Path(args.out or tiles.TABLE_DIR / f"tiles_{store.gpu}.json")
    keep = {} if args.fresh else tiles.read_tile_file(out, "tile table")
    set_options(autotune=True, tuning="tune")  # every shape class is timed here, table and cache ignored

    units = [("config", spec) for spec in args.configs.split(";") if spec]
    lengths = [int(n) for n in args.lengths.split(",") if n]
    bench_shape = (4, 128, torch.bfloat16) if not args.small else (1, 16, torch.float32)
    if args.small:
        lengths = [min(n, 32) for n in lengths[:1]]
    units += [("bench", (n, mode)) for n in lengths for mode in ("kernel", "atomic")]
    print(
        f"tune_tiles: {device_name}, triton {__import__('triton').__version__}, torch {torch.__version__}, "
        f"budget {args.budget:.0f} s, {len(units)} units -> {out}",
        flush=True,
    )
    print(f"{'unit':<62} {'tune s':>7} {'wall s':>7} {'new':>4}  note", flush=True)
    skipped = []
    with tempfile.TemporaryDirectory(prefix="tune_tiles_") as exp_dir:
        for kind, what in units:
            if time.perf_counter() - t_start > args.budget:
                skipped.append(what)
                continue
            before, tune0, t0 = len(store.chosen), tiles.tuning_seconds(), time.perf_counter()
            try:
                if kind == "config":
                    note = config_unit(what, args.data_dir, device, exp_dir, args.small)
                else:
                    tokens = min(args.tokens, 64) if args.small else args.tokens
                    note = bench_unit(what[0], what[1], device, tokens, *bench_shape)
            except Exception as err:  # noqa: BLE001 - a unit that cannot run (no data) skips, loudly
                note = f"SKIPPED: {type(err).__name__}: {' '.join(str(err).split())[:150]}"
            label = what if kind == "config" else f"bench N={what[0]} dq_mode={what[1]}"
            print(
                f"{str(label)[:62]:<62} {tiles.tuning_seconds() - tune0:7.1f} "
                f"{time.perf_counter() - t0:7.1f} {len(store.chosen) - before:4d}  {note}",
                flush=True,
            )
            n = write_table(out, store, keep, device_name)
    n = write_table(out, store, keep, device_name)
    print(
        f"\n{n} shape classes tuned in {tiles.tuning_seconds():.1f} s of tuning "
        f"({time.perf_counter() - t_start:.1f} s in all); table {out} holds "
        f"{len(tiles.read_tile_file(out, 'tile table'))} entries",
        flush=True,
    )
    if skipped:
        print(f"budget spent, not run: {', '.join(str(s) for s in skipped)}", flush=True)
    for key, (t, src) in sorted(store.chosen.items()):
        print(f"  {key:<70} {t['BLOCK_M']:>4} {t['BLOCK_N']:>4} w{t['num_warps']} s{t['num_stages']}  {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
