"""Benchmark: jagged Triton HSTU attention vs PyTorch baselines (forward and forward+backward).

    PYTHONUNBUFFERED=1 PYTHONPATH=. python3 benchmarks/bench_attention.py --out $OUT      # on a GPU
    PYTHONPATH=. python benchmarks/bench_attention.py --dry-run --out /tmp/bench         # CPU: logic only

Cases (bf16, causal, ~49k-65k tokens per call): max length N in 256..8192 with H=4, d=128,
`jagged-N` (lengths uniform in [N/2, N]) and `dense-N` (all N); and the ML-1M shape (B=128, H=1,
N=200, d=50, lengths from data/ml-1m-u2999 when present), with and without the relative bias.
Implementations: the Triton kernel (dQ by a second kernel, and by atomics), the padded PyTorch
reference, the jagged PyTorch reference, torch.compile of the padded reference, and
scaled_dot_product_attention (softmax, padded: a speed yardstick, not the same math).

FLOPs are counted the same way for all: per head and sequence of real length L, two matmuls of
2 L^2 d, halved for causal; forward+backward = 3.5x forward. Padding work is not credited.

Checks, with autotuning on (the default options): after each Triton timing, the timed tensors
themselves are checked. The inputs (q, k, v, offsets, and the bias inputs) must be bit-identical to
clones taken before timing, and one more call on those same tensors must match a float64 reference
computed from the clones (relative error <= 1e-2 bf16; on the first sequences only for N > 2048, where
a float64 reference of the whole batch does not fit). The `check` column of the table reports it.
Why checks before timing were not enough: on an NVIDIA H200 (torch 2.11, Triton 3.6, 2026-11-30) the
dK/dV autotuner zeroed its `reset_to_zero` arguments between timing runs, and one of them was the
caller's q (a placeholder for an unused pointer). A check that runs before the tuner, on fresh tensors,
with autotune off, or in the interpreter (fixed tiles, no tuner) sees correct kernels; only a check of
the tensors the tuned calls actually touched, after tuning, sees the damage. A small fixed-tile
correctness suite (fp32 with tf32x3 dots, bf16, bias, non-causal, atomic dQ) still runs first.
One table is printed; JSON and markdown go to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import hstu_tutorial.ops.triton.hstu_attention_autograd as tha
from hstu_tutorial.ops import (
    RelativeAttentionBias,
    get_options,
    hstu_attention,
    jagged_to_padded,
    padded_hstu_attention,
    time_bucket,
    use_options,
)
from hstu_tutorial.ops.triton import triton_hstu_attention, triton_hstu_attention_rel_bias

REPO = Path(__file__).resolve().parents[1]

# The official HSTU kernel on the same card (NVIDIA H200): case -> (fwd ms, fwd+bwd ms)
OFFICIAL = {
    "jagged-1024": (0.173, 0.856),
    "dense-1024": (0.256, 1.074),
    "jagged-4096": (0.504, 3.036),
    "dense-4096": (0.782, 4.806),
    "jagged-8192": (1.060, 6.636),
    "dense-8192": (1.502, 9.245),
    "ml1m": (0.077, 0.78),
}


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp(min=1e-30)).item()


def offsets_of(lengths):
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def ml1m_lengths(B, N, gen):
    """B history lengths as in ML-1M training batches: per-user counts (minus the 2 held-out items),
    capped at N, from data/ml-1m-u2999 when present; otherwise a log-normal stand-in."""
    path = REPO / "data" / "ml-1m-u2999" / "ratings.dat"
    if path.exists():
        counts = {}
        with open(path, encoding="latin-1") as f:
            for line in f:
                u = line.split("::", 1)[0]
                counts[u] = counts.get(u, 0) + 1
        pool = torch.tensor([min(c - 2, N) for c in counts.values() if c > 2])
        src = "ml-1m-u2999 user history lengths"
    else:
        pool = torch.exp(torch.randn(4000, generator=gen) * 1.0 + 4.5).clamp(1, N).long()
        src = "log-normal stand-in (data/ml-1m-u2999 not found)"
    return pool[torch.randint(len(pool), (B,), generator=gen)], src


def make_case(name, lengths, H, d, N, dtype, device, gen, bias=False):
    lengths = lengths.long()
    offsets = offsets_of(lengths).to(device)
    T = int(lengths.sum())
    scale = d**-0.25  # scores of order 1
    q, k, v = (torch.randn(T, H, d, generator=gen) * (scale if i < 2 else 1.0) for i in range(3))
    case = dict(
        name=name,
        lengths=lengths.to(device),
        offsets=offsets,
        T=T,
        B=len(lengths),
        H=H,
        d=d,
        N=N,
        max_len=int(lengths.max()),
        q=q.to(device, dtype),
        k=k.to(device, dtype),
        v=v.to(device, dtype),
        bias=bias,
    )
    if bias:
        ts = torch.cumsum(torch.randint(1, 200000, (T,), generator=gen), 0)
        case["ts"] = ts.to(device)
        case["nts"] = (ts + torch.randint(0, 10**6, (T,), generator=gen)).to(device)
        case["rab_module"] = RelativeAttentionBias(max_len=211, num_buckets=128).to(device)
    return case


def flops_fwd(case, causal=True):
    L = case["lengths"].double()
    f = (2 * L * L * case["d"] * 2 * case["H"]).sum().item()  # two matmuls of 2 L^2 d per head
    return f / 2 if causal else f


# ---- implementations: each returns fn(q, k, v) -> out (T, H, d) jagged, or padded for padded ones ----
def impl_triton(case, mode="kernel"):
    off, m = case["offsets"], case["max_len"]

    def fn(q, k, v):
        with use_options(dq_mode=mode):  # the backward follows the forward's options
            if case["bias"]:
                rm = case["rab_module"]
                return triton_hstu_attention_rel_bias(
                    q, k, v, off, case["ts"], case["nts"], rm.pos_w, rm.ts_w, norm=211.0, max_len=m
                )
            return triton_hstu_attention(q, k, v, off, max_len=m)

    return fn


def _padded_bias(case, N):
    rm = case["rab_module"]
    return rm(
        jagged_to_padded(case["ts"], case["offsets"], N), jagged_to_padded(case["nts"], case["offsets"], N)
    )


def impl_padded(case, compiled=False):
    lengths, N = case["lengths"], case["N"]
    norm = 211.0 if case["bias"] else None

    def fn(qp, kp, vp):
        rab = _padded_bias(case, N) if case["bias"] else None
        return padded_hstu_attention(qp, kp, vp, lengths, rab=rab, norm=norm)

    if compiled:
        # forward-only (no_grad) and forward+backward calls alternate: each is a recompile, so the
        # default limit of 8 would silently fall back to eager after a few lengths
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        return torch.compile(fn, dynamic=False)
    return fn


def impl_jagged_ref(case):
    off = case["offsets"]
    norm = 211.0 if case["bias"] else None

    def fn(q, k, v):
        rab = (
            case["rab_module"].jagged(case["ts"], case["nts"], off, case["max_len"]) if case["bias"] else None
        )
        return hstu_attention(q, k, v, off, rab=rab, norm=norm)

    return fn


def impl_sdpa(case):
    def fn(qh, kh, vh):  # (B, H, N, d)
        return F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)

    return fn


def padded_inputs(case, layout="bnhd"):
    N = case["N"]
    xs = [jagged_to_padded(x, case["offsets"], N) for x in (case["q"], case["k"], case["v"])]  # (B, N, H, d)
    if layout == "bhnd":
        xs = [x.transpose(1, 2).contiguous() for x in xs]
    return xs


def _empty_cache():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _host_timer(run, warmup, rep, return_mode="median"):
    # --dry-run on a CPU: one timed call (numbers meaningless; checks the script's logic)
    t0 = time.perf_counter()
    run()
    return (time.perf_counter() - t0) * 1e3


def time_fn(fn, inputs, bwd, quick, timed=None):
    """Median ms of fn (forward, or forward+backward). `timed`, a dict, receives the very tensors the
    timed calls used (xs) and the output gradient (g), for checking them afterwards."""
    if torch.cuda.is_available():
        from triton.testing import do_bench
    else:
        do_bench = _host_timer

    xs = [x.detach().requires_grad_(bwd) for x in inputs]
    if bwd:
        out = fn(*xs)
        g = torch.randn_like(out)

        def run():
            o = fn(*xs)
            torch.autograd.grad(o, xs, g)
    else:

        def run():
            with torch.no_grad():
                fn(*xs)

    run()
    _sync()
    warm, rep = (5, 20) if quick else (10, 50)
    ms = do_bench(run, warmup=warm, rep=rep, return_mode="median")
    if timed is not None:
        timed.update(xs=xs, g=g if bwd else None)
    return ms


# ---- correctness on the device -------------------------------------------------------------------
def _sub_case(case, sub):
    """The first `sub` sequences of a case (views of its tensors)."""
    if sub is None:
        return case
    lengths = case["lengths"][:sub]
    T = int(lengths.sum())
    c = dict(
        case,
        lengths=lengths,
        offsets=offsets_of(lengths),
        T=T,
        B=sub,
        max_len=int(lengths.max()),
        q=case["q"][:T],
        k=case["k"][:T],
        v=case["v"][:T],
    )
    if case["bias"]:
        c.update(ts=case["ts"][:T], nts=case["nts"][:T])
    return c


def input_snapshot(case):
    """Clones of every input a Triton call reads, taken before it runs."""
    names = ["q", "k", "v", "offsets"] + (["ts", "nts"] if case["bias"] else [])
    snap = {n: case[n].detach().clone() for n in names}
    if case["bias"]:
        rm = case["rab_module"]
        snap.update(pos_w=rm.pos_w.detach().clone(), ts_w=rm.ts_w.detach().clone())
    return snap


def check_tensors(case, mode, xs, before, g=None, sub=None):
    """Check the Triton call on the tensors `xs` (q, k, v) that earlier calls used: inputs still equal
    to `before` (input_snapshot, bitwise), and one more call's output and gradients against a float64
    reference computed from `before`, on the first `sub` sequences if given. Returns (errs, nan, changed)."""
    if case["bias"] and sub is not None:
        raise ValueError("bias cases are checked on the whole batch (their weight gradients sum over it)")
    live = dict(q=xs[0], k=xs[1], v=xs[2], offsets=case["offsets"])
    if case["bias"]:
        rm = case["rab_module"]
        live.update(ts=case["ts"], nts=case["nts"], pos_w=rm.pos_w, ts_w=rm.ts_w)
    changed = [n for n, t in before.items() if not torch.equal(live[n].detach(), t)]
    q, k, v = (x.detach().requires_grad_() for x in xs)
    params = [q, k, v] + ([live["pos_w"], live["ts_w"]] if case["bias"] and sub is None else [])
    with use_options(poison_outputs=True):
        out = impl_triton(case, mode)(q, k, v)
    g = torch.randn_like(out) if g is None else g
    grads = list(torch.autograd.grad(out, params, g))
    sc = _sub_case(case, sub)
    T = sc["T"]
    if sub is not None:  # rows of the first sequences depend on those sequences only
        out, g, grads = out[:T], g[:T], [x[:T] for x in grads]
    ref_params = [before[n][:T].double().requires_grad_() for n in ("q", "k", "v")]
    ref_params += [before[n].double().requires_grad_() for n in ("pos_w", "ts_w") if len(params) > 3]
    norm = 211.0 if case["bias"] else float(case["max_len"])  # n of the call: the whole batch's longest
    case = sc
    rab = None
    if case["bias"]:  # the bias formula in float64, differentiable in pos_w and ts_w
        pos_w, ts_w = ref_params[3], ref_params[4]
        M, P = case["max_len"], (pos_w.numel() + 1) // 2
        t = jagged_to_padded(case["ts"], case["offsets"], M)  # (B, M)
        tn = jagged_to_padded(case["nts"], case["offsets"], M)
        ar = torch.arange(M, device=t.device)
        bucket = time_bucket(tn[:, :, None] - t[:, None, :], ts_w.numel() - 1)  # (B, M, M)
        rab = pos_w[P - 1 + ar[None, :] - ar[:, None]][None] + ts_w[bucket]  # (B, M, M)
    ref = hstu_attention(*ref_params[:3], case["offsets"], rab=rab, norm=norm)
    ref_grads = torch.autograd.grad(ref, ref_params, g.double())
    names = ["out", "dq", "dk", "dv", "dpos_w", "dts_w"]
    errs = {n: rel_err(a, b) for n, a, b in zip(names, [out, *grads], [ref, *ref_grads])}
    nans = any(torch.isnan(x).any().item() for x in [out, *grads])
    return errs, nans, changed


def check_case(case, mode="kernel", sub=None):
    """Relative errors of a fresh Triton call against float64 (on a sub-batch if `sub`), and NaNs."""
    before = input_snapshot(case)
    errs, nans, changed = check_tensors(case, mode, [case["q"], case["k"], case["v"]], before, sub=sub)
    return errs, nans or bool(changed)


def correctness_suite(device, gen, log, small=False, only=""):
    """fp32 (tf32), bf16, bias, non-causal and atomic-dQ checks on modest shapes, one fixed config each
    (the autotuned configs are checked case by case in the benchmark)."""
    with use_options(poison_outputs=True, autotune=False):
        return _correctness_suite(device, gen, log, small, only)


def _correctness_suite(device, gen, log, small, only):
    rows = []
    N, Nm, B, Bm = (24, 20, 3, 4) if small else (1024, 200, 8, 128)
    specs = [
        ("fp32 jagged-1024 H4 d128", torch.float32, B, N, 4, 128, False, "kernel"),
        ("bf16 jagged-1024 H4 d128", torch.bfloat16, B, N, 4, 128, False, "kernel"),
        ("bf16 jagged-1024 atomic dQ", torch.bfloat16, B, N, 4, 128, False, "atomic"),
        ("fp32 ml1m relbias d50", torch.float32, Bm, Nm, 1, 50, True, "kernel"),
        ("bf16 ml1m relbias d50", torch.bfloat16, Bm, Nm, 1, 50, True, "kernel"),
    ]
    for label, dtype, B, N, H, d, bias, mode in specs:
        if only not in label:
            continue
        lengths = (
            torch.randint(N // 2, N + 1, (B,), generator=gen) if not bias else ml1m_lengths(B, N, gen)[0]
        )
        lengths[0] = 1  # a length-1 sequence
        case = make_case(label, lengths, H, d, N, dtype, device, gen, bias=bias)
        t0 = time.time()
        errs, nans = check_case(case, mode)
        tol = 1e-3 if dtype == torch.float32 else 1e-2
        ok = (not nans) and max(errs.values()) <= tol
        rows.append(
            dict(check=label, tol=tol, ok=ok, nan=nans, **{k: float(f"{v:.3g}") for k, v in errs.items()})
        )
        log(
            f"[check] {label}: {'OK' if ok else 'FAIL'} max rel err {max(errs.values()):.2e} (tol {tol:.0e})"
            f" {errs} nan={nans} ({time.time() - t0:.1f} s)"
        )
    # explicit rab tensor with gradient, and non-causal, fp32
    Nr = 30 if small else 300
    lengths = torch.randint(Nr // 3, Nr + 1, (6,), generator=gen)
    case = make_case("rab", lengths, 2, 64, Nr, torch.float32, device, gen)
    q, k, v = (x.detach().requires_grad_() for x in (case["q"], case["k"], case["v"]))
    for causal in (True, False) if only in "fp32 rab-tensor" else ():
        rab = (torch.randn(6, Nr, Nr, generator=gen) * 0.5).to(device).requires_grad_()
        out = triton_hstu_attention(q, k, v, case["offsets"], rab=rab, causal=causal, alpha=0.8)
        g = torch.randn_like(out)
        grads = torch.autograd.grad(out, (q, k, v, rab), g)
        ref_in = [x.detach().double().requires_grad_() for x in (q, k, v, rab)]
        ref = hstu_attention(*ref_in[:3], case["offsets"], rab=ref_in[3], causal=causal, alpha=0.8)
        ref_grads = torch.autograd.grad(ref, ref_in, g.double())
        errs = {
            n: rel_err(a, b)
            for n, a, b in zip(["out", "dq", "dk", "dv", "drab"], [out, *grads], [ref, *ref_grads])
        }
        ok = max(errs.values()) <= 1e-3
        label = f"fp32 rab-tensor causal={causal}"
        rows.append(dict(check=label, tol=1e-3, ok=ok, **{k2: float(f"{v2:.3g}") for k2, v2 in errs.items()}))
        log(f"[check] {label}: {'OK' if ok else 'FAIL'} {errs}")
    return rows


def bench_case(case, args, log, t_start):
    res = dict(
        case=case["name"],
        B=case["B"],
        H=case["H"],
        d=case["d"],
        N=case["N"],
        tokens=case["T"],
        bias=case["bias"],
        flops_fwd=flops_fwd(case),
    )
    jag = [case["q"], case["k"], case["v"]]
    impls = [
        ("triton", impl_triton(case, "kernel"), jag),
        ("triton_atomic_dq", impl_triton(case, "atomic") if case["d"] == 128 else None, jag),
    ]
    # torch.compile costs tens of seconds per new shape: a few lengths only
    compile_ok = case["N"] in (1024, 4096, 8192, 200) and not args.no_compile
    big = case["B"] * case["H"] * case["N"] ** 2 * 2 > 8e9  # > 8 GB per padded score tensor
    over_time = time.time() - t_start > args.time_budget
    pad = padded_inputs(case) if not over_time else None
    impls += [
        ("pytorch_padded", None if big or over_time else impl_padded(case), pad),
        ("pytorch_jagged", None if big or over_time else impl_jagged_ref(case), jag),
        (
            "torch_compile_padded",
            impl_padded(case, True) if (compile_ok and not big and not over_time) else None,
            pad,
        ),
        (
            "sdpa_softmax_padded",
            None if over_time else impl_sdpa(case),
            padded_inputs(case, "bhnd") if not over_time else None,
        ),
    ]
    # Triton: checked after timing, on the very tensors the timed (and tuned) calls used
    check_sub = None if case["N"] <= 2048 else 2  # a float64 reference of the whole batch does not fit
    for name, fn, inputs in impls:
        fn = fn if (not args.impls or name in args.impls.split(",")) else None
        before = input_snapshot(case) if fn is not None and name.startswith("triton") else None
        timed = {}
        for bwd in (False, True):
            key = f"{name}_{'fwdbwd' if bwd else 'fwd'}_ms"
            if fn is None:
                res[key] = "skipped" if name != "triton_atomic_dq" else "-"
                continue
            try:
                t0 = time.time()
                res[key] = time_fn(fn, inputs, bwd, args.quick, timed=timed)
                log(
                    f"  {case['name']:>14} {name:>22} {'fwd+bwd' if bwd else 'fwd':>7}: {res[key]:.3f} ms"
                    f" ({time.time() - t0:.1f} s)"
                )
            except torch.OutOfMemoryError:
                res[key] = "skipped (OOM)"
                _empty_cache()
            except Exception as e:  # a baseline that fails must not sink the run
                res[key] = f"error: {type(e).__name__}: {str(e)[:200]}"
                log(f"  {case['name']} {name}: {res[key]}")
        if before is not None:
            mode = "atomic" if name == "triton_atomic_dq" else "kernel"
            if "xs" in timed:
                errs, nan, changed = check_tensors(case, mode, timed["xs"], before, timed["g"], check_sub)
            else:  # the timing failed: report it as a failed check
                errs, nan, changed = {"out": float("inf")}, False, []
            ok = not nan and not changed and max(errs.values()) <= 1e-2
            res[f"{name}_check"] = dict(
                ok=ok,
                max_rel_err=max(errs.values()),
                nan=nan,
                inputs_changed=changed,
                on=f"{check_sub or case['B']} sequences",
                errs=errs,
            )
            log(
                f"  {case['name']:>14} {name:>22}   check: {'PASS' if ok else 'FAIL'} max rel err "
                f"{max(errs.values()):.1e}, inputs {'CHANGED ' + str(changed) if changed else 'unchanged'}, "
                f"nan={nan}"
            )
    for name, *_ in impls:
        for tag, mult in (("fwd", 1.0), ("fwdbwd", 3.5)):
            ms = res[f"{name}_{tag}_ms"]
            if isinstance(ms, float):
                res[f"{name}_{tag}_tflops"] = res["flops_fwd"] * mult / (ms * 1e-3) / 1e12
    return res


def print_table(results, log):
    cols = [
        "triton",
        "triton_atomic_dq",
        "pytorch_padded",
        "pytorch_jagged",
        "torch_compile_padded",
        "sdpa_softmax_padded",
    ]
    short = ["triton", "tr-atomic", "padded", "jagged", "compile", "sdpa"]
    lines = [
        "| case | pass | " + " | ".join(short) + " | official | check |",
        "|" + " --- |" * (len(cols) + 4),
    ]
    for r in results:
        for tag, mult in (("fwd", 0), ("fwdbwd", 1)):
            cells = []
            for c in cols:
                ms = r.get(f"{c}_{tag}_ms")
                cells.append(
                    f"{ms:.3f} ms / {r[f'{c}_{tag}_tflops']:.0f}"
                    if isinstance(ms, float)
                    else str(ms).split(":")[0]
                )
            off = OFFICIAL.get(r["case"])
            off_s = (
                f"{off[mult]:.3f} ms / {r['flops_fwd'] * (3.5 if mult else 1) / off[mult] / 1e9:.0f}"
                if off
                else "-"
            )
            chk = [r.get(f"{c}_check") for c in ("triton", "triton_atomic_dq")]
            chk_s = " ".join(("PASS" if c["ok"] else "FAIL") + f" {c['max_rel_err']:.0e}" for c in chk if c)
            lines.append(
                f"| {r['case']} | {'fwd+bwd' if mult else 'fwd'} | "
                + " | ".join(cells)
                + f" | {off_s} | "
                + (chk_s or "-")
                + " |"
            )
    table = "\n".join(lines)
    log(
        "\nms / TFLOP/s (bf16, causal; fwd+bwd FLOPs = 3.5x fwd); check: the timed tensors after timing\n"
        + table
    )
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.environ.get("OUT", "benchmarks/results"))
    ap.add_argument("--lengths", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--tokens", type=int, default=65536, help="tokens per call (dense); B = tokens // N")
    ap.add_argument("--quick", action="store_true", help="shorter timing loops")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    ap.add_argument("--skip-checks", action="store_true")
    ap.add_argument("--checks", default="", help="run only the checks whose label contains this")
    ap.add_argument("--cases", default="", help="comma list of case names (default: all)")
    ap.add_argument("--impls", default="", help="comma list of implementations (default: all)")
    ap.add_argument("--tag", default="attention_h200", help="output file stem")
    ap.add_argument("--time-budget", type=float, default=400.0, help="seconds, then baselines are skipped")
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="tiny shapes on the CPU (Triton interpreter): checks this script, times nothing real",
    )
    args = ap.parse_args()
    t_start = time.time()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(s):
        print(s, flush=True)
        log_lines.append(s)

    gen = torch.Generator().manual_seed(0)
    dry = args.dry_run or not torch.cuda.is_available()
    if dry:  # the Triton interpreter on a CPU: tiny shapes, the whole code path, meaningless timings
        args.lengths, args.tokens, args.no_compile, args.quick = "16,32", 64, True, True
    device = "cpu" if dry else "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    meta = dict(
        device=torch.cuda.get_device_name() if not dry else f"CPU dry run ({platform.processor()})",
        torch=torch.__version__,
        triton=tha.triton.__version__,  # triton via the package: it sets TRITON_INTERPRET on a CPU
        python=platform.python_version(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        command=" ".join(sys.argv),
        fp32_dot=get_options().fp32_precision or "tf32x3 in the checks, tf32 (TF32 on) in the timings",
        autotune=get_options().autotune,
    )
    log(f"[bench] {meta}")
    # fp32 operands: the checks hold the kernels' accurate default (tf32x3, TF32 off); timings use TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    checks = [] if args.skip_checks else correctness_suite(device, gen, log, small=dry, only=args.checks)
    torch.backends.cuda.matmul.allow_tf32 = True
    log(f"[bench] checks done at {time.time() - t_start:.0f} s")

    results = []

    def save(final=False):
        # after every case, so that a run cut short still leaves its numbers behind
        configs = {
            name: {str(k): str(v) for k, v in getattr(kern, "cache", {}).items()}
            for name, kern in (("fwd", tha._fwd_tuned), ("dkdv", tha._dkdv_tuned), ("dq", tha._dq_tuned))
        }
        table = print_table(results, log if final else (lambda s: None))
        meta["seconds"] = round(time.time() - t_start, 1)
        payload = dict(meta=meta, checks=checks, results=results, autotuned=configs, table_md=table)
        (out_dir / f"{args.tag}.json").write_text(json.dumps(payload, indent=1, default=str))
        (out_dir / f"{args.tag}.md").write_text(
            f"# HSTU attention benchmark ({meta['device']}, {meta['date']})\n\n`{meta['command']}`\n\n"
            "ms / TFLOP/s, bf16, causal, H=4 d=128 (ml1m: B=128 H=1 N=200 d=50); check: the timed\n"
            "tensors, after timing with autotune on (inputs unchanged, output and gradients vs float64).\n\n"
            + table
            + "\n"
        )
        (out_dir / "bench_log.txt").write_text("\n".join(log_lines))

    # ML-1M first, then the long lengths the goal is about; --time-budget skips baselines later on
    Bm, Nm = (4, 20) if dry else (128, 200)
    lengths, src = ml1m_lengths(Bm, Nm, gen)
    wanted = set(filter(None, args.cases.split(",")))
    for bias in (False, True):
        if wanted and ("ml1m" + ("-relbias" if bias else "")) not in wanted:
            continue
        case = make_case(
            "ml1m" + ("-relbias" if bias else ""), lengths, 1, 50, Nm, torch.bfloat16, device, gen, bias=bias
        )
        r = bench_case(case, args, log, t_start)
        r.update(lengths_from=src)
        results.append(r)
        save()
    Ns = [int(x) for x in args.lengths.split(",")]
    for N in sorted(Ns, key=lambda n: (n < 1024, n)):
        B = max(1, args.tokens // N)
        for kind, lengths in (
            ("jagged", torch.randint(N // 2, N + 1, (B,), generator=gen)),
            ("dense", torch.full((B,), N)),
        ):
            if wanted and f"{kind}-{N}" not in wanted:
                continue
            case = make_case(f"{kind}-{N}", lengths, 4, 128, N, torch.bfloat16, device, gen)
            r = bench_case(case, args, log, t_start)
            results.append(r)
            log(
                f"[bench] {case['name']}: triton fwd+bwd {r['triton_fwdbwd_ms']} ms at "
                f"{time.time() - t_start:.0f} s"
            )
            del case
            _empty_cache()
            save()
    results.sort(key=lambda r: (r["case"].startswith("ml1m"), r["N"], r["case"]))
    save(final=True)
    bad = [c["check"] for c in checks if not c["ok"]] + [
        f"{r['case']} {name}"
        for r in results
        for name in ("triton", "triton_atomic_dq")
        if f"{name}_check" in r and not r[f"{name}_check"]["ok"]
    ]
    log(f"[bench] done in {meta['seconds']} s; failed checks: {bad or 'none'}")
    (out_dir / "bench_log.txt").write_text("\n".join(log_lines))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
