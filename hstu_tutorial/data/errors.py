"""The data errors a learner can fix, each a `hstu_tutorial.errors.DataError` (the CLI prints one line).

Each also derives from the builtin error that describes it (FileNotFoundError, PermissionError,
ValueError), so `except FileNotFoundError` keeps working.
"""

from __future__ import annotations

import difflib

from hstu_tutorial.errors import DataError


class DataFormatError(DataError, ValueError):
    """A raw data file does not look as expected: names the file, the line (1-based) and what was expected."""

    def __init__(self, path, line: int | None, expected: str, seen: str | None = None):
        self.path, self.line, self.expected, self.seen = str(path), line, expected, seen
        where = f"{path}, line {line}" if line is not None else f"{path}"
        msg = f"{where}: expected {expected}"
        if seen is not None:
            msg += f"; saw {seen!r}"
        super().__init__(msg)


class DataNotFoundError(DataError, FileNotFoundError):
    """The files of a dataset are not where they were looked for (the message says where to put them)."""


class DataWriteError(DataError, PermissionError):
    """A folder the project would write into is read-only, or holds files the project did not write."""


class UnknownDatasetError(DataError, ValueError):
    """A dataset (or synthetic size) name that does not exist."""

    def __init__(self, kind: str, name, choices):
        choices = sorted(choices)
        close = difflib.get_close_matches(str(name), choices, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        super().__init__(f"unknown {kind} {name!r}; {hint}choose one of {choices}")
