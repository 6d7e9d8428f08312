"""The official generative-recommenders gin configs, read with gin-config, translated to `TrainConfig` keys.

    hstu-train --gin_config_file configs/ml-1m/hstu-sampled-softmax-n128-final.gin

The official trainer (`generative_recommenders/research/trainer/train.py`) takes its settings as gin
bindings such as `train_fn.item_embedding_dim = 50` or `hstu_encoder.dqk = 50`. This module walks the
bindings with gin's own parser (`gin.config_parser.ConfigParser`: comments, macros, includes and literals
are read exactly as gin reads them) and decides, binding by binding, through `GIN_RULES`:

    key      the binding sets one of our config keys (`train_fn.num_epochs` -> `num_epochs`)
    same     the binding must equal another one we map (`hstu_encoder.linear_dropout_rate` = `dropout`,
             because our encoders use one dropout rate everywhere)
    fixed    the project implements one value only (the one the frozen configs use); another value is a
             `ConfigError` naming the binding and the supported value
    ignored  the binding does not change the maths (data loader workers, logging cadence): one note

A binding the file leaves out takes the official code's default, as it would there (e.g. `train_fn.
sampling_strategy` defaults to "in-batch", which the project does not implement, so a file must bind
"local"). Settings the official trainer hard-codes rather than binds are in `OFFICIAL_TRAINER`.
gin-config is imported only here, only when a gin file is read.
"""

from __future__ import annotations

import os
import sys
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hstu_tutorial.errors import ConfigError
from hstu_tutorial.training.config import (
    TrainConfig,
    config_from_dict,
    list_configs,
    load_config,
    parse_overrides,
    resolve_config_path,
)

__all__ = [
    "GIN_RULES",
    "OFFICIAL_TRAINER",
    "GinRule",
    "load_gin_config",
    "read_gin_bindings",
    "translate_gin",
]

DOC = "docs/coming_from_generative_recommenders.md"


@dataclass(frozen=True)
class GinRule:
    """What one official gin binding becomes here (see the module docstring for the four kinds)."""

    kind: str  # "key", "same", "fixed" or "ignored"
    key: str = ""  # our TrainConfig key ("key", "same")
    default: object = None  # the official code's default, used when the file leaves the binding out
    values: dict | None = None  # official value -> our value, for a key with a fixed vocabulary
    fixed: object = None  # the one value supported ("fixed")
    why: str = ""  # said in the note ("ignored") or the error ("fixed")


def _key(key, default, values=None):
    return GinRule("key", key, default, values)


def _fixed(value, default, why):
    return GinRule("fixed", default=default, fixed=value, why=why)


def _ignored(why, default=None):
    return GinRule("ignored", default=default, why=why)


