"""The files a run leaves in its folder, written at the end of `fit` and read back for analyses and checks.

    results.json / results.md   the numbers (report.py), with the dataset's fingerprint
    ranks_test.csv              one row per test user: user_id, target_item_id, history_length, rank
    ranks_valid.csv             the same for the validation targets
    experiment.json / .md       the reproducible record (experiment.py)
    ckpt_best.pt, ckpt_last.pt  weights of the best epoch, the resumable state (checkpoints.py)
    events.out.tfevents.*       TensorBoard curves

The rank files hold the ranks of the epoch whose test metrics the results report as "best by validation":
they are kept in memory when that epoch is evaluated (no second evaluation), so their metrics are exactly
the reported ones. `results["rank_files"]` says which epoch and which weights they come from. They are
local run outputs (per-user rows of the dataset): never commit them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hstu_tutorial.metrics import ranks_table
from hstu_tutorial.training import report
from hstu_tutorial.training.log import note

__all__ = ["RANK_FILES", "load_run", "read_ranks", "run_listing", "write_run_files"]

RANK_FILES = {"test": "ranks_test.csv", "valid": "ranks_valid.csv"}


def _best_epoch_ranks(trainer) -> tuple[dict, str] | None:
    """The (split -> ranks (U,)) of the best-by-validation epoch and which weights they come from."""
    best = trainer.best
    if best is None:
        return None
    kept = trainer.best_ranks
    if kept is not None and kept[0] == best["epoch"]:
        return kept[1], "best by validation"
    # A resumed run whose best epoch ran before the interruption: rank again with the saved best weights
    if trainer.run_dir is not None and (trainer.run_dir / "ckpt_best.pt").is_file():
        current = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        try:
            if trainer.load_weights() == best["epoch"]:
                return {s: trainer.ranks(s) for s in RANK_FILES}, "best by validation (ckpt_best.pt)"
        finally:
            trainer.model.load_state_dict(current)
    return None


def write_run_files(trainer, results: dict) -> None:
    """results.json, results.md, the rank files and the experiment record in the run folder (rank 0 only).

    Adds `rank_files` ({"test", "valid": file names, "epoch", "weights": which ones}) to `results`."""
    run_dir = trainer.run_dir
    if run_dir is None or trainer.rank != 0:
        return
    found = _best_epoch_ranks(trainer)
    if found is None and trainer.history:
        note("no rank files: the best epoch's ranks are gone (resumed run without ckpt_best.pt)")
    if found is not None:
        ranks, weights = found
        for split, file in RANK_FILES.items():
            rs = trainer.splits[split]
            U = rs.num_users  # the resident split has one extra filler row
            table = ranks_table(ranks[split], rs.user_ids[:U], rs.target_item_ids[:U], rs.lengths[:U])
            table.to_csv(run_dir / file, index=False)
        results["rank_files"] = {**RANK_FILES, "epoch": trainer.best["epoch"], "weights": weights}
    report.write_results(results, run_dir)


# The files a run folder can hold (besides TensorBoard's events.out.*), and what each holds.
RUN_FILES = {
    "results.json": "the numbers, config and dataset fingerprint",
    "results.md": "the numbers as a table",
    "ranks_test.csv": "per-user test ranks of the best epoch (for per-bucket analyses)",
    "ranks_valid.csv": "per-user validation ranks of the best epoch",
    "experiment.json": "the experiment record",
    "experiment.md": "the experiment record as text",
    "ckpt_best.pt": "weights of the best epoch by validation",
    "ckpt_last.pt": "the state to resume from (--set resume=...)",
}


def run_listing(run_dir: str | os.PathLike) -> str:
    """One line per file of a run folder, with what it holds (for the end of a command-line run)."""
    run_dir = Path(run_dir)
    lines = [f"run folder {run_dir}:"]
    for name, text in RUN_FILES.items():
        if (run_dir / name).is_file():
            lines.append(f"  {name:<16} {text}")
    if any(run_dir.glob("events.out.tfevents.*")):
        lines.append(f"  {'events.out.*':<16} TensorBoard curves (tensorboard --logdir {run_dir.parent})")
    return "\n".join(lines)


def load_run(run) -> tuple[dict, Path | None]:
    """(results, run folder) of a run: what `train()` returned, a run folder or its results.json."""
    if isinstance(run, dict):
        trainer = run.get("trainer")
        folder = getattr(trainer, "run_dir", None) or run.get("run_dir")
        return run, (Path(folder) if folder else None)
    path = Path(run)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file (a run folder holds results.json once a run ended)")
    return json.loads(file.read_text()), file.parent


def read_ranks(run, split: str = "test"):
    """The per-user ranks a run saved (`ranks_<split>.csv`) as a DataFrame; `run` as for `load_run`."""
    import pandas as pd

    if split not in RANK_FILES:
        raise ValueError(f"split must be one of {sorted(RANK_FILES)}, got {split!r}")
    _, folder = load_run(run)
    file = (folder or Path(".")) / RANK_FILES[split]
    if not file.is_file():
        raise FileNotFoundError(
            f"{file}: no rank file. Runs save ranks_test.csv and ranks_valid.csv once an epoch was evaluated; "
            "train again with this version of the package."
        )
    return pd.read_csv(file, dtype="int64")
