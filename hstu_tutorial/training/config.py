"""The training configuration: the `TrainConfig` dataclass, TOML files, `--set` overrides, config names."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hstu_tutorial.data.stochastic_length import SELECTIONS as SL_SELECTIONS
from hstu_tutorial.errors import ConfigError
from hstu_tutorial.metrics import metric_names

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DATASETS = ("ml-1m", "ml-100k", "synthetic")  # what hstu_tutorial.data.get_reco_dataset loads
SYNTHETIC_SIZES = ("ci", "small", "ml-1m")  # hstu_tutorial.data.synthetic.SIZES
# HSTU's ablation switches and their defaults (the model as the paper trains it)
ABLATION_DEFAULTS = {
    "use_pos_bias": True,
    "use_time_bias": True,
    "use_gate": True,
    "attention_activation": "silu",
}

__all__ = [
    "ABLATION_DEFAULTS",
    "CONFIG_DIR",
    "ConfigError",
    "TrainConfig",
    "coerce",
    "config_from_dict",
    "list_configs",
    "load_config",
    "parse_overrides",
    "resolve_config_path",
]


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
    init_from: str = ""  # start a new run from these weights (e.g. a ckpt_best.pt); optimizer starts afresh
    tensorboard: bool = True
    progress: bool = True  # tqdm bar over epochs
    save_checkpoints: bool = True
    # save ckpt_last.pt every this many epochs (and always at the end); 1: a kill loses at most one epoch,
    # for a few ms per epoch (benchmarks/bench_checkpoint.py)
    checkpoint_every: int = 1
    max_steps: int = 0  # stop (resumably) after this many optimizer steps in this call of fit; 0 = no limit
    record_language: str = "en"  # the experiment record's field names: "en" or "zh" (日期, 数据集, ...)
    # --- data ---
    dataset: str = "ml-1m"  # one of DATASETS: "ml-1m", "ml-100k" or "synthetic"
    data_dir: str = ""  # folder with the raw files ("" = data/<dataset>)
    synthetic_size: str = "ci"
    # the longest history kept (each user's most recent items); the trainer's padded layout pads every
    # history to this width (ResidentSplit.pad_width). HSTU sizes its position-bias table from it.
    max_seq_len: int = 200
    protocol: str = (
        "reference"  # "reference": train on all but the test item; "validation": hold out valid too
    )
    stable_sort: bool = True
    # Stochastic Length (the paper's §3.2; hstu_tutorial/data/stochastic_length.py): 0 = off; alpha in (1, 2]:
    # every epoch, a training history of n > L = floor(max_seq_len^(alpha/2)) items is cut to L items with
    # probability 1 - max_seq_len^alpha / n^2. Training batches only: evaluation always sees whole histories.
    stochastic_length_alpha: float = 0.0
    stochastic_length_selection: str = "uniform"  # the items a cut history keeps: "uniform" or "recent"
    # --- model ---
    model: str = "hstu"  # "hstu" or "sasrec"
    embedding_dim: int = 50
    num_blocks: int = 2
    num_heads: int = 1
    dqk: int = 50  # HSTU: query/key width per head
    dv: int = 50  # HSTU: value width per head
    ffn_hidden: int = 50  # SASRec: feed-forward width
    dropout: float = 0.2
    # HSTU: "pytorch", "triton" or "auto" (triton on CUDA); SASRec: "sdpa", "sdpa-bf16" (SDPA on bf16
    # copies of q, k, v), "pytorch" or "auto" (sdpa-bf16 on CUDA, sdpa elsewhere)
    attention_impl: str = "auto"
    # HSTU ablation switches (docs/model_and_training.md, "Ablation switches"); SASRec takes only the defaults
    use_pos_bias: bool = True  # the position term of the relative attention bias
    use_time_bias: bool = True  # the time-gap term of the relative attention bias
    use_gate: bool = True  # o = u * LayerNorm(A v); false: o = LayerNorm(A v)
    attention_activation: str = (
        "silu"  # "silu": SiLU(qk + rab) / n; "softmax": softmax((qk + rab) / sqrt(dqk))
    )
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
    # "auto" (on CUDA), "on", "off": capture the training step as a CUDA graph (and replay each split's
    # evaluation as one from its second epoch on)
    cuda_graphs: str = "auto"
    # Triton attention on a GPU: tile sizes per shape from the shipped table for the GPU family, else the
    # tile cache, else tuned once (a minute) and cached (HSTU_TRITON_TUNING=tune re-times every shape);
    # false: fixed default tiles, no tuning (about 10% slower steps at ML-1M)
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
            "dataset": DATASETS,
            "synthetic_size": SYNTHETIC_SIZES,
            "protocol": ("reference", "validation"),
            "model": ("hstu", "sasrec"),
            "loss": ("sampled_softmax", "full_softmax", "bce"),
            "cuda_graphs": ("auto", "on", "off"),
            "layout": ("auto", "jagged", "padded"),
            "record_language": ("en", "zh"),
            "attention_activation": ("silu", "softmax"),
            "stochastic_length_selection": SL_SELECTIONS,
        }
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ConfigError(
                    f"{key} = {getattr(self, key)!r} is not one of {list(allowed)}"
                    + _did_you_mean(str(getattr(self, key)), allowed)
                )
        per_model = {
            "hstu": ("auto", "pytorch", "triton"),
            "sasrec": ("auto", "sdpa", "sdpa-bf16", "pytorch"),
        }
        if self.attention_impl not in per_model[self.model]:
            raise ConfigError(
                f"model = {self.model!r} takes attention_impl in {list(per_model[self.model])}, "
                f"not {self.attention_impl!r}"
            )
        ablated = [
            f"{k} = {getattr(self, k)!r}" for k, v in ABLATION_DEFAULTS.items() if getattr(self, k) != v
        ]
        if self.model != "hstu" and ablated:
            raise ConfigError(
                f"{', '.join(ablated)}: the ablation switches change HSTU's STU layer, and model = "
                f"{self.model!r} has none; remove them (defaults {ABLATION_DEFAULTS}) or use model = 'hstu'"
            )
        full_or_none = self.use_pos_bias == self.use_time_bias
        if self.attention_impl == "triton" and not (full_or_none and self.attention_activation == "silu"):
            raise ConfigError(
                f"attention_impl = 'triton' computes SiLU attention with the full relative bias or none, not "
                f"{', '.join(ablated)}; set attention_impl = 'pytorch' (or 'auto': PyTorch for this ablation)"
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
        sl = self.stochastic_length_alpha
        if sl != 0 and not 1.0 < sl <= 2.0:
            raise ConfigError(
                f"stochastic_length_alpha = {sl} is outside the paper's range (1, 2]; use 0 to turn Stochastic "
                "Length off, or a value such as 1.6 (smaller cuts more; 2 cuts nothing)"
            )
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


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _example(example) -> str:
    return "" if example is None else f" (e.g. {example})"


def _parse_sequence(key: str, text: str, example):
    """'[1, 2]' (a TOML array) or '1, 2' (comma-separated TOML values) -> a Python list."""
    text = text.strip()
    try:
        if text.startswith("["):
            return tomllib.loads(f"v = {text}")["v"]
        return [tomllib.loads(f"v = {x.strip()}")["v"] for x in text.split(",") if x.strip()]
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{key} must be a list such as {example}, got {text!r}") from err


def coerce(key: str, value, tp, example=None):
    """Check and convert `value` (from TOML, `--set` strings or keyword arguments) to the annotation `tp`.

    Understands bool, int, float, str, `X | None`, `list[X]`, `tuple[X, ...]` and `tuple[X, Y]`;
    `example` (the field's default) is quoted in the error message.
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))
        ):
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(key, value, option, example)
            except ConfigError as err:
                errors.append(str(err))
        if len(errors) == 1:
            raise ConfigError(errors[0] + ("; none is accepted too" if type(None) in args else ""))
        raise ConfigError(f"{key}: {value!r} fits none of the accepted forms: " + "; ".join(errors))
    if origin in (list, tuple):
        if isinstance(value, str):
            value = _parse_sequence(key, value, example)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list such as {example or '[1, 2]'}, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key} must hold {len(args)} values, got {len(value)}: {value!r}")
            elems = args
        else:
            elems = (args[0] if args else typing.Any,) * len(value)
        out = [coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, elems))]
        return tuple(out) if origin is tuple else out
    if tp is typing.Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key} must be an integer{_example(example)}, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number{_example(example)}, got {value!r}")
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string (in quotes in a TOML file), got {value!r}")
        return value
    raise ConfigError(f"{key}: the config cannot read values of type {tp!r}")  # pragma: no cover


