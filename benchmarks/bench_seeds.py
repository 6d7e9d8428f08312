"""Four seeds in one process against one run: `hstu-train --seeds 42,1,2,3` should take at most 1.5x the time
of a single run of seed 42 (training/multi_seed.py: the seeds' CUDA-graph steps on their own streams).

    PYTHONPATH=. python benchmarks/bench_seeds.py --data-dir data/ml-1m-u2999       # GPU, 101 epochs
    PYTHONPATH=. python benchmarks/bench_seeds.py --data-dir data/ml-1m-u2999 --epochs 20
    PYTHONPATH=. python benchmarks/bench_seeds.py --smoke                             # CPU, synthetic, 2 epochs

For HSTU and SASRec (the ML-1M final configs), two cases, each a subprocess running exactly the command it
prints: (a) one run of seed 42, (b) `--seeds 42,1,2,3`. Times: the process from start to exit, and
train+eval (the runs' own clock: every epoch's steps and evaluation; for (b) the longest seed's, which
spans the whole rotation). Each case compiles its Triton kernels afresh (its own empty TRITON_CACHE_DIR),
so neither profits from the other's compilation. Prints one table, the ratios and the 4-seed summaries;
`--out DIR` also writes bench_seeds.json and bench_seeds.md there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.5  # (b) / (a), from process start

# (model, config) on a GPU with ML-1M, and the synthetic stand-ins for --smoke
MODELS = {
    "hstu": "ml-1m/hstu-sampled-softmax-n128-final",
    "sasrec": "ml-1m/sasrec-sampled-softmax-n128-final",
}
SMOKE = {"hstu": "synthetic/hstu-small", "sasrec": "synthetic/sasrec-small"}


def command(config: str, name: str, seeds: str | None, args, exp_dir: Path, seed: int = 42) -> list[str]:
    """The CLI command of one case (a list for subprocess; printed with shlex.join): `--seeds seeds`, or
    one run of `seed` when seeds is None."""
    cmd = [sys.executable, "-m", "hstu_tutorial.train", "--config", config]
    sets = [f"name={name}", f"exp_dir={exp_dir}", "timestamp_run_dir=false", "progress=false"]
    if args.smoke:
        sets += ["device=cpu", f"data_dir={exp_dir / 'data'}"]
    elif args.data_dir:
        sets.append(f"data_dir={args.data_dir}")
    if args.epochs:
        sets.append(f"num_epochs={args.epochs}")
    for pair in sets + args.extra:
        cmd += ["--set", pair]
    if seeds is not None:
        cmd += ["--seeds", seeds]
    else:
        cmd += ["--set", f"seed={seed}"]
    return cmd


def run_case(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> tuple[int | str, float]:
    """Run `cmd` (output to `log`); returns (exit status, seconds). `env`: the environment to run it in
    (default: this one with PYTHONPATH set and an empty Triton cache of its own, so no case profits from
    another's compiles)."""
    print("$ " + shlex.join(["python", *cmd[1:]]), flush=True)
    with contextlib.ExitStack() as stack, open(log, "w") as fh:
        if env is None:
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="triton-cache-"))
            env = dict(os.environ, PYTHONPATH=str(ROOT), TRITON_CACHE_DIR=cache)
        t0 = time.perf_counter()
        try:
            rc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, env=env, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        wall = time.perf_counter() - t0
    if rc != 0:
        print(f"   failed (exit {rc}, {wall:.0f} s); log tail:\n{log.read_text()[-2000:]}", flush=True)
    return rc, wall


def _results(exp_dir: Path, name: str) -> dict:
    (path,) = exp_dir.glob(f"*/{name}/results.json")
    return json.loads(path.read_text())


def _max_diff(a: list[dict], b: list[dict]) -> float | None:
    """The largest difference of an epoch's loss or metric between two histories (None: other lengths)."""
    if len(a) != len(b):
        return None
    diffs = [abs(ra["loss"] - rb["loss"]) for ra, rb in zip(a, b)]
    for ra, rb in zip(a, b):
        diffs += [abs(ra[s][k] - rb[s][k]) for s in ("valid", "test") for k in ra[s]]
    return max(diffs, default=0.0)


