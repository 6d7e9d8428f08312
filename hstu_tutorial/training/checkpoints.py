"""Checkpoints of a training run: what a resume needs, atomic saves, and loading that names what is wrong.

Two kinds of file, both tagged `format = "hstu-tutorial-checkpoint"` with a `version` and a `kind`:

  * `ckpt_last.pt`, kind "resume": weights, optimizer, position in the run (epoch, step, the epoch's
    order), history, best-so-far, early-stopping counter and every RNG state. Written after every epoch
    (and on Ctrl-C / max_steps), so a hard kill loses at most the epoch in progress.
  * `ckpt_best.pt`, kind "weights": the weights of the best epoch by validation and the config. Load it
    with `Trainer.load_weights` or `--set init_from=...`; `--resume` on it says to use ckpt_last.pt.

Files hold only tensors, plain Python values and the config as a dict, so they always load with
`torch.load(..., weights_only=True)`: no pickled code is ever run. Every write goes to a temporary file
in the same folder, is flushed and fsync'ed, then renamed over the old file (`os.replace` is atomic): a
kill during the write leaves the previous checkpoint intact. Every problem with a file is one
`CheckpointError` line naming the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import warnings
import zipfile
from pathlib import Path

import torch

from hstu_tutorial.errors import CheckpointError
from hstu_tutorial.training.log import note

__all__ = [
    "FORMAT",
    "VERSION",
    "atomic_save",
    "check_compatible",
    "load_checkpoint",
    "load_weights",
    "resume_or_init",
    "read_checkpoint",
    "save_best",
    "save_checkpoint",
    "save_epoch",
    "epoch_state",
    "trainer_state",
    "with_record",
]

FORMAT = "hstu-tutorial-checkpoint"
VERSION = 1
# Files written before the format tag existed: still readable.
_LEGACY = {"hstu_tutorial.train/1": "resume", "hstu_tutorial.train/best": "weights"}

# Config keys that change only how a run is carried out or reported, not its numbers: a resume may
# change them (e.g. more num_epochs, another device). Every other key must match the checkpoint's.
RESUME_MAY_CHANGE = frozenset(
    {
        "name", "description", "device", "exp_dir", "timestamp_run_dir", "resume", "init_from",
        "tensorboard", "progress", "save_checkpoints", "checkpoint_every", "max_steps", "num_epochs",
        "early_stopping_patience", "eval_batch_size", "data_dir", "compile", "autotune", "cuda_graphs",
        "layout", "attention_impl",
    }
)  # fmt: skip
# Config keys that decide the names and shapes of the weights (what load_weights needs to agree on); the
# ablation switches use_pos_bias / use_time_bias drop bias tables and use_gate drops u's columns of W_uvqk.
MODEL_KEYS = (
    "model", "dataset", "synthetic_size", "max_seq_len", "embedding_dim", "num_blocks", "num_heads",
    "dqk", "dv", "ffn_hidden", "use_pos_bias", "use_time_bias", "use_gate",
)  # fmt: skip


# ---- RNG states -------------------------------------------------------------------------------------------


def _rng_state(device: torch.device, perm_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "perm": perm_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device, perm_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    perm_gen.set_state(state["perm"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---- writing ----------------------------------------------------------------------------------------------


def atomic_save(obj: dict, path: str | os.PathLike) -> Path:
    """`torch.save(obj)` to `path` so that a kill at any moment leaves either the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # same folder: os.replace never crosses file systems
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # the bytes are on disk before the rename makes them the checkpoint
    os.replace(tmp, path)
    try:  # make the rename itself durable (a power cut right after it keeps the new name)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - some file systems cannot fsync a folder
        pass
    return path


def trainer_state(trainer) -> dict:
    """Everything a resume needs: weights, optimizer, position inside the epoch, history, RNG states."""
    return with_record(epoch_state(trainer), trainer)


