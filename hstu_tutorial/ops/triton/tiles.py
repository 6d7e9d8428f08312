"""Tile tables of the Triton attention kernels: one shipped per GPU family, a cache per machine, a clock.

Every launch needs tile sizes (BLOCK_M, BLOCK_N, num_warps, num_stages). The fastest ones depend on the
GPU and on the call's shape class: kernel (fwd, dkdv, dq), the head dims rounded up to the kernel's block
dims, dtype (and the fp32 dot precision), causal, bias mode, the dK/dV kernel's gradient modes, and the
length class, the next power of two of the longest sequence. With `KernelOptions.tuning = "table"` (the
default) a shape class's tiles come from, in order:

  1. the table shipped with the package for this GPU family (`tiles_sm90.json`: H100, H200),
  2. the cache this project keeps per GPU and Triton version,
     `$HSTU_CACHE_DIR/triton_tiles/<gpu>-<name>-triton<version>.json` (else ~/.cache/hstu_tutorial/...),
  3. a tuning run (Triton's autotuner times the candidate tiles, about 20 s per kernel on an H200),
     whose choice is written to 2, so the next process reads it.

`tuning = "tune"` skips 1 and 2: every shape class is timed once in the process and saved to 2
(benchmarks/tune_tiles.py runs this to write the shipped table). Files are written atomically (a temporary
file, then a rename); a file that cannot be read is ignored with a warning, never trusted.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path

FORMAT = 1  # version of the files' layout
TABLE_DIR = Path(__file__).resolve().parent
_TILE_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
_tuning_s = [0.0]  # seconds spent tuning in this process (the trainer reports it)


def tuning_seconds() -> float:
    """Seconds this process has spent timing tile candidates (compiles included)."""
    return _tuning_s[0]


def add_tuning_time(seconds: float) -> None:
    """Add one tuning run's wall time to the process's tuning clock."""
    _tuning_s[0] += seconds


def gpu_family(device) -> str:
    """The compute capability of a CUDA device as a table name: "sm90" for an H100 or H200."""
    import torch

    major, minor = torch.cuda.get_device_capability(device)
    return f"sm{major}{minor}"


def shape_class(kind: str, dtype, consts: dict, max_seq_len: int) -> str:
    """The key of a launch in the tables, e.g. "fwd|dqk=64|dv=64|float32|tf32|causal=1|bias=2|n=256"."""
    dtype_name = str(dtype).removeprefix("torch.")
    parts = [kind, f"dqk={consts['BLOCK_D_QK']}", f"dv={consts['BLOCK_D_V']}", dtype_name]
    if dtype_name == "float32":  # bf16/fp16 dots ignore the precision setting
        parts.append(consts["DOT_PREC"])
    parts += [f"causal={int(consts['CAUSAL'])}", f"bias={int(consts['BIAS'])}"]
    if kind == "dkdv":
        parts += [f"rab_grad={int(consts['RAB_GRAD'])}", f"atomic_dq={int(consts['ATOMIC_DQ'])}"]
    parts.append(f"n={length_class(max_seq_len)}")
    return "|".join(parts)


def length_class(max_seq_len: int) -> int:
    """Next power of two of the longest length, at least 16: nearby lengths share one choice of tiles."""
    return max(16, 1 << max(0, int(max_seq_len) - 1).bit_length())


def check_tiles(tiles) -> dict:
    """`tiles` as a dict of the four launch settings, or ValueError saying what is wrong with it."""
    if not isinstance(tiles, dict) or set(tiles) != set(_TILE_KEYS):
        raise ValueError(f"tiles must be a dict with keys {list(_TILE_KEYS)}; got {tiles!r}")
    bm, bn, warps, stages = (tiles[k] for k in _TILE_KEYS)
    ok_block = all(isinstance(b, int) and b >= 16 and b & (b - 1) == 0 for b in (bm, bn))
    if not (ok_block and warps in (1, 2, 4, 8, 16) and isinstance(stages, int) and 1 <= stages <= 8):
        raise ValueError(
            f"tiles need BLOCK_M, BLOCK_N powers of two >= 16, num_warps in 1..16 (a power of "
            f"two) and num_stages in 1..8; got {tiles!r}"
        )
    return {k: int(tiles[k]) for k in _TILE_KEYS}


def tiles_of_config(config) -> dict:
    """The four launch settings of a `triton.Config` (what the autotuner chose)."""
    return check_tiles(
        {
            "BLOCK_M": config.kwargs["BLOCK_M"],
            "BLOCK_N": config.kwargs["BLOCK_N"],
            "num_warps": config.num_warps,
            "num_stages": config.num_stages,
        }
    )


def read_tile_file(path: Path, what: str) -> dict:
    """The shape-class -> tiles entries of a table or cache file; {} (with a warning) if it is unusable."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("tiles"), dict)
        if not ok:
            raise ValueError(f"not a format-{FORMAT} tile file (a dict with 'format' and 'tiles')")
        return {str(key): check_tiles(tiles) for key, tiles in data["tiles"].items()}
    except (OSError, ValueError) as err:  # json.JSONDecodeError is a ValueError
        warnings.warn(
            f"ignoring the {what} {path}: {err}. Delete the file (a tuning run writes a new "
            "one) or set HSTU_CACHE_DIR to another folder.",
            stacklevel=2,
        )
        return {}


