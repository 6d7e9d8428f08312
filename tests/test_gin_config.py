"""The official generative-recommenders gin configs: read with gin, translated binding by binding, runnable.

The fixtures under tests/data/gin/ hold the bindings of the official frozen configs (ML-1M and ML-20M), one
for one; the three ML-1M ones must resolve to our bundled TOML configs of the same names.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from hstu_tutorial.errors import ConfigError
from hstu_tutorial.training.cli import main
from hstu_tutorial.training.config import load_config
from hstu_tutorial.training.gin_config import GIN_RULES, load_gin_config, read_gin_bindings, translate_gin

# Reading a gin file needs gin-config; the name fallback, the record and TensorBoard tests do not.
needs_gin = pytest.mark.skipif(importlib.util.find_spec("gin") is None, reason="gin-config is not installed")

torch.set_num_threads(2)

ROOT = Path(__file__).resolve().parents[1]
GIN = ROOT / "tests" / "data" / "gin"
ML1M = (
    "hstu-sampled-softmax-n128-final",
    "hstu-sampled-softmax-n128-large-final",
    "sasrec-sampled-softmax-n128-final",
)
OFFICIAL = sorted(GIN.glob("*/*.gin"))


def _settings(cfg) -> dict:
    """Every key but the free-text description."""
    d = cfg.to_dict()
    d.pop("description")
    return d


def _printed(capsys, argv) -> dict:
    assert main([*argv, "--print-config"]) == 0
    return dict(line.split(" = ", 1) for line in capsys.readouterr().out.splitlines())


@needs_gin
def test_fixtures_hold_the_official_bindings():
    assert len(OFFICIAL) == 6, OFFICIAL
    for path in OFFICIAL:
        bindings, notes = read_gin_bindings(path)
        assert len(bindings) == 27 and not notes, (path, sorted(bindings))
        assert all(b.where.startswith(f"{path}:") for b in bindings.values())


@needs_gin
@pytest.mark.parametrize("name", ML1M)
def test_official_ml1m_configs_resolve_to_our_toml(name):
    gin_cfg = load_gin_config(GIN / "ml-1m" / f"{name}.gin", quiet=True)
    toml_cfg = load_config(f"ml-1m/{name}")
    assert _settings(gin_cfg) == _settings(toml_cfg)
    assert gin_cfg.name == name and "official gin config" in gin_cfg.description


@needs_gin
@pytest.mark.parametrize("name", ML1M)
def test_print_config_of_gin_and_toml_agree(name, capsys):
    from_gin = _printed(capsys, ["--gin_config_file", str(GIN / "ml-1m" / f"{name}.gin")])
    from_toml = _printed(capsys, ["--config", f"ml-1m/{name}"])
    assert from_gin.keys() == from_toml.keys()
    assert {k for k in from_gin if from_gin[k] != from_toml[k]} == {"description"}


@needs_gin
def test_ml20m_configs_translate():
    expected = {  # (model, embedding_dim, num_blocks, num_heads, dqk, dv, ffn_hidden)
        "hstu-sampled-softmax-n128-final": ("hstu", 256, 4, 4, 64, 64),
        "hstu-sampled-softmax-n128-large-final": ("hstu", 256, 16, 8, 32, 32),
        "sasrec-sampled-softmax-n128-final": ("sasrec", 256, 4, 4, 256),
    }
    for name, want in expected.items():
        values, notes = translate_gin(GIN / "ml-20m" / f"{name}.gin")
        keys = ("model", "embedding_dim", "num_blocks", "num_heads")
        keys += ("dqk", "dv") if want[0] == "hstu" else ("ffn_hidden",)
        assert tuple(values[k] for k in keys) == want
        assert values["dataset"] == "ml-20m" and values["max_seq_len"] == 200 and values["tf32"] is True
        assert values["num_negatives"] == 128 and values["weight_decay"] == 0 and values["dropout"] == 0.2
        assert any("ml-20m" in n and "data loader" in n for n in notes)


@needs_gin
def test_ignored_bindings_get_one_note_each(capsys):
    load_gin_config(GIN / "ml-1m" / "hstu-sampled-softmax-n128-final.gin")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert all("create_data_loader." in line and "ignored" in line for line in err)


def _edited(tmp_path, old, new, name="x.gin"):
    text = (GIN / "ml-1m" / "hstu-sampled-softmax-n128-final.gin").read_text()
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new))
    return path


@needs_gin
@pytest.mark.parametrize(
    "old, new, message",
    [
        (
            'sampling_strategy = "local"',
            'sampling_strategy = "in-batch"',
            "train_fn.sampling_strategy = 'in-batch' is not supported: the project supports 'local' only",
        ),
        (
            "train_fn.num_warmup_steps = 0",
            "train_fn.num_warmup_steps = 100",
            "train_fn.num_warmup_steps = 100 is not supported",
        ),
        (
            'main_module = "HSTU"',
            'main_module = "MoLHSTU"',
            "train_fn.main_module = 'MoLHSTU' is not supported; supported values: 'HSTU', 'SASRec'",
        ),
        (
            "train_fn.item_l2_norm = True\n",
            "",
            "train_fn.item_l2_norm = False is not supported",
        ),  # unbound: the official default applies
        (
            "linear_dropout_rate = 0.2",
            "linear_dropout_rate = 0.1",
            "hstu_encoder.linear_dropout_rate = 0.1 differs from train_fn.dropout_rate = 0.2",
        ),
        (
            "train_fn.enable_tf32 = True",
            "train_fn.enable_tf32 = True\ntrain_fn.use_mol = True",
            "gin binding train_fn.use_mol is not one this project translates. Supported: train_fn.{",
        ),
        ("train_fn.enable_tf32 = True", "my_scope/train_fn.enable_tf32 = True", "scoped binding"),
    ],
)
def test_unsupported_bindings_are_one_line_errors(tmp_path, capsys, old, new, message):
    path = _edited(tmp_path, old, new)
    assert main(["--gin_config_file", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err


@needs_gin
def test_gin_syntax_macros_and_includes_are_read_by_gin(tmp_path):
    dim = "train_fn.item_embedding_dim"
    _edited(tmp_path, f"{dim} = 50", f"{dim} = %DIM", name="base.gin")
    top = tmp_path / "top.gin"
    top.write_text('DIM = 64\ninclude "base.gin"\n# a comment\nhstu_encoder.dqk = 32  # trailing comment\n')
    cfg = load_gin_config(top, quiet=True)
    assert (cfg.embedding_dim, cfg.dqk, cfg.dv, cfg.name) == (64, 32, 50, "top")
    (tmp_path / "broken.gin").write_text("train_fn.num_epochs = (3,\n")
    with pytest.raises(ConfigError, match="not a valid gin file"):
        load_gin_config(tmp_path / "broken.gin")


@needs_gin
def test_other_encoders_bindings_are_ignored_and_overrides_apply(tmp_path, capsys):
    path = _edited(
        tmp_path, "hstu_encoder.num_blocks = 2", "hstu_encoder.num_blocks = 2\nsasrec_encoder.num_blocks = 9"
    )
    cfg = load_gin_config(path, ["num_epochs=3", "num_blocks=4"])
    assert (cfg.num_epochs, cfg.num_blocks) == (3, 4)
    assert "sasrec_encoder.num_blocks ignored: main_module is 'HSTU'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "given",
    [
        "configs/ml-1m/hstu-sampled-softmax-n128-final.gin",
        "ml-1m/hstu-sampled-softmax-n128-final.gin",
        "configs/ml-1m/hstu-sampled-softmax-n128-final",
        "ml-1m/hstu-sampled-softmax-n128-final",
    ],
)
def test_official_names_without_the_file_use_our_bundled_config(given, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    cfg = load_gin_config(given, ["num_epochs=7"])
    assert cfg.to_dict() == load_config("ml-1m/hstu-sampled-softmax-n128-final", ["num_epochs=7"]).to_dict()
    assert "using the bundled config ml-1m/hstu-sampled-softmax-n128-final" in capsys.readouterr().err
    printed = _printed(capsys, [f"--gin_config_file={given}"])
    assert printed["name"] == '"hstu-sampled-softmax-n128-final"' and printed["num_blocks"] == "2"


def test_unknown_names_and_two_sources_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--gin_config_file", "configs/ml-1m/nope.gin", "--print-config"]) == 2
    err = capsys.readouterr().err
    assert "no gin file 'configs/ml-1m/nope.gin' and no bundled config 'ml-1m/nope'" in err
    assert "ml-1m/sasrec-sampled-softmax-n128-final" in err
    with pytest.raises(ConfigError, match="not both"):
        load_gin_config("ml-1m/hstu-sampled-softmax-n128-final", config="ml-1m/sasrec-small")


def test_every_rule_is_a_known_kind_with_an_official_default():
    for name, rule in GIN_RULES.items():
        assert rule.kind in ("key", "same", "fixed", "ignored"), name
        assert rule.why or rule.kind == "key", f"{name}: say why it is fixed or ignored"


@needs_gin
def test_a_gin_file_trains(tmp_path, capsys):
    """A small synthetic run driven by a gin file, through the command line, end to end."""
    path = tmp_path / "synthetic-hstu.gin"
    path.write_text(
        "\n".join(
            [
                'train_fn.dataset_name = "synthetic"',
                "train_fn.max_sequence_length = 20",
                "train_fn.local_batch_size = 32",
                'train_fn.main_module = "HSTU"',
                "train_fn.num_epochs = 1",
                "train_fn.item_embedding_dim = 16",
                "hstu_encoder.dqk = 16",
                "hstu_encoder.dv = 16",
                "hstu_encoder.linear_dropout_rate = 0.2",
                "train_fn.weight_decay = 0",
                'train_fn.interaction_module_type = "DotProduct"',
                "train_fn.num_negatives = 16",
                'train_fn.sampling_strategy = "local"',
                "train_fn.item_l2_norm = True",
                "",
            ]
        )
    )
    argv = ["--gin_config_file", str(path)]
    for kv in (
        "device=cpu",
        "progress=false",
        "tensorboard=false",
        "save_checkpoints=false",
        f"exp_dir={tmp_path / 'exps'}",
        f"data_dir={tmp_path / 'data'}",
        "eval_batch_size=512",
    ):
        argv += ["--set", kv]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "HR@10" in out or "hr@10" in out
    runs = list((tmp_path / "exps" / "synthetic-l20").glob("synthetic-hstu*/results.json"))
    assert len(runs) == 1


# ---- the card's experiment record (English and Chinese) ------------------------------------------------


def _results(language=None):
    """A finished run's results as train() returns them (the fields a record reads)."""
    cfg = load_config("ml-1m/hstu-sampled-softmax-n128-final", ["protocol=validation"]).to_dict()
    cfg.update(name="hstu-x", description="a test run", data_dir="data/ml-1m-u2999")
    if language:
        cfg["record_language"] = language
    test = {"hr@10": 0.31, "ndcg@10": 0.17, "mrr": 0.14}
    return {
        "name": "hstu-x",
        "description": "a test run",
        "status": "completed",
        "config": cfg,
        "dataset": {"users": 2999, "rated_items": 3600, "interactions": 500_000},
        "device": "NVIDIA H200",
        "epochs_run": 101,
        "best_by_valid": {"metric": "ndcg@10", "epoch": 57, "valid": test, "test": test},
        "timing": {"train_s": 12.5, "train_eval_s": 16.5, "s_per_epoch": 0.163, "peak_mem_gib": 1.2},
    }


