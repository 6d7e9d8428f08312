"""Checks of exercise 09: an ablation study of HSTU's parts, from real trainer runs to a result table.

`check_ablation(runs, make_table, ablation_overrides)` takes the dicts `train()` returned (one per
variant), the learner's table (or the function that builds it) and, optionally, the learner's overrides
function. It names the slip: a missing variant, two switches changed at once, another seed or budget, metrics
that are not the run's own, a softmax run that still divides by n, a Δ against the wrong row or with its sign
flipped.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch

from ._common import CheckFailed, _reference, _run

# variant -> the config keys it changes (everything else equal to the default run)
VARIANTS: dict[str, dict] = {
    "default": {},
    "no_pos_bias": {"use_pos_bias": False},
    "no_time_bias": {"use_time_bias": False},
    "no_gate": {"use_gate": False},
    "softmax": {"attention_activation": "softmax"},
}
COLUMNS = ("HR@10", "NDCG@10", "ΔHR@10", "ΔNDCG@10", "train_s")
METRIC_OF = {"HR@10": "hr@10", "NDCG@10": "ndcg@10"}
# config keys that change where a run writes or what it prints, never its numbers
BOOKKEEPING = frozenset(
    {
        "name", "description", "device", "exp_dir", "timestamp_run_dir", "resume", "init_from", "tensorboard",
        "progress", "save_checkpoints", "checkpoint_every", "record_language", "eval_batch_size", "compile",
        "autotune", "cuda_graphs", "layout", "attention_impl", "data_dir",
    }
)  # fmt: skip
BUDGET = ("num_epochs", "max_steps", "batch_size", "learning_rate", "early_stopping_patience")
SWITCH_DEFAULTS = {
    "use_pos_bias": True,
    "use_time_bias": True,
    "use_gate": True,
    "attention_activation": "silu",
}
RUN_KEYS = ("config", "history", "best_by_valid", "timing", "status", "epochs_run")


def reference_overrides(name: str) -> dict:
    """The config overrides of one ablation variant (the package's answer, used when yours is a stub)."""
    if name not in VARIANTS:
        raise KeyError(f"unknown variant {name!r}; the variants are {list(VARIANTS)}")
    return dict(VARIANTS[name])


def reference_table(runs: dict):
    """The package's result table: one row per variant, `COLUMNS` (best-by-validation test metrics)."""
    import pandas as pd

    rows = {}
    for name in VARIANTS:
        m, base = runs[name]["best_by_valid"]["test"], runs["default"]["best_by_valid"]["test"]
        rows[name] = {col: m[key] for col, key in METRIC_OF.items()}
        rows[name].update({f"Δ{col}": m[key] - base[key] for col, key in METRIC_OF.items()})
        rows[name]["train_s"] = runs[name]["timing"]["train_s"]
    return pd.DataFrame.from_dict(rows, orient="index")[list(COLUMNS)]


def _close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)


def _changes(values: dict) -> dict:
    """The keys of a config dict (all keys, or a few overrides) whose values differ from TrainConfig's
    defaults, the values converted as the trainer converts them."""
    TrainConfig = _reference("hstu_tutorial.training.config", "TrainConfig")
    config_from_dict = _reference("hstu_tutorial.training.config", "config_from_dict")
    cfg, base = config_from_dict(values).validate().to_dict(), TrainConfig().to_dict()
    return {k: v for k, v in cfg.items() if v != base[k]}


def _check_overrides(fn: Callable) -> None:
    """The learner's `ablation_overrides(name)`: one switch per variant, nothing else."""
    for name, want in VARIANTS.items():
        got = fn(name)
        if not isinstance(got, dict):
            raise CheckFailed(
                f"ablation_overrides({name!r}) should return a dict of config keys, got {got!r}."
            )
        try:
            changed = _changes(got)
        except Exception as exc:  # noqa: BLE001 - a ConfigError names the bad key
            raise CheckFailed(
                f"ablation_overrides({name!r}) returned {got!r}, which the config refuses: {exc}"
            ) from None
        _compare_changes(f"ablation_overrides({name!r})", name, changed, want)