def write_tile_file(path: Path, entries: dict, header: dict) -> None:
    """Write `entries` (shape class -> tiles) atomically: a temporary file in the same folder, renamed over
    `path`, so a reader never sees half a file and concurrent writers never mix theirs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, **header, "tiles": {k: entries[k] for k in sorted(entries)}}
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def default_cache_dir() -> Path:
    """$HSTU_CACHE_DIR/triton_tiles, else $XDG_CACHE_HOME/hstu_tutorial/triton_tiles, else ~/.cache/..."""
    from hstu_tutorial.data.paths import cache_root

    return cache_root() / "triton_tiles"


def _cache_root() -> Path:
    from hstu_tutorial.data.paths import cache_root

    return cache_root()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "gpu"


class TileStore:
    """Where the tiles of one GPU come from: the shipped table, the project's cache, tunings of this
    process (`lookup`), and where new tunings go (`save`)."""

    def __init__(
        self,
        gpu: str,
        device_name: str,
        triton_version: str,
        table_dir: Path | None = TABLE_DIR,
        cache_dir: Path | None = None,
        cache_root: Path | None = None,
    ):
        # cache_root: the project's cache folder that holds cache_dir; marked as the project's before the
        # first write, as the data loaders expect of it (hstu_tutorial.data.paths.owned_folder)
        self.cache_root = cache_root
        self.gpu, self.device_name, self.triton_version = gpu, device_name, triton_version
        self.table_path = None if table_dir is None else Path(table_dir) / f"tiles_{gpu}.json"
        self.cache_path = (
            None
            if cache_dir is None
            else (Path(cache_dir) / f"{gpu}-{_slug(device_name)}-triton{_slug(triton_version)}.json")
        )
        self._table: dict | None = None  # read on first lookup
        self._cache: dict | None = None
        self.chosen: dict[str, tuple[dict, str]] = {}  # shape class -> (tiles, "table"|"cache"|"tuned")

    def table(self) -> dict:
        if self._table is None:
            self._table = {} if self.table_path is None else read_tile_file(self.table_path, "tile table")
        return self._table

    def cache(self) -> dict:
        if self._cache is None:
            self._cache = {} if self.cache_path is None else read_tile_file(self.cache_path, "tile cache")
        return self._cache

    def lookup(self, key: str, use_saved: bool = True) -> tuple[dict | None, str]:
        """(tiles, source) for a shape class, or (None, "none"): tuned in this process first, then (if
        `use_saved`) the shipped table, then the cache."""
        hit = self.chosen.get(key)
        if hit is not None and (use_saved or hit[1] == "tuned"):
            return hit
        if use_saved:
            for source, entries in (("table", self.table()), ("cache", self.cache())):
                if key in entries:
                    self.chosen[key] = (entries[key], source)
                    return self.chosen[key]
        return None, "none"

    def forget(self, key: str) -> None:
        """Drop a choice that failed to launch (say, too much shared memory under another Triton)."""
        self.chosen.pop(key, None)
        self.table().pop(key, None)
        self.cache().pop(key, None)

    def save(self, key: str, tiles: dict) -> None:
        """Keep a tuned choice for this process and add it to the cache file (re-read first, so entries
        other processes wrote meanwhile survive)."""
        tiles = check_tiles(tiles)
        self.chosen[key] = (tiles, "tuned")
        if self.cache_path is None:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a corrupt file was reported on the first read; replace it
            entries = read_tile_file(self.cache_path, "tile cache")
        entries[key] = tiles
        self._cache = dict(entries)
        try:
            if self.cache_root is not None:
                from hstu_tutorial.data.paths import owned_folder

                owned_folder(self.cache_root)
            write_tile_file(self.cache_path, entries, self.header())
        except OSError as err:  # DataWriteError (a folder holding files not ours) is an OSError too
            warnings.warn(
                f"could not save tuned tiles to {self.cache_path} ({err}); this process keeps "
                "them. Set HSTU_CACHE_DIR to a folder you can write.",
                stacklevel=2,
            )
            self.cache_path = None  # say it once

    def header(self) -> dict:
        """What a file of this store says about where its numbers come from."""
        return {"gpu": self.gpu, "device": self.device_name, "triton": self.triton_version}

    def sources(self) -> dict[str, int]:
        """How many shape classes of this process came from each source."""
        out: dict[str, int] = {}
        for _, source in self.chosen.values():
            out[source] = out.get(source, 0) + 1
        return out


_stores: dict = {}


def store_for(device) -> TileStore:
    """The process's TileStore of a CUDA device (one per GPU index), with the default cache folder."""
    import torch
    import triton

    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    store = _stores.get(index)
    if store is None:
        store = _stores[index] = TileStore(
            gpu_family(index),
            torch.cuda.get_device_name(index),
            triton.__version__,
            cache_dir=default_cache_dir(),
            cache_root=_cache_root(),
        )
    return store


__all__ = [
    "TileStore",
    "add_tuning_time",
    "check_tiles",
    "gpu_family",
    "length_class",
    "read_tile_file",
    "shape_class",
    "store_for",
    "tiles_of_config",
    "tuning_seconds",
    "write_tile_file",
]
