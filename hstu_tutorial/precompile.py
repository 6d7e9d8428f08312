"""Compile a run's Triton kernels ahead of time, in parallel worker processes, while the run starts up.

On a fresh machine every Triton kernel compiles the first time a process launches it: 0.5-2.2 s each on an
NVIDIA H200 (2026-12-01), one after the other. Threads do not help (Triton holds Python's lock while it
compiles: nine compiles took 30 s from three threads against 28.7 s in one, `benchmarks/trace_setup.py`).
Processes do. The package ships, per GPU family and Triton version, the kernel specialisations each
shipped config launches (`ops/triton/kernels_<gpu>.json`, written by `benchmarks/record_kernels.py`).

`python -m hstu_tutorial.train --config NAME ...` calls `start_for_cli` before it imports torch: when NAME
has an entry for this Triton version, one launcher process imports the kernels and forks one child per
kernel; each compiles its kernel into Triton's on-disk cache (`JITFunction.preload`). The trainer calls
`wait()` before its first step, and Triton then finds every kernel in that cache.

A kernel's cache key depends on which kernels had theirs computed before it in the process (see
`touch_cache_keys`): every child computes the keys of the kernels the recorded run compiled before its own,
in that order, and the run computes its own in the same order while it waits. Each child also loads its
kernel once, which builds the kernel's C launcher into the same cache. Measured on an H200 (2026-12-01,
`benchmarks/results/h200_2026-12-01/perf/after_auto/`): every kernel of the README's command then comes from
the cache (six lookups, 0.36-0.46 s in all), and the graph capture takes 0.8-0.9 s instead of 2.5-2.6 s.

Nothing here changes what is computed. A missing, stale or mismatched entry (another GPU, another Triton,
an override or a kernel option set in the environment) only means that kernel compiles inside the run, as
without this module.
`HSTU_PRECOMPILE=0` turns it off. This module imports only the standard library until a worker runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

FORMAT = 1
TABLE_DIR = Path(__file__).resolve().parent / "ops" / "triton"
# --set keys that change no kernel: a run with only these overrides launches the recorded kernels.
NEUTRAL_KEYS = frozenset(
    {
        "data_dir",
        "exp_dir",
        "name",
        "timestamp_run_dir",
        "progress",
        "tensorboard",
        "save_checkpoints",
        "seed",
        "num_epochs",
        "max_steps",
        "early_stopping_patience",
        "device",
    }
)
# Environment variables that change which kernels a run launches (the kernel options of ops/options.py, whose
# package imports torch, so they are named again here; a test keeps the two lists equal): the shipped tables
# were recorded without them, so a run that sets one compiles its own kernels instead.
KERNEL_ENV = (
    "HSTU_FUSED_LAYER_NORM",
    "HSTU_FUSED_LOSS",
    "HSTU_FUSED_SASREC_OUTPUT",
    "HSTU_FUSED_SASREC_INPUT",
    "HSTU_TRITON_REL_BIAS_GRAD",
    "HSTU_TRITON_DQ_MODE",
    "HSTU_TRITON_FP32_PRECISION",
    "HSTU_TRITON_TUNING",
    "HSTU_TRITON_TMA",
)
_launcher: subprocess.Popen | None = None
_started_at = 0.0
_run_order: list[str] = []  # the started run's kernels, in the order the recorded run first launched them


def table_files() -> list[Path]:
    """The shipped kernel tables, one per GPU family."""
    return sorted(TABLE_DIR.glob("kernels_sm*.json"))


def read_table(path: Path) -> dict:
    """A kernel table as a dict, or {} if it is missing or not in this module's format."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    ok = isinstance(data, dict) and data.get("format") == FORMAT and isinstance(data.get("runs"), dict)
    return data if ok else {}


def run_key(argv: list[str]) -> str | None:
    """The shipped config a command line runs, if it changes no kernel of it; else None.

    `argv` is `hstu-train`'s arguments: `--config NAME` (a bundled name) and `--set KEY=VALUE` whose keys
    are all in NEUTRAL_KEYS, and `--seeds`. Anything else (a TOML path, --gin_config_file, --resume, other keys)
    gives None: no precompilation, the run compiles as usual."""
    config, i = None, 0
    while i < len(argv):
        arg = argv[i]
        value = argv[i + 1] if i + 1 < len(argv) else ""
        if arg == "--config":
            config, i = value, i + 2
        elif arg.startswith("--config="):
            config, i = arg.split("=", 1)[1], i + 1
        elif arg == "--seeds":  # several runs of the same config: the same kernels
            i += 2
        elif arg.startswith("--seeds="):
            i += 1
        elif arg == "--set" or arg.startswith("--set="):
            item = value if arg == "--set" else arg.split("=", 1)[1]
            if item.split("=", 1)[0].strip() not in NEUTRAL_KEYS:
                return None
            i += 2 if arg == "--set" else 1
        else:
            return None
    if not config or config.endswith((".toml", ".gin")) or os.sep in config.replace("/", ""):
        return None
    return config


