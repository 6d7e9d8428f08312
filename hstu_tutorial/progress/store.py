"""Where the checklist is saved, how a tick is recorded, how progress from the earlier checklist carries over.

The state lives in one small JSON file, `~/.hstu_tutorial/progress.json` (`$HSTU_PROGRESS_FILE`
overrides the path; tests and CI point it at a temporary file):

    {"version": 2, "items": {"core.attention.hstu_attention": {"done": true, "by": "check_hstu_attention",
                                                               "at": "2026-11-28T18:00:00+00:00"}}}

`by` records what ticked it (a check, a quiz, the data loader, the training CLI): there is no tick by hand.
A file of the earlier checklist (version 1, its 20 ids) is migrated on load: each ticked id moves to its
new id or step (`items.MIGRATION`, `"migrated_from"` keeps the old id), the old file is kept as a backup,
and the migrated state is saved.

It is written atomically (a temporary file in the same folder, then `os.replace`), so an interrupted
kernel never leaves half a file. A file that cannot be read (corrupted, hand-edited, from a future
version) is reported, kept as a backup `progress.json.bak-<UTC time>-<n>` (a new name each time: a
backup never overwrites an earlier one) and rebuilt empty: the notebook goes on. Where the folder is
read-only, the message says so and how to point `$HSTU_PROGRESS_FILE` somewhere writable.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import tempfile
import warnings
from pathlib import Path

from hstu_tutorial.errors import HSTUError
from hstu_tutorial.progress import items as _items
from hstu_tutorial.progress.items import GROUPS, ITEMS, Item, items_for_check, resolve

FORMAT_VERSION = 2
_OLD_VERSION = 1  # the earlier 20-item checklist, migrated on load


class ProgressFileError(HSTUError, OSError):
    """The progress file's folder cannot be written (read-only, no permission); the message says what to do.

    An OSError, so code that already tolerates a failed save (a passing check) keeps going."""


_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


def _read_only_error(path: Path, exc: OSError) -> ProgressFileError:
    return ProgressFileError(
        f"cannot write the progress file {path}: its folder {path.parent} is read-only or not yours "
        f"({type(exc).__name__}: {exc.strerror or exc}). Point HSTU_PROGRESS_FILE at a writable file, e.g. "
        "`export HSTU_PROGRESS_FILE=/tmp/hstu_progress.json` (or os.environ[...] in the notebook), then "
        "re-run the cell."
    )


def progress_path() -> Path:
    """Where the checklist is saved: $HSTU_PROGRESS_FILE, else ~/.hstu_tutorial/progress.json."""
    env = os.environ.get("HSTU_PROGRESS_FILE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".hstu_tutorial" / "progress.json"


def _empty() -> dict:
    return {"version": FORMAT_VERSION, "items": {}}


def _validate(state) -> str | None:
    """Return what is wrong with a loaded state, or None when it is usable."""
    if not isinstance(state, dict):
        return f"top level is a {type(state).__name__}, expected a JSON object"
    if state.get("version") not in (FORMAT_VERSION, _OLD_VERSION):
        return f"version is {state.get('version')!r}, expected {FORMAT_VERSION}"
    items = state.get("items")
    if not isinstance(items, dict):
        return "'items' is missing or not an object"
    for key, value in items.items():
        if not isinstance(value, dict) or not isinstance(value.get("done"), bool):
            return f"item {key!r} has no boolean 'done' field"
    return None


def load(path: str | Path | None = None) -> dict:
    """Read the saved state. A missing file is an empty checklist; an unreadable one is backed up,
    reported (a warning that says where the backup is) and replaced by an empty checklist."""
    path = Path(path) if path is not None else progress_path()
    if not path.exists():
        return _empty()
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        problem = _validate(state)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if problem is None:
        # unknown ids (an item renamed in a newer version) are kept, so nothing the learner did is lost
        return _migrate(state, path) if state["version"] == _OLD_VERSION else state
    try:
        backup = _backup(path)
    except OSError as exc:  # read-only folder: report, keep the file as it is, go on with an empty list
        hint = str(_read_only_error(path, exc)) if exc.errno in _READ_ONLY else f"{type(exc).__name__}: {exc}"
        warnings.warn(
            f"hstu_tutorial: the progress file {path} could not be read ({problem}) and could not be backed "
            f"up, so it is left untouched: {hint} For now the checklist starts empty.",
            RuntimeWarning,
            stacklevel=2,
        )
        return _empty()
    warnings.warn(
        f"hstu_tutorial: the progress file {path} could not be read ({problem}); the unreadable file was "
        f"kept as {backup}. Starting a fresh checklist: re-run your checks and quizzes, or restore "
        "the file from the backup.",
        RuntimeWarning,
        stacklevel=2,
    )
    state = _empty()
    try:
        save(state, path)  # the backup holds the old bytes, so replacing the file loses nothing
    except OSError:
        pass
    return state


def _backup(path: Path) -> Path:
    """Keep a copy of `path` under a name no file has yet: `<name>.bak-<UTC time>-<n>`. Returns it.

    Never overwrites: a hard link (atomic, fails if the name exists) where the file system has them,
    else an exclusive create ("xb") and a copy of the bytes. Either way the original is left in place
    until the caller replaces it."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(10_000):
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
        try:
            os.link(path, backup)
            return backup
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno == errno.EROFS:  # a read-only file system: a copy would fail the same way
                raise
        try:  # no hard links here (FAT, some network drives): copy into a newly created file
            data = path.read_bytes()
            with open(backup, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            return backup
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"10000 backups of {path.name} in one second", str(path))


