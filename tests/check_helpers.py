"""Shared by the exercise-check tests: a progress file of each test's own, and asserting a check's verdict.

Import the fixture by name (`from check_helpers import _progress_file`): pytest then applies it, autouse,
to every test of that module, so that passing checks never tick the checklist file of another test.
"""

import pytest

from hstu_tutorial import checks


@pytest.fixture(autouse=True)
def _progress_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(tmp_path / "progress.json"))


def fails_with(check, fn, *fragments) -> str:
    """`check(fn)` must fail, and its report contain every fragment; returns the report."""
    ok = check(fn)
    report = checks.last_report
    assert not ok, report
    for frag in fragments:
        assert frag in report, f"expected {frag!r} in: {report}"
    return report


def passes(check, fn) -> None:
    """`check(fn)` must pass (the report is shown when it does not)."""
    assert check(fn), checks.last_report
