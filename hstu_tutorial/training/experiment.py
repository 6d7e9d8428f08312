"""A reproducible experiment record, filled in automatically from a training run's results.

    from hstu_tutorial.train import train
    from hstu_tutorial.experiment import experiment_record, record_markdown
    results = train("synthetic/hstu-small", num_epochs=3)
    print(record_markdown(experiment_record(results)))

A result nobody can reproduce is an anecdote. The record holds what another person needs to rerun a
number and to judge it: when and on what it ran (date, GPU or CPU, library versions), the data (name,
folder, protocol, users/items/interactions), the model and every hyperparameter (the full config, so
`load_config(record["config"])` reruns it), the headline metrics (HR@10, NDCG@10, plus the rest), and the
cost (training time, seconds per epoch, peak memory). The trainer writes it next to its results as
`experiment.json` / `experiment.md`.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

import torch

from hstu_tutorial.data.paths import display_path
from hstu_tutorial.training.report import plural

__all__ = ["HYPERPARAMETERS", "experiment_record", "record_markdown", "save_record"]

# The config keys shown as "hyperparameters" (the full config is kept as well).
HYPERPARAMETERS = (
    "model",
    "embedding_dim",
    "num_blocks",
    "num_heads",
    "dqk",
    "dv",
    "ffn_hidden",
    "dropout",
    "max_seq_len",
    "loss",
    "num_negatives",
    "temperature",
    "batch_size",
    "grad_accum_steps",
    "num_epochs",
    "learning_rate",
    "betas",
    "weight_decay",
    "seed",
)
# The config keys that change speed/memory but not the maths.
SPEED_KEYS = ("attention_impl", "tf32", "bf16", "compile", "cuda_graphs", "layout", "recompute")


class RecordError(ValueError):
    """A results dict that lacks what a record needs (the message says which key and where it comes from)."""


def _need(d: dict, key: str, where: str):
    if key not in d:
        raise RecordError(
            f"the results have no {key!r} ({where}); pass the dict that hstu_tutorial.train.train() returns "
            f"or a results.json it wrote. Keys seen: {sorted(d)}"
        )
    return d[key]


def _metrics_block(results: dict) -> tuple[dict, str]:
    """The headline test metrics and where they come from: best-by-validation when the protocol holds a
    validation item out, else the reference protocol's mean over the last epochs."""
    cfg = results.get("config", {})
    best = results.get("best_by_valid") or {}
    ref = results.get("reference_protocol") or {}
    if cfg.get("protocol") == "validation" and "test" in best:
        return best["test"], f"test at the best validation {best.get('metric')} (epoch {best.get('epoch')})"
    if ref.get("test_mean"):
        e0, e1 = ref.get("epochs", ["?", "?"])
        return ref["test_mean"], f"test, mean of epochs {e0}-{e1} (reference protocol)"
    if "test" in best:
        return best["test"], f"test at the best validation {best.get('metric')} (epoch {best.get('epoch')})"
    raise RecordError("the results hold no test metrics: the run finished no epoch (history is empty)")


