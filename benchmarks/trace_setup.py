"""Where the README's GPU command spends its time, from process start to results: a timeline.

Runs `python -m hstu_tutorial.train --config ml-1m/hstu-sampled-softmax-n128-final` in this process and
records: Python imports, CUDA start-up, dataset loading, every Triton compile (kernel name and seconds),
the CUDA-graph capture, the first epoch, the rest of training, and the printing of results. Start it with an
empty Triton cache to see what a fresh machine pays:

    TRITON_CACHE_DIR=$(mktemp -d) PYTHONPATH=. python3 benchmarks/trace_setup.py \
        --data-dir data/ml-1m-u2999 [--config NAME] [--set KEY=VALUE ...] [--out DIR]

`--compile-test serial|threads` instead times compiling the three attention kernels for three head sizes
(nine compiles), one after the other or from three threads at once: does Triton compile in parallel?
"""

from __future__ import annotations

import os
import time

T_START = time.perf_counter()


def _since_process_start() -> float:
    """Seconds between the kernel starting this process and now (Linux /proc), else since this import."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / ticks
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - T_START


OFFSET = _since_process_start() - (time.perf_counter() - T_START)  # process start -> T_START
EVENTS: list[tuple[float, float, str]] = []  # (start s since process start, seconds, what)


def now() -> float:
    return time.perf_counter() - T_START + OFFSET


def mark(what: str, t0: float) -> None:
    EVENTS.append((t0, now() - t0, what))


def _patch_triton_compiles() -> None:
    """Record every Triton compile (name, seconds) by wrapping JITFunction._do_compile."""
    from triton.runtime import jit

    original = getattr(jit.JITFunction, "_do_compile", None)
    if original is None:
        print("[trace] this Triton has no JITFunction._do_compile: compiles are not itemised")
        return

    def timed(self, *args, **kwargs):
        t0 = now()
        try:
            return original(self, *args, **kwargs)
        finally:
            mark(f"triton compile {self.fn.__name__}", t0)

    jit.JITFunction._do_compile = timed


def _patch_trainer() -> None:
    from hstu_tutorial.training import trainer as tr_mod

    T = tr_mod.Trainer
    for name in ("__init__", "capture_graph", "evaluate", "_start"):
        original = getattr(T, name)

        def wrapped(self, *a, _orig=original, _name=name, **k):
            t0 = now()
            try:
                return _orig(self, *a, **k)
            finally:
                mark(f"Trainer.{_name}", t0)

        setattr(T, name, wrapped)
    fit_steps = T.fit_steps

    def traced_fit_steps(self, callback=None):
        first = [True]

        def cb(record):
            if first[0]:
                mark("epoch 0 (train + eval)", traced_fit_steps.t0)
                first[0] = False
            if callback is not None:
                callback(record)

        traced_fit_steps.t0 = now()
        result = yield from fit_steps(self, cb)
        mark("fit (all epochs)", traced_fit_steps.t0)
        return result

    T.fit_steps = traced_fit_steps


def compile_test(mode: str) -> None:
    """Compile the fwd/dkdv/dq kernels for head sizes 32, 64, 128 (9 compiles) serially or in 3 threads."""
    import threading

    t0 = now()
    import torch

    from hstu_tutorial.ops.options import use_options
    from hstu_tutorial.ops.triton import triton_hstu_attention

    torch.zeros(1, device="cuda")
    mark("import torch + CUDA start", t0)

    def one(d: int) -> None:
        t = now()
        with use_options(autotune=False):
            offsets = torch.tensor([0, 100, 300], device="cuda")
            q, k, v = (torch.randn(300, 2, d, device="cuda", requires_grad=True) for _ in range(3))
            out = triton_hstu_attention(q, k, v, offsets, alpha=0.1, norm=200, max_len=200)
            out.sum().backward()
            torch.cuda.synchronize()
        mark(f"fwd+bwd compiles, head size {d}", t)

    t0 = now()
    if mode == "serial":
        for d in (32, 64, 128):
            one(d)
    else:
        threads = [threading.Thread(target=one, args=(d,)) for d in (32, 64, 128)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    mark(f"all 9 compiles ({mode})", t0)


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="ml-1m/hstu-sampled-softmax-n128-final")
    ap.add_argument("--data-dir", default="data/ml-1m-u2999")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--compile-test", choices=("serial", "threads"))
    ap.add_argument("--out", default="")
    ap.add_argument(
        "--cprofile", type=int, default=0, help="also print the top N functions by cumulative time"
    )
    args = ap.parse_args()
    mark("python start-up until this script runs", 0.0)
    argv = ["--config", args.config, "--set", f"data_dir={args.data_dir}", "--set", "progress=false"]
    for s in args.set:
        argv += ["--set", s]
    if not args.compile_test:  # what `python -m hstu_tutorial.train` does before it imports torch
        from hstu_tutorial.precompile import start_for_cli

        t0 = now()
        started = start_for_cli(argv)
        mark(f"precompile.start_for_cli (launcher started: {started})", t0)
    t0 = now()
    import torch  # noqa: F401

    mark("import torch", t0)
    t0 = now()
    import triton  # noqa: F401

    mark("import triton", t0)
    _patch_triton_compiles()
    if args.compile_test:
        compile_test(args.compile_test)
    else:
        t0 = now()
        from hstu_tutorial.training.cli import main as cli_main

        _patch_trainer()
        mark("import hstu_tutorial.training", t0)
        t0 = now()
        if args.cprofile:
            import cProfile
            import io
            import pstats

            prof = cProfile.Profile()
            rc = prof.runcall(cli_main, argv)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.cprofile)
            if args.out:
                os.makedirs(args.out, exist_ok=True)
                with open(os.path.join(args.out, "trace_setup_cprofile.txt"), "w") as f:
                    f.write(buf.getvalue())
        else:
            rc = cli_main(argv)
        mark(f"hstu-train {' '.join(argv)} (exit {rc})", t0)
    total = now()
    lines = [
        "| start s | seconds | what |",
        "|---|---|---|",
        *(f"| {s:.2f} | {d:.2f} | {w} |" for s, d, w in sorted(EVENTS)),
    ]
    compiles = [d for _, d, w in EVENTS if w.startswith("triton compile")]
    lines += [
        "",
        f"Triton compiles: {len(compiles)}, {sum(compiles):.2f} s in all. "
        f"Process start to end: {total:.2f} s. TRITON_CACHE_DIR={os.environ.get('TRITON_CACHE_DIR', '(default)')}",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        name = f"trace_setup_{args.compile_test}.md" if args.compile_test else "trace_setup.md"
        with open(os.path.join(args.out, name), "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