_ONE_DROPOUT = "our encoders use one dropout rate (key dropout) for the input and every block"
# Every binding the official research trainer and its two encoders take, with the official defaults.
GIN_RULES: dict[str, GinRule] = {
    "train_fn.dataset_name": _key(
        "dataset", "ml-20m", {v: v for v in ("ml-1m", "ml-20m", "ml-100k", "synthetic")}
    ),
    "train_fn.max_sequence_length": _key("max_seq_len", 200),
    "train_fn.positional_sampling_ratio": _fixed(1.0, 1.0, "every position of a history is trained on"),
    "train_fn.local_batch_size": _key("batch_size", 128),  # per GPU, as our batch_size under torchrun
    "train_fn.eval_batch_size": _ignored("users per evaluation batch: memory only (ours: eval_batch_size)"),
    "train_fn.eval_user_max_batch_size": _ignored("evaluation chunking: memory only"),
    "train_fn.main_module": _key("model", "SASRec", {"HSTU": "hstu", "SASRec": "sasrec"}),
    "train_fn.main_module_bf16": _fixed(
        False,
        False,
        "the official casts every weight to bf16; our bf16 = true is autocast over fp32 "
        "weights, another recipe (set it with --set bf16=true if that is what you want)",
    ),
    "train_fn.dropout_rate": _key("dropout", 0.2),
    "train_fn.user_embedding_norm": _fixed("l2_norm", "l2_norm", "the encoders L2-normalise their output"),
    "train_fn.sampling_strategy": _fixed(
        "local", "in-batch", "negatives are drawn uniformly from the whole catalogue, no in-batch sampler"
    ),
    "train_fn.loss_module": _key(
        "loss", "SampledSoftmaxLoss", {"SampledSoftmaxLoss": "sampled_softmax", "BCELoss": "bce"}
    ),
    "train_fn.loss_weights": _fixed({}, {}, "there are no auxiliary losses to weight"),
    "train_fn.num_negatives": _key("num_negatives", 1),
    "train_fn.loss_activation_checkpoint": _ignored(
        "recomputes the loss in the backward pass: memory only (ours: recompute, grad_accum_steps)", False
    ),
    "train_fn.item_l2_norm": _fixed(True, False, "item embeddings are always L2-normalised before scoring"),
    "train_fn.temperature": _key("temperature", 0.05),
    "train_fn.num_epochs": _key("num_epochs", 101),
    "train_fn.learning_rate": _key("learning_rate", 1e-3),
    "train_fn.num_warmup_steps": _fixed(0, 0, "the trainer has no learning-rate warm-up"),
    "train_fn.weight_decay": _key("weight_decay", 1e-3),
    "train_fn.top_k_method": _fixed(
        "MIPSBruteForceTopK",
        "MIPSBruteForceTopK",
        "evaluation ranks the whole catalogue exactly by dot product",
    ),
    "train_fn.eval_interval": _ignored("logs a partial evaluation every n steps: logging only"),
    "train_fn.full_eval_every_n": _ignored("we evaluate every user after every epoch", 1),
    "train_fn.save_ckpt_every_n": _ignored("checkpoint cadence (ours: checkpoint_every)"),
    "train_fn.partial_eval_num_iters": _ignored("size of the partial evaluations: logging only"),
    "train_fn.embedding_module_type": _fixed("local", "local", "one item-embedding table"),
    "train_fn.item_embedding_dim": _key("embedding_dim", 240),
    "train_fn.interaction_module_type": _fixed(
        "DotProduct", "", "items are scored by dot product (no MoL similarity)"
    ),
    "train_fn.gr_output_length": _fixed(
        10, 10, "position tables are sized max_seq_len + 10 + 1, as in the official code"
    ),
    "train_fn.l2_norm_eps": _fixed(1e-6, 1e-6, "norms are clamped at 1e-6 (hstu_tutorial.losses.L2_EPS)"),
    "train_fn.enable_tf32": _key("tf32", False),
    "train_fn.random_seed": _key("seed", 42),
    "hstu_encoder.num_blocks": _key("num_blocks", 2),
    "hstu_encoder.num_heads": _key("num_heads", 1),
    "hstu_encoder.dqk": _key("dqk", 64),
    "hstu_encoder.dv": _key("dv", 64),
    "hstu_encoder.linear_dropout_rate": GinRule("same", "dropout", 0.0, why=_ONE_DROPOUT),
    "hstu_encoder.attn_dropout_rate": _fixed(0.0, 0.0, "no dropout on attention weights in HSTU"),
    "hstu_encoder.normalization": _fixed("rel_bias", "rel_bias", "attention is divided by n, with rab"),
    "hstu_encoder.linear_config": _fixed("uvqk", "uvqk", "one projection gives u, v, q and k"),
    "hstu_encoder.linear_activation": _fixed("silu", "silu", "the pointwise activation is SiLU"),
    "hstu_encoder.concat_ua": _fixed(False, False, "the output projection reads u * norm(a v) only"),
    "hstu_encoder.enable_relative_attention_bias": _fixed(True, True, "rab is always on"),
    "sasrec_encoder.num_blocks": _key("num_blocks", 2),
    "sasrec_encoder.num_heads": _key("num_heads", 1),
    "sasrec_encoder.ffn_hidden_dim": _key("ffn_hidden", 64),
    "sasrec_encoder.ffn_activation_fn": _fixed("relu", "relu", "the feed-forward activation is ReLU"),
    "sasrec_encoder.ffn_dropout_rate": GinRule("same", "dropout", 0.2, why=_ONE_DROPOUT),
    "get_sequential_encoder.activation_checkpoint": _ignored(
        "recomputes blocks in the backward pass: memory only (ours: recompute)", False
    ),
    "create_data_loader.*": _ignored(
        "data loader workers: the trainer keeps the data on the device and runs no loader processes"
    ),
}
_ENCODER = {"hstu_encoder": "hstu", "sasrec_encoder": "sasrec"}

# What the official trainer does without a binding, written as our keys (see DOC for each).
OFFICIAL_TRAINER = {
    "protocol": "reference",  # no validation split; test metrics after every epoch
    "stable_sort": False,  # pandas' default (unstable) sort of same-second ratings
    "betas": [0.9, 0.98],  # AdamW betas, hard-coded
    "early_stopping_patience": 0,  # it always runs num_epochs
}


@dataclass(frozen=True)
class Binding:
    """One gin binding as read: its value and where it was written (file:line)."""

    value: object
    where: str


class _Macro:
    def __init__(self, name: str):
        self.name = name


class _Reference:
    def __init__(self, name: str):
        self.name = name


