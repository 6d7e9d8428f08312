"""Training speed and accuracy: our trainer on the reference's configs, next to the official code's runs.

Speed (a few epochs per config; seconds per epoch with evaluation, train tokens per second, peak memory):

    PYTHONPATH=. python benchmarks/bench_training.py --speed --epochs 3 --data-dir data/ml-1m-u2999

Full runs (101 epochs, every epoch evaluates validation and test), one subprocess per run, each exactly the
CLI command it prints; results collected into a JSON and a Markdown table next to the reference's figures:

    PYTHONPATH=. python benchmarks/bench_training.py --full --data-dir data/ml-1m-u2999 \
        --out benchmarks/results/training_h200

`--runs` picks runs by name (default: all of RUNS, in order); `--extra KEY=VALUE` adds a --set to every run;
`--seeds 1,2,3` runs each once per seed and adds a mean ± standard deviation table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The official implementation's figures on ml-1m-u2999, one NVIDIA H200: mean of epochs 91-100 unless noted.
ANCHORS = {
    "sasrec-sampled-softmax-n128-final": {
        "hr@10": 0.2832,
        "ndcg@10": 0.1597,
        "hr@50": 0.5302,
        "ndcg@50": 0.2141,
        "mrr": 0.1365,
        "final": (0.2871, 0.1616),
        "s_101": 234.0,
        "window": (91, 100),
    },
    "hstu-sampled-softmax-n128-final": {
        "hr@10": 0.2957,
        "ndcg@10": 0.1666,
        "hr@50": 0.5497,
        "ndcg@50": 0.2226,
        "mrr": 0.1420,
        "final": (0.2991, 0.1652),
        "s_101": 364.0,
        "window": (91, 100),
    },
    "hstu-sampled-softmax-n128-large-final": {
        "hr@10": 0.3001,
        "ndcg@10": 0.1702,
        "final": (0.2991, 0.1707),
        "s_101": 760.0,
        "window": (57, 66),
    },
}
# Paper (full ML-1M, reference README): HR@10, NDCG@10.
PAPER = {
    "sasrec-sampled-softmax-n128-final": (0.2853, 0.1603),
    "hstu-sampled-softmax-n128-final": (0.3097, 0.1720),
    "hstu-sampled-softmax-n128-large-final": (0.3294, 0.1893),
}

# (run name, dataset folder key, config, extra --set pairs)
RUNS = [
    ("ml1m-hstu", "ml-1m", "ml-1m/hstu-sampled-softmax-n128-final", []),
    ("ml1m-sasrec", "ml-1m", "ml-1m/sasrec-sampled-softmax-n128-final", []),
    ("ml1m-hstu-large", "ml-1m", "ml-1m/hstu-sampled-softmax-n128-large-final", []),
    ("ml100k-hstu", "ml-100k", "ml-100k/hstu-sampled-softmax-n128-final", []),
    ("ml100k-sasrec", "ml-100k", "ml-100k/sasrec-sampled-softmax-n128-final", []),
    ("ml100k-hstu-large", "ml-100k", "ml-100k/hstu-sampled-softmax-n128-large-final", []),
    ("ml1m-hstu-val", "ml-1m", "ml-1m/hstu-sampled-softmax-n128-final", ["protocol=validation"]),
    ("ml1m-sasrec-val", "ml-1m", "ml-1m/sasrec-sampled-softmax-n128-final", ["protocol=validation"]),
    ("ml1m-hstu-large-val", "ml-1m", "ml-1m/hstu-sampled-softmax-n128-large-final", ["protocol=validation"]),
    (
        "ml1m-hstu-eager",
        "ml-1m",
        "ml-1m/hstu-sampled-softmax-n128-final",
        ["cuda_graphs=off", "num_epochs=5"],
    ),  # noqa: E501
    ("ml1m-hstu-seed1", "ml-1m", "ml-1m/hstu-sampled-softmax-n128-final", ["seed=1"]),
    ("ml1m-sasrec-seed1", "ml-1m", "ml-1m/sasrec-sampled-softmax-n128-final", ["seed=1"]),
    ("ml1m-hstu-large-seed1", "ml-1m", "ml-1m/hstu-sampled-softmax-n128-large-final", ["seed=1"]),
]


def command(run, data_dirs: dict, exp_dir: str, extra: list[str]) -> list[str]:
    name, key, config, sets = run
    args = [sys.executable, "-m", "hstu_tutorial.train", "--config", config]
    pairs = [f"name={name}", f"exp_dir={exp_dir}", "timestamp_run_dir=false", "progress=false"]
    if data_dirs.get(key):
        pairs.append(f"data_dir={data_dirs[key]}")
    for pair in pairs + sets + extra:
        args += ["--set", pair]
    return args


def run_one(run, data_dirs, exp_dir, extra, log_dir: Path, timeout: float) -> dict | None:
    cmd = command(run, data_dirs, exp_dir, extra)
    shown = " ".join(shlex.quote(c) for c in ["python"] + cmd[1:])
    print(f"\n$ {shown}", flush=True)
    t0 = time.perf_counter()
    log = log_dir / f"{run[0]}.log"
    with open(log, "w") as fh:
        try:
            proc = subprocess.run(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    wall = time.perf_counter() - t0
    cfg_name = run[2].split("/")[1]
    dataset = run[1]
    res_path = Path(exp_dir) / f"{dataset}-l200" / run[0] / "results.json"
    if rc != 0 or not res_path.is_file():
        tail = log.read_text()[-3000:]
        print(f"   FAILED (rc={rc}, {wall:.0f} s); log tail:\n{tail}", flush=True)
        return {
            "run": run[0],
            "config": cfg_name,
            "command": shown,
            "status": f"failed rc={rc}",
            "wall_s": wall,
        }
    res = json.loads(res_path.read_text())
    res.pop("history_compact", None)
    out = summarise(run, res, shown, wall)
    if "hr@10" not in out:
        print(f"   {out['status']}", flush=True)
        return out
    print(
        f"   {out['status']}: {out['epochs']} epochs, train+eval {out['train_eval_s']:.1f} s "
        f"({out['s_per_epoch']:.3f} s/epoch), process {wall:.0f} s; test HR@10 {out['hr@10']:.4f} "
        f"NDCG@10 {out['ndcg@10']:.4f} (mean {out['window']}), best-by-valid epoch {out['best_epoch']}: "
        f"HR@10 {out['best_hr@10']:.4f} NDCG@10 {out['best_ndcg@10']:.4f}",
        flush=True,
    )
    return out


def run_inprocess(run, data_dirs, exp_dir, extra, budget_end: float) -> dict | None:
    """The same run as `command(...)` would start, inside this process (no interpreter/CUDA start per run)."""
    from hstu_tutorial.train import load_config, train

    name, key, config, sets = run
    cmd = command(run, data_dirs, exp_dir, extra)
    shown = " ".join(shlex.quote(c) for c in ["python"] + cmd[1:])
    print(f"\n$ {shown}", flush=True)
    overrides = [f"name={name}", f"exp_dir={exp_dir}", "timestamp_run_dir=false", "progress=false"]
    if data_dirs.get(key):
        overrides.append(f"data_dir={data_dirs[key]}")
    overrides += sets + extra
    t0 = time.perf_counter()
    try:
        res = train(load_config(config, overrides))
    except Exception as err:  # noqa: BLE001 - record the failure, go on with the next run
        import traceback

        traceback.print_exc()
        if "cuda_graphs=off" not in overrides and time.perf_counter() < budget_end:
            print("   retrying with cuda_graphs=off", flush=True)
            return run_inprocess(run, data_dirs, exp_dir, extra + ["cuda_graphs=off"], budget_end)
        return {
            "run": name,
            "config": config,
            "command": shown,
            "status": f"failed: {err!r}"[:300],
            "wall_s": time.perf_counter() - t0,
        }
    wall = time.perf_counter() - t0
    res.pop("trainer", None)
    out = summarise(run, res, shown, wall)
    if "hr@10" not in out:
        print(f"   {out['status']}", flush=True)
        return out
    out["history"] = [
        {
            "epoch": h["epoch"],
            "loss": round(h["loss"], 5),
            "valid": {k: round(v, 5) for k, v in h["valid"].items()},
            "test": {k: round(v, 5) for k, v in h["test"].items()},
        }
        for h in res["history"]
    ]
    print(
        f"   {out['status']}: {out['epochs']} epochs, train+eval {out['train_eval_s']:.1f} s "
        f"({out['s_per_epoch']:.3f} s/epoch; setup {out['setup_s']:.1f} s), run {wall:.0f} s; "
        f"test HR@10 {out['hr@10']:.4f} NDCG@10 {out['ndcg@10']:.4f} (mean {out['window']}), "
        f"best-by-valid epoch {out['best_epoch']}: HR@10 {out['best_hr@10']:.4f} "
        f"NDCG@10 {out['best_ndcg@10']:.4f}; {out['train_tokens_per_s']:,.0f} tok/s, "
        f"peak {out['peak_mem_gib'] or 0:.2f} GiB",
        flush=True,
    )
    return out


def window_mean(history, first: int, last: int, key: str) -> float | None:
    vals = [h["test"][key] for h in history if first <= h["epoch"] <= last]
    return sum(vals) / len(vals) if vals else None


def summarise(run, res, shown, wall) -> dict:
    if "reference_protocol" not in res:
        return {
            "run": run[0],
            "config": run[2],
            "command": shown,
            "status": f"{res['status']} (no epoch)",
            "wall_s": wall,
        }
    ref = res["reference_protocol"]
    best = res.get("best_by_valid", {})
    t = res["timing"]
    cfg_name = run[2].split("/")[1]
    out = {
        "run": run[0],
        "config": cfg_name,
        "dataset": run[1],
        "protocol": res["config"]["protocol"],
        "seed": res["config"]["seed"],
        "command": shown,
        "status": res["status"],
        "epochs": res["epochs_run"],
        "window": f"{ref['epochs'][0]}-{ref['epochs'][1]}",
        "device": res["device"],
        "attention_impl": res["attention_impl"],
        "layout": res["layout"],
        "cuda_graphs": res["cuda_graphs"],
        **{k: ref["test_mean"][k] for k in ref["test_mean"]},
        "final_hr@10": ref["test_final"]["hr@10"],
        "final_ndcg@10": ref["test_final"]["ndcg@10"],
        "best_epoch": best.get("epoch"),
        "best_hr@10": best.get("test", {}).get("hr@10"),
        "best_ndcg@10": best.get("test", {}).get("ndcg@10"),
        "best_valid_ndcg@10": best.get("valid", {}).get("ndcg@10"),
        "train_eval_s": t["train_eval_s"],
        "train_s": t["train_s"],
        "eval_s": t["eval_s"],
        "setup_s": t["setup_s"],
        "s_per_epoch": t["s_per_epoch"],
        "train_tokens_per_s": t["train_tokens_per_s"],
        "peak_mem_gib": t["peak_mem_gib"],
        "wall_s": wall,
    }
    anchor = ANCHORS.get(cfg_name)
    if anchor and run[1] == "ml-1m":
        a0, a1 = anchor["window"]
        out["anchor_window"] = f"{a0}-{a1}"
        out["ours_in_anchor_window"] = {
            k: window_mean(res["history"], a0, a1, k) for k in ("hr@10", "ndcg@10")
        }
        out["anchor"] = {k: anchor[k] for k in ("hr@10", "ndcg@10")}
        out["anchor_s_101"] = anchor["s_101"]
        out["speedup_vs_anchor"] = anchor["s_101"] * (out["epochs"] / 101) / max(out["train_eval_s"], 1e-9)
    return out


def markdown(rows: list[dict], header: str) -> str:
    lines = [header, ""]
    lines += [
        "| run | protocol, seed | epochs | HR@10 | NDCG@10 | HR@50 | NDCG@50 | MRR | final HR@10 / NDCG@10 | "
        "best-by-valid (epoch): HR@10 / NDCG@10 | official code HR@10 / NDCG@10 | s/epoch | "
        "train+eval s | speed-up vs reference | peak GiB |",
        "|---" * 14 + "|",
    ]
    for r in rows:
        if r["status"].startswith("failed") or "hr@10" not in r:
            lines.append(f"| {r['run']} | {r['status']} |" + " |" * 12)
            continue
        if "hr@10" not in r:
            continue
        anchor = ""
        if "anchor" in r:
            ours = r["ours_in_anchor_window"]
            anchor = (
                f"{r['anchor']['hr@10']:.4f} / {r['anchor']['ndcg@10']:.4f} (ep {r['anchor_window']}; ours "
                f"{ours['hr@10']:.4f} / {ours['ndcg@10']:.4f})"
            )
        speed = f"{r['speedup_vs_anchor']:.0f}x" if "speedup_vs_anchor" in r else "-"
        peak = f"{r['peak_mem_gib']:.2f}" if r.get("peak_mem_gib") is not None else "-"
        best = (
            f"({r['best_epoch']}) {r['best_hr@10']:.4f} / {r['best_ndcg@10']:.4f}"
            if r.get("best_hr@10") is not None
            else "-"
        )
        lines.append(
            f"| {r['run']} | {r['protocol']}, {r['seed']} | {r['epochs']} (mean {r['window']}) | "
            f"{r['hr@10']:.4f} | "
            f"{r['ndcg@10']:.4f} | {r['hr@50']:.4f} | {r['ndcg@50']:.4f} | {r['mrr']:.4f} | "
            f"{r['final_hr@10']:.4f} / {r['final_ndcg@10']:.4f} | {best} | {anchor or '-'} | "
            f"{r['s_per_epoch']:.3f} | {r['train_eval_s']:.1f} | {speed} | {peak} |"
        )
    lines += ["", "Commands (run from the repository root):", ""]
    lines += [f"    {r['command']}" for r in rows]
    if rows and "device" in rows[0]:
        lines += [
            "",
            f"Device: {rows[0]['device']}. s/epoch and train+eval s: every epoch's training steps "
            "plus its evaluation of all validation and test users (setup, data loading and kernel "
            "compilation excluded; see the JSON's setup_s and wall_s).",
        ]
    return "\n".join(lines) + "\n"


def seed_summary(rows: list[dict]) -> str:
    """Mean and standard deviation over seeds of each config's runs (rows named <run>-s<seed>)."""
    import statistics

    groups: dict[str, list[dict]] = {}
    for r in rows:
        if "hr@10" in r and "-s" in r["run"]:
            groups.setdefault(r["run"].rsplit("-s", 1)[0], []).append(r)
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    if not groups:
        return ""

    def ms(vals):
        return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"

    lines = [
        "",
        "## Over seeds (mean ± standard deviation)",
        "",
        "| run | seeds | HR@10 | NDCG@10 | in the reference's epochs: HR@10 | NDCG@10 | "
        "reference HR@10 / NDCG@10 | train+eval s | speed-up |",
        "|---" * 9 + "|",
    ]
    for name, rs in groups.items():
        win = [r["ours_in_anchor_window"] for r in rs if "ours_in_anchor_window" in r]
        ref = rs[0].get("anchor")
        in_window = "- | - | "
        if win:
            in_window = f"{ms([w['hr@10'] for w in win])} | {ms([w['ndcg@10'] for w in win])} | "
        speed = rs[0].get("speedup_vs_anchor") and statistics.mean(r["speedup_vs_anchor"] for r in rs)
        lines.append(
            f"| {name} | {', '.join(str(r['seed']) for r in rs)} | {ms([r['hr@10'] for r in rs])} | "
            f"{ms([r['ndcg@10'] for r in rs])} | "
            + in_window
            + (f"{ref['hr@10']:.4f} / {ref['ndcg@10']:.4f} | " if ref else "- | ")
            + f"{statistics.mean(r['train_eval_s'] for r in rs):.1f} | "
            + (f"{speed:.0f}x |" if speed else "- |")
        )
    return "\n".join(lines) + "\n"


