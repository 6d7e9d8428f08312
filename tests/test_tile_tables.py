"""Tile tables of the Triton attention: lookup, the order table -> cache -> tune, atomic cache files keyed
by GPU and Triton version, corrupt files ignored with a warning, and the trainer's setup split."""

import json
import os
from pathlib import Path

import pytest
import torch

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
from hstu_tutorial.ops import use_options
from hstu_tutorial.ops.triton import tiles, triton_hstu_attention

T1 = {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
T2 = {"BLOCK_M": 32, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3}
CONSTS = dict(BLOCK_D_QK=64, BLOCK_D_V=64, DOT_PREC="tf32", CAUSAL=True, BIAS=2)


def _store(tmp_path, table=None, version="3.6.0"):
    if table is not None:
        tiles.write_tile_file(tmp_path / "table" / "tiles_sm90.json", table, {"gpu": "sm90"})
    return tiles.TileStore(
        "sm90", "NVIDIA H200", version, table_dir=tmp_path / "table", cache_dir=tmp_path / "cache"
    )


def test_shape_class_names_every_part_of_the_key():
    key = tiles.shape_class("fwd", torch.float32, CONSTS, 200)
    assert key == "fwd|dqk=64|dv=64|float32|tf32|causal=1|bias=2|n=256"
    bf16 = tiles.shape_class("dkdv", torch.bfloat16, dict(CONSTS, RAB_GRAD=1, ATOMIC_DQ=0), 5)
    assert bf16 == "dkdv|dqk=64|dv=64|bfloat16|causal=1|bias=2|rab_grad=1|atomic_dq=0|n=16"
    assert [tiles.length_class(n) for n in (1, 16, 17, 256, 257)] == [16, 16, 32, 256, 512]


def test_shipped_sm90_table_is_valid_and_covers_the_readme_config():
    entries = tiles.read_tile_file(tiles.TABLE_DIR / "tiles_sm90.json", "tile table")
    for kind in ("fwd", "dq"):
        assert f"{kind}|dqk=64|dv=64|float32|tf32|causal=1|bias=2|n=256" in entries
    assert "dkdv|dqk=64|dv=64|float32|tf32|causal=1|bias=2|rab_grad=1|atomic_dq=0|n=256" in entries


def test_lookup_order_table_then_cache_then_nothing(tmp_path):
    store = _store(tmp_path, table={"a": T1})
    tiles.write_tile_file(store.cache_path, {"a": T2, "b": T2}, store.header())
    assert store.lookup("a") == (T1, "table")  # the shipped table wins over the cache
    assert store.lookup("b") == (T2, "cache")
    assert store.lookup("c") == (None, "none")  # the caller tunes
    store.save("c", T1)
    assert store.lookup("c") == (T1, "tuned")
    # tuning = "tune": only what this process tuned counts
    assert store.lookup("a", use_saved=False) == (None, "none")
    assert store.lookup("c", use_saved=False) == (T1, "tuned")


def test_cache_is_keyed_by_gpu_and_triton_version_and_written_atomically(tmp_path, monkeypatch):
    store = _store(tmp_path)
    store.save("k", T1)
    assert store.cache_path.name == "sm90-NVIDIA_H200-triton3.6.0.json"
    assert tiles.read_tile_file(store.cache_path, "tile cache") == {"k": T1}
    assert _store(tmp_path).lookup("k") == (T1, "cache")  # a new process reads it
    assert _store(tmp_path, version="3.7.1").lookup("k") == (None, "none")  # another Triton: own file
    # atomic: a failing write leaves the old file whole and no temporary file behind
    path = store.cache_path
    monkeypatch.setattr(tiles.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.warns(UserWarning, match="could not save tuned tiles"):
        store.save("k2", T2)
    assert store.lookup("k2") == (T2, "tuned")  # this process keeps it
    assert tiles.read_tile_file(path, "tile cache") == {"k": T1}
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_save_keeps_entries_other_processes_wrote(tmp_path):
    a, b = _store(tmp_path), _store(tmp_path)
    a.cache(), b.cache()  # both read the (empty) cache first
    a.save("x", T1)
    b.save("y", T2)
    assert tiles.read_tile_file(a.cache_path, "tile cache") == {"x": T1, "y": T2}


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        json.dumps({"format": 99, "tiles": {}}),
        json.dumps({"format": 1, "tiles": {"k": {"BLOCK_M": 48}}}),
    ],
)
def test_corrupt_cache_is_ignored_with_a_warning_and_replaced(tmp_path, text):
    store = _store(tmp_path)
    store.cache_path.parent.mkdir(parents=True)
    store.cache_path.write_text(text)
    with pytest.warns(UserWarning, match="ignoring the tile cache"):
        assert store.lookup("k") == (None, "none")
    store.save("k", T1)  # the next tuning writes a good file over it
    assert tiles.read_tile_file(store.cache_path, "tile cache") == {"k": T1}


def test_bad_tiles_are_rejected():
    with pytest.raises(ValueError, match="powers of two"):
        tiles.check_tiles(dict(T1, BLOCK_M=48))
    with pytest.raises(ValueError, match="keys"):
        tiles.check_tiles({"BLOCK_M": 64})