def _compare_changes(what: str, name: str, changed: dict, want: dict) -> None:
    """`changed` (keys that differ from the default run) must be exactly `want` (the variant's switch)."""
    changed = {k: v for k, v in changed.items() if k not in BOOKKEEPING}
    if changed == want:
        return
    budget = {k: v for k, v in changed.items() if k in BUDGET}
    if "seed" in changed:
        raise CheckFailed(
            f"{what} changes the seed (seed = {changed['seed']}): every variant must start from the same "
            "seed as the default run, or the difference mixes the switch with luck."
        )
    if budget:
        raise CheckFailed(
            f"{what} changes the training budget ({budget}): every variant trains exactly as long as the "
            "default run, with the same batch size and learning rate."
        )
    switches = [k for k in changed if k in SWITCH_DEFAULTS]
    if len(switches) > 1:
        raise CheckFailed(
            f"{what} changes {len(switches)} switches at once ({', '.join(f'{k}={changed[k]!r}' for k in switches)}): "
            "an ablation changes one thing, so that the difference has one cause."
        )
    if not want and changed:
        raise CheckFailed(f"{what} should change nothing (the default is HSTU as is), but it sets {changed}.")
    key, value = next(iter(want.items()))
    if key not in changed:
        wrong = f" but changes {changed} instead" if changed else ", and changes nothing"
        raise CheckFailed(f"{what} should set {key} = {value!r}{wrong}.")
    if changed[key] != value:
        raise CheckFailed(
            f"{what} sets {key} = {changed[key]!r}; the variant {name!r} needs {key} = {value!r}."
        )
    others = {k: v for k, v in changed.items() if k != key}
    raise CheckFailed(
        f"{what} sets {key} = {value!r} but also changes {others}: leave everything else as is."
    )


def _metrics(run: dict) -> dict:
    return run["best_by_valid"]["test"]


def _check_run(name: str, run) -> None:
    """A dict `train()` returned, complete, whose best-by-validation numbers are in its own history."""
    if not isinstance(run, dict) or any(k not in run for k in RUN_KEYS):
        missing = [k for k in RUN_KEYS if not isinstance(run, dict) or k not in run]
        raise CheckFailed(
            f"runs[{name!r}] is not what train() returns (missing {missing}): pass the dict of a real run, "
            "e.g. runs[name] = train(config, **overrides)."
        )
    if run["status"] != "completed":
        raise CheckFailed(
            f"the {name!r} run did not complete (status {run['status']!r}): train it to the end."
        )
    hist = run["history"]
    if not hist or len(hist) != run["epochs_run"]:
        raise CheckFailed(
            f"the {name!r} run's history has {len(hist)} epochs but says it ran {run['epochs_run']}."
        )
    best = run["best_by_valid"]
    metric = best.get("metric", "ndcg@10")
    by_epoch = {r["epoch"]: r for r in hist}
    chosen = max(hist, key=lambda r: r["valid"][metric])  # the first best epoch, as the trainer keeps it
    record = by_epoch.get(best.get("epoch"))
    if record is None or record["epoch"] != chosen["epoch"]:
        raise CheckFailed(
            f"the {name!r} run's best_by_valid names epoch {best.get('epoch')}, but its history's best "
            f"validation {metric} is at epoch {chosen['epoch']}: the results were edited by hand."
        )
    for key, value in record["test"].items():
        if key not in best["test"] or not _close(best["test"][key], value):
            raise CheckFailed(
                f"the {name!r} run's best_by_valid test {key} = {best['test'].get(key)} is not the "
                f"{value} its history recorded for epoch {record['epoch']}: the results were edited by hand."
            )
    if not _close(sum(r["train_s"] for r in hist), run["timing"]["train_s"]):
        raise CheckFailed(f"the {name!r} run's timing train_s does not add up from its history.")