def test_record_has_the_cards_fields_in_english():
    from hstu_tutorial.training.experiment import CARD_FIELDS, experiment_record, record_markdown

    rec = experiment_record(_results(), date="2026-11-28 18:00 UTC")
    card = rec["card"]
    assert (
        tuple(card)
        == CARD_FIELDS["en"]
        == ("date", "data set", "config", "hyperparameters", "HR@10", "NDCG@10", "training time", "GPU")
    )
    assert card["date"] == "2026-11-28 18:00 UTC" and card["GPU"] == "NVIDIA H200"
    assert card["data set"].startswith("ml-1m (data/ml-1m-u2999), protocol validation; users 2,999")
    assert card["config"] == "hstu-x: a test run" and "learning_rate=0.001" in card["hyperparameters"]
    assert (card["HR@10"], card["NDCG@10"]) == ("0.3100", "0.1700")
    assert card["training time"].startswith("12.5 s train (16.5 s with evaluation), 101 epochs")
    md = record_markdown(rec).splitlines()
    assert md[0] == "## Experiment: hstu-x" and md[2] == "| field | value |"
    assert [row.split(" | ")[0][2:] for row in md[4:12]] == list(CARD_FIELDS["en"])


def test_record_in_chinese_from_the_argument_or_the_config_key(tmp_path):
    import json

    from hstu_tutorial.training.experiment import experiment_record, record_markdown, save_record

    by_key = experiment_record(_results("zh"), date="2026-11-28 18:00 UTC")
    by_arg = experiment_record(_results(), date="2026-11-28 18:00 UTC", language="zh")
    assert by_key["card"] == by_arg["card"]
    card = by_key["card"]
    assert tuple(card) == ("日期", "数据集", "配置", "超参数", "HR@10", "NDCG@10", "训练时间", "GPU")
    assert card["数据集"].startswith("ml-1m（data/ml-1m-u2999），协议 validation；用户 2,999、被评分物品")
    assert card["训练时间"].startswith("训练 12.5 s（含评估 16.5 s），101 个 epoch")
    assert (card["HR@10"], card["GPU"]) == ("0.3100", "NVIDIA H200")
    md = record_markdown(by_key)
    assert md.startswith("## 实验记录：hstu-x\n\n| 字段 | 值 |") and "| 显存峰值 | 1.20 GiB |" in md
    assert "| 日期 | 2026-11-28 18:00 UTC |" in md and "| NDCG@10 | 0.1700 |" in md
    assert "| 指标来源 | 验证集 ndcg@10 最好的 epoch（第 57 个）的测试指标 |" in md
    assert "| date |" in record_markdown(by_key, language="en")  # either language from one record
    save_record(_results("zh"), tmp_path)
    assert json.loads((tmp_path / "experiment.json").read_text(encoding="utf-8"))["card"]["日期"]
    assert "| 训练时间 | 训练 12.5 s" in (tmp_path / "experiment.md").read_text(encoding="utf-8")
    cpu = experiment_record(_results("zh") | {"device": "cpu (2 threads)"})
    assert cpu["card"]["GPU"] == "无（cpu (2 threads)）"
    with pytest.raises(ValueError, match="'fr' is not one of"):
        experiment_record(_results(), language="fr")
    with pytest.raises(ConfigError, match="record_language"):
        load_config("synthetic/hstu-small", ["record_language=fr"])


