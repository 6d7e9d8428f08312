"""Where datasets are read from: `$HSTU_DATA_DIR`, else the repository's `data/` folder."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where datasets live: $HSTU_DATA_DIR, else `<repo>/data`."""
    return Path(os.environ.get("HSTU_DATA_DIR") or REPO_ROOT / "data")
