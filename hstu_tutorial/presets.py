"""The notebooks' presets: one code path, three sizes, chosen automatically.

- `small`: CPU, the synthetic MovieLens look-alike; what CI runs (a few minutes per notebook on 2 cores).
- `real-cpu`: CPU with MovieLens-1M on disk (data/ml-1m or data/ml-1m-u2999): the real data, with training
  cut to a CPU budget of a few minutes; results that need a fully trained model are read from the committed
  GPU result files (`hstu_tutorial.results`).
- `full`: a CUDA GPU, MovieLens-1M, the paper's sizes; everything is recomputed live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Sizes a notebook or script uses. `small` runs on a 2-core CPU in minutes; `full` is the paper's."""

    name: str  # "small", "real-cpu" or "full"
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

    @property
    def real_data(self) -> bool:
        """True when the preset runs on MovieLens-1M (`real-cpu` and `full`)."""
        return self.dataset == "ml-1m"

    @property
    def gpu(self) -> bool:
        """True when the preset trains at the paper's size on a GPU (`full`)."""
        return self.device == "cuda"

    def pick(self, small, real_cpu, full):
        """One value per preset, e.g. epochs: `preset.pick(2, 3, 101)`."""
        return {"small": small, "real-cpu": real_cpu, "full": full}[self.name]

    def load_dataset(self, **kwargs):
        """This preset's dataset as a `RecoDataset` (`get_reco_dataset` with the preset's name, sizes and
        folder); `kwargs` go to `get_reco_dataset` (e.g. `protocol=`, `verbose=`)."""
        from hstu_tutorial.data import get_reco_dataset

        if self.real_data:
            return get_reco_dataset("ml-1m", self.max_seq_len, ml1m_folder(), **kwargs)
        return get_reco_dataset(
            "synthetic", self.max_seq_len, synthetic_size=self.synthetic_size, **{"seed": 0, **kwargs}
        )


SMALL = Preset("small", "cpu", "synthetic", 50, 3, 128, "ci")
REAL_CPU = Preset("real-cpu", "cpu", "ml-1m", 200, 3, 128, "ml-1m")
FULL = Preset("full", "cuda", "ml-1m", 200, 101, 128, "ml-1m")
PRESETS = {p.name: p for p in (SMALL, REAL_CPU, FULL)}


def ml1m_folder():
    """The first folder holding ML-1M's three files: data/ml-1m, then data/ml-1m-u2999 (None if neither)."""
    from hstu_tutorial.data import data_root
    from hstu_tutorial.data.movielens import has_ml1m_files

    found = [f for f in (data_root() / "ml-1m", data_root() / "ml-1m-u2999") if has_ml1m_files(f)]
    return found[0] if found else None


def get_preset(name: str | None = None, verbose: bool = True) -> Preset:
    """Pick the preset: `name`, else $HSTU_PRESET, else "full" on a CUDA machine, "real-cpu" on a CPU
    with MovieLens-1M on disk, and "small" elsewhere."""
    import torch  # here, not at the top: `import hstu_tutorial` stays light (hstu_tutorial/precompile.py)

    chosen_by = "HSTU_PRESET" if not name and os.environ.get("HSTU_PRESET") else None
    name = name or os.environ.get("HSTU_PRESET")
    folder = ml1m_folder()  # looked up once: it decides the automatic choice and checks real-cpu
    if not name:
        if torch.cuda.is_available():
            name, chosen_by = "full", "a CUDA GPU is present"
        elif folder is not None:
            name, chosen_by = "real-cpu", f"no GPU, MovieLens-1M found in data/{folder.name}"
        else:
            name, chosen_by = "small", "no GPU and no MovieLens-1M in data/: the synthetic look-alike"
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)} (or unset HSTU_PRESET)")
    preset = PRESETS[name]
    if preset.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "preset 'full' needs a CUDA GPU, and torch sees none; use HSTU_PRESET=real-cpu or small"
        )
    if preset.real_data and folder is None and not preset.gpu:
        raise RuntimeError(
            "preset 'real-cpu' needs MovieLens-1M in data/ml-1m (ratings.dat, movies.dat, users.dat); "
            "see data/README.md, or use HSTU_PRESET=small"
        )
    if verbose:
        why = f" (chosen by {chosen_by})" if chosen_by else ""
        print(f"[hstu_tutorial] {preset.describe()}{why}")
    return preset