# ---- `tensorboard --logdir exps/<dataset>-l<max_seq_len>/` ----------------------------------------------


def test_tensorboard_logdir_holds_the_runs_event_files(tmp_path):
    """The card's `tensorboard --logdir exps/ml-1m-l200/`: a run lands in
    exps/<dataset>-l<max_seq_len>/<name>-<stamp>/ with its event files, and TensorBoard's own loader finds
    that run and its curves under the folder."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    from hstu_tutorial.train import train

    res = train(
        "synthetic/hstu-small",
        verbose=False,
        num_epochs=2,
        max_seq_len=20,
        embedding_dim=16,
        dqk=16,
        dv=16,
        num_negatives=16,
        eval_batch_size=512,
        progress=False,
        device="cpu",
        save_checkpoints=False,
        tensorboard=True,
        exp_dir=str(tmp_path / "exps"),
        data_dir=str(tmp_path / "data"),
    )
    logdir = tmp_path / "exps" / "synthetic-l20"
    run = Path(res["run_dir"])
    assert run.parent == logdir and run.name.startswith("hstu-small-")
    events = list(logdir.rglob("events.out.tfevents.*"))
    assert events and all(e.parent == run for e in events), events
    runs = EventMultiplexer().AddRunsFromDirectory(str(logdir)).Reload()
    assert list(runs.Runs()) == [run.name]
    tags = runs.Runs()[run.name]["scalars"]
    assert "loss/train" in tags and "test/hr@10" in tags and "valid/ndcg@10" in tags, tags
    assert [e.step for e in runs.Scalars(run.name, "loss/train")] == [0, 1]


# ---- the migration guide lists every binding -----------------------------------------------------------


@needs_gin
@pytest.mark.parametrize(
    "doc", ["coming_from_generative_recommenders.md", "coming_from_generative_recommenders.zh-CN.md"]
)
def test_the_guide_has_a_row_for_every_binding(doc):
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    official = {name for path in OFFICIAL for name in read_gin_bindings(path)[0]}
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    for name in official:  # the frozen configs' bindings: one row each, in the main table
        assert sum(line.startswith(f"| `{name}` |") for line in rows) == 1, name
    for name in GIN_RULES:  # every other binding the translation knows, in some row
        if not name.endswith(".*"):
            assert any(f"`{name}`" in line for line in rows), name
    for term in (
        "--gin_config_file",
        "hstu-train",
        "--print-config",
        "2,500",
        "stable_sort",
        "docs/reference_results.md",
        "benchmarks/results/h200_2026-11-28/",
    ):
        assert term in text, term
    if doc.endswith("zh-CN.md"):
        for term in ("逐点注意力", "相对注意力偏置", "锯齿张量", "采样 softmax", "留一法", "命中率", "NDCG"):
            assert term in text, term


def test_without_gin_config_a_gin_file_is_a_one_line_hint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gin", None)  # import gin now fails, as on a machine without it
    path = tmp_path / "x.gin"
    path.write_text("train_fn.num_epochs = 3\n")
    assert main(["--gin_config_file", str(path), "--print-config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install gin-config==0.5.0" in err[0], err
