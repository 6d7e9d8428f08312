"""Small (CPU) vs full (GPU) preset: one code path, two sizes, chosen automatically."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Preset:
    """Sizes a notebook or script uses. `small` runs on a 2-core CPU in minutes; `full` is the paper's."""

    name: str  # "small" or "full"
    device: str  # "cpu" or "cuda"
    dataset: str  # "synthetic" or "ml-1m"
    max_seq_len: int
    num_epochs: int
    batch_size: int
    synthetic_size: str  # size preset of the synthetic generator

    def describe(self) -> str:
        return (
            f"preset={self.name!r} device={self.device} dataset={self.dataset} "
            f"max_seq_len={self.max_seq_len} epochs={self.num_epochs} batch={self.batch_size}"
        )


SMALL = Preset("small", "cpu", "synthetic", 50, 3, 128, "ci")
FULL = Preset("full", "cuda", "ml-1m", 200, 101, 128, "ml-1m")


def get_preset(name: str | None = None, verbose: bool = True) -> Preset:
    """Pick the preset: `name`, else $HSTU_PRESET, else "full" on a CUDA machine and "small" elsewhere."""
    name = name or os.environ.get("HSTU_PRESET") or ("full" if torch.cuda.is_available() else "small")
    presets = {"small": SMALL, "full": FULL}
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)} (or unset HSTU_PRESET)")
    preset = presets[name]
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("preset 'full' needs a CUDA GPU, and torch sees none; use HSTU_PRESET=small")
    if verbose:
        print(f"[hstu_tutorial] {preset.describe()}")
    return preset
