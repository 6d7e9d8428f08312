"""Checkpoints of a training run: the state a resume needs, atomic saves, loading, the best weights."""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch

from hstu_tutorial.errors import ConfigError

__all__ = ["load_checkpoint", "load_weights", "save_best", "save_checkpoint", "trainer_state"]

CHECKPOINT_FORMAT = "hstu_tutorial.train/1"
BEST_FORMAT = "hstu_tutorial.train/best"


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


def trainer_state(trainer) -> dict:
    """Everything a resume needs: weights, optimizer, position inside the epoch, history, RNG states."""
    return {
        "format": CHECKPOINT_FORMAT,
        "config": trainer.cfg.to_dict(),
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "epoch": trainer.epoch,
        "step_in_epoch": trainer.step_in_epoch,
        "global_step": trainer.global_step,
        "epoch_perm": trainer.epoch_perm,
        "perm_epoch": trainer.perm_epoch,
        "epoch_loss_sum": trainer.epoch_loss_sum,
        "history": trainer.history,
        "best": trainer.best,
        "bad_epochs": trainer.bad_epochs,
        "elapsed": dict(trainer.elapsed),
        "rng": _rng_state(trainer.device, trainer.perm_gen),
    }


def save_checkpoint(trainer, path: str | os.PathLike) -> Path:
    """Write `trainer_state(trainer)` to `path` (rank 0 only; never a half-written file)."""
    path = Path(path)
    if getattr(trainer, "rank", 0) != 0:  # one writer under DistributedDataParallel
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(trainer_state(trainer), tmp)
    os.replace(tmp, path)  # never leave a half-written checkpoint behind
    return path


def load_checkpoint(trainer, path: str | os.PathLike) -> None:
    """Continue from a checkpoint (model, optimizer, RNG states, position inside the epoch)."""
    path = Path(path)
    if path.is_dir():
        path = path / "ckpt_last.pt"
    if not path.is_file():
        raise ConfigError(f"resume = {str(path)!r}: no such checkpoint file")
    state = torch.load(path, map_location=trainer.device, weights_only=True)
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.epoch, trainer.step_in_epoch = state["epoch"], state["step_in_epoch"]
    trainer.global_step, trainer.history, trainer.best = state["global_step"], state["history"], state["best"]
    trainer.bad_epochs, trainer.elapsed = state["bad_epochs"], dict(state["elapsed"])
    trainer.epoch_perm, trainer.perm_epoch = state["epoch_perm"], state["perm_epoch"]
    trainer.epoch_loss_sum = state["epoch_loss_sum"].to(trainer.device)
    _set_rng_state(state["rng"], trainer.device, trainer.perm_gen)
    if trainer.run_dir is None:
        trainer.run_dir = path.parent


def load_weights(trainer, path: str | os.PathLike = "") -> int:
    """Load model weights only, e.g. the best checkpoint (default: the run's ckpt_best.pt); returns its
    epoch. Safe loading: `weights_only=True` accepts tensors and plain containers, never pickled code."""
    path = Path(path) if path else (trainer.run_dir or Path(".")) / "ckpt_best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train first, or pass the path of a ckpt_*.pt file")
    state = torch.load(path, map_location=trainer.device, weights_only=True)
    trainer.model.load_state_dict(state["model"])
    return int(state["epoch"])


def save_best(trainer, epoch: int) -> Path:
    """Write the current weights as the run's best (`ckpt_best.pt`, weights and config only)."""
    path = trainer.run_dir / "ckpt_best.pt"
    torch.save(
        {
            "format": BEST_FORMAT,
            "config": trainer.cfg.to_dict(),
            "epoch": epoch,
            "model": trainer.model.state_dict(),
        },
        path,
    )
    return path
