"""The learning checklist's storage: atomic writes, corruption recovery, wiring to the checks."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import re
import types

import pytest

from hstu_tutorial import checks, progress


@pytest.fixture()
def pfile(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "progress.json"
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(path))
    return path


def _backups(pfile):
    return sorted(pfile.parent.glob(pfile.name + ".bak-*"))


def test_env_overrides_the_home_path(pfile):
    assert progress.progress_path() == pfile


def test_default_path_is_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("HSTU_PROGRESS_FILE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert progress.progress_path() == tmp_path / ".hstu_tutorial" / "progress.json"


def test_missing_file_is_an_empty_checklist(pfile):
    state = progress.load()
    assert state["items"] == {} and not pfile.exists()


def test_set_done_round_trips_and_creates_the_folder(pfile):
    progress.set_done("basics.jagged_layout")
    assert pfile.exists()
    saved = json.loads(pfile.read_text())
    assert saved["items"]["basics.jagged_layout"]["done"] is True
    assert progress.is_done("basics.jagged_layout")
    progress.set_done("basics.jagged_layout", False)
    assert not progress.is_done("basics.jagged_layout")


def test_unknown_item_is_rejected_with_the_valid_ids(pfile):
    with pytest.raises(KeyError, match="valid ids"):
        progress.set_done("basics.nope")


def test_atomic_write_leaves_the_old_file_when_writing_fails(pfile, monkeypatch):
    progress.set_done("core.time_bucket")
    before = pfile.read_text()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(progress.json, "dump", boom)
    with pytest.raises(OSError, match="disk full"):
        progress.set_done("core.stu_forward")
    assert pfile.read_text() == before  # the old file is intact
    assert [p.name for p in pfile.parent.iterdir()] == ["progress.json"]  # no temp file left behind


def test_save_goes_through_os_replace(pfile, monkeypatch):
    calls = []
    real = os.replace

    def spy(src, dst):
        calls.append((str(src), str(dst)))
        return real(src, dst)

    monkeypatch.setattr(progress.os, "replace", spy)
    progress.set_done("core.time_bucket")
    assert calls and calls[-1][1] == str(pfile) and calls[-1][0] != str(pfile)


@pytest.mark.parametrize("garbage", [
    b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'{"version": 99, "items": {}}',
    b'{"version": 1, "items": {"a": {"done": "yes"}}}', b"",
])
def test_corrupted_file_is_reported_backed_up_and_rebuilt(pfile, garbage):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(garbage)
    with pytest.warns(RuntimeWarning, match="could not be read"):
        state = progress.load()
    assert state["items"] == {}
    (backup,) = _backups(pfile)
    assert backup.read_bytes() == garbage
    assert json.loads(pfile.read_text())["items"] == {}  # rebuilt, readable again
    progress.set_done("core.time_bucket")  # and usable
    assert progress.is_done("core.time_bucket")


def _corrupt(pfile, data: bytes) -> None:
    pfile.parent.mkdir(parents=True, exist_ok=True)
    pfile.write_bytes(data)
    with pytest.warns(RuntimeWarning, match="could not be read"):
        assert progress.load()["items"] == {}


def test_two_corruptions_leave_two_backups_with_their_own_contents(pfile):
    _corrupt(pfile, b"{first damage")
    progress.set_done("core.time_bucket")
    _corrupt(pfile, b"[second damage]")
    backups = _backups(pfile)
    assert len(backups) == 2
    assert {b.read_bytes() for b in backups} == {b"{first damage", b"[second damage]"}
    for b in backups:
        assert re.fullmatch(r"progress\.json\.bak-\d{8}T\d{6}Z-\d+", b.name), b.name


@pytest.mark.parametrize("hard_links", [True, False])
def test_a_backup_never_overwrites_an_existing_file(pfile, monkeypatch, hard_links):
    frozen = dt.datetime(2026, 11, 28, 18, 0, 0, tzinfo=dt.UTC)  # every backup gets the same time stamp
    monkeypatch.setattr(progress, "_dt", types.SimpleNamespace(
        UTC=dt.UTC, datetime=types.SimpleNamespace(now=lambda tz=None: frozen)))
    if not hard_links:  # a file system without hard links: the copy path
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted")
        monkeypatch.setattr(progress.os, "link", no_link)
    pfile.parent.mkdir(parents=True)
    taken = pfile.with_name("progress.json.bak-20261128T180000Z-0")
    taken.write_bytes(b"someone else's file")
    _corrupt(pfile, b"one")
    _corrupt(pfile, b"two")
    assert taken.read_bytes() == b"someone else's file"
    assert [(b.name, b.read_bytes()) for b in _backups(pfile)] == [
        ("progress.json.bak-20261128T180000Z-0", b"someone else's file"),
        ("progress.json.bak-20261128T180000Z-1", b"one"),
        ("progress.json.bak-20261128T180000Z-2", b"two"),
    ]


def test_an_interrupted_write_leaves_no_partial_file(pfile, monkeypatch):
    progress.set_done("core.time_bucket")
    before = pfile.read_bytes()
    real_dump = json.dump

    def half_then_interrupt(obj, f, **kwargs):  # the kernel is interrupted halfway through the write
        text = json.dumps(obj, **kwargs)
        f.write(text[: len(text) // 2])
        f.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.json, "dump", half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        progress.set_done("core.stu_forward")
    assert pfile.read_bytes() == before
    json.loads(pfile.read_text())  # still whole, still valid
    assert [p.name for p in pfile.parent.iterdir()] == ["progress.json"]  # the half-written temp is gone
    monkeypatch.setattr(progress.json, "dump", real_dump)
    progress.set_done("core.stu_forward")
    assert progress.is_done("core.stu_forward") and progress.is_done("core.time_bucket")


def _read_only(monkeypatch):
    """What a read-only folder does to every way of creating a file in it."""
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(progress.tempfile, "mkstemp", denied)
    monkeypatch.setattr(progress.os, "link", denied)
    monkeypatch.setattr(progress, "open", denied, raising=False)


def test_a_read_only_folder_says_so_and_how_to_fix_it(pfile, monkeypatch):
    pfile.parent.mkdir(parents=True)
    _read_only(monkeypatch)
    with pytest.raises(progress.ProgressFileError, match="read-only.*HSTU_PROGRESS_FILE"):
        progress.set_done("core.time_bucket")
    # a passing check still passes and says why nothing was saved
    with pytest.warns(RuntimeWarning, match="could not save your progress.*HSTU_PROGRESS_FILE"):
        assert progress.mark_done("check_time_bucket")
    assert not pfile.exists()


def test_a_damaged_file_in_a_read_only_folder_is_left_untouched(pfile, monkeypatch):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(b"{damaged")
    _read_only(monkeypatch)
    with pytest.warns(RuntimeWarning, match="left untouched.*read-only.*HSTU_PROGRESS_FILE"):
        assert progress.load()["items"] == {}
    assert pfile.read_bytes() == b"{damaged" and not _backups(pfile)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes to read-only folders")
def test_a_really_read_only_folder(pfile):
    pfile.parent.mkdir(parents=True)
    pfile.write_bytes(b"{damaged")
    pfile.parent.chmod(0o555)
    try:
        with pytest.warns(RuntimeWarning, match="left untouched"):
            progress.load()
        with pytest.raises(progress.ProgressFileError, match="HSTU_PROGRESS_FILE"):
            progress.reset()
        assert pfile.read_bytes() == b"{damaged"
    finally:
        pfile.parent.chmod(0o755)


def test_passing_check_ticks_its_items(pfile):
    assert progress.items_for_check("check_time_bucket")
    assert checks.check_time_bucket(lambda d: __import__("hstu_tutorial.ops", fromlist=["x"]).time_bucket(d))
    for it in progress.items_for_check("check_time_bucket"):
        assert progress.is_done(it.id)
    saved = json.loads(pfile.read_text())
    assert saved["items"]["core.time_bucket"]["by"] == "check_time_bucket"


def test_failing_or_unattempted_check_ticks_nothing(pfile):
    def stub(d):
        raise NotImplementedError

    assert not checks.check_time_bucket(stub)
    assert not checks.check_time_bucket(lambda d: d)
    assert not progress.is_done("core.time_bucket")


def test_every_check_named_by_an_item_exists():
    for it in progress.ITEMS:
        assert it.group in progress.GROUPS
        if it.check:
            assert callable(getattr(checks, it.check, None)), f"{it.id} names a missing check {it.check}"


def test_text_checklist_and_summary(pfile, capsys):
    progress.set_done("advanced.performance")
    text = progress.show_checklist()
    assert "[x]" in text and "Advanced skills (1/" in text
    assert capsys.readouterr().out.startswith("Basic concepts")
    assert progress.summary()["Advanced skills"][0] == 1


def test_widget_saves_on_click(pfile):
    pytest.importorskip("ipywidgets")
    widget = progress.checklist_widget()
    box = widget.boxes["basics.generative_framing"]
    assert box.value is False
    box.value = True
    assert progress.is_done("basics.generative_framing")
    assert json.loads(pfile.read_text())["items"]["basics.generative_framing"]["by"] == "checkbox"


def test_text_fallback_without_ipywidgets(pfile, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_widgets(name, *args, **kwargs):
        if name.startswith("ipywidgets"):
            raise ImportError("no ipywidgets")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_widgets)
    assert progress.checklist_widget() is None
    out = capsys.readouterr().out
    assert "ipywidgets is not installed" in out and "Core algorithms" in out


def test_every_check_ticks_an_item():
    names = [n for n in dir(checks) if n.startswith("check_") and callable(getattr(checks, n))]
    assert len(names) >= 14
    for name in names:
        assert progress.items_for_check(name), f"{name} ticks no checklist item"
    assert len({it.id for it in progress.ITEMS}) == len(progress.ITEMS)