def save(state: dict, path: str | Path | None = None) -> Path:
    """Write `state` atomically: a temporary file in the same folder, flushed, then `os.replace`."""
    path = Path(path) if path is not None else progress_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if exc.errno in _READ_ONLY:
            raise _read_only_error(path, exc) from exc
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old or the new file
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _migrate(old: dict, path: Path) -> dict:
    """A version-1 state (the earlier 20-item checklist) -> today's state, saved after a backup of the old.

    Each ticked old id moves to the id `MIGRATION` names (several old ids may land on one: the earliest
    tick is kept); ids this version does not know are kept as they were, so nothing is lost."""
    state = _empty()
    for old_id, entry in sorted(old["items"].items(), key=lambda kv: str(kv[1].get("at", ""))):
        if not entry.get("done"):
            continue  # an untick leaves nothing to carry over
        new_id = _items.MIGRATION.get(old_id, old_id)
        if new_id not in state["items"]:
            state["items"][new_id] = dict(entry, migrated_from=old_id)
    try:
        backup = _backup(path)
        save(state, path)
    except OSError:  # read-only: use the migrated state now, migrate again next time
        return state
    warnings.warn(
        f"hstu_tutorial: your progress file {path} was from the earlier 20-item checklist; its "
        f"ticks now sit on the card's items (the old file is kept as {backup}).",
        UserWarning,
        stacklevel=3,
    )
    return state


def tick(item_id: str, *, by: str, path: str | Path | None = None) -> dict:
    """Record that `item_id` (an item or step) was done, and what did it (`by`: a check, a quiz, a run).
    Saves atomically and returns the new state. Raises ProgressFileError where the folder is read-only."""
    item_id = resolve(item_id)
    if not by or by in ("manual", "checkbox"):
        raise ValueError(
            f"a tick needs the evidence that ticked it (a check, a quiz, a run), got by={by!r}: "
            "pass the quiz or the check instead of ticking by hand."
        )
    state = load(path)
    state["items"][item_id] = {"done": True, "by": by, "at": _now()}
    save(state, path)
    _refresh_displays()
    return state


def mark_done(name: str, path: str | Path | None = None, *, by: str | None = None) -> list[str]:
    """Tick what `name` stands for: a check's name (every item and step wired to that check) or an item /
    step id (then `by` says what did it, e.g. "quiz"). Called by a passing check and a passed quiz.
    Returns the ids ticked. Saving must never break a notebook: a failure to write is reported and ignored."""
    wired = items_for_check(name)
    if wired:
        ids, by = [x.id for x in wired], by or name
    else:
        try:
            ids, by = [resolve(name)], by or name
        except KeyError:
            return []
    try:
        state = load(path)
        for item_id in ids:
            state["items"][item_id] = {"done": True, "by": by, "at": _now()}
        save(state, path)
    except OSError as exc:
        warnings.warn(
            f"hstu_tutorial: could not save your progress ({exc}); the check still passed.",
            RuntimeWarning,
            stacklevel=2,
        )
        return ids
    _refresh_displays()
    return ids


def _own_done(item_id: str, state: dict) -> bool:
    entry = state["items"].get(item_id)
    return bool(isinstance(entry, dict) and entry.get("done"))


def is_done(item_id: str, state: dict | None = None) -> bool:
    """A step: its own tick. An item: its own tick, or all of its steps done. Old ids are mapped."""
    state = state if state is not None else load()
    item_id = resolve(item_id)
    if _own_done(item_id, state):
        return True
    it = _items.item(item_id)
    return isinstance(it, Item) and bool(it.steps) and all(_own_done(s.id, state) for s in it.steps)


def ticked_by(item_id: str, state: dict | None = None) -> str | None:
    """What ticked an item or step (None when not done; "all its steps" for an item done through them)."""
    state = state if state is not None else load()
    item_id = resolve(item_id)
    if _own_done(item_id, state):
        return str(state["items"][item_id].get("by", "?"))
    return "all its steps" if is_done(item_id, state) else None


def reset(path: str | Path | None = None) -> None:
    """Untick everything (the file is rewritten empty, atomically)."""
    save(_empty(), path)
    _refresh_displays()


def summary(state: dict | None = None) -> dict[str, tuple[int, int]]:
    """{group English title: (items done, items)} in display order."""
    state = state if state is not None else load()
    out = {}
    for key, (_, en) in GROUPS.items():
        group = [it for it in ITEMS if it.group == key]
        out[en] = (sum(is_done(it.id, state) for it in group), len(group))
    return out


def _refresh_displays() -> None:
    """Redraw the checklist shown in this kernel, if any (a no-op outside Jupyter)."""
    from hstu_tutorial.progress import display

    display.refresh()
