"""Checks of exercise 08 (configs and tuning): a TOML config, the official gin bindings, a validation sweep."""

from __future__ import annotations

import difflib
import json
import math
import tempfile
import tomllib
import typing
from collections.abc import Callable
from pathlib import Path

from ._common import CheckFailed, _reference, _run

# ---- 1. a TOML config ---------------------------------------------------------------------------------

# The run exercise 08 describes in words; the file must give the loader exactly these values.
ASKED_RUN: dict[str, object] = {
    "name": "sasrec-h4-bf16",
    "model": "sasrec",
    "num_blocks": 2,
    "num_heads": 4,
    "embedding_dim": 64,
    "ffn_hidden": 64,
    "num_negatives": 100,
    "bf16": True,
    "seed": 7,
    "dataset": "synthetic",
    "synthetic_size": "ci",
    "max_seq_len": 50,
    "protocol": "validation",
    "learning_rate": 5e-4,
    "num_epochs": 20,
}


def _toml_type_ok(value, tp) -> bool:
    """Is the value as TOML parsed it already of the field's type (no conversion from a string needed)?"""
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return isinstance(value, list)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def _toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _same_value(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9)
    return a == b


def check_config_file(fn: Callable) -> bool:
    """Check `fn(path)`: it writes, at `path`, a TOML config that `hstu_tutorial.training.config.load_config`
    reads into the run exercise 08 describes (`ASKED_RUN`): every asked value, written with TOML's own types."""

    def body(fn):
        load_config = _reference("hstu_tutorial.training.config", "load_config")
        config_error = _reference("hstu_tutorial.errors", "ConfigError")
        train_config = _reference("hstu_tutorial.training.config", "TrainConfig")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "my-run.toml"
            fn(str(path))
            if not path.is_file():
                raise CheckFailed(
                    f"your function wrote no file at the path it was given ({path}): write the TOML text "
                    "there, e.g. Path(path).write_text(text)."
                )
            text = path.read_text()
            try:
                cfg = load_config(path)
            except config_error as err:
                raise CheckFailed(f"the project's loader refused the file: {err}") from None
            raw = tomllib.loads(text)
        types = typing.get_type_hints(train_config)
        defaults = train_config()
        problems = []
        for key, want in ASKED_RUN.items():
            if key in raw and not _toml_type_ok(raw[key], types[key]):
                what = type(raw[key]).__name__
                problems.append(
                    f"{key} is written as a {what} ({_toml_literal(raw[key])}); it is a "
                    f"{getattr(types[key], '__name__', types[key])} field: write {key} = "
                    f"{_toml_literal(want)} (the loader converts strings only because --set values arrive "
                    "as text; in a file, use TOML's own types)"
                )
            elif key not in raw and not _same_value(getattr(cfg, key), want):
                problems.append(
                    f"{key} is missing, so it keeps its default {_toml_literal(getattr(defaults, key))}; "
                    f"the run asks for {key} = {_toml_literal(want)}"
                )
            elif not _same_value(getattr(cfg, key), want):
                problems.append(
                    f"{key} = {_toml_literal(getattr(cfg, key))}, the run asks for {_toml_literal(want)}"
                )
        if problems:
            n = len(problems)
            raise CheckFailed(
                f"{n} asked field{'s' if n > 1 else ''} not right: " + "; ".join(problems) + "."
            )
        return len(ASKED_RUN)

    return _run("check_config_file", fn, body)


# ---- 2. reading the official gin bindings ------------------------------------------------------------

# (binding, value) pairs of an official-style ML-1M HSTU gin file, as exercise 08 writes it.
GIN_CASES: tuple[tuple[str, object], ...] = (
    ("train_fn.dataset_name", "ml-1m"),
    ("train_fn.max_sequence_length", 200),
    ("train_fn.local_batch_size", 128),
    ("train_fn.main_module", "HSTU"),
    ("train_fn.dropout_rate", 0.2),
    ("train_fn.num_negatives", 128),
    ("train_fn.loss_module", "SampledSoftmaxLoss"),
    ("train_fn.item_embedding_dim", 50),
    ("train_fn.learning_rate", 1e-3),
    ("train_fn.random_seed", 42),
    ("train_fn.enable_tf32", True),
    ("hstu_encoder.num_heads", 1),
    ("hstu_encoder.dqk", 50),
    ("hstu_encoder.linear_dropout_rate", 0.2),
    ("train_fn.num_warmup_steps", 0),
    ("train_fn.eval_interval", 100),
)


