"""The speed and memory levers of the trainer, measured one at a time on the same HSTU model and data.

Each row changes one thing against the row named in its `vs` column and reports one training step (median
of synchronised steps), one epoch (a full pass over the training split, warm-up excluded), the first epoch
(with warm-up: autotuning, compilation, graph capture), tokens/s, and memory: the GPU's peak allocation
during training, or on a CPU an estimate (parameters + gradients + AdamW state + activations kept for
backward). Model and data: see `lever_config` and `lever_dataset`.
"""

from __future__ import annotations

import time
import traceback

import torch

from hstu_tutorial.perf.measure import machine_info, markdown_table
from hstu_tutorial.perf.trainer_runs import lever_config, lever_dataset, measure_trainer

# Each row: (id, group, setting, config overrides, measure_trainer keywords, id of the row it is compared to).
# "eager" = the trainer's plain PyTorch step, one launch per op; "graph" = the whole step (forward,
# backward, AdamW) captured once as a CUDA graph and replayed.
EAGER = dict(cuda_graphs="off")
GPU_ROWS = [
    (
        "fp32",
        "precision",
        "fp32 (TF32 off), PyTorch attention, jagged, eager",
        dict(EAGER, attention_impl="pytorch", layout="jagged", tf32=False),
        {},
        None,
    ),
    (
        "tf32",
        "precision",
        "TF32 matmuls",
        dict(EAGER, attention_impl="pytorch", layout="jagged", tf32=True),
        {},
        "fp32",
    ),
    (
        "bf16",
        "precision",
        "bf16 autocast (+TF32)",
        dict(EAGER, attention_impl="pytorch", layout="jagged", tf32=True, bf16=True),
        {},
        "tf32",
    ),
    (
        "triton",
        "attention",
        "Triton jagged kernel instead of PyTorch attention",
        dict(EAGER, attention_impl="triton", layout="jagged"),
        {},
        "tf32",
    ),
    (
        "padded_pt",
        "batches",
        "padded batches (B x 200), PyTorch attention",
        dict(EAGER, attention_impl="pytorch", layout="padded"),
        {},
        "tf32",
    ),
    (
        "padded_tr",
        "batches",
        "padded batches (B x 200), Triton attention",
        dict(EAGER, attention_impl="triton", layout="padded"),
        {},
        "triton",
    ),
    (
        "graph",
        "CUDA graph",
        "Triton, padded, step as one CUDA graph (trainer default)",
        dict(attention_impl="triton", layout="padded", cuda_graphs="on"),
        {},
        "padded_tr",
    ),
    (
        "graph_bf16",
        "CUDA graph",
        "trainer default + bf16 autocast",
        dict(attention_impl="triton", layout="padded", cuda_graphs="on", bf16=True),
        {},
        "graph",
    ),
    (
        "recompute_pt",
        "recompute",
        "activation recomputation, PyTorch attention",
        dict(EAGER, attention_impl="pytorch", layout="jagged"),
        {"recompute": True},
        "tf32",
    ),
    (
        "recompute_tr",
        "recompute",
        "activation recomputation, Triton attention",
        dict(EAGER, attention_impl="triton", layout="jagged"),
        {"recompute": True},
        "triton",
    ),
    (
        "accum4",
        "grad accumulation",
        "4 micro-batches of 32, PyTorch attention",
        dict(EAGER, attention_impl="pytorch", layout="jagged", grad_accum_steps=4),
        {},
        "tf32",
    ),
    ("bs64", "batch size", "batch 64 (trainer default)", dict(batch_size=64), {}, "graph"),
    ("bs256", "batch size", "batch 256 (trainer default)", dict(batch_size=256), {}, "graph"),
    ("bs512", "batch size", "batch 512 (trainer default)", dict(batch_size=512), {}, "graph"),
    (
        "host0",
        "data loading",
        "host DataLoader, 0 workers (vs device-resident)",
        dict(EAGER, attention_impl="triton", layout="jagged"),
        {"host_loader_workers": 0},
        "triton",
    ),
    (
        "host4",
        "data loading",
        "host DataLoader, 4 workers, pinned",
        dict(EAGER, attention_impl="triton", layout="jagged"),
        {"host_loader_workers": 4},
        "triton",
    ),
    (
        "compile",
        "torch.compile",
        "torch.compile, PyTorch attention, padded",
        dict(EAGER, attention_impl="pytorch", layout="padded", compile=True),
        {},
        "padded_pt",
    ),
]
# A CPU has no TF32, no Triton kernels (the interpreter is for correctness), no CUDA graphs, and
# torch.compile's C++ build takes minutes on two cores: the levers it can show.
CPU_ROWS = [
    ("fp32", "precision", "fp32, PyTorch attention, jagged", dict(layout="jagged"), {}, None),
    ("bf16", "precision", "bf16 autocast", dict(layout="jagged", bf16=True), {}, "fp32"),
    ("padded_pt", "batches", "padded batches", dict(layout="padded"), {}, "fp32"),
    (
        "recompute_pt",
        "recompute",
        "activation recomputation",
        dict(layout="jagged"),
        {"recompute": True},
        "fp32",
    ),
    ("accum4", "grad accumulation", "4 micro-batches", dict(layout="jagged", grad_accum_steps=4), {}, "fp32"),
    ("bs8", "batch size", "batch 8", dict(layout="jagged", batch_size=8), {}, "fp32"),
    ("bs128", "batch size", "batch 128", dict(layout="jagged", batch_size=128), {}, "fp32"),
    (
        "host0",
        "data loading",
        "host DataLoader, 0 workers (vs in-memory gather)",
        dict(layout="jagged"),
        {"host_loader_workers": 0},
        "fp32",
    ),
    (
        "host2",
        "data loading",
        "host DataLoader, 2 workers",
        dict(layout="jagged"),
        {"host_loader_workers": 2},
        "fp32",
    ),
]

