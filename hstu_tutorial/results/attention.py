"""Attention weights of a trained model: a few users' maps with titles, and statistics over all users."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SILU_MIN = -0.27846454276  # min over x of x * sigmoid(x), reached at x = -1.27846
USER_RULE = "the 3 smallest user ids whose test history holds 15 to 60 items"


def attention_users(
    dataset, n: int = 3, min_len: int = 15, max_len: int = 60, split: str = "test"
) -> list[int]:
    """The rule for the figure's users: the `n` smallest user ids whose `split` history holds min_len..max_len
    items."""
    s = dataset.split(split)
    ok = (s.lengths >= min_len) & (s.lengths <= max_len)  # (U,)
    return sorted(int(u) for u in s.user_ids[ok].tolist())[:n]


def _user_batch(dataset, user_id: int, split: str, device):
    s = dataset.split(split)
    index = (s.user_ids == user_id).nonzero().flatten()
    if len(index) != 1:
        raise ValueError(f"user {user_id} is not in the {split} split of {dataset.name}")
    return s.batch(index.cpu()).to(device)


def attention_record(model, dataset, users: Sequence[int], max_items: int = 12, split: str = "test") -> dict:
    """Attention weights of `model` (PyTorch path) for `users`: per layer x head, the (max_items, max_items)
    block over the last items of each history, with those items' titles and the held-out next item's title.
    """
    from hstu_tutorial.viz.attention import user_attention_maps

    device = next(model.parameters()).device
    titles = getattr(dataset, "item_titles", {}) or {}
    out = []
    for user_id in users:
        batch = _user_batch(dataset, user_id, split, device)
        d = user_attention_maps(model, batch, 0, max_items)
        out.append(
            {
                "user_id": int(user_id),
                "history_length": int(d["length"]),
                "items": [titles.get(int(i), f"item {int(i)}") for i in d["item_ids"]],
                "next_item": titles.get(int(batch.target_item_ids[0]), "?"),
                "maps": [
                    [[[round(float(x), 7) for x in row] for row in head] for head in layer]
                    for layer in d["maps"]
                ],
            }
        )
    return {
        "model": type(model).__name__,
        "norm": float(getattr(model, "norm", float("nan"))),
        "max_items": max_items,
        "split": split,
        "rule": USER_RULE,
        "users": out,
    }


def attention_summary(model, dataset, split: str = "test", batch_size: int = 128) -> dict:
    """Statistics of every layer x head's attention weights over all users of `split` (causal, real cells).

    Per head: fraction of negative weights, mean weight, mean on the diagonal and off it, mean row sum,
    min, max, the fraction of SiLU values (weight x n) below half of SiLU's minimum, and the mean weight by
    relative distance i - j (with the number of cells at each distance).
    """
    device = next(model.parameters()).device
    norm = float(getattr(model, "norm", 1.0))
    s = dataset.split(split)
    U = len(s)
    acc = None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, U, batch_size):
            batch = s.batch(torch.arange(start, min(U, start + batch_size))).to(device)
            _, maps = model(batch, return_attention=True)  # list of (B, H, N, N)
            B, H, N = maps[0].shape[0], maps[0].shape[1], maps[0].shape[-1]
            i = torch.arange(N, device=device)
            dist = i[:, None] - i[None, :]  # (N, N)
            real = batch.lengths.to(device)[:, None] > i[None, :]  # (B, N)
            cells = (dist >= 0)[None] & real[:, :, None]  # (B, N, N): causal, query and key real
            if acc is None:
                acc = [[_zeros(N, device) for _ in range(H)] for _ in maps]
            d_cells = dist.expand(B, N, N)[cells]  # (M,)
            for layer, a in enumerate(maps):
                for h in range(H):
                    w = a[:, h].float()[cells]  # (M,)
                    st = acc[layer][h]
                    st["count"] += w.numel()
                    st["sum"] += w.sum().item()
                    st["neg"] += (w < 0).sum().item()
                    st["deep"] += (w * norm < 0.5 * SILU_MIN).sum().item()
                    st["min"] = min(st["min"], w.min().item())
                    st["max"] = max(st["max"], w.max().item())
                    st["by_dist"] += torch.bincount(d_cells, weights=w.double(), minlength=N)[:N]
                    st["n_by_dist"] += torch.bincount(d_cells, minlength=N)[:N]
                    st["rows"] += int(real.sum())
    model.train(was_training)
    layers = []
    for layer, heads in enumerate(acc):
        out = []
        for h, st in enumerate(heads):
            nd = st["n_by_dist"].cpu()
            bd = st["by_dist"].cpu()
            diag_n, diag_sum = int(nd[0]), float(bd[0])
            off_n, off_sum = st["count"] - diag_n, st["sum"] - diag_sum
            last = int((nd > 0).nonzero().max()) + 1 if bool((nd > 0).any()) else 0
            out.append(
                {
                    "head": h,
                    "cells": st["count"],
                    "frac_negative": st["neg"] / st["count"],
                    "frac_below_half_silu_min": st["deep"] / st["count"],
                    "mean": st["sum"] / st["count"],
                    "mean_diagonal": diag_sum / max(diag_n, 1),
                    "mean_off_diagonal": off_sum / max(off_n, 1),
                    "mean_row_sum": st["sum"] / max(st["rows"], 1),
                    "min": st["min"],
                    "max": st["max"],
                    "mean_by_distance": [
                        _sig(float(b) / max(int(n), 1)) for b, n in zip(bd[:last], nd[:last])
                    ],
                    "cells_by_distance": [int(n) for n in nd[:last]],
                }
            )
        layers.append({"layer": layer, "heads": out})
    return {
        "model": type(model).__name__,
        "norm": norm,
        "silu_min": SILU_MIN,
        "weight_floor": SILU_MIN / norm,
        "split": split,
        "users": U,
        "layers": layers,
    }


def _zeros(N: int, device) -> dict:
    return {
        "count": 0,
        "sum": 0.0,
        "neg": 0,
        "deep": 0,
        "rows": 0,
        "min": math.inf,
        "max": -math.inf,
        "by_dist": torch.zeros(N, dtype=torch.float64, device=device),
        "n_by_dist": torch.zeros(N, dtype=torch.int64, device=device),
    }


def _sig(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")