def order_check(data_dir: str) -> None:
    """How predictable each order of same-second ratings is: a first-order Markov baseline, on the CPU."""
    import torch

    from hstu_tutorial.data import get_reco_dataset
    from hstu_tutorial.metrics import metrics_from_ranks, popularity_baseline, target_ranks

    for stable in (True, False):
        ds = get_reco_dataset("ml-1m", data_dir=data_dir, verbose=False, stable_sort=stable)
        tr, te, n = ds.train, ds.test, ds.num_items + 1
        ids = tr.item_ids  # (T,) histories; each token's next item is the following token or the target
        nxt = torch.roll(ids, -1)
        nxt[tr.offsets[1:] - 1] = tr.target_item_ids
        counts = torch.zeros(n, n)
        counts.index_put_((ids, nxt), torch.ones(len(ids)), accumulate=True)  # (n, n) transitions
        pop = torch.bincount(torch.cat([tr.item_ids, tr.target_item_ids]), minlength=n).float()
        batch = te.batch(torch.arange(len(te)), total=te.num_tokens)
        last = batch.item_ids[batch.offsets[1:] - 1]  # (U,)
        scores = (counts[last] + 1e-3 * pop / pop.max())[:, ds.catalogue]  # (U, C); popularity breaks ties
        ranks = target_ranks(
            scores,
            torch.eye(len(ds.catalogue)),
            ds.catalogue,
            te.target_item_ids,
            batch.padded("item_ids"),
            ds.num_items,
        )
        m = metrics_from_ranks(ranks, (10,))
        p = popularity_baseline(ds, "test", (10,))
        print(
            f"stable_sort={stable}: Markov test HR@10 {m['hr@10']:.4f} NDCG@10 {m['ndcg@10']:.4f}; "
            f"popularity HR@10 {p['hr@10']:.4f} NDCG@10 {p['ndcg@10']:.4f}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="the full runs (their configs' epochs)")
    p.add_argument("--speed", action="store_true", help="a few epochs per ML-1M config, speed table only")
    p.add_argument("--epochs", type=int, default=3, help="epochs per config for --speed")
    p.add_argument("--data-dir", default="data/ml-1m-u2999", help="the ML-1M(-format) folder")
    p.add_argument("--ml100k-dir", default="data/ml-100k")
    p.add_argument("--runs", default="", help="comma-separated run names (default: all)")
    p.add_argument("--extra", action="append", default=[], help="a KEY=VALUE --set added to every run")
    p.add_argument("--exp-dir", default="exps/bench")
    p.add_argument("--out", default="", help="write <out>.json and <out>.md")
    p.add_argument("--timeout", type=float, default=300, help="seconds per run (subprocess mode)")
    p.add_argument("--subprocess", action="store_true", help="one CLI process per run (default: in-process)")
    p.add_argument("--budget", type=float, default=1e9, help="start no run after this many seconds")
    p.add_argument("--no-autotune", action="store_true", help="Triton kernels: default tiles, no autotuning")
    p.add_argument("--seeds", default="", help="comma-separated seeds: every run once per seed (+ a summary)")
    p.add_argument("--order-check", action="store_true", help="Markov baseline on both tie orders (CPU)")
    args = p.parse_args()
    if args.order_check:
        order_check(args.data_dir)
        return 0
    data_dirs = {"ml-1m": args.data_dir, "ml-100k": args.ml100k_dir}
    runs = RUNS
    if args.runs:
        wanted = args.runs.split(",")
        unknown = [w for w in wanted if w not in {r[0] for r in RUNS}]
        if unknown:
            p.error(f"unknown runs {unknown}; known: {[r[0] for r in RUNS]}")
        runs = [r for r in RUNS if r[0] in wanted]
    if args.seeds:  # every run once per seed, named <run>-s<seed>
        seeds = args.seeds.split(",")
        runs = [(f"{r[0]}-s{sd}", r[1], r[2], r[3] + [f"seed={sd}"]) for r in runs for sd in seeds]
    extra = list(args.extra)
    if args.speed and not args.full:
        runs = [r for r in runs if r[1] == "ml-1m" and not r[3]] if not args.runs else runs
        extra.append(f"num_epochs={args.epochs}")
    log_dir = Path(args.exp_dir) / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    if args.no_autotune:
        extra.append("autotune=false")
    t_start = time.perf_counter()
    budget_end = t_start + args.budget
    rows = []
    for run in runs:
        if time.perf_counter() > budget_end:
            print(f"\n(skipping {run[0]}: over the --budget of {args.budget:.0f} s)", flush=True)
            continue
        if args.subprocess:
            row = run_one(run, data_dirs, args.exp_dir, extra, log_dir, args.timeout)
        else:
            row = run_inprocess(run, data_dirs, args.exp_dir, extra, budget_end)
        rows.append(row)
        if args.out:  # write after every run: a later failure keeps what is done
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out + ".json").write_text(json.dumps(rows, indent=1))
            Path(args.out + ".md").write_text(
                markdown(rows, f"# Training runs ({time.strftime('%Y-%m-%d')})") + seed_summary(rows)
            )
    print()
    print(markdown(rows, "# Training runs") + seed_summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
