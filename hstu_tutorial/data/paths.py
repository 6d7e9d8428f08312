"""Where datasets are read from, and the one folder the project writes generated data into.

Reading: `$HSTU_DATA_DIR`, else the repository's `data/` folder, or any `data_dir=` a caller passes. These
folders may be shared or read-only: the loaders only read them.

Writing (the synthetic dataset, a downloaded or extracted ML-1M): the cache folder `$HSTU_CACHE_DIR`, else
`$XDG_CACHE_HOME/hstu_tutorial`, else `~/.cache/hstu_tutorial`. The project writes only into a folder it
created (marked by a `.hstu_tutorial-cache` file) or an empty one it then marks, never into a folder that
already holds other files.
"""

from __future__ import annotations

import os
from pathlib import Path

from hstu_tutorial.data.errors import DataWriteError

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_MARKER = ".hstu_tutorial-cache"


def data_root() -> Path:
    """Where datasets are read from: $HSTU_DATA_DIR, else `<repo>/data`."""
    return Path(os.environ.get("HSTU_DATA_DIR") or REPO_ROOT / "data")


def cache_root() -> Path:
    """Where generated data goes: $HSTU_CACHE_DIR, else $XDG_CACHE_HOME/hstu_tutorial, else
    ~/.cache/hstu_tutorial (not created here: see `owned_folder`)."""
    if os.environ.get("HSTU_CACHE_DIR"):
        return Path(os.environ["HSTU_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "hstu_tutorial"


def owned_folder(folder) -> Path:
    """Return `folder` once it is safe to write into: created by the project (it carries the marker file),
    or created now, or empty (then marked). Raises `DataWriteError` for a folder that holds other files or
    cannot be written."""
    folder = Path(folder)
    marker = folder / CACHE_MARKER
    if marker.is_file():
        return folder
    fix = "set HSTU_CACHE_DIR to a folder of your own (it is created if missing)"
    if folder.is_dir() and any(folder.iterdir()):
        raise DataWriteError(
            f"{folder} already holds files that hstu_tutorial did not write, so it writes nothing there; "
            f"{fix}, or pass an empty or new folder"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text("Created by hstu_tutorial for generated data; safe to delete.\n")
    except OSError as e:
        reason = e.strerror or e
        raise DataWriteError(f"cannot write generated data into {folder} ({reason}); {fix}") from None
    return folder


def display_path(path) -> str:
    """A path as printed to a learner: relative to the repository, else under `~`, else a temporary folder's
    file named without the folder's random name; never the absolute path of the machine that ran it."""
    import tempfile

    p = Path(path).expanduser().absolute()
    bases = ((REPO_ROOT, ""), (Path.home(), "~/"), (Path(tempfile.gettempdir()), "<temporary folder>/"))
    for base, prefix in bases:
        try:
            rel = p.relative_to(base)
        except ValueError:
            continue
        if prefix.startswith("<"):  # /tmp/tmpXYZ/p.json: the random folder name says nothing
            rel = Path(*rel.parts[1:]) if len(rel.parts) > 1 else rel
        return f"{prefix}{rel}" if str(rel) != "." else (prefix.rstrip("/") or ".")
    return str(p)