def epoch_state(trainer) -> dict:
    """`trainer_state` less what an epoch's evaluation decides (history, best, early-stopping counter, clocks):
    the trainer snapshots this as an epoch's steps end and adds the rest with `with_record` once the epoch's
    metrics are read back, while the next epoch's steps already run."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "resume",
        "config": trainer.cfg.to_dict(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "epoch": trainer.epoch,
        "step_in_epoch": trainer.step_in_epoch,
        "global_step": trainer.global_step,
        "epoch_perm": trainer.epoch_perm,
        "perm_epoch": trainer.perm_epoch,
        "epoch_loss_sum": trainer.epoch_loss_sum,
        "rng": _rng_state(trainer.device, trainer.perm_gen),
    }


def with_record(state: dict, trainer) -> dict:
    """`state` (an `epoch_state` or its snapshot) with the trainer's history, best epoch, early-stopping counter
    and clocks as they are now."""
    return {
        **state,
        # As one JSON string: pickled as a list it cost ~90 pickler calls per epoch record, in every one of
        # a run's E checkpoints (quadratic in E: 1.2 s of a 101-epoch ML-1M run on an H200, 2026-12-01).
        "history": json.dumps(trainer.history),
        "best": trainer.best,
        "bad_epochs": trainer.bad_epochs,
        "elapsed": dict(trainer.elapsed),
    }


def history_of(state: dict) -> list[dict]:
    """The per-epoch records of a resume checkpoint (a JSON string; a list in files written before 2026-12-01)."""
    history = state.get("history") or []
    return json.loads(history) if isinstance(history, str) else history


def _write(trainer, state: dict, path: Path, background: bool, then=None) -> Path:
    """`state` to `path`: now, after the files the trainer's writer still holds, or (`background`) through
    that writer, which copies the state now and writes it on its thread, then calls `then()`
    (training/epoch_writer.py)."""
    if background:
        return trainer.epoch_writer.submit(state, path, then)
    trainer.epoch_writer.flush()  # an older state queued earlier must not land on top of this one
    atomic_save(state, path)
    if then is not None:
        then()
    return path


def save_checkpoint(trainer, path: str | os.PathLike, background: bool = False, then=None) -> Path:
    """Write `trainer_state(trainer)` to `path`, atomically (rank 0 only); `background`, `then`: `_write`."""
    path = Path(path)
    if getattr(trainer, "rank", 0) != 0:  # one writer under DistributedDataParallel
        return path
    return _write(trainer, trainer_state(trainer), path, background, then)


def save_epoch(trainer, snapshot: tuple[dict, list], path: str | os.PathLike, then=None) -> Path:
    """Write an epoch's resume state, snapshotted as its steps ended (`epoch_writer.snapshot(epoch_state(...))`),
    completed with the trainer's record now, through the trainer's writer (rank 0 only)."""
    path = Path(path)
    if getattr(trainer, "rank", 0) != 0:
        return path
    copy_, ready = snapshot
    return trainer.epoch_writer.submit_snapshot(with_record(copy_, trainer), ready, path, then)


def _weights(trainer, epoch: int, model: dict) -> dict:
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": "weights",
        "config": trainer.cfg.to_dict(),
        "epoch": epoch,
        "model": model,
    }


def save_best(
    trainer, epoch: int, background: bool = False, snapshot: tuple[dict, list] | None = None
) -> Path:
    """Write the current weights as the run's best (`ckpt_best.pt`, kind "weights"), atomically. `snapshot`: an
    epoch's snapshotted state (`save_epoch`) whose weights to write instead, through the trainer's writer."""
    path = trainer.run_dir / "ckpt_best.pt"
    if snapshot is not None:
        copy_, ready = snapshot
        return trainer.epoch_writer.submit_snapshot(_weights(trainer, epoch, copy_["model"]), ready, path)
    return _write(trainer, _weights(trainer, epoch, trainer.model.state_dict()), path, background)


# ---- reading ----------------------------------------------------------------------------------------------


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0][:120]


def read_checkpoint(path: str | os.PathLike, kind: str = "resume", map_location="cpu") -> tuple[dict, Path]:
    """Load a checkpoint safely and check it is this project's, of `kind` ("resume" or "weights": a
    resume file also holds weights); returns (state, file). A folder means its ckpt_last.pt (resume) or
    ckpt_best.pt (weights). Raises CheckpointError with one line naming the file and the problem."""
    path = Path(path)
    if path.is_dir():
        name = "ckpt_last.pt" if kind == "resume" else "ckpt_best.pt"
        inside = sorted(p.name for p in path.glob("*.pt"))
        if not (path / name).is_file():
            more = f" and {len(inside) - 4} more" if len(inside) > 4 else ""
            found = f"it holds {', '.join(inside[:4])}{more}" if inside else "it holds no .pt file"
            hint = " (a run killed during its first epoch has nothing to resume: start it again)"
            raise CheckpointError(
                f"{path}: no {name} in this folder; {found}{hint if kind == 'resume' else ''}"
            )
        path = path / name
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such checkpoint file (check the path; run folders hold ckpt_last.pt)"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): the write that made it never finished")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (not a torch.save zip archive; "
            f"it starts with {head!r})"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: truncated or corrupt ({size:,} bytes, the zip archive has no end record)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: not a checkpoint of this project: it holds Python objects other than tensors and "
            "plain values, which this project never writes (and never loads)"
        ) from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt ({size:,} bytes): {_short(err)}") from None
    if not isinstance(state, dict) or "format" not in state:
        keys = f"keys {sorted(map(str, state))[:5]}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (no format = {FORMAT!r} field; it holds {keys})"
        )
    fmt = state["format"]
    if fmt in _LEGACY:
        state.setdefault("kind", _LEGACY[fmt])
    elif fmt != FORMAT:
        raise CheckpointError(
            f"{path}: not a checkpoint of this project (format = {fmt!r}, expected {FORMAT!r})"
        )
    elif int(state.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{path}: written by a newer hstu_tutorial (checkpoint version {state['version']}, "
            f"this one reads up to {VERSION}): update the package"
        )
    if kind == "resume" and state.get("kind") != "resume":
        last = path.parent / "ckpt_last.pt"
        instead = f"resume from {last}" if last.is_file() else "resume from the run's ckpt_last.pt"
        raise CheckpointError(
            f"{path}: holds weights only (kind {state.get('kind')!r}), no optimizer or RNG state to resume; "
            f"{instead}, or start a new run from these weights with --set init_from={path}"
        )
    if "model" not in state:
        raise CheckpointError(f"{path}: has no model weights (kind {state.get('kind')!r})")
    return state, path


def _config_differences(saved: dict, current: dict, keys) -> list[str]:
    out = []
    for key in keys:
        if key in saved and saved[key] != current.get(key):
            out.append(f"{key} = {saved[key]!r} in the checkpoint, {current.get(key)!r} in the config")
    return out


def _param_differences(saved: dict, model: torch.nn.Module) -> list[str]:
    """At most two phrases: how many parameter names differ (with examples), how many shapes differ."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in saved.items()}
    out = []
    only_ckpt = sorted(set(have) - set(want))
    only_model = sorted(set(want) - set(have))
    if only_ckpt or only_model:
        eg = [f"{only_ckpt[0]} only in the checkpoint" if only_ckpt else "",
              f"{only_model[0]} only in the model" if only_model else ""]  # fmt: skip
        n = len(only_ckpt) + len(only_model)
        out.append(f"{n} parameter names differ, e.g. {', '.join(e for e in eg if e)}")
    shapes = [k for k in sorted(set(want) & set(have)) if want[k] != have[k]]
    if shapes:
        k = shapes[0]
        out.append(
            f"{len(shapes)} parameter shapes differ, e.g. {k} is {list(have[k])} in the checkpoint, "
            f"{list(want[k])} in the model"
        )
    return out