def _check_trainer(name: str, run: dict) -> int:
    """With the run's Trainer at hand: its model has the config's switches, its last epoch's test metrics
    re-evaluate to the history's, and a softmax variant's attention rows sum to 1. Returns probes made."""
    trainer = run.get("trainer")
    if trainer is None:
        return 0
    model, cfg = trainer.model, run["config"]
    switches = getattr(model, "switches", lambda: None)()
    want = {k: cfg.get(k, v) for k, v in SWITCH_DEFAULTS.items()}
    if switches is not None and switches != want:
        raise CheckFailed(f"the {name!r} run's model has switches {switches}, but its config says {want}.")
    if cfg.get("attention_activation") == "softmax":
        _probe_softmax(name, trainer)
    again = trainer.evaluate(("test",))["test"]
    last = run["history"][-1]["test"]
    for key in ("hr@10", "ndcg@10"):
        if abs(again[key] - last[key]) > 1e-4:
            raise CheckFailed(
                f"the {name!r} run's model scores test {key} = {again[key]:.4f} now, but its history says "
                f"{last[key]:.4f} for the last epoch: the history is not this model's."
            )
    return 1


@torch.no_grad()
def _probe_softmax(name: str, trainer) -> None:
    """Every real row of a softmax map sums to 1 over j <= i; 1/n would mean the divisor n stayed."""
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        users = min(8, trainer.splits["train"].num_users)
        batch = trainer.train_batch(torch.arange(users, device=trainer.device))
        _, maps = model(batch, return_attention=True)
    finally:
        model.train(was_training)
    A = maps[0].double()  # (B, H, N, N)
    lengths = (batch.offsets[1:] - batch.offsets[:-1]).to(A.device)  # (B,)
    real = torch.arange(A.shape[-1], device=A.device)[None, :] < lengths[:, None]  # (B, N)
    sums = A.sum(-1)[real[:, None, :].expand(-1, A.shape[1], -1)]  # (rows,)
    if torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
        return
    n = float(model.blocks[0].norm)
    if torch.allclose(sums * n, torch.ones_like(sums), atol=1e-3):
        raise CheckFailed(
            f"the {name!r} run's attention rows sum to 1/n = 1/{n:g}, not 1: the softmax already "
            "normalises each row, so the divisor n of SiLU attention must go."
        )
    raise CheckFailed(
        f"the {name!r} run's attention rows sum to {float(sums.min()):.4g} .. {float(sums.max()):.4g}, not 1: "
        "a softmax over the allowed keys j <= i makes every row a distribution."
    )


def _table(make_table, runs: dict):
    import pandas as pd

    plain = {
        name: {k: copy.deepcopy(v) for k, v in run.items() if k != "trainer"} for name, run in runs.items()
    }
    table = make_table(plain) if callable(make_table) else make_table
    if not isinstance(table, pd.DataFrame):
        raise CheckFailed(f"the table should be a pandas DataFrame, got {type(table).__name__}.")
    if "variant" in table.columns:
        table = table.set_index("variant")
    rows = [str(i) for i in table.index]
    missing = [v for v in VARIANTS if v not in rows]
    if missing:
        raise CheckFailed(
            f"the table has no row for {missing} (its index holds {rows}); one row per variant."
        )
    cols = [c for c in COLUMNS if c not in table.columns]
    if cols:
        raise CheckFailed(
            f"the table lacks the columns {cols}; expected {list(COLUMNS)}, got {list(table.columns)}."
        )
    return table