def expected_gin_mapping(binding: str, value):
    """What the project's gin translation makes of one binding: (our key, our value), or None when the
    binding sets no key of ours (a value fixed by the implementation, or a setting that changes no maths)."""
    rules = _reference("hstu_tutorial.training.gin_config", "GIN_RULES")
    rule = rules[binding]
    if rule.kind in ("fixed", "ignored"):
        return None
    if rule.values is not None:
        return rule.key, rule.values[value]
    return rule.key, value


def check_gin_mapping(fn: Callable) -> bool:
    """Check `fn(binding, value) -> (key, value) | None` on the bindings of exercise 08's gin file
    (`GIN_CASES`) against the project's translation (`hstu_tutorial.training.gin_config.GIN_RULES`)."""

    def body(fn):
        rules = _reference("hstu_tutorial.training.gin_config", "GIN_RULES")
        keys = _reference("hstu_tutorial.training.config", "TrainConfig").keys()
        problems = []
        for binding, value in GIN_CASES:
            want = expected_gin_mapping(binding, value)
            try:
                got = fn(binding, value)
            except Exception as exc:
                exc.check_case = f" (case: binding={binding}, value={value!r})"
                raise
            if isinstance(got, list):
                got = tuple(got)
            rule = rules[binding]
            if want is None:
                if got is not None:
                    kind = "is fixed" if rule.kind == "fixed" else "is ignored"
                    problems.append(f"{binding} {kind} here ({rule.why}): return None, not {got!r}")
                continue
            if got is None:
                problems.append(f"{binding} = {value!r} sets one of our keys: return (key, value), not None")
                continue
            if not (isinstance(got, tuple) and len(got) == 2):
                problems.append(f"{binding}: return a (key, value) pair, got {got!r}")
                continue
            key, val = got
            if key not in keys:
                near = difflib.get_close_matches(str(key), keys, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                problems.append(
                    f"{binding} -> {key!r}: no such key in TrainConfig{hint}; the official names differ "
                    "from ours"
                )
            elif key != want[0]:
                problems.append(f"{binding} -> {key!r}: it sets another key of ours")
            elif not _same_value(val, want[1]):
                problems.append(
                    f"{binding} -> {key} = {val!r}: the key is right but the value is not ours; our config "
                    f"writes {key} = {want[1]!r}"
                )
        if problems:
            n = len(problems)
            raise CheckFailed(
                f"{n} of {len(GIN_CASES)} bindings mapped wrongly: "
                + "; ".join(problems[:5])
                + (f"; and {n - 5} more" if n > 5 else "")
                + ". hstu_tutorial.training.gin_config (GIN_RULES) is the project's table."
            )
        return len(GIN_CASES)

    return _run("check_gin_mapping", fn, body)


# ---- 3. a hyperparameter sweep, selected on validation ------------------------------------------------

# keys that must be the same in every run of a sweep: the data, the split, the budget and the yardstick
SAME_IN_A_SWEEP = (
    "dataset",
    "data_dir",
    "synthetic_size",
    "max_seq_len",
    "protocol",
    "stable_sort",
    "num_epochs",
    "seed",
    "eval_ks",
    "selection_metric",
)
# keys that describe how a run was executed or logged, not what it computes
BOOKKEEPING = (
    "name",
    "description",
    "device",
    "exp_dir",
    "timestamp_run_dir",
    "resume",
    "init_from",
    "tensorboard",
    "progress",
    "save_checkpoints",
    "checkpoint_every",
    "max_steps",
    "record_language",
    "eval_batch_size",
    "attention_impl",
    "tf32",
    "compile",
    "cuda_graphs",
    "autotune",
    "layout",
    "recompute",
    "grad_accum_steps",
)
REEVAL_TOL = 2e-3  # |saved - recomputed| allowed for a validation metric (GPU reductions are not bitwise)


def _label(labels, i) -> str:
    return f"run {labels[i]!r}" if isinstance(labels[i], str) else f"run {labels[i]}"


def _as_results(entry, where: str) -> dict:
    """A results dict as train() returns it, from the dict itself, its results.json or its run folder."""
    if isinstance(entry, str | Path):
        path = Path(entry)
        path = path / "results.json" if path.is_dir() else path
        if not path.is_file():
            raise CheckFailed(f"{where}: {entry} is neither a run folder nor a results.json file.")
        return json.loads(path.read_text())
    if not isinstance(entry, dict):
        raise CheckFailed(
            f"{where} is a {type(entry).__name__}: give the dict train() returns (or the path of the "
            "results.json it wrote)."
        )
    return entry


def _not_the_trainers(where: str, why: str) -> CheckFailed:
    return CheckFailed(
        f"{where} is not a result the trainer produced: {why}. Pass the dict `train(...)` returns (or "
        "its results.json); numbers typed by hand or edited cannot be checked against saved weights."
    )


def _compare_saved(res: dict, saved: dict, where: str) -> None:
    """The dict must say what the trainer wrote in results.json (config, best epoch, history)."""
    for part in ("config", "best_by_valid", "history"):
        a = json.loads(json.dumps(res.get(part), default=str))
        if a != saved.get(part):
            raise _not_the_trainers(
                where, f"its {part!r} differs from the results.json the trainer wrote in {res['run_dir']}"
            )


def _reevaluate(res: dict, where: str, datasets: dict) -> dict:
    """Validation metrics of the saved best weights (ckpt_best.pt), recomputed here."""
    trainer_cls = _reference("hstu_tutorial.training.trainer", "Trainer")
    config_from_dict = _reference("hstu_tutorial.training.config", "config_from_dict")
    read_checkpoint = _reference("hstu_tutorial.training.checkpoints", "read_checkpoint")
    run_dir = Path(res["run_dir"])
    ckpt = run_dir / "ckpt_best.pt"
    if not ckpt.is_file():
        raise CheckFailed(
            f"{where}: {ckpt} is missing, so its validation numbers cannot be re-checked: train with "
            "save_checkpoints = true (the default)."
        )
    state, _ = read_checkpoint(ckpt, "weights")
    cfg_values = {k: v for k, v in res["config"].items() if k not in ("resume", "init_from")}
    if any(_diff(state["config"].get(k), cfg_values[k]) for k in cfg_values if k not in BOOKKEEPING):
        raise _not_the_trainers(where, f"its config is not the one saved with its weights in {ckpt}")
    if int(state["epoch"]) != int(res["best_by_valid"]["epoch"]):
        raise _not_the_trainers(
            where,
            f"it says the best epoch is {res['best_by_valid']['epoch']}, its weights {ckpt} are from "
            f"epoch {state['epoch']}",
        )
    cfg = config_from_dict(
        {**cfg_values, "tensorboard": False, "progress": False, "save_checkpoints": False}
    ).validate()
    trainer = res.get("trainer")
    if isinstance(trainer, trainer_cls) and trainer.cfg.dataset == cfg.dataset:
        dataset = trainer.dataset
    else:
        key = (cfg.dataset, cfg.data_dir, cfg.synthetic_size, cfg.max_seq_len, cfg.protocol, cfg.stable_sort)
        if key not in datasets:
            get_reco_dataset = _reference("hstu_tutorial.data", "get_reco_dataset")
            folder = cfg.data_dir or None
            if cfg.dataset == "ml-1m" and folder is None:
                folder = _reference("hstu_tutorial.presets", "ml1m_folder")()
            datasets[key] = get_reco_dataset(
                cfg.dataset,
                max_seq_len=cfg.max_seq_len,
                data_dir=folder,
                protocol=cfg.protocol,
                stable_sort=cfg.stable_sort,
                synthetic_size=cfg.synthetic_size,
                verbose=False,
            )
        dataset = datasets[key]
    fresh = trainer_cls(cfg, dataset=dataset, verbose=False)
    fresh.load_weights(ckpt)
    return fresh.evaluate(("valid",))["valid"]


def _diff(a, b) -> bool:
    a, b = json.loads(json.dumps(a, default=str)), json.loads(json.dumps(b, default=str))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return not _same_value(a, b)
    return a != b


def _verify(res: dict, where: str, datasets: dict) -> None:
    """Is `res` a real run of the trainer? Its files, its internal consistency, its saved weights."""
    for part in ("config", "best_by_valid", "history", "run_dir"):
        if not res.get(part):
            raise _not_the_trainers(where, f"it has no {part!r}")
    if res["config"].get("protocol") != "validation":
        raise CheckFailed(
            f"{where} uses protocol {res['config'].get('protocol')!r}: the model trained on each user's "
            "validation item, so its validation metric says nothing about unseen data. Tune with "
            "protocol = 'validation' (the validation item is held out, selection on it is honest)."
        )
    saved_file = Path(res["run_dir"]) / "results.json"
    if not saved_file.is_file():
        raise _not_the_trainers(where, f"its run folder {res['run_dir']} holds no results.json")
    _compare_saved(res, json.loads(saved_file.read_text()), where)
    metric = res["config"]["selection_metric"]
    best, hist = res["best_by_valid"], res["history"]
    epochs = {h["epoch"]: h for h in hist}
    if best.get("epoch") not in epochs or any(
        _diff(best["valid"][k], epochs[best["epoch"]]["valid"][k]) for k in best["valid"]
    ):
        raise _not_the_trainers(where, "its best epoch's numbers are not those of that epoch in its history")
    top = max(h["valid"][metric] for h in hist)
    if _diff(best["valid"][metric], top):
        raise _not_the_trainers(where, f"its best epoch is not the one with the highest validation {metric}")
    again = _reevaluate(res, where, datasets)
    if abs(again[metric] - best["valid"][metric]) > REEVAL_TOL:
        raise _not_the_trainers(
            where,
            f"its saved weights give validation {metric} = {again[metric]:.4f} when evaluated again, "
            f"the results say {best['valid'][metric]:.4f}",
        )


def _pick(chosen, sweep: dict, results: list, labels: list) -> int:
    """The index of the chosen run: a label, an index, the results dict itself or its run folder."""
    if isinstance(chosen, dict):
        for i, res in enumerate(results):
            if chosen is res or (chosen.get("run_dir") and chosen.get("run_dir") == res.get("run_dir")):
                return i
        raise CheckFailed("`chosen` is a results dict that is not one of your sweep's runs.")
    if isinstance(chosen, str | Path):
        for i, (label, res) in enumerate(zip(labels, results)):
            if str(chosen) in (str(label), str(res.get("run_dir")), res.get("name")):
                return i
        raise CheckFailed(f"`chosen` = {chosen!r} names none of your runs (labels: {labels}).")
    if isinstance(chosen, int) and not isinstance(chosen, bool) and -len(results) <= chosen < len(results):
        return chosen % len(results)
    raise CheckFailed(
        f"`chosen` = {chosen!r}: give the chosen run's label (a key of your sweep dict), its index, or "
        "its results dict."
    )


def check_tuning(sweep_results, chosen, default=None) -> bool:
    """Check a hyperparameter sweep: `sweep_results` (a dict label -> results, or a list; or a function
    returning one) holds runs of `train()` that differ only in hyperparameters, the default run among
    them; `chosen` (a label, an index, a results dict, or a function of the sweep returning one) is the
    run with the best validation metric, and it beats the default. The default is `default` when given,
    else the run whose varied keys all hold TrainConfig's defaults. Each run is verified against its
    results.json and by re-evaluating its saved best weights on the validation split."""

    def body(get_sweep):
        sweep = get_sweep()
        if isinstance(sweep, list | tuple):
            sweep = dict(enumerate(sweep))
        if not isinstance(sweep, dict) or len(sweep) < 2:
            raise CheckFailed(
                f"a sweep needs at least two runs (the default and one other), got {sweep!r:.80}: return "
                "a dict label -> the results of train()."
            )
        labels = list(sweep)
        results = [_as_results(sweep[lab], _label(labels, i)) for i, lab in enumerate(labels)]
        datasets: dict = {}
        for i, res in enumerate(results):
            _verify(res, _label(labels, i), datasets)
        dirs = [str(Path(r["run_dir"]).resolve()) for r in results]
        for i, d in enumerate(dirs):
            if dirs.index(d) != i:
                raise CheckFailed(
                    f"{_label(labels, i)} and {_label(labels, dirs.index(d))} are the same run ({d}): "
                    "each configuration needs its own run."
                )
        configs = [r["config"] for r in results]
        for key in SAME_IN_A_SWEEP:
            values = [json.dumps(c.get(key)) for c in configs]
            if len(set(values)) > 1:
                raise CheckFailed(
                    f"the runs differ in {key} ({', '.join(sorted(set(values)))}): a sweep compares "
                    "hyperparameters on the same data, split, number of epochs, seed and metric; keep "
                    f"{key} the same in every run."
                )
        fixed = set(SAME_IN_A_SWEEP) | set(BOOKKEEPING)
        defaults = _reference("hstu_tutorial.training.config", "TrainConfig")().to_dict()
        varied = sorted(
            k for k in defaults if k not in fixed and any(_diff(c.get(k), configs[0].get(k)) for c in configs)
        )
        if not varied:
            raise CheckFailed(
                "every run has the same hyperparameters: vary at least one (e.g. learning_rate)."
            )
        if default is None:
            at_default = [
                i for i, c in enumerate(configs) if not any(_diff(c.get(k), defaults[k]) for k in varied)
            ]
            if not at_default:
                wanted = ", ".join(f"{k} = {defaults[k]!r}" for k in varied)
                raise CheckFailed(
                    f"the default run is not in your sweep: none of the runs has {wanted} (TrainConfig's "
                    "defaults for the keys you varied). Include it: a tuned value only counts if it beats "
                    "the default, measured the same way."
                )
            d = at_default[0]
        else:
            d = _pick(default, sweep, results, labels)
        c = _pick(chosen(sweep) if callable(chosen) else chosen, sweep, results, labels)
        metric = configs[0]["selection_metric"]
        valid = [r["best_by_valid"]["valid"][metric] for r in results]
        test = [r["best_by_valid"]["test"][metric] for r in results]
        best = max(range(len(results)), key=lambda i: valid[i])
        if valid[c] < valid[best]:
            if test[c] >= max(test):
                raise CheckFailed(
                    f"you chose by the test metric: {_label(labels, c)} has the best test {metric} "
                    f"({test[c]:.4f}), but {_label(labels, best)} has the best validation {metric} "
                    f"({valid[best]:.4f} against {valid[c]:.4f}). Choose on validation only: the test split "
                    "is kept for the one final report, and choosing on it makes that report optimistic."
                )
            raise CheckFailed(
                f"{_label(labels, c)} is not the best on validation: its {metric} is {valid[c]:.4f}, "
                f"{_label(labels, best)} reaches {valid[best]:.4f}. Choose the highest best_by_valid "
                f"['valid']['{metric}']."
            )
        if not valid[c] > valid[d]:
            raise CheckFailed(
                f"no run beats the default on validation: the default ({_label(labels, d)}) reaches "
                f"{metric} {valid[d]:.4f}, the best of the others {max(v for i, v in enumerate(valid) if i != d):.4f}. "
                f"Try other values of {', '.join(varied)} (a larger learning rate, say), or other keys."
            )
        return len(results)

    get = sweep_results if callable(sweep_results) else (lambda: sweep_results)
    return _run("check_tuning", get, body)