def check_compatible(state: dict, path: Path, cfg, model: torch.nn.Module, kind: str = "resume") -> None:
    """Raise one CheckpointError line if the checkpoint at `path` was written for another model or config.

    Weights need the same parameter names and shapes; a resume also needs every config key that changes
    the run's numbers to match (`RESUME_MAY_CHANGE` lists the ones that may differ)."""
    saved_cfg = state.get("config") or {}
    current = cfg.to_dict()
    params = _param_differences(state["model"], model)
    if params:
        what = _config_differences(saved_cfg, current, MODEL_KEYS)[:3] + params
        raise CheckpointError(f"{path}: written for another model: {'; '.join(what)}")
    if kind == "resume":
        keys = [k for k in current if k not in RESUME_MAY_CHANGE]
        diffs = _config_differences(saved_cfg, current, keys)
        if diffs:
            more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
            raise CheckpointError(
                f"{path}: written with another config: {'; '.join(diffs[:3])}{more}. Resume with the "
                "checkpoint's own config (`hstu-train --resume <run folder>` without --config reads it), "
                "or start a new run"
            )


def load_checkpoint(trainer, path: str | os.PathLike) -> Path:
    """Continue from a checkpoint (weights, optimizer, RNG states, position in the run); returns the file."""
    state, path = read_checkpoint(path, "resume", map_location=trainer.device)
    check_compatible(state, path, trainer.cfg, trainer.model, "resume")
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.epoch, trainer.step_in_epoch = state["epoch"], state["step_in_epoch"]
    trainer.global_step, trainer.history, trainer.best = (
        state["global_step"],
        history_of(state),
        state["best"],
    )
    trainer.bad_epochs, trainer.elapsed = state["bad_epochs"], dict(state["elapsed"])
    trainer.epoch_perm, trainer.perm_epoch = state["epoch_perm"], state["perm_epoch"]
    trainer.epoch_loss_sum = state["epoch_loss_sum"].to(trainer.device)
    _set_rng_state(state["rng"], trainer.device, trainer.perm_gen)
    if trainer.run_dir is None:
        trainer.run_dir = path.parent
    return path


def load_weights(trainer, path: str | os.PathLike = "") -> int:
    """Load model weights only (default: the run's ckpt_best.pt; a ckpt_last.pt works too); returns the
    epoch they come from. The optimizer, RNG states and history are left alone."""
    path = Path(path) if path else (trainer.run_dir or Path(".")) / "ckpt_best.pt"
    state, path = read_checkpoint(path, "weights", map_location=trainer.device)
    check_compatible(state, path, trainer.cfg, trainer.model, "weights")
    trainer.model.load_state_dict(state["model"])
    epoch = state["epoch"]
    return int(epoch) - 1 if state.get("kind") == "resume" else int(epoch)  # resume: next epoch to run


def resume_or_init(trainer) -> bool:
    """At the start of `fit`: continue from `cfg.resume`, or start from the weights of `cfg.init_from`.

    Returns True when the run was resumed. Only a trainer that has not trained yet reads them."""
    cfg = trainer.cfg
    if trainer.global_step or trainer.history:
        return False
    if cfg.resume:
        file = load_checkpoint(trainer, cfg.resume)
        note(f"resumed from {file} at epoch {trainer.epoch} step {trainer.step_in_epoch}")
        return True
    if cfg.init_from:
        epoch = load_weights(trainer, cfg.init_from)
        note(f"weights from {cfg.init_from} (epoch {epoch}); the optimizer and the epoch count start afresh")
    return False
