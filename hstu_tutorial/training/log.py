"""The trainer's one-line progress notes on standard output."""

from __future__ import annotations

__all__ = ["note"]


def note(msg: str) -> None:
    """Print `msg` with the trainer's prefix, flushed at once (visible in logs of long runs)."""
    print(f"[hstu_tutorial.train] {msg}", flush=True)