def experiment_record(results: dict, *, date: str | None = None, notes: str = "") -> dict:
    """A flat, JSON-ready record of a run from `results` (the dict `train()` returns, or its results.json).

    Fields: date, dataset (name, folder, protocol, sizes), config (all keys), hyperparameters (a subset),
    speed settings, hr@10, ndcg@10, metrics (all test metrics), metrics_source, epochs, training time
    (s, s/epoch, tokens/s), peak memory, device/GPU, torch and Python versions, status, run folder.
    """
    cfg = _need(results, "config", "the run's TrainConfig as a dict")
    timing = _need(results, "timing", "seconds spent training and evaluating")
    metrics, source = _metrics_block(results)
    for key in ("hr@10", "ndcg@10"):
        if key not in metrics:
            raise RecordError(
                f"the test metrics have no {key!r} (eval_ks = {cfg.get('eval_ks')}); include 10"
            )
    data = dict(results.get("dataset") or {})
    record = {
        "name": results.get("name", cfg.get("name")),
        "description": results.get("description", cfg.get("description", "")),
        "date": date or _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "dataset": {
            "name": cfg.get("dataset"),
            "data_dir": cfg.get("data_dir") or "(default)",
            "protocol": cfg.get("protocol"),
            **{k: v for k, v in data.items() if k in ("users", "rated_items", "interactions", "catalogue")},
        },
        "hyperparameters": {k: cfg[k] for k in HYPERPARAMETERS if k in cfg},
        "speed_settings": {k: cfg[k] for k in SPEED_KEYS if k in cfg},
        "hr@10": float(metrics["hr@10"]),
        "ndcg@10": float(metrics["ndcg@10"]),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "metrics_source": source,
        "epochs_run": results.get("epochs_run"),
        "training_time_s": float(timing.get("train_s", 0.0)),
        "train_eval_time_s": float(timing.get("train_eval_s", 0.0)),
        "s_per_epoch": float(timing.get("s_per_epoch", 0.0)),
        "train_tokens_per_s": timing.get("train_tokens_per_s"),
        "peak_mem_gib": timing.get("peak_mem_gib"),
        "device": results.get("device", "unknown"),
        "gpu": results.get("device") if "cpu" not in str(results.get("device", "cpu")).lower() else None,
        "torch": results.get("torch", torch.__version__),
        "python": platform.python_version(),
        "attention_impl": results.get("attention_impl"),
        "status": results.get("status"),
        "run_dir": results.get("run_dir"),
        "notes": notes,
        "config": {k: v for k, v in cfg.items()},
    }
    return record


def record_markdown(record: dict) -> str:
    """The record as a Markdown block (a lab-notebook entry)."""
    d, hp = record["dataset"], record["hyperparameters"]
    sizes = ", ".join(f"{k} {d[k]:,}" for k in ("users", "rated_items", "interactions") if k in d)
    lines = [
        f"## Experiment: {record['name']}",
        "",
        "| field | value |",
        "|---|---|",
        f"| date | {record['date']} |",
        f"| dataset | {d['name']} ({'default folder' if d['data_dir'] == '(default)' else d['data_dir']}), "
        f"protocol {d['protocol']}"
        + (f"; {sizes}" if sizes else "")
        + " |",
        f"| model | {hp.get('model')}: {plural(hp.get('num_blocks'), 'block')}, "
        f"{plural(hp.get('num_heads'), 'head')}, "
        f"d={hp.get('embedding_dim')} |",
        "| hyperparameters | " + ", ".join(f"{k}={v}" for k, v in hp.items() if k not in ("model",)) + " |",
        "| speed settings | " + ", ".join(f"{k}={v}" for k, v in record["speed_settings"].items()) + " |",
        f"| HR@10 | {record['hr@10']:.4f} |",
        f"| NDCG@10 | {record['ndcg@10']:.4f} |",
        f"| metrics from | {record['metrics_source']} |",
        f"| training time | {record['training_time_s']:.1f} s train "
        f"({record['train_eval_time_s']:.1f} s with "
        f"evaluation), {plural(record['epochs_run'], 'epoch')}, {record['s_per_epoch']:.2f} s/epoch |",
        f"| GPU / device | {record['device']} (torch {record['torch']}, Python {record['python']}) |",
    ]
    if record.get("peak_mem_gib") is not None:
        lines.append(f"| peak GPU memory | {record['peak_mem_gib']:.2f} GiB |")
    if record.get("run_dir"):
        lines.append(f"| run folder | {display_path(record['run_dir'])} |")
    if record.get("notes"):
        lines.append(f"| notes | {record['notes']} |")
    return "\n".join(lines) + "\n"


def save_record(results: dict, folder: str | Path | None = None, **kwargs) -> dict:
    """Write `experiment.json` and `experiment.md` into `folder` (default: the run's folder).

    Returns the record."""
    record = experiment_record(results, **kwargs)
    folder = Path(folder or results.get("run_dir") or ".")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "experiment.json").write_text(json.dumps(record, indent=1, default=str))
    (folder / "experiment.md").write_text(record_markdown(record))
    return record
