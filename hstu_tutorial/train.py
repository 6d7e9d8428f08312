"""Train and evaluate HSTU or SASRec on a leave-one-out split: config, fast training loop, CLI.

    python -m hstu_tutorial.train --config ml-1m/hstu-sampled-softmax-n128-final \
        --set data_dir=data/ml-1m-u2999
    python -m hstu_tutorial.train --config synthetic/hstu-small --set num_epochs=3 --set seed=1
    hstu-train --list
    torchrun --standalone --nproc_per_node=2 -m hstu_tutorial.train --config ...   # DDP, one GPU per rank

Under torchrun (WORLD_SIZE > 1) each rank trains on its share of every epoch's batches with
DistributedDataParallel (gradients all-reduced, no CUDA graph), rank 0 evaluates and writes the files.
Memory levers: `grad_accum_steps` (micro-batches weighted by their supervised positions: the large
batch's gradient) and `recompute` (torch.utils.checkpoint per block); see hstu_tutorial/accumulation.py.

The recipe is the reference's (DESIGN.md): AdamW (lr 1e-3, betas 0.9/0.98, no weight decay), batch 128,
sampled softmax with 128 uniform negatives at temperature 0.05, every position predicting the next item,
and after every epoch a full-ranking evaluation of the validation and test targets.

What makes it fast (no change to the maths):
  * the splits live on the device; a batch is a gather there, never a host-side Python loop;
  * nothing reads a GPU value back during an epoch: the loss is summed on the device and read once per
    epoch, together with all the metrics;
  * negatives are drawn on the device; the sampled-softmax logits come from one dense matrix product;
  * on CUDA, the whole training step (forward, backward, AdamW) is captured once as a CUDA graph and
    replayed: a few microseconds of launch work per step instead of hundreds of kernel launches. A graph
    needs fixed shapes, so batches use the "padded" layout: B histories of N = max_seq_len positions,
    handed to the model as a jagged batch of B sequences of length N each. Causal attention never looks
    ahead, so a real position never sees the padding after it and its output is the same as with the
    jagged layout (checked in tests/test_train.py); padded positions get weight 0 in the loss. The time
    gap to the target, which HSTU's relative bias reads at the last real position, is stored in the
    first padding slot.

Outputs go to `exps/<dataset>-l<max_seq_len>/<run>/`: TensorBoard events, `ckpt_last.pt`, `ckpt_best.pt`,
`results.json` and `results.md` (best-by-validation numbers next to the reference protocol's numbers).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hstu_tutorial.losses import get_loss, l2_normalize
from hstu_tutorial.metrics import metric_names, metrics_from_ranks, target_ranks

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
REFERENCE_WINDOW = 10  # the reference protocol's summary: mean test metrics over the last 10 epochs

# Published full-ML-1M results (the reference's README; the paper's Table): test metrics.
PAPER_ML1M = {
    "SASRec": {
        "hr@10": 0.2853,
        "ndcg@10": 0.1603,
        "hr@50": 0.5474,
        "ndcg@50": 0.2185,
        "hr@200": 0.7528,
        "ndcg@200": 0.2498,
    },
    "HSTU": {
        "hr@10": 0.3097,
        "ndcg@10": 0.1720,
        "hr@50": 0.5754,
        "ndcg@50": 0.2307,
        "hr@200": 0.7716,
        "ndcg@200": 0.2606,
    },
    "HSTU-large": {
        "hr@10": 0.3294,
        "ndcg@10": 0.1893,
        "hr@50": 0.5935,
        "ndcg@50": 0.2481,
        "hr@200": 0.7839,
        "ndcg@200": 0.2771,
    },
}
# The reference implementation run on ml-1m-u2999 (ANCHORS.md): mean test metrics of epochs 91-100
# (HSTU-large: 57-66), and seconds for 101 epochs on one H200.
ANCHORS_ML1M_U2999 = {
    "SASRec": {
        "hr@10": 0.2832,
        "ndcg@10": 0.1597,
        "hr@50": 0.5302,
        "ndcg@50": 0.2141,
        "mrr": 0.1365,
        "seconds_101_epochs": 234.0,
    },
    "HSTU": {
        "hr@10": 0.2957,
        "ndcg@10": 0.1666,
        "hr@50": 0.5497,
        "ndcg@50": 0.2226,
        "mrr": 0.1420,
        "seconds_101_epochs": 364.0,
    },
    "HSTU-large": {"hr@10": 0.3001, "ndcg@10": 0.1702, "seconds_101_epochs": 760.0},
}

__all__ = [
    "ANCHORS_ML1M_U2999",
    "PAPER_ML1M",
    "ConfigError",
    "TrainConfig",
    "Trainer",
    "list_configs",
    "load_config",
    "main",
    "train",
]


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A configuration that cannot run: the message says which key, the value seen and what to do."""


