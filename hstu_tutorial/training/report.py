"""What a run reports: the results dict, results.md, the paper's tables, TensorBoard scalars, the files."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from hstu_tutorial.data.fingerprint import dataset_fingerprint
from hstu_tutorial.training.log import note

__all__ = [
    "REFERENCE_ML1M_U2999",
    "PAPER_ML1M",
    "REFERENCE_WINDOW",
    "device_name",
    "log_epoch",
    "open_tensorboard",
    "plural",
    "results_markdown",
    "run_results",
    "tuning_seconds",
    "write_results",
]


def plural(count, word: str) -> str:
    """'1 epoch', '3 epochs': a count with its noun, pluralised by adding s."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


REFERENCE_WINDOW = 10  # the reference protocol's summary: mean test metrics over the last 10 epochs

# Published full-ML-1M test metrics (the paper's table, repeated in the official implementation's README).
PAPER_ML1M = {
    "SASRec": {
        "hr@10": 0.2853,
        "ndcg@10": 0.1603,
        "hr@50": 0.5474,
        "ndcg@50": 0.2185,
        "hr@200": 0.7528,
        "ndcg@200": 0.2498,
    },
    "HSTU": {
        "hr@10": 0.3097,
        "ndcg@10": 0.1720,
        "hr@50": 0.5754,
        "ndcg@50": 0.2307,
        "hr@200": 0.7716,
        "ndcg@200": 0.2606,
    },
    "HSTU-large": {
        "hr@10": 0.3294,
        "ndcg@10": 0.1893,
        "hr@50": 0.5935,
        "ndcg@50": 0.2481,
        "hr@200": 0.7839,
        "ndcg@200": 0.2771,
    },
}
# The official implementation (facebookresearch/generative-recommenders) run on ml-1m-u2999 (ML-1M users
# 1-2999) on one NVIDIA H200: mean test metrics of epochs 91-100 (HSTU-large: 57-66), seconds for 101 epochs.
REFERENCE_ML1M_U2999 = {
    "SASRec": {
        "hr@10": 0.2832,
        "ndcg@10": 0.1597,
        "hr@50": 0.5302,
        "ndcg@50": 0.2141,
        "mrr": 0.1365,
        "seconds_101_epochs": 234.0,
    },
    "HSTU": {
        "hr@10": 0.2957,
        "ndcg@10": 0.1666,
        "hr@50": 0.5497,
        "ndcg@50": 0.2226,
        "mrr": 0.1420,
        "seconds_101_epochs": 364.0,
    },
    "HSTU-large": {"hr@10": 0.3001, "ndcg@10": 0.1702, "seconds_101_epochs": 760.0},
}