def _check_table(table, runs: dict) -> None:
    m = {v: _metrics(runs[v]) for v in VARIANTS}
    for v in VARIANTS:
        for col, key in METRIC_OF.items():
            got, want = table.loc[v, col], m[v][key]
            if _close(got, want):
                continue
            if _close(got, runs[v]["best_by_valid"]["valid"][key]):
                raise CheckFailed(
                    f"{col} of {v!r} is the validation number; report the test metrics of best_by_valid."
                )
            if _close(got, runs[v]["history"][-1]["test"][key]):
                raise CheckFailed(
                    f"{col} of {v!r} is the last epoch's test number; report best_by_valid's (the epoch chosen "
                    "on validation)."
                )
            raise CheckFailed(
                f"{col} of {v!r} is {float(got):.6g}, but the run recorded {want:.6g} (best_by_valid test): "
                "take the numbers from the runs, unrounded (round only when displaying)."
            )
        if not _close(table.loc[v, "train_s"], runs[v]["timing"]["train_s"]):
            raise CheckFailed(
                f"train_s of {v!r} is not the run's timing['train_s'] ({runs[v]['timing']['train_s']:.3g})."
            )
    for col, key in METRIC_OF.items():
        delta = f"Δ{col}"
        for v in VARIANTS:
            got, want = float(table.loc[v, delta]), m[v][key] - m["default"][key]
            if _close(got, want):
                continue
            if want != 0 and _close(got, -want):
                raise CheckFailed(
                    f"{delta} of {v!r} has its sign flipped ({got:+.4g}, expected {want:+.4g}): Δ is variant "
                    "minus default, so a part that helps shows as a negative Δ when it is removed."
                )
            ref = m["default"][key]
            if ref and (_close(got, want / ref) or _close(got, 100 * want / ref)):
                raise CheckFailed(
                    f"{delta} of {v!r} is a relative change; the table asks for variant minus default."
                )
            for r in VARIANTS:
                if r != "default" and _close(got, m[v][key] - m[r][key]) and m[r][key] != m["default"][key]:
                    raise CheckFailed(
                        f"{delta} of {v!r} is computed against the row {r!r}; Δ is against 'default'."
                    )
            raise CheckFailed(
                f"{delta} of {v!r} is {got:+.6g}, expected {want:+.6g} (its {col} minus default's)."
            )


def check_ablation(runs, make_table=None, ablation_overrides: Callable | None = None) -> bool:
    """Check an ablation study: `runs` maps each variant of `VARIANTS` to the dict `train()` returned;
    `make_table(runs) -> DataFrame` (or the DataFrame) has one row per variant and the columns `COLUMNS`;
    `ablation_overrides(name) -> dict`, if given, is checked first. Ticks `advanced.modify_arch`."""

    def body(_fn):
        if ablation_overrides is not None:
            _check_overrides(ablation_overrides)
        if runs is None:
            raise NotImplementedError("no runs yet")
        if not isinstance(runs, dict):
            raise CheckFailed(f"pass a dict {{variant: train() result}}, got {type(runs).__name__}.")
        missing = [v for v in VARIANTS if v not in runs]
        if missing:
            raise CheckFailed(f"no run for {missing}: the study needs {list(VARIANTS)} (got {list(runs)}).")
        extra = [v for v in runs if v not in VARIANTS]
        if extra:
            raise CheckFailed(f"unknown variants {extra}; the study has {list(VARIANTS)}.")
        for name in VARIANTS:
            _check_run(name, runs[name])
        base = runs["default"]
        ablated = {
            k: base["config"].get(k, v) for k, v in SWITCH_DEFAULTS.items() if base["config"].get(k, v) != v
        }
        if ablated:
            raise CheckFailed(
                f"the 'default' run sets {ablated}: the default is HSTU as is, every switch on."
            )
        for name in VARIANTS:
            cfg, ref = runs[name]["config"], base["config"]
            changed = {k: v for k, v in cfg.items() if ref.get(k) != v}
            _compare_changes(f"the {name!r} run", name, changed, VARIANTS[name])
            if runs[name]["epochs_run"] != base["epochs_run"]:
                raise CheckFailed(
                    f"the {name!r} run trained {runs[name]['epochs_run']} epochs, the default run "
                    f"{base['epochs_run']}: the same budget for every variant."
                )
            if runs[name].get("dataset") != base.get("dataset"):
                raise CheckFailed(
                    f"the {name!r} run trained on other data than the default run: use one dataset."
                )
        probes = sum(_check_trainer(name, runs[name]) for name in VARIANTS)
        if make_table is None:
            raise CheckFailed("pass your table too: check_ablation(runs, make_table).")
        _check_table(_table(make_table, runs), runs)
        return len(VARIANTS) + probes

    return _run("check_ablation", lambda: None, body)
