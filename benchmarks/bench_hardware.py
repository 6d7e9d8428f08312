"""What hardware a reader needs: peak GPU memory and seconds per epoch of the shipped ML-1M configs.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python benchmarks/bench_hardware.py --data-dir data/ml-1m-u2999
    PYTHONPATH=. python benchmarks/bench_hardware.py --table-from benchmarks/results/h200_2026-12-01/hardware.json
    PYTHONPATH=. python benchmarks/bench_hardware.py --smoke --out /tmp/hw     # CPU, seconds: the logic only

Cases, each in a fresh Trainer in this process (memory freed between cases: del, gc, empty_cache):

1. HSTU, HSTU-large and SASRec (configs `ml-1m/*-final`) at the ML-1M shape (N = 200, batch 128), first
   with the trainer's defaults, then one troubleshooting setting at a time: bf16 autocast, activation
   recomputation, the batch split into 2 micro-batches of 64 (gradient accumulation), CUDA graphs off;
2. every model at batch 64/128/256/512 and max_seq_len 50/100/200 (ML-1M: histories capped at N);
3. synthetic histories of ML-1M's size at N = 500 and 1000 (ML-1M itself has nothing longer than 200 once
   capped), HSTU and SASRec, batch 128.

Per case: train seconds per epoch (one warm-up epoch, then `--epochs` timed epochs, no evaluation), the
seconds of one evaluation (valid + test, full ranking, after a warm-up evaluation), and the peak of
`torch.cuda.max_memory_allocated` / `max_memory_reserved` over the whole case (model, data on the device,
graph capture, training and evaluation; reset per case). Trainer defaults apply (TF32, CUDA graph step on
padded batches, fused LayerNorm), except that Triton tiles are fixed (`autotune=false`; `--autotune` to
tune): tuning would add a minute per new shape and its timing runs would count in the peak memory.
CUDA graphs and recomputation/accumulation change memory: the trainer turns graphs off with either (and
then uses jagged batches), so the `no_graphs` row is the fair baseline for those two.

"Fits in 8 / 12 / 24 GB": peak reserved memory (net of what an earlier case left allocated) plus the
memory a training process uses outside PyTorch's allocator (CUDA context, loaded kernels), MEASURED in a
fresh child process: device-wide used memory before it starts (nvidia-smi, else NVML), then
`torch.cuda.mem_get_info` after CUDA initialises and after one default case of each model. A card of
X GB is taken as X GiB of device memory, all of it available (no display, no other process).
Only H200 times are measured; no conversion to other GPUs is attempted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from hstu_tutorial.perf.measure import MIB, machine_info, markdown_table, save_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "h200_2026-12-01"
MODELS = {
    "HSTU": "ml-1m/hstu-sampled-softmax-n128-final",
    "HSTU-large": "ml-1m/hstu-sampled-softmax-n128-large-final",
    "SASRec": "ml-1m/sasrec-sampled-softmax-n128-final",
}
# The card's troubleshooting settings, one at a time from the defaults (config keys).
SETTINGS = {
    "default": {},
    "bf16": {"bf16": True},
    "recompute": {"recompute": True},
    "accum2": {"grad_accum_steps": 2},  # batch 128 as 2 micro-batches of 64: same gradient
    "no_graphs": {"cuda_graphs": "off"},
}
CARDS_GIB = (8, 12, 24)
OVERHEAD_TAG = "OVERHEAD_JSON "


# -- one case ---------------------------------------------------------------------------------------------
def free_device_memory(device: torch.device) -> None:
    """Drop what earlier cases left: garbage (reference cycles), cuBLAS workspaces, cached blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if clear is not None:
            clear()
        torch.cuda.empty_cache()


def load_dataset(case: dict, data_dir: str, cache: dict):
    """The case's dataset (ML-1M folder capped at N, or synthetic of `synthetic_size`), loaded once per key."""
    from hstu_tutorial.data import get_reco_dataset

    key = (case["data"], case["N"])
    if key not in cache:
        if case["data"] == "ml-1m":
            cache[key] = get_reco_dataset(
                "ml-1m", case["N"], data_dir=data_dir, stable_sort=False, verbose=False
            )
        else:
            cache[key] = get_reco_dataset(
                "synthetic", case["N"], synthetic_size=case["data"].split(":")[1], verbose=False
            )
    return cache[key]


