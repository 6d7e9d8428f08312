"""The STU layer against a Transformer layer: forward + backward time of one layer, bf16, jagged batches.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python benchmarks/bench_layers.py               # GPU, about 2-3 minutes
    PYTHONPATH=. python benchmarks/bench_layers.py --table-from benchmarks/results/h200_2026-12-01/layers.json
    PYTHONPATH=. python benchmarks/bench_layers.py --smoke --out /tmp/layers        # CPU, seconds: logic only

The paper's abstract (arXiv 2402.17152) says HSTU "is 5.3x to 15.2x faster than FlashAttention2-based
Transformers on 8192 length sequences". This script times the two layers alone, on the same tokens:

* STU (`hstu_tutorial.modules.stu.STULayer`, Triton jagged attention kernel), with and without the
  relative attention bias (formed inside the kernel from its position and time-gap tables);
* a pre-norm Transformer layer: LayerNorm -> QKV -> causal softmax attention -> output projection ->
  residual -> LayerNorm -> FFN (4 d, GELU) -> residual. Attention is `scaled_dot_product_attention`
  restricted to the FlashAttention backend, on `torch.nested` jagged tensors when that runs (torch 2.5+:
  the flash kernel's variable-length form, no padding); otherwise on batches padded to N (the padding at
  the end, so causal masking keeps it out of every real row). The JSON's `attention_path` says which.

Shapes: d = 512 with H = 8 heads of 64 (a usual Transformer head width, and the head width the Triton
kernel's default tiles fit), N = 1024..8192, plus the ML-1M shape (d = 50, one head, N = 200). Every batch
holds about `--tokens` (32768) tokens: B = tokens / (0.75 N) histories with lengths uniform in [N/2, N],
the same lengths for both layers; tokens/s counts real tokens only. Both layers run under bf16 autocast
(fp32 weights: the trainer's `bf16 = true`), in training mode with dropout 0, and backward from a fixed
upstream gradient. Per case: warm-up calls, then the median (and min) of `--iters` (>= 20) calls timed
with CUDA events; afterwards the timed output, input gradient and weight gradients are checked to be
finite, and the Transformer's jagged attention is checked on the first sequence against dense attention
(fp32, first 512 rows). Triton tiles are the fixed defaults unless `--autotune`; `--tuned-at 8192` adds
STU rows with tuned tiles at those N (about a minute of tuning each).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from hstu_tutorial.perf.measure import MIB, machine_info, markdown_table, random_jagged_batch, save_results

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "h200_2026-12-01"
PAPER_RANGE = (5.3, 15.2)  # the abstract's speed-up over FlashAttention2-based Transformers at N = 8192
LAYERS = {
    "transformer": "Transformer layer (SDPA) + FFN",
    "stu_rab": "STU layer, relative bias",
    "stu": "STU layer, no bias",
}
CHECK_TOL = 5e-2  # bf16: a jagged attention further than this from dense fp32 has its boundaries wrong


class TransformerLayer(nn.Module):
    """Pre-norm Transformer layer on jagged `x (T, D)` -> `(T, D)` (causal self-attention + FFN 4D, GELU)."""

    def __init__(self, d: int, num_heads: int, attention_path: str = "njt"):
        super().__init__()
        self.d, self.num_heads, self.attention_path = d, num_heads, attention_path
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def attend(self, q, k, v, layout):
        """Causal softmax attention of jagged `q, k, v (T, H, dh)` -> `(T, H, dh)` (flash on a GPU)."""
        # On a GPU only the flash kernel may run (an error, not a silent fallback, if it cannot).
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]) if q.is_cuda else contextlib.nullcontext():
            if self.attention_path == "njt":
                lmin, lmax = layout.min_len, layout.max_len

                def nested(t):  # (T, H, dh) -> (B, H, j, dh), j ragged
                    nt = torch.nested.nested_tensor_from_jagged(
                        t, layout.offsets, min_seqlen=lmin, max_seqlen=lmax
                    )
                    return nt.transpose(1, 2)

                # Flash on nested tensors takes head widths that are multiples of 8 (ML-1M's is 50): zero
                # columns change no dot product; the scale stays 1/sqrt(dh) of the true width.
                dh, extra = q.shape[-1], -q.shape[-1] % 8
                if extra:
                    q, k, v = (F.pad(t, (0, extra)) for t in (q, k, v))  # (T, H, dh + extra)
                out = F.scaled_dot_product_attention(
                    nested(q), nested(k), nested(v), is_causal=True, scale=dh**-0.5
                )
                return out.transpose(1, 2).values()[..., :dh]  # (T, H, dh)
            qp, kp, vp = (layout.pad(t).transpose(1, 2) for t in (q, k, v))  # (B, H, N, dh)
            out = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)  # padding at the end: masked
            return layout.unpad(out.transpose(1, 2))  # (T, H, dh)

    def qkv_heads(self, x):
        """`x (T, D)` -> q, k, v `(T, H, dh)` each."""
        T, H = x.shape[0], self.num_heads
        return self.qkv(self.ln1(x)).view(T, 3, H, self.d // H).unbind(1)

    def forward(self, x, layout):
        T = x.shape[0]
        a = self.attend(*self.qkv_heads(x), layout)  # (T, H, dh)
        x = x + self.proj(a.reshape(T, self.d))  # (T, D)
        return x + self.ff2(F.gelu(self.ff1(self.ln2(x))))  # (T, D)


def case_lengths(N: int, tokens: int, seed: int = 0) -> torch.Tensor:
    """Lengths `(B,)` uniform in [N/2, N] with B = round(tokens / (0.75 N)) (about `tokens` in all)."""
    g = torch.Generator().manual_seed(seed + N)
    B = max(1, round(tokens / (0.75 * N)))
    return torch.randint(N // 2, N + 1, (B,), generator=g)


def build_layer(kind: str, d: int, H: int, N: int, impl: str, attention_path: str):
    """A fresh layer of `kind` ("transformer", "stu_rab", "stu") in training mode, dropout 0."""
    if kind == "transformer":
        return TransformerLayer(d, H, attention_path)
    from hstu_tutorial.modules.stu import STULayer

    return STULayer(
        embedding_dim=d,
        num_heads=H,
        dqk=d // H,
        dv=d // H,
        dropout=0.0,
        norm=float(N),
        num_positions=N + 1,
        use_rab=kind == "stu_rab",
        attention_impl=impl,
    )


def time_fwd_bwd(layer, x, grad, layout, autocast, device, warmup: int, iters: int) -> dict:
    """Median/min ms of forward + backward over `iters` calls (CUDA events on a GPU), and a finite check."""
    cuda = device.type == "cuda"

    def call():
        with autocast:
            out = layer(x, layout)  # (T, D)
        out.backward(grad)
        return out

    for _ in range(warmup):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        call()
    times, events = [], []
    for _ in range(iters):
        layer.zero_grad(set_to_none=True)
        x.grad = None
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = call()
            end.record()
            events.append((start, end))
        else:
            t0 = time.perf_counter()
            out = call()
            times.append((time.perf_counter() - t0) * 1e3)
    if cuda:
        torch.cuda.synchronize(device)
        times = [s.elapsed_time(e) for s, e in events]
    timed = [out, x.grad] + [p.grad for p in layer.parameters() if p.grad is not None]
    finite = all(bool(torch.isfinite(t).all()) for t in timed)
    return {"ms": statistics.median(times), "ms_min": min(times), "ms_max": max(times), "finite": finite}


def check_transformer_attention(layer, x, layout, autocast, rows: int = 512) -> float:
    """Relative error of the layer's jagged attention on sequence 0's first `rows` rows against dense
    causal attention in fp32 (a causal prefix needs only that prefix's keys)."""
    with torch.no_grad(), autocast:
        q, k, v = layer.qkv_heads(x)  # (T, H, dh)
        out = layer.attend(q, k, v, layout)  # (T, H, dh)
    n = min(rows, int(layout.lengths[0]))
    q0, k0, v0 = (t[:n].float().transpose(0, 1) for t in (q, k, v))  # (H, n, dh)
    with sdpa_kernel([SDPBackend.MATH]):
        ref = F.scaled_dot_product_attention(q0, k0, v0, is_causal=True).transpose(0, 1)  # (n, H, dh)
    return ((out[:n].float() - ref).norm() / ref.norm().clamp(min=1e-30)).item()


def run_case(name, N, d, H, tokens, args, device, log=print) -> list[dict]:
    """Every layer at one shape: the same lengths, input and upstream gradient for each."""
    from hstu_tutorial.ops import use_options
    from hstu_tutorial.ops.jagged_tensors import JaggedLayout

    cuda = device.type == "cuda"
    lengths = case_lengths(N, tokens)
    batch = random_jagged_batch(lengths, N, num_items=100, device=device, seed=N)

    def layout_for(layer):
        # The PyTorch STU path with a bias reads time buckets from the layout; Triton forms them in-kernel.
        rab = getattr(layer, "rab", None) if impl == "pytorch" else None
        layout = JaggedLayout.from_batch(batch, N, rab=rab)
        layout.min_len, layout.max_len = int(lengths.min()), int(lengths.max())  # host values: no sync
        return layout

    T = int(lengths.sum())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, d, generator=g).to(device).requires_grad_(True)  # (T, D)
    grad = torch.randn(T, d, generator=g).to(device)  # (T, D) fixed upstream gradient
    dtype = torch.bfloat16 if cuda and not args.fp32 else None
    autocast = torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()
    impl = "triton" if cuda else "pytorch"
    kinds = [("transformer", False), ("stu_rab", args.autotune), ("stu", args.autotune)]
    if N in args.tuned_at and cuda and not args.autotune:
        kinds += [("stu_rab", True), ("stu", True)]
    rows = []
    for kind, tuned in kinds:
        row = dict(
            case=name,
            N=N,
            d=d,
            H=H,
            B=len(lengths),
            tokens=T,
            layer=kind,
            tuned_tiles=tuned if kind != "transformer" else None,
        )
        paths = (
            [args.attention_path]
            if args.attention_path != "auto"
            else (["njt", "padded"] if cuda else ["padded"])
        )
        for path in paths if kind == "transformer" else [impl]:
            layer = build_layer(kind, d, H, N, impl, path).to(device).train()
            layout = layout_for(layer)
            try:
                if cuda:
                    torch.cuda.empty_cache()
                    torch.cuda.synchronize(device)
                    base = torch.cuda.memory_allocated(device)
                    torch.cuda.reset_peak_memory_stats(device)
                with use_options(autotune=tuned):
                    row.update(
                        time_fwd_bwd(layer, x, grad, layout, autocast, device, args.warmup, args.iters)
                    )
                row["peak_mib"] = (torch.cuda.max_memory_allocated(device) - base) / MIB if cuda else None
                row["attention_path"] = path
                row["parameters"] = sum(p.numel() for p in layer.parameters())
                if kind == "transformer":
                    err = check_transformer_attention(layer, x, layout, autocast)
                    row["attention_check_rel_err"] = err
                    if not err <= CHECK_TOL:
                        raise RuntimeError(f"attention differs from dense fp32 attention by {err:.2e}")
                row["status"] = "ok"
                break
            except Exception as err:  # noqa: BLE001 - e.g. no flash kernel for nested tensors: next path
                row.setdefault("failed_paths", []).append(f"{path}: {type(err).__name__}: {str(err)[:300]}")
                row["status"] = "failed"
            finally:
                del layer
                x.grad = None
        row["tokens_per_s"] = T / (row["ms"] / 1e3) if row.get("status") == "ok" else None
        rows.append(row)
        label = LAYERS[kind] + (", tuned tiles" if tuned and kind != "transformer" else "")
        log(
            f"  {name:7s} N={N:5d} d={d:3d} H={H} B={len(lengths):4d} T={T:6d} {label:34s} "
            + (
                f"{row['ms']:8.3f} ms (min {row['ms_min']:.3f}), peak {row['peak_mib'] or 0:7.0f} MiB, "
                f"finite={row['finite']}, path={row['attention_path']}"
                if row["status"] == "ok"
                else f"FAILED {row.get('failed_paths')}"
            )
        )
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Per case and STU variant: Transformer ms / STU ms (> 1: the STU layer is faster)."""
    out = []
    for case in dict.fromkeys(r["case"] for r in rows):
        part = [r for r in rows if r["case"] == case and r.get("status") == "ok"]
        tf = next((r for r in part if r["layer"] == "transformer"), None)
        for r in part:
            if r["layer"] != "transformer" and tf is not None:
                out.append(
                    dict(
                        case=case,
                        N=r["N"],
                        d=r["d"],
                        H=r["H"],
                        stu=r["layer"],
                        tuned_tiles=r["tuned_tiles"],
                        transformer_ms=tf["ms"],
                        stu_ms=r["ms"],
                        ratio=tf["ms"] / r["ms"],
                    )
                )
    return out


def to_markdown(payload: dict) -> str:
    """Times per layer, then the Transformer/STU ratio next to the paper's figure."""
    m = payload["machine"]
    rows = [
        dict(r, what=LAYERS[r["layer"]] + (", tuned tiles" if r.get("tuned_tiles") else ""))
        for r in sorted(payload["rows"], key=lambda r: (r["d"], r["N"]))
    ]
    for r in rows:
        r["ms_or_status"] = f"{r['ms']:.3f}" if r.get("status") == "ok" else r.get("status")
        r["mtok"] = None if r.get("tokens_per_s") is None else r["tokens_per_s"] / 1e6
        r["check"] = (
            "-" if r.get("attention_check_rel_err") is None else f"{r['attention_check_rel_err']:.1e}"
        )
    lines = [
        f"# The STU layer against a Transformer layer ({m['device']}, {m['date_utc'][:10]})",
        "",
        f"Measured {m['date_utc']} on {m['device']} (torch {m['torch']}, triton {m.get('triton')}). One layer, "
        f"forward + backward, {payload['precision']}, about {payload['tokens']} tokens per batch (lengths uniform "
        f"in [N/2, N]), median of {payload['iters']} calls after {payload['warmup']} warm-up calls. Transformer "
        "attention: `scaled_dot_product_attention`, flash backend, path per row (`njt`: `torch.nested` jagged "
        "tensors, no padding; `padded`: padded to N). 'finite': the timed outputs and gradients; 'check': "
        "the Transformer's jagged attention against dense fp32 attention on the first sequence.",
        "",
        markdown_table(
            rows,
            [
                ("case", "case", ""),
                ("N", "N", ""),
                ("d", "d", ""),
                ("H", "H", ""),
                ("B", "B", ""),
                ("tokens", "tokens", ""),
                ("what", "layer", ""),
                ("attention_path", "path", ""),
                ("ms_or_status", "fwd+bwd ms", ""),
                ("mtok", "M tokens/s", ".2f"),
                ("peak_mib", "peak MiB", ".0f"),
                ("parameters", "parameters", ","),
                ("finite", "finite", ""),
                ("check", "check", ""),
            ],
        ),
        "",
        "## Transformer time / STU time (> 1: the STU layer is faster)",
        "",
        markdown_table(
            [
                dict(r, stu_what=LAYERS[r["stu"]] + (", tuned tiles" if r["tuned_tiles"] else ""))
                for r in sorted(payload["ratios"], key=lambda r: (r["d"], r["N"]))
            ],
            [
                ("case", "case", ""),
                ("N", "N", ""),
                ("d", "d", ""),
                ("stu_what", "STU variant", ""),
                ("transformer_ms", "Transformer ms", ".3f"),
                ("stu_ms", "STU ms", ".3f"),
                ("ratio", "ratio", ".2f"),
            ],
        ),
        "",
        f"The paper's abstract: {PAPER_RANGE[0]}x to {PAPER_RANGE[1]}x faster than FlashAttention2-based "
        "Transformers on 8192 length sequences (its own kernels and model settings; see docs/hardware.md for "
        "why the two figures differ).",
        "",
        "Command:",
        "",
        "    " + payload.get("command", ""),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help="folder for layers.json and layers.md")
    p.add_argument("--lengths", default="1024,2048,4096,8192")
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--no-ml1m", action="store_true", help="skip the ML-1M-shape row (d=50, H=1, N=200)")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--attention-path", default="auto", choices=["auto", "njt", "padded"])
    p.add_argument("--autotune", action="store_true", help="tuned Triton tiles for every STU row")
    p.add_argument("--tuned-at", default="8192", help="N values that also get tuned-tile STU rows ('' none)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    p.add_argument("--time-budget", type=float, default=220.0, help="start no case after this many seconds")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, PyTorch paths: the logic only")
    p.add_argument("--table-from", default="", help="print the Markdown of a saved layers.json")
    args = p.parse_args(argv)
    if args.table_from:
        print(to_markdown(json.loads(Path(args.table_from).read_text())), end="")
        return 0
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        args.lengths, args.d, args.heads, args.tokens = "32,64", 32, 2, 256
        args.iters, args.warmup = max(3, min(args.iters, 3)), 1
    elif args.iters < 20:
        p.error(f"--iters {args.iters}: use at least 20 timed calls for a median")
    args.tuned_at = {int(n) for n in args.tuned_at.split(",") if n.strip()}
    cases = [] if args.no_ml1m else [("ml1m", 200 if not args.smoke else 16, 50 if not args.smoke else 10, 1)]
    lengths = sorted({int(n) for n in args.lengths.split(",") if n.strip()})
    lengths = lengths[-1:] + lengths[:-1]  # the longest first: the paper's N, not to be cut by the budget
    cases += [(f"N={n}", n, args.d, args.heads) for n in lengths]
    bad = [(n, d, h) for _, n, d, h in cases if d % h]
    if bad:
        p.error(f"d must be a multiple of the head count; got (N, d, H) = {bad}")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as the trainer; bf16 matmuls ignore it
    shown = "python benchmarks/bench_layers.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {
        "benchmark": "layers",
        "machine": machine_info(device),
        "command": shown.strip(),
        "precision": "bf16 autocast (fp32 weights)" if device.type == "cuda" and not args.fp32 else "fp32",
        "tokens": args.tokens,
        "iters": args.iters,
        "warmup": args.warmup,
        "autotune": args.autotune,
        "paper_range_at_8192": list(PAPER_RANGE),
        "rows": [],
        "ratios": [],
        "skipped": [],
    }
    t0 = time.perf_counter()
    for name, N, d, H in cases:
        if time.perf_counter() - t0 > args.time_budget:
            payload["skipped"].append(name)
            print(f"  {name}: skipped (over --time-budget {args.time_budget:.0f} s)", flush=True)
            continue
        payload["rows"] += run_case(
            name, N, d, H, args.tokens, args, device, log=lambda s: print(s, flush=True)
        )
        payload["ratios"] = ratios(payload["rows"])
        save_results(payload, "layers", [args.out], to_markdown(payload))
    print()
    print(to_markdown(payload))
    bad = [r for r in payload["rows"] if r.get("status") == "ok" and not r["finite"]]
    if bad:
        print(f"WARNING: non-finite outputs or gradients in {len(bad)} row(s): their times do not count")
    return 0 if not bad and all(math.isfinite(r["ratio"]) for r in payload["ratios"]) else 1


if __name__ == "__main__":
    sys.exit(main())