def results_markdown(results: dict, ks: Sequence[int] | None = None) -> str:
    """The results as a Markdown table: reference protocol (mean of last epochs, final) and best-by-valid."""
    lines = [f"# {results['name']}", ""]
    if results.get("description"):
        lines += [results["description"], ""]
    lines += [
        f"dataset {results['config']['dataset']} ({results['config'].get('data_dir') or 'default folder'}), "
        f"protocol {results['config']['protocol']}, {plural(results['epochs_run'], 'epoch')}, status "
        f"{results['status']}, device {results['device']}",
        "",
    ]
    ref = results.get("reference_protocol")
    if ref:
        names = list(ref["test_final"])
        lines += [
            "| test metrics | "
            + " | ".join(
                n.upper() if n == "mrr" else n.replace("hr", "HR").replace("ndcg", "NDCG") for n in names
            )
            + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        e0, e1 = ref["epochs"]
        # The summary is the reference's (mean of the last epochs), but the split is the run's own protocol.
        protocol = results["config"]["protocol"]
        span = f"epoch {e0}" if e0 == e1 else f"epochs {e0}-{e1}"
        rows = [
            (f"{protocol} protocol: mean of {span}", ref["test_mean"]),
            (f"{protocol} protocol: final epoch {ref['final_epoch']}", ref["test_final"]),
        ]
        best = results.get("best_by_valid") or {}
        if "test" in best:
            rows.append((f"best by validation {best['metric']} (epoch {best['epoch']})", best["test"]))
        for label, vals in rows:
            lines.append(f"| {label} | " + " | ".join(f"{vals[n]:.4f}" for n in names) + " |")
        lines.append("")
        if best.get("note"):
            lines += [f"Note: {best['note']}.", ""]
    t = results.get("timing", {})
    if t:
        peak = t.get("peak_mem_gib")
        lines += [
            f"Time: {t['train_eval_s']:.1f} s for {plural(results['epochs_run'], 'epoch')} "
            "of training + evaluation "
            f"({t['s_per_epoch']:.3f} s/epoch; train {t['train_s']:.1f} s, eval {t['eval_s']:.1f} s"
            f"{_epoch_end(t)}), "
            f"setup {t['setup_s']:.1f} s{_setup_split(t)}; {t['train_tokens_per_s']:,.0f} train tokens/s"
            + (f"; peak GPU memory {peak:.2f} GiB" if peak is not None else "")
            + ".",
            "",
        ]
    return "\n".join(lines)


def _epoch_end(t: dict) -> str:
    """The results line's ", epoch ends 0.1 s" (checkpoints and logs after each epoch), or "" without it; with
    the part done while the next epoch's steps ran (training/epoch_end.py), which the total does not count."""
    if "epoch_end_s" not in t:
        return ""
    overlapped = t.get("epoch_end_overlapped_s") or 0.0
    more = f" (+{overlapped:.1f} s while the next epoch trained)" if overlapped else ""
    return f", epoch ends {t['epoch_end_s']:.1f} s{more}"


def _setup_split(t: dict) -> str:
    # Results written before the split was measured have no data_s.
    if "data_s" not in t:
        return ""
    return f" (data {t['data_s']:.1f} s, compile {t['compile_s']:.1f} s, tune {t['tune_s']:.1f} s)"


def tuning_seconds() -> float:
    """Seconds this process has spent tuning Triton tiles (0 while the kernels were never imported)."""
    tiles = sys.modules.get("hstu_tutorial.ops.triton.tiles")  # no import: it would load Triton
    return tiles.tuning_seconds() if tiles is not None else 0.0


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU with its thread count (what a reader needs to judge a timing)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def run_results(trainer, status: str = "completed") -> dict:
    """Best-by-validation and reference-protocol numbers, timing and the per-epoch history of a run."""
    cfg = trainer.cfg
    hist = trainer.history
    out = {
        "name": cfg.name,
        "description": cfg.description,
        "status": status,
        "config": cfg.to_dict(),
        "dataset": trainer.dataset.stats() if hasattr(trainer.dataset, "stats") else {"dataset": cfg.dataset},
        "dataset_fingerprint": dataset_fingerprint(trainer.dataset),  # ties the numbers to these splits
        "device": device_name(trainer.device),
        "torch": torch.__version__,
        "attention_impl": trainer.attention_impl,
        "layout": trainer.layout,
        "cuda_graphs": trainer.use_graphs,
        # the CUDA graph's loss on the supervised positions only (training/loss_rows.py): its row budget,
        # and the steps run eagerly on all positions because their batch had more
        "loss_rows": trainer.loss_rows,
        "eager_steps_above_budget": trainer.eager_steps_above_budget,
        "world_size": trainer.world,
        "epochs_run": len(hist),
        "stable_sort_used": getattr(trainer.dataset, "stable_sort", None),
        "run_dir": str(trainer.run_dir) if trainer.run_dir else None,
    }
    if hist:
        window = hist[-REFERENCE_WINDOW:]
        names = list(hist[-1]["test"])
        out["reference_protocol"] = {
            "epochs": [window[0]["epoch"], window[-1]["epoch"]],
            "test_mean": {k: sum(r["test"][k] for r in window) / len(window) for k in names},
            "final_epoch": hist[-1]["epoch"],
            "test_final": hist[-1]["test"],
        }
        out["best_by_valid"] = {"metric": cfg.selection_metric, **(trainer.best or {})}
        if cfg.protocol == "reference":
            out["best_by_valid"]["note"] = (
                "protocol 'reference' trains on the validation item: "
                "use protocol 'validation' for an honest selection"
            )
    train_tokens = trainer.splits["train"].total_tokens
    elapsed = trainer.elapsed
    end_s = elapsed.get("end_s", 0.0)  # absent from checkpoints written before 2026-12-02
    total = elapsed["train_s"] + elapsed["eval_s"] + end_s
    out["timing"] = {
        "setup_s": trainer.setup_s,
        # data loading; compile = the first step(s) less tuning (CUDA-graph warm-up and capture, in setup_s,
        # or the first eager step, in train_s); tune = Triton tile tuning anywhere in the run (0 when the
        # shipped table or the tile cache held every shape)
        "data_s": trainer.setup_split["data_s"],
        "compile_s": trainer.setup_split["compile_s"],
        "tune_s": tuning_seconds() - trainer.tune_s0,
        "train_s": elapsed["train_s"],
        "eval_s": elapsed["eval_s"],
        "epoch_end_s": end_s,  # checkpoints handed to their writer, TensorBoard, the progress line
        # the same bookkeeping done while the next epoch's steps ran on the GPU: no time of the run's
        "epoch_end_overlapped_s": elapsed.get("end_overlapped_s", 0.0),
        "train_eval_s": total,
        "s_per_epoch": total / max(1, len(hist)),
        "train_tokens_per_s": train_tokens * len(hist) / max(elapsed["train_s"], 1e-9),
        "peak_mem_gib": (
            torch.cuda.max_memory_allocated(trainer.device) / 2**30 if trainer.device.type == "cuda" else None
        ),
    }
    out["history"] = hist
    return out


def write_results(results: dict, run_dir: Path) -> None:
    """results.json, results.md and, when an epoch ran, the experiment record (experiment.json / .md)."""
    (run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (run_dir / "results.md").write_text(results_markdown(results))
    if results.get("history"):
        from hstu_tutorial.training.experiment import RecordError, save_record

        try:
            save_record(results, run_dir)
        except RecordError as err:  # e.g. eval_ks without 10: the results files are still written
            note(f"no experiment record: {err}")


def open_tensorboard(run_dir: Path, purge_step: int | None = None):
    """A TensorBoard SummaryWriter logging into `run_dir`, or None when tensorboard cannot be used.

    `purge_step` (a resumed run's first epoch): TensorBoard drops earlier-written events from that step on."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        # A deep queue: with the default 10 events, add_scalar waits for the writer thread's file appends
        # (1.4 s of a 101-epoch ML-1M run on an H200, 2026-12-01); events still reach the file every 120 s.
        return SummaryWriter(log_dir=str(run_dir), purge_step=purge_step, max_queue=4096)
    except Exception as err:  # noqa: BLE001 - tensorboard is optional
        note(f"TensorBoard logging off ({type(err).__name__}: {err})")
        return None


def log_epoch(writer, record: dict) -> None:
    """An epoch's training loss and every validation/test metric as TensorBoard scalars."""
    e = record["epoch"]
    writer.add_scalar("loss/train", record["loss"], e)
    for split in ("valid", "test"):
        for k, v in record[split].items():
            writer.add_scalar(f"{split}/{k}", v, e)
