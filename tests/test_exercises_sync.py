"""Learner notebooks are generated from the solutions: fail if the two drift apart."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import make_exercises as mx  # noqa: E402

STEMS = mx.solution_stems()


def test_there_are_exercises():
    assert STEMS, "no solution sources (jupytext .py) found in exercises/solutions/"


@pytest.mark.parametrize("stem", STEMS)
def test_learner_notebook_matches_its_solution(stem):
    problem = mx.drift(stem)
    assert problem is None, f"{problem}\nRegenerate with: python tools/make_exercises.py {stem}"


@pytest.mark.parametrize("stem", STEMS)
def test_every_solution_block_became_a_stub(stem):
    solution = nbformat.read(mx.SOLUTIONS / f"{stem}.ipynb", as_version=4)
    learner = nbformat.read(mx.EXERCISES / f"{stem}.ipynb", as_version=4)
    n_blocks = sum(c.source.count("# BEGIN SOLUTION") for c in solution.cells if c.cell_type == "code")
    n_stubs = sum(c.source.count(mx.STUB) for c in learner.cells if c.cell_type == "code")
    assert n_blocks > 0 and n_stubs == n_blocks
    checked = [c for c in solution.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    kept = [c for c in learner.cells if "nbval-check-output" in c.metadata.get("tags", [])]
    assert len(kept) == len([c for c in checked if not mx._solution_only(c)]), "a checked cell lost its tag"
    text = "\n".join(c.source for c in learner.cells)
    assert "BEGIN SOLUTION" not in text and "SOLUTION ONLY" not in text


@pytest.mark.parametrize("stem", STEMS)
def test_learner_notebook_was_run_and_reports_not_attempted(stem):
    learner = nbformat.read(mx.EXERCISES / f"{stem}.ipynb", as_version=4)
    outputs = "".join(
        o.get("text", "") for c in learner.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert "not attempted yet" in outputs
    assert "Traceback" not in outputs and "✓" not in outputs


def test_strip_solution_rules():
    src = "def f(x):\n    y = 1\n    # BEGIN SOLUTION\n    return x + y\n    # END SOLUTION\n"
    assert mx.strip_solution(src) == f"def f(x):\n    y = 1\n    {mx.STUB}\n"
    with pytest.raises(ValueError, match="never closed"):
        mx.strip_solution("# BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without"):
        mx.strip_solution("x = 1\n# END SOLUTION\n")
