"""Build a notebook from a list of cells and execute it in place (how the walkthrough is authored).

    from tools.nbbuild import md, code, build
    build("notebooks/02_attention_math.ipynb", [md("# Title"), code("x = 1")])

`build` writes the notebook, then executes it with the small preset (as CI does) so that the stored
outputs are those nbval compares for cells marked `# NBVAL_CHECK_OUTPUT`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat


def md(source: str):
    return nbformat.v4.new_markdown_cell(source.strip("\n"))


def code(source: str):
    return nbformat.v4.new_code_cell(source.strip("\n"))


def build(path: str | Path, cells: list, execute: bool = True, timeout: int = 900) -> Path:
    """Write `cells` to `path` (a python3 kernel notebook) and, by default, execute it in place."""
    path = Path(path)
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    if execute:
        env = dict(os.environ, TRITON_INTERPRET="1", HSTU_PRESET=os.environ.get("HSTU_PRESET", "small"))
        subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
             f"--ExecutePreprocessor.timeout={timeout}", str(path)],
            check=True, env=env, cwd=path.parent,
        )
    return path
