"""Per-user sequences -> leave-one-out splits -> jagged batches (values + offsets), fed fast to a GPU.

A split is stored once as flat tensors: the histories of all its users concatenated (`item_ids (T,)`, ...)
plus `offsets (U+1,)`, and one target per user. A batch is a gather from these tensors (no per-user Python
loop), so the same code serves the CPU, a pinned-memory copy to the GPU, or a split that lives on the GPU.

Leave-one-out, for a user with time-sorted items s[0..L-1] (`protocol` picks how train is cut):

    test        history s[:-1]  target s[-1]
    valid       history s[:-2]  target s[-2]
    train       "reference":  history s[:-2], target s[-2] (everything but the test item, as the paper's code)
                "validation": history s[:-3], target s[-3] (the valid item is held out too: early stopping)

A history keeps its most recent `max_seq_len` items; users whose history would be empty are skipped.
Training supervises every position: position i of a history predicts item i+1, the last one the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hstu_tutorial.data import fetch
from hstu_tutorial.data import movielens as ml
from hstu_tutorial.data.errors import UnknownDatasetError
from hstu_tutorial.data.paths import cache_root, data_root, display_path, owned_folder
from hstu_tutorial.data.synthetic import generate_synthetic
from hstu_tutorial.progress import hooks as progress_hooks

PROTOCOLS = {"reference": 2, "validation": 3}  # protocol -> how many items the train split drops at the end
SPLIT_DROP = {"valid": 2, "test": 1}

_JAGGED = ("item_ids", "ratings", "timestamps")
_TARGETS = ("target_item_ids", "target_ratings", "target_timestamps")


@dataclass
class JaggedBatch:
    """B histories as jagged tensors.

    `item_ids`, `ratings`, `timestamps`: `(T,)`, oldest first, T = sum(lengths); `offsets (B+1,)`: history b
    is `values[offsets[b]:offsets[b+1]]`; targets `(B,)`: the item that follows each history.

    `next_item_ids (T,)` is the training supervision: the item each position predicts (the next item of
    its history, the target at the last position; 0 = not supervised, e.g. padding). Batches of a split
    always carry it; the trainer's padded layout (hstu_tutorial.training.resident) fills it with zeros
    after each history."""

    user_ids: torch.Tensor  # (B,)
    item_ids: torch.Tensor  # (T,)
    ratings: torch.Tensor  # (T,)
    timestamps: torch.Tensor  # (T,)
    offsets: torch.Tensor  # (B+1,)
    lengths: torch.Tensor  # (B,)
    max_len: int  # the split's max_seq_len: pad width N of padded views
    target_item_ids: torch.Tensor  # (B,)
    target_ratings: torch.Tensor  # (B,)
    target_timestamps: torch.Tensor  # (B,)
    next_item_ids: torch.Tensor | None = None  # (T,) the item each position predicts; 0 = none
    # (B,) items of each history when a sequence holds more rows than that (the trainer's padded layout:
    # N rows each, the history first); None: every row is an item. HSTU's Triton attention skips the rest.
    history_lengths: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def num_tokens(self) -> int:
        return self.item_ids.shape[0]

    @property
    def device(self) -> torch.device:
        return self.item_ids.device

    def _map(self, fn) -> JaggedBatch:
        return JaggedBatch(
            **{
                f.name: (fn(v) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)
            }
        )

    def to(self, device, non_blocking: bool = False) -> JaggedBatch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> JaggedBatch:
        return self._map(lambda t: t.pin_memory())

    def padded(self, field="item_ids", max_len: int | None = None, padding_value=0) -> torch.Tensor:
        """Zero-padded `(B, N, ...)` view of a jagged field (a name, or any `(T, ...)` tensor aligned with
        the batch); history b fills positions `0..lengths[b]-1`. N defaults to `max_len` (the split's)."""
        values = getattr(self, field) if isinstance(field, str) else field  # (T, ...)
        n = self.max_len if max_len is None else max_len
        # No history is longer than the split's max_len, so on a GPU the check (a device->host read) is
        # only paid when a narrower width is asked for; on the CPU it is free and always made.
        check = n < self.max_len or values.device.type == "cpu"
        longest = int(self.lengths.max()) if check and self.batch_size else 0
        if longest > n:
            raise ValueError(
                f"padded(): a history has {longest} items but max_len={n}; pass max_len >= {longest}"
            )
        out = values.new_full((self.batch_size, n, *values.shape[1:]), padding_value)  # (B, N, ...)
        row, col = jagged_coordinates(self.offsets, self.lengths, values.shape[0])  # (T,), (T,)
        out.view(-1, *values.shape[1:]).index_copy_(0, row * n + col, values)  # (B*N, ...)
        return out

    def mask(self, max_len: int | None = None) -> torch.Tensor:
        """`(B, N)` bool: True where the padded view holds a real item."""
        n = self.max_len if max_len is None else max_len
        return torch.arange(n, device=self.lengths.device)[None, :] < self.lengths[:, None]


def jagged_coordinates(offsets: torch.Tensor, lengths: torch.Tensor, total: int):
    """For every jagged position t: its sequence `row (T,)` and position inside it `col (T,)`.

    Marks where each sequence starts and takes a cumulative sum: one pass, no per-sequence loop, and (unlike
    `repeat_interleave`) no multi-threaded kernel that stalls on a busy CPU. Works for empty sequences too.
    """
    dev = offsets.device
    starts = torch.zeros(total + 1, dtype=torch.int64, device=dev)  # (T+1,)
    ones = torch.ones(max(lengths.shape[0] - 1, 0), dtype=torch.int64, device=dev)
    starts.index_add_(0, offsets[1:-1], ones)  # +1 where sequence b+1 starts (several if some are empty)
    row = starts[:total].cumsum(0)  # (T,)
    col = torch.arange(total, device=dev) - offsets.index_select(0, row)  # (T,)
    return row, col


def batch_totals(lengths: torch.Tensor, order: torch.Tensor, batch_size: int) -> list[int]:
    """Token count of each batch of `batch_size` users taken in `order (U',)` from `lengths (U,)`.

    One device->host transfer for a whole epoch of batches, instead of one per step."""
    lens = lengths[order]  # (U',)
    which = torch.arange(order.shape[0], device=order.device) // batch_size  # (U',) batch of each user
    num = -(-order.shape[0] // batch_size)
    return torch.zeros(num, dtype=torch.int64, device=order.device).index_add_(0, which, lens).tolist()


@dataclass
class SequenceSplit:
    """One split, stored flat: U users' histories concatenated `(T,)`, `offsets (U+1,)`, targets `(U,)`."""

    name: str
    pad_width: int  # N of padded views: the dataset's max_seq_len (no history is longer)
    user_ids: torch.Tensor  # (U,)
    item_ids: torch.Tensor  # (T,)
    ratings: torch.Tensor  # (T,)
    timestamps: torch.Tensor  # (T,)
    offsets: torch.Tensor  # (U+1,)
    target_item_ids: torch.Tensor  # (U,)
    target_ratings: torch.Tensor  # (U,)
    target_timestamps: torch.Tensor  # (U,)

    def __len__(self) -> int:
        return self.user_ids.shape[0]

    @property
    def lengths(self) -> torch.Tensor:
        return self.offsets[1:] - self.offsets[:-1]  # (U,)

    @property
    def num_tokens(self) -> int:
        return self.item_ids.shape[0]

    def to(self, device) -> SequenceSplit:
        return SequenceSplit(
            **{
                f.name: (v.to(device) if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)
            }
        )

    def batch(self, index: torch.Tensor, total: int | None = None) -> JaggedBatch:
        """Gather the users `index (B,)` into a JaggedBatch, on the split's device. `total` (= their summed
        lengths) avoids a device->host sync when known in advance."""
        index = torch.as_tensor(index, dtype=torch.int64, device=self.offsets.device)
        starts = self.offsets.index_select(0, index)  # (B,)
        lengths = self.offsets.index_select(0, index + 1) - starts  # (B,)
        offsets = torch.zeros(index.shape[0] + 1, dtype=torch.int64, device=index.device)
        torch.cumsum(lengths, 0, out=offsets[1:])  # (B+1,)
        if total is None:
            total = int(offsets[-1])
        row, col = jagged_coordinates(offsets, lengths, total)  # (T,), (T,)
        src = starts.index_select(0, row) + col  # (T,) positions in the split's flat arrays
        targets = self.target_item_ids.index_select(0, index)  # (B,)
        # Position t predicts the split's next token; a history's last position predicts its target
        # (every history of a split holds at least one item, so offsets[1:] - 1 is its last position).
        nxt = self.item_ids.index_select(0, (src + 1).clamp(max=max(self.num_tokens - 1, 0)))  # (T,)
        nxt.index_copy_(0, offsets[1:] - 1, targets)
        return JaggedBatch(
            user_ids=self.user_ids.index_select(0, index),
            item_ids=self.item_ids.index_select(0, src),
            ratings=self.ratings.index_select(0, src),
            timestamps=self.timestamps.index_select(0, src),
            offsets=offsets,
            lengths=lengths,
            max_len=self.pad_width,
            target_item_ids=targets,
            target_ratings=self.target_ratings.index_select(0, index),
            target_timestamps=self.target_timestamps.index_select(0, index),
            next_item_ids=nxt,
        )

    def histories(self) -> list[list[int]]:
        """Item histories as Python lists (for tables and tests; not for the training loop)."""
        cuts = self.offsets[1:-1].cpu().numpy()
        return [a.tolist() for a in np.split(self.item_ids.cpu().numpy(), cuts)]


def make_split(flat: ml.FlatSequences, name: str, drop_last: int, max_seq_len: int) -> SequenceSplit:
    """Cut every user's sequence: target = s[-drop_last], history = up to `max_seq_len` items before it."""
    starts, ends = flat.offsets[:-1], flat.offsets[1:]  # (U,)
    tgt = ends - drop_last  # (U,) position of each target
    keep = tgt - starts >= 1  # a history needs at least one item
    starts, tgt = starts[keep], tgt[keep]
    h_start = np.maximum(starts, tgt - max_seq_len)  # most recent max_seq_len items
    lengths = tgt - h_start  # (U',)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)  # (U'+1,)
    src = np.repeat(h_start - offsets[:-1], lengths) + np.arange(offsets[-1])  # (T,)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
    return SequenceSplit(
        name=name,
        pad_width=max_seq_len,
        user_ids=t(flat.user_ids[keep]),
        item_ids=t(flat.item_ids[src]),
        ratings=t(flat.ratings[src]),
        timestamps=t(flat.timestamps[src]),
        offsets=t(offsets),
        target_item_ids=t(flat.item_ids[tgt]),
        target_ratings=t(flat.ratings[tgt]),
        target_timestamps=t(flat.timestamps[tgt]),
    )


class BatchLoader:
    """Iterates a split in batches of `JaggedBatch`.

    Shuffles with a torch generator seeded with `seed + epoch` (a new order each pass, the same run to run).
    With `resident=True` (the default on CUDA) the split is copied to the device once and every batch is
    gathered there; otherwise batches are gathered on the CPU, pinned and
    copied with `non_blocking=True` when the device is a GPU."""

    def __init__(
        self,
        split: SequenceSplit,
        batch_size: int,
        *,
        shuffle: bool = False,
        device="cpu",
        drop_last: bool = False,
        seed: int = 0,
        resident: bool | None = None,
        cache: dict | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.resident = self.device.type != "cpu" if resident is None else resident
        self.batch_size, self.shuffle, self.drop_last, self.seed = batch_size, shuffle, drop_last, seed
        self.epoch = 0
        if self.resident and self.device.type != "cpu":
            key = (split.name, str(self.device))
            if cache is not None and key in cache:
                split = cache[key]
            else:
                split = split.to(self.device)
                if cache is not None:
                    cache[key] = split
        self.split = split
        self.source_device = split.offsets.device

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n, bs, dev = len(self.split), self.batch_size, self.source_device
        if self.shuffle:
            g = torch.Generator(device=dev)
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=g, device=dev)  # (U,)
        else:
            order = torch.arange(n, device=dev)
        self.epoch += 1
        num = len(self)
        totals = batch_totals(self.split.lengths, order[: num * bs] if self.drop_last else order, bs)
        to_gpu = self.device.type != "cpu" and dev.type == "cpu"
        for b in range(num):
            batch = self.split.batch(order[b * bs : (b + 1) * bs], total=totals[b])
            if to_gpu:
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            yield batch


class RecoDataset:
    """A recommendation dataset: raw tables, per-user sequences, leave-one-out splits, batch loaders.

    Attributes: name, max_seq_len, protocol, num_items (largest item id; 0 = padding), catalogue (`(I,)` every
    valid item id, sorted), num_users, item_titles, ratings_df (file order), sequences (one row per user,
    lists, time-sorted), movies_df, users_df, train / valid / test (`SequenceSplit`), folder, seconds.
    """

    def __init__(
        self,
        name: str,
        ratings: pd.DataFrame,
        movies: pd.DataFrame,
        users: pd.DataFrame | None,
        *,
        max_seq_len: int = 200,
        protocol: str = "reference",
        stable_sort: bool = True,
        folder=None,
    ):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        if max_seq_len < 1:
            raise ValueError(f"max_seq_len must be >= 1, got {max_seq_len}")
        self.name, self.max_seq_len, self.protocol, self.stable_sort = (
            name,
            max_seq_len,
            protocol,
            stable_sort,
        )
        self.folder = None if folder is None else Path(folder)
        self.ratings_df, self.movies_df, self.users_df = ratings, movies, users
        self.flat = ml.sort_sequences(ratings, stable=stable_sort)
        self.sequences = ml.sequences_frame(self.flat)
        self.catalogue = torch.from_numpy(np.sort(movies["item_id"].to_numpy()).astype(np.int64))  # (I,)
        self.num_items = int(max(self.catalogue.max(), ratings["item_id"].max()))
        self.num_users = len(self.flat.user_ids)
        self.item_titles = dict(zip(movies["item_id"].tolist(), movies["title"].tolist()))
        self.train = make_split(self.flat, "train", PROTOCOLS[protocol], max_seq_len)
        self.valid = make_split(self.flat, "valid", SPLIT_DROP["valid"], max_seq_len)
        self.test = make_split(self.flat, "test", SPLIT_DROP["test"], max_seq_len)
        self._device_cache: dict = {}
        self.seconds = 0.0

    def split(self, name) -> SequenceSplit:
        if isinstance(name, SequenceSplit):
            return name
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {name!r}")
        return getattr(self, name)

    def loader(
        self,
        split="train",
        batch_size: int = 128,
        *,
        shuffle: bool = False,
        device="cpu",
        drop_last: bool = False,
        seed: int = 0,
        resident: bool | None = None,
    ) -> BatchLoader:
        """Batches of `JaggedBatch` over a split ("train", "valid", "test"); see `BatchLoader`."""
        return BatchLoader(
            self.split(split),
            batch_size,
            shuffle=shuffle,
            device=device,
            drop_last=drop_last,
            seed=seed,
            resident=resident,
            cache=self._device_cache,
        )

    def stats(self) -> dict:
        """Counts: users with ratings, rated items, interactions, catalogue size, largest id, load time."""
        return {
            "dataset": self.name,
            "users": self.num_users,
            "rated_items": int(self.ratings_df["item_id"].nunique()),
            "interactions": len(self.ratings_df),
            "catalogue": len(self.catalogue),
            "num_items": self.num_items,
            "train_users": len(self.train),
            "valid_users": len(self.valid),
            "test_users": len(self.test),
            "seconds": round(self.seconds, 3),
        }

    def write_sasrec_format(self, path=None) -> Path:
        """Write the reference's `sasrec_format.csv` (default: `<cache>/<name>-sasrec_format.csv`, in the
        project's cache folder: the dataset's own folder is only read)."""
        if path is None:
            path = owned_folder(cache_root()) / f"{self.name}-sasrec_format.csv"
        path = Path(path)
        return ml.write_sasrec_format(self.flat, self.users_df, path)

    def __repr__(self) -> str:
        s = self.stats()
        return (
            f"RecoDataset({self.name!r}: {s['users']:,} users, {s['rated_items']:,} rated items, "
            f"{s['interactions']:,} interactions, catalogue {s['catalogue']:,} (max id {s['num_items']}), "
            f"max_seq_len={self.max_seq_len}, protocol={self.protocol!r}, stable_sort={self.stable_sort})"
        )


def get_reco_dataset(
    name: str,
    max_seq_len: int = 200,
    data_dir=None,
    *,
    protocol: str = "reference",
    stable_sort: bool = True,
    synthetic_size: str = "ci",
    seed: int = 0,
    verbose: bool = True,
    download_ok: bool | None = None,
) -> RecoDataset:
    """Load `"ml-1m"`, `"ml-100k"` or `"synthetic"` as a `RecoDataset` (see the module docstring for splits).

    `data_dir`: a folder holding the raw files (for ml-1m any folder with ratings.dat, movies.dat and
    users.dat in ML-1M's format is used as is, e.g. data/ml-1m-u2999); it is only read. Default
    `<repo>/data/<name>` ($HSTU_DATA_DIR replaces `<repo>/data`). ML-1M is downloaded (md5-checked) into the
    project's cache folder when absent, unless `download_ok=False` or $HSTU_OFFLINE is set. `synthetic` is
    generated on first use into `<root>/synthetic-<size>-seed<seed>/`, root = `data_dir` (a new or empty
    folder, or one the project created) or the cache folder ($HSTU_CACHE_DIR, else ~/.cache/hstu_tutorial).
    Unusable names, folders and files raise a `hstu_tutorial.errors.DataError` saying what to do.
    """
    t0 = time.perf_counter()
    if name == "ml-1m":
        folder = fetch.find_or_fetch_ml1m(
            Path(data_dir) if data_dir else data_root() / "ml-1m", download_ok=download_ok, verbose=verbose
        )
        ratings, movies, users = ml.load_ml1m_folder(folder)
    elif name == "ml-100k":
        folder = Path(data_dir) if data_dir else data_root() / "ml-100k"
        ratings, movies, users = ml.load_ml100k_folder(folder)
    elif name == "synthetic":
        root = Path(data_dir) if data_dir else cache_root()
        folder = (
            root
            if ml.has_ml1m_files(root)
            else generate_synthetic(synthetic_size, seed, root=root, verbose=verbose)
        )
        ratings, movies, users = ml.load_ml1m_folder(folder)
    else:
        raise UnknownDatasetError("dataset", name, ("ml-1m", "ml-100k", "synthetic"))
    if name != "synthetic":  # a whole MovieLens data set, read and checked: ticks practice.download
        progress_hooks.dataset_loaded(name, ratings, folder)
    ds = RecoDataset(
        name,
        ratings,
        movies,
        users,
        max_seq_len=max_seq_len,
        protocol=protocol,
        stable_sort=stable_sort,
        folder=folder,
    )
    ds.seconds = time.perf_counter() - t0
    if verbose:
        print(f"[hstu_tutorial] {ds!r} from {display_path(folder)} in {ds.seconds:.2f} s")
    return ds