def _gin_parser():
    try:
        from gin import config_parser
    except ImportError as err:
        raise ConfigError(
            "reading a gin file needs the gin-config package: pip install gin-config==0.5.0 "
            "(or use --config with the bundled TOML of the same name)"
        ) from err

    class Delegate(config_parser.ParserDelegate):
        def configurable_reference(self, scoped_name, evaluate):
            return _Reference(scoped_name + ("()" if evaluate else ""))

        def macro(self, name):
            return _Macro(name)

    return config_parser, Delegate()


def _statements(path: Path, seen: tuple = ()):
    """Every statement of a gin file, includes followed (relative to the including file, then the cwd)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: includes itself (through {', '.join(str(p) for p in seen)})")
    config_parser, delegate = _gin_parser()
    try:
        statements = list(config_parser.ConfigParser(path.read_text(), delegate))
    except SyntaxError as err:
        raise ConfigError(f"{path} is not a valid gin file: line {err.lineno}: {err.msg}") from err
    except tokenize.TokenError as err:  # gin tokenizes with Python's tokenizer: e.g. an unclosed bracket
        raise ConfigError(f"{path} is not a valid gin file: {err.args[0]} (line {err.args[1][0]})") from err
    for st in statements:
        if isinstance(st, config_parser.IncludeStatement):
            inc = next((p for p in (path.parent / st.filename, Path(st.filename)) if p.is_file()), None)
            if inc is None:
                raise ConfigError(f"{path}:{st.location.line_num}: include {st.filename!r}: no such file")
            yield from _statements(inc, (*seen, path.resolve()))
        else:
            yield path, st


def read_gin_bindings(path: str | os.PathLike) -> tuple[dict[str, Binding], list[str]]:
    """({'train_fn.num_epochs': Binding(101, 'file:line'), ...}, notes) of a gin file, macros resolved.

    Selectors lose their module path (`a.b.train_fn` -> `train_fn`); scoped bindings (`scope/train_fn.x`)
    and configurable references (`@name`) raise ConfigError: the official ML configs use neither."""
    config_parser, _ = _gin_parser()
    path = Path(path)
    bindings: dict[str, Binding] = {}
    macros: dict[str, object] = {}
    notes = []
    for file, st in _statements(path):
        where = f"{file}:{st.location.line_num}"
        if isinstance(st, config_parser.ImportStatement):
            notes.append(f"{where}: import {st.module} ignored (it loads the official code's modules)")
            continue
        if not isinstance(st, config_parser.BindingStatement):
            raise ConfigError(f"{where}: {type(st).__name__} is not translated: {st.location.line_content!r}")
        if not st.arg_name:  # `NAME = value` defines a macro, used as %NAME
            macros[st.selector] = st.value
            continue
        name = f"{st.selector.rsplit('.', 1)[-1]}.{st.arg_name}"
        if st.scope:
            raise ConfigError(
                f"{where}: scoped binding {st.scope}/{name} is not translated; bind {name} unscoped"
            )
        value = st.value
        if isinstance(value, _Macro):
            if value.name not in macros:
                raise ConfigError(f"{where}: {name} uses macro %{value.name}, which is not defined before it")
            value = macros[value.name]
        if isinstance(value, _Reference):
            raise ConfigError(
                f"{where}: {name} = @{value.name} (a configurable reference) is not translated; "
                "write the value itself"
            )
        bindings[name] = Binding(value, where)
    return bindings, notes


def _rule(name: str) -> GinRule | None:
    return GIN_RULES.get(name) or GIN_RULES.get(name.split(".", 1)[0] + ".*")


def _supported() -> str:
    groups: dict[str, list[str]] = {}
    for name in GIN_RULES:
        sel, arg = name.split(".", 1)
        groups.setdefault(sel, []).append(arg)
    return "; ".join(
        f"{sel}.{{{', '.join(args)}}}" if args != ["*"] else f"{sel}.*" for sel, args in groups.items()
    )


def _same(a, b) -> bool:
    """Gin's literal equals the supported value (numbers by value: `0` and `0.0` agree; bools strictly)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= 1e-12 * max(1.0, abs(b))
    return a == b


