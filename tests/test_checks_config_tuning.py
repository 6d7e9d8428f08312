"""Exercise 08's checks: the TOML config, the gin mapping and the validation sweep, right and wrong."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from check_helpers import _progress_file  # noqa: F401 (an autouse fixture)

from hstu_tutorial import checks, progress
from hstu_tutorial.checks import config_tuning
from hstu_tutorial.data import get_reco_dataset
from hstu_tutorial.train import train
from hstu_tutorial.training.gin_config import GIN_RULES

torch.set_num_threads(2)


def fails_with(ok, *fragments):
    report = checks.last_report
    assert not ok, report
    for frag in fragments:
        assert frag in report, f"expected {frag!r} in: {report}"


# ---- 1. the TOML config -----------------------------------------------------------------------------------

RIGHT = """\
name = "sasrec-h4-bf16"
model = "sasrec"
num_heads = 4
embedding_dim = 64
ffn_hidden = 64
num_negatives = 100
bf16 = true
seed = 7
dataset = "synthetic"
synthetic_size = "ci"
max_seq_len = 50
protocol = "validation"
learning_rate = 0.0005
num_epochs = 20
"""  # num_blocks left out: its default (2) is what the run asks for


def writer(text):
    return lambda path: Path(path).write_text(text)


def test_config_file_right():
    assert checks.check_config_file(writer(RIGHT)), checks.last_report
    assert progress.is_done("practice.config.toml")


@pytest.mark.parametrize(
    "old, new, fragments",
    [
        ("num_heads = 4", "num_head = 4", ("refused", "unknown key 'num_head'", "num_heads")),
        ("num_heads = 4", 'num_heads = "4"', ("num_heads is written as a str", "num_heads = 4")),
        ("bf16 = true", 'bf16 = "true"', ("bf16 is written as a str", "bf16 = true")),
        ("num_negatives = 100", "num_negatives = 100.0", ("written as a float",)),
        ('model = "sasrec"\n', "", ("model is missing", 'default "hstu"')),
        ("seed = 7", "seed = 42", ("seed = 42, the run asks for 7",)),
        ("learning_rate = 0.0005", "learning_rate = 5e-3", ("learning_rate = 0.005",)),
        ("bf16 = true", "bf16 = True", ("refused", "not valid TOML")),
        ('model = "sasrec"', "[model]\nname = 1", ("refused", "tables")),
    ],
)
def test_config_file_mistakes(old, new, fragments):
    assert old in RIGHT
    fails_with(checks.check_config_file(writer(RIGHT.replace(old, new))), *fragments)


def test_config_file_several_mistakes_are_all_named():
    text = RIGHT.replace("seed = 7", "seed = 8").replace("num_heads = 4", "num_heads = 2")
    fails_with(checks.check_config_file(writer(text)), "2 asked fields", "seed = 8", "num_heads = 2")


def test_config_file_nothing_written():
    fails_with(checks.check_config_file(lambda path: None), "wrote no file")


# ---- 2. the gin mapping -----------------------------------------------------------------------------------


def by_rules(binding, value):
    """A correct answer written from the project's table."""
    rule = GIN_RULES[binding]
    if rule.kind in ("fixed", "ignored"):
        return None
    return rule.key, rule.values[value] if rule.values else value


def test_gin_mapping_right():
    assert checks.check_gin_mapping(by_rules), checks.last_report
    assert checks.check_gin_mapping(lambda b, v: None if by_rules(b, v) is None else list(by_rules(b, v)))


@pytest.mark.parametrize(
    "wrong, fragments",
    [
        (
            lambda b, v: ("item_embedding_dim", v) if b == "train_fn.item_embedding_dim" else by_rules(b, v),
            ("no such key in TrainConfig", "embedding_dim"),
        ),
        (
            lambda b, v: ("model", v) if b == "train_fn.main_module" else by_rules(b, v),
            ("value is not ours", "'hstu'"),
        ),
        (
            lambda b, v: ("num_warmup_steps", v) if b == "train_fn.num_warmup_steps" else by_rules(b, v),
            ("is fixed here", "no learning-rate warm-up"),
        ),
        (
            lambda b, v: None if b == "train_fn.local_batch_size" else by_rules(b, v),
            ("sets one of our keys",),
        ),
        (
            lambda b, v: ("eval_batch_size", v) if b == "train_fn.local_batch_size" else by_rules(b, v),
            ("another key",),
        ),
        (lambda b, v: None if b.startswith("hstu_encoder") else by_rules(b, v), ("3 of 16 bindings",)),
    ],
)
def test_gin_mapping_mistakes(wrong, fragments):
    fails_with(checks.check_gin_mapping(wrong), *fragments)


# ---- 3. the sweep: real runs ----------------------------------------------------------------------------

