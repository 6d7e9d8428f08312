"""Where a training command's first seconds go: phases of a `benchmarks/trace_setup.py` timeline.

`read_trace(path)` reads the Markdown timeline the script writes (one row per event: start second since
process start, duration, what) and `startup_phases(events, total)` splits the whole process into
consecutive phases that add up to its length:

    imports          Python, torch, triton and the package, until the command's `main` runs
    trainer set-up   `Trainer.__init__`: data on the device, model, optimizer
    before capture   from the epoch loop's start to the CUDA-graph capture (waiting for kernels compiled
                     ahead, the run folder, TensorBoard)
    kernel compiles  Triton compiles inside the capture
    capture, rest    the rest of the capture: warm-up steps, cuBLAS and CUDA kernel loading, the graph
    epochs           from the capture's end to the end of `fit`: 101 epochs, checkpoints, result files
    exit             printing the results and leaving the process
"""

from __future__ import annotations

import re
from pathlib import Path

PHASES = ("imports", "trainer set-up", "before capture", "kernel compiles", "capture, rest", "epochs", "exit")


def read_trace(path: str | Path) -> tuple[list[dict], float]:
    """The events of a trace_setup.md file and the process's length in seconds: ([{start, seconds, what}], total)."""
    events, total = [], None
    for line in Path(path).read_text().splitlines():
        row = re.match(r"\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*(.+?)\s*\|$", line)
        if row:
            events.append({"start": float(row[1]), "seconds": float(row[2]), "what": row[3]})
        end = re.search(r"Process start to end: ([\d.]+) s", line)
        if end:
            total = float(end[1])
    if not events or total is None:
        raise ValueError(f"{path} is not a benchmarks/trace_setup.py timeline (no event rows or no total)")
    return events, total


def _one(events: list[dict], prefix: str) -> dict:
    found = [e for e in events if e["what"].startswith(prefix)]
    if not found:
        raise ValueError(f"the timeline has no {prefix!r} event")
    return found[0]


def startup_phases(events: list[dict], total: float) -> dict[str, float]:
    """Seconds per phase (PHASES order); they add up to `total`, the process's length."""
    init = _one(events, "Trainer.__init__")
    start = _one(events, "Trainer._start")
    capture = _one(events, "Trainer.capture_graph")
    fit = _one(events, "fit (all epochs)")
    cap_end = capture["start"] + capture["seconds"]
    compiles = sum(
        e["seconds"]
        for e in events
        if e["what"].startswith("triton compile") and capture["start"] <= e["start"] < cap_end
    )
    fit_end = fit["start"] + fit["seconds"]
    phases = {
        "imports": init["start"],
        "trainer set-up": init["seconds"],
        "before capture": capture["start"] - start["start"],
        "kernel compiles": compiles,
        "capture, rest": capture["seconds"] - compiles,
        "epochs": fit_end - cap_end,
        "exit": total - fit_end,
    }
    # what lies between the set-up's end and the loop's start (a few ms) goes to the set-up
    phases["trainer set-up"] += start["start"] - (init["start"] + init["seconds"])
    return {name: max(0.0, phases[name]) for name in PHASES}