@dataclass
class TrainConfig:
    """Everything a run needs. Defaults are the reference's ML-1M HSTU recipe; TOML files override them."""

    # --- run ---
    name: str = "run"  # run name; the results folder is exps/<dataset>-l<max_seq_len>/<name>[-<stamp>]
    description: str = ""  # free text, copied into the results
    seed: int = 42
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    exp_dir: str = "exps"
    timestamp_run_dir: bool = True  # append -YYYYmmdd-HHMMSS to the run folder (keeps runs apart)
    resume: str = ""  # a checkpoint file or run folder to continue from ("" = start fresh)
    tensorboard: bool = True
    progress: bool = True  # tqdm bar over epochs
    save_checkpoints: bool = True
    checkpoint_every: int = 10  # also save ckpt_last.pt every this many epochs (and always at the end)
    max_steps: int = 0  # stop (resumably) after this many optimizer steps in this session; 0 = no limit
    # --- data ---
    dataset: str = "ml-1m"  # "ml-1m", "ml-100k" or "synthetic"
    data_dir: str = ""  # folder with the raw files ("" = data/<dataset>)
    synthetic_size: str = "ci"
    max_seq_len: int = 200
    protocol: str = (
        "reference"  # "reference": train on all but the test item; "validation": hold out valid too
    )
    stable_sort: bool = True
    # --- model ---
    model: str = "hstu"  # "hstu" or "sasrec"
    embedding_dim: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dqk: int = 50  # HSTU: query/key width per head
    dv: int = 50  # HSTU: value width per head
    ffn_hidden: int = 50  # SASRec: feed-forward width
    dropout: float = 0.2
    # HSTU: "pytorch", "triton" or "auto" (triton on CUDA); SASRec: "sdpa", "pytorch" or "auto" (sdpa)
    attention_impl: str = "auto"
    # --- loss ---
    loss: str = "sampled_softmax"  # "sampled_softmax", "full_softmax" or "bce"
    num_negatives: int = 128
    temperature: float = 0.05
    # --- optimisation ---
    batch_size: int = 128
    num_epochs: int = 101
    learning_rate: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    grad_accum_steps: int = 1  # split each batch into this many micro-batches (same gradient, less memory)
    recompute: bool = False  # activation recomputation of every block (torch.utils.checkpoint)
    # --- evaluation ---
    eval_batch_size: int = 4096
    eval_ks: list[int] = field(default_factory=lambda: [1, 10, 50, 200])
    early_stopping_patience: int = (
        0  # stop after this many epochs without a better validation metric; 0 = off
    )
    selection_metric: str = "ndcg@10"  # validation metric for the best checkpoint and early stopping
    # --- speed ---
    tf32: bool = True
    bf16: bool = False  # bf16 autocast for the forward pass
    compile: bool = False  # torch.compile the model (startup cost: tens of seconds)
    cuda_graphs: str = "auto"  # "auto" (on CUDA), "on", "off": capture the training step as a CUDA graph
    # Triton attention on a GPU: tune its tile sizes on first use of each shape (a minute the first time on a
    # machine, then cached); false: fixed default tiles, no tuning (about 10% slower steps at ML-1M)
    autotune: bool = True
    layout: str = "auto"  # "jagged", "padded", or "auto" (padded when CUDA graphs are on)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def validate(self) -> TrainConfig:
        """Raise ConfigError on a value that cannot work (the message says what to change)."""
        choices = {
            "dataset": ("ml-1m", "ml-100k", "synthetic", "ml-20m"),
            "protocol": ("reference", "validation"),
            "model": ("hstu", "sasrec"),
            "loss": ("sampled_softmax", "full_softmax", "bce"),
            "cuda_graphs": ("auto", "on", "off"),
            "layout": ("auto", "jagged", "padded"),
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(f"{key} = {getattr(self, key)!r} is not one of {list(allowed)}")
        per_model = {"hstu": ("auto", "pytorch", "triton"), "sasrec": ("auto", "sdpa", "pytorch")}
        if self.attention_impl not in per_model[self.model]:
            raise ConfigError(
                f"model = {self.model!r} takes attention_impl in {list(per_model[self.model])}, "
                f"not {self.attention_impl!r}"
            )
        positive = (
            "embedding_dim",
            "num_blocks",
            "num_heads",
            "dqk",
            "dv",
            "ffn_hidden",
            "batch_size",
            "max_seq_len",
            "eval_batch_size",
            "grad_accum_steps",
            "checkpoint_every",
        )
        for key in positive:
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        for key in ("num_epochs", "max_steps", "early_stopping_patience"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{key} must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0 (logits are divided by it), got {self.temperature}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas must be two numbers in [0, 1), e.g. [0.9, 0.98]; got {self.betas}")
        if self.loss == "sampled_softmax" and self.num_negatives < 1:
            raise ConfigError(f"num_negatives must be >= 1 for the sampled softmax, got {self.num_negatives}")
        if not self.eval_ks or any(k < 1 for k in self.eval_ks):
            raise ConfigError(f"eval_ks must be a non-empty list of positive cut-offs, got {self.eval_ks}")
        if self.batch_size % self.grad_accum_steps:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of "
                f"grad_accum_steps ({self.grad_accum_steps})"
            )
        valid_metrics = metric_names(self.eval_ks)
        if self.selection_metric not in valid_metrics:
            raise ConfigError(f"selection_metric = {self.selection_metric!r} is not one of {valid_metrics}")
        return self


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value, default):
    """Check/convert `value` for `key` to the type of its default (TOML and --set strings)."""
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if isinstance(default, int):
        if isinstance(value, bool):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer (e.g. {default}), got {value!r}")
    if isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number (e.g. {default}), got {value!r}")
    if isinstance(default, list):
        if isinstance(value, str):
            text = value.strip()
            try:
                value = (
                    tomllib.loads(f"v = {text}")["v"]
                    if text.startswith("[")
                    else [tomllib.loads(f"v = {x.strip()}")["v"] for x in text.split(",") if x.strip()]
                )
            except tomllib.TOMLDecodeError as err:
                raise ConfigError(f"{key} must be a list such as {default}, got {value!r}") from err
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list such as {default}, got {value!r}")
        elem = default[0] if default else 0
        return [_coerce(f"{key}[{i}]", v, elem) for i, v in enumerate(value)]
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(type(default))}")  # pragma: no cover


