"""A reproducible experiment record, filled in automatically from a training run's results.

    from hstu_tutorial.train import train
    from hstu_tutorial.training.experiment import experiment_record, record_markdown
    results = train("synthetic/hstu-small", num_epochs=3)
    print(record_markdown(experiment_record(results)))

A result nobody can reproduce is an anecdote. The record holds what another person needs to rerun a
number and to judge it: when and on what it ran (date, GPU or CPU, library versions), the data (name,
folder, protocol, users/items/interactions), the model and every hyperparameter (the full config, so
`load_config(record["config"])` reruns it), the headline metrics (HR@10, NDCG@10, plus the rest), and the
cost (training time, seconds per epoch, peak memory). The trainer writes it next to its results as
`experiment.json` / `experiment.md`.

Its first eight fields are the lab-notebook card's: date, data set, config, hyperparameters, HR@10,
NDCG@10, training time, GPU (`record["card"]`), in English or in Chinese (`language="zh"`, or the config
key `record_language = "zh"`: 日期, 数据集, 配置, 超参数, HR@10, NDCG@10, 训练时间, GPU).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
from pathlib import Path

import torch

from hstu_tutorial.data.paths import display_path
from hstu_tutorial.training.report import plural

__all__ = [
    "CARD_FIELDS",
    "HYPERPARAMETERS",
    "card_fields",
    "experiment_record",
    "record_markdown",
    "save_record",
]

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
# The card's eight fields, in the card's order, per language.
CARD_FIELDS = {
    "en": ("date", "data set", "config", "hyperparameters", "HR@10", "NDCG@10", "training time", "GPU"),
    "zh": ("日期", "数据集", "配置", "超参数", "HR@10", "NDCG@10", "训练时间", "GPU"),
}
# The record's other rows in Markdown, per language.
_EXTRA = {
    "en": {
        "title": "Experiment",
        "field": "field",
        "value": "value",
        "speed": "speed settings",
        "source": "metrics from",
        "software": "software",
        "memory": "peak GPU memory",
        "run_dir": "run folder",
        "notes": "notes",
    },
    "zh": {
        "title": "实验记录",
        "field": "字段",
        "value": "值",
        "speed": "速度设置",
        "source": "指标来源",
        "software": "软件",
        "memory": "显存峰值",
        "run_dir": "运行目录",
        "notes": "备注",
    },
}


class RecordError(ValueError):
    """A results dict that lacks what a record needs (the message says which key and where it comes from)."""


def _need(d: dict, key: str, where: str):
    if key not in d:
        raise RecordError(
            f"the results have no {key!r} ({where}); pass the dict that hstu_tutorial.train.train() returns "
            f"or a results.json it wrote. Keys seen: {sorted(d)}"
        )
    return d[key]


def _source_zh(source: str) -> str:
    """metrics_source in Chinese (the two forms _metrics_block writes)."""
    m = re.fullmatch(r"test at the best validation (\S+) \(epoch (\S+)\)", source)
    if m:
        return f"验证集 {m[1]} 最好的 epoch（第 {m[2]} 个）的测试指标"
    m = re.fullmatch(r"test, mean of epochs (\S+)-(\S+) \(reference protocol\)", source)
    if m:
        return f"测试指标，第 {m[1]}-{m[2]} 个 epoch 的平均（参考协议）"
    return source


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


def _language(language: str | None, cfg: dict) -> str:
    language = language or cfg.get("record_language") or "en"
    if language not in CARD_FIELDS:
        raise RecordError(f"record language {language!r} is not one of {list(CARD_FIELDS)}")
    return language


def experiment_record(
    results: dict, *, date: str | None = None, notes: str = "", language: str | None = None
) -> dict:
    """A flat, JSON-ready record of a run from `results` (the dict `train()` returns, or its results.json).

    Fields: date, dataset (name, folder, protocol, sizes), config (all keys), hyperparameters (a subset),
    speed settings, hr@10, ndcg@10, metrics (all test metrics), metrics_source, epochs, training time
    (s, s/epoch, tokens/s), peak memory, device/GPU, torch and Python versions, status, run folder, and
    `card`: the card's eight fields in `language` ("en" or "zh"; default: the config's record_language).
    """
    cfg = _need(results, "config", "the run's TrainConfig as a dict")
    language = _language(language, cfg)
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
        "config_name": cfg.get("name", results.get("name")),
        "config": {k: v for k, v in cfg.items()},
        "language": language,
    }
    record["card"] = card_fields(record, language)
    return record


def card_fields(record: dict, language: str = "en") -> dict:
    """The card's eight fields of `record`, {label: text} in the card's order, labels in `language`."""
    zh = _language(language, {}) == "zh"
    d, hp = record["dataset"], record["hyperparameters"]
    sizes = [(k, d[k]) for k in ("users", "rated_items", "interactions") if k in d]
    size_words = {"users": "用户", "rated_items": "被评分物品", "interactions": "交互"} if zh else {}
    sizes_text = ("、" if zh else ", ").join(f"{size_words.get(k, k)} {v:,}" for k, v in sizes)
    if zh:
        data = f"{d['name']}（{d['data_dir']}），协议 {d['protocol']}" + (f"；{sizes_text}" * bool(sizes))
    else:
        folder = "default folder" if d["data_dir"] == "(default)" else display_path(d["data_dir"])
        data = f"{d['name']} ({folder}), protocol {d['protocol']}" + (f"; {sizes_text}" * bool(sizes))
    config = str(record.get("config_name") or record.get("name"))
    if record.get("description"):
        config += f"：{record['description']}" if zh else f": {record['description']}"
    hyper = ", ".join(f"{k}={v}" for k, v in hp.items())
    t, te, n, spe = (
        record["training_time_s"],
        record["train_eval_time_s"],
        record["epochs_run"],
        record["s_per_epoch"],
    )
    if zh:
        time_text = f"训练 {t:.1f} s（含评估 {te:.1f} s），{n} 个 epoch，每 epoch {spe:.2f} s"
        gpu = record["gpu"] or f"无（{record['device']}）"
    else:
        time_text = f"{t:.1f} s train ({te:.1f} s with evaluation), {plural(n, 'epoch')}, {spe:.2f} s/epoch"
        gpu = record["gpu"] or f"none ({record['device']})"
    values = (
        record["date"],
        data,
        config,
        hyper,
        f"{record['hr@10']:.4f}",
        f"{record['ndcg@10']:.4f}",
        time_text,
        gpu,
    )
    return dict(zip(CARD_FIELDS["zh" if zh else "en"], values))


def record_markdown(record: dict, language: str | None = None) -> str:
    """The record as a Markdown block (a lab-notebook entry): the card's eight fields first, then the rest.

    `language`: "en" or "zh" (default: the record's own language)."""
    language = _language(language or record.get("language"), {})
    words = _EXTRA[language]
    lines = [
        f"## {words['title']}{'：' if language == 'zh' else ': '}{record['name']}",
        "",
        f"| {words['field']} | {words['value']} |",
        "|---|---|",
    ]
    lines += [f"| {label} | {text} |" for label, text in card_fields(record, language).items()]
    lines.append(
        f"| {words['speed']} | " + ", ".join(f"{k}={v}" for k, v in record["speed_settings"].items()) + " |"
    )
    source = record["metrics_source"]
    lines.append(f"| {words['source']} | {_source_zh(source) if language == 'zh' else source} |")
    lines.append(
        f"| {words['software']} | {record['device']}, torch {record['torch']}, Python {record['python']} |"
    )
    if record.get("peak_mem_gib") is not None:
        lines.append(f"| {words['memory']} | {record['peak_mem_gib']:.2f} GiB |")
    if record.get("run_dir"):
        lines.append(f"| {words['run_dir']} | {display_path(record['run_dir'])} |")
    if record.get("notes"):
        lines.append(f"| {words['notes']} | {record['notes']} |")
    return "\n".join(lines) + "\n"


def save_record(results: dict, folder: str | Path | None = None, **kwargs) -> dict:
    """Write `experiment.json` and `experiment.md` into `folder` (default: the run's folder).

    Returns the record."""
    record = experiment_record(results, **kwargs)
    folder = Path(folder or results.get("run_dir") or ".")
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=1, default=str, ensure_ascii=False)
    (folder / "experiment.json").write_text(text, encoding="utf-8")
    (folder / "experiment.md").write_text(record_markdown(record), encoding="utf-8")
    return record
