"""Where the wall time of a run's epochs goes: the trainer's own clocks against the clock on the wall.

    PYTHONPATH=. python benchmarks/epoch_timeline.py --data-dir data/ml-1m-u2999 [--models sasrec,hstu] \
        [--variants save_checkpoints=false;tensorboard=false] [--epochs 101] [--out DIR]
    PYTHONPATH=. python benchmarks/epoch_timeline.py --smoke        # CPU, synthetic, 3 epochs

For each model (the ML-1M final configs, as the README runs them: checkpoints and TensorBoard on, no
progress bar), one run in this process. Per epoch it reads the trainer's record (`train_s`, `eval_s`) and
the wall clock at each epoch's callback, and times the trainer's after-epoch work (best epoch, checkpoints,
TensorBoard, the progress line). The table compares, over epochs 1 .. E-1 (epoch 0 holds the first steps'
compilation and the CUDA graph captures): the wall time between callbacks, the trainer's train + eval, and
the after-epoch work. `--variants` runs every model once more per ';'-separated list of KEY=VALUE.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hstu_tutorial.perf import machine_info
from hstu_tutorial.train import Trainer, load_config

CONFIGS = {
    "sasrec": "ml-1m/sasrec-sampled-softmax-n128-final",
    "hstu": "ml-1m/hstu-sampled-softmax-n128-final",
}
SMOKE = {"sasrec": "synthetic/sasrec-small", "hstu": "synthetic/hstu-small"}


def timeline(config: str, overrides: dict) -> dict:
    """One run of `config`: per-epoch wall time between callbacks, the trainer's clocks, after-epoch time."""
    tr = Trainer(load_config(config, overrides), verbose=False)
    after, overlapped = [], []
    original = tr._after_epoch

    def timed_after_epoch(*args):
        t0 = time.perf_counter()
        original(*args)
        after.append(time.perf_counter() - t0)

    tr._after_epoch = timed_after_epoch
    # From 2026-12-02 (training/epoch_end.py) an epoch's end is queued as its steps end and finished later,
    # alongside the next epoch's steps on a GPU: note which after-epoch calls ran so, and keep the weights the
    # epoch ended with (the live ones have moved on by the time its callback runs). Older code: neither.
    ends = sys.modules.get("hstu_tutorial.training.epoch_end")
    real_queue, real_finish = getattr(ends, "queue", None), getattr(ends, "finish", None)
    ended_with = {}
    if real_queue is not None:

        def keeping_queue(trainer, *args):
            end = yield from real_queue(trainer, *args)
            if end.epoch == 1:  # clones queued before the next epoch's steps: epoch 1's weights
                ended_with.update({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
            return end

        def noting_finish(*args, **kwargs):
            overlapped.append(bool(kwargs.get("overlapped", False)))
            return (yield from real_finish(*args, **kwargs))

        ends.queue, ends.finish = keeping_queue, noting_finish
    snaps = []  # the epoch writer's clones of the checkpoint state, inside the after-epoch time (from 2026-12-02)
    module = sys.modules.get("hstu_tutorial.training.epoch_writer")
    real_snapshot = getattr(module, "snapshot", None)
    if real_snapshot is not None:

        def timed_snapshot(obj):
            t0 = time.perf_counter()
            out = real_snapshot(obj)
            snaps.append(time.perf_counter() - t0)
            return out

        module.snapshot = timed_snapshot
    stamps = []
    checked, check_s = [], []

    def callback(record):
        stamps.append(time.perf_counter())
        if record["epoch"] == 1 and tr.cfg.save_checkpoints:  # the file written in the background holds
            # exactly the weights the epoch ended with (device copies included)
            flush = getattr(tr, "flush_epoch_files", None)  # absent before 2026-12-02: files written at once
            if flush is not None:
                flush()
            state = torch.load(tr.run_dir / "ckpt_last.pt", weights_only=True)
            live = ended_with or tr.model.state_dict()
            checked.append(
                state["epoch"] == 2
                and all(torch.equal(state["model"][k].cpu(), v.cpu()) for k, v in live.items())
            )
            check_s.append(time.perf_counter() - stamps[-1])  # the check's own time is not the trainer's

    t_fit = time.perf_counter()
    try:
        tr.fit(callback=callback)
    finally:
        if real_snapshot is not None:
            module.snapshot = real_snapshot
        if real_queue is not None:
            ends.queue, ends.finish = real_queue, real_finish
    wall_fit = time.perf_counter() - t_fit
    hist = tr.history
    walls = [b - a for a, b in zip(stamps, stamps[1:])]  # epochs 1 .. E-1
    steady = hist[1:]
    return {
        "config": config,
        "overrides": overrides,
        "epochs": len(hist),
        "fit_wall_s": wall_fit,
        "epoch0_wall_s": stamps[0] - t_fit if stamps else float("nan"),
        "steady_wall_s": sum(walls) - sum(check_s),
        "steady_train_s": sum(r["train_s"] for r in steady),
        "steady_eval_s": sum(r["eval_s"] for r in steady),
        "steady_after_epoch_s": sum(after[1:]),
        # of which alongside the next epoch's steps (not in the wall time's way)
        "steady_after_overlapped_s": sum(a for a, o in zip(after[1:], overlapped[1:]) if o),
        "after_epoch_ms_median": 1e3 * statistics.median(after[1:]) if len(after) > 1 else float("nan"),
        "after_epoch_ms_max": 1e3 * max(after[1:]) if len(after) > 1 else float("nan"),
        "reported_total_s": tr.elapsed["train_s"] + tr.elapsed["eval_s"] + tr.elapsed.get("end_s", 0.0),
        "test_hr10_last": hist[-1]["test"].get("hr@10"),
        "epoch_end_s": tr.elapsed.get("end_s"),
        "snapshot_s": sum(snaps) if real_snapshot is not None else None,
        "checkpoint_equals_weights": checked[0] if checked else None,
    }


def _seconds(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def _verdict(ok) -> str:
    return "-" if ok is None else ("yes" if ok else "NO")


def markdown(rows: list[dict], info: dict) -> str:
    head = (
        "| model | overrides | epochs | wall, epochs 1.. s | train + eval (trainer) s | after-epoch s "
        "| of which alongside steps s | rest s | after-epoch ms median / max | of which clones s "
        "| reported total s | fit wall s | ckpt_last.pt = weights |"
    )
    lines = [
        f"# Epoch timeline ({info.get('device', '?')}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        head,
        "|" + "---|" * 13,
    ]
    for r in rows:
        te = r["steady_train_s"] + r["steady_eval_s"]
        hidden = r.get("steady_after_overlapped_s", 0.0)
        rest = r["steady_wall_s"] - te - (r["steady_after_epoch_s"] - hidden)
        over = ", ".join(f"{k}={v}" for k, v in r["overrides"].items() if k not in ("data_dir", "exp_dir"))
        lines.append(
            f"| {r['model']} | {over} | {r['epochs']} | {r['steady_wall_s']:.2f} | {te:.2f} "
            f"| {r['steady_after_epoch_s']:.2f} | {hidden:.2f} | {rest:.2f} | {r['after_epoch_ms_median']:.1f} / "
            f"{r['after_epoch_ms_max']:.1f} | {_seconds(r['snapshot_s'])} | {r['reported_total_s']:.2f} | {r['fit_wall_s']:.2f} "
            f"| {_verdict(r['checkpoint_equals_weights'])} |"
        )
    lines += [
        "",
        "wall, epochs 1..: from the callback of epoch 0 to that of the last epoch. train + eval: the trainer's",
        "`train_s` + `eval_s` of the same epochs. after-epoch: `Trainer._after_epoch` (best epoch, checkpoints,",
        "TensorBoard, progress line); of which alongside steps: the part run while the next epoch's steps were",
        "queued (training/epoch_end.py, from 2026-12-02 on a GPU), which the wall time does not wait for;",
        "clones: the epoch writer's copies of the checkpoint state (all epochs; part of the epoch end, queued",
        "as the steps end from 2026-12-02). rest: the wall time none of them counts. reported total: the results",
        "line's figure (the epochs' train_s + eval_s, and from 2026-12-02 on their epoch-end time not run",
        "alongside steps); with the epoch ends overlapped, train_s and eval_s are CUDA-event spans of the GPU's",
        "timeline. fit wall: the whole `fit`, graph captures included. ckpt_last.pt = weights: the file of",
        "epoch 1 (written in the background) holds exactly the weights that epoch ended with.",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="sasrec,hstu")
    ap.add_argument("--data-dir", default="data/ml-1m-u2999")
    ap.add_argument("--epochs", type=int, default=0, help="num_epochs (0: the config's)")
    ap.add_argument("--variants", action="append", default=[], help="';'-separated KEY=VALUE lists")
    ap.add_argument("--smoke", action="store_true", help="CPU, synthetic configs, 3 epochs")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    info = machine_info()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in [""] + args.variants:
            for model in args.models.split(","):
                overrides = {"progress": "false", "exp_dir": tmp, "timestamp_run_dir": "false"}
                overrides["name"] = f"timeline-{model}-{len(rows)}"
                if args.smoke:
                    config = SMOKE[model]
                    overrides.update(device="cpu", data_dir=str(Path(tmp) / "data"), num_epochs="3")
                else:
                    config = CONFIGS[model]
                    overrides["data_dir"] = args.data_dir
                if args.epochs:
                    overrides["num_epochs"] = str(args.epochs)
                for kv in [v for v in variant.split(";") if v]:
                    k, v = kv.split("=", 1)
                    overrides[k] = v
                r = timeline(config, overrides)
                r["model"] = model
                rows.append(r)
                print(json.dumps(r), flush=True)
    md = markdown(rows, info)
    print(md)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "epoch_timeline.json").write_text(json.dumps({"machine": info, "results": rows}, indent=1))
        (out / "epoch_timeline.md").write_text(md + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
