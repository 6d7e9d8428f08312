"""hstu_tutorial.precompile: which command lines get their kernels compiled ahead, and the shipped tables."""

from __future__ import annotations

import importlib
import json

import pytest

from hstu_tutorial import precompile

HSTU = "ml-1m/hstu-sampled-softmax-n128-final"


@pytest.mark.parametrize(
    "argv, key",
    [
        (["--config", HSTU], HSTU),
        (["--config", HSTU, "--set", "data_dir=data/ml-1m-u2999", "--set", "progress=false"], HSTU),
        ([f"--config={HSTU}", "--set=seed=3", "--set", "num_epochs=5"], HSTU),
        (["--config", HSTU, "--set", "bf16=true"], None),  # changes the kernels' dtype
        (["--config", HSTU, "--set", "max_seq_len=100"], None),
        (["--config", HSTU, "--seeds", "1,2"], HSTU),
        (["--config", HSTU, "--set", "name=x", "--set", "timestamp_run_dir=false"], HSTU),  # bench_seeds
        (["--config", "my/run.toml"], None),
        (["--gin_config_file", "x.gin"], None),
        (["--resume", "exps/x"], None),
        ([], None),
    ],
)
def test_run_key_only_for_bundled_configs_with_neutral_overrides(argv, key):
    assert precompile.run_key(argv) == key


def test_nothing_starts_without_a_gpu_or_when_turned_off(monkeypatch):
    monkeypatch.setenv("HSTU_PRECOMPILE", "0")
    assert precompile.start_for_cli(["--config", HSTU]) is False
    monkeypatch.setenv("HSTU_PRECOMPILE", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert precompile.start_for_cli(["--config", HSTU]) is False
    assert precompile.wait() is None  # nothing was started by this process


def test_read_table_ignores_missing_and_foreign_files(tmp_path):
    assert precompile.read_table(tmp_path / "none.json") == {}
    bad = tmp_path / "kernels_sm90.json"
    bad.write_text("{not json")
    assert precompile.read_table(bad) == {}
    bad.write_text(json.dumps({"format": 99, "runs": {}}))
    assert precompile.read_table(bad) == {}


def test_launcher_with_no_matching_entries_compiles_nothing(tmp_path, monkeypatch):
    table = {
        "format": precompile.FORMAT,
        "triton": "0.0-not-this-one",
        "runs": {HSTU: [{"kernel": "x.y", "data": "{}"}]},
    }
    (tmp_path / "kernels_sm90.json").write_text(json.dumps(table))
    monkeypatch.setattr(precompile, "TABLE_DIR", tmp_path)
    assert precompile._launch(HSTU) == 0  # another Triton version: no child is forked


def test_shipped_tables_name_real_kernels_of_the_package():
    files = precompile.table_files()
    for path in files:
        table = precompile.read_table(path)
        assert table, f"{path.name} is not a format-{precompile.FORMAT} kernel table"
        assert table["runs"], f"{path.name} lists no config"
        for config, entries in table["runs"].items():
            assert precompile.run_key(["--config", config]) == config
            for entry in entries:
                module, _, name = entry["kernel"].rpartition(".")
                kernel = getattr(importlib.import_module(module), name)
                # a JITFunction on a GPU, an InterpretedFunction under TRITON_INTERPRET: both wrap `fn`
                assert getattr(getattr(kernel, "fn", None), "__name__", None) == name, (
                    f"{entry['kernel']} is not a Triton kernel"
                )
                data = json.loads(entry["data"])
                assert data["name"].endswith(name)


def test_recorder_keeps_only_this_packages_kernels_and_restores_the_hook():
    from types import SimpleNamespace

    from triton import knobs

    before = knobs.runtime.jit_post_compile_hook
    with precompile.Recorder() as rec:
        assert knobs.runtime.jit_post_compile_hook == rec._hook
        ours = SimpleNamespace(fn=SimpleNamespace(__module__="hstu_tutorial.ops.x", __qualname__="k"))
        info = SimpleNamespace(module="hstu_tutorial.ops.x", name="k", jit_function=ours)
        assert rec._hook(fn=info, compile={"specialization_data": '{"name": "k"}'}) is None  # never skips
        other = SimpleNamespace(module="someone.else", name="k", jit_function=ours)
        rec._hook(fn=other, compile={"specialization_data": "{}"})
        rec._hook(fn=info, compile={})  # nothing to record
    assert knobs.runtime.jit_post_compile_hook == before
    assert rec.entries == [{"kernel": "hstu_tutorial.ops.x.k", "data": '{"name": "k"}'}]


def _keys_in_a_fresh_process(code: str) -> list[str]:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(root),
        "TRITON_INTERPRET": "0",
    }  # real JIT functions, never launched
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_child_computes_the_cache_key_the_run_computes():
    """Each child computes the keys of the kernels compiled before its own in the run, then its own: the key
    of its disk-cache entry is then the one the run looks for (checked in fresh processes, as the children)."""
    files = precompile.table_files()
    if not files:
        pytest.skip("no kernel table shipped")
    table = precompile.read_table(files[0])
    names = [e["kernel"] for e in table["runs"][HSTU]]
    order = list(dict.fromkeys(names))  # the run computes each kernel's key at its first launch
    run = _keys_in_a_fresh_process(
        f"import json; from hstu_tutorial import precompile; print(json.dumps(precompile.touch_cache_keys({order!r})))"
    )
    for i, name in enumerate(order):
        child = _keys_in_a_fresh_process(
            "import json; from hstu_tutorial import precompile; "
            f"print(json.dumps(precompile.touch_cache_keys({order[:i]!r} + [{name!r}])))"
        )
        assert child[-1] == run[i], f"{name}: the child's cache key is not the run's"