TINY = dict(
    num_epochs=1,
    embedding_dim=8,
    dqk=8,
    dv=8,
    num_blocks=1,
    max_seq_len=20,
    num_negatives=16,
    batch_size=64,
    verbose=False,
    tensorboard=False,
    progress=False,
    device="cpu",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs on the synthetic data (validation protocol) and one with the reference protocol."""
    exp = str(tmp_path_factory.mktemp("sweep"))
    out = {}
    for protocol in ("validation", "reference"):
        ds = get_reco_dataset(
            "synthetic", max_seq_len=20, protocol=protocol, synthetic_size="ci", verbose=False
        )
        settings = {"default": (1e-3, 0.2), "fast": (1e-2, 0.2), "fast-no-dropout": (1e-2, 0.0)}
        if protocol == "reference":
            settings = {"reference-protocol": (1e-2, 0.2)}
        for label, (lr, dropout) in settings.items():
            out[label] = train(
                "synthetic/hstu-small",
                dataset=ds,
                name=label,
                protocol=protocol,
                learning_rate=lr,
                dropout=dropout,
                exp_dir=exp,
                **TINY,
            )
    return out


def valid(res):
    return res["best_by_valid"]["valid"]["ndcg@10"]


def test_a_real_sweep_passes_in_every_form(runs):
    sweep = {k: runs[k] for k in ("default", "fast", "fast-no-dropout")}
    best = max(sweep, key=lambda k: valid(sweep[k]))
    assert valid(sweep[best]) > valid(sweep["default"]), "the fixture's faster runs should beat the default"
    assert checks.check_tuning(sweep, best), checks.last_report
    assert progress.is_done("practice.tuning")
    as_list = list(sweep.values())
    assert checks.check_tuning(as_list, list(sweep).index(best)), checks.last_report
    paths = {k: str(Path(v["run_dir"]) / "results.json") for k, v in sweep.items()}  # results read from disk
    assert checks.check_tuning(lambda: paths, lambda s: best), checks.last_report


def test_hand_typed_results_fail(runs):
    typed = {"config": dict(runs["fast"]["config"]), "best_by_valid": {"valid": {"ndcg@10": 0.9}}}
    fails_with(
        checks.check_tuning({"default": runs["default"], "mine": typed}, "mine"), "not a result the trainer"
    )


def test_edited_numbers_fail(runs):
    edited = copy.deepcopy({k: v for k, v in runs["fast"].items() if k != "trainer"})
    edited["best_by_valid"]["valid"]["ndcg@10"] += 0.1
    fails_with(
        checks.check_tuning({"default": runs["default"], "fast": edited}, "fast"),
        "not a result the trainer produced",
        "differs from the results.json",
    )


def test_edited_files_fail_on_the_saved_weights(runs, tmp_path):
    run_dir = tmp_path / "copied"
    shutil.copytree(runs["default"]["run_dir"], run_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    saved["run_dir"] = str(run_dir)
    epoch = saved["best_by_valid"]["epoch"]
    for h in saved["history"]:
        if h["epoch"] == epoch:
            h["valid"]["ndcg@10"] += 0.2
    saved["best_by_valid"]["valid"]["ndcg@10"] += 0.2
    (run_dir / "results.json").write_text(json.dumps(saved))
    fails_with(
        checks.check_tuning({"default": runs["fast"], "edited": str(run_dir)}, "edited", default="default"),
        "saved weights give validation ndcg@10",
    )


def test_reference_protocol_is_refused(runs):
    sweep = {"default": runs["default"], "ref": runs["reference-protocol"]}
    fails_with(checks.check_tuning(sweep, "ref"), "protocol 'reference'", "protocol = 'validation'")


def test_the_same_run_twice(runs):
    fails_with(checks.check_tuning([runs["default"], runs["fast"], runs["fast"]], 1), "are the same run")


# ---- 3. the sweep: the choice (verification of the runs switched off, numbers made up) ------------------


@pytest.fixture
def unverified(monkeypatch):
    monkeypatch.setattr(config_tuning, "_verify", lambda res, where, datasets: None)

    def run(lr, valid, test, **config):
        cfg = {
            "learning_rate": lr,
            "dropout": 0.2,
            "selection_metric": "ndcg@10",
            "num_epochs": 2,
            "protocol": "validation",
            **config,
        }
        return {
            "config": cfg,
            "run_dir": f"/runs/{lr}-{config}",
            "best_by_valid": {"valid": {"ndcg@10": valid}, "test": {"ndcg@10": test}},
        }

    return run


def test_choosing_by_test_is_named(unverified):
    sweep = {
        "a": unverified(1e-3, 0.10, 0.10),
        "b": unverified(3e-3, 0.20, 0.15),
        "c": unverified(1e-2, 0.18, 0.19),
    }
    fails_with(
        checks.check_tuning(sweep, "c"), "you chose by the test metric", "run 'b' has the best validation"
    )
    assert checks.check_tuning(sweep, "b"), checks.last_report


def test_not_the_best_on_validation(unverified):
    sweep = {
        "a": unverified(1e-3, 0.10, 0.10),
        "b": unverified(3e-3, 0.20, 0.20),
        "c": unverified(1e-2, 0.15, 0.12),
    }
    fails_with(checks.check_tuning(sweep, "c"), "not the best on validation")


def test_nothing_beats_the_default(unverified):
    sweep = {"a": unverified(1e-3, 0.30, 0.10), "b": unverified(3e-3, 0.20, 0.20)}
    fails_with(checks.check_tuning(sweep, "a"), "no run beats the default")


def test_the_default_must_be_in_the_sweep(unverified):
    sweep = {"a": unverified(3e-3, 0.10, 0.10, dropout=0.1), "b": unverified(1e-2, 0.20, 0.20, dropout=0.1)}
    fails_with(
        checks.check_tuning(sweep, "b"),
        "default run is not in your sweep",
        "learning_rate = 0.001",
    )
    assert checks.check_tuning(sweep, "b", default="a"), checks.last_report


def test_runs_must_share_the_budget(unverified):
    sweep = {"a": unverified(1e-3, 0.10, 0.10), "b": unverified(3e-3, 0.20, 0.20, num_epochs=5)}
    fails_with(checks.check_tuning(sweep, "b"), "differ in num_epochs")


def test_a_stub_is_not_attempted():
    def stub():
        raise NotImplementedError

    assert not checks.check_tuning(stub, lambda s: None)
    assert "not attempted yet" in checks.last_report