def _attention(seed=0):
    g = torch.Generator().manual_seed(seed)
    offsets = torch.tensor([0, 5, 17, 20])
    q, k, v = (torch.randn(20, 1, 16, generator=g, requires_grad=True) for _ in range(3))
    out = triton_hstu_attention(q, k, v, offsets)
    out.sum().backward()
    return out, q.grad


@pytest.mark.skipif(not tha.is_interpreter(), reason="drives the launch path in the CPU interpreter")
def test_launch_uses_table_then_cache_then_tunes_and_saves(tmp_path, monkeypatch):
    monkeypatch.setattr(tha, "_tune", lambda opts: opts.autotune)
    for tuner in tha._TUNED.values():
        monkeypatch.setattr(tuner, "cache", {})
    key = {
        kind: tiles.shape_class(
            kind,
            torch.float32,
            dict(
                BLOCK_D_QK=16, BLOCK_D_V=16, DOT_PREC="tf32x3", CAUSAL=True, BIAS=0, RAB_GRAD=0, ATOMIC_DQ=0
            ),
            12,
        )
        for kind in ("fwd", "dkdv", "dq")
    }
    small = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2}
    store = _store(tmp_path, table={key["fwd"]: small})
    tiles.write_tile_file(store.cache_path, {key["dkdv"]: small}, store.header())
    monkeypatch.setattr(tha, "_tile_store", lambda device: store)
    tuned_runs = []
    for kind, tuner in tha._TUNED.items():
        monkeypatch.setattr(tuner, "_bench", lambda *a, kind=kind, **kw: tuned_runs.append(kind) or 1.0)
    clock = tiles.tuning_seconds()
    with use_options(tuning="table"):
        out, dq = _attention()
    assert set(tuned_runs) == {"dq"}  # fwd from the table, dkdv from the cache, dq tuned
    assert store.sources() == {"table": 1, "cache": 1, "tuned": 1}
    assert tiles.tuning_seconds() > clock
    assert key["dq"] in tiles.read_tile_file(store.cache_path, "tile cache")  # saved for the next process
    with use_options(autotune=False):
        ref, ref_dq = _attention()  # fixed interpreter tiles
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(dq, ref_dq)
    tuned_runs.clear()
    with use_options(tuning="tune"):  # table and cache ignored: fwd and dkdv are timed now, dq was already
        _attention()
    assert set(tuned_runs) == {"fwd", "dkdv"}


def test_tuning_option_validated_and_read_from_the_environment(monkeypatch):
    from hstu_tutorial.ops import KernelOptions

    assert KernelOptions().tuning == "table"
    monkeypatch.setenv("HSTU_TRITON_TUNING", "tune")
    assert KernelOptions.from_env().tuning == "tune"
    with pytest.raises(ValueError, match="tuning must be one of"):
        KernelOptions().replace(tuning="always")
    with use_options(tuning="tune"), use_options(autotune=True):  # the trainer's scope keeps the mode
        from hstu_tutorial.ops import get_options

        assert get_options().tuning == "tune"


def test_trainer_results_carry_the_setup_split(tmp_path):
    from hstu_tutorial.training.config import load_config
    from hstu_tutorial.training.report import results_markdown
    from hstu_tutorial.training.trainer import Trainer

    cfg = load_config(
        "synthetic/hstu-small",
        dict(
            max_seq_len=20,
            embedding_dim=16,
            dqk=16,
            dv=16,
            ffn_hidden=16,
            num_epochs=1,
            max_steps=2,
            exp_dir=str(tmp_path),
            progress=False,
            tensorboard=False,
            save_checkpoints=False,
            eval_batch_size=4096,
            attention_impl="pytorch",
        ),
    )
    results = Trainer(cfg, verbose=False).fit()
    t = results["timing"]
    assert t["data_s"] > 0 and t["compile_s"] > 0 and t["tune_s"] == 0.0
    assert t["data_s"] <= t["setup_s"]
    saved = json.loads((Path(results["run_dir"]) / "results.json").read_text())
    assert {"data_s", "compile_s", "tune_s"} <= set(saved["timing"])
    split = f"data {t['data_s']:.1f} s, compile {t['compile_s']:.1f} s, tune 0.0 s"
    assert split in results_markdown(results)


def test_cache_marks_the_project_cache_folder_so_data_can_still_be_written_there(tmp_path):
    from hstu_tutorial.data.paths import CACHE_MARKER, owned_folder

    root = tmp_path / "hstu_cache"
    store = tiles.TileStore(
        "sm90", "NVIDIA H200", "3.6.0", table_dir=None, cache_dir=root / "triton_tiles", cache_root=root
    )
    store.save("k", T1)
    assert (root / CACHE_MARKER).is_file()
    assert owned_folder(root) == root  # the data loaders may still write generated data here
    foreign = tmp_path / "not_ours"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    store = tiles.TileStore(
        "sm90", "NVIDIA H200", "3.6.0", table_dir=None, cache_dir=foreign / "triton_tiles", cache_root=foreign
    )
    with pytest.warns(UserWarning, match="could not save tuned tiles"):
        store.save("k", T1)
    assert not (foreign / "triton_tiles").exists() and store.lookup("k") == (T1, "tuned")
