"""A dataset's fingerprint: one short hash of its splits, the same on any machine for the same data.

A run records the fingerprint of the data it trained and evaluated on (results.json), so that its numbers
can later be tied to a dataset: `dataset_fingerprint(ds) == results["dataset_fingerprint"]` says "these
metrics were measured on exactly these splits". The hash covers the name, the protocol, the history window,
the catalogue and every array of the train, valid and test splits (as little-endian int64 bytes, so the
byte order of the machine does not matter); hashing ML-1M's splits takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields

import numpy as np
import torch

__all__ = ["dataset_fingerprint"]

_CACHE_ATTR = "_fingerprint"  # a dataset's splits never change after loading: hash them once


def _int64_bytes(t: torch.Tensor) -> bytes:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype="<i8").tobytes()


def dataset_fingerprint(dataset) -> str:
    """A 16-hex-digit hash of `dataset`'s name, sizes, catalogue and train/valid/test arrays."""
    cached = getattr(dataset, _CACHE_ATTR, None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    splits = [dataset.split(s) for s in ("train", "valid", "test")]
    header = {
        "name": dataset.name,
        "protocol": dataset.protocol,
        "max_seq_len": dataset.max_seq_len,
        "num_items": int(dataset.num_items),
        "catalogue": int(dataset.catalogue.numel()),
        "users": [len(s) for s in splits],
        "tokens": [s.num_tokens for s in splits],
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(_int64_bytes(dataset.catalogue))
    for s in splits:
        for f in fields(s):
            value = getattr(s, f.name)
            if isinstance(value, torch.Tensor):
                h.update(f"{s.name}.{f.name}:{value.numel()}".encode())  # field boundaries are hashed too
                h.update(_int64_bytes(value))
    digest = h.hexdigest()[:16]
    try:
        setattr(dataset, _CACHE_ATTR, digest)
    except AttributeError:  # a read-only object: recompute next time
        pass
    return digest