def bench_model(model: str, config: str, args, exp_dir: Path) -> dict:
    """Cases (a) and (b) of one model; returns their times, metrics and the 4-seed summary."""
    out = {"model": model, "config": config}
    name = f"bench-{model}"
    cmd_a = command(config, f"{name}-one", None, args, exp_dir)  # (b)'s seed 42 goes to {name}-s42
    rc, wall = run_case(cmd_a, exp_dir / f"{name}-a.log", args.timeout)
    out["a"] = {"command": shlex.join(["python", *cmd_a[1:]]), "exit": rc, "wall_s": wall}
    if rc == 0:
        res = _results(exp_dir, f"{name}-one")
        t = res["timing"]
        out["a"].update(train_eval_s=t["train_eval_s"], setup_s=t["setup_s"], tune_s=t["tune_s"])
        out["a"]["test_mean"] = res["reference_protocol"]["test_mean"]
    cmd_b = command(config, name, args.seeds, args, exp_dir)
    rc, wall = run_case(cmd_b, exp_dir / f"{name}-b.log", args.timeout)
    out["b"] = {"command": shlex.join(["python", *cmd_b[1:]]), "exit": rc, "wall_s": wall}
    if rc == 0:
        (path,) = exp_dir.glob(f"*/{name}-seeds/seeds.json")
        summary = json.loads(path.read_text())
        runs = [_results(exp_dir, f"{name}-s{s}") for s in summary["seeds"]]
        out["b"].update(
            train_eval_s=max(r["timing"]["train_eval_s"] for r in runs),
            setup_s=max(r["timing"]["setup_s"] for r in runs),
            tune_s=sum(r["timing"]["tune_s"] for r in runs),
            summary_md=(path.parent / "seeds.md").read_text(),
        )
        if out["a"]["exit"] == 0 and 42 in summary["seeds"]:
            alone = _results(exp_dir, f"{name}-one")["history"]
            out["b"]["seed42_max_diff"] = _max_diff(alone, runs[summary["seeds"].index(42)]["history"])
    if out["a"]["exit"] == 0 and out["b"]["exit"] == 0:
        out["ratio_wall"] = out["b"]["wall_s"] / out["a"]["wall_s"]
        out["ratio_train_eval"] = out["b"]["train_eval_s"] / out["a"]["train_eval_s"]
    return out


def markdown(rows: list[dict], args, device: str) -> str:
    n = len(args.seeds.split(","))
    lines = [
        f"# {n} seeds in one process against one run ({device}, {time.strftime('%Y-%m-%d')})",
        "",
        "| model | case | process s | train+eval s | setup s | tune s | (b)/(a) process | (b)/(a) train+eval |",
        "|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda v, p=1: "" if v is None else f"{v:.{p}f}"  # noqa: E731
    for r in rows:
        for case, label in (("a", "(a) seed 42"), ("b", f"(b) --seeds {args.seeds}")):
            c = r[case]
            ratios = ["", ""]
            if case == "b" and "ratio_wall" in r:
                ratios = [f"{r['ratio_wall']:.2f}x", f"{r['ratio_train_eval']:.2f}x"]
            if c["exit"] != 0:
                ratios = [f"failed (exit {c['exit']})", ""]
            lines.append(
                f"| {r['model']} | {label} | {fmt(c['wall_s'])} | {fmt(c.get('train_eval_s'))} | "
                f"{fmt(c.get('setup_s'))} | {fmt(c.get('tune_s'))} | " + " | ".join(ratios) + " |"
            )
    lines += ["", f"Target: (b)/(a) from process start at most {TARGET}x.", "", "Commands:", ""]
    for r in rows:
        lines += [f"    {r['a']['command']}", f"    {r['b']['command']}"]
    for r in rows:
        if r["b"].get("summary_md"):
            lines += ["", r["b"]["summary_md"].replace("# ", "## ", 1).rstrip()]
            if "seed42_max_diff" in r["b"]:
                diff = r["b"]["seed42_max_diff"]
                said = "has another number of epochs" if diff is None else f"differs by at most {diff:.2e}"
                lines += ["", f"Seed 42 in (b) against (a), every epoch's loss and metrics: {said}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="", help="the ML-1M folder, e.g. data/ml-1m-u2999")
    parser.add_argument("--epochs", type=int, default=0, help="shorten the runs (default: the configs' 101)")
    parser.add_argument("--seeds", default="42,1,2,3")
    parser.add_argument("--models", default="hstu,sasrec")
    parser.add_argument("--smoke", action="store_true", help="CPU, synthetic data, 2 epochs")
    parser.add_argument(
        "--extra", action="append", default=[], metavar="KEY=VALUE", help="a --set for every run"
    )
    parser.add_argument("--exp-dir", default="", help="where the runs go (default: a temporary folder)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per case")
    parser.add_argument("--out", default="", help="write bench_seeds.json and bench_seeds.md here")
    args = parser.parse_args()
    if args.smoke:
        args.epochs = args.epochs or 2
    configs = SMOKE if args.smoke else MODELS
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "cpu"
    if device == "cpu" and not args.smoke:
        print("no CUDA GPU: the timing compares GPU streams; use --smoke on a CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-seeds-") as tmp:
        exp_dir = Path(args.exp_dir or tmp).resolve()
        exp_dir.mkdir(parents=True, exist_ok=True)
        rows = [bench_model(m, configs[m], args, exp_dir) for m in args.models.split(",")]
        text = markdown(rows, args, device)
    print("\n" + text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench_seeds.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1))
        (out / "bench_seeds.md").write_text(text)
    failed = any(r[c]["exit"] != 0 for r in rows for c in ("a", "b"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