def config_from_dict(values: dict, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """A TrainConfig from `values` (unknown keys rejected with the list of valid ones)."""
    cfg = copy.deepcopy(base) if base is not None else TrainConfig()
    valid = TrainConfig.keys()
    for key, value in values.items():
        if key not in valid:
            import difflib

            near = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {', '.join(near)}?" if near else ""
            raise ConfigError(f"unknown key {key!r} in {source}.{hint} Valid keys: {', '.join(valid)}")
        setattr(cfg, key, _coerce(key, value, getattr(TrainConfig(), key)))
    return cfg


def list_configs() -> list[str]:
    """Names of the bundled configs, e.g. 'ml-1m/hstu-sampled-softmax-n128-final'."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.glob("**/*.toml"))


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A TOML file: an existing path, or a bundled config name (with or without `.toml`)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / path
    for candidate in (bundled, bundled.with_name(bundled.name + ".toml")):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no config file {str(name_or_path)!r}: neither a file nor a bundled config. "
        f"Bundled configs: {', '.join(list_configs())}"
    )


def parse_overrides(overrides: Sequence[str]) -> dict:
    """['key=value', ...] -> {key: value-string} (values are converted against the defaults' types)."""
    out = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r} (e.g. --set num_epochs=3)")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip().strip('"').strip("'") if not value.strip().startswith("[") else value
    return out


def load_config(
    name_or_path: str | os.PathLike | None = None, overrides: Sequence[str] | dict = (), **kwargs
) -> TrainConfig:
    """Read a TOML config (a path or a bundled name), apply `overrides` ('key=value' strings or a dict) and
    keyword arguments, validate, and return it. The run name defaults to the config file's stem."""
    cfg = TrainConfig()
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            values = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path} is not valid TOML: {err}") from err
        for key, value in values.items():
            if isinstance(value, dict):
                raise ConfigError(
                    f"{path}: tables such as [{key}] are not used; write every key at the top level. "
                    f"Valid keys: {', '.join(TrainConfig.keys())}"
                )
        cfg = config_from_dict(values, cfg, source=str(path))
        if "name" not in values:
            cfg.name = path.stem
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    cfg = config_from_dict(overrides, cfg, source="--set")
    cfg = config_from_dict(kwargs, cfg, source="keyword arguments")
    return cfg.validate()


# ---------------------------------------------------------------------------------------------------------
# Device-resident splits and the two batch layouts
# ---------------------------------------------------------------------------------------------------------


class ResidentSplit:
    """A split on the training device, in both layouts, plus what the loss and the metrics need.

    Padded tensors have one extra all-zero row (index U) that fills the last, partial batch of the padded
    layout, so that every batch has exactly `batch_size` rows.
    """

    def __init__(self, split, device: torch.device):
        self.split = split.to(device)  # the data module's flat SequenceSplit
        self.device = device
        self.num_users = len(split)
        self.max_len = N = split.pad_width
        U = self.num_users
        every = self.split.batch(torch.arange(U, device=device), total=self.split.num_tokens)
        lengths = every.lengths  # (U,)
        # Supervision in the jagged layout: token t predicts the next token; a history's last token
        # predicts its target.
        nxt = torch.roll(self.split.item_ids, -1)  # (T,)
        nxt[self.split.offsets[1:] - 1] = self.split.target_item_ids
        self.next_item_ids = nxt  # (T,)

        def pad(values):  # (T,) -> (U + 1, N): one padded row per user, plus the empty filler row
            out = torch.zeros(U + 1, N, dtype=values.dtype, device=device)
            out[:U] = every.padded(values, max_len=N)
            return out

        self.padded_item_ids = pad(every.item_ids)  # (U+1, N)
        self.padded_ratings = pad(every.ratings)  # (U+1, N)
        self.padded_next_ids = pad(nxt)  # (U+1, N): the supervision targets; 0 = not supervised
        ts = pad(every.timestamps)  # (U+1, N)
        # The target's timestamp goes into the first padding slot: HSTU's bias for the last real query
        # reads the timestamp of the position after it.
        slot = lengths.clamp(max=N - 1)[:, None]  # (U, 1)
        has_room = (lengths < N)[:, None]  # (U, 1)
        ts[:U].scatter_(
            1, slot, torch.where(has_room, every.target_timestamps[:, None], ts[:U].gather(1, slot))
        )
        self.padded_timestamps = ts  # (U+1, N)

        def ext(v):  # (U,) -> (U+1,)
            return torch.cat([v, v.new_zeros(1)])

        self.lengths = ext(lengths)  # (U+1,)
        self.user_ids = ext(every.user_ids)
        self.target_item_ids = ext(every.target_item_ids)
        self.target_ratings = ext(every.target_ratings)
        self.target_timestamps = ext(every.target_timestamps)
        self.total_tokens = self.split.num_tokens

    # -- padded layout: fixed shapes (B*N tokens), no host sync at all --------------------------------
    def padded_batch(self, index: torch.Tensor):
        """Rows `index (B,)` as a JaggedBatch of B sequences of length N, with supervision and weights."""
        from hstu_tutorial.data import JaggedBatch

        B, N = index.shape[0], self.max_len
        lengths = torch.full((B,), N, dtype=torch.int64, device=self.device)  # (B,)
        offsets = torch.arange(B + 1, dtype=torch.int64, device=self.device) * N  # (B+1,)
        batch = JaggedBatch(
            user_ids=self.user_ids[index],
            item_ids=self.padded_item_ids[index].reshape(-1),
            ratings=self.padded_ratings[index].reshape(-1),
            timestamps=self.padded_timestamps[index].reshape(-1),
            offsets=offsets,
            lengths=lengths,
            max_len=N,
            target_item_ids=self.target_item_ids[index],
            target_ratings=self.target_ratings[index],
            target_timestamps=self.target_timestamps[index],
        )
        supervision = self.padded_next_ids[index].reshape(-1)  # (B*N,)
        last = torch.arange(B, device=self.device) * N + (self.lengths[index] - 1).clamp(min=0)  # (B,)
        return batch, supervision, last

    # -- jagged layout: only real tokens (the token count comes from the host) ------------------------
    def jagged_batch(self, index: torch.Tensor, total: int):
        """Rows `index (B,)` (no filler rows) as a true JaggedBatch of `total` tokens, with supervision."""
        batch = self.split.batch(index, total=total)
        starts = self.split.offsets[index]  # (B,)
        from hstu_tutorial.data.reco_dataset import jagged_coordinates

        row, col = jagged_coordinates(batch.offsets, batch.lengths, total)  # (T,), (T,)
        supervision = self.next_item_ids[starts[row] + col]  # (T,)
        last = batch.offsets[1:] - 1  # (B,)
        return batch, supervision, last

    def batch_totals(self, order: torch.Tensor, batch_size: int) -> list[int]:
        """Token count of each batch of `order` (one host transfer for a whole epoch)."""
        lens = self.lengths[order]  # (U',)
        which = torch.arange(order.shape[0], device=order.device) // batch_size
        num = -(-order.shape[0] // batch_size)
        return torch.zeros(num, dtype=torch.int64, device=order.device).index_add_(0, which, lens).tolist()


# ---------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------


def setup_distributed(device: torch.device) -> tuple[torch.device, int, int]:
    """(device, rank, world size). Under torchrun (env WORLD_SIZE > 1) join the process group (NCCL on
    GPUs, gloo on CPUs) and use GPU LOCAL_RANK; otherwise (device, 0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, 0, 1
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK={local} but torch sees {torch.cuda.device_count()} GPU(s): start torchrun with "
                "--nproc_per_node at most the number of GPUs"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def rank_steps(num_steps: int, rank: int, world: int) -> list[int]:
    """The steps of an epoch that `rank` runs: every world-th one, starting at `rank`. Every rank runs the
    same number of steps (gradients are all-reduced at each), so the last round wraps to the first batches
    (as torch's DistributedSampler pads by repeating samples)."""
    if world == 1:
        return list(range(num_steps))
    per_rank = -(-num_steps // world)
    return [(rank + world * i) % num_steps for i in range(per_rank)]


def all_reduce_mean(value: torch.Tensor, world: int) -> torch.Tensor:
    """Mean of a scalar tensor over ranks (itself when alone)."""
    if world == 1:
        return value
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return value / world


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device = {name!r} but torch sees no CUDA GPU; use device = 'cpu' or 'auto'")
    return device


def _note(msg: str) -> None:
    print(f"[hstu_tutorial.train] {msg}", flush=True)


def build_model(cfg: TrainConfig, num_items: int, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The encoder the config asks for, on `device`, and the attention implementation it uses."""
    from hstu_tutorial import modules

    impl = cfg.attention_impl
    if cfg.model == "hstu":
        if impl == "auto":
            impl = "triton" if device.type == "cuda" else "pytorch"
        if impl == "triton":
            try:
                import hstu_tutorial.ops.triton.hstu_attention_autograd as kernels

                kernels.AUTOTUNE = cfg.autotune
                if cfg.autotune and device.type == "cuda":
                    _note("Triton attention: tile sizes are tuned on first use of each shape (about a "
                          "minute the first time; Triton caches the choice; --set autotune=false skips it)")
            except Exception as err:  # noqa: BLE001 - any import failure means: use the reference
                _note(
                    f"the Triton attention kernel failed to import ({type(err).__name__}: {err}); "
                    "falling back to attention_impl='pytorch'"
                )
                impl = "pytorch"
        model = modules.hstu_encoder(
            num_items,
            embedding_dim=cfg.embedding_dim,
            num_blocks=cfg.num_blocks,
            num_heads=cfg.num_heads,
            dqk=cfg.dqk,
            dv=cfg.dv,
            max_seq_len=cfg.max_seq_len,
            dropout=cfg.dropout,
            attention_impl=impl,
        )
    else:
        impl = "sdpa" if impl == "auto" else impl
        model = modules.sasrec_encoder(
            num_items,
            embedding_dim=cfg.embedding_dim,
            num_blocks=cfg.num_blocks,
            num_heads=cfg.num_heads,
            ffn_hidden=cfg.ffn_hidden,
            max_seq_len=cfg.max_seq_len,
            dropout=cfg.dropout,
            attention_impl=impl,
        )
    if cfg.recompute:  # keep only each block's input; rerun its forward in the backward pass
        from hstu_tutorial.accumulation import enable_recompute

        enable_recompute(model)
    return model.to(device), impl


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


class Trainer:
    """One training run: data, model, optimizer, the epoch loop, evaluation, checkpoints and results.

    Use `train(config)` for the common case; the class is there for notebooks that want to poke at the
    model, the splits or the per-user evaluation afterwards.
    """

    def __init__(self, cfg: TrainConfig, dataset=None, verbose: bool = True):
        self.cfg = cfg.validate()
        self.verbose = verbose
        t0 = time.perf_counter()
        self.device = _resolve_device(cfg.device)
        # Under torchrun (WORLD_SIZE > 1): one process per GPU, DistributedDataParallel, rank 0 writes.
        self.device, self.rank, self.world = setup_distributed(self.device)
        if self.rank != 0:
            cfg = self.cfg = copy.deepcopy(cfg)
            cfg.tensorboard = cfg.progress = cfg.save_checkpoints = False
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)  # peak memory of this run, not the process's
            torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
            torch.backends.cudnn.allow_tf32 = cfg.tf32
        torch.manual_seed(cfg.seed)
        random.seed(cfg.seed)
        if dataset is None:
            from hstu_tutorial.data import get_reco_dataset

            dataset = get_reco_dataset(
                cfg.dataset,
                max_seq_len=cfg.max_seq_len,
                data_dir=cfg.data_dir or None,
                protocol=cfg.protocol,
                stable_sort=cfg.stable_sort,
                synthetic_size=cfg.synthetic_size,
                verbose=verbose,
            )
        elif dataset.max_seq_len != cfg.max_seq_len or dataset.protocol != cfg.protocol:
            raise ConfigError(
                f"the dataset passed in has max_seq_len={dataset.max_seq_len}, protocol={dataset.protocol!r} "
                f"but the config says max_seq_len={cfg.max_seq_len}, protocol={cfg.protocol!r}"
            )
        elif getattr(dataset, "stable_sort", cfg.stable_sort) != cfg.stable_sort and verbose:
            _note(
                f"the dataset passed in has stable_sort={dataset.stable_sort}, the config says "
                f"{cfg.stable_sort}: the dataset's order of same-second ratings is used"
            )
        self.dataset = dataset
        self.catalogue = dataset.catalogue.to(self.device)  # (C,)
        self.splits = {s: ResidentSplit(dataset.split(s), self.device) for s in ("train", "valid", "test")}
        torch.manual_seed(cfg.seed)  # model init does not depend on what data loading drew
        self.model, self.attention_impl = build_model(cfg, dataset.num_items, self.device)
        self.ddp = None
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
            torch.manual_seed(cfg.seed + self.rank)  # own dropout masks and negatives on every rank
        trained = self.ddp if self.ddp is not None else self.model
        self.forward = torch.compile(trained) if cfg.compile else trained
        fused = self.device.type == "cuda"
        self.use_graphs = self.device.type == "cuda" and cfg.cuda_graphs in ("auto", "on")
        if self.use_graphs and cfg.grad_accum_steps > 1:
            _note("grad_accum_steps > 1: CUDA graphs off")
            self.use_graphs = False
        if self.use_graphs and (cfg.recompute or self.world > 1):
            _note(f"{'recompute' if cfg.recompute else 'DistributedDataParallel'}: CUDA graphs off")
            self.use_graphs = False
        self.layout = cfg.layout if cfg.layout != "auto" else ("padded" if self.use_graphs else "jagged")
        if self.use_graphs and self.layout != "padded":
            _note("CUDA graphs need fixed shapes: layout='padded' is used")
            self.layout = "padded"
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.learning_rate,
            betas=tuple(cfg.betas),
            weight_decay=cfg.weight_decay,
            **({"fused": True, "capturable": self.use_graphs} if fused else {}),
        )
        self.loss_fn = get_loss(cfg.loss)
        self.perm_gen = torch.Generator().manual_seed(cfg.seed)
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16) if cfg.bf16 else contextlib.nullcontext()
        )
        # Progress of the run (what a checkpoint holds besides weights).
        self.epoch = 0  # next epoch to run
        self.step_in_epoch = 0  # next step inside that epoch (non-zero after an interruption)
        self.global_step = 0
        self.history: list[dict] = []
        self.best: dict | None = None
        self.bad_epochs = 0
        self.epoch_perm: torch.Tensor | None = None
        self.perm_epoch = -1  # the epoch `epoch_perm` belongs to
        self._interrupted = False
        self.epoch_loss_sum = torch.zeros((), device=self.device)
        self.elapsed = {"train_s": 0.0, "eval_s": 0.0}
        self.graph = None
        self.run_dir: Path | None = None
        self.writer = None
        self.setup_s = time.perf_counter() - t0

    # -- one training step ------------------------------------------------------------------------------
    def _batch(self, rs: ResidentSplit, index: torch.Tensor, total: int | None):
        if self.layout == "padded":
            return rs.padded_batch(index)
        return rs.jagged_batch(index, total)

    def _loss(self, batch, supervision: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        weights = (supervision != 0).float()  # (T,) padded positions are not supervised
        with self.autocast:
            out = self.forward(batch)  # (T, D)
        loss = self.loss_fn(
            out.float(),
            supervision,
            self.model.item_embeddings,
            self.catalogue,
            cfg.num_negatives,
            cfg.temperature,
            weights=weights,
        )
        return loss, weights.sum()

    def _eager_step(self, index: torch.Tensor, totals: list[int] | None) -> torch.Tensor:
        """Forward, backward and AdamW on the users `index`; returns the (device) loss."""
        rs = self.splits["train"]
        parts = self.cfg.grad_accum_steps
        self.optimizer.zero_grad(set_to_none=True)
        if parts == 1:
            batch, sup, _ = self._batch(rs, index, None if totals is None else totals[0])
            loss, _ = self._loss(batch, sup)
            loss.backward()
        else:
            chunks = index.split(self.cfg.batch_size // parts)
            counts = (rs.lengths[index]).sum()  # every history position is supervised
            loss = torch.zeros((), device=self.device)
            for i, chunk in enumerate(chunks):
                total = None if totals is None else totals[i]
                batch, sup, _ = self._batch(rs, chunk, total)
                part_loss, weight = self._loss(batch, sup)
                # Micro-batch means weighted by their share of the positions = the full batch's mean.
                (part_loss * (weight / counts)).backward()
                loss = loss + part_loss.detach() * (weight / counts)
        self.optimizer.step()
        return loss.detach()

    def _capture_graph(self) -> None:
        """Record forward + backward + AdamW as one CUDA graph (after a few warm-up steps, undone)."""
        rs = self.splits["train"]
        B = self.cfg.batch_size
        self.static_index = torch.full((B,), rs.num_users, dtype=torch.int64, device=self.device)
        self.static_index[: min(B, rs.num_users)] = torch.arange(min(B, rs.num_users), device=self.device)
        params = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        opt_state = copy.deepcopy(self.optimizer.state_dict())
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.optimizer.zero_grad(set_to_none=True)
                batch, sup, _ = rs.padded_batch(self.static_index)
                loss, _ = self._loss(batch, sup)
                loss.backward()
                self.optimizer.step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        # Undo the warm-up: weights and optimizer state back to where they were, in place.
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(params[k])
        self._restore_optimizer_in_place(opt_state)
        self.graph = torch.cuda.CUDAGraph()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            batch, sup, _ = rs.padded_batch(self.static_index)
            loss, _ = self._loss(batch, sup)
            loss.backward()
            self.optimizer.step()
        self.static_loss = loss.detach()
        torch.cuda.synchronize(self.device)

    def _restore_optimizer_in_place(self, saved: dict) -> None:
        saved_state = saved["state"]
        for i, p in enumerate([p for g in self.optimizer.param_groups for p in g["params"]]):
            state = self.optimizer.state.get(p)
            if not state:
                continue
            old = saved_state.get(i, {})
            for key, value in state.items():
                if isinstance(value, torch.Tensor):
                    if key in old:
                        value.copy_(old[key])
                    else:
                        value.zero_()

    # -- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def _ranks(self, split: str) -> torch.Tensor:
        """Ranks (U,) of every user's target in `split`, full ranking, seen items removed."""
        rs = self.splits[split]
        self.model.eval()
        try:
            with self.autocast:
                items = l2_normalize(self.model.item_embeddings(self.catalogue).float())  # (C, D)
            ranks = []
            bs = self.cfg.eval_batch_size
            if not hasattr(rs, "eval_totals"):
                rs.eval_order = torch.arange(rs.num_users, device=self.device)
                rs.eval_totals = rs.batch_totals(rs.eval_order, bs)
            for i, total in enumerate(rs.eval_totals):
                index = rs.eval_order[i * bs : (i + 1) * bs]  # (B,)
                batch, _, last = rs.jagged_batch(index, total)
                with self.autocast:
                    out = self.forward(batch)  # (T, D)
                query = out[last].float()  # (B, D)
                history = rs.padded_item_ids[index]  # (B, N)
                ranks.append(
                    target_ranks(
                        query,
                        items,
                        self.catalogue,
                        rs.target_item_ids[index],
                        history,
                        self.dataset.num_items,
                    )
                )
            return torch.cat(ranks)  # (U,)
        finally:
            self.model.train()

    def evaluate(self, splits: Sequence[str] = ("valid", "test")) -> dict[str, dict[str, float]]:
        """Metrics of the current model on `splits` (one host transfer for all of them)."""
        ks = self.cfg.eval_ks
        per_split = [metrics_from_ranks(self._ranks(s), ks, as_float=False) for s in splits]
        names = metric_names(ks)
        flat = torch.stack([torch.stack([m[n] for n in names]) for m in per_split]).tolist()
        return {s: dict(zip(names, vals)) for s, vals in zip(splits, flat)}

    def _evaluate_on_rank0(self, splits: Sequence[str]) -> dict[str, dict[str, float]]:
        """`evaluate` on rank 0 only (every rank holds the same weights), broadcast to the other ranks."""
        if self.world == 1:
            return self.evaluate(splits)
        import torch.distributed as dist

        box = [self.evaluate(splits) if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def per_user_ranks(self, split: str = "test"):
        """A pandas DataFrame: user_id, target_item_id, history_length, rank (for analyses)."""
        import pandas as pd

        rs = self.splits[split]
        ranks = self._ranks(split).cpu().numpy()
        U = rs.num_users
        return pd.DataFrame(
            {
                "user_id": rs.user_ids[:U].cpu().numpy(),
                "target_item_id": rs.target_item_ids[:U].cpu().numpy(),
                "history_length": rs.lengths[:U].cpu().numpy(),
                "rank": ranks,
            }
        )

    # -- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "format": "hstu_tutorial.train/1",
            "config": self.cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "epoch_perm": self.epoch_perm,
            "perm_epoch": self.perm_epoch,
            "epoch_loss_sum": self.epoch_loss_sum,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "elapsed": dict(self.elapsed),
            "rng": _rng_state(self.device, self.perm_gen),
        }

    def save(self, path: Path) -> Path:
        path = Path(path)
        if getattr(self, "rank", 0) != 0:  # one writer under DistributedDataParallel
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)  # never leave a half-written checkpoint behind
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint (model, optimizer, RNG states, position inside the epoch)."""
        path = Path(path)
        if path.is_dir():
            path = path / "ckpt_last.pt"
        if not path.is_file():
            raise ConfigError(f"resume = {str(path)!r}: no such checkpoint file")
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.history, self.best = state["global_step"], state["history"], state["best"]
        self.bad_epochs, self.elapsed = state["bad_epochs"], dict(state["elapsed"])
        self.epoch_perm, self.perm_epoch = state["epoch_perm"], state["perm_epoch"]
        self.epoch_loss_sum = state["epoch_loss_sum"].to(self.device)
        _set_rng_state(state["rng"], self.device, self.perm_gen)
        if self.run_dir is None:
            self.run_dir = path.parent

    def load_weights(self, path: str | os.PathLike = "") -> int:
        """Load model weights only, e.g. the best checkpoint (default: this run's ckpt_best.pt); returns its
        epoch. Safe loading: `weights_only=True` accepts tensors and plain containers, never pickled code."""
        path = Path(path) if path else (self.run_dir or Path(".")) / "ckpt_best.pt"
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}: train first, or pass the path of a ckpt_*.pt file"
            )
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        return int(state["epoch"])

    # -- the loop -------------------------------------------------------------------------------------
    def _make_run_dir(self) -> Path:
        cfg = self.cfg
        name = cfg.name + (time.strftime("-%Y%m%d-%H%M%S") if cfg.timestamp_run_dir else "")
        return Path(cfg.exp_dir) / f"{cfg.dataset}-l{cfg.max_seq_len}" / name

    def _new_epoch_order(self) -> torch.Tensor:
        rs = self.splits["train"]
        order = torch.randperm(rs.num_users, generator=self.perm_gen)  # (U,) on the CPU: a seeded stream
        if self.layout == "padded":  # fill the last batch with the empty row U
            B = self.cfg.batch_size
            fill = -len(order) % B
            order = torch.cat([order, torch.full((fill,), rs.num_users, dtype=torch.int64)])
        return order

    def fit(self, callback: Callable[[dict], object] | None = None) -> dict:
        """Run the remaining epochs; returns the results dict (also written as results.json/.md)."""
        cfg = self.cfg
        if cfg.resume:
            self.load(cfg.resume)
            _note(f"resumed from {cfg.resume} at epoch {self.epoch} step {self.step_in_epoch}")
        if self.run_dir is None:
            self.run_dir = self._make_run_dir()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.run_dir))
            except Exception as err:  # noqa: BLE001 - tensorboard is optional
                _note(f"TensorBoard logging off ({type(err).__name__}: {err})")
        if self.verbose:
            n_params = sum(p.numel() for p in self.model.parameters())
            _note(
                f"{cfg.model} ({n_params:,} parameters, attention={self.attention_impl}) on {self.device}, "
                f"layout={self.layout}, cuda_graphs={'on' if self.use_graphs else 'off'}, "
                f"bf16={cfg.bf16}, tf32={cfg.tf32}; logs in {self.run_dir}"
            )
        if self.use_graphs and self.graph is None:
            t0 = time.perf_counter()
            try:
                self._capture_graph()
            except Exception as err:  # noqa: BLE001 - fall back to eager steps, loudly
                if cfg.cuda_graphs == "on":
                    raise
                _note(f"CUDA graph capture failed ({type(err).__name__}: {err}); running eager steps")
                self.use_graphs, self.graph = False, None
                self.optimizer.zero_grad(set_to_none=True)
            self.setup_s += time.perf_counter() - t0
        status = "completed"
        steps_this_session = 0
        rs = self.splits["train"]
        B = cfg.batch_size
        bar = None
        old_handler = self._install_sigint_handler()
        if cfg.progress and self.verbose:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=cfg.num_epochs, initial=self.epoch, desc=cfg.name, unit="epoch", dynamic_ncols=True
            )
        try:
            while self.epoch < cfg.num_epochs:
                t_epoch = time.perf_counter()
                if self.perm_epoch != self.epoch:
                    self.epoch_perm = self._new_epoch_order()
                    self.perm_epoch = self.epoch
                    self.epoch_loss_sum = torch.zeros((), device=self.device)
                order = self.epoch_perm.to(self.device, non_blocking=True)
                num_steps = -(-len(order) // B)
                steps = rank_steps(num_steps, self.rank, self.world)  # this rank's share (all, alone)
                totals = None
                if self.layout == "jagged":
                    micro = B // cfg.grad_accum_steps
                    totals = rs.batch_totals(order, micro)
                self.model.train()
                while self.step_in_epoch < len(steps):
                    if self._interrupted:
                        raise _StopRun("interrupted")
                    if cfg.max_steps and steps_this_session >= cfg.max_steps:
                        raise _StopRun("stopped")
                    s = steps[self.step_in_epoch]
                    index = order[s * B : (s + 1) * B]  # (B,)
                    if self.graph is not None:
                        self.static_index.copy_(index)
                        self.graph.replay()
                        loss = self.static_loss
                    else:
                        part = None
                        if totals is not None:
                            per = cfg.grad_accum_steps
                            part = totals[s * per : (s + 1) * per]
                        loss = self._eager_step(index, part)
                    self.epoch_loss_sum += loss
                    self.step_in_epoch += 1
                    self.global_step += 1
                    steps_this_session += 1
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t_train = time.perf_counter() - t_epoch
                t_eval0 = time.perf_counter()
                metrics = self._evaluate_on_rank0(("valid", "test"))
                mean_loss = all_reduce_mean(self.epoch_loss_sum / len(steps), self.world).item()
                t_eval = time.perf_counter() - t_eval0
                self.elapsed["train_s"] += t_train
                self.elapsed["eval_s"] += t_eval
                record = {
                    "epoch": self.epoch,
                    "loss": mean_loss,
                    "valid": metrics["valid"],
                    "test": metrics["test"],
                    "train_s": t_train,
                    "eval_s": t_eval,
                    "step": self.global_step,
                }
                self.history.append(record)
                self.epoch += 1
                self.step_in_epoch = 0
                self._after_epoch(record, bar)
                if callback is not None:
                    callback(record)
                if self._interrupted:
                    raise _StopRun("interrupted")
                if cfg.early_stopping_patience and self.bad_epochs >= cfg.early_stopping_patience:
                    _note(
                        f"early stopping: no better validation {cfg.selection_metric} for "
                        f"{self.bad_epochs} epochs (best at epoch {self.best['epoch']})"
                    )
                    status = "early_stopped"
                    break
        except KeyboardInterrupt:
            status = "interrupted"
        except _StopRun as stop:
            status = stop.status
        finally:
            if bar is not None:
                bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        if cfg.save_checkpoints or status in ("interrupted", "stopped"):
            self.save(self.run_dir / "ckpt_last.pt")
        if status in ("interrupted", "stopped"):
            _note(
                f"{status} at epoch {self.epoch} step {self.step_in_epoch}; continue with "
                f"--set resume={self.run_dir / 'ckpt_last.pt'}"
            )
        results = self.results(status)
        self.write_results(results)
        if self.writer is not None:
            self.writer.flush()
        return results

    def _install_sigint_handler(self):
        """Ctrl-C finishes the current step, then saves a resumable checkpoint (a second Ctrl-C aborts)."""
        self._interrupted = False
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            if self._interrupted:
                raise KeyboardInterrupt
            self._interrupted = True
            _note("Ctrl-C: finishing this step, then saving a checkpoint (press again to abort)")

        return signal.signal(signal.SIGINT, handler)

    def _after_epoch(self, record: dict, bar) -> None:
        cfg = self.cfg
        value = record["valid"][cfg.selection_metric]
        if self.best is None or value > self.best["valid"][cfg.selection_metric]:
            self.best = {"epoch": record["epoch"], "valid": record["valid"], "test": record["test"]}
            self.bad_epochs = 0
            if cfg.save_checkpoints:
                torch.save(
                    {
                        "format": "hstu_tutorial.train/best",
                        "config": cfg.to_dict(),
                        "epoch": record["epoch"],
                        "model": self.model.state_dict(),
                    },
                    self.run_dir / "ckpt_best.pt",
                )
        else:
            self.bad_epochs += 1
        if cfg.save_checkpoints and self.epoch % cfg.checkpoint_every == 0 and self.epoch < cfg.num_epochs:
            self.save(self.run_dir / "ckpt_last.pt")
        if self.writer is not None:
            e = record["epoch"]
            self.writer.add_scalar("loss/train", record["loss"], e)
            for split in ("valid", "test"):
                for k, v in record[split].items():
                    self.writer.add_scalar(f"{split}/{k}", v, e)
        if bar is not None:
            bar.set_postfix(
                loss=f"{record['loss']:.3f}",
                val_ndcg10=f"{record['valid'].get('ndcg@10', 0):.4f}",
                test_hr10=f"{record['test'].get('hr@10', 0):.4f}",
                refresh=False,
            )
            bar.update(1)

    # -- results --------------------------------------------------------------------------------------
    def results(self, status: str = "completed") -> dict:
        """Best-by-validation and reference-protocol numbers, timing and the per-epoch history."""
        cfg = self.cfg
        hist = self.history
        out = {
            "name": cfg.name,
            "description": cfg.description,
            "status": status,
            "config": cfg.to_dict(),
            "dataset": self.dataset.stats() if hasattr(self.dataset, "stats") else {"dataset": cfg.dataset},
            "device": _device_name(self.device),
            "torch": torch.__version__,
            "attention_impl": self.attention_impl,
            "layout": self.layout,
            "cuda_graphs": self.use_graphs,
            "world_size": self.world,
            "epochs_run": len(hist),
            "stable_sort_used": getattr(self.dataset, "stable_sort", None),
            "run_dir": str(self.run_dir) if self.run_dir else None,
        }
        if hist:
            window = hist[-REFERENCE_WINDOW:]
            names = list(hist[-1]["test"])
            out["reference_protocol"] = {
                "epochs": [window[0]["epoch"], window[-1]["epoch"]],
                "test_mean": {k: sum(r["test"][k] for r in window) / len(window) for k in names},
                "final_epoch": hist[-1]["epoch"],
                "test_final": hist[-1]["test"],
            }
            out["best_by_valid"] = {"metric": cfg.selection_metric, **(self.best or {})}
            if cfg.protocol == "reference":
                out["best_by_valid"]["note"] = (
                    "protocol 'reference' trains on the validation item: "
                    "use protocol 'validation' for an honest selection"
                )
        train_tokens = self.splits["train"].total_tokens
        total = self.elapsed["train_s"] + self.elapsed["eval_s"]
        out["timing"] = {
            "setup_s": self.setup_s,
            "train_s": self.elapsed["train_s"],
            "eval_s": self.elapsed["eval_s"],
            "train_eval_s": total,
            "s_per_epoch": total / max(1, len(hist)),
            "train_tokens_per_s": train_tokens * len(hist) / max(self.elapsed["train_s"], 1e-9),
            "peak_mem_gib": (
                torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
            ),
        }
        out["history"] = hist
        return out

    def write_results(self, results: dict) -> None:
        if self.run_dir is None or self.rank != 0:
            return
        (self.run_dir / "results.json").write_text(json.dumps(results, indent=1, default=str))
        (self.run_dir / "results.md").write_text(results_markdown(results))
        if results.get("history"):  # the reproducible experiment record (experiment.json / .md)
            from hstu_tutorial.experiment import RecordError, save_record

            try:
                save_record(results, self.run_dir)
            except RecordError as err:  # e.g. eval_ks without 10: the results files are still written
                _note(f"no experiment record: {err}")


class _StopRun(Exception):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def results_markdown(results: dict, ks: Sequence[int] | None = None) -> str:
    """The results as a Markdown table: reference protocol (mean of last epochs, final) and best-by-valid."""
    lines = [f"# {results['name']}", ""]
    if results.get("description"):
        lines += [results["description"], ""]
    lines += [
        f"dataset {results['config']['dataset']} ({results['config'].get('data_dir') or 'default folder'}), "
        f"protocol {results['config']['protocol']}, {results['epochs_run']} epochs, status "
        f"{results['status']}, device {results['device']}",
        "",
    ]
    ref = results.get("reference_protocol")
    if ref:
        names = list(ref["test_final"])
        lines += [
            "| test metrics | "
            + " | ".join(
                n.upper() if n == "mrr" else n.replace("hr", "HR").replace("ndcg", "NDCG") for n in names
            )
            + " |",
            "|---" * (len(names) + 1) + "|",
        ]
        e0, e1 = ref["epochs"]
        rows = [
            (f"reference protocol: mean of epochs {e0}-{e1}", ref["test_mean"]),
            (f"reference protocol: final epoch {ref['final_epoch']}", ref["test_final"]),
        ]
        best = results.get("best_by_valid") or {}
        if "test" in best:
            rows.append((f"best by validation {best['metric']} (epoch {best['epoch']})", best["test"]))
        for label, vals in rows:
            lines.append(f"| {label} | " + " | ".join(f"{vals[n]:.4f}" for n in names) + " |")
        lines.append("")
        if best.get("note"):
            lines += [f"Note: {best['note']}.", ""]
    t = results.get("timing", {})
    if t:
        peak = t.get("peak_mem_gib")
        lines += [
            f"Time: {t['train_eval_s']:.1f} s for {results['epochs_run']} epochs of training + evaluation "
            f"({t['s_per_epoch']:.3f} s/epoch; train {t['train_s']:.1f} s, eval {t['eval_s']:.1f} s), "
            f"setup {t['setup_s']:.1f} s; {t['train_tokens_per_s']:,.0f} train tokens/s"
            + (f"; peak GPU memory {peak:.2f} GiB" if peak is not None else "")
            + ".",
            "",
        ]
    return "\n".join(lines)


def train(
    config: TrainConfig | str | os.PathLike | None = None,
    callback: Callable[[dict], object] | None = None,
    dataset=None,
    verbose: bool = True,
    **overrides,
) -> dict:
    """Train a model as `config` says (a TrainConfig, a TOML path or a bundled name) and return the results.

    `callback(record)` is called after every epoch with {"epoch", "loss", "valid": {...}, "test": {...}}
    (live curves in a notebook). Keyword arguments override config keys. The returned dict has
    "best_by_valid", "reference_protocol", "timing" and "history"; `results["trainer"]` is the Trainer.
    """
    if isinstance(config, TrainConfig):
        cfg = config_from_dict(overrides, config, source="keyword arguments").validate()
    else:
        cfg = load_config(config, overrides=overrides)
    trainer = Trainer(cfg, dataset=dataset, verbose=verbose)
    results = trainer.fit(callback=callback)
    results["trainer"] = trainer
    return results


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="hstu-train",
        description="Train HSTU or SASRec with a TOML config (see hstu_tutorial/configs/).",
    )
    parser.add_argument(
        "--config", help="a TOML file, or a bundled name such as ml-1m/hstu-sampled-softmax-n128-final"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set num_epochs=3",
    )
    parser.add_argument("--resume", help="continue from a checkpoint file or run folder")
    parser.add_argument("--list", action="store_true", help="list the bundled configs and exit")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(list_configs()))
        return 0
    try:
        overrides = parse_overrides(args.set)
        if args.resume:
            overrides["resume"] = args.resume
        cfg = load_config(args.config, overrides)
        if args.print_config:
            for k, v in cfg.to_dict().items():
                print(f"{k} = {json.dumps(v)}")
            return 0
        results = train(cfg)
        trainer = results.get("trainer")
        if trainer is not None and trainer.world > 1:
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()
            if trainer.rank != 0:
                return 0
    except ConfigError as err:
        print(f"hstu-train: configuration error: {err}", file=sys.stderr)
        return 2
    print(results_markdown(results))
    print(f"results: {results['run_dir']}/results.json")
    return 130 if results["status"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
