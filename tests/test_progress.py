"""The learning checklist's storage: atomic writes, corruption recovery, wiring to the checks."""

from __future__ import annotations

import json
import os

import pytest

from hstu_tutorial import checks, progress


@pytest.fixture()
def pfile(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "progress.json"
    monkeypatch.setenv("HSTU_PROGRESS_FILE", str(path))
    return path


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
    backup = pfile.with_name("progress.json.bak")
    assert backup.read_bytes() == garbage
    assert json.loads(pfile.read_text())["items"] == {}  # rebuilt, readable again
    progress.set_done("core.time_bucket")  # and usable
    assert progress.is_done("core.time_bucket")


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
