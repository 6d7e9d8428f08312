"""How a training step's time and memory grow with sequence length and depth: HSTU vs SASRec, jagged/padded.

One encoder forward + backward (no optimizer) on a batch of random histories holding about the same
number of padded positions at every N (B = tokens // N), so that a cost linear in N per token shows up as
a rising curve and a cost per token that does not depend on N as a flat one. Histories are jagged with
lengths uniform in [1, N]; the "padded" series runs the same B histories all padded to N (what a padded
batch computes). Series:

* HSTU, Triton jagged kernel (GPU only): attention work sum_b L_b^2 d, no padding;
* HSTU, Triton on padded batches: B N^2 d;
* HSTU, PyTorch attention: the reference's padded einsum, B N^2 d plus N^2-sized intermediates;
* SASRec: padded softmax attention plus a feed-forward network.

The fit: time = a * sum_b L_b^2 * d  +  b * sum_b L_b * d  +  c, least squares over the lengths of one
series, with L_b the lengths each part computes on: N wherever a series pads (attention of the PyTorch
paths, everything in SASRec and in the padded series), the true lengths elsewhere. With B * N fixed,
sum_b L_b * d of a padded series is the same at every N: its N d term and the constant c cannot be told
apart, only their sum (the fit then puts it in c). It shows which term dominates where; the notebook
draws both terms next to the measured points.
"""

from __future__ import annotations

import time
import traceback

import numpy as np
import torch

from hstu_tutorial.accumulation import SavedBytes
from hstu_tutorial.perf.measure import (
    machine_info,
    markdown_table,
    peak_mib,
    random_jagged_batch,
    reset_peak,
    sync,
    time_call,
)

SERIES = {
    # name: (model, attention_impl, padded input, attention computed on padded N x N, rest on padded B x N)
    "HSTU Triton, jagged": ("hstu", "triton", False, False, False),
    "HSTU Triton, padded": ("hstu", "triton", True, True, True),
    "HSTU PyTorch attention": ("hstu", "pytorch", False, True, False),  # pads inside attention only
    "SASRec": ("sasrec", "pytorch", False, True, True),  # pads everything (as the reference's SASRec)
    # diagnostic, not in the default sweep: the Triton kernel without the relative attention bias
    "HSTU Triton, jagged, no bias": ("hstu-norab", "triton", False, False, False),
}
DEFAULT_SERIES = ["HSTU Triton, jagged", "HSTU Triton, padded", "HSTU PyTorch attention", "SASRec"]


def build(model: str, impl: str, N: int, num_blocks: int, num_items: int, device):
    """A fresh encoder of the series' `model` kind, in training mode on `device`."""
    from hstu_tutorial.modules import hstu_encoder, sasrec_encoder

    if model == "hstu-norab":
        from hstu_tutorial.modules.hstu_transducer import HSTUEncoder

        m = HSTUEncoder(
            num_items, num_blocks=num_blocks, max_seq_len=N, attention_impl=impl, dropout=0.0, use_rab=False
        )
    elif model == "hstu":
        m = hstu_encoder(num_items, num_blocks=num_blocks, max_seq_len=N, attention_impl=impl, dropout=0.0)
    else:
        m = sasrec_encoder(num_items, num_blocks=num_blocks, max_seq_len=N, dropout=0.0)
    return m.to(device).train()