COLUMNS = [
    ("group", "lever", ""),
    ("setting", "setting", ""),
    ("step_ms", "step (ms)", ".2f"),
    ("epoch_s", "epoch (s)", ".3f"),
    ("first_epoch_s", "1st epoch (s)", ".2f"),
    ("ktokens_per_s", "k tokens/s", ".0f"),
    ("speedup", "speed-up", ".2f"),
    ("vs", "vs", ""),
    ("mem_mib", "memory (MiB)", ".0f"),
    ("mem_ratio", "memory ratio", ".2f"),
    ("activations_mib", "activations (MiB)", ".1f"),
]


def run_levers(
    preset,
    rows=None,
    only=None,
    time_budget_s: float = 1e9,
    step_iters: int = 10,
    epochs: int = 2,
    autotune: bool = True,
    log=print,
) -> dict:
    """Measure `rows` (default: GPU_ROWS on a GPU, CPU_ROWS on a CPU); returns the payload that is saved.

    `autotune=False` runs every lever with the default Triton tiles (no tuning: about a minute less)."""
    t_start = time.perf_counter()
    dataset, data_desc, data_keys = lever_dataset(preset)
    if rows is None:
        rows = GPU_ROWS if torch.cuda.is_available() and preset.device == "cuda" else CPU_ROWS
    if only:
        rows = [r for r in rows if r[0] in only or r[1] in only]
    device = "cuda" if preset.device == "cuda" else "cpu"
    results = []
    by_id = {}
    for rid, group, setting, overrides, kw, ref in rows:
        if time.perf_counter() - t_start > time_budget_s:
            log(f"  {rid}: skipped (time budget of {time_budget_s:.0f} s spent)")
            results.append({"id": rid, "group": group, "setting": setting, "skipped": "time budget"})
            continue
        row = {"id": rid, "group": group, "setting": setting, "vs": ref, "overrides": overrides, **kw}
        try:
            cfg = lever_config(preset, data_keys, device=device, **{"autotune": autotune, **overrides})
            t0 = time.perf_counter()
            m = measure_trainer(cfg, dataset, step_iters=step_iters, epochs=epochs, **kw)
            row.update(m)
            row["wall_s"] = time.perf_counter() - t0
        except Exception as err:  # noqa: BLE001 - one failing lever must not lose the others
            row["error"] = f"{type(err).__name__}: {err}"
            log(traceback.format_exc(limit=3))
        row["mem_mib"] = (
            row.get("peak_mem_mib") if row.get("peak_mem_mib") is not None else row.get("est_mem_mib")
        )
        if "tokens_per_s" in row:
            row["ktokens_per_s"] = row["tokens_per_s"] / 1e3
        base = by_id.get(ref)
        if base and row.get("epoch_s") and base.get("epoch_s"):
            row["speedup"] = base["epoch_s"] / row["epoch_s"]
        elif base and row.get("tokens_per_s") and base.get("tokens_per_s"):  # steps only: throughput
            row["speedup"] = row["tokens_per_s"] / base["tokens_per_s"]
        if base and row.get("mem_mib") and base.get("mem_mib"):
            row["mem_ratio"] = row["mem_mib"] / base["mem_mib"]
        by_id[rid] = row
        results.append(row)
        msg = row.get("error") or (
            f"step {row['step_ms']:.2f} ms, epoch {row['epoch_s'] or 0:.3f} s, "
            f"mem {row['mem_mib'] or 0:.0f} MiB, act {row.get('activations_mib') or 0:.1f} MiB"
        )
        log(f"  {rid:13s} {setting}: {msg}")
    return {
        "benchmark": "levers",
        "machine": machine_info(device),
        "preset": preset.name,
        "data": data_desc,
        "model": "HSTU " + ("2 blocks, 1 head, d=50, batch 128" if preset.name == "full" else "small config"),
        "memory": "torch.cuda.max_memory_allocated during training"
        if device == "cuda"
        else "estimate: params + grads + AdamW state + activations kept for backward",
        "triton_tiles": "autotuned" if autotune else "fixed config (no autotuning)",
        "rows": results,
        "seconds": time.perf_counter() - t_start,
    }


def to_markdown(payload: dict) -> str:
    """A `run_levers` payload as Markdown: a heading, what was measured where, the table, notes, errors."""
    m = payload["machine"]
    head = [
        f"# Speed and memory levers: {payload['model']} on {payload['data']}",
        "",
        f"Measured {m['date_utc']} on {m['device']} (torch {m['torch']}, triton {m.get('triton')}), "
        f"preset {payload['preset']}, Triton tiles {payload.get('triton_tiles', 'autotuned')}. "
        f"Memory: {payload['memory']}. Epoch = one pass over the training split "
        "(no evaluation), warm-up excluded; '1st epoch' includes autotuning/compilation/graph capture. "
        "Speed-up: epoch time of the row named in 'vs' / this row's "
        "(tokens/s ratio when no epoch was timed).",
        "",
    ]
    rows = [r for r in payload["rows"] if "skipped" not in r]
    table = markdown_table(rows, COLUMNS)
    errors = [f"- {r['id']}: {r['error']}" for r in rows if r.get("error")]
    notes = [f"- {n}" for n in payload.get("notes", [])]
    return (
        "\n".join(head)
        + table
        + "\n"
        + ("\nNotes:\n" + "\n".join(notes) + "\n" if notes else "")
        + ("\nErrors:\n" + "\n".join(errors) + "\n" if errors else "")
    )