def test_the_launcher_starts_only_for_this_triton_version(tmp_path, monkeypatch):
    from importlib.metadata import version

    started = []

    class FakePopen:
        def __init__(self, cmd, **kwargs):
            started.append(cmd)
            self.returncode = 0

        def communicate(self, timeout=None):
            return "", ""

    monkeypatch.setattr(precompile, "TABLE_DIR", tmp_path)
    monkeypatch.setattr(precompile.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(precompile.os.path, "exists", lambda p: True)  # as if /dev/nvidiactl were there
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("HSTU_PRECOMPILE", raising=False)
    monkeypatch.setattr(precompile, "_launcher", None)
    table = {
        "format": precompile.FORMAT,
        "triton": "0.0-other",
        "runs": {HSTU: [{"kernel": "x.y", "data": "{}"}]},
    }
    (tmp_path / "kernels_sm90.json").write_text(json.dumps(table))
    assert precompile.start_for_cli(["--config", HSTU]) is False and not started
    table["triton"] = version("triton")
    (tmp_path / "kernels_sm90.json").write_text(json.dumps(table))
    assert precompile.start_for_cli(["--config", HSTU, "--set", "seed=1"]) is True
    assert started and started[0][-2:] == ["hstu_tutorial.precompile", HSTU]
    assert precompile.start_for_cli(["--config", HSTU]) is False  # once per process
    waited = precompile.wait()
    assert waited["ok"] is True and precompile.wait() is None
    for var in precompile.KERNEL_ENV:  # a kernel option from the environment: other kernels, no launcher
        monkeypatch.setattr(precompile, "_launcher", None)
        monkeypatch.setenv(var, "x")
        assert precompile.start_for_cli(["--config", HSTU]) is False
        monkeypatch.delenv(var)


def test_every_kernel_option_variable_stops_the_launcher():
    from hstu_tutorial.ops import options

    assert set(options._ENV.values()) == set(precompile.KERNEL_ENV)


def test_a_child_also_loads_its_kernel_so_the_launcher_is_built_ahead(monkeypatch):
    """After preloading, the child loads the compiled kernel once (`_init_handles`): Triton then builds the
    kernel's C launcher into the same disk cache, which the run would otherwise build during its capture."""
    calls = []

    class Compiled:
        def _init_handles(self):
            calls.append("init")

    class Kernel:
        def __init__(self, name):
            self.name = name

        @property
        def cache_key(self):
            calls.append(f"key {self.name}")
            return self.name

        def preload(self, data):
            calls.append(f"preload {self.name} {data}")
            return Compiled()

    monkeypatch.setattr(precompile, "_kernel", Kernel)
    precompile._compile_one({"kernel": "b", "data": "{}"}, ["a"])
    assert calls == ["key a", "preload b {}", "init"]
    calls.clear()

    class Old(Kernel):  # a Triton whose preload returns nothing: the compile still counts
        def preload(self, data):
            calls.append("preload")

    monkeypatch.setattr(precompile, "_kernel", Old)
    precompile._compile_one({"kernel": "b", "data": "{}"}, [])
    assert calls == ["preload"]


def test_the_run_computes_its_own_keys_in_the_recorded_order_while_it_waits(tmp_path, monkeypatch):
    from importlib.metadata import version

    class FakePopen:
        returncode = 0

        def __init__(self, cmd, **kwargs):
            pass

        def communicate(self, timeout=None):
            return "", ""

    touched = []
    monkeypatch.setattr(precompile, "TABLE_DIR", tmp_path)
    monkeypatch.setattr(precompile.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(precompile.os.path, "exists", lambda p: True)
    monkeypatch.setattr(precompile, "touch_cache_keys", lambda names: touched.append(list(names)))
    for var in ("TRITON_INTERPRET", "HSTU_PRECOMPILE", *precompile.KERNEL_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(precompile, "_launcher", None)
    runs = {HSTU: [{"kernel": k, "data": "{}"} for k in ("p.ln", "p.fwd", "p.ln", "p.bwd")]}
    table = {"format": precompile.FORMAT, "triton": version("triton"), "runs": runs}
    (tmp_path / "kernels_sm90.json").write_text(json.dumps(table))
    assert precompile.start_for_cli(["--config", HSTU]) is True
    assert touched == []  # nothing before the wait
    assert precompile.wait()["ok"] is True
    assert touched == [["p.ln", "p.fwd", "p.bwd"]]
