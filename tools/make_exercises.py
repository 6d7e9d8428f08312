"""Solutions are written once; the learner notebooks are generated from them.

    python tools/make_exercises.py                  # learner notebooks from every solution, executed
    python tools/make_exercises.py 02_attention     # only that one
    python tools/make_exercises.py --solutions      # first sync and execute the solution notebooks too
    python tools/make_exercises.py --no-execute     # write without executing
    python tools/make_exercises.py --check          # exit 1 if a learner notebook drifted from its solution

A solution is a jupytext percent file, `exercises/solutions/<stem>.py`, paired with the notebook
`exercises/solutions/<stem>.ipynb` (edit either side, then `jupytext --sync`). The `.py` is what this script
reads. Rules applied to every cell:

* inside code cells, the lines from `# BEGIN SOLUTION` to `# END SOLUTION` (inclusive) become one line,
  `raise NotImplementedError(...)`, at the indentation of the `# BEGIN SOLUTION` marker;
* a code cell whose first line is `# SOLUTION ONLY`, or a markdown cell containing `<!-- SOLUTION ONLY -->`,
  is dropped;
* everything else is copied unchanged, cell tags included (`nbval-check-output` marks the cells whose
  saved output nbval compares), so that explanations, checks and hints cannot drift.

Notebooks are executed with the small preset (as CI runs them) so that their saved outputs are what nbval
compares. The progress file is pointed at a temporary path while executing, so building never ticks the
author's own checklist.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jupytext
import nbformat
from jupytext.combine import combine_inputs_with_outputs

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
SOLUTIONS = EXERCISES / "solutions"
# the kernel `make setup` installs: a notebook saved with another display name opens as "modified"
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (hstu-tutorial)", "language": "python"}

BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION\b.*$")
END = re.compile(r"^[ \t]*# END SOLUTION\b.*$")
STUB = 'raise NotImplementedError("exercise: replace this line with your code")'


def strip_solution(source: str, where: str = "") -> str:
    """Replace every `# BEGIN SOLUTION` ... `# END SOLUTION` block by a `raise NotImplementedError`."""
    out, inside = [], False
    for lineno, line in enumerate(source.split("\n"), 1):
        m = BEGIN.match(line)
        if m:
            if inside:
                raise ValueError(f"{where} line {lineno}: nested '# BEGIN SOLUTION' (close the first block)")
            inside = True
            out.append(m.group("indent") + STUB)
            continue
        if END.match(line):
            if not inside:
                raise ValueError(f"{where} line {lineno}: '# END SOLUTION' without a '# BEGIN SOLUTION'")
            inside = False
            continue
        if not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '# BEGIN SOLUTION' is never closed by '# END SOLUTION'")
    return "\n".join(out)


def _solution_only(cell) -> bool:
    if cell.cell_type == "code":
        return cell.source.lstrip().startswith("# SOLUTION ONLY")
    return "<!-- SOLUTION ONLY -->" in cell.source


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def learner_cells(solution_nb, where: str = "") -> list:
    """The learner version's cells (fresh cells, no outputs, tags kept) for a solution notebook."""
    cells = []
    for i, cell in enumerate(solution_nb.cells):
        if _solution_only(cell):
            continue
        if cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(strip_solution(cell.source, f"{where} cell {i}"))
        elif cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        else:
            new = nbformat.v4.new_raw_cell(cell.source)
        if _tags(cell):
            new.metadata["tags"] = _tags(cell)
        cells.append(new)
    return cells


def cell_sources(nb) -> list[tuple[str, str, list[str]]]:
    """(type, source, tags) of every cell: what the sync tests compare."""
    return [(c.cell_type, c.source, _tags(c)) for c in nb.cells]


def solution_stems() -> list[str]:
    return sorted(p.stem for p in SOLUTIONS.glob("*.py"))


def read_solution(stem: str):
    """The solution notebook as its jupytext source `exercises/solutions/<stem>.py` describes it."""
    path = SOLUTIONS / f"{stem}.py"
    if not path.exists():
        raise FileNotFoundError(f"no solution source {path}: exercises are written as jupytext percent files")
    return jupytext.read(path)


def execute(path: Path, timeout: int = 900) -> None:
    """Run a notebook in place with the small preset, as CI does, keeping the author's checklist untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(
            os.environ,
            TRITON_INTERPRET="1",
            HSTU_PRESET=os.environ.get("HSTU_PRESET", "small"),
            HSTU_PROGRESS_FILE=str(Path(tmp) / "progress.json"),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "jupyter",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--inplace",
                f"--ExecutePreprocessor.timeout={timeout}",
                path.name,
            ],
            check=True,
            env=env,
            cwd=path.parent,
        )


def sync_solution(stem: str, run: bool = True) -> Path:
    """Write `solutions/<stem>.ipynb` from its `.py` (keeping outputs of unchanged cells), then execute it."""
    path = SOLUTIONS / f"{stem}.ipynb"
    nb = read_solution(stem)
    if path.exists():
        nb = combine_inputs_with_outputs(nb, nbformat.read(path, as_version=4))
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nbformat.write(nb, path)
    if run:
        execute(path)
    return path


def make_learner(stem: str, run: bool = True) -> Path:
    """Write `exercises/<stem>.ipynb` from the solution source, then execute it."""
    nb = nbformat.v4.new_notebook()
    nb.cells = learner_cells(read_solution(stem), f"{stem}.py")
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    path = EXERCISES / f"{stem}.ipynb"
    nbformat.write(nb, path)
    if run:
        execute(path)
    return path


def drift(stem: str) -> str | None:
    """None when exercises/<stem>.ipynb is exactly what the solution generates, else a description."""
    learner_path = EXERCISES / f"{stem}.ipynb"
    if not learner_path.exists():
        return f"{learner_path.relative_to(ROOT)} is missing"
    want = [(c.cell_type, c.source, _tags(c)) for c in learner_cells(read_solution(stem), stem)]
    have = cell_sources(nbformat.read(learner_path, as_version=4))
    if len(want) != len(have):
        return f"{stem}: the learner notebook has {len(have)} cells, the solution generates {len(want)}"
    for i, (w, h) in enumerate(zip(want, have)):
        if w != h:
            return (
                f"{stem}: cell {i} differs from the generated version (tags {w[2]} vs {h[2]}):\n"
                f"--- generated\n{w[1][:400]}\n--- found\n{h[1][:400]}"
            )
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stems", nargs="*", help="exercise notebooks (e.g. 02_attention); default: all")
    p.add_argument(
        "--solutions",
        action="store_true",
        help="first write the solution notebooks from their .py sources and execute them",
    )
    p.add_argument("--no-execute", action="store_true", help="write without executing")
    p.add_argument("--check", action="store_true", help="only report drift (exit 1 if any)")
    args = p.parse_args(argv)
    stems = args.stems or solution_stems()
    if args.check:
        problems = [d for d in (drift(s) for s in stems) if d]
        for d in problems:
            print(d)
        print("in sync" if not problems else "run: python tools/make_exercises.py")
        return 1 if problems else 0
    for stem in stems:
        if args.solutions:
            print(f"solution {stem} ...", flush=True)
            sync_solution(stem, run=not args.no_execute)
        print(f"exercise {stem} ...", flush=True)
        make_learner(stem, run=not args.no_execute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
