"""Every notebook is paired with a jupytext percent source: fail when the two drift apart.

The walkthrough (`notebooks/NN_name.ipynb` <-> `notebooks/NN_name.py`) and the exercise solutions
(`exercises/solutions/NN_name.ipynb` <-> `.py`) are edited on either side and kept in step with
`jupytext --sync`. Compared: cell types, sources and tags (the `nbval-check-output` tag decides what nbval
checks); outputs and other metadata are ignored.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from pathlib import Path

import jupytext
import nbformat
import pytest

from hstu_tutorial.training.run_files import RUN_FILES

ROOT = Path(__file__).resolve().parents[1]
PAIRED_DIRS = [ROOT / "notebooks", ROOT / "exercises" / "solutions"]
ALL_NOTEBOOK_DIRS = [*PAIRED_DIRS, ROOT / "exercises"]
CHECK_TAG = "nbval-check-output"


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def cells(path: Path) -> list[tuple[str, str, list[str]]]:
    """(type, source, tags) of every cell, as jupytext reads the file (`.ipynb` or percent `.py`)."""
    return [(c.cell_type, c.source, list(c.metadata.get("tags", []))) for c in jupytext.read(path).cells]


def drift(notebook: Path) -> str | None:
    """None when `notebook` and its paired `.py` hold the same cells, else what differs and how to fix it."""
    source = notebook.with_suffix(".py")
    fix = f"run: jupytext --sync {_rel(source)}"
    if not source.exists():
        return (
            f"{_rel(notebook)} has no paired source {_rel(source)}; "
            f"run: jupytext --set-formats ipynb,py:percent {_rel(notebook)}"
        )
    have, want = cells(notebook), cells(source)
    if len(have) != len(want):
        return f"{_rel(notebook)} has {len(have)} cells, its source {_rel(source)} {len(want)}; {fix}"
    for i, (h, w) in enumerate(zip(have, want)):
        if h != w:
            what = (
                "the cell type differs"
                if h[0] != w[0]
                else ("the tags differ" if h[1] == w[1] else "the source differs")
            )
            return (
                f"{_rel(notebook)} cell {i}: {what} from {_rel(source)}; {fix}\n"
                f"--- notebook\n{h[1][:300]}\n--- source\n{w[1][:300]}"
            )
    return None


PAIRED = sorted(p for d in PAIRED_DIRS for p in d.glob("*.ipynb"))
SOURCES = sorted(p for d in PAIRED_DIRS for p in d.glob("*.py"))
ALL = sorted(p for d in ALL_NOTEBOOK_DIRS for p in d.glob("*.ipynb"))


def _id(p: Path) -> str:
    return _rel(p)


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    assert len(PAIRED) >= 16, f"expected the 9 walkthrough and 7 solution notebooks, found {len(PAIRED)}"
    lonely = [_rel(p) for p in SOURCES if not p.with_suffix(".ipynb").exists()]
    assert not lonely, f"sources without a notebook (run jupytext --sync on them): {lonely}"


@pytest.mark.parametrize("notebook", PAIRED, ids=_id)
def test_notebook_matches_its_source(notebook):
    problem = drift(notebook)
    assert problem is None, problem


@pytest.mark.parametrize("notebook", PAIRED, ids=_id)
def test_pairing_metadata(notebook):
    meta = nbformat.read(notebook, as_version=4).metadata
    assert meta.get("jupytext", {}).get("formats") == "ipynb,py:percent", (
        f"{_rel(notebook)}: set the pairing with jupytext --set-formats ipynb,py:percent {_rel(notebook)}"
    )
    assert meta.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("notebook", ALL, ids=_id)
def test_checked_cells_are_tagged_and_have_saved_outputs(notebook):
    nb = nbformat.read(notebook, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    marked = [i for i, c in enumerate(code) if re.search(r"#\s*NBVAL_", c.source)]
    assert not marked, f"{_rel(notebook)} code cells {marked}: use the cell tag {CHECK_TAG!r}, not a comment"
    empty = [i for i, c in enumerate(code) if CHECK_TAG in c.metadata.get("tags", []) and not c.outputs]
    assert not empty, f"{_rel(notebook)} code cells {empty} are checked but have no saved output: execute it"


@functools.cache
def _tracked_files() -> tuple[str, ...]:
    """The repository's files (git ls-files), or every file under it when git cannot tell."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return tuple(out.splitlines())
    except (OSError, subprocess.CalledProcessError):
        return tuple(str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file())


@pytest.mark.parametrize("source", SOURCES, ids=_id)
def test_sources_import_from_the_package_only(source):
    text = source.read_text(encoding="utf-8")
    assert "sys.path" not in text, f"{_rel(source)} edits sys.path: import from hstu_tutorial instead"
    assert not re.search(r"^\s*(from|import) benchmarks\b", text, re.M), f"{_rel(source)} imports benchmarks"
    # Every Markdown document it names is one a reader has: a file of this repository or of a run folder.
    known = {Path(f).name for f in _tracked_files()} | set(RUN_FILES)
    unknown = sorted(set(re.findall(r"[\w.-]+\.md\b", text)) - known)
    assert not unknown, (
        f"{_rel(source)} cites {unknown}, which this repository does not hold: cite docs/ instead"
    )
    # A relative link that climbs out of its folder lands on a path of the repository (solutions are rendered
    # into exercises/, so their links are relative to that folder).
    base = ROOT / "exercises" if source.parent.name == "solutions" else source.parent
    for link in re.findall(r"(?:\.\./)+[\w./-]*\w", text):
        target = (base / link).resolve()
        assert target.is_relative_to(ROOT) and target.exists(), (
            f"{_rel(source)} links to {link}, not in the repository"
        )


def test_drift_is_detected(tmp_path):
    """The check itself can fail: an edited copy of a pair is reported, for sources and for tags."""
    notebook = PAIRED[0]
    for part in (notebook, notebook.with_suffix(".py")):
        shutil.copy(part, tmp_path / part.name)
    copy = tmp_path / notebook.name
    assert drift(copy) is None

    nb = nbformat.read(copy, as_version=4)
    nb.cells[-1].source += "\nedited on the notebook side only"
    nbformat.write(nb, copy)
    assert "the source differs" in drift(copy)

    shutil.copy(notebook, copy)
    nb = nbformat.read(copy, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.metadata["tags"] = [*code.metadata.get("tags", []), "edited"]
    nbformat.write(nb, copy)
    assert "the tags differ" in drift(copy)

    shutil.copy(notebook, copy)
    copy.with_suffix(".py").write_text(copy.with_suffix(".py").read_text() + "\n# %%\nx = 1\n")
    assert "cells" in drift(copy)
