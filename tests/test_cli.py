"""The command line answers bad input with one line on stderr, `error: ...`, exit status 2, no run folder."""

import pytest
import torch
from tiny_runs import TINY_SETS, cli_fails, set_args

from hstu_tutorial.errors import HSTUError
from hstu_tutorial.training.cli import main

torch.set_num_threads(2)

TINY = ["num_epochs=1", *TINY_SETS]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """(data folder, a finished one-epoch HSTU run folder) made through the command line."""
    root = tmp_path_factory.mktemp("cli")
    data, exps = root / "data", root / "exps"
    assert (
        main(["--config", "synthetic/hstu-small", *set_args(*TINY, f"data_dir={data}", f"exp_dir={exps}")])
        == 0
    )
    return data, exps / "synthetic-l20" / "hstu-small"


# ---- config -------------------------------------------------------------------------------------------


def test_misspelt_config_name(capsys):
    line = cli_fails(
        capsys, ["--config", "ml-1m/hstu-sampled-softmax-n128-finl"], "ml-1m/hstu-sampled-softmax-n128-finl"
    )
    assert "did you mean 'ml-1m/hstu-sampled-softmax-n128-final'" in line and "hstu-train --list" in line


@pytest.mark.parametrize(
    "name",
    [
        "configs/ml-1m/hstu-sampled-softmax-n128-final.gin",
        "ml-1m/hstu-sampled-softmax-n128-final.toml",
        "configs/ml-1m/hstu-sampled-softmax-n128-final",
    ],
)
def test_reference_style_config_names_resolve(capsys, name):
    assert main(["--config", name, "--print-config"]) == 0
    assert 'name = "hstu-sampled-softmax-n128-final"' in capsys.readouterr().out


def test_config_file_that_is_not_toml(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("num_epochs = = 3\n[table\n")
    cli_fails(capsys, ["--config", str(bad)], str(bad), "not valid TOML")


@pytest.mark.parametrize(
    "item, words",
    [
        ("num_epoch=3", ["unknown key 'num_epoch'", "num_epochs"]),
        ("num_epochs=three", ["num_epochs must be an integer", "'three'"]),
        ("num_epochs", ["--set expects key=value", "'num_epochs'"]),
        ("dataset=ml-10m", ["dataset = 'ml-10m'", "did you mean 'ml-1m'"]),
        ("dataset=ml-20m", ["dataset = 'ml-20m'", "'synthetic'"]),
        ("model=gpt", ["model = 'gpt'", "'hstu'"]),
        ("dropout=1.5", ["dropout must be in [0, 1)", "1.5"]),
        ("synthetic_size=huge", ["synthetic_size = 'huge'"]),
    ],
)
def test_bad_set_values(capsys, item, words):
    cli_fails(capsys, ["--config", "synthetic/hstu-small", "--set", item], *words)


def test_debug_shows_the_traceback():
    with pytest.raises(HSTUError, match="num_epochs must be an integer"):
        main(["--config", "synthetic/hstu-small", "--set", "num_epochs=x", "--debug"])


# ---- data -----------------------------------------------------------------------------------------------


def test_missing_data_folder(capsys, tmp_path):
    argv = [
        "--config",
        "ml-100k/hstu-sampled-softmax-n128-final",
        *set_args(*TINY, f"data_dir={tmp_path / 'none'}"),
    ]
    argv += set_args(f"exp_dir={tmp_path / 'exps'}")
    cli_fails(capsys, argv, str(tmp_path / "none"))
    assert not (tmp_path / "exps").exists()


# ---- checkpoints ------------------------------------------------------------------------------------------


def _resume(folders, tmp_path, target, config="synthetic/hstu-small"):
    data, _ = folders
    exps = tmp_path / "exps"
    return [
        "--config",
        config,
        "--resume",
        str(target),
        *set_args(*TINY, f"data_dir={data}", f"exp_dir={exps}"),
    ]


def _bad_copy(folders, tmp_path, damage):
    _, run = folders
    bad = tmp_path / "ckpt_last.pt"
    bad.write_bytes(damage((run / "ckpt_last.pt").read_bytes()))
    return bad


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda f, t: t / "missing.pt", ["missing.pt", "no such checkpoint file"]),
        (lambda f, t: f[1] / "ckpt_best.pt", ["ckpt_best.pt", "weights only", "ckpt_last.pt", "init_from"]),
        (lambda f, t: _bad_copy(f, t, lambda b: b""), ["ckpt_last.pt", "empty"]),
        (lambda f, t: _bad_copy(f, t, lambda b: b[: len(b) // 2]), ["ckpt_last.pt", "truncated or corrupt"]),
        (lambda f, t: _bad_copy(f, t, lambda b: b[:-10]), ["ckpt_last.pt", "truncated or corrupt"]),
        (
            lambda f, t: _bad_copy(f, t, lambda b: b"garbage " * 50),
            ["ckpt_last.pt", "not a checkpoint of this"],
        ),
    ],
    ids=["missing", "weights-only", "empty", "truncated", "end-cut", "garbage"],
)
def test_bad_checkpoints(capsys, folders, tmp_path, make, words):
    cli_fails(capsys, _resume(folders, tmp_path, make(folders, tmp_path)), *words)
    assert not (tmp_path / "exps").exists()  # a failed start leaves no run folder


def test_checkpoint_of_another_model(capsys, folders, tmp_path):
    _, run = folders
    line = cli_fails(
        capsys,
        _resume(folders, tmp_path, run, config="synthetic/sasrec-small"),
        str(run / "ckpt_last.pt"),
        "model = 'hstu' in the checkpoint, 'sasrec' in the config",
        "parameter names differ, e.g.",
    )
    assert len(line) < 400, line


def test_resume_without_config_reads_the_checkpoints(capsys, folders):
    _, run = folders
    assert main(["--resume", str(run), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "embedding_dim = 16" in out and f'resume = "{run}"' in out