def case_config(case: dict, data_dir: str, autotune: bool, device: str):
    """The config of a case: the model's shipped config, the case's N, batch and setting."""
    from hstu_tutorial.train import load_config

    keys = dict(
        tensorboard=False,
        progress=False,
        save_checkpoints=False,
        max_seq_len=case["N"],
        batch_size=case["batch_size"],
        autotune=autotune,
        device=device,
    )
    if case["data"] == "ml-1m":
        keys["data_dir"] = data_dir
    else:
        keys.update(dataset="synthetic", synthetic_size=case["data"].split(":")[1], data_dir="")
    keys.update(SETTINGS[case["setting"]])
    keys.update(case.get("extra", {}))
    return load_config(MODELS[case["model"]], keys)


def measure_case(case: dict, dataset, cfg, epochs: int) -> dict:
    """Train `epochs` timed epochs after a warm-up one, time an evaluation, and record the peaks."""
    from hstu_tutorial.perf.trainer_runs import TrainerEpochs
    from hstu_tutorial.train import Trainer

    device = torch.device("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    free_device_memory(device)
    keys = ("left_over_allocated", "left_over_reserved", "peak_train_allocated", "peak_train_reserved")
    keys += ("peak_allocated", "peak_reserved")
    out = {f"{k}_mib": None for k in keys}  # None on a CPU: no allocator statistics there
    if cuda:
        out["left_over_allocated_mib"] = torch.cuda.memory_allocated(device) / MIB
        out["left_over_reserved_mib"] = torch.cuda.memory_reserved(device) / MIB
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    tr = Trainer(cfg, dataset=dataset, verbose=False)
    run = TrainerEpochs(tr)  # captures the CUDA graph step when the trainer uses one
    warm = run.epoch()
    tr.evaluate(("valid", "test"))  # warm-up: the evaluation's kernels compile here
    out["setup_and_warmup_s"] = time.perf_counter() - t0
    times = [run.epoch() for _ in range(epochs)]
    if cuda:
        out["peak_train_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        out["peak_train_reserved_mib"] = torch.cuda.max_memory_reserved(device) / MIB
        torch.cuda.synchronize(device)
    t_eval = time.perf_counter()
    tr.evaluate(("valid", "test"))  # ends with a host transfer of the metrics: synchronised
    out["eval_s"] = time.perf_counter() - t_eval
    if cuda:
        out["peak_allocated_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        out["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / MIB
    out.update(
        status="ok",
        warmup_epoch_s=warm,
        train_epoch_s=times,
        train_s_per_epoch=sum(times) / len(times) if times else warm,
        steps_per_epoch=run.num_steps,
        train_tokens=int(tr.splits["train"].total_tokens),
        cuda_graphs=tr.graph is not None,
        layout=tr.layout,
        attention_impl=tr.attention_impl,
        grad_accum_steps=cfg.grad_accum_steps,
        bf16=cfg.bf16,
        recompute=cfg.recompute,
        parameters=sum(p.numel() for p in tr.model.parameters()),
    )
    run.close()
    tr.graph = None
    del tr, run
    free_device_memory(device)
    return out


# -- the CUDA context and everything else outside the allocator ------------------------------------------
def device_used_mib_outside() -> tuple[float | None, str | None]:
    """Device-wide used memory (MiB) read without creating a CUDA context: nvidia-smi, else NVML."""
    index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    if shutil.which("nvidia-smi"):
        try:
            text = subprocess.run(
                ["nvidia-smi", "-i", index, "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
            return float(text.strip().splitlines()[0]), "nvidia-smi"
        except (subprocess.SubprocessError, ValueError, IndexError, OSError):
            pass
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = (
            pynvml.nvmlDeviceGetHandleByIndex(int(index))
            if index.isdigit()
            else pynvml.nvmlDeviceGetHandleByUUID(index)
        )
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB, "nvml"
    except Exception:  # noqa: BLE001 - no NVML: the caller says so
        return None, None


def overhead_child(args) -> int:
    """Runs in a fresh process: memory used outside the allocator, after CUDA init and after training."""
    before, source = device_used_mib_outside()
    free, total = torch.cuda.mem_get_info()  # the first CUDA call: creates the context
    after_init = (total - free) / MIB
    result = {
        "before_mib": before,
        "before_source": source,
        "total_mib": total / MIB,
        "used_after_init_mib": after_init,
        "context_mib": after_init - before if before is not None else None,
    }
    cache = {}
    for model in args.models.split(","):
        case = {"model": model, "data": args.child_data, "N": 200, "batch_size": 128, "setting": "default"}
        if case["data"] != "ml-1m":
            case["N"] = 50
        cfg = case_config(case, args.data_dir, args.autotune, "cuda")
        measure_case(case, load_dataset(case, args.data_dir, cache), cfg, epochs=1)
    free, total = torch.cuda.mem_get_info()
    used = (total - free) / MIB - (before or 0.0)
    reserved = torch.cuda.memory_reserved() / MIB
    result.update(
        models=args.models.split(","),
        process_used_after_training_mib=used,
        reserved_after_training_mib=reserved,
        outside_allocator_mib=used - reserved,
    )
    print(OVERHEAD_TAG + json.dumps(result), flush=True)
    return 0


def measure_overhead(args, data: str) -> dict:
    """Start the child process of `overhead_child` and return what it measured (or why it could not)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--overhead-child", "--data-dir", args.data_dir]
    cmd += ["--models", ",".join(MODELS), "--child-data", data] + (["--autotune"] if args.autotune else [])
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": "the overhead process ran over 300 s"}
    for line in proc.stdout.splitlines():
        if line.startswith(OVERHEAD_TAG):
            return json.loads(line[len(OVERHEAD_TAG) :])
    return {"error": f"the overhead process failed (rc={proc.returncode}): {proc.stderr[-800:]}"}


# -- the plan, the table ---------------------------------------------------------------------------------
def plan(models, batches, lengths, settings, synthetic_lengths, synthetic_models, data, synthetic_data):
    """The cases in the order they run: the ML-1M shape's settings first, then the sweep, then long N."""
    cases = []
    for model in models:
        for setting in settings:
            cases.append(
                dict(
                    group="settings", model=model, data=data, N=max(lengths), batch_size=128, setting=setting
                )
            )
    for model in models:
        for N in lengths:
            for B in batches:
                if (N, B) != (max(lengths), 128) or "default" not in settings:
                    cases.append(
                        dict(group="sweep", model=model, data=data, N=N, batch_size=B, setting="default")
                    )
    for model in synthetic_models:
        for N in synthetic_lengths:
            cases.append(
                dict(group="long", model=model, data=synthetic_data, N=N, batch_size=128, setting="default")
            )
    return cases


def needed_mib(case: dict, overhead_mib: float | None) -> float | None:
    """Peak reserved memory net of left-overs, plus the measured memory outside the allocator (MiB)."""
    if case.get("peak_reserved_mib") is None or overhead_mib is None:
        return None
    return case["peak_reserved_mib"] - (case.get("left_over_reserved_mib") or 0.0) + overhead_mib


def fits(case: dict, overhead_mib: float | None, cards=CARDS_GIB) -> dict:
    """{card GiB: True/False/None}: does the case's needed memory fit in a card of that size?"""
    need = needed_mib(case, overhead_mib)
    return {str(c): (None if need is None else need <= c * 1024) for c in cards}


def overhead_of(payload: dict) -> float | None:
    o = payload.get("overhead") or {}
    return o.get("outside_allocator_mib")


def to_markdown(payload: dict) -> str:
    """The results as Markdown: header (machine, method, overhead), one table per group of cases."""
    m, o = payload["machine"], payload.get("overhead") or {}
    over = overhead_of(payload)
    cards = payload.get("cards_gib", list(CARDS_GIB))
    rows = []
    for c in payload["cases"]:
        r = dict(c)
        ok = c.get("status") == "ok"
        r["s_epoch"] = c.get("train_s_per_epoch") if ok else None
        r["eval"] = c.get("eval_s") if ok else None
        for key in ("peak_allocated_mib", "peak_reserved_mib", "peak_train_reserved_mib"):
            r[key.replace("_mib", "_gib")] = None if c.get(key) is None else c[key] / 1024
        need = needed_mib(c, over)
        r["need_gib"] = None if need is None else need / 1024
        for card, f in fits(c, over, cards).items():
            r[f"fit{card}"] = "-" if f is None else ("yes" if f else "no")
        r["what"] = c["setting"] if ok else f"{c['setting']} ({c.get('status')})"
        r["graph"] = "graph" if c.get("cuda_graphs") else ("eager" if ok else "-")
        rows.append(r)
    cols = [
        ("model", "model", ""),
        ("data", "data", ""),
        ("N", "N", ""),
        ("batch_size", "batch", ""),
        ("what", "setting", ""),
        ("graph", "step", ""),
        ("s_epoch", "train s/epoch", ".3f"),
        ("eval", "eval s", ".3f"),
        ("peak_allocated_gib", "peak allocated GiB", ".2f"),
        ("peak_train_reserved_gib", "peak reserved GiB, training", ".2f"),
        ("peak_reserved_gib", "peak reserved GiB, with eval", ".2f"),
        ("need_gib", "needed GiB", ".2f"),
    ] + [(f"fit{c}", f"{c} GB", "") for c in cards]
    lines = [f"# What hardware a reader needs ({m['device']}, {m['date_utc'][:10]})", ""]
    lines.append(
        f"Measured {m['date_utc']} on {m['device']} (torch {m['torch']}, triton {m.get('triton')}, "
        f"CUDA {m.get('cuda')}); data: {payload['data']}. Triton tiles: "
        f"{'tuned' if payload['autotune'] else 'fixed (autotune=false)'}; {payload['epochs']} timed epoch(s) "
        "after one warm-up epoch; every case in a fresh Trainer of one process."
    )
    lines.append("")
    if over is not None:
        ctx = o.get("context_mib")
        lines.append(
            f"Memory outside PyTorch's allocator, measured in a fresh process ({o.get('before_source') or 'no'} "
            f"reading before CUDA started): CUDA context {ctx:.0f} MiB; after one default case of each of "
            f"{', '.join(o.get('models', []))}: {over:.0f} MiB (context and loaded kernels). 'needed' = peak "
            f"reserved (with evaluation, net of left-overs) + {over:.0f} MiB; a card of X GB = X GiB, all free."
            if ctx is not None
            else f"Memory outside PyTorch's allocator after one default case of each model: {over:.0f} MiB "
            "(no reading before CUDA started: the GPU is assumed otherwise empty)."
        )
    else:
        lines.append(
            f"No overhead measurement ({o.get('error', 'not on a GPU')}): the fit columns are empty."
        )
    shape = next(((r["N"], r["batch_size"]) for r in rows if r.get("group") == "settings"), None)
    titles = {
        "settings": "The troubleshooting settings, one at a time"
        + (f" (N = {shape[0]}, batch {shape[1]})" if shape else ""),
        "sweep": "Batch size and history length (trainer defaults)",
        "long": "Longer histories (synthetic data; ML-1M's histories stop at 200 once capped)",
    }
    for group, title in titles.items():
        part = [r for r in rows if r.get("group") == group]
        if group == "sweep":  # the defaults row of the settings table belongs to the sweep too
            part += [r for r in rows if r.get("group") == "settings" and r["setting"] == "default"]
            part.sort(key=lambda r: (list(MODELS).index(r["model"]), r["N"], r["batch_size"]))
        if part:
            lines += ["", f"## {title}", "", markdown_table(part, cols)]
    if payload.get("skipped"):
        lines += ["", "Not run (time budget): " + "; ".join(payload["skipped"])]
    lines += ["", "Command:", "", "    " + payload.get("command", "")]
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------------------
def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default="data/ml-1m-u2999", help="the ML-1M(-format) folder")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for hardware.json and hardware.md")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--batches", default="64,128,256,512")
    p.add_argument("--lengths", default="50,100,200")
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--synthetic-lengths", default="500,1000", help="'' to skip the long-history rows")
    p.add_argument("--synthetic-models", default="HSTU,SASRec")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs per case (after one warm-up epoch)")
    p.add_argument("--time-budget", type=float, default=200.0, help="start no case after this many seconds")
    p.add_argument("--autotune", action="store_true", help="tune Triton tiles (adds ~1 min per new shape)")
    p.add_argument("--no-overhead", action="store_true", help="skip the fresh-process overhead measurement")
    p.add_argument("--smoke", action="store_true", help="CPU, synthetic CI data, tiny sweep: the logic only")
    p.add_argument("--table-from", default="", help="print the Markdown table of a saved hardware.json")
    p.add_argument("--overhead-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-data", default="ml-1m", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.table_from:
        print(to_markdown(json.loads(Path(args.table_from).read_text())), end="")
        return 0
    if args.overhead_child:
        return overhead_child(args)
    cuda = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        args.batches, args.lengths, args.synthetic_lengths = "32", "20", "40"
        args.settings = args.settings if args.settings != ",".join(SETTINGS) else "default,bf16"
        args.epochs = 1
        args.time_budget = float("inf")  # every case runs, however loaded the machine
    data = "ml-1m" if not args.smoke else "synthetic:ci"
    if data == "ml-1m" and not (Path(args.data_dir) / "ratings.dat").is_file():
        p.error(f"no ratings.dat in --data-dir {args.data_dir}: give the ML-1M(-format) folder")
    models = [s for s in args.models.split(",") if s]
    unknown = [s for s in models + args.settings.split(",") if s not in MODELS and s not in SETTINGS]
    if unknown:
        p.error(f"unknown model or setting {unknown}; models {list(MODELS)}, settings {list(SETTINGS)}")
    cases = plan(
        models,
        _ints(args.batches),
        _ints(args.lengths),
        args.settings.split(","),
        _ints(args.synthetic_lengths),
        [s for s in args.synthetic_models.split(",") if s in models],
        data,
        "synthetic:ml-1m" if not args.smoke else "synthetic:ci",
    )
    t_start = time.perf_counter()
    overhead = (
        {"error": "not on a GPU"} if not cuda else ({"error": "--no-overhead"} if args.no_overhead else None)
    )
    if overhead is None:  # before this process touches the GPU
        print("measuring the memory outside the allocator in a fresh process ...", flush=True)
        overhead = measure_overhead(args, data)
        print(f"  {overhead}", flush=True)
    shown = "python benchmarks/bench_hardware.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {
        "benchmark": "hardware",
        "machine": machine_info("cuda" if cuda else "cpu"),
        "command": shown.strip(),
        "data": f"{args.data_dir} (ML-1M format)" if data == "ml-1m" else "synthetic (CI size)",
        "autotune": args.autotune,
        "epochs": args.epochs,
        "cards_gib": list(CARDS_GIB),
        "overhead": overhead,
        "cases": [],
        "skipped": [],
    }
    cache = {}
    for i, case in enumerate(cases):
        name = f"{case['model']} {case['data']} N={case['N']} batch={case['batch_size']} {case['setting']}"
        if time.perf_counter() - t_start > args.time_budget:
            payload["skipped"].append(name)
            print(
                f"[{i + 1}/{len(cases)}] {name}: skipped (over --time-budget {args.time_budget:.0f} s)",
                flush=True,
            )
            continue
        row = dict(case)
        try:
            ds = load_dataset(case, args.data_dir, cache)
            cfg = case_config(case, args.data_dir, args.autotune, "cuda" if cuda else "cpu")
            row.update(measure_case(case, ds, cfg, args.epochs))
            row["fits"] = fits(row, overhead_of(payload))
        except Exception as err:  # noqa: BLE001 - e.g. out of memory: record it, go on with the next case
            row["status"] = f"failed: {type(err).__name__}: {str(err)[:200]}"
            free_device_memory(torch.device("cuda" if cuda else "cpu"))
        payload["cases"].append(row)
        peak = row.get("peak_reserved_mib")
        print(
            f"[{i + 1}/{len(cases)}] {name}: {row['status']}"
            + (
                f", {row['train_s_per_epoch']:.3f} s/epoch, eval {row['eval_s']:.3f} s"
                if row["status"] == "ok"
                else ""
            )
            + (f", peak reserved {peak / 1024:.2f} GiB" if peak is not None else "")
            + f" ({time.perf_counter() - t_start:.0f} s)",
            flush=True,
        )
        save_results(payload, "hardware", [args.out], to_markdown(payload))  # after every case
    save_results(payload, "hardware", [args.out], to_markdown(payload))
    print()
    print(to_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