def start_for_cli(argv: list[str]) -> bool:
    """Start the launcher for this command line's kernels (at most once per process); True if started."""
    global _launcher, _started_at
    if _launcher is not None or os.environ.get("HSTU_PRECOMPILE", "1") == "0":
        return False
    if os.environ.get("TRITON_INTERPRET", "0") == "1" or not os.path.exists("/dev/nvidiactl"):
        return False  # no NVIDIA GPU (or the CPU interpreter): nothing to compile
    if any(os.environ.get(var) for var in KERNEL_ENV):
        return False  # other kernels than the recorded ones
    key = run_key(list(argv))
    try:
        from importlib.metadata import version

        triton_version = version("triton")  # read from the installed metadata: triton is not imported
    except Exception:  # noqa: BLE001 - no triton: nothing to compile
        return False
    tables = [read_table(p) for p in table_files()]
    recorded = [
        t["runs"][key] for t in tables if key in t.get("runs", {}) and t.get("triton") == triton_version
    ]
    if not recorded:  # also when key is None: no run of a bundled config
        return False
    _started_at = time.perf_counter()
    _run_order[:] = run_order(recorded[0])
    try:
        _launcher = subprocess.Popen(
            [sys.executable, "-m", "hstu_tutorial.precompile", key],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    except OSError:  # no process could be started: the run compiles its kernels itself, as without this
        return False
    return True


def wait(timeout: float = 120.0) -> dict | None:
    """Wait for the launcher started by this process (None if there is none): {"seconds", "ok", "error"}."""
    global _launcher
    if _launcher is None:
        return None
    proc, _launcher = _launcher, None
    # Meanwhile, this process computes its own cache keys in the run's order (the run would at its first
    # launches; here it overlaps the wait, ~0.4 s on an H200), the order the children used too.
    try:
        touch_cache_keys(_run_order)
    except Exception:  # noqa: BLE001 - a kernel that cannot be hashed now fails where it is launched
        pass
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return {"seconds": time.perf_counter() - _started_at, "ok": False, "error": "timed out"}
    return {
        "seconds": time.perf_counter() - _started_at,
        "ok": proc.returncode == 0,
        "error": (err or "").strip()[-500:],
    }


class Recorder:
    """Collect the specialisations of this package's Triton kernels compiled while active.

        with Recorder() as rec:
            ...  # a run
        rec.entries  # [{"kernel": "hstu_tutorial....hstu_fwd_kernel", "data": "<Triton's JSON>"}, ...]

    Uses Triton's `knobs.runtime.jit_post_compile_hook` (called after a kernel is compiled or read from the
    disk cache, never on an in-memory hit: record each run in a fresh process)."""

    def __init__(self):
        self.entries: list[dict] = []
        self._old = None

    def _hook(self, *args, **kwargs):
        fn, compiled = kwargs.get("fn"), kwargs.get("compile") or {}
        name = f"{getattr(fn, 'module', '')}.{getattr(fn, 'name', '')}"  # the kernel's module and qualname
        data = compiled.get("specialization_data")
        if name.startswith("hstu_tutorial.") and data:
            self.entries.append({"kernel": name, "data": data})
        return None  # never skip a compile

    def __enter__(self) -> Recorder:
        from triton import knobs

        self._old = knobs.runtime.jit_post_compile_hook
        knobs.runtime.jit_post_compile_hook = self._hook
        return self

    def __exit__(self, *exc) -> None:
        from triton import knobs

        knobs.runtime.jit_post_compile_hook = self._old


def _kernel(name: str):
    """The Triton kernel object called `name` ("package.module.function")."""
    import importlib

    module, _, qualname = name.rpartition(".")
    return getattr(importlib.import_module(module), qualname)


def touch_cache_keys(names: list[str]) -> list[str]:
    """Compute the Triton cache keys of the kernels `names`, in this order; returns them.

    A kernel's cache key (part of its on-disk cache entry's name) depends on which kernels of the process
    had theirs computed before it, when they share helper functions: with triton 3.7.1, the dQ kernel's
    key differs when the forward kernel's was computed first, as it always is in a run (forward before
    backward). So a child first computes the keys of every kernel the run compiled before its own."""
    return [_kernel(name).cache_key for name in names]


def run_order(entries: list[dict]) -> list[str]:
    """The distinct kernel names of a recorded run, in the order it first launched them."""
    return list(dict.fromkeys(e["kernel"] for e in entries))


def _compile_one(spec: dict, before: list[str]) -> None:
    """Compile one recorded specialisation into Triton's disk cache (in a forked child), after computing the
    cache keys of the kernels `before` it in the run's order, as the run does.

    Then load it once: that builds its C launcher (a small extension module compiled by the system's C
    compiler, 0.3 s each on an H200, 2026-12-01), which Triton keeps in the same disk cache; without this the
    run built all of them during its graph capture (1.6 s)."""
    touch_cache_keys(before)
    compiled = _kernel(spec["kernel"]).preload(spec["data"])
    init_handles = getattr(compiled, "_init_handles", None)  # Triton's lazy loader (3.x)
    if callable(init_handles):
        init_handles()


def _gpu_family() -> str | None:
    """The first GPU's compute capability as a table name ("sm90"), asked of nvidia-smi so that this process
    starts no CUDA context before it forks; None when that cannot be told (then every table is tried)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        major, minor = out.stdout.strip().splitlines()[0].strip().split(".")
        return f"sm{int(major)}{int(minor)}"
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def _launch(key: str) -> int:
    """The launcher: fork one child per kernel of `key`, each compiles it; 0 if all compiled.

    torch is imported once, here, before the fork (importing it does not start CUDA, which would not
    survive a fork); the children import the kernels and start CUDA themselves, in parallel."""
    from importlib.metadata import version

    import torch  # noqa: F401 - shared by the children through the fork

    family = _gpu_family()
    entries = []
    for path in table_files():
        table = read_table(path)
        if table.get("triton") == version("triton") and family in (None, table.get("gpu")):
            entries += table["runs"].get(key, [])
    children = []
    for i, spec in enumerate(entries):
        pid = os.fork()
        if pid == 0:  # child: compile, never return into the launcher's code
            code = 0
            try:
                _compile_one(spec, run_order(entries[:i]))
            except BaseException as err:  # noqa: BLE001 - another GPU family, a changed kernel: skip it
                print(f"{spec['kernel']}: {type(err).__name__}: {err}", file=sys.stderr)
                code = 1
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
    failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in children)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(_launch(sys.argv[1]))