def translate_gin(path: str | os.PathLike) -> tuple[dict, list[str]]:
    """(our config values, notes) for an official gin file: every binding mapped, checked or noted.

    Raises ConfigError, one line naming the binding, for one the project does not support."""
    path = Path(path)
    bindings, notes = read_gin_bindings(path)
    for name, b in bindings.items():
        if _rule(name) is None:
            raise ConfigError(
                f"{b.where}: gin binding {name} is not one this project translates. "
                f"Supported: {_supported()} (see {DOC})"
            )

    def value_of(name):  # the bound value, else the official default
        return (
            (bindings[name].value, bindings[name].where)
            if name in bindings
            else (GIN_RULES[name].default, f"{path} (unbound: the official default)")
        )

    model_value, _ = value_of("train_fn.main_module")
    model = GIN_RULES["train_fn.main_module"].values.get(model_value)
    values = dict(OFFICIAL_TRAINER)
    for name, rule in GIN_RULES.items():
        selector = name.split(".", 1)[0]
        if selector in _ENCODER and _ENCODER[selector] != model:
            if name in bindings:
                notes.append(f"{bindings[name].where}: {name} ignored: main_module is {model_value!r}")
            continue
        if rule.kind == "ignored":
            for bound in (n for n in bindings if _rule(n) is rule):
                notes.append(f"{bindings[bound].where}: {bound} ignored: {rule.why}")
            continue
        value, where = value_of(name)
        if rule.kind == "key" and rule.values is not None:
            if value not in rule.values:
                raise ConfigError(
                    f"{where}: gin binding {name} = {value!r} is not supported; supported values: "
                    f"{', '.join(repr(v) for v in rule.values)} (see {DOC})"
                )
            values[rule.key] = rule.values[value]
        elif rule.kind == "key":
            values[rule.key] = value
        elif rule.kind == "fixed" and not _same(value, rule.fixed):
            raise ConfigError(
                f"{where}: gin binding {name} = {value!r} is not supported: the project supports "
                f"{rule.fixed!r} only ({rule.why}; see {DOC})"
            )
    for name, rule in GIN_RULES.items():  # checked once every key is known
        if rule.kind == "same" and _ENCODER.get(name.split(".", 1)[0]) == model:
            value, where = value_of(name)
            if not _same(value, values[rule.key]):
                raise ConfigError(
                    f"{where}: gin binding {name} = {value!r} differs from train_fn.dropout_rate = "
                    f"{values[rule.key]!r}, which is not supported: {rule.why}; bind both to the same rate"
                )
    if values["loss"] == "bce" and not _same(values["temperature"], 1.0):
        raise ConfigError(
            f"{path}: BCELoss with train_fn.temperature = {values['temperature']!r} is not supported: "
            "the official BCELoss requires temperature 1.0"
        )
    if values["dataset"] == "ml-20m":
        notes.append(
            f"{path}: dataset ml-20m translated, but the data loader reads ml-1m, ml-100k and synthetic "
            "only: training stops when it loads the data"
        )
    return values, notes


def _bundled_name(name: str) -> str:
    """'configs/ml-1m/x.gin' -> 'ml-1m/x' (the official repo's layout to our bundled config names)."""
    name = str(name).replace("\\", "/")
    if name.startswith("./"):
        name = name[2:]
    if name.startswith("configs/"):
        name = name[len("configs/") :]
    return name[: -len(".gin")] if name.endswith(".gin") else name


def load_gin_config(
    name_or_path: str | os.PathLike,
    overrides: Sequence[str] | dict = (),
    *,
    config: str | None = None,
    quiet: bool = False,
    **kwargs,
) -> TrainConfig:
    """A validated TrainConfig from an official gin file, then `overrides` and keyword arguments.

    A path that is not a file is read as a config name, with or without `configs/` and `.gin`, and the
    bundled TOML of that name is loaded instead (it holds the same settings). Notes go to stderr unless
    `quiet`. `config` is the CLI's --config, refused alongside a gin file (one source of settings)."""
    if config:
        raise ConfigError(
            f"give --config or --gin_config_file, not both (got --config {config} and --gin_config_file "
            f"{name_or_path})"
        )
    path = Path(name_or_path)
    if not path.is_file():
        name = _bundled_name(str(name_or_path))
        try:
            toml = resolve_config_path(name)
        except ConfigError:
            raise ConfigError(
                f"no gin file {str(name_or_path)!r} and no bundled config {name!r}. Give the path of an "
                f"official gin file, or one of: {', '.join(list_configs())}"
            ) from None
        if not quiet:
            print(
                f"hstu-train: no gin file {str(name_or_path)!r} here; using the bundled config {name} "
                f"({toml}), which holds the same settings (see {DOC})",
                file=sys.stderr,
            )
        return load_config(toml, overrides, **kwargs)
    values, notes = translate_gin(path)
    if not quiet:
        for line in notes:
            print(f"hstu-train: gin: {line}", file=sys.stderr)
    cfg = config_from_dict(values, source=str(path))
    cfg.name = path.stem
    cfg.description = f"translated from the official gin config {path}"
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    cfg = config_from_dict(overrides, cfg, source="--set")
    cfg = config_from_dict(kwargs, cfg, source="keyword arguments")
    return cfg.validate()
