"""The preset is picked automatically: GPU -> full, CPU with ML-1M on disk -> real-cpu, else small."""

import pytest
import torch

import hstu_tutorial
from hstu_tutorial import presets


def _place_ml1m(folder):
    folder.mkdir(parents=True)
    for f in ("ratings.dat", "movies.dat", "users.dat"):
        (folder / f).write_text("")


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    monkeypatch.delenv("HSTU_PRESET", raising=False)
    monkeypatch.setenv("HSTU_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return tmp_path


def test_cpu_without_movielens_is_small(no_env, capsys):
    assert hstu_tutorial.get_preset().name == "small"
    assert "synthetic look-alike" in capsys.readouterr().out


@pytest.mark.parametrize("folder", ["ml-1m", "ml-1m-u2999"])
def test_cpu_with_movielens_is_real_cpu(no_env, folder, capsys):
    _place_ml1m(no_env / folder)
    p = hstu_tutorial.get_preset()
    assert (p.name, p.device, p.dataset, p.real_data, p.gpu) == ("real-cpu", "cpu", "ml-1m", True, False)
    assert presets.ml1m_folder() == no_env / folder
    assert f"data/{folder}" in capsys.readouterr().out


def test_incomplete_folder_is_not_movielens(no_env):
    _place_ml1m(no_env / "ml-1m")
    (no_env / "ml-1m" / "users.dat").unlink()
    assert presets.ml1m_folder() is None
    assert hstu_tutorial.get_preset(verbose=False).name == "small"


def test_gpu_is_full(no_env, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hstu_tutorial.get_preset(verbose=False).name == "full"


def test_env_and_argument_win(no_env, monkeypatch):
    _place_ml1m(no_env / "ml-1m")
    monkeypatch.setenv("HSTU_PRESET", "small")
    assert hstu_tutorial.get_preset(verbose=False).name == "small"
    assert hstu_tutorial.get_preset("real-cpu", verbose=False).name == "real-cpu"


def test_bad_choices_say_what_to_do(no_env):
    with pytest.raises(ValueError, match="choose one of"):
        hstu_tutorial.get_preset("medium")
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        hstu_tutorial.get_preset("full")
    with pytest.raises(RuntimeError, match="needs MovieLens-1M"):
        hstu_tutorial.get_preset("real-cpu")


def test_pick_has_one_value_per_preset():
    assert [p.pick("a", "b", "c") for p in presets.PRESETS.values()] == ["a", "b", "c"]
