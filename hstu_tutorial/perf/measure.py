"""Measuring primitives shared by the benchmarks and notebooks 07/08: machine, timing, memory, tables, files.

Everything here measures; nothing decides pass/fail. Times are wall-clock with the device synchronised at
the edges of what is timed; memory is `torch.cuda.max_memory_allocated` on a GPU.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

MIB = 2**20


def machine_info(device: torch.device | str | None = None) -> dict:
    """What a figure was measured on: device name, library versions, UTC date."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = {
        "date_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": (
            torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
        ),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001 - triton is optional on CPU
        info["triton"] = None
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def machine_tag(machine: dict, num_gpus: int = 1) -> str:
    """Short name of a machine for result folders: "h200", "h200x2", "gpu", "cpu"."""
    dev = machine.get("device", "")
    tag = "h200" if "H200" in dev else ("cpu" if dev.startswith("CPU") else "gpu")
    return f"{tag}x{num_gpus}" if num_gpus > 1 else tag


def results_folder(root: str | Path, machine: dict, num_gpus: int = 1) -> Path:
    """`<root>/<machine>_<date>`: where a result measured on `machine` is filed (e.g. h200_2026-11-28)."""
    return Path(root) / f"{machine_tag(machine, num_gpus)}_{machine['date_utc'][:10]}"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on a CPU), so wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a new peak-memory window on a GPU (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float | None:
    """Peak GPU allocation since the last `reset_peak` (MiB); None on a CPU, which has no such counter."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / MIB
    return None


def time_call(fn, device: torch.device, warmup: int = 2, iters: int = 10) -> dict:
    """Median and spread (ms) of `fn()` over `iters` synchronised calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}


def graph_replay_ms(fn, iters: int, stream: torch.cuda.Stream | None = None, warmup: int = 2) -> list[float]:
    """GPU milliseconds of each of `iters` replays of `fn` captured as one CUDA graph (CUDA events around
    every replay). `fn` runs `warmup` times on `stream` (a new one if None) first, then is captured there, so
    that autograd's nodes and cuBLAS's workspaces belong to the capturing stream. CUDA only."""
    stream = torch.cuda.Stream() if stream is None else stream
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        fn()
    out = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end))
    return out


def state_mib(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> float:
    """Parameters + gradients (+ optimizer state): what training holds besides activations, in MiB."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    opt = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            opt += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
        if not opt:  # AdamW before its first step: two moments per parameter
            opt = 2 * params
    return (2 * params + opt) / MIB


def save_results(payload: dict, stem: str, out_dirs, markdown: str | None = None) -> list[Path]:
    """Write `<stem>.json` (and `<stem>.md`) into each folder of `out_dirs` that is not None."""
    written = []
    for d in out_dirs:
        if not d:
            continue
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=_jsonable))
        written.append(d / f"{stem}.json")
        if markdown is not None:
            (d / f"{stem}.md").write_text(markdown)
            written.append(d / f"{stem}.md")
    return written


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return str(x)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as a Markdown table; `columns` = [(key, header, format)], missing values shown as '-'."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("-" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def random_jagged_batch(
    lengths, max_len: int, num_items: int = 30, device=None, seed: int = 0, wide_time_gaps: bool = False
):
    """A `JaggedBatch` of random histories with the given `lengths (B,)`, for timing and tests (no dataset).

    Time gaps between actions are uniform in [0, 50000) s, or with `wide_time_gaps` spread from seconds
    to months so that many time buckets of the relative bias are used.
    """
    from hstu_tutorial.data import JaggedBatch
    from hstu_tutorial.ops import lengths_to_offsets

    g = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths, dtype=torch.int64)  # (B,)
    T, B = int(lengths.sum()), lengths.numel()
    if wide_time_gaps:
        gaps = (10 ** torch.randint(0, 7, (T,), generator=g)) * torch.randint(1, 9, (T,), generator=g)  # (T,)
        ts = 10**9 + torch.cumsum(gaps, 0)  # (T,)
    else:
        ts = 956_703_932 + torch.cumsum(torch.randint(0, 50_000, (T,), generator=g), 0)  # (T,)
    batch = JaggedBatch(
        user_ids=torch.arange(B),
        item_ids=torch.randint(1, num_items + 1, (T,), generator=g),
        ratings=torch.randint(1, 6, (T,), generator=g),
        timestamps=ts,
        offsets=lengths_to_offsets(lengths),
        lengths=lengths,
        max_len=max_len,
        target_item_ids=torch.randint(1, num_items + 1, (B,), generator=g),
        target_ratings=torch.randint(1, 6, (B,), generator=g),
        target_timestamps=(ts.max() + 1000 if T else torch.tensor(10**9)).repeat(B),
    )
    return batch if device is None else batch.to(device)
