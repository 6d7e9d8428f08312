"""Solutions are written once; the learner notebooks are generated from them.

    python tools/make_exercises.py                 # learner notebooks from exercises/solutions/*.ipynb
    python tools/make_exercises.py --build 02_attention   # first (re)build that solution notebook from
                                                   # exercises/solutions/src/02_attention.py, then its
                                                   # learner version
    python tools/make_exercises.py --check         # exit 1 if a learner notebook drifted from its solution

Rules applied to every cell of a solution notebook (`exercises/solutions/<stem>.ipynb`):

* inside code cells, the lines from `# BEGIN SOLUTION` to `# END SOLUTION` (inclusive) become one line,
  `raise NotImplementedError(...)`, at the indentation of the `# BEGIN SOLUTION` marker;
* a code cell whose first line is `# SOLUTION ONLY`, or a markdown cell containing `<!-- SOLUTION ONLY -->`,
  is dropped;
* everything else is copied unchanged, so that explanations, checks and hints cannot drift.

Both versions are executed with the small preset (as CI runs them) so their stored outputs are what nbval
compares. The progress file is pointed at a temporary path while executing, so building never ticks the
author's own checklist.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ROOT / "exercises"
SOLUTIONS = EXERCISES / "solutions"
SOURCES = SOLUTIONS / "src"

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


def learner_cells(solution_nb, where: str = "") -> list:
    """The learner version's cells (fresh cells, no outputs) for a solution notebook."""
    cells = []
    for i, cell in enumerate(solution_nb.cells):
        if _solution_only(cell):
            continue
        if cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(strip_solution(cell.source, f"{where} cell {i}")))
        elif cell.cell_type == "markdown":
            cells.append(nbformat.v4.new_markdown_cell(cell.source))
        else:
            cells.append(nbformat.v4.new_raw_cell(cell.source))
    return cells


def cell_sources(nb) -> list[tuple[str, str]]:
    """(type, source) of every cell: what the sync test compares."""
    return [(c.cell_type, c.source) for c in nb.cells]


def solution_stems() -> list[str]:
    return sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))


def _build(path: Path, cells: list, execute: bool) -> None:
    sys.path.insert(0, str(ROOT))
    from tools.nbbuild import build

    with tempfile.TemporaryDirectory() as tmp:
        old = os.environ.get("HSTU_PROGRESS_FILE")
        os.environ["HSTU_PROGRESS_FILE"] = str(Path(tmp) / "progress.json")
        try:
            build(path, cells, execute=execute)
        finally:
            if old is None:
                os.environ.pop("HSTU_PROGRESS_FILE", None)
            else:
                os.environ["HSTU_PROGRESS_FILE"] = old


def build_solution(stem: str, execute: bool = True) -> Path:
    """Run `exercises/solutions/src/<stem>.py` (which defines CELLS) and write the solution notebook."""
    src = SOURCES / f"{stem}.py"
    namespace: dict = {"__name__": f"exercise_src_{stem}"}
    sys.path.insert(0, str(ROOT))
    exec(compile(src.read_text(encoding="utf-8"), str(src), "exec"), namespace)
    path = SOLUTIONS / f"{stem}.ipynb"
    _build(path, namespace["CELLS"], execute)
    return path


def make_learner(stem: str, execute: bool = True) -> Path:
    solution = nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)
    path = EXERCISES / f"{stem}.ipynb"
    _build(path, learner_cells(solution, f"{stem}.ipynb"), execute)
    return path


def drift(stem: str) -> str | None:
    """None when exercises/<stem>.ipynb is exactly what the solution generates, else a description."""
    solution = nbformat.read(SOLUTIONS / f"{stem}.ipynb", as_version=4)
    learner_path = EXERCISES / f"{stem}.ipynb"
    if not learner_path.exists():
        return f"{learner_path.relative_to(ROOT)} is missing"
    want = [(c.cell_type, c.source) for c in learner_cells(solution, stem)]
    have = cell_sources(nbformat.read(learner_path, as_version=4))
    if len(want) != len(have):
        return f"{stem}: the learner notebook has {len(have)} cells, the solution generates {len(want)}"
    for i, (w, h) in enumerate(zip(want, have)):
        if w != h:
            return (f"{stem}: cell {i} differs from the generated version:\n--- generated\n{w[1][:400]}"
                    f"\n--- found\n{h[1][:400]}")
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stems", nargs="*", help="exercise notebooks (e.g. 02_attention); default: all")
    p.add_argument("--build", action="store_true", help="first rebuild the solution notebooks from src/")
    p.add_argument("--no-execute", action="store_true", help="write without executing")
    p.add_argument("--check", action="store_true", help="only report drift (exit 1 if any)")
    args = p.parse_args(argv)
    if args.check:
        problems = [d for d in (drift(s) for s in (args.stems or solution_stems())) if d]
        for d in problems:
            print(d)
        print("in sync" if not problems else "run: python tools/make_exercises.py")
        return 1 if problems else 0
    stems = args.stems or (sorted(p.stem for p in SOURCES.glob("*.py")) if args.build else solution_stems())
    for stem in stems:
        if args.build:
            print(f"building solution {stem} ...", flush=True)
            build_solution(stem, execute=not args.no_execute)
        print(f"generating exercise {stem} ...", flush=True)
        make_learner(stem, execute=not args.no_execute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