def _field_types() -> dict:
    """{key: annotation} of TrainConfig's fields, the annotations resolved from their strings."""
    return typing.get_type_hints(TrainConfig)


def config_from_dict(values: dict, base: TrainConfig | None = None, source: str = "config") -> TrainConfig:
    """A TrainConfig from `values` (unknown keys rejected with the list of valid ones)."""
    cfg = copy.deepcopy(base) if base is not None else TrainConfig()
    valid = TrainConfig.keys()
    types_ = _field_types()
    defaults = TrainConfig()
    for key, value in values.items():
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=3)
            hint = f" Did you mean {', '.join(near)}?" if near else ""
            raise ConfigError(f"unknown key {key!r} in {source}.{hint} Valid keys: {', '.join(valid)}")
        setattr(cfg, key, coerce(key, value, types_[key], example=getattr(defaults, key)))
    return cfg


def list_configs() -> list[str]:
    """Names of the bundled configs, e.g. 'ml-1m/hstu-sampled-softmax-n128-final'."""
    return sorted(str(p.relative_to(CONFIG_DIR).with_suffix("")) for p in CONFIG_DIR.glob("**/*.toml"))


def _did_you_mean(value: str, options) -> str:
    near = difflib.get_close_matches(value, list(options), n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""


def _bundled_name(name: str) -> str:
    """'configs/ml-1m/x.gin' or 'ml-1m/x.toml' -> 'ml-1m/x' (the reference's paths name our configs)."""
    name = name.replace("\\", "/").strip()
    for prefix in ("./", "configs/", "hstu_tutorial/configs/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    for suffix in (".toml", ".gin"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name


def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    """A TOML file: an existing path, or a bundled config name (a `configs/` prefix and a `.toml` or
    `.gin` suffix are allowed, so the reference's gin paths name the matching bundled config)."""
    path = Path(name_or_path)
    if path.is_file() and path.suffix != ".gin":
        return path
    name = _bundled_name(str(name_or_path))
    candidate = CONFIG_DIR / f"{name}.toml"
    if name and candidate.is_file():
        return candidate
    if path.is_dir():
        raise ConfigError(f"config {str(name_or_path)!r} is a folder; give a .toml file or a bundled name")
    raise ConfigError(
        f"no config {str(name_or_path)!r}: neither a file nor a bundled config"
        + (_did_you_mean(name, list_configs()) or ".")
        + " `hstu-train --list` shows the bundled configs"
    )


def parse_overrides(overrides: Sequence[str]) -> dict:
    """['key=value', ...] -> {key: value-string} (values are converted against the fields' types)."""
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
