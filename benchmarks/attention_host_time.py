"""Where an eager forward+backward of the attention kernel spends its time: the host or the GPU?

    PYTHONPATH=. python3 benchmarks/attention_host_time.py --out $OUT/host_time          # GPU
    PYTHONPATH=. python3 benchmarks/attention_host_time.py --official .ref/official_attention --out DIR
    PYTHONPATH=. python benchmarks/attention_host_time.py --smoke                         # CPU: logic only

A case is built like the side-by-side script's (`--cases`, a comma list; `jagged-N`: bf16, causal, H = 4,
d = 128, 65,536 tokens in sequences of lengths uniform in [N/2, N] drawn after torch.manual_seed(0);
`dense-N`: all N). For each implementation (ours; with `--official DIR`, the official kernel too):
- `do_bench`: triton.testing.do_bench of `torch.autograd.grad(f(q, k, v), (q, k, v), do)` (warmup 50,
  rep 300, median), as the side-by-side script times it: host and GPU together; also of the forward alone;
- `host issue`: the host's time to issue one such call while the GPU is kept busy by a long sleep kernel
  queued first, so no launch waits for the GPU (median of `--host-reps` calls);
- `GPU alone`: the same call captured once in a CUDA graph and replayed (do_bench of the replay);
- the kernels of one call with their GPU times (torch.profiler);
- `host issue fwd`: the same for the forward alone, without autograd;
- a row `autograd alone`: a Function that allocates its outputs and launches nothing (autograd's own cost);
- with `--breakdown`: host time inside our autograd Function's forward, backward and each launch;
- with `--cprofile N`: the N host functions with the most own time over `--host-reps` calls (profiled
  separately, after every timing, as are the kernels).
When `host` approaches `gpu`, do_bench's figure depends on how fast the host runs that day: the GPU waits
for launches between kernels. Every timed call's inputs are compared with clones taken before timing
(exit 1 if any changed).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hstu_tutorial.perf import machine_info, save_results  # noqa: E402

H, D = 4, 128


def make_case(name: str, tokens: int, device: str, dtype: torch.dtype):
    """q, k, v (T, H, D) with grad, do, offsets and the longest length N of the side-by-side case `name`."""
    kind, n = name.split("-")
    n = int(n)
    if kind not in ("jagged", "dense") or n < 2:
        raise ValueError(f"case must be jagged-N or dense-N with N >= 2; got {name!r}")
    batch = max(1, tokens // n)
    torch.manual_seed(0)
    lengths = [n] * batch if kind == "dense" else torch.randint(n // 2, n + 1, (batch,)).tolist()
    offsets = torch.tensor([0] + lengths, device=device).cumsum(0)
    total = int(offsets[-1])
    q, k, v = (
        torch.randn(total, H, D, device=device, dtype=dtype).mul_(0.5).requires_grad_(True) for _ in range(3)
    )
    do = torch.randn(total, H, D, device=device, dtype=dtype)
    return q, k, v, do, offsets, n


def implementations(official_dir: str | None):
    """name -> f(q, k, v, offsets, alpha, n), the two calls the side-by-side script makes."""
    from hstu_tutorial.ops.triton import triton_hstu_attention

    impls = {"ours": lambda q, k, v, o, a, n: triton_hstu_attention(q, k, v, o, alpha=a, norm=n, max_len=n)}
    if official_dir:
        import triton.language as tl

        for name, fn in (
            ("_experimental_descriptor_load", tl.load),
            ("_experimental_descriptor_store", tl.store),
        ):
            if not hasattr(tl, name):  # names the official kernel mentions in branches never taken here
                setattr(tl, name, fn)
        sys.path.insert(0, os.path.abspath(official_dir))
        from generative_recommenders.ops.triton.triton_hstu_attention import triton_hstu_mha

        impls["official"] = lambda q, k, v, o, a, n: triton_hstu_mha(n, a, q, k, v, o)
    return impls


def _busy_gpu(ms: float) -> None:
    # A sleep kernel of about `ms` (cycles at ~1.98 GHz, the H200's boost clock; only a lower bound matters).
    torch.cuda._sleep(int(ms * 1.98e6))


def host_issue_ms(call, reps: int, on_gpu: bool, profile: cProfile.Profile | None = None) -> list[float]:
    """Host milliseconds to issue each of `reps` calls, the GPU kept busy meanwhile (so none waits)."""
    times = []
    if on_gpu:
        torch.cuda.synchronize()
        _busy_gpu(5.0 * reps)  # long enough for every call below to be issued before it ends
    for _ in range(reps):
        if profile is not None:
            profile.enable()
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1e3)
        if profile is not None:
            profile.disable()
    if on_gpu:
        torch.cuda.synchronize()
    return times


def graph_ms(call) -> float:
    """GPU milliseconds of `call` alone: captured in a CUDA graph, replays timed by do_bench."""
    from triton.testing import do_bench

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):  # the warm-up's stream: autograd's nodes were made on it
        call()
    return do_bench(graph.replay, warmup=50, rep=300)


def kernel_times(call, reps: int = 20) -> list[tuple[str, float, int]]:
    """(kernel name, GPU us per call, launches per call) of `call`, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            call()
        torch.cuda.synchronize()
    rows = []
    for ev in prof.key_averages():
        dev = getattr(ev, "device_time_total", None)
        if dev is None:
            dev = ev.cuda_time_total
        if dev > 0 and ev.count >= reps:
            rows.append((ev.key[:60], dev / reps, ev.count // reps))
    return sorted(rows, key=lambda r: -r[1])


class _Passthrough(torch.autograd.Function):
    """Autograd's own cost: a Function whose forward and backward allocate outputs and launch nothing."""

    @staticmethod
    def forward(ctx, q, k, v):
        return torch.empty_like(v)

    @staticmethod
    def backward(ctx, dout):
        return torch.empty_like(dout), torch.empty_like(dout), torch.empty_like(dout)


def calls(f, case):
    """(forward+backward call, forward-only call without autograd) of `f` on `case`."""
    q, k, v, do, offsets, n = case
    alpha = 1.0 / D**0.5

    def fwd_bwd():
        # fresh leaves (views of the same storage) every call: autograd makes their gradient nodes on the
        # stream that is current now, so a call captured in a CUDA graph never waits on another stream
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        return torch.autograd.grad(f(*leaves, offsets, alpha, n), leaves, do)

    def fwd():
        with torch.no_grad():
            return f(q, k, v, offsets, alpha, n)

    return fwd_bwd, fwd


def measure(name: str, f, case, args, on_gpu: bool) -> dict:
    """Host issue times (no profiler attached), do_bench and the graph's GPU time of `f` on `case`."""
    fwd_bwd, fwd = calls(f, case)
    inputs = [case[i] for i in (0, 1, 2, 4)]  # q, k, v, offsets
    before = [t.detach().clone() for t in inputs]
    fwd_bwd()  # tiles, tuning and compiles happen here, outside every timing
    row = {"impl": name}
    for label, call in (("host_ms", fwd_bwd), ("host_fwd_ms", fwd)):
        host = host_issue_ms(call, args.host_reps, on_gpu)
        row[label], row[label + "_min_max"] = statistics.median(host), [min(host), max(host)]
    if on_gpu:
        from triton.testing import do_bench

        row["do_bench_ms"] = do_bench(fwd_bwd, warmup=50, rep=300)
        row["gpu_ms"] = graph_ms(fwd_bwd)
        row["do_bench_fwd_ms"] = do_bench(fwd, warmup=50, rep=300)
        row["gpu_fwd_ms"] = graph_ms(fwd)
    row["inputs_unchanged"] = all(torch.equal(a, b.detach()) for a, b in zip(before, inputs))
    return row


def profiles(row: dict, f, case, args, on_gpu: bool) -> None:
    """Add the kernels' GPU times and the host functions' profile to `row` (after every timing: a
    profiler can leave the process's launches slower)."""
    fwd_bwd, _ = calls(f, case)
    if on_gpu:
        row["kernels"] = kernel_times(fwd_bwd)
    if args.cprofile:
        prof = cProfile.Profile()
        host_issue_ms(fwd_bwd, args.host_reps, on_gpu, prof)
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.cprofile)
        row["cprofile"] = buf.getvalue()


class HostBreakdown:
    """Host time inside our autograd Function's forward and backward and inside each kernel launch,
    measured by wrapping them with clocks (only while `--breakdown` is on; the wrappers cost ~1 us)."""

    def __init__(self):
        from triton.runtime.jit import JITFunction

        import hstu_tutorial.ops.triton.hstu_attention_autograd as tha

        self.module, self.fn_cls, self.jit_cls = tha, tha._HSTUAttentionFunction, JITFunction
        self.originals = (
            tha._launch,
            tha._prepare,
            self.fn_cls.__dict__["forward"],
            self.fn_cls.__dict__["backward"],
            JITFunction.run,
        )
        self.totals: dict[str, float] = {}

    def _timed(self, label, fn):
        def wrapper(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                name = f"{label} {a[0]}" if label == "launch" else label
                self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

        return wrapper

    def __enter__(self):
        launch, prepare, fwd, bwd, jit_run = self.originals
        self.module._launch = self._timed("launch", launch)
        self.module._prepare = self._timed("_prepare (input checks)", prepare)
        self.jit_cls.run = self._timed("triton JITFunction.run (in the launches)", jit_run)
        self.fn_cls.forward = staticmethod(self._timed("Function.forward", fwd.__func__))
        self.fn_cls.backward = staticmethod(self._timed("Function.backward", bwd.__func__))
        return self

    def __exit__(self, *exc):
        launch, prepare, fwd, bwd, jit_run = self.originals
        self.module._launch, self.module._prepare, self.jit_cls.run = launch, prepare, jit_run
        self.fn_cls.forward, self.fn_cls.backward = fwd, bwd


def breakdown(f, case, reps: int, on_gpu: bool) -> dict[str, float]:
    """Host ms per forward+backward call: the whole call, and inside our Function and its launches."""
    fwd_bwd, _ = calls(f, case)
    with HostBreakdown() as hb:
        whole = sum(host_issue_ms(fwd_bwd, reps, on_gpu))
    out = {"whole call": whole / reps}
    out.update({k: v * 1e3 / reps for k, v in sorted(hb.totals.items())})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default="jagged-1024", help="comma list of jagged-N or dense-N")
    ap.add_argument("--tokens", type=int, default=65536)
    ap.add_argument("--official", default=None, help="folder holding generative_recommenders/ (optional)")
    ap.add_argument("--host-reps", type=int, default=50)
    ap.add_argument("--cprofile", type=int, default=0, help="print the top N host functions (0: none)")
    ap.add_argument("--breakdown", action="store_true", help="host time inside our Function and launches")
    ap.add_argument("--out", default=None)
    ap.add_argument("--smoke", action="store_true", help="CPU interpreter, a tiny case: logic only")
    args = ap.parse_args(argv)
    on_gpu = torch.cuda.is_available() and not args.smoke
    if args.smoke:
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.cases, args.tokens, args.host_reps = "jagged-32", 64, 2
    impls = implementations(args.official)
    results, lines = (
        [],
        [
            "| case | impl | do_bench fwd+bwd ms | GPU alone (graph) fwd+bwd ms | do_bench fwd ms | GPU alone fwd ms | "
            "host issue fwd+bwd ms (min-max) | host issue fwd ms | inputs unchanged |",
            "|---|---|---|---|---|---|---|---|---|",
        ],
    )
    details = []
    for name in args.cases.split(","):
        result, detail = run_case(name, impls, args, on_gpu)
        results.append(result)
        details += detail
        for r in result["rows"]:
            lo, hi = r["host_ms_min_max"]
            lines.append(
                f"| {name} | {r['impl']} | {_num(r, 'do_bench_ms')} | {_num(r, 'gpu_ms')} | "
                f"{_num(r, 'do_bench_fwd_ms')} | {_num(r, 'gpu_fwd_ms')} | {r['host_ms']:.3f} ({lo:.3f}-{hi:.3f}) | "
                f"{_num(r, 'host_fwd_ms')} | {r.get('inputs_unchanged', '-')} |"
            )
    text = "\n".join(
        [f"H {H}, d {D}, bf16, causal, {args.tokens} tokens per call at most", ""] + lines + details
    )
    print(text + "\n")
    payload = {"machine": machine_info(), "args": vars(args), "cases": results}
    save_results(payload, "attention_host_time", [args.out], markdown=text + "\n")
    return 0 if all(r.get("inputs_unchanged", True) for res in results for r in res["rows"]) else 1


def _num(r: dict, key: str) -> str:
    return f"{r[key]:.3f}" if key in r else "-"


def run_case(name: str, impls: dict, args, on_gpu: bool) -> tuple[dict, list[str]]:
    """Every measurement of one case: (its results, its detail lines: kernels, profiles, breakdown)."""
    device = "cuda" if on_gpu else "cpu"
    case = make_case(name, args.tokens, device, torch.bfloat16 if on_gpu else torch.float32)
    rows = [measure(label, f, case, args, on_gpu) for label, f in impls.items()]
    passthrough = {"impl": "autograd alone (no kernel)"}
    fwd_bwd, _ = calls(lambda q, k, v, o, a, n: _Passthrough.apply(q, k, v), case)
    host = host_issue_ms(fwd_bwd, args.host_reps, on_gpu)
    passthrough["host_ms"], passthrough["host_ms_min_max"] = statistics.median(host), [min(host), max(host)]
    for row, f in zip(rows, impls.values()):
        profiles(row, f, case, args, on_gpu)
    split = breakdown(impls["ours"], case, args.host_reps, on_gpu) if args.breakdown else None
    lines = [f"\n{name}: {case[0].shape[0]} tokens, {case[4].numel() - 1} sequences"]
    for r in rows:
        if r.get("kernels"):
            lines += ["", f"{r['impl']}: kernels of one call (GPU us, launches per call)", "```"]
            lines += [f"{us:9.1f}  x{count}  {kname}" for kname, us, count in r["kernels"]]
            lines.append("```")
        if r.get("cprofile"):
            lines += [
                "",
                f"{r['impl']}: host functions over {args.host_reps} calls",
                "```",
                r["cprofile"],
                "```",
            ]
    if split:
        lines += ["", "ours: host ms per forward+backward call, with clocks around our code", "```"]
        lines += [f"{ms:8.3f}  {label}" for label, ms in split.items()]
        lines.append("```")
    return {"case": name, "rows": rows + [passthrough], "breakdown": split}, lines


if __name__ == "__main__":
    sys.exit(main())