def measure_point(
    series: str, N: int, num_blocks: int, tokens: int, device, iters: int, num_items: int = 3952, d: int = 50
) -> dict:
    """One (series, N, depth) point: fwd+bwd time (median ms), peak memory above the model, activations."""
    model, impl, padded, attn_padded, rest_padded = SERIES[series]
    B = max(1, tokens // N)
    g = torch.Generator().manual_seed(N)
    lengths = torch.randint(1, N + 1, (B,), generator=g)  # (B,) uniform in [1, N]
    if padded:
        lengths = torch.full((B,), N)
    enc = build(model, impl, N, num_blocks, num_items, device)
    batch = random_jagged_batch(lengths, N, num_items, device)
    T = int(lengths.sum())
    grad = torch.randn(T, d, device=device)  # (T, D) a fixed upstream gradient

    def step():
        enc.zero_grad(set_to_none=True)
        out = enc(batch)  # (T, D)
        out.backward(grad)

    step()  # warm-up: kernels compile/autotune here
    sync(device)
    reset_peak(device)
    base = peak_mib(device)
    t = time_call(step, device, warmup=1, iters=iters)
    peak = peak_mib(device)
    with SavedBytes(enc) as saved:
        out = enc(batch)
    del out
    L = lengths.double()  # (B,) what each part of the model computes on:
    L_attn = torch.full_like(L, N) if attn_padded else L
    L_rest = torch.full_like(L, N) if rest_padded else L
    return {
        "series": series,
        "N": N,
        "blocks": num_blocks,
        "B": B,
        "tokens": T,
        "sum_L2_d": float((L_attn**2).sum()) * d,
        "sum_L_d": float(L_rest.sum()) * d,
        "ms": t["median_ms"],
        "ms_min": t["min_ms"],
        "peak_mib": None if peak is None else peak - (base or 0.0),
        "activations_mib": saved.mib,
    }


def fit_terms(points: list[dict]) -> dict:
    """Least-squares `ms = a*sum_L2_d + b*sum_L_d + c` (a, b, c >= 0 by dropping negative terms)."""
    X = np.array([[p["sum_L2_d"], p["sum_L_d"], 1.0] for p in points])
    y = np.array([p["ms"] for p in points])
    active = [0, 1, 2]
    coef = np.zeros(3)
    for _ in range(3):  # a tiny non-negative least squares: refit without the terms that came out < 0
        scale = np.abs(X[:, active]).max(axis=0)
        sol, *_ = np.linalg.lstsq(X[:, active] / scale, y, rcond=None)
        sol = sol / scale
        if (sol >= 0).all():
            coef[:] = 0
            coef[active] = sol
            break
        active = [a for a, s in zip(active, sol) if s >= 0] or [2]
    pred = X @ coef
    return {
        "a_ms_per_L2d": coef[0],
        "b_ms_per_Ld": coef[1],
        "c_ms": coef[2],
        "quadratic_share_at_max_N": float(coef[0] * X[-1, 0] / max(pred[-1], 1e-12)),
        "rel_rmse": float(np.sqrt(np.mean((pred - y) ** 2)) / max(np.mean(y), 1e-12)),
    }


def run_scaling(
    preset_name: str,
    lengths=None,
    depths=None,
    depth_N=None,
    tokens=None,
    iters=None,
    series=None,
    time_budget_s: float = 1e9,
    depth_sweep: bool = True,
    log=print,
) -> dict:
    """Measure every series over the length sweep (2 blocks) and the depth sweep; returns the saved payload.

    `preset_name` "full" runs the GPU sizes on a GPU; any other name (or no GPU) runs CPU sizes."""
    cuda = torch.cuda.is_available() and preset_name == "full"
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # the trainer's default
    lengths = lengths or ([256, 512, 1024, 2048, 4096, 8192] if cuda else [32, 64, 128, 256])
    depths = depths or ([1, 2, 4, 8] if cuda else [1, 2, 4])
    depth_N = depth_N or (1024 if cuda else 64)
    tokens = tokens or (32768 if cuda else 1024)
    iters = iters or (5 if cuda else 2)
    names = series or [s for s in DEFAULT_SERIES if cuda or SERIES[s][1] != "triton"]
    t0 = time.perf_counter()
    points, errors = [], []

    def one(name, N, blocks, sweep):
        if time.perf_counter() - t0 > time_budget_s:
            errors.append(f"{name} N={N} blocks={blocks}: skipped (time budget)")
            return
        try:
            p = measure_point(name, N, blocks, tokens, device, iters)
            p["sweep"] = sweep
            points.append(p)
            log(
                f"  {sweep:6s} {name:24s} N={N:5d} blocks={blocks} B={p['B']:4d}: {p['ms']:8.2f} ms, "
                f"peak {p['peak_mib'] or 0:8.0f} MiB, activations {p['activations_mib']:8.1f} MiB"
            )
        except Exception as err:  # noqa: BLE001 - e.g. out of memory at the largest N: record, go on
            errors.append(f"{name} N={N} blocks={blocks}: {type(err).__name__}: {str(err)[:200]}")
            log(traceback.format_exc(limit=2))
        finally:
            if cuda:
                torch.cuda.empty_cache()

    for name in names:
        for N in lengths:
            one(name, N, 2, "length")
    for name in names if depth_sweep else []:
        for blocks in depths:
            one(name, depth_N, blocks, "depth")
    fits = {}
    for name in names:
        pts = [p for p in points if p["series"] == name and p["sweep"] == "length"]
        if len(pts) >= 3:
            fits[name] = fit_terms(pts)
    return {
        "benchmark": "scaling",
        "machine": machine_info(device),
        "preset": preset_name,
        "setup": {
            "tokens_per_batch": tokens,
            "iters": iters,
            "d": 50,
            "heads": 1,
            "depth_N": depth_N,
            "lengths": "uniform in [1, N]; padded series: all N",
            "precision": "fp32 (TF32 on a GPU)",
            "step": "encoder forward + backward, no optimizer",
        },
        "points": points,
        "fits": fits,
        "errors": errors,
        "seconds": time.perf_counter() - t0,
    }


def to_markdown(payload: dict) -> str:
    """A `run_scaling` payload as Markdown: both sweeps, the fits, what could not be measured."""
    m = payload["machine"]
    s = payload["setup"]
    lines = [
        "# Scaling with sequence length and depth",
        "",
        f"Measured {m['date_utc']} on {m['device']} (torch {m['torch']}), preset {payload['preset']}; "
        f"{s['step']}, about {s['tokens_per_batch']} padded positions per batch (B = tokens // N), "
        f"lengths {s['lengths']}, {s['precision']}, D = d = 50, 1 head, Triton tiles "
        f"{payload.get('triton_tiles', 'autotuned')}. Peak = memory above the model.",
        "",
        "## Length sweep (2 blocks)",
        "",
    ]
    cols = [
        ("series", "series", ""),
        ("N", "N", "d"),
        ("B", "B", "d"),
        ("ms", "ms / step", ".2f"),
        ("peak_mib", "peak MiB", ".0f"),
        ("activations_mib", "activations MiB", ".1f"),
    ]
    lines.append(markdown_table([p for p in payload["points"] if p["sweep"] == "length"], cols))
    lines += ["", f"## Depth sweep (N = {s['depth_N']})", ""]
    cols[1] = ("blocks", "blocks", "d")
    lines.append(markdown_table([p for p in payload["points"] if p["sweep"] == "depth"], cols))
    if payload["fits"]:
        lines += ["", "## Fit: ms = a * sum(L^2) * d + b * sum(L) * d + c", ""]
        rows = [{"series": k, **v} for k, v in payload["fits"].items()]
        lines.append(
            markdown_table(
                rows,
                [
                    ("series", "series", ""),
                    ("a_ms_per_L2d", "a", ".3e"),
                    ("b_ms_per_Ld", "b", ".3e"),
                    ("c_ms", "c (ms)", ".3f"),
                    ("quadratic_share_at_max_N", "N^2 share at largest N", ".2f"),
                    ("rel_rmse", "rel. RMSE", ".3f"),
                ],
            )
        )
    if payload["errors"]:
        lines += ["", "Not measured:", *[f"- {e}" for e in payload["errors"]]]
    return "\n".join(lines) + "\n"
